"""peer_mem.py: run the PyTorch peer benchmark unchanged, and add each
workload's peak GPU memory to its results.

    python3 peer_mem.py [PEER_SCRIPT]    (default: torch_moe_bench.py beside this file)

BENCH.md's last GPU target is "peak GPU memory <= the peer's on the same
workload", and the peer does not measure its own. This wrapper runs the
peer's definitions, wraps its two benchmark functions (train_bench,
gen_bench) so that each call starts from torch.cuda.reset_peak_memory_stats
and its result gets "peak_mem_bytes": torch.cuda.max_memory_allocated()
(the bytes its live tensors held at most, the model and optimizer
included, which is what moerl's peak_mem_bytes counts of its own
allocator), then runs the peer's loop, which writes torch_moe_bench.json as
it always does. The timings are the peer's own: the wrapper adds two calls
outside its timed regions.

If the peer script no longer has the loop this expects, it is run as it
is, with no memory numbers, and a line on stderr says so.
"""
import gc
import os
import runpy
import sys

MARKER = "\nfor name in CONFIGS:"


def with_peak(fn, torch):
    """fn, measured: its result dict gets the peak bytes allocated during the
    call. A failure of the memory calls costs only the memory number, never
    the peer's own result or exception."""

    def run(*args, **kwargs):
        gc.collect()  # the previous workload's model, if a cycle still holds it
        try:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            reset = True
        except Exception as e:  # noqa: BLE001 - any failure here only loses the number
            print(f"peer_mem.py: no memory number for {fn.__name__}: {e!r}", file=sys.stderr)
            reset = False
        res = fn(*args, **kwargs)
        if reset and isinstance(res, dict):
            try:
                torch.cuda.synchronize()
                res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
            except Exception as e:  # noqa: BLE001
                print(f"peer_mem.py: no memory number for {fn.__name__}: {e!r}", file=sys.stderr)
        return res

    return run


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "torch_moe_bench.py")
    with open(path) as f:
        src = f.read()
    cut = src.find(MARKER)
    if cut < 0:
        print(f"peer_mem.py: {path} has no {MARKER.strip()!r} loop: running it without memory numbers", file=sys.stderr)
        runpy.run_path(path, run_name="__main__")
        return
    ns = {"__name__": "__main__", "__file__": path}
    exec(compile(src[:cut], path, "exec"), ns)
    for name in ("train_bench", "gen_bench"):
        if name in ns:
            ns[name] = with_peak(ns[name], ns["torch"])
    # The loop keeps its line numbers, so a traceback points into the peer.
    lines = src[:cut].count("\n")
    exec(compile("\n" * lines + src[cut:], path, "exec"), ns)


if __name__ == "__main__":
    main()

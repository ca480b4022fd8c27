package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stubTorch is just enough of torch.cuda for peer_mem.py: each reset
// starts a new workload, whose "peak" is 1000 times its number.
const stubTorch = `
import os
class _Cuda:
    resets = 0
    def synchronize(self): pass
    def reset_peak_memory_stats(self):
        if os.environ.get("STUB_BROKEN"):
            raise RuntimeError("no memory stats here")
        _Cuda.resets += 1
    def max_memory_allocated(self): return 1000 * _Cuda.resets
cuda = _Cuda()
`

// stubPeer has torch_moe_bench.py's shape: definitions, then the loop
// over CONFIGS that writes torch_moe_bench.json to $OUT.
const stubPeer = `import json, os
import torch
CONFIGS = {"moe-tiny": 1}
def train_bench(name, dtype): return {"ms_per_step": 2.0, "tok_per_s": 5.0}
def gen_bench(name): return {"gen_tok_per_s": 7.0}
res = {"torch": "stub"}
for name in CONFIGS:
    for dt in ("fp32", "bf16"):
        res[f"train/{name}/{dt}/eager"] = train_bench(name, dt)
    res[f"gen/{name}"] = gen_bench(name)
with open(os.path.join(os.environ["OUT"], "torch_moe_bench.json"), "w") as f:
    json.dump(res, f)
`

// TestPeerMemWrapper runs scripts/peer_mem.py on a stub of the peer and
// of torch: every workload's result gets its own peak (the stub's peaks
// grow with each reset, so a missing reset shows), the peer's own numbers
// are kept, and readPeer reads the lot. A peer without the expected loop
// still runs, and so does one whose memory calls fail. Skipped where python3 is missing (the CI machine has none;
// the GPU machine, which runs the wrapper, has it).
func TestPeerMemWrapper(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "torch"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("torch/__init__.py", stubTorch)
	write("peer.py", stubPeer)
	run := func(script string, env ...string) string {
		cmd := exec.Command(py, "../peer_mem.py", filepath.Join(dir, script))
		cmd.Env = append(append(os.Environ(), "PYTHONPATH="+dir, "OUT="+dir), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("peer_mem.py %s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	run("peer.py")
	got, info, err := readPeer(filepath.Join(dir, "torch_moe_bench.json"))
	if err != nil || !info.Found {
		t.Fatalf("readPeer: %v %+v", err, info)
	}
	for k, want := range map[string]peerEntry{
		"train/moe-tiny/fp32/eager": {MsPerStep: 2, TokPerS: 5, PeakMem: 1000},
		"train/moe-tiny/bf16/eager": {MsPerStep: 2, TokPerS: 5, PeakMem: 2000},
		"gen/moe-tiny":              {GenTokPS: 7, PeakMem: 3000},
	} {
		if got[k] != want {
			t.Errorf("%s: %+v, want %+v", k, got[k], want)
		}
	}

	write("flat.py", strings.Replace(stubPeer, "for name in CONFIGS:", "for name in list(CONFIGS):", 1))
	if out := run("flat.py"); !strings.Contains(out, "running it without memory numbers") {
		t.Errorf("a peer without the expected loop: %q", out)
	}
	got, _, _ = readPeer(filepath.Join(dir, "torch_moe_bench.json"))
	if e := got["gen/moe-tiny"]; e.GenTokPS != 7 || e.PeakMem != 0 {
		t.Errorf("the unwrapped peer's gen result: %+v", e)
	}

	if out := run("peer.py", "STUB_BROKEN=1"); !strings.Contains(out, "no memory number for train_bench") {
		t.Errorf("memory calls that fail: %q", out)
	}
	got, _, _ = readPeer(filepath.Join(dir, "torch_moe_bench.json"))
	if e := got["train/moe-tiny/fp32/eager"]; e.TokPerS != 5 || e.PeakMem != 0 {
		t.Errorf("the peer's result when its memory calls fail: %+v", e)
	}
}

#!/usr/bin/env bash
# The GPU check, run on the GPU machine from the bundle `make gpu-bundle`
# builds (.gpu/, where this file is run.sh), within one 10-minute command:
#
#   1. moerl bench on moe-tiny, then on moe-small (train, generate, rl-step);
#   2. the PyTorch peer (torch_moe_bench.py, next to this script) on the
#      same card, through peer_mem.py, which adds each workload's peak
#      memory: the timings come first, before the long runs;
#   3. the GPU tests: cuda.test (every op against the CPU backend, the fake
#      driver's checks), moe.test -test.run CUDA (the whole model, training
#      curves, sampling), each binary with -test.v under its own timeout;
#   4. a 100-step moe-tiny pretraining run;
#   5. moe-tiny and moe-small train and generate with the GEMM products in
#      bf16 (--bf16, bf16-moe.json), against the peer's bf16 column;
#   6. ncu on one moe-tiny training step: every kernel's GPU time
#      (ncu.csv), so docs/benchmarks.md can say where a step's time goes;
#   7. last, as the budget allows: moe-tiny train and generate again with
#      MOERL_CUDA_GRAPHS=0, generate in blocks of 1 and of 32 decode
#      steps, and train and generate with MOERL_CUBLAS=off
#      (variants-moe-tiny.json, four JSON documents one after another):
#      what the CUDA graphs and the decode blocks save, whether 8 is the
#      block to keep, and what the exactly-on-policy mode (our kernels for
#      every GEMM) costs.
#
# Every step runs under `timeout` (its own limit, and never past the run's
# budget, MOERL_GPU_BUDGET seconds, default 560), and the answer is one
# page: $OUT/summary.md (with $OUT/summary.json): pass/fail/skip counts per
# test binary, moerl's tokens/s beside the peer's for every workload, peak
# memory, the end of every failing step's log. $OUT also gets gpu.log (all
# the logs), moerl_bench.json, the peer's torch_moe_bench.json,
# variants-moe-tiny.json, bf16-moe.json and ncu.csv: eight files, the
# device tool's limit.
#
# MOERL_REQUIRE_CUDA=1 makes a GPU test that cannot reach CUDA fail instead
# of skipping. This script sets it where nvidia-smi names a GPU, unless the
# caller set it; on a machine without one (or whose driver nvidia-smi cannot
# reach) it runs what it can (the tests skip, a CPU bench stands in for the
# GPU one) and the verdict says NO GPU, never PASS: such a run proves
# nothing about the GPU.
set -u
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/out}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/moerl-gpu.XXXXXX")
# The binaries come gzipped (bundle.tar.gz), or unpacked next to this file.
if [ -f "$here/bundle.tar.gz" ]; then
  mkdir -p "$work/bin" && tar -xzf "$here/bundle.tar.gz" -C "$work/bin" || { echo "run.sh: cannot unpack bundle.tar.gz" >&2; exit 1; }
  cd "$work/bin"
else
  cd "$here"
fi
budget=${MOERL_GPU_BUDGET:-560}
reserve=20 # seconds kept for the summary
t_start=$SECONDS
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null) || gpu=""
gpu=$(echo "$gpu" | head -n 1)
if [ -z "${MOERL_REQUIRE_CUDA+x}" ]; then
  if [ -n "$gpu" ]; then MOERL_REQUIRE_CUDA=1; else MOERL_REQUIRE_CUDA=0; fi
fi
export MOERL_REQUIRE_CUDA PYTHONUNBUFFERED=1
steps="$work/steps.tsv"
: > "$steps"

# step NAME KIND LIMIT CMD...: run CMD under timeout (at most LIMIT seconds,
# and no later than the budget allows), its output to its log (stdout to
# $STDOUT instead when that is set), and record it in steps.tsv.
step() {
  local name=$1 kind=$2 limit=$3
  shift 3
  local log="$work/$(echo "$name" | tr -c 'A-Za-z0-9._\n-' '_').log"
  local left=$((budget - reserve - (SECONDS - t_start)))
  if [ "$left" -lt 15 ]; then
    printf '%s\t%s\tskip\t0\t\t0\tno time left in the %d s budget\n' "$name" "$kind" "$budget" >> "$steps"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "### $name (limit ${limit} s): $*" > "$log"
  local t0=$SECONDS rc
  if [ -n "${STDOUT:-}" ]; then
    timeout -k 5 "$limit" "$@" > "$STDOUT" 2>> "$log"
  else
    timeout -k 5 "$limit" "$@" >> "$log" 2>&1
  fi
  rc=$?
  printf '%s\t%s\t%d\t%d\t%s\t%d\n' "$name" "$kind" "$rc" "$((SECONDS - t0))" "$log" "$limit" >> "$steps"
  echo "$name: exit $rc after $((SECONDS - t0)) s" >&2
}

# skip NAME KIND WHY: record a step that does not run here.
skip() { printf '%s\t%s\tskip\t0\t\t0\t%s\n' "$1" "$2" "$3" >> "$steps"; }

if [ "$MOERL_REQUIRE_CUDA" = 1 ]; then
  # The timings come first (100 + 130 + 130 s at most; about a minute
  # each is expected); if they run long, the tests get what is left of the
  # budget, and the summary says which step ran out of time.
  STDOUT="$work/bench-moe-tiny.json" step "bench moe-tiny" bench 100 \
    ./moerl bench --device cuda --config moe-tiny --workloads train,generate,rl-step --steps 20 --warmup 3 --json
  STDOUT="$work/bench-moe-small.json" step "bench moe-small" bench 130 \
    ./moerl bench --device cuda --config moe-small --workloads train,generate,rl-step --steps 10 --warmup 2 --json
  if [ -f "$here/torch_moe_bench.py" ]; then
    # peer_mem.py runs the peer as it is and adds each workload's peak
    # memory to its JSON (BENCH.md's memory target), where it is bundled.
    peer=("$here/torch_moe_bench.py")
    [ -f "$here/peer_mem.py" ] && peer=("$here/peer_mem.py" "$here/torch_moe_bench.py")
    step "peer torch_moe_bench.py" peer 130 env OUT="$work" python3 "${peer[@]}"
  else
    skip "peer torch_moe_bench.py" peer "not in the bundle (make gpu-bundle found no peer script)"
  fi
else
  STDOUT="$work/bench-moe-micro.json" step "bench moe-micro (cpu smoke)" bench 120 \
    ./moerl bench --device cpu --config moe-micro --workloads train,generate --steps 2 --warmup 1 --json
  skip "peer torch_moe_bench.py" peer "no NVIDIA device on this machine"
fi
step cuda.test test 150 ./cuda.test -test.v -test.count=1 -test.timeout 140s
step moe.test test 150 ./moe.test -test.v -test.run CUDA -test.count=1 -test.timeout 140s
if [ "$MOERL_REQUIRE_CUDA" = 1 ]; then
  step "pretrain moe-tiny" run 90 ./moerl pretrain --device cuda --model moe-tiny --synthetic copy --steps 100 \
    --batch 64 --out "$work/pretrain"
else
  skip "pretrain moe-tiny" run "no NVIDIA device on this machine"
fi
if [ "$MOERL_REQUIRE_CUDA" = 1 ]; then
  STDOUT="$work/bf16-moe.json" step "bench moe-tiny, moe-small, --bf16" bench 70 \
    ./moerl bench --device cuda --bf16 --config moe-tiny,moe-small --workloads train,generate --steps 10 --warmup 2 --json
  [ -f "$work/bf16-moe.json" ] && cp "$work/bf16-moe.json" "$OUT/"
else
  skip "bench moe-tiny, moe-small, --bf16" bench "no NVIDIA device on this machine"
fi
if [ "$MOERL_REQUIRE_CUDA" = 1 ] && command -v ncu > /dev/null; then
  # One metric, kernel replay: about 0.2 s a kernel. One training step,
  # its first, so launched op by op (~180 kernels): the same kernels its
  # graph replays.
  step "profile moe-tiny train (ncu)" run 90 ncu --csv --metrics gpu__time_duration.sum \
    --log-file "$work/ncu.csv" ./moerl bench --device cuda --config moe-tiny --workloads train --steps 1 --warmup 0
  [ -f "$work/ncu.csv" ] && cp "$work/ncu.csv" "$OUT/"
else
  skip "profile moe-tiny train (ncu)" run "no NVIDIA device or no ncu on this machine"
fi

if [ "$MOERL_REQUIRE_CUDA" = 1 ]; then
  # The same moe-tiny workloads launched op by op, against the graphs of
  # the first bench, and generate in other decode blocks than its 8 (not
  # named bench-*.json: the summary's table is the default's).
  STDOUT="$work/variant-nographs.json" step "bench moe-tiny, MOERL_CUDA_GRAPHS=0" extra 60 \
    env MOERL_CUDA_GRAPHS=0 ./moerl bench --device cuda --config moe-tiny --workloads train,generate --steps 10 --warmup 2 --json
  for k in 1 32; do
    STDOUT="$work/variant-block$k.json" step "bench moe-tiny generate, --block-steps $k" extra 40 \
      ./moerl bench --device cuda --config moe-tiny --workloads generate --block-steps "$k" --json
  done
  # Our own GEMM kernels for every product, the exactly-on-policy mode
  # (docs/mismatch.md): what it costs against cuBLAS.
  STDOUT="$work/variant-nocublas.json" step "bench moe-tiny, MOERL_CUBLAS=off" extra 60 \
    env MOERL_CUBLAS=off ./moerl bench --device cuda --config moe-tiny --workloads train,generate --steps 10 --warmup 2 --json
  cat "$work"/variant-*.json > "$OUT/variants-moe-tiny.json" 2> /dev/null
else
  skip "bench moe-tiny variants (no graphs; --block-steps 1, 32; MOERL_CUBLAS=off)" extra "no NVIDIA device on this machine"
fi

# gpu.log: every step's log, at most 15 MiB (the device tool takes 16 a file).
for f in "$work"/*.log; do [ -f "$f" ] && { cat "$f"; echo; }; done > "$work/all.txt"
if [ "$(wc -c < "$work/all.txt")" -gt $((15 << 20)) ]; then
  { head -c $((7 << 20)) "$work/all.txt"; echo; echo "[... cut to 15 MiB ...]"; tail -c $((7 << 20)) "$work/all.txt"; } > "$OUT/gpu.log"
else
  cp "$work/all.txt" "$OUT/gpu.log"
fi
[ -f "$work/torch_moe_bench.json" ] && cp "$work/torch_moe_bench.json" "$OUT/"

req=()
[ "$MOERL_REQUIRE_CUDA" = 1 ] && req=(-require)
if ! ./gpusummary -work "$work" -out "$OUT" -gpu "$gpu" -budget "$budget" "${req[@]}"; then
  # The summariser failed: a plain table from steps.tsv still answers.
  { echo "# moerl GPU run, $(date -u +%Y-%m-%dT%H:%MZ): gpusummary FAILED (see gpu.log)"; echo
    echo "| step | exit | seconds | note |"; echo "|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $3, $4, $7 }' "$steps"; } > "$OUT/summary.md"
fi
cat "$OUT/summary.md"
rm -rf "$work"

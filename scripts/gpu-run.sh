#!/usr/bin/env bash
# The GPU check, run on the GPU machine from the bundle `make gpu-bundle`
# builds: GPU tests (every op against the CPU backend, the whole model, a
# 50-step training curve, sampling), moerl bench on moe-tiny and moe-small,
# a moe-tiny pretraining run, and the PyTorch peer on the same card.
# Writes $OUT/summary.md, $OUT/gpu.log, $OUT/moerl_bench.json and the
# peer's torch_moe_bench.json.
set -u
cd "$(dirname "$0")"
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
log="$OUT/gpu.log"
summary="$OUT/summary.md"
: > "$log"
step() { # name, command...: run, log, and record pass/fail with seconds
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*" >> "$log"
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "| $name | $([ $rc = 0 ] && echo pass || echo "FAIL ($rc)") | $((SECONDS - t0)) s |" >> "$summary"
  return $rc
}
{
  echo "# moerl GPU run, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/GPU: /'
  echo
  echo "| check | result | time |"
  echo "|---|---|---|"
} > "$summary"
step "engine/cuda tests" ./cuda.test -test.v -test.count=1 -test.timeout 8m
step "moe CUDA tests" ./moe.test -test.v -test.run CUDA -test.count=1 -test.timeout 8m
step "moerl bench" sh -c "./moerl bench --device cuda --config moe-tiny,moe-small --workloads train,generate,rl-step --steps 20 --json > '$OUT/moerl_bench.json'"
step "pretrain moe-tiny" ./moerl pretrain --device cuda --model moe-tiny --synthetic copy --steps 100 --batch 64 --out /tmp/moerl-pretrain
if [ -f torch_moe_bench.py ]; then
  step "peer torch_moe_bench.py" env OUT="$OUT" python3 torch_moe_bench.py
fi
{
  echo
  echo "## Failures and skips"
  echo '```'
  grep -E -- '--- (FAIL|SKIP)|^(FAIL|panic)' "$log" | head -60
  echo '```'
  echo
  echo "## moerl bench"
  echo '```'
  cat "$OUT/moerl_bench.json" 2>/dev/null
  echo '```'
} >> "$summary"
cat "$summary"

#!/usr/bin/env bash
# On the GPU machine: builds the CUDA targets, runs the GPU suites and both benchmarks (nibble and
# HF transformers, same card, same call), and leaves the logs under OUTDIR (few files: the device
# tool returns a limited number).
#   scripts/cuda_check.sh OUTDIR [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/cuda_check.sh OUTDIR [--no-bench]}
mkdir -p "$out"
log="$out/tests.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$log" 2>&1
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; exit 1; }
suites=$(ls tests/cuda/test_*.cpp | sed 's#tests/cuda/#cuda_#; s#\.cpp$##')
ninja -C build-gpu -j16 $suites nibble >>"$out/build.log" 2>&1 ||
  { grep -E "error|FAILED" "$out/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
for t in $suites; do
  echo "===== $t" >>"$log"
  timeout 150 "build-gpu/tests/$t" --gtest_color=no >>"$log" 2>&1
  echo "$t: rc=$?"
done
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]" "$log"
grep -E "Failure|Expected|Which is|actual:|teacher-forced|free-running|greedy ids|write past|not written" "$log" | head -40
grep -E "NMSE|greedy:|llama2c|50 turns|warm-up|arena|GB" "$log" | head -60
[ "${2:-}" = "--no-bench" ] && exit 0
timeout 200 build-gpu/apps/nibble/nibble bench --preset qwen3-4b --random-weights --json >"$out/bench.json" 2>"$out/bench.err"
echo "nibble bench: rc=$?"; cat "$out/bench.json"; tail -5 "$out/bench.err"
timeout 120 build-gpu/apps/nibble/nibble bench --preset qwen3-4b --random-weights --kv-cache fp8 --prefill 2048 \
  --json >"$out/bench_fp8.json" 2>>"$out/bench.err"
echo "nibble bench --kv-cache fp8: rc=$?"; grep -E "tok_s|pct" "$out/bench_fp8.json"
timeout 200 python3 scripts/bench_hf.py --json "$out/bench_hf.json" >"$out/bench_hf.log" 2>&1
echo "bench_hf: rc=$?"; grep -E "tok_s|copy_gbps|peak|Error|error" "$out/bench_hf.log" | head -20
echo "total: $(( $(date +%s) - t0 )) s"

#!/usr/bin/env bash
# On the GPU machine: builds the CUDA targets, runs the GPU suites and both benchmarks (nibble and
# HF transformers, same card, same call), and leaves every log under OUTDIR.
#   scripts/cuda_check.sh OUTDIR [suite filter for the GPU tests, default all]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/cuda_check.sh OUTDIR}
filter=${2:-*}
mkdir -p "$out"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
git log -1 --format='%H %s' >"$out/commit.txt" 2>/dev/null
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >"$out/cmake.log" 2>&1 ||
  { tail -30 "$out/cmake.log"; exit 1; }
ninja -C build-gpu -j16 cuda_test_cuda_ops cuda_test_cuda_model cuda_test_cuda_memory nibble >"$out/build.log" 2>&1 ||
  { grep -E "error|FAILED" "$out/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
for t in ops model memory; do
  timeout 150 "build-gpu/tests/cuda_test_cuda_$t" --gtest_filter="$filter" --gtest_color=no >"$out/test_$t.log" 2>&1
  echo "cuda_test_cuda_$t: rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$out/test_$t.log" | tr '\n' ' ')"
done
grep -hE "^  [a-z0-9_]+ +(prompt|NVFP4)|llama2c|50 turns|warm-up|arena|Failure|diverge|NMSE|Expected|Which is|actual" \
  "$out"/test_*.log | head -60
timeout 200 build-gpu/apps/nibble/nibble bench --preset qwen3-4b --random-weights --json >"$out/bench.json" 2>"$out/bench.err"
echo "nibble bench: rc=$?"; cat "$out/bench.json"; tail -5 "$out/bench.err"
timeout 200 python3 scripts/bench_hf.py --json "$out/bench_hf.json" >"$out/bench_hf.log" 2>&1
echo "bench_hf: rc=$?"; grep -E "tok_s|copy_gbps|peak|Error|error" "$out/bench_hf.log" | head -20
echo "total: $(( $(date +%s) - t0 )) s"

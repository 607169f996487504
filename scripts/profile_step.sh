#!/usr/bin/env bash
# On the GPU machine, after scripts/cuda_check.sh built build-gpu: the kernels of one decode step
# (and one prefill) of `nibble bench --preset qwen3-4b --random-weights`, each timed by Nsight
# Compute (clocks left as they are), summarised per kernel by scripts/profile_summary.py.
#   scripts/profile_step.sh OUTDIR [RANGE...]     RANGE: decode_0, decode_4096, prefill_2048, ...
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/profile_step.sh OUTDIR [RANGE...]}
shift
ranges=("${@:-decode_4096}")
mkdir -p "$out"
for r in "${ranges[@]}"; do
  case $r in
    decode_*) args=(--prefill 16 --decode-contexts "${r#decode_}" --decode-steps 2 --reps 1) ;;
    prefill_*) args=(--prefill "${r#prefill_}" --decode-contexts 0 --decode-steps 1 --reps 1) ;;
    *) echo "profile_step.sh: range '$r' (expected decode_<context> or prefill_<tokens>)" >&2; exit 2 ;;
  esac
  timeout 280 ncu --clock-control none --cache-control none --nvtx --nvtx-include "$r/" --csv --print-units base \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    build-gpu/apps/nibble/nibble bench --preset qwen3-4b --random-weights "${args[@]}" \
    >"$out/ncu_$r.csv" 2>"$out/ncu_$r.err"
  echo "ncu $r: rc=$?"
  python3 scripts/profile_summary.py "$out/ncu_$r.csv" | tee "$out/profile_$r.txt"
done

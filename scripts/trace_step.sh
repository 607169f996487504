#!/usr/bin/env bash
# On the GPU machine, after scripts/cuda_check.sh built build-gpu: an Nsight Systems trace of decode
# steps of `nibble bench --preset qwen3-4b --random-weights` as they run (CUDA graph replays, each
# graph node traced, clocks as they are), summarised by scripts/trace_summary.py: per kernel kind
# the time it adds to the step (from the later of its start and the previous kernel's end to its
# end), its own duration, and the step's span. Unlike profile_step.sh (Nsight Compute, kernels
# serialised) this shows the overlap that programmatic dependent launch gives.
#   scripts/trace_step.sh OUTDIR [CONTEXT...]     (default: 0)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/trace_step.sh OUTDIR [CONTEXT...]}
shift
mkdir -p "$out"
for c in "${@:-0}"; do
  rm -f "$out/trace_$c.nsys-rep" "$out/trace_$c.sqlite"
  timeout 200 nsys profile --trace=cuda --cuda-graph-trace=node --sample=none --cpuctxsw=none \
    -o "$out/trace_$c" build-gpu/apps/nibble/nibble bench --preset qwen3-4b --random-weights --prefill 16 \
    --decode-contexts "$c" --decode-steps 16 --reps 1 >"$out/trace_$c.log" 2>&1
  echo "nsys context $c: rc=$?"
  timeout 120 nsys export --type sqlite -o "$out/trace_$c.sqlite" "$out/trace_$c.nsys-rep" >>"$out/trace_$c.log" 2>&1
  python3 scripts/trace_summary.py "$out/trace_$c.sqlite" | tee "$out/summary_$c.txt"
  rm -f "$out/trace_$c.nsys-rep" "$out/trace_$c.sqlite"
done

#!/usr/bin/env bash
# The `nibble guard` acceptance demo, for a machine with an NVIDIA GPU. Builds nothing: run
# scripts/build.sh first (gpu_alloc_steps is built when nvcc is found).
#
# gpu_alloc_steps takes 256 MiB of device memory every 0.25 s up to 4 GiB; the guard, limited to
# 2 GiB and polling every 0.2 s, must stop it within one poll of crossing the limit. Compare the
# guard's "limit exceeded at T s" with the program's "t=... holding ... MiB" lines: the step that
# crossed 2 GiB (counting the CUDA context, which NVML includes) and the breach should be < 0.2 s
# apart. Expected exit code: 3 (stopped over the limit). Extra arguments go to gpu_alloc_steps.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
for bin in "$build/apps/nibble/nibble" "$build/apps/gpu_alloc_steps/gpu_alloc_steps"; do
  [[ -x $bin ]] || { echo "guard_gpu_demo: $bin not found; run scripts/build.sh on a machine with nvcc" >&2; exit 2; }
done
"$build/apps/nibble/nibble" guard --gpu-limit-gb 2 --poll-secs 0.2 --verbose -- \
  "$build/apps/gpu_alloc_steps/gpu_alloc_steps" "$@"
code=$?
echo "guard_gpu_demo: nibble guard exited with code $code (3 = stopped over the limit)"
[[ $code -eq 3 ]]

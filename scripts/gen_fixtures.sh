#!/usr/bin/env bash
# Runs every scripts/gen_*_fixtures.py (HF transformers / PyTorch references) into OUTDIR and packs
# the result as OUTDIR/fixtures.tar.gz. Run on the GPU machine (it has torch and transformers):
#   scripts/gen_fixtures.sh /tmp/fx
# then unpack into tests/fixtures/ on the dev machine (see tests/fixtures/GENERATED.md).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gen_fixtures.sh OUTDIR}
mkdir -p "$out/gen"
python3 -c 'import torch, transformers, tokenizers; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)' | tee "$out/gen/versions.txt"
status=0
for s in scripts/gen_*_fixtures.py; do
  echo "== $s"
  if ! PYTHONUNBUFFERED=1 python3 "$s" "$out/gen" 2>&1 | tee "$out/$(basename "$s" .py).log"; then
    echo "FAILED: $s"; status=1
  fi
done
tar -C "$out/gen" -czf "$out/fixtures.tar.gz" .
ls -la "$out"
exit $status

#!/usr/bin/env bash
# Regenerates asr/tests/fixtures/moonshine/ from the reference implementation (PyPI transformers
# 5.23 on CPU torch). Creates the venv on first use (~2.45 GB download), reuses it afterwards.
# CI never needs this: the fixtures are committed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${MOONSHINE_REF_VENV:-$HOME/.cache/voicerelay/venvs/moonshine-ref}
RECIPE=${MOONSHINE_REF_RECIPE:-$HERE/../../../shared/recipes/moonshine_reference_venv.sh}
if ! "$VENV/bin/python" -c "import torch, transformers, safetensors, tokenizers; assert transformers.__version__.startswith('5.23')" 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  bash "$RECIPE" "$VENV"
fi
exec "$VENV/bin/python" "$HERE/moonshine_fixtures.py" "${1:-$HERE/../tests/fixtures/moonshine}"

#!/usr/bin/env bash
# Regenerates asr/tests/fixtures/silero_golden.json: per-chunk speech probabilities of the Silero
# VAD v6 ONNX model (PyPI silero-vad 6.2.3) run in ONNX Runtime on a few corpus files. The candle
# port's parity test compares against it. Idempotent: the venv is created once and reused.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${HOME}/.cache/voicerelay/venvs/silero-golden"
if [[ ! -x "${venv}/bin/python" ]]; then
    python3 -m venv "${venv}"
fi
# Pinned so the fixture is reproducible; --no-deps for silero-vad because only its bundled ONNX
# file is used (its torch dependency is not needed).
if ! "${venv}/bin/python" -c "import importlib.util as u, onnxruntime, numpy; assert u.find_spec('silero_vad')" 2>/dev/null; then
    "${venv}/bin/pip" install --quiet "onnxruntime==1.31.1" "numpy>=1.26,<3"
    "${venv}/bin/pip" install --quiet --no-deps "silero-vad==6.2.3"
fi
exec "${venv}/bin/python" "${here}/silero_golden.py" "$@"

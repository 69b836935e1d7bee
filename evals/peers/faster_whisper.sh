#!/usr/bin/env bash
# Peer check: decode the corpus test split with faster-whisper (PyPI) on the same tiny.en
# CTranslate2 weights VoiceRelay uses (greedy, beam 1), then score the hypotheses with the
# project's own normaliser and WER (`cargo run -p voicerelay-evals --example score`).
# Idempotent: the venv lives in $HOME/.cache/voicerelay/venvs/faster-whisper and is reused.
#
# Usage: evals/peers/faster_whisper.sh [split]   (default: test)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
split="${1:-test}"
venv="$HOME/.cache/voicerelay/venvs/faster-whisper"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import faster_whisper" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "faster-whisper==1.2.1"
fi
models="${VOICERELAY_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/voicerelay/models}"
corpus="${VOICERELAY_CORPUS:-$root/../shared/corpus}"
out="${TMPDIR:-/tmp}/faster_whisper_${split}.jsonl"
"$venv/bin/python" "$here/fw_decode.py" --model "$models/whisper-tiny.en" \
    --corpus "$corpus" --split "$split" --out "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voicerelay/target}"
cd "$root"
cargo run --quiet -p voicerelay-evals --example score -- "$out" "$corpus" "$split"

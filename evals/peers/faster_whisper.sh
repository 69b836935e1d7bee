#!/usr/bin/env bash
# Peer: faster-whisper (PyPI) on the same tiny.en CTranslate2 weights VoiceRelay uses (greedy,
# beam 1), decoding each clip of a corpus split after it has arrived. Writes a trace file and
# scores it with `voicerelay eval ingest` (the project's normaliser, WER and onset detector), so
# the report has the same schema as `voicerelay eval asr` and `voicerelay eval compare` works.
# Idempotent: the venv lives in $HOME/.cache/voicerelay/venvs/faster-whisper and is reused.
#
# Usage: evals/peers/faster_whisper.sh [split] [out_dir] [limit]
#   split: test (default) | dev | all;  out_dir default: eval-results/peer-faster-whisper-tiny.en-<split>
# Env: VOICERELAY_MODELS, VOICERELAY_CORPUS, VOICERELAY_BIN (a built voicerelay binary; default
#      `cargo run --bin voicerelay`), FW_MODEL (tiny.en | base, default tiny.en).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"
split="${1:-test}"
model="${FW_MODEL:-tiny.en}"
out="${2:-$root/eval-results/peer-faster-whisper-$model-$split}"
limit="${3:-}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import faster_whisper" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "faster-whisper==1.2.1"
fi
mkdir -p "$out"
"$venv/bin/python" "$here/fw_decode.py" --model "$models/whisper-$model" --model-name "$model" \
    --corpus "$corpus" --split "$split" --out "$out/trace.json" ${limit:+--limit "$limit"}
ingest_trace "$out" "$split"

#!/usr/bin/env bash
# Peer: whisper_streaming (ÚFAL, LocalAgreement-2 over faster-whisper) in its real-time simulation:
# each clip is fed at wall-clock pace in chunks of --min-chunk-size seconds, committed text is
# recorded with its wall-clock time, and `finish()` closes each clip. Same tiny.en weights, greedy
# (beam 1). Writes a trace file and scores it with `voicerelay eval ingest`.
#
# whisper_streaming's `whisper_online.py` is a single file that is NOT on PyPI (the PyPI package
# `whisper-streaming` 0.1.0 is a reworked third-party fork with a different commit policy, an ALSA
# receiver and a pin to faster-whisper 1.1.1; it is not the reference implementation). Place the
# file yourself (never commit it):
#     mkdir -p ~/.cache/voicerelay/peers
#     cp /path/to/whisper_streaming/whisper_online.py ~/.cache/voicerelay/peers/
# (from https://github.com/ufal/whisper_streaming, MIT) or point WHISPER_ONLINE_PY at it. Without
# it this script prints a SKIP line and exits 0.
#
# Usage: evals/peers/whisper_streaming.sh [split] [out_dir] [limit]
# Env: as faster_whisper.sh, plus WHISPER_ONLINE_PY, WS_MIN_CHUNK (seconds, default 1.0).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"
split="${1:-test}"
model="${FW_MODEL:-tiny.en}"
out="${2:-$root/eval-results/peer-whisper_streaming-$model-$split}"
limit="${3:-}"
src="${WHISPER_ONLINE_PY:-$HOME/.cache/voicerelay/peers/whisper_online.py}"
if [ ! -f "$src" ]; then
    echo "SKIP whisper_streaming: $src not found. whisper_online.py is not packaged on PyPI;" \
         "copy it from https://github.com/ufal/whisper_streaming to that path (see this script's header)."
    exit 0
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import faster_whisper, librosa" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    # whisper_online.py imports librosa and soundfile at module level.
    "$venv/bin/pip" install --quiet "faster-whisper==1.2.1" librosa soundfile
fi
mkdir -p "$out"
"$venv/bin/python" "$here/ws_online.py" --whisper-online "$src" --model "$models/whisper-$model" \
    --model-name "$model" --corpus "$corpus" --split "$split" --out "$out/trace.json" \
    --min-chunk-size "${WS_MIN_CHUNK:-1.0}" ${limit:+--limit "$limit"}
ingest_trace "$out" "$split"

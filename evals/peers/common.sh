# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# Shared by the peer scripts (sourced, not run): paths every peer uses, and scoring a peer's
# trace with `voicerelay eval ingest` so its report has the same schema as `voicerelay eval asr`.
# Expects `here` (the peers directory) to be set by the caller.
root="$(cd "${here:?set here before sourcing common.sh}/../.." && pwd)"
models="${VOICERELAY_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/voicerelay/models}"
corpus="${VOICERELAY_CORPUS:-$root/../shared/corpus}"
venv="$HOME/.cache/voicerelay/venvs/faster-whisper"

# ingest_trace OUT_DIR SPLIT: scores OUT_DIR/trace.json into OUT_DIR.
ingest_trace() {
    local out=$1 split=$2
    if [ -n "${VOICERELAY_BIN:-}" ]; then
        "$VOICERELAY_BIN" eval ingest "$out/trace.json" --corpus "$corpus" --split "$split" --out "$out"
    else
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voicerelay/target}"
        (cd "$root" && cargo run --quiet --bin voicerelay -- eval ingest "$out/trace.json" \
            --corpus "$corpus" --split "$split" --out "$out")
    fi
}

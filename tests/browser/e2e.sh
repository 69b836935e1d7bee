#!/usr/bin/env bash
# Runs inside a private network namespace (`unshare -n`, loopback only): starts
# `voicerelay serve` on a free port, then drives headless chromium against it with run.js.
# usage: unshare -n bash e2e.sh VOICERELAY_BIN MIC_WAV OUT_DIR [NAME]
# Writes OUT_DIR/NAME-serve.{out,log} and the screenshot OUT_DIR/NAME-page.png (NAME: browser).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$1 WAV=$2 OUT=$3 NAME=${4:-browser}
ip link set lo up
"$BIN" serve --bind 127.0.0.1:0 > "$OUT/$NAME-serve.out" 2> "$OUT/$NAME-serve.log" &
S=$!
URL=""
for _ in $(seq 2400); do
  URL=$(grep -o 'http://[0-9.:]*' "$OUT/$NAME-serve.out" 2>/dev/null | head -n 1)
  [ -n "$URL" ] && break
  kill -0 $S 2>/dev/null || { echo "server exited early"; cat "$OUT/$NAME-serve.log"; exit 3; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "server printed no URL"; kill $S; exit 3; }
echo "server ready after ${SECONDS}s: $URL"
node "$HERE/run.js" "$URL/" "$WAV" "$OUT/$NAME-page.png"
RC=$?
kill -TERM $S 2>/dev/null
wait $S
echo "server exit=$?"
exit $RC

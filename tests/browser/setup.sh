#!/usr/bin/env bash
# Installs playwright-core for the browser end-to-end test from the committed lock file
# (idempotent: skips when node_modules matches the lock). Never downloads a browser: the test
# drives the system's Debian chromium.
set -euo pipefail
cd "$(dirname "$0")"
# npm writes node_modules/.package-lock.json after installing: newer than the lock = up to date.
if [ -f node_modules/playwright-core/package.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

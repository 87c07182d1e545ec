#!/usr/bin/env bash
# Installs what the console's browser test (tests/gateway/console.rs) needs: Debian's headless
# Chromium and Playwright for Python (the library only: `playwright install` is never run,
# the test drives /usr/bin/chromium). Idempotent: does nothing when both are in place.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "console.sh: installing chromium with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

PYTHON="${FLOWGATE_PYTHON:-python3}"
if ! "$PYTHON" -c 'import playwright' >/dev/null 2>&1; then
  echo "console.sh: installing playwright (Python) with pip" >&2
  "$PYTHON" -m pip install --quiet playwright || "$PYTHON" -m pip install --quiet --break-system-packages playwright
fi
"$PYTHON" -c 'import playwright' >/dev/null
echo "console.sh: ready ($(chromium --version 2>/dev/null | head -n1), playwright $("$PYTHON" -m pip show playwright 2>/dev/null | sed -n 's/^Version: //p'))"

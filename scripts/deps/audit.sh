#!/usr/bin/env bash
# The audit tests need no external service: only `mkfifo` (coreutils) for the
# blocked-sink test. Idempotent: installs coreutils only when mkfifo is missing.
set -euo pipefail
if ! command -v mkfifo >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq coreutils
fi

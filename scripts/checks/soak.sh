#!/usr/bin/env bash
# The soak: the real binary on loopback for SOAK_SECONDS (default 600) at
# SOAK_RATE calls per second (default 40): valid calls with a secret rotated every 10 s,
# refusals (401, 404, 429), the policy file rewritten every 30 s. Prints a one-screen
# summary (RSS growth after warm-up, open fds, run-history ring, p99 over time) and fails
# when a figure is out of bounds. Not part of .ci/run (time). Example:
#   SOAK_SECONDS=120 scripts/checks/soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export SOAK_SECONDS="${SOAK_SECONDS:-600}"
export SOAK_RATE="${SOAK_RATE:-40}"
echo "== soak: building, then ${SOAK_SECONDS} s at ${SOAK_RATE} calls/s"
cargo test -q --test gateway -- --ignored --nocapture --test-threads=1 soak::

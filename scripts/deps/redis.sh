#!/usr/bin/env bash
# Installs redis-server (used by tests/gateway/ratelimit_redis.rs and benches/ratelimit.rs) when missing.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
command -v redis-server >/dev/null

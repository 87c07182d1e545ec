#!/usr/bin/env bash
# Installs what the tests need (Redis, HAProxy, OpenBao, the npm OIDC provider) and runs every
# check: formatting, clippy, unused dependencies, docs, and all tests (unit, integration, benches in smoke mode).
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
for installer in scripts/deps/*.sh; do
  echo "-- $installer"
  bash "$installer"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings (lint table in Cargo.toml)"
cargo clippy --all-targets -- -D warnings

echo "== cargo machete (no unused dependencies)"
cargo machete

echo "== cargo doc --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

echo "== cargo test (unit and integration tests)"
# Integration tests start real servers (gateway, Redis, OpenBao, the OIDC provider) on
# loopback; two test threads keep a 2-core machine responsive.
cargo test --lib --bins --tests --no-fail-fast -- --test-threads="${FLOWGATE_TEST_THREADS:-2}"

echo "== cargo test --benches (each bench once, in smoke mode)"
cargo test --benches --no-fail-fast

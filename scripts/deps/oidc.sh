#!/usr/bin/env bash
# Installs what flowgate's OIDC integration tests (tests/gateway/auth_oidc.rs) need: Node.js with
# npm, and the npm OIDC provider (oauth2-mock-server) pinned by scripts/oidc/package-lock.json.
# Idempotent: does nothing when everything is already in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
oidc_dir="$here/oidc"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "oidc.sh: installing nodejs and npm with apt-get" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq nodejs npm
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "oidc.sh: Node.js >= 18 is required (found $(node --version))" >&2
  exit 1
fi

stamp="$oidc_dir/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$oidc_dir/package-lock.json" -nt "$stamp" ]; then
  echo "oidc.sh: npm ci in $oidc_dir" >&2
  (cd "$oidc_dir" && npm ci --no-audit --no-fund)
fi
echo "oidc.sh: ready ($(node --version), oauth2-mock-server $(node -p "require('$oidc_dir/node_modules/oauth2-mock-server/package.json').version"))"

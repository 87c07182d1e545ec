#!/usr/bin/env bash
# Installs what the console sign-in test (tests/gateway/console_sign_in.rs) needs besides the
# browser (scripts/deps/console.sh): Node.js with npm, and the npm OIDC provider with an
# interactive login page (oidc-provider) pinned by scripts/oidc-login/package-lock.json.
# Idempotent: does nothing when everything is already in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$here/oidc-login"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "oidc-login.sh: installing nodejs and npm with apt-get" >&2
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq nodejs npm
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "oidc-login.sh: Node.js >= 20 is required (found $(node --version))" >&2
  exit 1
fi

stamp="$dir/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
  echo "oidc-login.sh: npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund)
fi
echo "oidc-login.sh: ready ($(node --version), oidc-provider $(node -p "require('$dir/node_modules/oidc-provider/package.json').version"))"

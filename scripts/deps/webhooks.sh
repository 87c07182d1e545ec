#!/usr/bin/env bash
# Installs the senders' own signing libraries that tests/gateway/webhook.rs signs deliveries
# with (scripts/webhooks/sign.py and sign.mjs): from PyPI standardwebhooks, stripe, slack-sdk,
# twilio and cryptography (Ed25519 for Standard Webhooks v1a); from npm
# @octokit/webhooks-methods, pinned by scripts/webhooks/package-lock.json.
# Idempotent: does nothing when everything is already in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$here/webhooks"
PYTHON="${FLOWGATE_PYTHON:-python3}"

check='import standardwebhooks, stripe, slack_sdk.signature, twilio.request_validator, cryptography'
if ! "$PYTHON" -c "$check" >/dev/null 2>&1; then
  echo "webhooks.sh: installing the senders' Python libraries with pip" >&2
  pkgs=(standardwebhooks stripe slack-sdk twilio cryptography)
  "$PYTHON" -m pip install --quiet "${pkgs[@]}" || "$PYTHON" -m pip install --quiet --break-system-packages "${pkgs[@]}"
fi
"$PYTHON" -c "$check"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "webhooks.sh: Node.js and npm are needed: run scripts/deps/oidc.sh" >&2
  exit 1
fi
stamp="$dir/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
  echo "webhooks.sh: npm ci in $dir" >&2
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
  else
    (cd "$dir" && npm install --no-audit --no-fund)
  fi
fi
echo "webhooks.sh: ready (stripe $("$PYTHON" -c 'import stripe; print(stripe.VERSION)'), @octokit/webhooks-methods $(node -p "require('$dir/node_modules/@octokit/webhooks-methods/package.json').version"))"

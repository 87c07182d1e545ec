#!/usr/bin/env bash
# A profile-guided (PGO) release build of flowgate: the same source and checks, laid out by
# the compiler for the paths a gateway actually runs. Three steps:
#   1. an instrumented release build (target/pgo-generate);
#   2. training on loopback, then a graceful stop that writes the profile;
#   3. the optimised build from that profile (target/pgo).
# Prints the binary's path on its last line. docs/PERFORMANCE.md ("A profile-guided build")
# measures it against the plain `cargo build --release`.
#
# TRAIN picks the training traffic:
#   demo   (the default; needs only h2load and curl) `flowgate demo`, the README's embedded
#          default: its echo upstream, token issuer and development certificates, and its
#          triggers called over HTTP/1.1 (64 connections and one) and HTTP/2 (10 streams a
#          connection): injected secrets with scrubbing, capture and a payload contract; a
#          principal list; a signed URL; refusals (rate limit spent, address not allowed,
#          no token, a forged token, a method not taken).
#   peers  the peer benchmark's job (../shared/bench-peers: RS256 JWT, IP allow list, rate
#          limit, injected x-api-key, nginx upstream), with refusals; needs nginx too. It is
#          the job the benchmark measures, so its figures are kept apart in PERFORMANCE.md.
# TRAIN_CALLS (default 60000) sizes the loads.
# Needs: llvm-profdata of the toolchain's own LLVM (rustup component add llvm-tools-preview),
# h2load and curl (apt-get install -y nghttp2-client curl).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata" ] || { echo "missing llvm-profdata for this toolchain: rustup component add llvm-tools-preview" >&2; exit 2; }
for tool in h2load curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nghttp2-client curl" >&2; exit 2; }
done
train=${TRAIN:-demo}
calls=${TRAIN_CALLS:-60000}
data=$(mktemp -d)
trap 'kill ${upstream:-} ${gw:-} 2>/dev/null || true; rm -rf "$data"' EXIT
cd "$project"

# --target names the host explicitly, so that RUSTFLAGS reach flowgate and its dependencies
# but not build scripts and proc macros (they would write profiles of their own).
RUSTFLAGS="-Cprofile-generate=$data" cargo build --release --locked --quiet --bin flowgate \
  --target "$host" --target-dir target/pgo-generate
instrumented="$project/target/pgo-generate/$host/release/flowgate"

# Waits for the gateway at $1 to answer at all (any status).
ready() {
  for _ in $(seq 1 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "the instrumented gateway did not start (see $data/gateway.log)" >&2
  exit 1
}

train_demo() {
  "$instrumented" demo >"$data/gateway.log" 2>&1 &
  gw=$!
  local base=https://127.0.0.1:8443
  ready "$base/"
  local token specific signed json=(-d "$data/body.json" -H "content-type: application/json")
  token=$("$instrumented" token | tail -1)
  specific=$("$instrumented" token --oid 22222222-3333-4444-8555-666666666666 | tail -1)
  signed=$("$instrumented" sign-url "$base/demo/signed" | tail -1)
  printf '{"hello": "flowgate", "password": "kept-out-of-the-record"}' >"$data/body.json"
  local each=$((calls / 4))
  for path in /demo/invoice /demo/specific; do
    local auth="authorization: Bearer $token"
    [ "$path" = /demo/specific ] && auth="authorization: Bearer $specific"
    h2load --h1 -n "$each" -c 64 "${json[@]}" -H "$auth" "$base$path" >/dev/null
    h2load -n "$each" -c 64 -m 10 "${json[@]}" -H "$auth" "$base$path" >/dev/null
  done
  h2load --h1 -n "$((calls / 20))" -c 1 "${json[@]}" -H "authorization: Bearer $specific" "$base/demo/specific" >/dev/null
  h2load --h1 -n "$((calls / 20))" -c 16 "${json[@]}" "$signed" >/dev/null
  # Refusals: a spent rate limit (2,000 a minute), an address not allowed, no token, a
  # forged signature, a method the trigger does not take.
  h2load --h1 -n "$((calls / 20))" -c 16 "${json[@]}" -H "authorization: Bearer $token" "$base/demo/limited" >/dev/null
  h2load --h1 -n "$((calls / 40))" -c 16 "${json[@]}" -H "authorization: Bearer $token" "$base/demo/allowlisted" >/dev/null
  h2load --h1 -n "$((calls / 40))" -c 16 "${json[@]}" "$base/demo/specific" >/dev/null
  h2load --h1 -n "$((calls / 40))" -c 16 "${json[@]}" -H "authorization: Bearer ${specific%.*}.AAAA" "$base/demo/specific" >/dev/null
  curl -sk -o /dev/null -X DELETE -H "authorization: Bearer $specific" "$base/demo/specific"
}

train_peers() {
  command -v nginx >/dev/null || { echo "missing nginx: apt-get install -y nginx" >&2; exit 2; }
  peers=${BENCH_DIR:-/tmp/flowgate-pgo}
  # Ports of its own, away from a peer benchmark's.
  PORT=${PORT:-18746}; UPSTREAM_PORT=${UPSTREAM_PORT:-18747}; ADMIN_PORT=${ADMIN_PORT:-18748}
  TOOLS="nginx|nginx"
  SKIP_BUILD=1
  # shellcheck source=scripts/perf/peers-setup.sh
  source "$project/scripts/perf/peers-setup.sh"
  nginx -c "$peers/conf/upstream-nginx.conf" -g 'daemon off;' &
  upstream=$!
  local token url="https://127.0.0.1:$PORT/"
  token=$(cd "$peers" && ./mint_token.py)
  RUST_LOG=warn "$instrumented" --threads 1 serve --config "$peers/conf/flowgate.toml" >"$data/gateway.log" 2>&1 &
  gw=$!
  ready "$url"
  local auth="Authorization: Bearer $token" json=(-d "$data/body.json" -H "content-type: application/json")
  printf '{"order": 42, "items": ["a", "b"]}' >"$data/body.json"
  h2load --h1 -n "$calls" -c 64 -H "$auth" "$url" >/dev/null
  h2load -n "$calls" -c 64 -m 10 -H "$auth" "$url" >/dev/null
  h2load --h1 -n "$((calls / 10))" -c 1 -H "$auth" "$url" >/dev/null
  h2load --h1 -n "$((calls / 10))" -c 16 "${json[@]}" -H "$auth" "$url" >/dev/null
  h2load -n "$((calls / 10))" -c 16 -m 10 "${json[@]}" -H "$auth" "$url" >/dev/null
  # Refusals: no token, a forged signature, a method the trigger does not take.
  h2load --h1 -n "$((calls / 20))" -c 16 "$url" >/dev/null
  h2load --h1 -n "$((calls / 20))" -c 16 -H "Authorization: Bearer ${token%.*}.AAAA" "$url" >/dev/null
  curl -sk -o /dev/null -X DELETE -H "$auth" "$url"
}

case $train in
  demo) train_demo ;;
  peers) train_peers ;;
  *) echo "pgo-build.sh: TRAIN must be demo or peers" >&2; exit 2 ;;
esac
kill -TERM "$gw"
wait "$gw" || true
gw=
ls "$data"/*.profraw >/dev/null 2>&1 || { echo "the instrumented gateway wrote no profile (see $data/gateway.log)" >&2; exit 1; }
"$profdata" merge -o "$data/merged.profdata" "$data"/*.profraw

RUSTFLAGS="-Cprofile-use=$data/merged.profdata" cargo build --release --locked --quiet --bin flowgate \
  --target "$host" --target-dir target/pgo
echo "$project/target/pgo/$host/release/flowgate"

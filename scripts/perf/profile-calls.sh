#!/usr/bin/env bash
# Instructions per proxied call, counted by callgrind (repeatable whatever else the machine
# is doing, unlike wall-clock figures on a shared box). Uses the peer benchmark's job
# (../shared/bench-peers: TLS, IP allow list, RS256 JWT, rate limit, injected x-api-key,
# nginx upstream) with the release binary. Prints instructions per call and the top
# functions (inclusive) for the measured calls only (warm-up excluded).
# Usage: scripts/perf/profile-calls.sh [CALLS (default 2000)] [h1|h2 (default h1)]
#   BINARY (default target/release/flowgate) profiles another build.
#   WARMUP (default 200) calls before the measured ones; 10200 fills the run history's ring.
#   GATEWAY=floor profiles examples/stack_floor.rs instead (built by
#   `cargo build --release --example stack_floor`), the stack with no check at all.
# Needs: valgrind, nginx, h2load (apt-get install -y valgrind nginx nghttp2-client).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
calls=${1:-2000}
proto=${2:-h1}
peers=${BENCH_DIR:-/tmp/flowgate-peers}
TOOLS="valgrind callgrind_control nginx h2load|valgrind nginx nghttp2-client"
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
out=$(mktemp -d)
nginx -c "$peers/conf/upstream-nginx.conf" -g 'daemon off;' &
upstream=$!
trap 'kill $upstream ${gw:-} 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$out/measured" "$KEEP"; rm -rf "$out"' EXIT
token=$(cd "$peers" && ./mint_token.py)
if [ "${GATEWAY:-flowgate}" = floor ]; then
  key=$(sed -n 's/^UPSTREAM_API_KEY=//p' "$peers/params.env")
  command=("$project/target/release/examples/stack_floor" --listen "127.0.0.1:$PORT" --cert "$peers/keys/tls.crt"
    --key "$peers/keys/tls.key" --upstream "127.0.0.1:$UPSTREAM_PORT" --header "x-api-key=$key")
else
  command=("${BINARY:-$project/target/release/flowgate}" serve --config "$peers/conf/flowgate.toml")
fi
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" "${command[@]}" >"$out/gw.log" 2>&1 &
gw=$!
for _ in $(seq 1 300); do curl -sk -o /dev/null https://127.0.0.1:$PORT/ && break; sleep 0.2; done
flag=--h1; [ "$proto" = h2 ] && flag=""
# Warm-up: connections, token cache, secret cache, upstream pool. WARMUP=10200 also fills
# the run history's ring (10,000 records by default), as any longer run does: from then on
# each record is written over the oldest one, the steady state the peer benchmark sees.
h2load $flag -n "${WARMUP:-200}" -c 4 -H "Authorization: Bearer $token" https://127.0.0.1:$PORT/ >/dev/null
callgrind_control --zero "$gw" >/dev/null
h2load $flag -n "$calls" -c 4 -H "Authorization: Bearer $token" https://127.0.0.1:$PORT/ >"$out/load.txt"
callgrind_control --dump "$gw" >/dev/null
sleep 1
dump=$(ls -t "$out"/cg.* | head -1)
cp "$dump" "$out/measured"
dump="$out/measured"
kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
grep -E "^requests:|^status codes:" "$out/load.txt"
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "instructions per call: $((total / calls))  ($total over $calls calls, $proto)"
# The TLS handshakes (four connections, RSA signing) are spread over the calls, and their
# count moves by ~1,800 a call between runs with the RSA blinding's refresh: the figure
# without them is the steadier one for comparing builds.
handshakes=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
  awk '/ExpectClientHello as rustls::common_state::State<rustls::server::server_conn::ServerConnectionData>>::handle \[/ {gsub(",","",$1); if ($1 > max) max = $1} END {print max + 0}')
echo "without the TLS handshakes: $(((total - handshakes) / calls)) per call (handshakes $((handshakes / calls)) per call)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | head -${TOP:-45}

#!/usr/bin/env bash
# The peer benchmark (../shared/bench-peers/bench.sh's steps), with one change in its scratch
# copy: the harness mints ten-year tokens, which flowgate's max_token_lifetime (24 h by default)
# refuses, so the copy's [identity.bench] accepts them. The shared harness is never written.
# Knobs as run_peers.sh's: ROUNDS DUR WARM CONNS H2_STREAMS TARGETS TESTS.
# Usage (from anywhere): scripts/perf/peers.sh
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
here=$(cd "$project/../shared/bench-peers" && pwd)
dir=${BENCH_DIR:-/tmp/flowgate-peers}
for tool in haproxy nginx wrk h2load caddy curl bc; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y haproxy nginx wrk nghttp2-client caddy curl bc" >&2; exit 2; }
done
rm -rf "$dir"; mkdir -p "$dir"; cp -r "$here"/. "$dir"/; chmod u+w -R "$dir"; chmod 600 "$dir/conf/bench-secrets.toml"
sed -i 's/^algorithms = \["RS256"\]$/algorithms = ["RS256"]\nmax_token_lifetime = "3650days"/' "$dir/conf/flowgate.toml"
grep -q max_token_lifetime "$dir/conf/flowgate.toml" || { echo "peers.sh: could not set max_token_lifetime in the copy" >&2; exit 2; }
(cd "$dir" && ./gen_keys.sh >/dev/null)
cd "$project" && cargo build --release --quiet
export GATEWAY_CMD="$project/target/release/flowgate serve --config $dir/conf/flowgate.toml"
export GATEWAY_PORT=18446 GATEWAY_NAME=flowgate RUST_LOG=${RUST_LOG:-warn}
exec "$dir/run_peers.sh"

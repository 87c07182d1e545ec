#!/usr/bin/env bash
# The peer benchmark (../shared/bench-peers/bench.sh's steps), with one change in its scratch
# copy: the harness mints ten-year tokens, which flowgate's max_token_lifetime (24 h by default)
# refuses, so the copy's [identity.bench] accepts them. The shared harness is never written.
# Knobs as run_peers.sh's: ROUNDS DUR WARM CONNS H2_STREAMS TARGETS TESTS, plus:
#   THREADS=2  the two-thread comparison (issue 23, goal 3): the copy's HAProxy configs get
#              `nbthread 2`, flowgate runs with `--threads 2` (FLOWGATE_RUNTIME, when set, picks
#              thread-per-core or work-stealing), and nothing is pinned (PIN=0): load generator,
#              upstream and proxy share both cores. summarize.py's rps/core divides by the proxy
#              process's own CPU time (every thread of it), so it stays right unpinned; its
#              sutCo/auxCo columns are then just cpu1/cpu0, not the proxy's and the load's.
#   THREADS=1  (the default) the pinned one-core comparison, as before.
#   PGO=1      runs the profile-guided build (scripts/perf/pgo-build.sh, built first) instead
#              of the plain `cargo build --release` one; BINARY=path runs a build already made
#              (NAME=label names it in the results).
#   GATEWAY=floor  runs examples/stack_floor.rs (the stack's floor: the same TLS, HTTP and
#              runtime crates forwarding with no check at all) in flowgate's place, to tell
#              the stack's cost from flowgate's (issue 23, goal 5). One thread only.
# Usage (from anywhere): scripts/perf/peers.sh
#   THREADS=2 ROUNDS=1 DUR=3 TESTS=wrk-h1 TARGETS="haproxy gateway" scripts/perf/peers.sh
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
threads=${THREADS:-1}
case $threads in
  1) ;;
  2)
    for cfg in haproxy.cfg haproxy-partial.cfg; do
      sed -i 's/^\( *\)nbthread 1$/\1nbthread 2/' "$dir/conf/$cfg"
      grep -q '^ *nbthread 2$' "$dir/conf/$cfg" || { echo "peers.sh: could not set nbthread 2 in the copy's $cfg" >&2; exit 2; }
    done
    export PIN=0 ;;
  *) echo "peers.sh: THREADS must be 1 or 2" >&2; exit 2 ;;
esac
(cd "$dir" && ./gen_keys.sh >/dev/null)
export GATEWAY_PORT=18446 RUST_LOG=${RUST_LOG:-warn}
case ${GATEWAY:-flowgate} in
  flowgate)
    binary="$project/target/release/flowgate" name=flowgate
    if [ -n "${BINARY:-}" ]; then
      binary=$BINARY name=${NAME:-flowgate}
    elif [ "${PGO:-0}" = 1 ]; then
      binary=$("$project/scripts/perf/pgo-build.sh" | tail -1) name=flowgate-pgo
    else
      cd "$project" && cargo build --release --quiet
    fi
    # FLOWGATE_RUNTIME passes through the environment to flowgate as it is.
    export GATEWAY_CMD="$binary --threads $threads serve --config $dir/conf/flowgate.toml"
    export GATEWAY_NAME=$name ;;
  floor)
    [ "$threads" = 1 ] || { echo "peers.sh: the stack floor runs on one thread only" >&2; exit 2; }
    cd "$project" && cargo build --release --quiet --example stack_floor
    # shellcheck source=/dev/null
    source "$dir/params.env"
    export GATEWAY_CMD="$project/target/release/examples/stack_floor --listen 127.0.0.1:$GATEWAY_PORT \
      --cert $dir/keys/tls.crt --key $dir/keys/tls.key --upstream 127.0.0.1:$UPSTREAM_PORT \
      --header x-api-key=$UPSTREAM_API_KEY"
    export GATEWAY_NAME=stack-floor ;;
  *) echo "peers.sh: GATEWAY must be flowgate or floor" >&2; exit 2 ;;
esac
exec "$dir/run_peers.sh"

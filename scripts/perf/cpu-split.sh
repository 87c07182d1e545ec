#!/usr/bin/env bash
# CPU time per proxied call, split into user space and kernel, for flowgate and the peer
# benchmark's HAProxy targets doing the same job on the same machine (../shared/bench-peers:
# TLS, IP allow list, RS256 JWT, rate limit, injected x-api-key, nginx upstream), each pinned
# to CPU 1 with the load generator and upstream on CPU 0, as bench.sh does. Read from
# /proc/PID/stat (utime, stime) around a fixed-length load: the kernel part is loopback TCP
# and system calls, the user part is the proxy's own work. It shows where a gap between two
# proxies lies, which rps figures alone cannot (this machine has no hardware counters).
# Usage: scripts/perf/cpu-split.sh [SECONDS (default 8)] [wrk-h1|h2load-h2 (default both)]
# Needs: haproxy, nginx, wrk, h2load (apt-get install -y haproxy nginx wrk nghttp2-client).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-8}
tests=${2:-"wrk-h1 h2load-h2"}
peers=${BENCH_DIR:-/tmp/flowgate-peers}
TOOLS="haproxy nginx wrk h2load|haproxy nginx wrk nghttp2-client"
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
# shellcheck source=/dev/null
source "$peers/lib.sh"
trap stop_all EXIT
start_upstream "$AUX_CPU"
token=$(cd "$peers" && ./mint_token.py)
hz=$(getconf CLK_TCK)

start_flowgate() {
  stop_name gateway
  RUST_LOG=${RUST_LOG:-warn} spawn "$SUT_CPU" "$project/target/release/flowgate" serve --config "$peers/conf/flowgate.toml" \
    >>"$LOGS/gateway.out" 2>&1 &
  remember gateway $!
  for _ in $(seq 1 300); do curl -sk -o /dev/null https://127.0.0.1:18446/ && return 0; sleep 0.1; done
  return 1
}

# utime stime of a process (all its threads), in clock ticks.
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

printf '%-16s %-10s %9s %12s %12s %12s\n' target test rps "user us/call" "kern us/call" "total"
for target in haproxy haproxy-partial gateway; do
  case $target in
    haproxy) start_haproxy "$SUT_CPU"; port=$HAPROXY_PORT ;;
    haproxy-partial) start_haproxy_partial "$SUT_CPU"; port=$HAPROXY_PARTIAL_PORT ;;
    gateway) start_flowgate; port=18446 ;;
  esac
  pid=$(cat "$RUN/$target.mypid")
  url="https://127.0.0.1:$port/"
  for test in $tests; do
    case $test in
      wrk-h1) load=(wrk -t1 -c64 -d"${seconds}s" -H "Authorization: Bearer $token" "$url") ;;
      h2load-h2) load=(h2load -c64 -m10 -D "$seconds" -H "Authorization: Bearer $token" "$url") ;;
      *) echo "unknown test $test" >&2; exit 2 ;;
    esac
    # Warm-up: connections, token cache, upstream pool.
    taskset -c "$AUX_CPU" wrk -t1 -c64 -d2s -H "Authorization: Bearer $token" "$url" >/dev/null
    read -r u0 s0 < <(ticks "$pid")
    out=$(taskset -c "$AUX_CPU" "${load[@]}")
    read -r u1 s1 < <(ticks "$pid")
    if [[ $test == wrk-h1 ]]; then
      calls=$(awk '/requests in/ { print $1 }' <<<"$out")
    else
      calls=$(awk '/^status codes:/ { gsub(",", "", $3); print $3 }' <<<"$out")
    fi
    awk -v c="$calls" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v d="$seconds" -v t="$target" -v x="$test" \
      'BEGIN { us = 1e6 / hz / c; printf "%-16s %-10s %9.0f %12.1f %12.1f %12.1f\n", t, x, c / d, u * us, s * us, (u + s) * us }'
  done
  stop_name "$target"
done

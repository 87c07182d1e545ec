#!/usr/bin/env bash
# CPU time per proxied call, split into user space and kernel, for flowgate and the peer
# benchmark's HAProxy targets doing the same job on the same machine (../shared/bench-peers:
# TLS, IP allow list, RS256 JWT, rate limit, injected x-api-key, nginx upstream). Read from
# /proc/PID/stat (utime, stime) around a fixed-length load: the kernel part is loopback TCP
# and system calls, the user part is the proxy's own work. With perf installed it also
# counts, per call, the proxy's context switches and the inter-processor interrupts it sends
# (waking a process on another CPU; on a VM each one traps to the host). It shows where a
# gap between two proxies lies, which rps figures alone cannot (this machine has no hardware
# counters).
#   THREADS=1  (default) each proxy pinned to CPU 1 with the load generator and upstream on
#              CPU 0, as bench.sh does; one load generator with 64 connections.
#   THREADS=2  the harness's two-thread arrangement (scripts/perf/peers.sh THREADS=2): HAProxy
#              `nbthread 2`, flowgate `--threads 2`, nothing pinned; two load generators of 32
#              connections each. Adds the target gateway-apart: two flowgate processes of one
#              thread each, one per load generator, which share nothing, so that against
#              `gateway` it prices the state flowgate's threads share.
#   BINARY=path  measures that flowgate build (for example the profile-guided one) instead of
#              building target/release/flowgate.
#   TARGETS="haproxy haproxy-partial gateway [gateway-apart]" picks and orders the targets.
# Usage: scripts/perf/cpu-split.sh [SECONDS (default 8)] [wrk-h1|h2load-h2 (default both)]
#   THREADS=2 TARGETS="gateway gateway-apart" scripts/perf/cpu-split.sh 8 h2load-h2
# Needs: haproxy, nginx, wrk, h2load (apt-get install -y haproxy nginx wrk nghttp2-client);
# perf for the counts (apt-get install -y linux-perf).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-8}
tests=${2:-"wrk-h1 h2load-h2"}
peers=${BENCH_DIR:-/tmp/flowgate-peers}
threads=${THREADS:-1}
binary=${BINARY:-$project/target/release/flowgate}
[ -n "${BINARY:-}" ] && export SKIP_BUILD=1
case $threads in
  1) targets=${TARGETS:-"haproxy haproxy-partial gateway"} ;;
  2) targets=${TARGETS:-"haproxy haproxy-partial gateway gateway-apart"}; export PIN=0 ;;
  *) echo "cpu-split.sh: THREADS must be 1 or 2" >&2; exit 2 ;;
esac
TOOLS="haproxy nginx wrk h2load|haproxy nginx wrk nghttp2-client"
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
# shellcheck source=/dev/null
source "$peers/lib.sh"
counting=0
if command -v perf >/dev/null; then counting=1; else echo "no perf: counts left out (apt-get install -y linux-perf)" >&2; fi
if [ "$threads" = 2 ]; then
  for cfg in haproxy.cfg haproxy-partial.cfg; do
    sed -i 's/^\( *\)nbthread 1$/\1nbthread 2/' "$peers/conf/$cfg"
    grep -q '^ *nbthread 2$' "$peers/conf/$cfg" || { echo "could not set nbthread 2 in $peers/conf/$cfg" >&2; exit 2; }
  done
fi
# The second process of gateway-apart: the same policy on the next ports.
sed -e "s/127.0.0.1:$PORT\"/127.0.0.1:$((PORT + 1))\"/" -e "s/127.0.0.1:$ADMIN_PORT\"/127.0.0.1:$((ADMIN_PORT + 1))\"/" \
  "$peers/conf/flowgate.toml" >"$peers/conf/flowgate-apart.toml"
trap 'stop_all; stop_name gateway-apart' EXIT
start_upstream "$AUX_CPU"
token=$(cd "$peers" && ./mint_token.py)
hz=$(getconf CLK_TCK)

# name threads config port
start_flowgate() {
  stop_name "$1"
  RUST_LOG=${RUST_LOG:-warn} spawn "$SUT_CPU" "$binary" --threads "$2" serve --config "$3" >>"$LOGS/$1.out" 2>&1 &
  remember "$1" $!
  for _ in $(seq 1 300); do curl -sk -o /dev/null "https://127.0.0.1:$4/" && return 0; sleep 0.1; done
  return 1
}

# utime+stime of processes (all their threads), in clock ticks: user, then kernel.
ticks() { local p; for p in "$@"; do awk '{ print $14, $15 }' "/proc/$p/stat"; done | awk '{ u += $1; s += $2 } END { print u, s }'; }

# One load generator: test url connections seconds.
load() {
  local run=(taskset -c "$AUX_CPU"); [ "$PIN" = 1 ] || run=()
  case $1 in
    wrk-h1) "${run[@]}" wrk -t1 -c"$3" -d"${4}s" -H "Authorization: Bearer $token" "$2" | awk '/requests in/ { print $1 }' ;;
    h2load-h2) "${run[@]}" h2load -c"$3" -m10 -D "$4" -H "Authorization: Bearer $token" "$2" |
      awk '/^status codes:/ { gsub(",", "", $3); print $3 }' ;;
    *) echo "unknown test $1" >&2; exit 2 ;;
  esac
}

printf '%-16s %-10s %9s %12s %12s %12s %10s %10s\n' target test rps "user us/call" "kern us/call" "total" "cs/call" "ipi/call"
for target in $targets; do
  urls=() pids=()
  case $target in
    haproxy) start_haproxy "$SUT_CPU"; urls=("https://127.0.0.1:$HAPROXY_PORT/") ;;
    haproxy-partial) start_haproxy_partial "$SUT_CPU"; urls=("https://127.0.0.1:$HAPROXY_PARTIAL_PORT/") ;;
    gateway) start_flowgate gateway "$threads" "$peers/conf/flowgate.toml" "$PORT"; urls=("https://127.0.0.1:$PORT/") ;;
    gateway-apart)
      [ "$threads" = 2 ] || { echo "gateway-apart is a THREADS=2 target" >&2; exit 2; }
      start_flowgate gateway 1 "$peers/conf/flowgate.toml" "$PORT"
      start_flowgate gateway-apart 1 "$peers/conf/flowgate-apart.toml" "$((PORT + 1))"
      pids=("$(cat "$RUN/gateway-apart.mypid")")
      urls=("https://127.0.0.1:$PORT/" "https://127.0.0.1:$((PORT + 1))/") ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  case $target in gateway*) pids+=("$(cat "$RUN/gateway.mypid")") ;; *) pids+=("$(cat "$RUN/$target.mypid")") ;; esac
  # With two threads, two load generators of half the connections each (one per process for
  # gateway-apart, both on the one address otherwise).
  [ "$threads" = 2 ] && [ ${#urls[@]} = 1 ] && urls+=("${urls[0]}")
  conns=$((64 / ${#urls[@]}))
  for test in $tests; do
    # Warm-up: connections, token cache, upstream pool.
    # (Each load's pid is kept: the proxies and the upstream are this shell's jobs too.)
    loads=()
    for url in "${urls[@]}"; do load wrk-h1 "$url" "$conns" 2 >/dev/null & loads+=($!); done
    wait "${loads[@]}"
    read -r u0 s0 < <(ticks "${pids[@]}")
    if [ $counting = 1 ]; then
      perf stat -x, -e cs,ipi:ipi_send_cpu -p "$(IFS=,; echo "${pids[*]}")" -o "$RUN/counts" 2>/dev/null & perf_pid=$!
    fi
    loads=()
    for i in "${!urls[@]}"; do load "$test" "${urls[$i]}" "$conns" "$seconds" >"$RUN/calls.$i" & loads+=($!); done
    wait "${loads[@]}"
    read -r u1 s1 < <(ticks "${pids[@]}")
    cs=- ipi=-
    calls=$(cat "$RUN"/calls.* | awk '{ c += $1 } END { print c }')
    if [ $counting = 1 ]; then
      kill -INT "$perf_pid"; wait "$perf_pid" || true
      # perf may be refused (perf_event_paranoid): the columns then stay "-".
      cs=$(awk -F, -v c="$calls" '$3 == "cs" { printf "%.3f", $1 / c }' "$RUN/counts" 2>/dev/null || echo -)
      ipi=$(awk -F, -v c="$calls" '$3 == "ipi:ipi_send_cpu" { printf "%.3f", $1 / c }' "$RUN/counts" 2>/dev/null || echo -)
      rm -f "$RUN/counts"
    fi
    rm -f "$RUN"/calls.*
    awk -v c="$calls" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v d="$seconds" -v t="$target" -v x="$test" \
      -v cs="$cs" -v ipi="$ipi" \
      'BEGIN { us = 1e6 / hz / c; printf "%-16s %-10s %9.0f %12.1f %12.1f %12.1f %10s %10s\n", t, x, c / d, u * us, s * us, (u + s) * us, cs, ipi }'
  done
  case $target in gateway-apart) stop_name gateway; stop_name gateway-apart ;; *) stop_name "$target" ;; esac
done

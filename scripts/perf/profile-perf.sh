#!/usr/bin/env bash
# Where the CPU goes at load: perf samples of the release binary doing the peer benchmark's
# job (../shared/bench-peers: TLS, IP allow list, RS256 JWT, rate limit, injected x-api-key,
# nginx upstream), pinned to CPU 1 with wrk on CPU 0, as bench.sh does. Prints the top
# symbols (self time) and the kernel share. Complements scripts/perf/profile-calls.sh
# (instructions per call, repeatable) with wall-clock reality (syscalls, wakeups).
# Usage: scripts/perf/profile-perf.sh [SECONDS (default 6)]
# Needs: perf, nginx, wrk (apt-get install -y linux-perf nginx wrk).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-6}
peers=${BENCH_DIR:-/tmp/flowgate-peers}
TOOLS="perf nginx wrk|linux-perf nginx wrk"
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
out=$(mktemp -d)
taskset -c 0 nginx -c "$peers/conf/upstream-nginx.conf" -g 'daemon off;' &
upstream=$!
trap 'kill $upstream ${gw:-} 2>/dev/null || true; rm -rf "$out"' EXIT
token=$(cd "$peers" && ./mint_token.py)
RUST_LOG=warn taskset -c 1 "$project/target/release/flowgate" serve --config "$peers/conf/flowgate.toml" >"$out/gw.log" 2>&1 &
gw=$!
for _ in $(seq 1 300); do curl -sk -o /dev/null https://127.0.0.1:$PORT/ && break; sleep 0.2; done
taskset -c 0 wrk -t1 -c64 -d"$((seconds + 3))"s -H "Authorization: Bearer $token" https://127.0.0.1:$PORT/ >"$out/wrk.txt" &
load=$!
sleep 2
perf record -F 1999 -g -p "$gw" -o "$out/perf.data" -- sleep "$seconds" 2>/dev/null >/dev/null
wait $load
grep -E "Requests/sec|Non-2xx" "$out/wrk.txt" || true
perf report -i "$out/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8 | cut -c1-120
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -"${TOP:-40}" | cut -c1-160

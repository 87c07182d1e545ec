#!/usr/bin/env bash
# Two or more flowgate builds on the peer benchmark's job, interleaved round by round so that
# the host's drift falls on every build alike: each round starts each binary in turn, pinned
# to CPU 1 (nginx upstream and the load on CPU 0, as bench.sh does), warms it for a second,
# then measures wrk-h1 (64 connections) and h2load-h2 (64 connections x 10 streams). Prints
# every round and the medians. For a change whose effect is smaller than the drift between
# runs of the peer benchmark (read the per-round wins as well as the medians).
# Usage: scripts/perf/ab-builds.sh NAME=BINARY NAME=BINARY...
#   ROUNDS (default 6) DUR (seconds per test, default 4) CONFIG (a policy file for every
#   build, default the harness's flowgate.toml)
# Needs: nginx, wrk, h2load (apt-get install -y nginx wrk nghttp2-client).
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 NAME=BINARY NAME=BINARY..." >&2; exit 2; }
peers=${BENCH_DIR:-/tmp/flowgate-ab}
TOOLS="nginx wrk h2load|nginx wrk nghttp2-client"
SKIP_BUILD=1
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
config=${CONFIG:-$peers/conf/flowgate.toml}
rounds=${ROUNDS:-6}
dur=${DUR:-4}
out=$(mktemp)
taskset -c 0 nginx -c "$peers/conf/upstream-nginx.conf" -g 'daemon off;' &
upstream=$!
trap 'kill $upstream ${gw:-} 2>/dev/null || true; rm -f "$out"' EXIT
token=$(cd "$peers" && ./mint_token.py)
for round in $(seq 1 "$rounds"); do
  for build in "$@"; do
    name=${build%%=*} binary=${build#*=}
    (cd "$(dirname "$config")" && RUST_LOG=warn exec taskset -c 1 "$binary" --threads 1 serve --config "$config") >/dev/null 2>&1 &
    gw=$!
    for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/" && break; sleep 0.1; done
    taskset -c 0 wrk -t1 -c64 -d1s -H "Authorization: Bearer $token" "https://127.0.0.1:$PORT/" >/dev/null
    h1=$(taskset -c 0 wrk -t1 -c64 -d"${dur}s" -H "Authorization: Bearer $token" "https://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')
    h2=$(taskset -c 0 h2load -c64 -m10 -D "$dur" -H "Authorization: Bearer $token" "https://127.0.0.1:$PORT/" 2>/dev/null | awk '/finished in/ {print $4}')
    kill "$gw"; wait "$gw" 2>/dev/null || true; gw=
    echo "round $round $name wrk-h1 ${h1:-0} h2load-h2 ${h2:-0}" | tee -a "$out"
  done
done
python3 - "$out" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = list(dict.fromkeys(row[2] for row in rows))
for name in names:
    h1 = [float(row[4]) for row in rows if row[2] == name]
    h2 = [float(row[6]) for row in rows if row[2] == name]
    print(f"{name:12} median wrk-h1 {statistics.median(h1):9.0f} rps   h2load-h2 {statistics.median(h2):9.0f} rps")
EOF

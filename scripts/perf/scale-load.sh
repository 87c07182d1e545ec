#!/usr/bin/env bash
# Issue 23, goals 1 and 2 on the release binary, pinned as the peer benchmark pins: flowgate
# (--threads 1) on CPU 1, wrk and the nginx upstream on CPU 0.
#   1. a minimal policy and a large estate (scripts/perf/scale-policy.py: 11,000 triggers,
#      100 identities, 1,000 secrets, 100,000 CIDRs global and per trigger, 10,000 principals
#      on the measured trigger), measured in alternating rounds on the estate's last exact
#      and last prefix route: requests per second per core used, p50 and p99;
#   2. the estate again while it is reloaded (SIGHUP, a full compile) every RELOAD_EVERY
#      seconds: p99 against the steady rounds, reloads done, calls lost;
#   and the resident memory of both once ready, and of the estate after the reloads.
# Knobs: ROUNDS=3 DUR=10 WARM=2 CONNS=64 RELOAD_EVERY=2 SCALE=1 BENCH_DIR=/tmp/flowgate-scale
#        PORT UPSTREAM_PORT ADMIN_PORT (as scripts/perf/peers-setup.sh), SKIP_BUILD=1.
# Usage: scripts/perf/scale-load.sh
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)
peers=${BENCH_DIR:-/tmp/flowgate-scale}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-10}; WARM=${WARM:-2}; CONNS=${CONNS:-64}
RELOAD_EVERY=${RELOAD_EVERY:-2}; SCALE=${SCALE:-1}
TOOLS="nginx wrk taskset curl python3|nginx wrk util-linux curl python3"
# shellcheck source=scripts/perf/peers-setup.sh
source "$project/scripts/perf/peers-setup.sh"
port=$PORT; admin=$ADMIN_PORT
out="$peers/scale-results"; rm -rf "$out"; mkdir -p "$out"
nginx -c "$peers/conf/upstream-nginx.conf" -g 'daemon off;' &
upstream=$!
sleep 0.3; taskset -a -cp 0 "$upstream" >/dev/null
gw=""
trap 'kill $upstream ${gw:-} 2>/dev/null || true' EXIT
token=$(cd "$peers" && ./mint_token.py)
oid=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["oid"])' "$token")
for kind in small large; do
  dir="$peers/scale-$kind"; rm -rf "$dir"; mkdir -p "$dir"
  flag=(); [ "$kind" = small ] && flag=(--small)
  python3 "$project/scripts/perf/scale-policy.py" "$dir" --base "$peers/conf/flowgate.toml" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT/" --oid "$oid" --scale "$SCALE" "${flag[@]}" >/dev/null
  install -m 600 "$peers/conf/bench-secrets.toml" "$dir/bench-secrets.toml"
done
# The measured routes are the last of their kind, whose numbers follow the scale.
exact=$(grep -o '^path = "/scale/exact/[0-9]*"' "$peers/scale-large/policy.toml" | tail -1 | cut -d'"' -f2)
prefix=$(grep -o '^path = "/scale/prefix/[0-9]*"' "$peers/scale-large/policy.toml" | tail -1 | cut -d'"' -f2)/x

start() {   # kind: starts flowgate on CPU 1 with that policy, waits until ready; sets gw and ready_ms
  local t0 t1
  t0=$(date +%s%N)
  RUST_LOG=warn taskset -c 1 "$project/target/release/flowgate" --threads 1 serve \
    --config "$peers/scale-$1/policy.toml" >"$out/gw-$1.log" 2>&1 &
  gw=$!
  for _ in $(seq 1 1200); do
    sleep 0.05
    kill -0 "$gw" 2>/dev/null || { echo "flowgate exited; see $out/gw-$1.log" >&2; exit 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break
  done
  t1=$(date +%s%N); ready_ms=$(((t1 - t0) / 1000000))
}
stop() { kill -TERM "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; gw=""; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$gw/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
reloads_ok() { curl -s "http://127.0.0.1:$admin/metrics" | awk -F' ' '/^flowgate_policy_reloads_total\{result="ok"\}/ {print $2}' | tail -1; }

# load NAME PATH: one measured wrk run; appends "name rps rps_per_core p50_ms p99_ms non2xx errors".
load() {
  local name=$1 path=$2 t0 t1 s0 s1 file="$out/$1.wrk" hz
  hz=$(getconf CLK_TCK)
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${WARM}s" -H "Authorization: Bearer $token" "https://127.0.0.1:$port$path" >/dev/null 2>&1
  t0=$(ticks); s0=$(date +%s.%N)
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port$path" >"$file" 2>&1
  t1=$(ticks); s1=$(date +%s.%N)
  python3 - "$file" "$name" "$((t1 - t0))" "$hz" "$s0" "$s1" >>"$out/rows.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
name, ticks, hz, s0, s1 = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\b" % label, text, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
cpu = ticks / hz / (s1 - s0)
print(f"{name} {rps:.0f} {rps / max(cpu, 1e-9):.0f} {ms('50%'):.2f} {ms('99%'):.2f} {non2xx} {errors}")
EOF
  tail -1 "$out/rows.txt"
}

: >"$out/rows.txt"
start small; small_rss=$(rss_kb); echo "ready: small $ready_ms ms, RSS $small_rss kB"; stop
start large; large_rss=$(rss_kb); echo "ready: large $ready_ms ms, RSS $large_rss kB"; stop
for round in $(seq 1 "$ROUNDS"); do
  for kind in small large; do
    start "$kind"
    load "r$round-$kind-exact" "$exact"
    load "r$round-$kind-prefix" "$prefix"
    stop
  done
done
# Goal 2: the estate, reloaded every RELOAD_EVERY seconds during the measured runs.
start large
before=$(reloads_ok)
for round in $(seq 1 "$ROUNDS"); do
  ( end=$((SECONDS + WARM + DUR)); while [ $SECONDS -lt $end ]; do sleep "$RELOAD_EVERY"; kill -HUP "$gw"; done ) &
  hup=$!
  load "r$round-large-reloading" "$exact"
  wait "$hup" 2>/dev/null || true
done
sleep 3
after=$(reloads_ok)
reloaded_rss=$(rss_kb)
stop
python3 - "$out/rows.txt" "${before:-0}" "${after:-0}" "$small_rss" "$large_rss" "$reloaded_rss" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
def med(kind, col):
    values = [float(r[col]) for r in rows if r[0].split("-", 1)[1] == kind]
    return statistics.median(values) if values else float("nan")
print("\nmedians over rounds (rps/core = requests per second per core flowgate used)")
print(f"{'policy/route':<24} {'rps/core':>9} {'p50 ms':>7} {'p99 ms':>7} {'lost':>8}")
for kind in ("small-exact", "large-exact", "small-prefix", "large-prefix", "large-reloading"):
    lost = sum(int(r[5]) + int(r[6]) for r in rows if r[0].split("-", 1)[1] == kind)
    print(f"{kind:<24} {med(kind, 2):>9.0f} {med(kind, 3):>7.2f} {med(kind, 4):>7.2f} {lost:>8}")
for route in ("exact", "prefix"):
    print(f"large/small {route}: {med('large-' + route, 2) / med('small-' + route, 2):.3f} (rps/core)")
print(f"p99 reloading / steady (large exact): {med('large-reloading', 4) / med('large-exact', 4):.2f}")
if any(int(r[5]) + int(r[6]) for r in rows):
    print("WARNING: some calls failed (non-2xx or socket errors): this run measured refusals, not the job")
print(f"reloads completed: {float(sys.argv[3]) - float(sys.argv[2]):.0f}")
print(f"RSS once ready: small {int(sys.argv[4]) / 1024:.1f} MiB, large {int(sys.argv[5]) / 1024:.1f} MiB; "
      f"large after the reloads {int(sys.argv[6]) / 1024:.1f} MiB")
EOF
echo "raw wrk outputs: $out"

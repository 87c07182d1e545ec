#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time and fails on the first crash.
# Not part of .ci/run (time). Needs the nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo +nightly install cargo-fuzz
# Usage: scripts/checks/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]
# Seeds: fuzz/seeds/TARGET (committed); the growing corpus: fuzz/corpus/TARGET (ignored).
# A crash leaves its input in fuzz/artifacts/TARGET/: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs nightly and cargo-fuzz: rustup toolchain install nightly && cargo +nightly install cargo-fuzz" >&2
  exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
printf '%-18s %12s %8s %8s %s\n' target execs cov ft result
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  [ -d "fuzz/seeds/$target" ] && cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  log="fuzz/artifacts/$target.log"
  mkdir -p fuzz/artifacts
  if cargo +nightly fuzz run -O "$target" "$corpus" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log and fuzz/artifacts/$target/)"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-18s %12s %8s %8s %s\n' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [ "$result" != ok ]; then
    tail -40 "$log" >&2
    exit 1
  fi
done

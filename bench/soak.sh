#!/usr/bin/env bash
# The model-based test (tests/model.rs), long: ROUNDS runs with random base
# seeds, each SEEDS rounds of OPS operations per thread on a real mount and a
# native directory, checked live, after a remount and on a peer. Prints one
# line per run and a table; exits 1 if any run diverged (its operation log is
# in /tmp/lattice-model-SEED.log).
#   bash bench/soak.sh [ROUNDS] [OPS] [SEEDS]
# `bash bench/soak.sh kill [CYCLES]` instead runs the SIGKILL drill
# (tests/crash.rs) for CYCLES kills (default 50) and prints its table.
# `bash bench/soak.sh randomio [OPS]` runs the random-I/O differential test
# (tests/conformance.rs: writes, reads, truncates, mmap writes, fallocate
# against a native file) for OPS operations (default 100,000).
# `bash bench/soak.sh cluster [NODES] [SECS]` runs writers on NODES nodes
# (default 10) for SECS seconds (default 600) under random cuts, gossip
# faults and SIGKILLs (tests/soak.rs) and prints its figures.
# `bash bench/soak.sh fuzz [SECS]` runs each cargo-fuzz target in fuzz/ for
# SECS seconds (default 600; needs the nightly toolchain and cargo-fuzz).
set -uo pipefail
cd "$(dirname "$0")/.."
# One long run of a test: prints a one-row table, "ok: WHAT" when the test
# passed, else FAILED and the end of its output; exits accordingly.
#   one_row TITLE OUTPUT WHAT
one_row() {
  echo "| soak | result |"
  echo "|---|---|"
  if echo "$2" | grep -q "test result: ok"; then
    echo "| $1 | ok: $3 |"
    exit 0
  fi
  echo "| $1 | FAILED |"
  echo "$2" | tail -40 >&2
  exit 1
}
if [ "${1:-}" = cluster ]; then
  nodes=${2:-10} secs=${3:-600}
  out=$(LATTICE_SOAK_NODES=$nodes LATTICE_SOAK_SECS=$secs LATTICE_TEST_TIMEOUT_SECS=$((secs + 600)) \
        timeout $((secs + 900)) cargo test -q -p mountctl --test soak -- --nocapture 2>&1)
  line=$(echo "$out" | grep -E "^soak:" | head -1)
  one_row "writers under random faults, $nodes nodes, $secs s" "$out" "${line#soak: }"
fi
if [ "${1:-}" = fuzz ]; then
  secs=${2:-600}
  cd fuzz
  cargo +nightly fuzz build --sanitizer none -O >&2 || exit 1
  echo "| fuzz target | seconds | runs | result |"
  echo "|---|---|---|---|"
  failed=0
  for t in $(cargo +nightly fuzz list); do
    out=$(cargo +nightly fuzz run --sanitizer none -O "$t" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1)
    runs=$(echo "$out" | grep -oE "#[0-9]+" | tail -1 | tr -d '#')
    if echo "$out" | grep -q "Done [0-9]* runs"; then
      echo "| $t | $secs | ${runs:-?} | ok |"
    else
      failed=1
      echo "| $t | $secs | ${runs:-?} | FAILED (artifact in fuzz/artifacts/$t) |"
      echo "$out" | tail -20 >&2
    fi
  done
  exit $failed
fi
if [ "${1:-}" = randomio ]; then
  ops=${2:-100000}
  start=$(date +%s)
  out=$(LATTICE_RANDOM_IO_OPS=$ops LATTICE_TEST_TIMEOUT_SECS=3600 timeout 3600 \
        cargo test -q -p mountctl --test conformance random_io -- --nocapture 2>&1)
  one_row "random I/O against a native file, $ops operations" "$out" "byte-identical at every check, $(( $(date +%s) - start )) s"
fi
if [ "${1:-}" = kill ]; then
  cycles=${2:-50}
  out=$(LATTICE_KILL_CYCLES=$cycles timeout 1800 \
        cargo test -q -p mountctl --test crash -- --nocapture 2>&1)
  line=$(echo "$out" | grep -E "kills, [0-9]+ fsynced" | head -1)
  one_row "SIGKILL during mixed writes, $cycles kills" "$out" "$line"
fi
rounds=${1:-10} ops=${2:-3000} seeds=${3:-3}
cargo test -q -p mountctl --test model --no-run >&2 || exit 1
ok=0 failed=0 total=0
for i in $(seq 1 "$rounds"); do
  base=$RANDOM$RANDOM
  out=$(LATTICE_MODEL_OPS=$ops LATTICE_MODEL_SEEDS=$seeds LATTICE_MODEL_SEED=$base \
        cargo test -q -p mountctl --test model -- --nocapture 2>&1)
  line=$(echo "$out" | grep -E "^model:" | head -1)
  n=$(echo "$line" | grep -oE "[0-9]+ operations" | grep -oE "[0-9]+")
  total=$((total + ${n:-0}))
  if echo "$out" | grep -q "test result: ok"; then
    ok=$((ok + 1)); echo "run $i (base $base): ok, $line" >&2
  else
    failed=$((failed + 1)); echo "run $i (base $base): FAILED" >&2
    echo "$out" | grep -E "seed [0-9]+:|native:|mount:|all in|differ|missing|extra|ERROR" -A1 | head -20 >&2
  fi
done
echo "| soak | runs | operations | diverged |"
echo "|---|---|---|---|"
echo "| model test, $seeds rounds x $ops ops x 3 threads per run | $rounds | $total | $failed |"
[ "$failed" -eq 0 ]

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
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = randomio ]; then
  ops=${2:-100000}
  start=$(date +%s)
  out=$(LATTICE_RANDOM_IO_OPS=$ops LATTICE_TEST_TIMEOUT_SECS=3600 timeout 3600 \
        cargo test -q -p mountctl --test conformance random_io -- --nocapture 2>&1)
  secs=$(( $(date +%s) - start ))
  echo "| soak | operations | result |"
  echo "|---|---|---|"
  if echo "$out" | grep -q "test result: ok"; then
    echo "| random I/O against a native file | $ops | ok: byte-identical at every check, ${secs} s |"
    exit 0
  fi
  echo "| random I/O against a native file | $ops | FAILED |"
  echo "$out" | tail -30 >&2
  exit 1
fi
if [ "${1:-}" = kill ]; then
  cycles=${2:-50}
  out=$(LATTICE_KILL_CYCLES=$cycles timeout 1800 \
        cargo test -q -p mountctl --test crash -- --nocapture 2>&1)
  line=$(echo "$out" | grep -E "kills, [0-9]+ fsynced" | head -1)
  echo "| soak | kills | result |"
  echo "|---|---|---|"
  if echo "$out" | grep -q "test result: ok"; then
    echo "| SIGKILL during mixed writes | $cycles | ok: $line |"
    exit 0
  fi
  echo "| SIGKILL during mixed writes | $cycles | FAILED |"
  echo "$out" | tail -30 >&2
  exit 1
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

#!/usr/bin/env bash
# Benchmark: a native directory, bindfs and a Lattice mount, side by side in
# one run (bindfs is a plain FUSE pass-through: what FUSE itself costs here).
#
#   bash bench/mount.sh            # needs root (drop_caches), /dev/fuse, apt for bindfs
#
# Prints ONE markdown table (to paste into the README): create, stat and
# unlink 10,000 files; `ls -l` of 50,000 files; `tar -x` of a ~10,000-file
# source tree; `git clone` and `git status` of a repository made from it;
# sequential 1 GiB write (fsync) and cold read. Each figure is the median of
# REPS runs (default 3). Everything lives under $BENCH_DIR (default /var/tmp),
# on one disk. A quick try:
#   FILES=2000 LS_FILES=5000 TAR_FILES=2000 SEQ_MIB=256 REPS=1 bash bench/mount.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TAR_FILES=${TAR_FILES:-10000}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
export SEQ_MIB=${SEQ_MIB:-1024}

log() { echo "bench: $*" >&2; }
[ -c /dev/fuse ] || { log "/dev/fuse is missing"; exit 1; }
command -v bindfs >/dev/null || apt-get install -y bindfs >/dev/null
command -v git >/dev/null || apt-get install -y git >/dev/null

log "building (release)"
cargo build --release -q -p mountctl
export LATTICE_BENCH_BIN=$PWD/target/release/mountctl
export LATTICE_RELAY=off LATTICE_DNS=off LATTICE_LAN=off # one node; no internet here

WORK=$(mktemp -d "$BENCH_DIR/lattice-bench.XXXXXX")
export BENCH_WORK=$WORK/t
mkdir -p "$BENCH_WORK"
cleanup() {
  set +e
  for d in "$BENCH_WORK"/bindfs "$BENCH_WORK"/lattice; do
    if mountpoint -q "$d"; then umount -l "$d"; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs, made before timing anything -------------------------------------
# A ~TAR_FILES-file source tree: real crates from the cargo registry.
SRC=$WORK/src
mkdir -p "$SRC"
count=0
for crate in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/*/; do
  n=$(find "$crate" -type f | wc -l)
  cp -a "$crate" "$SRC/"
  count=$((count + n))
  [ "$count" -ge "$TAR_FILES" ] && break
done
export BENCH_TAR=$WORK/src.tar
tar -cf "$BENCH_TAR" -C "$SRC" .
export BENCH_TAR_FILES=$(tar -tf "$BENCH_TAR" | grep -vc '/$' || true)
# The same tree as a git repository of one commit, cloned over file://.
git -C "$SRC" init -q
git -C "$SRC" add -A
git -C "$SRC" -c user.name=bench -c user.email=bench@example.com commit -qm tree
export BENCH_REPO=file://$SRC
export BENCH_REPO_DESC="$BENCH_TAR_FILES files"
log "tree: $BENCH_TAR_FILES files, $(( $(stat -c %s "$BENCH_TAR") / 1048576 )) MiB"
# Random data (zeros would be deduplicated by chunking), in the page cache.
export BENCH_RAND=$WORK/rand.bin
head -c "$((SEQ_MIB * 1048576))" /dev/urandom > "$BENCH_RAND"
cat "$BENCH_RAND" > /dev/null
sync

python3 bench/mount.py

#!/usr/bin/env bash
# Benchmark: a native directory vs a Lattice mount, side by side, in one run.
#
#   bash bench/mount.sh            # needs root (drop_caches) and /dev/fuse
#
# Prints ONE markdown table (to paste into the README): creating 10,000 files
# of 4 KiB, tar -x of a ~10,000-file source tree, sequential 1 GiB write
# (dd conv=fsync) and read (page cache dropped first). The native directory is
# a temp dir on the same disk as the Lattice data folder (under $BENCH_DIR,
# default /var/tmp). Each figure is the median of REPS runs (default 3).
# Sizes can be lowered for a quick try:
#   FILES=2000 TAR_FILES=2000 SEQ_MIB=256 REPS=1 bash bench/mount.sh
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-10000}
TAR_FILES=${TAR_FILES:-10000}
SEQ_MIB=${SEQ_MIB:-1024}
REPS=${REPS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

log() { echo "bench: $*" >&2; }

[ -c /dev/fuse ] || { echo "bench: /dev/fuse is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 is needed" >&2; exit 1; }

log "building (release)"
cargo build --release -q -p mountctl
BIN=$PWD/target/release/mountctl
export LATTICE_RELAY=off LATTICE_DNS=off LATTICE_LAN=off  # one node; no internet here

WORK=$(mktemp -d "$BENCH_DIR/lattice-bench.XXXXXX")
LHOME=$WORK/home
MNT=$WORK/mnt
NATIVE=$WORK/native
mkdir -p "$MNT" "$NATIVE"

is_mounted() { awk -v d="$MNT" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo; }
cleanup() {
  set +e
  if is_mounted; then
    "$BIN" --home "$LHOME" unmount "$MNT" >/dev/null 2>&1 || true
    if is_mounted; then umount -l "$MNT"; fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" --home "$LHOME" init >/dev/null
"$BIN" --home "$LHOME" mount "$MNT"
is_mounted || { echo "bench: $MNT is not mounted after mountctl mount" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop caches (not root?)"; }

# --- inputs, made before timing anything -----------------------------------

# A ~TAR_FILES-file source tree: real crates from the cargo registry when there
# are enough, else a generated tree of mixed sizes in ~100 dirs.
SRC=$WORK/src
mkdir -p "$SRC"
REG=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ 2>/dev/null | head -1 || true)
count=0
if [ -n "$REG" ]; then
  for crate in "$REG"*/; do
    n=$(find "$crate" -type f | wc -l)
    cp -a "$crate" "$SRC/"
    count=$((count + n))
    [ "$count" -ge "$TAR_FILES" ] && break
  done
fi
if [ "$count" -lt "$TAR_FILES" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  python3 - "$SRC" "$TAR_FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
sizes = [0, 100, 700, 2000, 4096, 9000, 30000, 120000]
for i in range(n):
    d = os.path.join(root, "dir%03d" % (i % 100), "sub%d" % (i % 3))
    os.makedirs(d, exist_ok=True)
    size = rnd.choice(sizes) + rnd.randrange(100)
    with open(os.path.join(d, "file%05d.txt" % i), "wb") as f:
        f.write(os.urandom(size // 2).hex().encode()[:size])
EOF
  SRC_KIND="generated tree"
else
  SRC_KIND="crates from the cargo registry"
fi
TAR=$WORK/src.tar
tar -cf "$TAR" -C "$SRC" .
TAR_N=$(tar -tf "$TAR" | grep -vc '/$' || true)
TAR_MIB=$(( $(stat -c %s "$TAR") / 1048576 ))
rm -rf "$SRC"
log "tarball: $TAR_N files, $TAR_MIB MiB ($SRC_KIND)"

# Random data for the sequential test (zeros would be deduplicated by chunking).
RAND=$WORK/rand.bin
head -c "$((SEQ_MIB * 1048576))" /dev/urandom > "$RAND"
cat "$RAND" > /dev/null # in the page cache for both writers
sync # so that writing back the inputs does not slow the first benchmark

# --- the benchmarks -----------------------------------------------------------

create_files() { # DIR -> seconds
  python3 - "$1/create" "$FILES" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
data = os.urandom(4096)
t = time.perf_counter()
for i in range(n):
    fd = os.open(os.path.join(d, "f%05d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
print("%.3f" % (time.perf_counter() - t))
EOF
}

tar_x() { # DIR -> seconds
  mkdir -p "$1/tar"
  local t0 t1
  t0=$(now); tar -xf "$TAR" -C "$1/tar"; t1=$(now)
  elapsed "$t0" "$t1"
}

tar_x_sync() { # DIR -> seconds, until the extracted tree is on disk
  mkdir -p "$1/tar-sync"
  local t0 t1
  t0=$(now); tar -xf "$TAR" -C "$1/tar-sync"; sync; t1=$(now)
  elapsed "$t0" "$t1"
}

seq_write() { # DIR -> seconds
  local t0 t1
  t0=$(now)
  dd if="$RAND" of="$1/seq.bin" bs=1M count="$SEQ_MIB" conv=fsync status=none
  t1=$(now)
  elapsed "$t0" "$t1"
}

seq_read() { # DIR -> seconds
  drop_caches
  local t0 t1
  t0=$(now)
  dd if="$1/seq.bin" of=/dev/null bs=1M status=none
  t1=$(now)
  elapsed "$t0" "$t1"
}

declare -A R # R[where,test] = space-separated seconds, one per rep
for rep in $(seq 1 "$REPS"); do
  for where in native lattice; do
    if [ $where = native ]; then D=$NATIVE/r$rep; else D=$MNT/r$rep; fi
    mkdir -p "$D"
    # sync before each step: one step's writeback must not be timed in the next.
    sync; log "rep $rep, $where: create $FILES files of 4 KiB"; R[$where,create]+=" $(create_files "$D")"
    drop_caches
    log "rep $rep, $where: tar -x";                            R[$where,tar]+=" $(tar_x "$D")"
    sync; log "rep $rep, $where: tar -x then sync";            R[$where,tarsync]+=" $(tar_x_sync "$D")"
    sync; log "rep $rep, $where: sequential write";            R[$where,write]+=" $(seq_write "$D")"
    log "rep $rep, $where: sequential read";                   R[$where,read]+=" $(seq_read "$D")"
  done
  # Correctness, so a fast wrong answer does not pass as a result.
  diff -rq "$NATIVE/r$rep/tar" "$MNT/r$rep/tar" >/dev/null \
    || log "WARNING: the tree extracted in the mount differs from the native one"
  cmp -s "$RAND" "$MNT/r$rep/seq.bin" || log "WARNING: the big file read back from the mount differs"
  rm -rf "$NATIVE/r$rep" "$MNT/r$rep"
done

"$BIN" --home "$LHOME" unmount "$MNT"

# --- the table ------------------------------------------------------------------

python3 - "$FILES" "$TAR_N" "$TAR_MIB" "$SEQ_MIB" \
  "${R[native,create]}" "${R[lattice,create]}" "${R[native,tar]}" "${R[lattice,tar]}" \
  "${R[native,write]}" "${R[lattice,write]}" "${R[native,read]}" "${R[lattice,read]}" \
  "${R[native,tarsync]}" "${R[lattice,tarsync]}" \
  "$(findmnt -n -o FSTYPE -T "$NATIVE" 2>/dev/null || stat -f -c %T "$NATIVE")" "$(nproc)" "$SRC_KIND" "$REPS" <<'EOF'
import statistics, sys
a = sys.argv[1:]
files, tar_n, tar_mib, seq_mib = int(a[0]), int(a[1]), int(a[2]), int(a[3])
nc, lc, nt, lt, nw, lw, nr, lr, nts, lts = (statistics.median(map(float, x.split())) for x in a[4:14])
fstype, cores, kind, reps = a[14], a[15], a[16], int(a[17])
mb = seq_mib * 1048576 / 1e6
def rate(x): return "{:,.0f}".format(x)
def slower(r): return "%.1fx slower" % r if r >= 1.05 else ("%.2fx" % r if r > 0.95 else "%.1fx faster" % (1 / r))
rows = [
    ("create %s files of 4 KiB (ops/s)" % "{:,}".format(files), rate(files / nc), rate(files / lc), slower(lc / nc)),
    ("tar -x of %s files, %d MiB (s)" % ("{:,}".format(tar_n), tar_mib), "%.2f" % nt, "%.2f" % lt, slower(lt / nt)),
    ("tar -x then sync: until on disk (s)", "%.2f" % nts, "%.2f" % lts, slower(lts / nts)),
    ("sequential write %d MiB, dd conv=fsync (MB/s)" % seq_mib, rate(mb / nw), rate(mb / lw), slower(lw / nw)),
    ("sequential read %d MiB, caches dropped (MB/s)" % seq_mib, rate(mb / nr), rate(mb / lr), slower(lr / nr)),
]
print("| benchmark | native (%s) | Lattice mount | Lattice vs native |" % fstype)
print("|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s |" % r)
print()
print("Release build, %s cores; median of %d runs, native and Lattice alternating; native = a directory on the same disk; tar source: %s." % (cores, reps, kind))
EOF

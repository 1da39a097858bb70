#!/usr/bin/env bash
# Replication, side by side with Syncthing, in one run on this machine: real
# Lattice daemons and mounts (release build) and Syncthing instances
# (discovery, relays and NAT off, watcher delay 1 s, its most eager setting),
# all on 127.0.0.1. Prints one markdown table with both and the ratios.
#
#   bench/replication.sh            everything (~10 min)
#   BENCH_QUICK=1 bench/replication.sh   fewer samples, 10,000-file backfill
#
# Needs: syncthing (apt-get install syncthing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v syncthing >/dev/null || { echo "bench: syncthing is needed (apt-get install -y syncthing)" >&2; exit 1; }
cargo build --release -p mountctl >&2
export LATTICE_BENCH_BIN=$PWD/target/release/mountctl
exec python3 - <<'PY'
import os, subprocess, sys, tempfile, time
sys.path.insert(0, "bench")
from benchlib import *
import syncthing

QUICK = os.environ.get("BENCH_QUICK") == "1"
SAMPLES = 30 if QUICK else 100
BACKFILL = 10_000 if QUICK else 50_000
BIG = 256 << 20


def latency(src, dsts, n):
    """Close on src -> visible with its content on every dst: (p50, p99, max) in ms."""
    per = []
    for i in range(n):
        data = f"file {i} {time.time()}".encode()
        path = f"lat{i:04d}-{time.monotonic_ns()}"
        t0 = time.perf_counter()
        with open(f"{src}/{path}", "wb") as f:
            f.write(data)
        left = set(dsts)
        while left:
            for d in list(left):
                if content(f"{d}/{path}") == data:
                    per.append((time.perf_counter() - t0) * 1000)
                    left.discard(d)
            if time.perf_counter() - t0 > 120:
                raise SystemExit("latency: timed out")
            time.sleep(0.0005)
    p50, p99 = percentiles(per)
    return p50, p99, max(per)


def burst(src, dst, n=1000):
    t0 = time.perf_counter()
    for i in range(n):
        with open(f"{src}/burst{i:04d}", "wb") as f:
            f.write(b"x" * 100)
    wait(lambda: sum(1 for x in os.listdir(dst) if x.startswith("burst")) == n, 600, "the burst")
    return time.perf_counter() - t0


def big_file(src, dst, payload):
    want = sha(payload)
    t0 = time.perf_counter()
    subprocess.run(["cp", payload, f"{src}/big.bin"], check=True)
    wait(lambda: os.path.exists(f"{dst}/big.bin") and os.path.getsize(f"{dst}/big.bin") == BIG
         and sha(f"{dst}/big.bin") == want, 900, "the big file")
    return time.perf_counter() - t0


def one_byte_edit(src, dst, out_bytes):
    before = out_bytes()
    with open(f"{src}/big.bin", "r+b") as f:
        f.seek(BIG // 2)
        old = f.read(1)
        f.seek(BIG // 2)
        f.write(bytes([old[0] ^ 0xFF]))
        new = bytes([old[0] ^ 0xFF])
    t0 = time.perf_counter()

    def edited():
        try:
            with open(f"{dst}/big.bin", "rb") as f:
                f.seek(BIG // 2)
                return f.read(1) == new
        except OSError:  # being replaced
            return False
    wait(edited, 600, "the edit")
    t = time.perf_counter() - t0
    time.sleep(2)  # let the counters settle
    return t, out_bytes() - before


def fill(d, n):
    os.makedirs(f"{d}/tree", exist_ok=True)
    for i in range(n):
        sub = f"{d}/tree/d{i // 1000:03d}"
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        with open(f"{sub}/f{i:05d}", "wb") as f:
            f.write(f"file {i}\n".encode())


def count(d):
    n = 0
    for _, _, files in os.walk(f"{d}/tree"):
        n += len(files)
    return n


rows = []
payload = tempfile.mktemp(prefix="lattice-big-", dir="/var/tmp")
with open(payload, "wb") as f:
    f.write(os.urandom(BIG))

# ---------------- Lattice ----------------
L = {}
c = Cluster("lattice-repl-")
try:
    a, (b,) = c.group(2)
    sent = lambda: c.status(a)["bytes_sent"]
    step("lattice: 2 nodes")
    L["lat2"] = latency(a[1], [b[1]], SAMPLES)
    L["burst"] = burst(a[1], b[1])
    L["big"] = big_file(a[1], b[1], payload)
    L["edit"] = one_byte_edit(a[1], b[1], sent)

    # Catch-up after a restart: B is down while A writes 200 files.
    c.unmount(b)
    for i in range(200):
        with open(f"{a[1]}/while-down{i:03d}", "wb") as f:
            f.write(b"y" * 200)
    t0 = time.perf_counter()
    c.mount(b)
    wait(lambda: sum(1 for x in os.listdir(b[1]) if x.startswith("while-down")) == 200, 600, "catch-up")
    L["restart"] = time.perf_counter() - t0

    # Backfill: a new node joins a share of BACKFILL small files.
    fill(a[1], BACKFILL)
    step("lattice: backfill")
    time.sleep(1)  # the last files' group commit
    t0 = time.perf_counter()
    n = c.node(c.ctl(a[0], "invite").strip())
    wait(lambda: count(n[1]) == BACKFILL, 900, "the backfill")
    L["backfill"] = time.perf_counter() - t0
finally:
    c.close()

c = Cluster("lattice-repl10-")
try:
    step("lattice: 10 nodes")
    a, rest = c.group(10)
    L["lat10"] = latency(a[1], [r[1] for r in rest], SAMPLES // 2)
finally:
    c.close()

# ---------------- Syncthing ----------------
S = {}
work = tempfile.mkdtemp(prefix="st-repl-", dir="/var/tmp")
st = syncthing.Cluster(work, 3)
try:
    sa, sb, sc = st.nodes
    step("syncthing: 2 nodes")
    st.start([sa, sb])
    S["lat2"] = latency(sa.data, [sb.data], SAMPLES)
    S["burst"] = burst(sa.data, sb.data)
    S["big"] = big_file(sa.data, sb.data, payload)
    S["edit"] = one_byte_edit(sa.data, sb.data, sa.out_bytes)

    sb.stop()
    for i in range(200):
        with open(f"{sa.data}/while-down{i:03d}", "wb") as f:
            f.write(b"y" * 200)
    wait(sa.idle, 600, "syncthing idle")
    t0 = time.perf_counter()
    sb.start()
    wait(lambda: sum(1 for x in os.listdir(sb.data) if x.startswith("while-down")) == 200, 600, "syncthing catch-up")
    S["restart"] = time.perf_counter() - t0

    step("syncthing: backfill")
    fill(sa.data, BACKFILL)
    time.sleep(2)
    wait(sa.idle, 900, "syncthing's scan")
    t0 = time.perf_counter()
    st.start([sc])
    wait(lambda: count(sc.data) == BACKFILL, 1800, "syncthing's backfill")
    S["backfill"] = time.perf_counter() - t0
finally:
    st.close()

work = tempfile.mkdtemp(prefix="st-repl10-", dir="/var/tmp")
st = syncthing.Cluster(work, 10)
try:
    step("syncthing: 10 nodes")
    st.start()
    S["lat10"] = latency(st.nodes[0].data, [n.data for n in st.nodes[1:]], SAMPLES // 2)
finally:
    st.close()
os.unlink(payload)


def ratio(l, s):
    return f"{s / l:.1f}x" if l > 0 else "-"


def row(what, l, s, fmt, target, better_low=True):
    rows.append((what, fmt(l), fmt(s), ratio(l, s) if better_low else ratio(s, l), target))


ms = lambda x: f"{x:.1f} ms"
sec = lambda x: f"{x:.2f} s"
row("close -> visible, 2 nodes, p50", L["lat2"][0], S["lat2"][0], ms, "<= 10 ms")
row("close -> visible, 2 nodes, max", L["lat2"][2], S["lat2"][2], ms, "<= 50 ms")
row("close -> visible on all, 10 nodes, p99", L["lat10"][1], S["lat10"][1], ms, "<= 150 ms")
row("1,000-file burst until all on B", L["burst"], S["burst"], sec, "<= 0.5 s")
mbs = lambda t: BIG / t / 1e6
rows.append(("new 256 MiB file until identical on B", f"{L['big']:.2f} s ({mbs(L['big']):.0f} MB/s)",
             f"{S['big']:.2f} s ({mbs(S['big']):.0f} MB/s)", ratio(L["big"], S["big"]), ">= 3x Syncthing's rate"))
rows.append(("1-byte edit in it: visible on B", f"{L['edit'][0] * 1000:.0f} ms", f"{S['edit'][0] * 1000:.0f} ms",
             ratio(L["edit"][0], S["edit"][0]), "<= 100 ms"))
rows.append(("1-byte edit: bytes A sent (chunks included)", f"{L['edit'][1] / 1024:.0f} KiB", f"{S['edit'][1] / 1024:.0f} KiB",
             ratio(L["edit"][1], S["edit"][1]), "<= 1 MiB"))
row(f"{BACKFILL:,}-file backfill of a new node", L["backfill"], S["backfill"], sec, "<= 10 s (50,000)")
row("catch-up after a restart (200 files written while down)", L["restart"], S["restart"], sec, "<= 2 s")

print("| benchmark | Lattice | Syncthing | Lattice faster by | target |")
print("|---|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s | %s |" % r)
print()
print(f"Release build, {os.cpu_count()} cores, every node on one machine, 127.0.0.1. "
      f"Syncthing {subprocess.run(['syncthing', '--version'], capture_output=True, text=True).stdout.split()[1]}.")
PY

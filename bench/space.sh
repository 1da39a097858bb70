#!/usr/bin/env bash
# Space and history, release build, real daemons on 127.0.0.1. Prints one
# markdown table:
# - a share whose files were rewritten many times (8 versions of a 64 MiB
#   file, 2,000 small files written 5 times each, 1,000 made and deleted):
#   the store on disk (du) against the live files (du of the mount's
#   content), then after `gc` under `keep-history 0`, and how long gc took;
# - a new member of that share: joined from a snapshot (the default) against
#   `join --full-history`, side by side: time until mounted and identical,
#   bytes received, entries held.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mountctl >&2
export LATTICE_BENCH_BIN=$PWD/target/release/mountctl
exec python3 - <<'PY'
import os, subprocess, sys, time
sys.path.insert(0, "bench")
from benchlib import *

def du(path):
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()[0]) * 1024

def mib(b):
    return f"{b / 1048576:,.1f} MiB"

rows = []
def row(what, lattice, other="-", ratio="-"):
    rows.append((what, lattice, other, ratio))
    print(f"  {what}: {lattice} | {other} | {ratio}", file=sys.stderr, flush=True)

c = Cluster("lattice-space-")
try:
    a = c.node()
    step("writing history")
    for v in range(8):
        with open(f"{a[1]}/big.bin", "wb") as f:
            f.write(os.urandom(64 << 20))
            os.fsync(f.fileno())
    os.makedirs(f"{a[1]}/small")
    for v in range(5):
        for i in range(2000):
            with open(f"{a[1]}/small/f{i}.txt", "wb") as f:
                f.write(os.urandom(4096))
    for i in range(1000):
        p = f"{a[1]}/tmp{i}.bin"
        with open(p, "wb") as f:
            f.write(os.urandom(16384))
        os.remove(p)
    wait(lambda: c.status(a)["unwritten"] == 0)
    live = 64 << 20
    live += 2000 * 4096
    store = f"{a[0]}/shares/default/store.redb"

    # A new member while the history is still there.
    for mode in ("snapshot", "full"):
        home, mnt = f"{c.work}/j-{mode}", f"{c.work}/mj-{mode}"
        os.makedirs(mnt)
        c.ctl(home, "init")
        ticket = c.ctl(a[0], "invite").strip()
        extra = [] if mode == "snapshot" else ["--full-history"]
        t0 = time.perf_counter()
        c.ctl(home, "join", ticket, mnt, "--bind", "127.0.0.1:0", *extra)
        n = (home, mnt)
        c.mounts.append(n)
        wait(lambda: c.status(n)["frontier"] == c.status(a)["frontier"] and c.status(n)["unwritten"] == 0, 1800)
        took = time.perf_counter() - t0
        s = c.status(n)
        if mode == "snapshot":
            snap = (took, s["bytes_received"], s["held_entries"], du(f"{home}/shares/default/store.redb"))
        else:
            full = (took, s["bytes_received"], s["held_entries"], du(f"{home}/shares/default/store.redb"))
        c.unmount(n)
    row("new member: time until mounted and caught up (snapshot / full history)",
        f"{snap[0]:.2f} s", f"{full[0]:.2f} s", f"{full[0] / snap[0]:.1f}x faster")
    row("new member: bytes received", mib(snap[1]), mib(full[1]), f"{full[1] / max(snap[1], 1):.1f}x less")
    row("new member: entries held", f"{snap[2]:,}", f"{full[2]:,}", f"{full[2] / max(snap[2], 1):.1f}x fewer")
    row("new member: store on disk (du)", mib(snap[3]), mib(full[3]), f"{full[3] / max(snap[3], 1):.1f}x smaller")

    before = du(store)
    row("store on disk with 30 days of history (du) / live content", mib(before), mib(live), f"{before / live:.1f}x")
    c.ctl(a[0], "config", "keep-history", "0")
    t0 = time.perf_counter()
    out = c.ctl(a[0], "gc", "--json")
    took = time.perf_counter() - t0
    after = du(store)
    row("store on disk after `gc` under keep-history 0 (du) / live content", mib(after), mib(live), f"{after / live:.2f}x")
    row("`gc` (plan, delete, compact)", f"{took:.2f} s", "-", "-")
    assert sha(f"{a[1]}/big.bin") is not None
finally:
    c.close()

print("| benchmark | Lattice | compared with | ratio |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY

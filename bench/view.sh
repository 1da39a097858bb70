#!/usr/bin/env bash
# The mount's view at scale, release build, real daemons on 127.0.0.1. Prints
# one markdown table: a remote change until visible on B with 1,000, 10,000
# and 100,000 files in the share (p50 / p99); B's CPU and peak RSS for a
# trickle of 500 changes at 50,000 files; B's RSS after mounting 100,000
# files; `echo >> log` and close after a 1-byte edit, small file vs large
# file and Lattice vs the native directory; daemon RSS after writing and
# reading 3 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mountctl >&2
export LATTICE_BENCH_BIN=$PWD/target/release/mountctl
exec python3 - <<'PY'
import os, statistics, sys, time
sys.path.insert(0, "bench")
from benchlib import *

rows = []
def row(what, lattice, native="-", target="-"):
    rows.append((what, lattice, native, target))
    print(f"  {what}: {lattice} (native {native})", file=sys.stderr, flush=True)

c = Cluster("lattice-view-")
native_dir = f"{c.work}/native"
os.makedirs(native_dir)
try:
    a, (b,) = c.group(2)
    made = 0

    def fill(n):
        global made
        while made < n:
            d = f"{a[1]}/d{made // 1000:03d}"
            if made % 1000 == 0:
                os.makedirs(d, exist_ok=True)
            with open(f"{d}/f{made}", "wb") as f:
                f.write(b"x")
            made += 1
        wait(lambda: c.status(a)["frontier"] == c.status(b)["frontier"], 1800)

    def visible(tag, samples=100):
        lat = []
        for i in range(samples):
            data = f"{tag} {i} {time.time()}".encode()
            p = f"lat-{tag}-{i}"
            t0 = time.perf_counter()
            with open(f"{a[1]}/{p}", "wb") as f:
                f.write(data)
            wait(lambda: content(f"{b[1]}/{p}") == data)
            lat.append((time.perf_counter() - t0) * 1000)
        return percentiles(lat)

    for n in (1_000, 10_000, 50_000, 100_000):
        fill(n)
        if n == 50_000:
            pid = c.pid(b)
            reset_peak(pid)
            cpu0 = cpu_seconds(pid)
            for i in range(500):
                data = f"trickle {i}".encode()
                with open(f"{a[1]}/trickle{i}", "wb") as f:
                    f.write(data)
                wait(lambda: content(f"{b[1]}/trickle{i}") == data)
            cpu = cpu_seconds(pid) - cpu0
            row("B: CPU / peak RSS for a trickle of 500 changes at 50,000 files",
                f"{cpu:.2f} s / {proc_status(pid)[1]:.0f} MiB", target="-")
        else:
            p50, p99 = visible(n)
            row(f"close on A -> visible on B, {n:,} files in the share (p50 / p99)",
                f"{p50:.1f} / {p99:.1f} ms", target="p50 <= 20 ms, flat")
    c.unmount(b)
    c.mount(b)
    pid = c.pid(b)
    rss_mount = proc_status(pid)[0]
    t0 = time.perf_counter()
    count = sum(len(fs) + len(ds) for _, ds, fs in os.walk(b[1]))
    walk = time.perf_counter() - t0
    row(f"B: RSS after mounting {count:,} files / after walking them all ({walk:.1f} s)",
        f"{rss_mount:.0f} / {proc_status(pid)[0]:.0f} MiB", target="<= 200 MiB")
    c.unmount(b)

    def make(path, size):
        block = os.urandom(4 << 20)
        with open(path, "wb") as f:
            for k in range(size // len(block)):
                f.write(bytes([k & 0xFF]) + block[1:])
        os.sync()

    def side_by_side(size, label, prefix, measure):
        """Median ms of `measure(path, i)` over 20 runs, on the mount and natively."""
        ms = {}
        for side, root in (("lattice", a[1]), ("native", native_dir)):
            p = f"{root}/{prefix}-{label.replace(' ', '')}"
            make(p, size)
            ms[side] = statistics.median(measure(p, i) for i in range(20))
        return ms

    def append(p, i):
        t0 = time.perf_counter()
        with open(p, "ab") as f:
            f.write(b"one more log line\n")
        return (time.perf_counter() - t0) * 1000

    for size, label in ((4 << 20, "4 MiB"), (1 << 30, "1 GiB")):
        ms = side_by_side(size, label, "log", append)
        row(f"`echo >> log` on a {label} file (median of 20)",
            f"{ms['lattice']:.2f} ms", f"{ms['native']:.2f} ms ({ms['lattice'] / ms['native']:.1f}x)", "independent of size")

    for size, label in ((4 << 20, "4 MiB"), (256 << 20, "256 MiB")):
        def edit(p, i):
            f = open(p, "r+b")
            f.seek((size // 21) * (i + 1))
            f.write(b"!")
            t0 = time.perf_counter()
            f.close()
            return (time.perf_counter() - t0) * 1000
        ms = side_by_side(size, label, "edit", edit)
        row(f"close after a 1-byte write into a {label} file (median of 20)",
            f"{ms['lattice']:.2f} ms", f"{ms['native']:.3f} ms", "<= 5 ms, independent of size")

    # Memory after moving 3 GiB through a fresh mount.
    n = c.node()
    pid = c.pid(n)
    rss0 = proc_status(pid)[0]
    for k in range(3):
        make(f"{n[1]}/big{k}", 1 << 30)
    rss_w = proc_status(pid)
    drop_caches()
    for k in range(3):
        with open(f"{n[1]}/big{k}", "rb") as f:
            while f.read(1 << 20):
                pass
    rss_r = proc_status(pid)
    time.sleep(10)
    row("daemon RSS: fresh / after writing 3 GiB / after reading it / 10 s later (peak)",
        f"{rss0:.0f} / {rss_w[0]:.0f} / {rss_r[0]:.0f} / {proc_status(pid)[0]:.0f} MiB ({rss_r[1]:.0f})",
        target="<= 200 MiB")
finally:
    c.close()

print("| benchmark | Lattice | native | target |")
print("|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s |" % r)
print()
print(f"Release build, {os.cpu_count()} cores, daemons on one machine, 127.0.0.1; native is ext4 under /var/tmp.")
PY

#!/usr/bin/env bash
# Replication benchmark: real daemons and mounts on 127.0.0.1, release build.
# Prints one markdown table: close-on-A to visible-on-B latency (p50, p99 over
# 100 files) with 2 and 5 nodes, a 1,000-file burst, a 256 MiB file until
# identical, and the bytes A sends for a 1-byte edit in that file.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mountctl >&2
export LATTICE_BENCH_BIN=$PWD/target/release/mountctl
exec python3 - <<'PY'
import os, subprocess, sys, time
sys.path.insert(0, "bench")
from benchlib import *

def latency(a, others, n=100):
    lat = []
    for i in range(n):
        data = f"file {i} {time.time()}".encode()
        t0 = time.perf_counter()
        with open(f"{a[1]}/lat{i}", "wb") as f:
            f.write(data)
        for o in others:
            wait(lambda: content(f"{o[1]}/lat{i}") == data)
        lat.append((time.perf_counter() - t0) * 1000)
    return percentiles(lat)

rows = []
c = Cluster("lattice-repl-")
sent = lambda n: c.status(n)["bytes_sent"]
try:
    a, (b,) = c.group(2)
    p50, p99 = latency(a, [b])
    rows.append(("close on A -> visible on B, 2 nodes (p50 / p99 over 100 files)", f"{p50:.1f} / {p99:.1f} ms", "<= 50 / 200 ms"))

    t0 = time.perf_counter()
    for i in range(1000):
        with open(f"{a[1]}/burst{i:04d}", "wb") as f:
            f.write(b"x" * 100)
    wait(lambda: sum(1 for n in os.listdir(b[1]) if n.startswith("burst")) == 1000)
    rows.append(("1,000-file burst on A until all visible on B", f"{(time.perf_counter() - t0) * 1000:.0f} ms", "<= 1 s"))

    big = f"{c.work}/big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(256 << 20))
    want = sha(big)
    t0 = time.perf_counter()
    subprocess.run(["cp", big, f"{a[1]}/big.bin"], check=True)
    wait(lambda: os.path.exists(f"{b[1]}/big.bin") and os.path.getsize(f"{b[1]}/big.bin") == 256 << 20, 600)
    assert sha(f"{b[1]}/big.bin") == want
    rows.append(("256 MiB file: cp into A until identical on B", f"{time.perf_counter() - t0:.2f} s", "-"))

    before = sent(a)
    with open(f"{a[1]}/big.bin", "r+b") as f:
        f.seek(128 << 20)
        old = f.read(1)
        f.seek(128 << 20)
        f.write(bytes([old[0] ^ 0xFF]))
    with open(f"{a[1]}/big.bin", "rb") as f:
        f.seek(128 << 20)
        new = f.read(1)
    def edited():
        with open(f"{b[1]}/big.bin", "rb") as f:
            f.seek(128 << 20)
            return f.read(1) == new
    t = wait(edited, 600)
    time.sleep(1)
    rows.append(("1-byte edit in that file: bytes A sent", f"{(sent(a) - before) / 1024:.0f} KiB ({t * 1000:.0f} ms to visible)", "<= 1 MiB"))

    for n in list(c.mounts):
        c.unmount(n)
    a, rest = c.group(5)
    p50, p99 = latency(a, rest)
    rows.append(("close on A -> visible on all 4 others, 5 nodes (p50 / p99)", f"{p50:.1f} / {p99:.1f} ms", "<= 50 / 200 ms"))
finally:
    c.close()

print("| benchmark | Lattice | target |")
print("|---|---|---|")
for r in rows:
    print("| %s | %s | %s |" % r)
print()
print(f"Release build, {os.cpu_count()} cores, all daemons on one machine, 127.0.0.1.")
PY

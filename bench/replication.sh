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
import hashlib, json, os, statistics, subprocess, sys, tempfile, time

BIN = os.environ["LATTICE_BENCH_BIN"]
work = tempfile.mkdtemp(prefix="lattice-repl-", dir="/var/tmp")
mounts = []
made = [0]

def ctl(home, *args):
    out = subprocess.run([BIN, "--home", home, *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"mountctl {args}: {out.stderr}")
    return out.stdout

def node(i, ticket=None):
    home, mnt = f"{work}/h{i}", f"{work}/m{i}"
    os.makedirs(mnt)
    ctl(home, "init")
    if ticket:
        ctl(home, "join", ticket, mnt, "--bind", "127.0.0.1:0")
    else:
        ctl(home, "mount", mnt, "--bind", "127.0.0.1:0")
    mounts.append((home, mnt))
    return home, mnt

def fresh():
    made[0] += 1
    return made[0]

def cluster(n):
    a = node(fresh())
    rest = [node(fresh(), ctl(a[0], "invite").strip()) for _ in range(n - 1)]
    return a, rest

def wait(pred, limit=120):
    t = time.perf_counter()
    while not pred():
        if time.perf_counter() - t > limit:
            raise SystemExit("timed out")
        time.sleep(0.0005)
    return time.perf_counter() - t

def content(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return None

def latency(a, others, n=100):
    lat = []
    for i in range(n):
        data = f"file {i} {time.time()}".encode()
        t0 = time.perf_counter()
        with open(f"{a[1]}/lat{i}", "wb") as f:
            f.write(data)
        for o in others:
            wait(lambda: content(f"{o[1]}/lat{i}") == data)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000

def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()

def sent(home):
    return json.loads(ctl(home, "status", "--json"))["mounts"][0]["bytes_sent"]

rows = []
try:
    a, (b,) = cluster(2)
    p50, p99 = latency(a, [b])
    rows.append(("close on A -> visible on B, 2 nodes (p50 / p99 over 100 files)", f"{p50:.1f} / {p99:.1f} ms", "<= 50 / 200 ms"))

    t0 = time.perf_counter()
    for i in range(1000):
        with open(f"{a[1]}/burst{i:04d}", "wb") as f:
            f.write(b"x" * 100)
    wait(lambda: sum(1 for n in os.listdir(b[1]) if n.startswith("burst")) == 1000)
    rows.append(("1,000-file burst on A until all visible on B", f"{(time.perf_counter() - t0) * 1000:.0f} ms", "<= 1 s"))

    big = f"{work}/big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(256 << 20))
    want = sha(big)
    t0 = time.perf_counter()
    subprocess.run(["cp", big, f"{a[1]}/big.bin"], check=True)
    wait(lambda: os.path.exists(f"{b[1]}/big.bin") and os.path.getsize(f"{b[1]}/big.bin") == 256 << 20, 600)
    assert sha(f"{b[1]}/big.bin") == want
    rows.append(("256 MiB file: cp into A until identical on B", f"{time.perf_counter() - t0:.2f} s", "-"))

    before = sent(a[0])
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
    rows.append(("1-byte edit in that file: bytes A sent", f"{(sent(a[0]) - before) / 1024:.0f} KiB ({t * 1000:.0f} ms to visible)", "<= 1 MiB"))

    for h, m in mounts[:]:
        ctl(h, "unmount", m)
    mounts.clear()
    a, rest = cluster(5)
    p50, p99 = latency(a, rest)
    rows.append(("close on A -> visible on all 4 others, 5 nodes (p50 / p99)", f"{p50:.1f} / {p99:.1f} ms", "<= 50 / 200 ms"))
finally:
    for h, m in mounts:
        subprocess.run([BIN, "--home", h, "unmount", m], capture_output=True)
    subprocess.run(["rm", "-rf", work])

print("| benchmark | Lattice | target |")
print("|---|---|---|")
for r in rows:
    print("| %s | %s | %s |" % r)
print()
print(f"Release build, {os.cpu_count()} cores, all daemons on one machine, 127.0.0.1.")
PY

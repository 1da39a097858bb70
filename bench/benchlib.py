"""Helpers shared by the bench scripts: real daemons and mounts on 127.0.0.1."""
import hashlib, json, os, statistics, subprocess, tempfile, time

BIN = os.environ["LATTICE_BENCH_BIN"]
# Loopback only: no relays, no public address lookup.
os.environ.setdefault("LATTICE_RELAY", "off")
os.environ.setdefault("LATTICE_DNS", "off")
os.environ.setdefault("LATTICE_LAN", "off")


class Cluster:
    """Nodes in one work folder; `close()` unmounts them all and removes it."""

    def __init__(self, prefix):
        self.work = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
        self.mounts = []
        self.made = 0

    def ctl(self, home, *args, check=True):
        out = subprocess.run([BIN, "--home", home, *args], capture_output=True, text=True, timeout=1800)
        if check and out.returncode != 0:
            raise SystemExit(f"mountctl {args}: {out.stderr}")
        return out.stdout

    def node(self, ticket=None):
        self.made += 1
        home, mnt = f"{self.work}/h{self.made}", f"{self.work}/m{self.made}"
        os.makedirs(mnt)
        self.ctl(home, "init")
        if ticket:
            self.ctl(home, "join", ticket, mnt, "--bind", "127.0.0.1:0")
        else:
            self.ctl(home, "mount", mnt, "--bind", "127.0.0.1:0")
        self.mounts.append((home, mnt))
        return home, mnt

    def group(self, n):
        a = self.node()
        return a, [self.node(self.ctl(a[0], "invite").strip()) for _ in range(n - 1)]

    def unmount(self, n):
        self.ctl(n[0], "unmount", n[1])
        self.mounts.remove(n)

    def mount(self, n):
        self.ctl(n[0], "mount", n[1], "--bind", "127.0.0.1:0")
        self.mounts.append(n)

    def status(self, n):
        return json.loads(self.ctl(n[0], "status", "--json"))["mounts"][0]

    def pid(self, n):
        return self.status(n)["pid"]

    def close(self):
        for h, m in self.mounts:
            subprocess.run([BIN, "--home", h, "unmount", m], capture_output=True)
        subprocess.run(["rm", "-rf", self.work])


def wait(pred, limit=300, what="a condition"):
    t = time.perf_counter()
    while not pred():
        if time.perf_counter() - t > limit:
            raise SystemExit(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.0005)
    return time.perf_counter() - t


def step(msg):
    import sys
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def content(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return None


def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def proc_status(pid):
    """(VmRSS, VmHWM) of a process, in MiB."""
    v = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                v[k] = int(rest.split()[0]) / 1024
    return v["VmRSS"], v["VmHWM"]


def reset_peak(pid):
    """Starts a new peak-RSS window (VmHWM) for `pid`."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[max(0, int(len(xs) * 0.99) - 1)]


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass

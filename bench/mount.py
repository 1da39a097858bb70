"""A native directory, bindfs (what FUSE itself costs on this machine) and a
Lattice mount, side by side in one run; prints one markdown table with ratios.

Run through bench/mount.sh (it builds mountctl and installs bindfs). Sizes can
be lowered for a quick try: FILES, LS_FILES, SEQ_MIB, REPS.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

BIN = os.environ["LATTICE_BENCH_BIN"]
FILES = int(os.environ.get("FILES", 10000))
LS_FILES = int(os.environ.get("LS_FILES", 50000))
SEQ_MIB = int(os.environ.get("SEQ_MIB", 1024))
REPS = int(os.environ.get("REPS", 3))
TAR = os.environ["BENCH_TAR"]
REPO = os.environ["BENCH_REPO"]
RAND = os.environ["BENCH_RAND"]
WORK = os.environ["BENCH_WORK"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*cmd, cwd=None):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def create(d):
    os.makedirs(d)
    data = os.urandom(4096)
    for i in range(FILES):
        fd = os.open(f"{d}/f{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)


def stat_all(d):
    for i in range(FILES):
        os.stat(f"{d}/f{i:05d}")


def unlink_all(d):
    for i in range(FILES):
        os.unlink(f"{d}/f{i:05d}")


def many(d):
    os.makedirs(d)
    for i in range(LS_FILES):
        os.close(os.open(f"{d}/f{i:06d}", os.O_WRONLY | os.O_CREAT, 0o644))


def ls_l(d):
    subprocess.run(["ls", "-l", d], check=True, stdout=subprocess.DEVNULL)


def seq_write(d):
    run("dd", f"if={RAND}", f"of={d}/seq.bin", "bs=1M", f"count={SEQ_MIB}", "conv=fsync", "status=none")


def seq_read(d):
    run("dd", f"if={d}/seq.bin", "of=/dev/null", "bs=1M", "status=none")


class Target:
    def __init__(self, name):
        self.name = name
        self.dir = f"{WORK}/{name}"
        os.makedirs(self.dir)

    def start(self):
        pass

    def stop(self):
        pass


class Bindfs(Target):
    def start(self):
        self.src = f"{WORK}/bindfs-src"
        os.makedirs(self.src)
        run("bindfs", "--no-allow-other", self.src, self.dir)

    def stop(self):
        run("fusermount3", "-u", self.dir)


class Lattice(Target):
    def start(self):
        self.home = f"{WORK}/home"
        run(BIN, "--home", self.home, "init")
        run(BIN, "--home", self.home, "mount", self.dir, "--bind", "127.0.0.1:0")

    def stop(self):
        run(BIN, "--home", self.home, "unmount", self.dir)


def one_round(t, rep, out):
    d = f"{t.dir}/r{rep}"
    os.makedirs(d)

    def rec(key, secs):
        out.setdefault((t.name, key), []).append(secs)
        log(f"rep {rep}, {t.name}: {key} {secs:.3f} s")

    os.sync()
    rec("create", timed(lambda: create(f"{d}/c")))
    rec("stat", timed(lambda: stat_all(f"{d}/c")))
    rec("unlink", timed(lambda: unlink_all(f"{d}/c")))
    os.sync()
    many(f"{d}/many")
    ls_l(f"{d}/many")
    rec("ls", timed(lambda: ls_l(f"{d}/many")))
    os.sync()
    os.makedirs(f"{d}/tar")
    rec("tar", timed(lambda: run("tar", "-xf", TAR, "-C", f"{d}/tar")))
    os.sync()
    rec("clone", timed(lambda: run("git", "clone", "-q", "--no-hardlinks", REPO, f"{d}/clone")))
    run("git", "-C", f"{d}/clone", "status", "--porcelain")
    rec("status", timed(lambda: run("git", "-C", f"{d}/clone", "status", "--porcelain")))
    os.sync()
    rec("write", timed(lambda: seq_write(d)))
    drop_caches()
    rec("read", timed(lambda: seq_read(d)))
    if subprocess.run(["cmp", "-s", RAND, f"{d}/seq.bin"]).returncode != 0:
        log(f"WARNING: the big file read back from {t.name} differs")
    if t.name != "native" and subprocess.run(
        ["diff", "-rq", f"{WORK}/native/r{rep}/tar", f"{d}/tar"], stdout=subprocess.DEVNULL
    ).returncode != 0:
        log(f"WARNING: the tree extracted in {t.name} differs from the native one")


def main():
    targets = [Target("native"), Bindfs("bindfs"), Lattice("lattice")]
    for t in targets:
        t.start()
    out = {}
    try:
        for rep in range(REPS):
            for t in targets:
                one_round(t, rep, out)
            for t in targets:
                shutil.rmtree(f"{t.dir}/r{rep}")
    finally:
        for t in targets:
            t.stop()
    med = {k: statistics.median(v) for k, v in out.items()}
    tar_n = int(os.environ["BENCH_TAR_FILES"])
    mb = SEQ_MIB * 1048576 / 1e6
    rows = [
        ("create %d files of 4 KiB (files/s)" % FILES, "create", lambda s: FILES / s, True),
        ("stat %d files (files/s)" % FILES, "stat", lambda s: FILES / s, True),
        ("unlink %d files (files/s)" % FILES, "unlink", lambda s: FILES / s, True),
        ("ls -l of %d files, warm (s)" % LS_FILES, "ls", lambda s: s, False),
        ("tar -x of %d files (s)" % tar_n, "tar", lambda s: s, False),
        ("git clone, %s (s)" % os.environ["BENCH_REPO_DESC"], "clone", lambda s: s, False),
        ("git status, warm (s)", "status", lambda s: s, False),
        ("sequential write %d MiB, fsync (MB/s)" % SEQ_MIB, "write", lambda s: mb / s, True),
        ("sequential read %d MiB, cold (MB/s)" % SEQ_MIB, "read", lambda s: mb / s, True),
    ]

    def fmt(v, rate):
        return "{:,.0f}".format(v) if rate else "%.2f" % v

    print(f"Median of {REPS}; {os.cpu_count()} cores; ratios are time ratios (lower is better for Lattice).")
    print()
    print("| benchmark | native | bindfs | Lattice | Lattice / native | Lattice / bindfs |")
    print("|---|---|---|---|---|---|")
    for label, key, f, rate in rows:
        n, b, l = med[("native", key)], med[("bindfs", key)], med[("lattice", key)]
        print(f"| {label} | {fmt(f(n), rate)} | {fmt(f(b), rate)} | {fmt(f(l), rate)} | {l / n:.2f}x | {l / b:.2f}x |")


main()

//! The mount against a native directory, driven by a seeded generator.
//!
//! Several threads at full speed (no sleeps), each in its own subtree, run the
//! same random operations on a real mount and on a native ext4 directory side
//! by side: create (and O_EXCL), write, append, truncate, close, fsync, rename
//! (over files, across directories, RENAME_NOREPLACE), unlink (open and closed
//! files), mkdir, rmdir, symlink, chmod, utimens, setxattr. Every call must
//! succeed or fail the same way on both. After each sequence the trees must be
//! equal (names, kinds, modes, sizes, contents, link targets, xattrs); `mountctl
//! check` must find the mount equal to its store; after unmount and mount the
//! tree must still be equal; and a second node that has synced must show it too.
//!
//! `LATTICE_MODEL_SEEDS` and `LATTICE_MODEL_OPS` make it longer (see
//! `bench/soak.sh`).

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const THREADS: usize = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Where a path lives in the tree: small enough that operations collide often.
const DIRS: &[&str] = &["", "d0", "d1", "d0/e0"];
const NAMES: &[&str] = &["f0", "f1", "f2", "f0.lock", "f0.tmp", "d0", "d1", "e0", "l0"];

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

fn rel_path(rng: &mut Rng) -> String {
    let d = pick(rng, DIRS);
    let n = pick(rng, NAMES);
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_err<T>(r: i32, ok: T) -> io::Result<T> {
    if r == 0 {
        Ok(ok)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The outcome of one call, as the caller sees it.
fn outcome<T: std::fmt::Debug>(r: &io::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {}", e.raw_os_error().map_or_else(|| e.to_string(), errno_name)),
    }
}

/// One side of the comparison: a root and the files this thread holds open there.
struct Side {
    root: PathBuf,
    open: Vec<Option<File>>,
}

impl Side {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create { path: String, excl: bool, keep: bool },
    Write { fd: usize, off: u64, len: usize, seed: u64 },
    Append { path: String, len: usize, seed: u64 },
    Truncate { path: String, len: u64 },
    Ftruncate { fd: usize, len: u64 },
    Close { fd: usize },
    Fsync { fd: usize },
    Rename { from: String, to: String, noreplace: bool },
    Unlink { path: String },
    Mkdir { path: String },
    Rmdir { path: String },
    Symlink { target: String, path: String },
    Chmod { path: String, mode: u32 },
    Utimens { path: String, secs: i64 },
    Setxattr { path: String, name: String, value: Vec<u8> },
    ReadFd { fd: usize },
    Read { path: String },
}

/// A path that exists now, most of the time.
fn known_path(rng: &mut Rng, known: &[String]) -> String {
    if known.is_empty() || rng.below(4) == 0 {
        rel_path(rng)
    } else {
        known[rng.below(known.len() as u64) as usize].clone()
    }
}

fn gen_op(rng: &mut Rng, open: &[usize], known: &[String]) -> Op {
    let fd = if open.is_empty() || rng.below(10) == 0 {
        rng.below(open.len() as u64 + 1) as usize
    } else {
        open[rng.below(open.len() as u64) as usize]
    };
    match rng.below(100) {
        0..=14 => Op::Create {
            path: rel_path(rng),
            excl: rng.below(3) == 0,
            keep: rng.below(2) == 0,
        },
        15..=29 => Op::Write {
            fd,
            off: [0, 1, 4095, 4096, 70_000, 300_000][rng.below(6) as usize] + rng.below(100),
            len: [1, 100, 5000, 70_000][rng.below(4) as usize],
            seed: rng.next_u64(),
        },
        30..=34 => Op::Append {
            path: rel_path(rng),
            len: 1 + rng.below(3000) as usize,
            seed: rng.next_u64(),
        },
        35..=37 => Op::Truncate {
            path: rel_path(rng),
            len: [0, 10, 5000, 100_000][rng.below(4) as usize],
        },
        38..=39 => Op::Ftruncate {
            fd,
            len: [0, 7, 65_536][rng.below(3) as usize],
        },
        40..=46 => Op::Close { fd },
        47..=48 => Op::Fsync { fd },
        49..=60 => Op::Rename {
            from: known_path(rng, known),
            to: rel_path(rng),
            noreplace: rng.below(4) == 0,
        },
        61..=67 => Op::Unlink {
            path: known_path(rng, known),
        },
        68..=73 => Op::Mkdir { path: rel_path(rng) },
        74..=76 => Op::Rmdir {
            path: known_path(rng, known),
        },
        77..=79 => Op::Symlink {
            target: pick(rng, NAMES).to_string(),
            path: rel_path(rng),
        },
        80..=83 => Op::Chmod {
            path: rel_path(rng),
            mode: [0o600, 0o644, 0o755, 0o700][rng.below(4) as usize],
        },
        84..=86 => Op::Utimens {
            path: rel_path(rng),
            secs: 1_000_000_000 + rng.below(1_000_000) as i64,
        },
        87..=89 => Op::Setxattr {
            path: rel_path(rng),
            name: format!("user.k{}", rng.below(3)),
            value: {
                let n = 1 + rng.below(40) as usize;
                rng.bytes(n)
            },
        },
        90..=94 => Op::ReadFd { fd },
        _ => Op::Read {
            path: known_path(rng, known),
        },
    }
}

fn fd_of(s: &Side, fd: usize) -> io::Result<&File> {
    s.open
        .get(fd)
        .and_then(|f| f.as_ref())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
}

/// Runs `op` on one side; returns what the caller would see (and bytes read).
fn run_op(s: &mut Side, op: &Op) -> String {
    match op {
        Op::Create { path, excl, keep } => {
            let mut o = OpenOptions::new();
            o.read(true).write(true);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            let r = o.open(s.p(path));
            let out = match &r {
                Ok(_) => "ok ()".to_string(),
                Err(e) => outcome::<()>(&Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)))),
            };
            if let Ok(f) = r {
                if *keep {
                    s.open.push(Some(f));
                }
            }
            out
        }
        Op::Write { fd, off, len, seed } => {
            let data = Rng::new(*seed).bytes(*len);
            outcome(&fd_of(s, *fd).and_then(|f| f.write_all_at(&data, *off)))
        }
        Op::Append { path, len, seed } => {
            let data = Rng::new(*seed).bytes(*len);
            let r = OpenOptions::new()
                .append(true)
                .open(s.p(path))
                .and_then(|mut f| io::Write::write_all(&mut f, &data));
            outcome(&r)
        }
        Op::Truncate { path, len } => {
            let r = OpenOptions::new()
                .write(true)
                .open(s.p(path))
                .and_then(|f| f.set_len(*len));
            outcome(&r)
        }
        Op::Ftruncate { fd, len } => outcome(&fd_of(s, *fd).and_then(|f| f.set_len(*len))),
        Op::Close { fd } => {
            let f = s.open.get_mut(*fd).and_then(|f| f.take());
            outcome(&f.ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF)).map(drop))
        }
        Op::Fsync { fd } => outcome(&fd_of(s, *fd).and_then(|f| f.sync_all())),
        Op::Rename { from, to, noreplace } => {
            let flags = if *noreplace { libc::RENAME_NOREPLACE } else { 0 };
            let (a, b) = (cstr(&s.p(from)), cstr(&s.p(to)));
            let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
            outcome(&last_err(r, ()))
        }
        Op::Unlink { path } => outcome(&fs::remove_file(s.p(path))),
        Op::Mkdir { path } => outcome(&fs::create_dir(s.p(path))),
        Op::Rmdir { path } => outcome(&fs::remove_dir(s.p(path))),
        Op::Symlink { target, path } => outcome(&std::os::unix::fs::symlink(target, s.p(path))),
        Op::Chmod { path, mode } => outcome(&fs::set_permissions(s.p(path), fs::Permissions::from_mode(*mode))),
        Op::Utimens { path, secs } => {
            let ts = [
                libc::timespec {
                    tv_sec: *secs as libc::time_t,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: *secs as libc::time_t,
                    tv_nsec: 0,
                },
            ];
            let c = cstr(&s.p(path));
            let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
            let r = last_err(r, ()).and_then(|()| fs::symlink_metadata(s.p(path)).map(|m| m.mtime()));
            outcome(&r)
        }
        Op::Setxattr { path, name, value } => {
            let (c, n) = (cstr(&s.p(path)), CString::new(name.as_str()).unwrap());
            let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
            outcome(&last_err(r, ()))
        }
        Op::ReadFd { fd } => {
            let r = fd_of(s, *fd).and_then(|f| {
                let mut buf = vec![0u8; f.metadata()?.len() as usize];
                f.read_exact_at(&mut buf, 0)?;
                Ok(blake3::hash(&buf).to_hex().to_string())
            });
            outcome(&r)
        }
        Op::Read { path } => outcome(&fs::read(s.p(path)).map(|d| blake3::hash(&d).to_hex().to_string())),
    }
}

/// One thread's sequence, run on both sides in lockstep.
fn drive(seed: u64, ops: usize, native: PathBuf, mount: PathBuf) -> Vec<String> {
    let every = env_or("LATTICE_MODEL_EVERY", 25) as usize;
    let mut rng = Rng::new(seed);
    let mut n = Side {
        root: native,
        open: Vec::new(),
    };
    let mut m = Side {
        root: mount,
        open: Vec::new(),
    };
    let mut log = Vec::new();
    for i in 0..ops {
        let open: Vec<usize> = (0..n.open.len()).filter(|k| n.open[*k].is_some()).collect();
        let known: Vec<String> = tree(&n.root)
            .into_keys()
            .filter(|p| p.as_os_str() != ".")
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let op = gen_op(&mut rng, &open, &known);
        let a = run_op(&mut n, &op);
        let b = run_op(&mut m, &op);
        log.push(format!("{i}: {op:?} -> {a}"));
        let mut a = a;
        if a == b && (i + 1) % every == 0 {
            // The subtrees must agree too, not only each call's result.
            let (tn, tm) = (tree(&n.root), tree(&m.root));
            if tn != tm {
                a = format!("tree {}", diff_trees(&tn, &tm).join("; "));
            }
        }
        if a != b {
            let full = std::env::temp_dir().join(format!("lattice-model-{seed}.log"));
            let _ = fs::write(&full, log.join("\n"));
            let tail: Vec<_> = log.iter().rev().take(30).rev().cloned().collect();
            panic!(
                "seed {seed}: op {i} {op:?}\n  native: {a}\n  mount:  {b}\nlast ops (all in {}):\n{}",
                full.display(),
                tail.join("\n")
            );
        }
    }
    log
}

/// What the comparison sees of a tree: kind, mode, size, content, link target, xattrs.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for (p, info) in manifest(root, Opts::default()) {
        let mut line = format!(
            "{:?} mode={:?} size={:?} hash={:?} target={:?}",
            info.kind, info.mode, info.size, info.hash, info.target
        );
        if info.kind != Kind::Symlink {
            let c = cstr(&root.join(&p));
            let mut names = vec![0u8; 4096];
            let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
            assert!(n >= 0, "listxattr {}: {}", p.display(), io::Error::last_os_error());
            let mut list: Vec<&[u8]> = names[..n as usize]
                .split(|b| *b == 0)
                .filter(|x| x.starts_with(b"user."))
                .collect();
            list.sort();
            for name in list {
                let cn = CString::new(name).unwrap();
                let mut v = vec![0u8; 4096];
                let k = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
                assert!(k >= 0);
                line.push_str(&format!(" {}={}", String::from_utf8_lossy(name), hex(&v[..k as usize])));
            }
        }
        out.insert(p, line);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn assert_trees(what: &str, native: &Path, mount: &Path) {
    let (a, b) = (tree(native), tree(mount));
    if a == b {
        return;
    }
    let lines = diff_trees(&a, &b);
    panic!("{what}: {} paths differ:\n{}", lines.len(), lines.join("\n"));
}

fn diff_trees(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => lines.push(format!("  missing: {} {v}", k.display())),
            Some(w) if w != v => lines.push(format!("  differs: {}\n    native {v}\n    mount  {w}", k.display())),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            lines.push(format!("  extra:   {} {v}", k.display()));
        }
    }
    lines
}

/// The warnings and errors in a mount's daemon log.
fn daemon_log(m: &Mount) -> String {
    let log = fs::read_to_string(m.home.join("shares/default/daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn random_operations_match_a_native_directory_live_after_remount_and_on_a_peer() {
    let seeds = env_or("LATTICE_MODEL_SEEDS", 3);
    let ops = env_or("LATTICE_MODEL_OPS", 400) as usize;
    let mut a = Mount::new();
    let b = join(&a);
    let (_native_tmp, native) = empty_dir("lattice-native-");
    let base = env_or("LATTICE_MODEL_SEED", 0x1a77);
    let (mut total, mut succeeded) = (0, 0);
    for round in 0..seeds {
        let name = format!("r{round}");
        fs::create_dir(native.join(&name)).unwrap();
        fs::create_dir(a.p(&name)).unwrap();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let sub = format!("{name}/t{t}");
                fs::create_dir(native.join(&sub)).unwrap();
                fs::create_dir(a.p(&sub)).unwrap();
                let (n, m) = (native.join(&sub), a.p(&sub));
                let seed = base ^ (round << 8) ^ t as u64;
                std::thread::spawn(move || {
                    let log = drive(seed, ops, n, m);
                    (log.len(), log.iter().filter(|l| l.contains("-> ok")).count())
                })
            })
            .collect();
        for t in threads {
            let Ok((n, ok)) = t.join() else {
                panic!(
                    "a thread's operations diverged (see its panic above); the daemon said:\n{}",
                    daemon_log(&a)
                );
            };
            total += n;
            succeeded += ok;
        }
        assert_trees(&format!("round {round}, live"), &native, &a.dir);
        check(&a);
    }
    a.remount();
    assert_trees("after unmount and mount", &native, &a.dir);
    check(&a);
    same_entries(&[&a, &b]);
    assert_trees("on the peer", &native, &b.dir);
    check(&b);
    eprintln!("model: {total} operations ({succeeded} succeeded), {THREADS} threads, {seeds} rounds");
    assert!(
        succeeded * 4 > total,
        "most operations failed: the generator tests little"
    );
}

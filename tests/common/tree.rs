//! Deterministic test data, and comparing trees.

use super::{bash, q};
use std::collections::BTreeMap;
use std::fs;
use std::hash::Hasher;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------

/// splitmix64: a small seeded PRNG, the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Text-ish content (so diffs are readable) of exactly `n` bytes.
pub fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lattice", "mount", "entry", "chunk", "peer", "dag", "head", "fuse", "tree", "node",
    ];
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        v.extend_from_slice(w.as_bytes());
        v.push(if rng.below(8) == 0 { b'\n' } else { b' ' });
    }
    v.truncate(n);
    v
}

pub fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Sets atime and mtime of `p` (not following symlinks) to `secs.nanos`.
pub fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as _,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as _,
        },
    ];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", p.display(), io::Error::last_os_error());
}

/// Writes a varied source tree under `root` (created if needed): nested
/// dirs, empty files, sizes around page and chunk boundaries, a 0755 script,
/// a 0600 file, a name with spaces, symlinks (to a file, to a dir, dangling),
/// an empty dir. About 2 MB. Deterministic for a seed, except times.
pub fn make_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).unwrap();
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    };
    w("empty.txt", b"");
    w("one.txt", b"x");
    w("small.txt", &text(&mut rng, 100));
    w("page.bin", &rng.bytes(4096));
    w("page_plus.bin", &rng.bytes(4097));
    w("chunky.bin", &rng.bytes(70_001));
    w("big.bin", &rng.bytes(600_000));
    w("name with spaces.txt", b"spaces are fine\n");
    w("run.sh", b"#!/bin/sh\necho tree-script-ran\n");
    set_mode(&root.join("run.sh"), 0o755);
    w("secret.txt", b"only me\n");
    set_mode(&root.join("secret.txt"), 0o600);
    w("a/b/c/d/e/f/deep.txt", &text(&mut rng, 3000));
    w("a/b/sibling.txt", &text(&mut rng, 10));
    w("a/b/c/empty_in_deep", b"");
    fs::create_dir_all(root.join("a/empty_dir")).unwrap();
    for i in 0..25 {
        let n = [0usize, 1, 17, 512, 4095, 8192, 20_000][i % 7] + i;
        w(&format!("docs/part{:02}/doc{i:02}.md", i % 4), &text(&mut rng, n));
    }
    fs::create_dir_all(root.join("private")).unwrap();
    w("private/key", b"k");
    set_mode(&root.join("private"), 0o700);
    std::os::unix::fs::symlink("small.txt", root.join("link_to_small")).unwrap();
    std::os::unix::fs::symlink("a/b", root.join("link_to_dir")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../../small.txt", root.join("a/b/up_link")).unwrap();
}

// ---------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    /// A device node and its device number.
    CharDevice(u64),
    BlockDevice(u64),
    Socket,
}

/// One path's recorded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub kind: Kind,
    /// Permission bits (mode & 0o7777); None for symlinks.
    pub mode: Option<u32>,
    /// File size; None for dirs and symlinks.
    pub size: Option<u64>,
    /// Content hash of regular files.
    pub hash: Option<u64>,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// (seconds, nanoseconds) if recorded.
    pub mtime: Option<(i64, i64)>,
    /// Inode number if recorded.
    pub ino: Option<u64>,
}

/// What `manifest` records besides kind, mode, size, content and link target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    pub file_mtime: bool,
    pub dir_mtime: bool,
    pub ino: bool,
}

pub fn hash_file(p: &Path) -> u64 {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
        total += n as u64;
    }
    h.write_u64(total);
    h.finish()
}

/// Every path under `root` (relative, root itself as "."), with its state.
pub fn manifest(root: &Path, opts: Opts) -> BTreeMap<PathBuf, Info> {
    let mut out = BTreeMap::new();
    walk(root, Path::new("."), opts, &mut out);
    out
}

fn walk(root: &Path, rel: &Path, opts: Opts, out: &mut BTreeMap<PathBuf, Info>) {
    let p = if rel == Path::new(".") {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDevice(md.rdev())
    } else if ft.is_block_device() {
        Kind::BlockDevice(md.rdev())
    } else {
        Kind::Socket
    };
    let mtime = Some((md.mtime(), md.mtime_nsec()));
    let info = Info {
        kind,
        mode: if kind == Kind::Symlink {
            None
        } else {
            Some(md.mode() & 0o7777)
        },
        size: if kind == Kind::File { Some(md.len()) } else { None },
        hash: if kind == Kind::File { Some(hash_file(&p)) } else { None },
        target: if kind == Kind::Symlink {
            Some(fs::read_link(&p).unwrap_or_else(|e| panic!("readlink {}: {e}", p.display())))
        } else {
            None
        },
        mtime: match kind {
            Kind::File if opts.file_mtime => mtime,
            Kind::Dir if opts.dir_mtime => mtime,
            _ => None,
        },
        ino: if opts.ino { Some(md.ino()) } else { None },
    };
    out.insert(rel.to_path_buf(), info);
    if kind == Kind::Dir {
        let mut names: Vec<_> = fs::read_dir(&p)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
            .map(|e| e.unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())).file_name())
            .collect();
        names.sort();
        for n in names {
            let child = if rel == Path::new(".") {
                PathBuf::from(&n)
            } else {
                rel.join(&n)
            };
            walk(root, &child, opts, out);
        }
    }
}

/// "mtime 1.000000001 != 1.000000002, mode 644 != 600" for two records.
fn field_diff(e: &Info, a: &Info) -> String {
    let mut d = Vec::new();
    let t = |m: Option<(i64, i64)>| m.map(|(s, n)| format!("{s}.{n:09}")).unwrap_or("-".into());
    if e.kind != a.kind {
        d.push(format!("kind {:?} != {:?}", e.kind, a.kind));
    }
    if e.mode != a.mode {
        d.push(format!("mode {:o} != {:o}", e.mode.unwrap_or(0), a.mode.unwrap_or(0)));
    }
    if e.size != a.size {
        d.push(format!("size {:?} != {:?}", e.size, a.size));
    }
    if e.hash != a.hash {
        d.push("content differs".to_string());
    }
    if e.target != a.target {
        d.push(format!("link target {:?} != {:?}", e.target, a.target));
    }
    if e.mtime != a.mtime {
        d.push(format!("mtime expected {} got {}", t(e.mtime), t(a.mtime)));
    }
    if e.ino != a.ino {
        d.push(format!("ino {:?} != {:?}", e.ino, a.ino));
    }
    d.join(", ")
}

/// Asserts two manifests are equal, listing the differing paths.
pub fn assert_same(what: &str, expected: &BTreeMap<PathBuf, Info>, actual: &BTreeMap<PathBuf, Info>) {
    if expected == actual {
        return;
    }
    let mut lines = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => lines.push(format!("  missing: {} ({:?})", k.display(), v)),
            Some(a) if a != v => lines.push(format!("  differs: {}: {}", k.display(), field_diff(v, a))),
            _ => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            lines.push(format!("  extra:   {} ({:?})", k.display(), v));
        }
    }
    let n = lines.len();
    lines.truncate(25);
    panic!("{what}: {n} paths differ:\n{}", lines.join("\n"));
}

/// `diff -r --no-dereference A B` must report no difference.
pub fn diff_r(a: &Path, b: &Path, extra: &str) {
    let out = bash(
        Path::new("/"),
        &format!("diff -r --no-dereference {extra} {} {}", q(a), q(b)),
        &[],
    );
    if !out.ok() {
        panic!("trees differ: {}", out.describe());
    }
}

/// The raw errno of an io::Error (panics if it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {e:?}"))
}

pub fn errno_name(n: i32) -> String {
    format!("{} ({})", io::Error::from_raw_os_error(n), n)
}

/// Drops the page cache (so reads go to the file system, not the kernel's
/// copy). Best effort: warns if the machine does not allow it.
pub fn drop_caches() {
    unsafe {
        libc::sync();
    }
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", b"3") {
        eprintln!("harness: cannot drop caches: {e}");
    }
}

/// Reads a whole file, panicking with the path on error.
pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Writes a whole file, panicking with the path on error.
pub fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
}

/// Asserts two byte strings are equal, naming the first differing offset
/// instead of dumping megabytes.
pub fn assert_bytes_eq(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    panic!(
        "{what}: contents differ: expected {} bytes, got {} bytes, first difference at offset {first}",
        expected.len(),
        actual.len()
    );
}

/// Names in a directory (sorted).
pub fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

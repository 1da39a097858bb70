//! POSIX semantics on a real Lattice mount, as programs rely on them: O_EXCL,
//! symlinks, modes, truncate, times, xattrs, big and random writes, shared
//! mmap, unlink while open (names and directories: names.rs). Every test
//! mounts a fresh node; a test that cannot mount fails.

mod common;

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use common::*;

// ---------------------------------------------------------------------------
// O_EXCL
// ---------------------------------------------------------------------------

#[test]
fn o_excl_lock_files() {
    let m = Mount::new();
    let lock = m.p("index.lock");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .expect("first create_new");
    f.write_all(b"pid 1\n").unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .expect_err("second create_new must fail");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(errno(&e), libc::EEXIST);
    drop(f);
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .expect_err("create_new after close");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(read(&lock), b"pid 1\n", "the failed create_new must not touch the file");
    // Also over a symlink (O_EXCL does not follow it).
    std::os::unix::fs::symlink("nowhere", m.p("link.lock")).unwrap();
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("link.lock"))
        .expect_err("create_new on symlink");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(!m.p("nowhere").exists(), "O_EXCL followed a dangling symlink");
    fs::remove_file(&lock).unwrap();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .expect("create_new after unlink");

    // Two threads race for the same lock, 50 rounds: exactly one wins each.
    let barrier = Arc::new(Barrier::new(2));
    let dir = m.dir.clone();
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let b = barrier.clone();
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..50 {
                    b.wait();
                    let r = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(dir.join(format!("race{round}.lock")));
                    match r {
                        Ok(mut f) => {
                            f.write_all(format!("{t}").as_bytes()).unwrap();
                            wins.push(round);
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "round {round}: {e}"),
                    }
                }
                wins
            })
        })
        .collect();
    let wins: Vec<Vec<i32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..50 {
        let n = wins.iter().filter(|w| w.contains(&round)).count();
        assert_eq!(n, 1, "round {round}: {n} threads created the same O_EXCL file");
        let winner = wins.iter().position(|w| w.contains(&round)).unwrap();
        assert_eq!(read(&m.p(format!("race{round}.lock"))), format!("{winner}").as_bytes());
    }
}

// ---------------------------------------------------------------------------
// symlinks
// ---------------------------------------------------------------------------

#[test]
fn symlinks() {
    let m = Mount::new();
    write(&m.p("target.txt"), b"through the link\n");
    fs::create_dir(m.p("d")).unwrap();
    write(&m.p("d/inner.txt"), b"inner\n");
    sh(
        &m.dir,
        "ln -s target.txt link && ln -s d dlink && ln -s nowhere/at/all dangling && ln -s \"$PWD/target.txt\" abs",
    );
    assert_eq!(sh(&m.dir, "readlink link"), "target.txt\n");
    assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("target.txt"));
    assert_eq!(fs::read_link(m.p("abs")).unwrap(), m.p("target.txt"));
    assert_eq!(sh(&m.dir, "cat link"), "through the link\n");
    assert_eq!(read(&m.p("abs")), b"through the link\n");
    assert_eq!(read(&m.p("dlink/inner.txt")), b"inner\n");
    assert!(fs::symlink_metadata(m.p("link")).unwrap().file_type().is_symlink());
    assert_eq!(
        fs::symlink_metadata(m.p("link")).unwrap().len(),
        "target.txt".len() as u64,
        "lstat size of a symlink is its target's length"
    );
    assert!(fs::metadata(m.p("dlink")).unwrap().is_dir());

    // The dangling one is listed, lstat works, stat fails with ENOENT.
    let listing = sh(&m.dir, "ls -1");
    assert!(
        listing.lines().any(|l| l == "dangling"),
        "ls does not list the dangling link:\n{listing}"
    );
    assert!(names(&m.dir).contains(&OsString::from("dangling")));
    assert!(fs::symlink_metadata(m.p("dangling")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(m.p("dangling")).unwrap(), Path::new("nowhere/at/all"));
    let e = fs::metadata(m.p("dangling")).expect_err("stat through a dangling link");
    assert_eq!(errno(&e), libc::ENOENT);
    let ls_l = sh(&m.dir, "ls -l dangling");
    assert!(ls_l.contains("dangling -> nowhere/at/all"), "{ls_l}");

    // Writing through a link writes the target; removing the link keeps it.
    sh(&m.dir, "echo appended >> link");
    assert_eq!(read(&m.p("target.txt")), b"through the link\nappended\n");
    fs::remove_file(m.p("link")).unwrap();
    assert_eq!(read(&m.p("target.txt")), b"through the link\nappended\n");
    // A long target (near PATH_MAX pieces).
    let long: String = (0..40).map(|i| format!("segment{i:03}/")).collect::<String>() + "end";
    std::os::unix::fs::symlink(&long, m.p("longlink")).unwrap();
    assert_eq!(fs::read_link(m.p("longlink")).unwrap(), Path::new(&long));
}

// ---------------------------------------------------------------------------
// chmod +x and run
// ---------------------------------------------------------------------------

#[test]
fn chmod_x_script_runs() {
    let m = Mount::new();
    write(
        &m.p("hello.sh"),
        b"#!/bin/sh\necho \"hello $1 from $(basename \"$0\")\"\n",
    );
    let mode = fs::metadata(m.p("hello.sh")).unwrap().mode();
    assert_eq!(mode & 0o111, 0, "a new file is not executable: {mode:o}");
    let denied = bash(&m.dir, "./hello.sh world", &[]);
    assert!(!denied.ok(), "ran a script without the x bit: {}", denied.describe());
    sh(&m.dir, "chmod +x hello.sh");
    let mode = fs::metadata(m.p("hello.sh")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o755, "chmod +x gave {mode:o}");
    assert_eq!(sh(&m.dir, "./hello.sh world"), "hello world from hello.sh\n");
    // Written by the shell and run at once.
    assert_eq!(
        sh(
            &m.dir,
            "printf '#!/bin/bash\\necho $((6*7))\\n' > calc && chmod 700 calc && ./calc"
        ),
        "42\n"
    );
    sh(&m.dir, "chmod -x hello.sh");
    assert_eq!(fs::metadata(m.p("hello.sh")).unwrap().mode() & 0o777, 0o644);
}

// ---------------------------------------------------------------------------
// truncate
// ---------------------------------------------------------------------------

#[test]
fn truncate_up_and_down() {
    let m = Mount::new();
    let f = m.p("t.txt");
    write(&f, b"hello world");
    sh(&m.dir, "truncate -s 5 t.txt");
    assert_eq!(fs::metadata(&f).unwrap().len(), 5);
    assert_eq!(read(&f), b"hello");
    sh(&m.dir, "truncate -s 100 t.txt");
    let mut expect = b"hello".to_vec();
    expect.resize(100, 0);
    assert_eq!(fs::metadata(&f).unwrap().len(), 100);
    assert_eq!(read(&f), expect);
    sh(&m.dir, "truncate -s 0 t.txt");
    assert_eq!(read(&f), b"");

    // Across chunk boundaries: shrink, then grow: the old bytes must not come back.
    let data = Rng::new(5).bytes(700_000);
    let g = m.p("big.bin");
    write(&g, &data);
    sh(&m.dir, "truncate -s 100000 big.bin");
    assert_bytes_eq("shrunk to 100000", &data[..100_000], &read(&g));
    sh(&m.dir, "truncate -s 1000003 big.bin");
    let mut expect = data[..100_000].to_vec();
    expect.resize(1_000_003, 0);
    assert_eq!(fs::metadata(&g).unwrap().len(), 1_000_003);
    assert_bytes_eq("grown to 1000003", &expect, &read(&g));
    drop_caches();
    assert_bytes_eq("grown to 1000003, after dropping caches", &expect, &read(&g));

    // ftruncate on an open file, then writing past the end.
    let mut h = OpenOptions::new().read(true).write(true).open(&g).unwrap();
    h.set_len(10).unwrap();
    h.seek(SeekFrom::Start(20)).unwrap();
    h.write_all(b"tail").unwrap();
    drop(h);
    let mut expect = data[..10].to_vec();
    expect.resize(20, 0);
    expect.extend_from_slice(b"tail");
    assert_bytes_eq("ftruncate then write past the end", &expect, &read(&g));
}

// ---------------------------------------------------------------------------
// touch -d
// ---------------------------------------------------------------------------

#[test]
fn touch_sets_mtime() {
    let m = Mount::new();
    // bash() runs with TZ=UTC, so the date is UTC.
    sh(
        &m.dir,
        "touch -d '2001-02-03 04:05:06' new.txt && echo data > old.txt && touch -d '2001-02-03 04:05:06' old.txt",
    );
    for n in ["new.txt", "old.txt"] {
        let md = fs::metadata(m.p(n)).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (981_173_106, 0), "{n}");
    }
    assert_eq!(sh(&m.dir, "stat -c %Y old.txt"), "981173106\n");
    assert_eq!(sh(&m.dir, "date -r old.txt '+%F %T'"), "2001-02-03 04:05:06\n");
    assert_eq!(read(&m.p("old.txt")), b"data\n", "touch must not change content");

    sh(&m.dir, "touch -d '2001-02-03 04:05:06.123456789' ns.txt");
    let md = fs::metadata(m.p("ns.txt")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (981_173_106, 123_456_789), "nanoseconds");

    sh(&m.dir, "mkdir d && touch -d '1999-12-31 23:59:59' d");
    assert_eq!(fs::metadata(m.p("d")).unwrap().mtime(), 946_684_799, "directory mtime");

    // A plain touch brings it to now.
    sh(&m.dir, "touch old.txt");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = fs::metadata(m.p("old.txt")).unwrap().mtime();
    assert!((t - now).abs() <= 5, "touch: mtime {t}, now {now}");
    // Writing updates mtime too.
    sh(&m.dir, "touch -d '2001-02-03 04:05:06' w.txt && echo x >> w.txt");
    let t = fs::metadata(m.p("w.txt")).unwrap().mtime();
    assert!((t - now).abs() <= 5, "a write must update mtime: {t}, now {now}");
}

// ---------------------------------------------------------------------------
// xattrs
// ---------------------------------------------------------------------------

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "listxattr {}: {}", p.display(), std::io::Error::last_os_error());
    buf.truncate(r as usize);
    let mut v: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| s.starts_with("user."))
        .collect();
    v.sort();
    v
}

#[test]
fn xattrs() {
    let m = Mount::new();
    let f = m.p("f.txt");
    write(&f, b"content");
    sh(&m.dir, "setfattr -n user.foo -v bar f.txt");
    assert_eq!(sh(&m.dir, "getfattr --only-values -n user.foo f.txt"), "bar");
    assert_eq!(getxattr(&f, "user.foo"), Ok(b"bar".to_vec()));
    sh(
        &m.dir,
        "setfattr -n user.bin -v 0x00ff10 f.txt && setfattr -n user.empty f.txt",
    );
    assert_eq!(getxattr(&f, "user.bin"), Ok(vec![0x00, 0xff, 0x10]));
    assert_eq!(getxattr(&f, "user.empty"), Ok(vec![]));
    assert_eq!(listxattr(&f), vec!["user.bin", "user.empty", "user.foo"]);
    let dump = sh(&m.dir, "getfattr -d f.txt");
    assert!(dump.contains("user.foo=\"bar\""), "getfattr -d:\n{dump}");

    // Replace, remove.
    sh(&m.dir, "setfattr -n user.foo -v baz f.txt");
    assert_eq!(getxattr(&f, "user.foo"), Ok(b"baz".to_vec()));
    sh(&m.dir, "setfattr -x user.foo f.txt");
    assert_eq!(getxattr(&f, "user.foo"), Err(libc::ENODATA));
    let gone = bash(&m.dir, "getfattr -n user.foo f.txt", &[]);
    assert!(!gone.ok(), "getfattr of a removed xattr succeeded: {}", gone.describe());
    assert_eq!(listxattr(&f), vec!["user.bin", "user.empty"]);
    assert_eq!(getxattr(&f, "user.never"), Err(libc::ENODATA));
    // Removing one that is not there.
    let c = cpath(&f);
    let n = CString::new("user.never").unwrap();
    let r = unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENODATA));

    // A larger value, and an xattr on a directory.
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let v = CString::new("user.big").unwrap();
    let r = unsafe { libc::setxattr(c.as_ptr(), v.as_ptr(), big.as_ptr().cast(), big.len(), 0) };
    assert_eq!(r, 0, "setxattr 4000 bytes: {}", std::io::Error::last_os_error());
    assert_eq!(getxattr(&f, "user.big"), Ok(big));
    fs::create_dir(m.p("dir")).unwrap();
    sh(&m.dir, "setfattr -n user.d -v dirval dir");
    assert_eq!(getxattr(&m.p("dir"), "user.d"), Ok(b"dirval".to_vec()));
    // XATTR_CREATE on an existing name fails with EEXIST.
    let d = cpath(&m.p("dir"));
    let dn = CString::new("user.d").unwrap();
    let r = unsafe { libc::setxattr(d.as_ptr(), dn.as_ptr(), b"x".as_ptr().cast(), 1, libc::XATTR_CREATE) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EEXIST));
    assert_eq!(read(&f), b"content", "xattrs must not touch the content");
}

// ---------------------------------------------------------------------------
// big and random writes
// ---------------------------------------------------------------------------

#[test]
fn big_file_64mib() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-big-");
    let src = out.join("big.bin");
    {
        let mut f = File::create(&src).unwrap();
        let mut rng = Rng::new(64);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..64 {
            rng.fill(&mut buf);
            f.write_all(&buf).unwrap();
        }
    }
    sh(&out, &format!("cp big.bin {}", q(&m.p("big.bin"))));
    assert_eq!(fs::metadata(m.p("big.bin")).unwrap().len(), 64 << 20);
    sh(&out, &format!("cmp big.bin {}", q(&m.p("big.bin"))));
    drop_caches();
    sh(&out, &format!("cmp big.bin {}", q(&m.p("big.bin"))));
    assert_eq!(hash_file(&src), hash_file(&m.p("big.bin")));
}

#[test]
fn random_writes_into_3mb_file() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-rw-");
    let n = 3_000_000u64;
    let mut rng = Rng::new(3);
    let init = rng.bytes(n as usize);
    let local = out.join("model.bin");
    let inmount = m.p("file.bin");
    write(&local, &init);
    write(&inmount, &init);

    let a = OpenOptions::new().read(true).write(true).open(&local).unwrap();
    let b = OpenOptions::new().read(true).write(true).open(&inmount).unwrap();
    for i in 0..400 {
        // Mostly inside the file, some straddling or past the end.
        let off = rng.below(n + 200_000);
        let len = if i % 5 == 0 {
            1 + rng.below(8)
        } else {
            1 + rng.below(65_536)
        } as usize;
        let data = rng.bytes(len);
        a.write_all_at(&data, off).unwrap();
        b.write_all_at(&data, off).unwrap();
        if i % 50 == 49 {
            // Read-your-writes while the file is open.
            let ro = rng.below(n);
            let mut x = vec![0u8; 100_000];
            let mut y = vec![0u8; 100_000];
            let nx = a.read_at(&mut x, ro).unwrap();
            let ny = b.read_at(&mut y, ro).unwrap();
            assert_bytes_eq(
                &format!("read at {ro} while open, after {} writes", i + 1),
                &x[..nx],
                &y[..ny],
            );
        }
    }
    let la = a.metadata().unwrap().len();
    assert_eq!(b.metadata().unwrap().len(), la, "fstat size while open");
    drop(a);
    drop(b);
    assert_bytes_eq("after 400 random pwrites", &read(&local), &read(&inmount));
    drop_caches();
    assert_bytes_eq(
        "after 400 random pwrites, caches dropped",
        &read(&local),
        &read(&inmount),
    );
}

// ---------------------------------------------------------------------------
// shared mmap
// ---------------------------------------------------------------------------

const MMAP_PY: &str = r#"
import mmap, os, sys
path, mode = sys.argv[1], sys.argv[2]
N = 1 << 20
if mode == "write":
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, N)
    m = mmap.mmap(fd, N, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[:] = bytes((i * 7 + 3) % 251 for i in range(N))
    m[100:105] = b"hello"
    m.flush()
    m.close()
    os.close(fd)
elif mode == "write-noflush":
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[8192:8197] = b"world"
    m.close()
    os.close(fd)
elif mode == "read":
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
    expect = bytes((i * 13) % 256 for i in range(len(m)))
    data = m[:]
    m.close()
    os.close(fd)
    if data != expect:
        bad = next(i for i in range(len(data)) if data[i] != expect[i])
        sys.exit("mmap read differs at %d" % bad)
    print("same", len(data))
"#;

#[test]
fn mmap_shared_write_then_read() {
    let mut m = Mount::new();
    let py = |path: &Path, mode: &str| {
        sh_env(
            &m.dir,
            &format!("python3 -c \"$MMAP_PY\" {} {mode}", q(path)),
            &[("MMAP_PY", MMAP_PY)],
        )
    };
    let f = m.p("mapped.bin");
    py(&f, "write");
    let mut expect: Vec<u8> = (0..1usize << 20).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    expect[100..105].copy_from_slice(b"hello");
    assert_bytes_eq("read after mmap write + flush", &expect, &read(&f));
    // Without msync: munmap + close, then a clean unmount must keep it.
    py(&f, "write-noflush");
    expect[8192..8197].copy_from_slice(b"world");
    assert_bytes_eq("read after mmap write without flush", &expect, &read(&f));

    // The other way: written with write(2), read through a shared mapping.
    let g = m.p("written.bin");
    let data: Vec<u8> = (0..300_000usize).map(|i| ((i * 13) % 256) as u8).collect();
    write(&g, &data);
    assert_eq!(py(&g, "read"), "same 300000\n");

    // The daemon really has the mmap'd bytes: unmount, mount, read.
    m.remount();
    assert_bytes_eq("mmap-written file after remount", &expect, &read(&m.p("mapped.bin")));
    assert_bytes_eq("written file after remount", &data, &read(&m.p("written.bin")));
}

// ---------------------------------------------------------------------------
// unlinked while open
// ---------------------------------------------------------------------------

#[test]
fn unlinked_file_stays_readable_while_open() {
    let m = Mount::new();
    let data = Rng::new(11).bytes(300_000);
    let f = m.p("doomed.bin");
    write(&f, &data);
    write(&m.p("other.txt"), b"other");
    let mut h = File::open(&f).unwrap();
    let mut rw = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    fs::remove_file(&f).unwrap();

    assert!(!f.exists(), "unlinked name still resolves");
    assert_eq!(
        names(&m.dir),
        vec![OsString::from("other.txt")],
        "unlinked name still listed"
    );
    let listing = sh(&m.dir, "ls -A");
    assert_eq!(
        listing, "other.txt\n",
        "ls shows more than other.txt (a hidden .fuse_hidden file?)"
    );

    let mut got = Vec::new();
    h.read_to_end(&mut got).unwrap();
    assert_bytes_eq("reading an unlinked open file", &data, &got);
    assert_eq!(h.metadata().unwrap().len(), 300_000, "fstat of an unlinked open file");

    // Writes through a second handle are seen through the first.
    rw.write_all_at(b"REWRITTEN", 1000).unwrap();
    rw.flush().unwrap();
    let mut buf = [0u8; 9];
    h.read_exact_at(&mut buf, 1000).unwrap();
    assert_eq!(&buf, b"REWRITTEN");

    // A new file under the same name is a different file.
    write(&f, b"new file");
    let mut got = vec![0u8; 20];
    h.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got[..], &data[..20], "the old handle must keep reading the old file");
    assert_eq!(read(&f), b"new file");
    drop(h);
    drop(rw);
    assert_eq!(
        names(&m.dir),
        vec![OsString::from("doomed.bin"), OsString::from("other.txt")]
    );
    assert_eq!(read(&f), b"new file");
}

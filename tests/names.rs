//! Directories and names on a real Lattice mount: 5,000 files in one
//! directory, unicode and over-long names, atomic rename over a file, rmdir of
//! a non-empty directory. Every test mounts a fresh node; a test that cannot
//! mount fails.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use common::*;

// ---------------------------------------------------------------------------
// a big directory
// ---------------------------------------------------------------------------

#[test]
fn five_thousand_files_in_one_dir() {
    let m = Mount::new();
    let d = m.p("many");
    fs::create_dir(&d).unwrap();
    let expected: Vec<String> = (0..5000).map(|i| format!("file-{i:05}.txt")).collect();
    for (i, n) in expected.iter().enumerate() {
        write(&d.join(n), format!("{i}\n").as_bytes());
    }
    let ls = sh(&d, "ls -1");
    let listed: Vec<&str> = ls.lines().collect();
    assert_eq!(listed.len(), 5000, "ls lists {} names", listed.len());
    assert_eq!(
        listed,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "ls names"
    );
    assert_eq!(sh(&d, "ls -U | wc -l").trim(), "5000", "ls -U (unsorted)");
    let got = names(&d);
    assert_eq!(got.len(), 5000);
    for i in (0..5000).step_by(97) {
        assert_eq!(
            read(&d.join(&expected[i])),
            format!("{i}\n").as_bytes(),
            "{}",
            expected[i]
        );
    }
    for n in &expected {
        fs::remove_file(d.join(n)).unwrap_or_else(|e| panic!("rm {n}: {e}"));
    }
    assert!(
        names(&d).is_empty(),
        "names left after removing all: {:?}",
        &names(&d)[..names(&d).len().min(10)]
    );
    assert_eq!(sh(&d, "ls -A | wc -l").trim(), "0");
    fs::remove_dir(&d).unwrap();
    assert!(names(&m.dir).is_empty());
}

// ---------------------------------------------------------------------------
// names
// ---------------------------------------------------------------------------

#[test]
fn unicode_names() {
    let m = Mount::new();
    let list = [
        "ünïcødé ✓ 日本.txt",
        "emoji 😀🎉🦀.md",
        "Ωmega",
        "caf\u{e9}",   // NFC é
        "cafe\u{301}", // NFD e + combining acute: a different name
        "tab\there",
        "new\nline",
        "-dash-first",
        " leading space",
    ];
    for (i, n) in list.iter().enumerate() {
        write(&m.p(n), format!("content {i} {n}").as_bytes());
    }
    fs::create_dir(m.p("dir ✓ 日本")).unwrap();
    write(&m.p("dir ✓ 日本/ファイル.txt"), "中身".as_bytes());

    let mut expected: Vec<OsString> = list.iter().map(OsString::from).collect();
    expected.push(OsString::from("dir ✓ 日本"));
    expected.sort();
    assert_eq!(names(&m.dir), expected, "listing of unicode names");
    for (i, n) in list.iter().enumerate() {
        assert_eq!(read(&m.p(n)), format!("content {i} {n}").as_bytes(), "{n:?}");
    }
    assert_eq!(read(&m.p("dir ✓ 日本/ファイル.txt")), "中身".as_bytes());
    let ls = sh(&m.dir, "ls -1 'dir ✓ 日本'");
    assert_eq!(ls, "ファイル.txt\n");
    let found = sh(&m.dir, "find . -name '*日本*' | sort");
    assert_eq!(found, "./dir ✓ 日本\n./ünïcødé ✓ 日本.txt\n");

    // Rename between unicode names.
    fs::rename(m.p("emoji 😀🎉🦀.md"), m.p("renamed ✨.md")).unwrap();
    assert!(!m.p("emoji 😀🎉🦀.md").exists());
    assert_eq!(read(&m.p("renamed ✨.md")), "content 1 emoji 😀🎉🦀.md".as_bytes());

    // Names that are not UTF-8 are bytes to Linux; they must round-trip or be
    // refused cleanly (EILSEQ/EINVAL), never be mangled.
    let raw = OsStr::from_bytes(b"latin1-\xe9t\xe9");
    match fs::write(m.p(raw), b"raw") {
        Ok(()) => {
            assert!(
                names(&m.dir).iter().any(|n| n.as_bytes() == raw.as_bytes()),
                "non-UTF-8 name not listed as written"
            );
            assert_eq!(read(&m.p(raw)), b"raw");
        }
        Err(e) => assert!(
            [libc::EILSEQ, libc::EINVAL].contains(&errno(&e)),
            "non-UTF-8 name refused with {}",
            errno_name(errno(&e))
        ),
    }
}

#[test]
fn long_names() {
    let m = Mount::new();
    let n255 = "a".repeat(255);
    write(&m.p(&n255), b"255");
    assert_eq!(read(&m.p(&n255)), b"255");
    assert!(names(&m.dir).contains(&OsString::from(&n255)));
    // 255 bytes of 3-byte characters.
    let n255u = "日".repeat(85);
    assert_eq!(n255u.len(), 255);
    fs::create_dir(m.p(&n255u)).unwrap();
    write(&m.p(&n255u).join(&n255), b"nested");
    assert_eq!(read(&m.p(&n255u).join(&n255)), b"nested");

    let n256 = "b".repeat(256);
    let e = fs::write(m.p(&n256), b"x").expect_err("creating a 256-byte name");
    assert_eq!(errno(&e), libc::ENAMETOOLONG, "create: {}", errno_name(errno(&e)));
    let e = fs::create_dir(m.p(&n256)).expect_err("mkdir of a 256-byte name");
    assert_eq!(errno(&e), libc::ENAMETOOLONG, "mkdir: {}", errno_name(errno(&e)));
    let e = std::os::unix::fs::symlink("t", m.p(&n256)).expect_err("symlink with a 256-byte name");
    assert_eq!(errno(&e), libc::ENAMETOOLONG, "symlink: {}", errno_name(errno(&e)));
    let e = fs::rename(m.p(&n255), m.p(&n256)).expect_err("rename to a 256-byte name");
    assert_eq!(errno(&e), libc::ENAMETOOLONG, "rename: {}", errno_name(errno(&e)));
    let n256u = format!("{}x", "日".repeat(85));
    let e = fs::write(m.p(&n256u), b"x").expect_err("creating a 256-byte UTF-8 name");
    assert_eq!(
        errno(&e),
        libc::ENAMETOOLONG,
        "create (UTF-8): {}",
        errno_name(errno(&e))
    );
    // Nothing was created by the refused calls.
    let mut expected = vec![OsString::from(&n255), OsString::from(&n255u)];
    expected.sort();
    assert_eq!(names(&m.dir), expected);
    assert_eq!(read(&m.p(&n255)), b"255");
}

// ---------------------------------------------------------------------------
// rename, rmdir
// ---------------------------------------------------------------------------

#[test]
fn rename_over_existing_is_atomic_and_rmdir_nonempty_fails() {
    let m = Mount::new();
    write(&m.p("a"), b"new content from a");
    write(&m.p("b"), b"old content of b");
    let old_handle = File::open(m.p("b")).unwrap();
    fs::rename(m.p("a"), m.p("b")).unwrap();
    assert_eq!(read(&m.p("b")), b"new content from a");
    assert!(!m.p("a").exists(), "the source name is still there");
    assert_eq!(names(&m.dir), vec![OsString::from("b")]);
    let mut old = Vec::new();
    (&old_handle).read_to_end(&mut old).unwrap();
    assert_eq!(
        old, b"old content of b",
        "an open handle on the replaced file reads its old content"
    );
    drop(old_handle);

    // Readers never see the target missing or half written while a writer
    // keeps replacing it (write temp, fsync, rename), 200 times.
    let target = m.p("config");
    let version = |v: u32| -> Vec<u8> {
        let mut d = format!("version {v:06}\n").into_bytes();
        d.resize(20_000, b'0' + (v % 10) as u8);
        d
    };
    write(&target, &version(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let target = target.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u32;
            let mut last = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = match fs::read(&target) {
                    Ok(d) => d,
                    Err(e) => {
                        return Err(format!(
                            "reading the target while it is replaced by rename failed after {reads} good reads \
                             (rename over an existing file must be atomic): {e}"
                        ));
                    }
                };
                let head = String::from_utf8_lossy(&d[..d.len().min(15)]).to_string();
                let v: u32 = head
                    .strip_prefix("version ")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| panic!("torn read: {} bytes starting {head:?}", d.len()));
                assert_eq!(d.len(), 20_000, "torn read of version {v}");
                assert!(
                    d[15..].iter().all(|&c| c == b'0' + (v % 10) as u8),
                    "mixed content in version {v}"
                );
                assert!(v >= last, "went back from version {last} to {v}");
                last = v;
                reads += 1;
            }
            Ok(reads)
        })
    };
    for v in 1..=200u32 {
        let tmp = m.p(format!("config.tmp{v}"));
        let mut f = File::create(&tmp).unwrap();
        f.write_all(&version(v)).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&tmp, &target).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader
        .join()
        .expect("reader thread panicked")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(reads > 0);
    assert_bytes_eq("after 200 renames", &version(200), &read(&target));
    assert_eq!(names(&m.dir), vec![OsString::from("b"), OsString::from("config")]);

    // rmdir of a non-empty dir: ENOTEMPTY; rename of a dir over one too.
    fs::create_dir(m.p("d")).unwrap();
    write(&m.p("d/f"), b"f");
    let e = fs::remove_dir(m.p("d")).expect_err("rmdir of a non-empty dir");
    assert_eq!(errno(&e), libc::ENOTEMPTY, "rmdir: {}", errno_name(errno(&e)));
    let rm = bash(&m.dir, "rmdir d", &[]);
    assert!(
        !rm.ok() && rm.stderr.contains("not empty"),
        "rmdir tool: {}",
        rm.describe()
    );
    fs::create_dir(m.p("e")).unwrap();
    let e = fs::rename(m.p("e"), m.p("d")).expect_err("rename over a non-empty dir");
    assert!(
        [libc::ENOTEMPTY, libc::EEXIST].contains(&errno(&e)),
        "rename dir over non-empty dir: {}",
        errno_name(errno(&e))
    );
    assert_eq!(read(&m.p("d/f")), b"f");
    // A file over a dir, a dir over a file.
    let e = fs::rename(m.p("b"), m.p("e")).expect_err("rename file over dir");
    assert_eq!(errno(&e), libc::EISDIR, "file over dir: {}", errno_name(errno(&e)));
    let e = fs::rename(m.p("e"), m.p("b")).expect_err("rename dir over file");
    assert_eq!(errno(&e), libc::ENOTDIR, "dir over file: {}", errno_name(errno(&e)));
    // A dir over an empty dir works, and carries its contents.
    fs::rename(m.p("d"), m.p("e")).unwrap();
    assert_eq!(read(&m.p("e/f")), b"f");
    assert!(!m.p("d").exists());
    // mkdir over an existing name: EEXIST.
    let e = fs::create_dir(m.p("e")).expect_err("mkdir of an existing dir");
    assert_eq!(errno(&e), libc::EEXIST);
    fs::remove_file(m.p("e/f")).unwrap();
    fs::remove_dir(m.p("e")).unwrap();
    assert_eq!(names(&m.dir), vec![OsString::from("b"), OsString::from("config")]);
    // A directory cannot be moved into itself.
    fs::create_dir_all(m.p("p/q")).unwrap();
    let e = fs::rename(m.p("p"), m.p("p/q/p")).expect_err("rename a dir into itself");
    assert_eq!(errno(&e), libc::EINVAL, "dir into itself: {}", errno_name(errno(&e)));
}

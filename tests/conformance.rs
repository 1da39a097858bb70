//! POSIX as a conformance suite checks it, on a real mount: every local user
//! (the kernel checks modes; the tests run as `nobody` through `setpriv`),
//! every file type, every time stamp, sizes at the edge, and a random-I/O
//! run against a native file. What a test sees live it also sees after a
//! remount: the store is the truth.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::*;

const NOBODY: u32 = 65534;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `script` in the mount as the user `nobody` (group `nogroup`, no others).
fn as_nobody(dir: &Path, script: &str) -> Out {
    bash(
        dir,
        &format!(
            "setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- bash -c {}",
            quote(&format!("set -eu\n{script}"))
        ),
        &[],
    )
}

fn nobody_ok(dir: &Path, script: &str) -> String {
    let out = as_nobody(dir, script);
    assert!(out.ok(), "as nobody: {script}\n{}", out.describe());
    out.stdout.trim().to_string()
}

fn nobody_refused(dir: &Path, script: &str, words: &str) {
    let out = as_nobody(dir, script);
    assert!(!out.ok(), "as nobody, this should fail: {script}\n{}", out.describe());
    assert!(
        out.stderr.contains(words),
        "as nobody: {script}: expected {words:?}\n{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// every user
// ---------------------------------------------------------------------------

#[test]
fn other_users_are_served_and_the_kernel_checks_their_modes() {
    let mut m = Mount::new();
    let mi = mountinfo_line(&m.dir).expect("mounted");
    assert!(mi.contains("allow_other"), "a mount by root serves every user: {mi}");
    assert!(mi.contains("default_permissions"), "{mi}");
    assert!(mi.contains("nosuid") && mi.contains("nodev"), "{mi}");
    sh(
        &m.dir,
        "printf hello > pub; chmod 644 pub
         printf secret > priv; chmod 600 priv
         mkdir open; chmod 777 open
         mkdir -m 1777 sticky; printf x > sticky/roots; chmod 666 sticky/roots
         printf '#!/bin/sh\\necho ran\\n' > run; chmod 755 run
         cp run norun; chmod 644 norun",
    );
    // Read and stat what the mode allows, nothing more.
    assert_eq!(nobody_ok(&m.dir, "cat pub"), "hello");
    assert_eq!(nobody_ok(&m.dir, "stat -c %a priv"), "600");
    nobody_refused(&m.dir, "cat priv", "Permission denied");
    nobody_refused(&m.dir, "echo more >> pub", "Permission denied");
    nobody_refused(&m.dir, "touch here", "Permission denied");
    nobody_refused(&m.dir, "rm pub", "Permission denied");
    // Execute.
    assert_eq!(nobody_ok(&m.dir, "./run"), "ran");
    nobody_refused(&m.dir, "./norun", "Permission denied");
    // A new file belongs to its creator.
    assert_eq!(
        nobody_ok(&m.dir, "printf mine > open/mine; stat -c %u:%g open/mine"),
        format!("{NOBODY}:{NOBODY}")
    );
    // Sticky directory: only the owner deletes or renames.
    nobody_refused(&m.dir, "rm -f sticky/roots", "Operation not permitted");
    nobody_refused(&m.dir, "mv sticky/roots sticky/gone", "Operation not permitted");
    nobody_ok(
        &m.dir,
        "printf n > sticky/own; mv sticky/own sticky/own2; rm sticky/own2",
    );
    // A write by a non-owner... by anyone not root clears set-user-id and
    // set-group-id (the group has execute).
    nobody_ok(&m.dir, "printf v1 > open/s; chmod 6755 open/s");
    assert_eq!(fs::metadata(m.p("open/s")).unwrap().mode() & 0o7777, 0o6755);
    nobody_ok(&m.dir, "printf v2 >> open/s");
    assert_eq!(fs::metadata(m.p("open/s")).unwrap().mode() & 0o7777, 0o755);
    // chown by root clears them too.
    sh(&m.dir, "chmod 4755 open/s; chown 1:1 open/s");
    assert_eq!(fs::metadata(m.p("open/s")).unwrap().mode() & 0o7777, 0o755);

    let live = manifest(&m.dir, Opts::default());
    let owners = sh(&m.dir, "stat -c '%n %u %g %a' open/mine open/s sticky/roots");
    m.remount();
    assert_eq!(manifest(&m.dir, Opts::default()), live, "after a remount");
    assert_eq!(
        sh(&m.dir, "stat -c '%n %u %g %a' open/mine open/s sticky/roots"),
        owners
    );
    nobody_refused(&m.dir, "cat priv", "Permission denied");
    assert_eq!(nobody_ok(&m.dir, "cat open/mine"), "mine");
}

#[test]
fn allow_other_can_be_turned_off() {
    let m = Mount::new_with(&["mount", "--allow-other", "off"]);
    let mi = mountinfo_line(&m.dir).expect("mounted");
    assert!(!mi.contains("allow_other"), "{mi}");
    fs::write(m.p("f"), "x").unwrap();
    // The kernel turns away every user but the one who mounted it.
    nobody_refused(&m.dir, "stat /dev/null >/dev/null; cat f", "Permission denied");
}

// ---------------------------------------------------------------------------
// every file type
// ---------------------------------------------------------------------------

const SOCKET_ROUND_TRIP: &str = r#"
import socket
s = socket.socket(socket.AF_UNIX)
s.bind("sock")
s.listen()
c = socket.socket(socket.AF_UNIX)
c.connect("sock")
a, _ = s.accept()
c.sendall(b"over the socket")
print(a.recv(100).decode())
"#;

#[test]
fn fifos_devices_and_sockets_work_and_fifos_and_devices_are_kept() {
    let mut m = Mount::new();
    sh(
        &m.dir,
        "mkfifo pipe; mknod chr c 1 3; mknod blk b 7 0; chmod 640 chr; mkdir d; mkfifo -m 600 d/p2",
    );
    // A FIFO carries bytes between two processes.
    assert_eq!(
        sh(&m.dir, "(echo through the fifo > pipe &); read l < pipe; echo $l").trim(),
        "through the fifo"
    );
    // A Unix socket can be bound, connected to and talked over.
    let out = bash(&m.dir, &format!("python3 -c {}", quote(SOCKET_ROUND_TRIP)), &[]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(out.stdout.trim(), "over the socket");
    assert_eq!(
        sh(&m.dir, "stat -c '%n %F %t:%T %a' pipe chr blk sock d/p2"),
        "pipe fifo 0:0 644\nchr character special file 1:3 640\nblk block special file 7:0 644\nsock socket 0:0 755\nd/p2 fifo 0:0 600\n"
    );
    // The mount is nodev: a device node from any member opens nothing here.
    let out = bash(&m.dir, "head -c1 chr", &[]);
    assert!(
        !out.ok() && out.stderr.contains("Permission denied"),
        "{}",
        out.describe()
    );
    // Remove and rename work on every kind.
    sh(&m.dir, "mv blk blk2; rm blk2; mkfifo gone; rm gone");

    let mut live = manifest(&m.dir, Opts::default());
    m.remount();
    // A socket is a rendezvous of processes on this machine: it does not
    // outlive them, and is not kept.
    live.remove(Path::new("sock"));
    assert_eq!(manifest(&m.dir, Opts::default()), live, "after a remount");
    assert_eq!(
        sh(&m.dir, "stat -c '%n %F %t:%T' pipe chr d/p2"),
        "pipe fifo 0:0\nchr character special file 1:3\nd/p2 fifo 0:0\n"
    );
    assert!(!m.p("sock").exists() && !m.p("blk").exists() && !m.p("blk2").exists());
}

#[test]
fn fifos_and_devices_replicate_and_sockets_stay_local() {
    let a = Mount::new();
    let b = join(&a);
    sh(
        &a.dir,
        "mkdir d; mkfifo -m 620 d/pipe; mknod d/chr c 4 64; mknod blk b 8 1; echo marker > d/marker",
    );
    let out = bash(&a.dir, &format!("python3 -c {}", quote(SOCKET_ROUND_TRIP)), &[]);
    assert!(out.ok(), "{}", out.describe());
    same_entries(&[&a, &b]);
    eventually("the marker on B", || b.p("d/marker").exists());
    let stats = "stat -c '%n %F %t:%T %a %u %Y %Z' . d d/pipe d/chr blk d/marker";
    assert_eq!(
        sh(&b.dir, stats),
        sh(&a.dir, stats),
        "kinds, devices, modes, mtimes and ctimes"
    );
    assert!(a.p("sock").exists(), "the socket is there on A");
    assert!(!b.p("sock").exists(), "a socket is not replicated");
    let opts = Opts {
        file_mtime: true,
        dir_mtime: true,
        ino: false,
    };
    let mut on_a = manifest(&a.dir, opts);
    on_a.remove(Path::new("sock"));
    assert_eq!(manifest(&b.dir, opts), on_a);
    // The mount with a socket agrees with its store.
    check(&a);
    check(&b);
}

// ---------------------------------------------------------------------------
// time stamps and link counts
// ---------------------------------------------------------------------------

fn ns(t: (i64, i64)) -> i128 {
    t.0 as i128 * 1_000_000_000 + t.1 as i128
}
fn mtime(p: &Path) -> i128 {
    let md = fs::symlink_metadata(p).unwrap();
    ns((md.mtime(), md.mtime_nsec()))
}
fn ctime(p: &Path) -> i128 {
    let md = fs::symlink_metadata(p).unwrap();
    ns((md.ctime(), md.ctime_nsec()))
}
fn atime(p: &Path) -> i128 {
    let md = fs::symlink_metadata(p).unwrap();
    ns((md.atime(), md.atime_nsec()))
}
fn tick() {
    std::thread::sleep(Duration::from_millis(15));
}

#[test]
fn ctime_follows_every_change_and_directory_times_follow_their_names() {
    let mut m = Mount::new();
    fs::write(m.p("f"), "one").unwrap();
    let (m0, c0) = (mtime(&m.p("f")), ctime(&m.p("f")));
    tick();
    sh(&m.dir, "chmod 600 f");
    let c1 = ctime(&m.p("f"));
    assert!(c1 > c0, "chmod moves ctime");
    assert_eq!(mtime(&m.p("f")), m0, "chmod leaves mtime");
    tick();
    sh(&m.dir, "chown 1000:1000 f");
    let c2 = ctime(&m.p("f"));
    assert!(c2 > c1, "chown moves ctime");
    tick();
    let root_m = mtime(&m.dir);
    sh(&m.dir, "mv f g");
    let c3 = ctime(&m.p("g"));
    assert!(c3 > c2, "rename moves ctime");
    assert!(mtime(&m.dir) > root_m, "a rename in a directory moves its mtime");
    tick();
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("g"))
        .unwrap()
        .write_all_at(b"two", 3)
        .unwrap();
    assert!(
        mtime(&m.p("g")) > m0 && ctime(&m.p("g")) > c3,
        "a write moves mtime and ctime"
    );
    // touch -d sets mtime to the past; ctime is still now.
    tick();
    let c4 = ctime(&m.p("g"));
    sh(&m.dir, "touch -m -d @1234567890.25 g");
    assert_eq!(mtime(&m.p("g")), 1_234_567_890_250_000_000);
    assert!(ctime(&m.p("g")) > c4, "setting times moves ctime");

    // A directory's mtime and ctime move when a name in it comes, goes or moves.
    fs::create_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("e")).unwrap();
    let mut last = (mtime(&m.p("d")), ctime(&m.p("d")));
    let mut step = |what: &str, script: &str| {
        tick();
        sh(&m.dir, script);
        let now = (mtime(&m.p("d")), ctime(&m.p("d")));
        assert!(now.0 > last.0 && now.1 > last.1, "{what} moves d's mtime and ctime");
        last = now;
    };
    step("create", "touch d/x");
    step("mkdir", "mkdir d/sub");
    step("rename within", "mv d/x d/y");
    step("rename out", "mv d/y e/y");
    step("rename in", "mv e/y d/z");
    step("unlink", "rm d/z");
    step("rmdir", "rmdir d/sub");
    step("symlink", "ln -s g d/l");
    step("mkfifo", "mkfifo d/p");

    let stamps = |m: &Mount| sh(&m.dir, "stat -c '%n %Y.%y %Z.%z %a %u' . g d e d/l d/p");
    let live = stamps(&m);
    m.remount();
    assert_eq!(stamps(&m), live, "time stamps after a remount");
}

#[test]
fn atime_is_kept_and_moves_on_read() {
    let m = Mount::new();
    fs::write(m.p("f"), "content").unwrap();
    sh(&m.dir, "touch -a -d @1000000000 f");
    assert_eq!(atime(&m.p("f")), 1_000_000_000_000_000_000, "touch -a");
    let mt = mtime(&m.p("f"));
    assert!(mt > atime(&m.p("f")), "touch -a leaves mtime");
    // relatime: a read moves an atime older than the mtime.
    let before = atime(&m.p("f"));
    // The attribute cache may hold the old atime for its timeout.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fs::read(m.p("f")).unwrap(), b"content");
    eventually_true("a read moves the atime", || atime(&m.p("f")) > before);
    assert_eq!(mtime(&m.p("f")), mt, "a read leaves the mtime");
    sh(&m.dir, "touch -d @1500000000 f");
    assert_eq!(atime(&m.p("f")), 1_500_000_000_000_000_000);
    assert_eq!(mtime(&m.p("f")), 1_500_000_000_000_000_000);
}

fn eventually_true(what: &str, mut ok: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn link_counts() {
    let mut m = Mount::new();
    sh(&m.dir, "mkdir -p d/a d/b d/c/deep; touch d/file; mkfifo d/p");
    let nlink = |m: &Mount, p: &str| fs::symlink_metadata(m.p(p)).unwrap().nlink();
    assert_eq!(nlink(&m, "d"), 5, "2 plus 3 subdirectories");
    assert_eq!(nlink(&m, "d/c"), 3);
    assert_eq!(nlink(&m, "d/a"), 2);
    assert_eq!(nlink(&m, "."), 3);
    assert_eq!(nlink(&m, "d/file"), 1);
    sh(&m.dir, "rmdir d/a; mv d/b b");
    assert_eq!(nlink(&m, "d"), 3);
    assert_eq!(nlink(&m, "."), 4);
    // An open file whose name is gone has no links.
    let f = File::create(m.p("open")).unwrap();
    fs::remove_file(m.p("open")).unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    // Hard links stay refused (README: "Hard links").
    let e = fs::hard_link(m.p("d/file"), m.p("d/link")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    m.remount();
    assert_eq!(nlink(&m, "d"), 3);
    assert_eq!(nlink(&m, "."), 4);
}

// ---------------------------------------------------------------------------
// sizes at the edge
// ---------------------------------------------------------------------------

#[test]
fn sizes_beyond_the_largest_file_and_fallocate() {
    let mut m = Mount::new();
    fs::write(m.p("f"), "abc").unwrap();
    let out = bash(&m.dir, "truncate -s 1000000000000000 f", &[]);
    assert!(!out.ok() && out.stderr.contains("File too large"), "{}", out.describe());
    let f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    let e = f.write_at(b"x", 1 << 50).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG));
    drop(f);
    assert_eq!(fs::read(m.p("f")).unwrap(), b"abc", "nothing changed");

    sh(&m.dir, "fallocate -l 1MiB f");
    assert_eq!(fs::metadata(m.p("f")).unwrap().len(), 1 << 20);
    sh(&m.dir, "fallocate -n -o 0 -l 4MiB f");
    assert_eq!(
        fs::metadata(m.p("f")).unwrap().len(),
        1 << 20,
        "KEEP_SIZE keeps the size"
    );
    let out = bash(&m.dir, "fallocate -p -o 0 -l 4096 f", &[]);
    assert!(
        !out.ok() && (out.stderr.contains("not supported") || out.stderr.contains("unsupported")),
        "{}",
        out.describe()
    );
    let body = fs::read(m.p("f")).unwrap();
    assert_eq!(&body[..3], b"abc");
    assert!(body[3..].iter().all(|b| *b == 0));
    m.remount();
    assert_eq!(fs::read(m.p("f")).unwrap(), body);
}

// ---------------------------------------------------------------------------
// random I/O against a native file
// ---------------------------------------------------------------------------

const SPAN: u64 = 3 << 20;

fn fallocate(f: &File, mode: i32, off: u64, len: u64) {
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
}

fn mmap_write(f: &File, off: u64, data: &[u8]) {
    let len = f.metadata().unwrap().len();
    let end = (off + data.len() as u64).min(len);
    if end <= off {
        return;
    }
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            end as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(data.as_ptr(), (p as *mut u8).add(off as usize), (end - off) as usize);
        assert_eq!(libc::msync(p, end as usize, libc::MS_SYNC), 0);
        libc::munmap(p, end as usize);
    }
}

fn same(a: &Path, b: &Path, when: &str) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{when}: sizes differ");
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{when}: first differing byte at {i}");
    }
}

#[test]
fn random_io_matches_a_native_file() {
    let ops: u64 = std::env::var("LATTICE_RANDOM_IO_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut m = Mount::new();
    let (_native_tmp, native_dir) = empty_dir("lattice-native-");
    let (mp, np) = (m.p("data"), native_dir.join("data"));
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap()
    };
    let (mut a, mut b) = (open(&mp), open(&np));
    let mut rng = Rng::new(12);
    let mut buf = vec![0u8; 1 << 17];
    for i in 0..ops {
        match rng.below(100) {
            0..=39 => {
                let (off, n) = (rng.below(SPAN), 1 + rng.below(1 << 16) as usize);
                rng.fill(&mut buf[..n]);
                a.write_all_at(&buf[..n], off).unwrap();
                b.write_all_at(&buf[..n], off).unwrap();
            }
            40..=69 => {
                let (off, n) = (rng.below(SPAN + 4096), 1 + rng.below(1 << 17) as usize);
                let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
                let (p, q) = (a.read_at(&mut x, off).unwrap(), b.read_at(&mut y, off).unwrap());
                assert_eq!((p, &x[..p]), (q, &y[..q]), "op {i}: read {n} at {off}");
            }
            70..=77 => {
                let len = rng.below(SPAN);
                a.set_len(len).unwrap();
                b.set_len(len).unwrap();
            }
            78..=85 => {
                let (off, n) = (rng.below(SPAN), 1 + rng.below(1 << 14) as usize);
                rng.fill(&mut buf[..n]);
                mmap_write(&a, off, &buf[..n]);
                mmap_write(&b, off, &buf[..n]);
            }
            86..=91 => {
                let mode = if rng.below(2) == 0 {
                    0
                } else {
                    libc::FALLOC_FL_KEEP_SIZE
                };
                let (off, len) = (rng.below(SPAN), 1 + rng.below(1 << 18));
                fallocate(&a, mode, off, len);
                fallocate(&b, mode, off, len);
            }
            92..=95 => {
                assert_eq!(a.metadata().unwrap().len(), b.metadata().unwrap().len(), "op {i}: size");
            }
            _ => {
                // Close and reopen: what was written is committed.
                drop((a, b));
                same(&mp, &np, &format!("op {i}, after close"));
                (a, b) = (open(&mp), open(&np));
            }
        }
    }
    drop((a, b));
    same(&mp, &np, "at the end");
    m.remount();
    same(&m.p("data"), &np, "after a remount");
}

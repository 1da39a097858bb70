//! The mount's life: restart keeps everything (content, modes, mtimes, inode
//! numbers, symlinks, xattrs), a kill -9 keeps what fsync acknowledged, SIGTERM
//! unmounts cleanly, and the CLI refuses bad requests with one clear sentence.

mod common;

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {} {name}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Everything `restart` compares: kind, mode, size, content hash, link target,
/// mtime (files and dirs, to the nanosecond) and inode number of every path.
fn record(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Info> {
    manifest(
        root,
        Opts {
            file_mtime: true,
            dir_mtime: true,
            ino: true,
        },
    )
}

#[test]
fn restart_keeps_content_modes_mtimes_inodes() {
    let mut m = Mount::new();
    make_tree(&m.p("t"), 7);
    for (name, mode) in [
        ("m0400", 0o400),
        ("m0640", 0o640),
        ("m0751", 0o751),
        ("m0600", 0o600),
        ("m0755", 0o755),
    ] {
        write(&m.p(name), name.as_bytes());
        set_mode(&m.p(name), mode);
    }
    fs::create_dir(m.p("locked_dir")).unwrap();
    write(&m.p("locked_dir/x"), b"x");
    set_mode(&m.p("locked_dir"), 0o711);
    // Times set with touch -d (bash runs with TZ=UTC) and to the nanosecond.
    sh(
        &m.dir,
        "touch -d '2001-02-03 04:05:06' t/small.txt m0640 && touch -d '1999-12-31 23:59:59.5' t/big.bin",
    );
    set_mtime(&m.p("t/empty.txt"), 1_234_567_890, 123_456_789);
    set_mtime(&m.p("t/a/b"), 1_000_000_000, 42);
    set_mtime(&m.p("t/docs"), 1_500_000_000, 999_999_999);
    setxattr(&m.p("t/small.txt"), "user.kept", b"across restarts");
    let before = record(&m.dir);
    assert!(before.len() > 40, "tree too small: {}", before.len());
    // Distinct inode numbers for distinct paths.
    let mut inos: Vec<u64> = before.values().map(|i| i.ino.unwrap()).collect();
    inos.sort();
    inos.dedup();
    assert_eq!(inos.len(), before.len(), "two paths share an inode number");

    m.remount();
    let after = record(&m.dir);
    assert_same("after unmount + mount", &before, &after);
    assert_eq!(
        getxattr(&m.p("t/small.txt"), "user.kept").as_deref(),
        Some(&b"across restarts"[..])
    );

    // New files after a restart get fresh inode numbers, and a second restart
    // keeps old and new.
    write(&m.p("after_restart.txt"), b"new");
    fs::create_dir(m.p("t/a/new_dir")).unwrap();
    fs::remove_file(m.p("t/one.txt")).unwrap();
    fs::rename(m.p("t/chunky.bin"), m.p("t/a/chunky_moved.bin")).unwrap();
    let before2 = record(&m.dir);
    let new_ino = before2[Path::new("after_restart.txt")].ino.unwrap();
    let old_inos: Vec<u64> = before.values().map(|i| i.ino.unwrap()).collect();
    assert!(
        !old_inos.contains(&new_ino),
        "a new file reused a live inode number {new_ino}"
    );
    assert_eq!(
        before2[Path::new("t/a/chunky_moved.bin")].ino,
        before[Path::new("t/chunky.bin")].ino,
        "rename must keep the inode number"
    );
    m.remount();
    assert_same("after a second restart", &before2, &record(&m.dir));
    assert_eq!(sh(&m.dir, "./t/run.sh"), "tree-script-ran\n");
}

#[test]
fn kill_9_keeps_fsynced_data() {
    // A group-commit window of a minute: only fsync can have made data durable.
    let mut m = Mount::new_with_env(&["mount"], &[("LATTICE_GROUP_COMMIT_MS", "60000")]);
    let mut rng = Rng::new(9);
    let big = rng.bytes(1_500_000);
    let mut f = File::create(m.p("durable.bin")).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();

    fs::create_dir(m.p("sub")).unwrap();
    let mut g = File::create(m.p("sub/note.txt")).unwrap();
    g.write_all(b"fsync'd note\n").unwrap();
    g.sync_all().unwrap();
    drop(g);

    // Rewritten in place after a first fsync: the second version counts.
    let mut h = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .open(m.p("over.txt"))
        .unwrap();
    h.write_all(b"version one, long enough to be cut").unwrap();
    h.sync_all().unwrap();
    h.set_len(0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&h, b"version two", 0).unwrap();
    h.sync_data().unwrap();

    let pid = m.daemon_pid();
    assert!(pid_alive(pid), "status --json gave pid {pid}, which is not running");
    kill(pid, libc::SIGKILL);
    assert!(
        wait_pid_gone(pid, Duration::from_secs(10)),
        "daemon {pid} survived SIGKILL"
    );
    drop(f);
    drop(h);

    // The dead mount: still in the mount table, and ENOTCONN.
    let e = fs::metadata(&m.dir).expect_err("stat of a mount whose daemon was killed");
    assert_eq!(errno(&e), libc::ENOTCONN, "stale mount gave {}", errno_name(errno(&e)));
    assert!(is_mountpoint(&m.dir), "the stale mount vanished by itself");

    // `mountctl unmount` clears the stale mount.
    let out = mountctl(&m.home, &[OsStr::new("unmount"), m.dir.as_os_str()], MOUNT_TIMEOUT);
    assert!(out.ok(), "unmount of a stale mount failed: {}", out.describe());
    assert!(
        !is_mountpoint(&m.dir),
        "`mountctl unmount` did not clear the stale mount"
    );
    assert!(fs::metadata(&m.dir).unwrap().is_dir());
    m.mark_unmounted();

    m.mount();
    assert_bytes_eq("fsync'd durable.bin after kill -9", &big, &read(&m.p("durable.bin")));
    assert_eq!(read(&m.p("sub/note.txt")), b"fsync'd note\n");
    assert_eq!(read(&m.p("over.txt")), b"version two");
    // And the store works on after recovery.
    write(&m.p("after.txt"), b"after recovery");
    m.remount();
    assert_eq!(read(&m.p("after.txt")), b"after recovery");
    assert_bytes_eq("durable.bin after a second restart", &big, &read(&m.p("durable.bin")));
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let mut m = Mount::new();
    for (round, sig) in [(1, libc::SIGTERM), (2, libc::SIGINT)] {
        // Written and closed, never fsync'd: a clean shutdown commits it.
        write(
            &m.p(format!("round{round}.txt")),
            format!("written before signal {sig}\n").as_bytes(),
        );
        fs::create_dir_all(m.p(format!("dir{round}/inner"))).unwrap();
        write(&m.p(format!("dir{round}/inner/f")), &Rng::new(round).bytes(200_000));

        let pid = m.daemon_pid();
        kill(pid, sig);
        assert!(
            wait_pid_gone(pid, Duration::from_secs(30)),
            "daemon {pid} still running 30 s after signal {sig}"
        );
        assert!(
            !is_mountpoint(&m.dir),
            "signal {sig}: daemon exited but {} is still in /proc/self/mountinfo: {:?}",
            m.dir.display(),
            mountinfo_line(&m.dir)
        );
        assert!(
            fs::metadata(&m.dir).unwrap().is_dir(),
            "mount point unusable after signal {sig}"
        );
        m.mark_unmounted();

        m.mount();
        for r in 1..=round {
            let sig_r = if r == 1 { libc::SIGTERM } else { libc::SIGINT };
            assert_eq!(
                read(&m.p(format!("round{r}.txt"))),
                format!("written before signal {sig_r}\n").as_bytes()
            );
            assert_bytes_eq(
                &format!("dir{r}/inner/f after signal {sig}"),
                &Rng::new(r).bytes(200_000),
                &read(&m.p(format!("dir{r}/inner/f"))),
            );
        }
    }
}

#[test]
fn unmount_commits_every_close_even_one_that_races_it() {
    let mut m = Mount::new();
    // Closed right before the unmount request, never fsync'd.
    for round in 0..10u64 {
        write(&m.p(format!("just-closed-{round}")), &Rng::new(round).bytes(50_000));
        m.remount();
        for r in 0..=round {
            assert_bytes_eq(
                &format!("just-closed-{r} after {round} remounts"),
                &Rng::new(r).bytes(50_000),
                &read(&m.p(format!("just-closed-{r}"))),
            );
        }
    }
    // Still open while the unmount is asked for: the mount is busy, so it is
    // detached, and the daemon finishes once the file is closed.
    let f = File::create(m.p("open-during-unmount")).unwrap();
    f.write_all_at(b"written while unmounting", 0).unwrap();
    let (home, dir) = (m.home.clone(), m.dir.clone());
    let unmount = std::thread::spawn(move || mountctl(&home, &[OsStr::new("unmount"), dir.as_os_str()], MOUNT_TIMEOUT));
    std::thread::sleep(Duration::from_millis(500));
    f.write_all_at(b"WRITTEN", 0).unwrap();
    drop(f);
    let out = unmount.join().unwrap();
    assert!(out.ok(), "unmount: {}", out.describe());
    m.mark_unmounted();
    m.mount();
    assert_eq!(read(&m.p("open-during-unmount")), b"WRITTEN while unmounting");
    check(&m);
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

fn try_mount(home: &Path, dir: &Path) -> Out {
    mountctl(home, &[OsStr::new("mount"), dir.as_os_str()], MOUNT_TIMEOUT)
}

#[test]
fn cli_mount_without_init_is_refused() {
    let home = Home::bare();
    let (_t, dir) = empty_dir("lattice-mnt-");
    let _guard = Mount::guard(&home.path, &dir);
    let out = try_mount(&home.path, &dir);
    assert_refused(&out, &["init"]);
    assert!(
        out.stderr.contains("mountctl init"),
        "should tell to run `mountctl init`: {}",
        out.describe()
    );
    assert!(!is_mountpoint(&dir));
}

#[test]
fn cli_mount_point_missing_is_refused() {
    let home = Home::new();
    let (_t, parent) = empty_dir("lattice-mnt-");
    let dir = parent.join("does-not-exist");
    let _guard = Mount::guard(&home.path, &dir);
    let out = try_mount(&home.path, &dir);
    assert_refused(&out, &["exist", "no such", "not found", "missing"]);
    assert!(!dir.exists(), "mount created the missing directory");
    assert!(!is_mountpoint(&dir));
}

#[test]
fn cli_mount_point_is_a_file_is_refused() {
    let home = Home::new();
    let (_t, parent) = empty_dir("lattice-mnt-");
    let file = parent.join("a-file");
    write(&file, b"not a dir");
    let _guard = Mount::guard(&home.path, &file);
    let out = try_mount(&home.path, &file);
    assert_refused(&out, &["not a directory", "directory"]);
    assert!(!is_mountpoint(&file));
    assert_eq!(read(&file), b"not a dir");
}

#[test]
fn cli_mount_point_not_empty_is_refused() {
    let home = Home::new();
    let (_t, dir) = empty_dir("lattice-mnt-");
    write(&dir.join("already-here.txt"), b"keep me");
    let _guard = Mount::guard(&home.path, &dir);
    let out = try_mount(&home.path, &dir);
    assert_refused(&out, &["empty"]);
    assert!(!is_mountpoint(&dir));
    assert_eq!(read(&dir.join("already-here.txt")), b"keep me");
}

#[test]
fn cli_same_home_twice_and_same_dir_twice_are_refused() {
    let home = Home::new();
    let (_t1, d1) = empty_dir("lattice-mnt-");
    let (_t2, d2) = empty_dir("lattice-mnt-");
    let m = Mount::at(&home.path, &d1);
    write(&m.p("hello.txt"), b"first mount");

    // The same data folder on a second directory.
    let _g2 = Mount::guard(&home.path, &d2);
    let out = try_mount(&home.path, &d2);
    assert_refused(&out, &["already", "lock", "in use", "running"]);
    assert!(!is_mountpoint(&d2), "the same home got mounted twice");

    // The same directory again (same home).
    let out = try_mount(&home.path, &d1);
    assert_refused(&out, &["already", "lock", "in use", "running", "empty"]);

    // The same directory from another node.
    let other = Home::new();
    let out = try_mount(&other.path, &d1);
    assert_refused(&out, &["already mounted", "mount point", "not empty", "in use"]);

    // The first mount is untouched and still works.
    assert!(is_mountpoint(&d1));
    assert_eq!(read(&m.p("hello.txt")), b"first mount");
    write(&m.p("second.txt"), b"still writable");
    assert_eq!(read(&m.p("second.txt")), b"still writable");
    let listed = status_json(&home.path);
    let mounts = listed["mounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(mounts.len(), 1, "status lists {} mounts: {listed}", mounts.len());
}

#[test]
fn status_json_lists_the_mount() {
    let mut m = Mount::new();
    let v = status_json(&m.home);
    let entry =
        status_mount(&m.home, &m.dir).unwrap_or_else(|| panic!("status --json does not list {}: {v}", m.dir.display()));
    let pid = entry["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric pid: {entry}")) as u32;
    assert!(pid > 1 && pid_alive(pid), "pid {pid} is not a running process");
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        comm.trim().starts_with("mountctl"),
        "pid {pid} is {comm:?}, not the mountctl daemon"
    );
    let share = entry["share"]
        .as_str()
        .unwrap_or_else(|| panic!("no share string: {entry}"));
    assert!(
        share.len() >= 16 && share.chars().all(|c| c.is_ascii_hexdigit()),
        "share is not hex: {share:?}"
    );

    // LATTICE_HOME works in place of --home and says the same.
    let mut cmd = Command::new(bin());
    cmd.args(["status", "--json"]).env("LATTICE_HOME", &m.home);
    let out = run(&mut cmd, MOUNT_TIMEOUT).expect_ok();
    let v2: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json via LATTICE_HOME: JSON");
    assert_eq!(v2["mounts"], v["mounts"], "LATTICE_HOME and --home disagree");

    // The same share after a restart; gone from the list once unmounted.
    m.remount();
    let again = status_mount(&m.home, &m.dir).expect("listed after remount");
    assert_eq!(
        again["share"].as_str(),
        Some(share),
        "the share changed across a restart"
    );
    m.unmount();
    let v = status_json(&m.home);
    let still = v["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .any(|x| x["dir"].as_str().map(|d| Path::new(d) == m.dir).unwrap_or(false))
        })
        .unwrap_or(false);
    assert!(!still, "status --json still lists the unmounted dir: {v}");
    assert!(!pid_alive(pid), "daemon {pid} still running after unmount");
}

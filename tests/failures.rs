//! What the user sees when the store cannot take changes: a full disk gives
//! ENOSPC (not EIO), refuses new changes (a delete fails instead of
//! vanishing), keeps what was accepted and recovers by itself once there is
//! room; a node removed from its share turns read-only at once and keeps what
//! it could not write; `unmount` says whether everything was written.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use common::*;

/// Writes `data` to a new file at `p` and closes it, returning the close's
/// own result (std ignores it).
fn write_and_close(p: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(p)?;
    f.write_all(data)?;
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn daemon_log(home: &std::path::Path) -> String {
    fs::read_to_string(home.join("shares/default/daemon.log")).unwrap_or_default()
}

#[test]
fn a_full_disk_gives_enospc_refuses_changes_and_recovers_by_itself() {
    let disk = Tmpfs::new("64m");
    let home = disk.0.join("home");
    fs::create_dir(&home).unwrap();
    assert!(mountctl_s(&home, &["init"]).ok());
    let (_mnt_tmp, dir) = empty_dir("lattice-mnt-");
    let mut m = Mount::at(&home, &dir);
    let safe = Rng::new(1).bytes(300_000);
    {
        let mut f = fs::File::create(m.p("safe")).unwrap();
        f.write_all(&safe).unwrap();
        f.sync_all().unwrap();
    }
    let pid = m.daemon_pid();
    let _ = bash(&disk.0, "dd if=/dev/zero of=filler bs=1M 2>/dev/null; true", &[]);
    // Files until the store has no room left (it keeps some free space of
    // its own): the first close that fails says ENOSPC, never EIO.
    let mut n = 0;
    let e = loop {
        match write_and_close(&m.p(format!("big{n}")), &Rng::new(2 + n).bytes(4 << 20)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 64, "the store took 256 MiB on a full 64 MiB disk");
    };
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // While the disk is full, a delete fails rather than vanishing later.
    let e = fs::remove_file(m.p("safe")).expect_err("a delete was accepted on a full disk");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!(read(&m.p("safe")), safe, "fsynced data is intact");
    assert!(pid_alive(pid), "the daemon died when its log's disk filled");
    assert!(
        mountctl_s(&home, &["status"]).stdout.contains("failing"),
        "status does not say why"
    );
    // Room again: the mount takes changes by itself, no restart.
    fs::remove_file(disk.0.join("filler")).unwrap();
    let t = Instant::now();
    loop {
        match write_and_close(&m.p("after"), b"written once there was room") {
            Ok(()) => break,
            Err(e) if t.elapsed() < Duration::from_secs(90) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the mount did not recover within 90 s of freeing space: {e}"),
        }
    }
    fs::remove_file(m.p("safe")).unwrap();
    check(&m);
    m.unmount();
    m.mount();
    assert_eq!(read(&m.p("after")), b"written once there was room");
    assert!(!m.p("safe").exists());
    for i in 0..n {
        assert!(
            read(&m.p(format!("big{i}"))) == Rng::new(2 + i).bytes(4 << 20),
            "big{i} was closed without an error but is not intact"
        );
    }
    let errors = daemon_log(&home).matches("ERROR").count();
    assert!(errors < 20, "{errors} error lines: the log floods");
}

#[test]
fn unmount_says_so_when_changes_could_not_be_written() {
    let disk = Tmpfs::new("48m");
    let home = disk.0.join("home");
    fs::create_dir(&home).unwrap();
    assert!(mountctl_s(&home, &["init"]).ok());
    let (_mnt_tmp, dir) = empty_dir("lattice-mnt-");
    let mut m = Mount::at(&home, &dir);
    write(&m.p("before"), b"written while there was room");
    m.remount();
    let _ = bash(&disk.0, "dd if=/dev/zero of=filler bs=1M 2>/dev/null; true", &[]);
    // Closed without its content stored; a file's name queued, not written.
    let _ = write_and_close(&m.p("after"), &Rng::new(9).bytes(4 << 20));
    let out = mountctl(&home, &[OsStr::new("unmount"), dir.as_os_str()], MOUNT_TIMEOUT);
    m.mark_unmounted();
    assert!(!is_mountpoint(&dir), "the mount is gone either way");
    assert!(
        !out.ok(),
        "unmount exited 0 although the store had no room:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("could not be written") && out.stderr.contains("No space left"),
        "unmount does not say what was lost and why:\n{}",
        out.describe()
    );
    // Room again: everything acknowledged by fsync or a clean close is there.
    fs::remove_file(disk.0.join("filler")).unwrap();
    m.mount();
    assert_eq!(read(&m.p("before")), b"written while there was room");
}

#[test]
fn a_removed_writer_turns_read_only_and_keeps_what_it_could_not_write() {
    let a = Mount::new();
    // B's group commit waits long, so its last changes are still queued when
    // the removal arrives.
    let mut b = Mount::new_with_env(&["join", &invite(&a, &[])], &[("LATTICE_GROUP_COMMIT_MS", "30000")]);
    write(&a.p("shared.txt"), b"from a");
    same_entries(&[&a, &b]);
    write(&b.p("unsent.txt"), b"written on b, never sent");
    let b_id = status_mount(&b.home, &b.dir).unwrap()["author"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ctl(&a, &["peers", "remove", &b_id]);
    assert!(out.ok(), "{}", out.describe());
    eventually("B's mount turns read-only", || {
        status_mount(&b.home, &b.dir).is_some_and(|s| s["state"].as_str().is_some_and(|x| x.starts_with("read-only")))
    });
    let e = fs::write(b.p("later.txt"), b"x").expect_err("a removed node still takes writes");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // What B could not write is saved, content and all, and listed.
    let refused = b.home.join("shares/default/refused");
    let saved: Vec<_> = fs::read_dir(&refused).expect("no refused folder").flatten().collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let dir = saved[0].path();
    assert_eq!(read(&dir.join("unsent.txt")), b"written on b, never sent");
    assert!(
        fs::read_to_string(dir.join("CHANGES.txt"))
            .unwrap()
            .contains("/unsent.txt")
    );
    // B shows what its store holds, the saved change is not in it.
    assert_eq!(read(&b.p("shared.txt")), b"from a");
    assert!(!b.p("unsent.txt").exists());
    check(&b);
    let errors = daemon_log(&b.home).matches("ERROR").count();
    assert!(errors < 10, "{errors} error lines: the log floods");
    b.unmount();
}

#[test]
fn the_last_owner_cannot_remove_itself() {
    let a = Mount::new();
    let me = status_mount(&a.home, &a.dir).unwrap()["author"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ctl(&a, &["peers", "remove", &me]);
    assert_refused(&out, &["last owner"]);
    let out = ctl(&a, &["leave", "--yes"]);
    assert_refused(&out, &["last owner"]);
    write(&a.p("still-writable"), b"yes");
}

#[test]
fn a_writer_removed_while_offline_learns_it_when_it_comes_back() {
    let a = Mount::new();
    let b = join(&a);
    same_entries(&[&a, &b]);
    net(&b, "off");
    let b_id = status_mount(&b.home, &b.dir).unwrap()["author"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ctl(&a, &["peers", "remove", &b_id]).ok());
    write(&a.p("after-removal.txt"), b"not for b");
    std::thread::sleep(Duration::from_secs(1));
    net(&b, "on");
    // B's next sync is refused, with the signed entry that removed it.
    assert!(ctl(&b, &["sync"]).ok());
    eventually("B learns it was removed", || {
        status_mount(&b.home, &b.dir).is_some_and(|s| s["state"].as_str().is_some_and(|x| x.contains("removed")))
    });
    let e = fs::write(b.p("x"), b"x").expect_err("a removed node still takes writes");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(
        !b.p("after-removal.txt").exists(),
        "B got a change made after its removal"
    );
}

#[test]
fn a_size_beyond_the_largest_file_gives_efbig() {
    let mut m = Mount::new();
    let f = fs::File::create(m.p("huge")).unwrap();
    let e = f.set_len(1 << 50).expect_err("a 1 PiB file was accepted");
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    // A size the share can describe still works, and the file is usable.
    f.set_len(1 << 20).unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.p("huge")).unwrap().len(), 1 << 20);
    m.remount();
    assert_eq!(fs::metadata(m.p("huge")).unwrap().len(), 1 << 20);
}

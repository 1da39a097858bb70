//! A node's data folder and what commands may touch: share names, a share
//! folder that lost its store, a damaged inode map, the daemon's log, and
//! `unmount` leaving alone every mount that is not this home's.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn share_dir(home: &Path) -> std::path::PathBuf {
    home.join("shares/default")
}

#[test]
fn bad_share_names_are_refused() {
    let home = Home::new();
    let (_t, dir) = empty_dir("lattice-mnt-");
    for bad in ["../../x", "", "/abs", "a/b", "..", "sp ace"] {
        let out = mountctl(
            &home.path,
            &[
                OsStr::new("mount"),
                dir.as_os_str(),
                OsStr::new("--share"),
                OsStr::new(bad),
            ],
            MOUNT_TIMEOUT,
        );
        assert!(!out.ok(), "--share {bad:?} was accepted: {}", out.describe());
        assert!(out.stderr.contains("not a share name"), "{}", out.describe());
        assert!(!is_mountpoint(&dir));
    }
    assert!(!home.path.join("x").exists() && !Path::new("/abs").exists());
}

#[test]
fn a_share_folder_that_lost_its_store_is_refused_not_replaced() {
    let mut m = Mount::new();
    write(&m.p("kept.txt"), b"precious");
    let share = status_mount(&m.home, &m.dir).unwrap()["share"]
        .as_str()
        .unwrap()
        .to_string();
    m.unmount();
    let store = share_dir(&m.home).join("store.redb");
    fs::rename(&store, store.with_extension("moved")).unwrap();
    let out = mountctl(&m.home, &[OsStr::new("mount"), m.dir.as_os_str()], MOUNT_TIMEOUT);
    assert_refused(&out, &["lost its store"]);
    assert!(!is_mountpoint(&m.dir));
    // Put it back: the same share, the same file.
    fs::rename(store.with_extension("moved"), &store).unwrap();
    m.mount();
    assert_eq!(read(&m.p("kept.txt")), b"precious");
    assert_eq!(status_mount(&m.home, &m.dir).unwrap()["share"].as_str().unwrap(), share);
}

#[test]
fn a_damaged_inode_map_is_rebuilt() {
    let mut m = Mount::new();
    write(&m.p("f"), b"content");
    m.unmount();
    fs::write(share_dir(&m.home).join("inodes.redb"), b"this is not a redb file").unwrap();
    m.mount();
    assert_eq!(read(&m.p("f")), b"content");
    let log = fs::read_to_string(share_dir(&m.home).join("daemon.log")).unwrap();
    assert!(
        log.contains("inode map") && log.contains("damaged"),
        "no warning in the log:\n{log}"
    );
    check(&m);
}

#[test]
fn the_log_has_no_colour_codes_and_no_ioctl_noise() {
    let m = Mount::new();
    write(&m.p("f.txt"), b"x");
    // Python asks TCGETS at every open: a disk file system says ENOTTY, quietly.
    sh(
        &m.dir,
        "for i in $(seq 1 50); do python3 -c 'open(\"f.txt\").read()'; done",
    );
    let log = fs::read_to_string(share_dir(&m.home).join("daemon.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "ANSI codes in the log file");
    assert!(!log.to_lowercase().contains("ioctl"), "ioctl noise in the log:\n{log}");
}

#[test]
fn unmount_leaves_alone_what_is_not_this_homes_mount() {
    // A tmpfs at DIR: not a Lattice mount at all.
    let home = Home::new();
    let (_t, dir) = empty_dir("lattice-mnt-");
    sh(Path::new("/"), &format!("mount -t tmpfs lattice-foreign {}", q(&dir)));
    let out = mountctl(&home.path, &[OsStr::new("unmount"), dir.as_os_str()], MOUNT_TIMEOUT);
    let still = is_mountpoint(&dir);
    let _ = Command::new("umount").arg(&dir).status();
    assert_refused(&out, &["not a mount of"]);
    assert!(still, "unmount detached a tmpfs that was not its own");
    // Another home's live mount.
    let a = Mount::new();
    let other = Home::new();
    let out = mountctl(&other.path, &[OsStr::new("unmount"), a.dir.as_os_str()], MOUNT_TIMEOUT);
    assert_refused(&out, &["not a mount of"]);
    assert!(is_mountpoint(&a.dir), "unmount detached another home's mount");
    write(&a.p("still-works"), b"yes");
}

#[test]
fn completions_and_man_page_are_generated_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = mountctl_s(dir.path(), &["completions", shell]);
        assert!(out.ok(), "{}", out.describe());
        assert!(
            out.stdout.contains("restore") && out.stdout.contains("dag"),
            "{shell}: {}",
            out.stdout
        );
    }
    let script = dir.path().join("mountctl.bash");
    std::fs::write(&script, mountctl_s(dir.path(), &["completions", "bash"]).stdout).unwrap();
    let check = bash(
        dir.path(),
        "bash -n mountctl.bash && source mountctl.bash && complete -p mountctl",
        &[],
    );
    assert!(check.ok(), "the bash completion does not load: {}", check.describe());
    let man = mountctl_s(dir.path(), &["man"]);
    assert!(man.ok() && man.stdout.contains(".TH mountctl 1"), "{}", man.describe());
    std::fs::write(dir.path().join("mountctl.1"), &man.stdout).unwrap();
    let shown = bash(dir.path(), "man -l mountctl.1 | cat", &[]);
    assert!(
        shown.ok() && shown.stdout.contains("one folder, the same on every machine"),
        "{}",
        shown.describe()
    );
}

#[test]
fn a_debug_bundle_holds_status_logs_and_sizes_and_no_secrets() {
    let m = Mount::new();
    let private = "the content of a private file 7f3a9c";
    fs::write(m.p("private.txt"), private).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let tgz = out_dir.path().join("bundle.tar.gz");
    let out = mountctl_s(&m.home, &["debug-bundle", "--out", tgz.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.describe());
    let x = bash(
        out_dir.path(),
        "mkdir x && tar -xzf bundle.tar.gz -C x && find x -type f | sort",
        &[],
    );
    assert!(x.ok(), "{}", x.describe());
    let files: Vec<&str> = x.stdout.lines().collect();
    let find = |end: &str| {
        let f = files
            .iter()
            .find(|f| f.ends_with(end))
            .unwrap_or_else(|| panic!("no {end} in {files:?}"));
        out_dir.path().join(f)
    };
    let status: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(find("share-default/status.json")).unwrap()).unwrap();
    assert!(
        status["entries"].as_u64().is_some() && status["store_bytes"].as_u64() > Some(0),
        "{status}"
    );
    assert!(
        fs::read_to_string(find("share-default/daemon.log"))
            .unwrap()
            .contains("mounted")
    );
    assert!(fs::read_to_string(find("files.txt")).unwrap().contains("store.redb"));
    // Nothing secret: no file content, no key.
    let key = fs::read(m.home.join("identity")).unwrap();
    for f in &files {
        let bytes = fs::read(out_dir.path().join(f)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(private), "{f} holds a file's content");
        assert!(
            !bytes.windows(key.len().min(32)).any(|w| w == &key[..key.len().min(32)]),
            "{f} holds the key"
        );
        assert!(
            !text.contains(&hex::encode(&key[..key.len().min(32)])),
            "{f} holds the key in hex"
        );
    }
}

#[test]
fn the_systemd_user_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(workspace().join("packaging/lattice@.service")).unwrap();
    assert!(
        unit.contains("ExecStartPre=-/usr/local/bin/mountctl unmount %f"),
        "a stale mount is cleared first"
    );
    assert!(unit.contains("Restart=on-failure") && !unit.contains("After=network-online"));
    // As installed, with this build's binary: systemd must accept every line.
    let unit = unit.replace("/usr/local/bin/mountctl", bin().to_str().unwrap());
    std::fs::write(dir.path().join("lattice@home-me-Lattice.service"), unit).unwrap();
    let out = bash(
        dir.path(),
        "systemd-analyze verify ./lattice@home-me-Lattice.service",
        &[],
    );
    assert!(out.ok() && out.stderr.trim().is_empty(), "{}", out.describe());
}

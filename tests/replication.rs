//! Several daemons on one machine, real mounts, peers on 127.0.0.1: invite and
//! join, the same tree everywhere, merges after partitions (`mountctl net off`
//! cuts a node off: it neither accepts, dials nor gossips), catch-up, refusals.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
fn three_nodes_show_the_same_tree() {
    let a = Mount::new();
    let b = join(&a);
    let c = join(&a);
    write(&a.p("from-a.txt"), b"written on A\n");
    fs::create_dir_all(a.p("dir/sub")).unwrap();
    write(&a.p("dir/sub/deep.bin"), &vec![7u8; 300_000]);
    write(&b.p("from-b.txt"), b"written on B\n");
    std::os::unix::fs::symlink("from-b.txt", b.p("link-to-b")).unwrap();
    write(&c.p("run.sh"), b"#!/bin/sh\necho hi\n");
    set_mode(&c.p("run.sh"), 0o755);
    let tree = converged(&[&a, &b, &c]);
    assert_eq!(tree.len(), 8, "the root and seven nodes: {tree:#?}");
    assert_eq!(read(&c.p("dir/sub/deep.bin")), vec![7u8; 300_000]);
    assert_eq!(fs::read_link(a.p("link-to-b")).unwrap(), Path::new("from-b.txt"));
    assert_eq!(sh(&b.dir, "./run.sh"), "hi\n");

    // An edit shows at once in the other mounts' kernel caches too.
    assert_eq!(read(&b.p("from-a.txt")), b"written on A\n");
    write(&a.p("from-a.txt"), b"edited on A\n");
    eventually("B sees A's edit", || read(&b.p("from-a.txt")) == b"edited on A\n");
    fs::remove_file(c.p("from-b.txt")).unwrap();
    eventually("A sees C's delete", || !a.p("from-b.txt").exists());

    let synced = ctl(&a, &["sync"]);
    assert!(
        synced.ok() && synced.stdout.lines().count() == 2,
        "an anti-entropy round with both peers: {}",
        synced.describe()
    );
    assert!(
        !synced.stdout.contains("error") && !synced.stdout.contains("cannot"),
        "{}",
        synced.stdout
    );

    let status: serde_json::Value = serde_json::from_str(&ctl(&a, &["status", "--json"]).stdout).unwrap();
    let peers = status["mounts"][0]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{status}");
    assert!(peers.iter().all(|p| p["online"] == true), "{status}");
}

/// The merge scenarios of the issue: A and B act while cut off from each
/// other and from C, then reconnect; every mount must end the same.
#[test]
fn merges_after_partitions() {
    let a = Mount::new();
    let b = join(&a);
    let c = join(&a);
    let all = [&a, &b, &c];
    let cut = |on: bool| {
        for m in [&a, &b] {
            net(m, if on { "off" } else { "on" });
        }
    };

    // S1: both edit one file: the winner at the path, the other version
    // beside it under the same name on every peer.
    let copies = |m: &Mount| -> Vec<String> {
        names(&m.dir)
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with("s1.conflict-"))
            .collect()
    };
    for resolve_by_deleting_the_copy in [false, true] {
        write(&a.p("s1.txt"), b"base\n");
        converged(&all);
        cut(true);
        write(&a.p("s1.txt"), b"A's edit\n");
        write(&b.p("s1.txt"), b"B's edit\n");
        cut(false);
        converged(&all);
        let c1 = copies(&c);
        assert_eq!(c1.len(), 1, "one conflict copy: {:?}", names(&c.dir));
        assert!(c1[0].ends_with(".txt"), "the extension is kept: {}", c1[0]);
        let mut both = vec![read(&c.p("s1.txt")), read(&c.p(&c1[0]))];
        both.sort();
        assert_eq!(both, vec![b"A's edit\n".to_vec(), b"B's edit\n".to_vec()]);
        let listed = ctl(&c, &["conflicts"]).stdout;
        assert!(listed.contains(&c1[0]) && listed.contains("s1.txt"), "{listed}");
        if resolve_by_deleting_the_copy {
            let winner = read(&b.p("s1.txt"));
            fs::remove_file(b.p(&c1[0])).unwrap();
            converged(&all);
            assert_eq!(read(&a.p("s1.txt")), winner, "deleting the copy keeps the winner");
        } else {
            write(&c.p("s1.txt"), b"resolved\n");
            converged(&all);
            assert_eq!(read(&a.p("s1.txt")), b"resolved\n");
        }
        for m in all {
            assert!(copies(m).is_empty(), "resolved for everyone");
        }
        assert_eq!(ctl(&a, &["conflicts"]).stdout, "");
        fs::remove_file(a.p("s1.txt")).unwrap();
    }

    // S2: A renames a directory while B edits a file inside it.
    fs::create_dir(a.p("d")).unwrap();
    write(&a.p("d/f.txt"), b"one\n");
    converged(&all);
    cut(true);
    fs::rename(a.p("d"), a.p("d2")).unwrap();
    write(&b.p("d/f.txt"), b"one\ntwo\n");
    cut(false);
    converged(&all);
    for m in all {
        assert!(!m.p("d").exists(), "the old path came back");
        assert_eq!(
            read(&m.p("d2/f.txt")),
            b"one\ntwo\n",
            "the edit is in the renamed directory"
        );
    }

    // S3: A moves x into y while B moves y into x.
    fs::create_dir(a.p("x")).unwrap();
    fs::create_dir(a.p("y")).unwrap();
    write(&a.p("x/in-x"), b"x\n");
    converged(&all);
    cut(true);
    fs::rename(a.p("x"), a.p("y/x")).unwrap();
    fs::rename(b.p("y"), b.p("x/y")).unwrap();
    cut(false);
    let tree = converged(&all);
    let has = |name: &str| tree.keys().any(|p| p.file_name() == Some(OsStr::new(name)));
    assert!(
        has("x") && has("y") && has("in-x"),
        "both reachable: {:?}",
        tree.keys().collect::<Vec<_>>()
    );

    // S4: A deletes a file while B edits it: the edit wins.
    write(&a.p("s4.txt"), b"v1\n");
    converged(&all);
    cut(true);
    fs::remove_file(a.p("s4.txt")).unwrap();
    write(&b.p("s4.txt"), b"v2 from B\n");
    cut(false);
    converged(&all);
    for m in all {
        assert_eq!(read(&m.p("s4.txt")), b"v2 from B\n");
    }

    // S5: both create different files with the same name: both kept.
    cut(true);
    write(&a.p("same.txt"), b"A's\n");
    write(&b.p("same.txt"), b"B's\n");
    cut(false);
    converged(&all);
    for m in all {
        let mut contents: Vec<Vec<u8>> = names(&m.dir)
            .into_iter()
            .filter(|n| n.to_string_lossy().starts_with("same"))
            .map(|n| read(&m.dir.join(n)))
            .collect();
        contents.sort();
        assert_eq!(contents, vec![b"A's\n".to_vec(), b"B's\n".to_vec()]);
    }

    // S6: A renames f to g while B renames f to h: exactly one survives.
    write(&a.p("f"), b"contents of f\n");
    converged(&all);
    cut(true);
    fs::rename(a.p("f"), a.p("g")).unwrap();
    fs::rename(b.p("f"), b.p("h")).unwrap();
    cut(false);
    converged(&all);
    for m in all {
        assert!(!m.p("f").exists());
        assert!(m.p("g").exists() != m.p("h").exists(), "exactly one of g and h");
        let kept = if m.p("g").exists() { m.p("g") } else { m.p("h") };
        assert_eq!(read(&kept), b"contents of f\n");
    }
}

#[test]
fn a_stopped_node_catches_up_and_a_new_node_backfills() {
    let mut a = Mount::new();
    let mut b = join(&a);
    b.unmount();
    // 1,000 writes while B is down.
    let script = "import os\nfor i in range(1000):\n    open('w%04d' % i, 'w').write(str(i))\n";
    sh(&a.dir, &format!("python3 -c \"{script}\""));
    b.mount();
    eventually("B has all 1,000 files", || names(&b.dir).len() == 1000);
    assert_eq!(read(&b.p("w0999")), b"999");

    // A share of 10,000 entries: one fsync'd file each (an fsync writes one).
    let entries = |m: &Mount| {
        let v: serde_json::Value = serde_json::from_str(&ctl(m, &["status", "--json"]).stdout).unwrap();
        v["mounts"][0]["entries"].as_u64().unwrap()
    };
    let more = 10_000 - entries(&a);
    let script = format!(
        "import os\nfor i in range({more}):\n    f = open('e%05d' % i, 'w'); f.write('x'); f.flush(); os.fsync(f.fileno()); f.close()\n"
    );
    sh(&a.dir, &format!("python3 -c \"{script}\""));
    assert!(entries(&a) >= 10_000, "the share has {} entries", entries(&a));
    let c = join(&a);
    assert_eq!(
        names(&c.dir).len(),
        1000 + more as usize,
        "join returns with the share backfilled"
    );
    eventually("C holds every entry", || entries(&c) >= entries(&a));
    a.unmount();
}

#[test]
fn refusals_are_clear_and_apply_nothing() {
    let a = Mount::new();
    let b = join(&a);
    write(&a.p("base.txt"), b"base\n");
    converged(&[&a, &b]);

    // A used ticket.
    let t = invite(&a, &[]);
    let c = Mount::new_with(&["join", &t]);
    let home = Home::new();
    let (_d, dir) = empty_dir("lattice-mnt-");
    // A join that must fail, leaving nothing mounted.
    let try_join = |ticket: &str, env: &[(&str, &str)]| {
        let args = [
            OsStr::new("join"),
            OsStr::new(ticket),
            dir.as_os_str(),
            OsStr::new("--bind"),
            OsStr::new("127.0.0.1:0"),
        ];
        let out = mountctl_env(&home.path, &args, env, MOUNT_TIMEOUT);
        assert!(!out.ok(), "the join was accepted: {}", out.describe());
        assert!(!is_mountpoint(&dir));
        // A join the share refused leaves no half-joined share behind.
        let share = home.path.join("shares/default");
        assert!(
            !share.join("store.redb").exists() && !share.join("joining").exists(),
            "a refused join left its store or marker: {}",
            out.describe()
        );
        out
    };
    let out = try_join(&t, &[]);
    assert!(out.stderr.contains("not valid"), "{}", out.describe());

    // An expired ticket.
    let t = invite(&a, &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = try_join(&t, &[]);
    assert!(out.stderr.contains("expired"), "{}", out.describe());

    // Not a ticket at all.
    let out = try_join("hello", &[]);
    assert!(out.stderr.contains("not a Lattice ticket"), "{}", out.describe());

    // A peer speaking another protocol version.
    let t = invite(&a, &[]);
    let out = try_join(&t, &[("LATTICE_TEST_PROTOCOL_VERSION", "99")]);
    assert!(
        out.stderr.contains("version 99") && out.stderr.contains("version 3"),
        "{}",
        out.describe()
    );

    // A reader's writes: EROFS on its mount, nothing reaches the others.
    let t = invite(&a, &["--read-only"]);
    let r = Mount::new_with(&["join", &t]);
    assert_eq!(read(&r.p("base.txt")), b"base\n");
    let e = fs::write(r.p("nope.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    // A removed peer: cut off, its later writes refused.
    let status: serde_json::Value = serde_json::from_str(&ctl(&b, &["status", "--json"]).stdout).unwrap();
    let b_id = status["mounts"][0]["author"].as_str().unwrap().to_string();
    let out = ctl(&a, &["peers", "remove", &b_id]);
    assert!(out.ok(), "{}", out.describe());
    let _ = fs::write(b.p("after-removal.txt"), b"x");
    // Once every member has applied the removal, nothing reaches B any more
    // (a member that has not yet applied it would still relay to B).
    for m in [&a, &c, &r] {
        eventually("the removal reaches every member", || {
            !ctl(m, &["peers", "--json"]).stdout.contains(&b_id)
        });
    }
    write(&a.p("after-removal-on-a.txt"), b"x");
    eventually("the remaining members still get changes", || {
        r.p("after-removal-on-a.txt").exists() && c.p("after-removal-on-a.txt").exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!a.p("after-removal.txt").exists(), "a removed peer's write was applied");
    assert!(
        !b.p("after-removal-on-a.txt").exists(),
        "a removed peer still receives the share's changes"
    );
    let peers = ctl(&a, &["peers", "--json"]).stdout;
    assert!(!peers.contains(&b_id), "{peers}");
}

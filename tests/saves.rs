//! How editors, git and scripts really save files: temporary file renamed over
//! the target, lock files created and unlinked, write-close-unlink with no
//! pause. None of them may leave a ghost file or a conflict copy: not in the
//! live mount, not after unmount and mount, not on a peer. Each test checks
//! all three, and `mountctl check` on both nodes.

mod common;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// Every name under `root`, relative, sorted.
fn all_names(root: &Path) -> Vec<String> {
    manifest(root, Opts::default())
        .into_keys()
        .filter(|p| p.as_os_str() != ".")
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// No conflict copies or leftover lock/temp files under `root`.
fn assert_clean(what: &str, root: &Path, expected: &[String]) {
    let names = all_names(root);
    let ghosts: Vec<&String> = names
        .iter()
        .filter(|n| n.contains(".conflict-") || n.ends_with(".lock") || n.ends_with(".tmp"))
        .collect();
    assert!(ghosts.is_empty(), "{what}: ghosts or conflict copies: {ghosts:?}");
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(names, want, "{what}: the tree is not what was saved");
}

/// The same tree and contents live, after unmount and mount, and on the peer.
fn everywhere(a: &mut Mount, b: &Mount, expected: &[String], contents: &[(&str, Vec<u8>)]) {
    let check_contents = |what: &str, root: &Path| {
        for (name, want) in contents {
            assert_bytes_eq(&format!("{what}: {name}"), want, &read(&root.join(name)));
        }
    };
    assert_clean("live", &a.dir, expected);
    check_contents("live", &a.dir);
    check(a);
    a.remount();
    assert_clean("after unmount and mount", &a.dir, expected);
    check_contents("after unmount and mount", &a.dir);
    check(a);
    same_entries(&[a, b]);
    assert_clean("on the peer", &b.dir, expected);
    check_contents("on the peer", &b.dir);
    check(b);
}

#[test]
fn atomic_save_by_rename_1000_times() {
    let mut a = Mount::new();
    let b = join(&a);
    let target = a.p("notes.txt");
    for i in 0..1000u32 {
        let tmp = a.p(format!(".notes.txt.{i}.tmp"));
        fs::write(&tmp, format!("version {i}\n")).unwrap();
        fs::rename(&tmp, &target).unwrap();
    }
    everywhere(
        &mut a,
        &b,
        &["notes.txt".into()],
        &[("notes.txt", b"version 999\n".to_vec())],
    );
}

#[test]
fn the_save_patterns_of_editors_and_lock_files() {
    let mut a = Mount::new();
    let b = join(&a);
    let mut expected = vec!["r1".to_string()];
    let mut contents = Vec::new();
    for i in 0..200u32 {
        // Write the old version, then the new one beside it, rename over.
        fs::write(a.p("r1"), b"old").unwrap();
        fs::write(a.p("r2"), b"new").unwrap();
        fs::rename(a.p("r2"), a.p("r1")).unwrap();
        // A lock file renamed into place (git's config.lock -> config).
        let cfg = format!("cfg{}", i % 10);
        fs::write(a.p(format!("{cfg}.lock")), format!("cfg {i}")).unwrap();
        fs::rename(a.p(format!("{cfg}.lock")), a.p(&cfg)).unwrap();
        // A lock taken and released (O_EXCL, then unlink).
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(a.p("m.lock"))
            .unwrap();
        drop(f);
        fs::remove_file(a.p("m.lock")).unwrap();
    }
    for c in 0..10 {
        expected.push(format!("cfg{c}"));
    }
    contents.push(("r1", b"new".to_vec()));
    let last: Vec<(String, Vec<u8>)> = (0..10)
        .map(|c| (format!("cfg{c}"), format!("cfg {}", 190 + c).into_bytes()))
        .collect();
    let mut all: Vec<(&str, Vec<u8>)> = contents;
    all.extend(last.iter().map(|(n, v)| (n.as_str(), v.clone())));
    everywhere(&mut a, &b, &expected, &all);
}

#[test]
fn write_close_then_unlink_or_rename_over_with_no_pause() {
    let mut a = Mount::new();
    let b = join(&a);
    fs::write(a.p("keep"), b"first").unwrap();
    for i in 0..50u32 {
        // A file changed and deleted within the same group-commit window must
        // stay deleted: the delete names the version that was just written.
        fs::write(a.p("gone"), format!("content {i}")).unwrap();
        fs::write(a.p("gone"), format!("changed {i}")).unwrap();
        fs::remove_file(a.p("gone")).unwrap();
        // The same for a file replaced by a rename right after its close.
        fs::write(a.p("old"), format!("old {i}")).unwrap();
        fs::write(a.p("new"), format!("new {i}")).unwrap();
        fs::rename(a.p("new"), a.p("old")).unwrap();
        fs::write(a.p("keep"), format!("keep {i}")).unwrap();
    }
    everywhere(
        &mut a,
        &b,
        &["keep".into(), "old".into()],
        &[("keep", b"keep 49".to_vec()), ("old", b"new 49".to_vec())],
    );
}

#[test]
fn git_clone_on_a_then_config_gc_and_status_on_b() {
    let (_src_tmp, src) = empty_dir("lattice-git-src-");
    git(
        &src,
        "git init -q -b main repo && cd repo && for i in $(seq 1 40); do echo line $i > f$i.txt; done \
         && mkdir -p sub/deeper && echo x > sub/deeper/y && git add -A && git commit -q -m one \
         && echo more >> f1.txt && git commit -qam two",
    );
    let mut a = Mount::new();
    let b = join(&a);
    git(
        &a.dir,
        &format!("git clone -q --no-hardlinks {} repo", q(&src.join("repo"))),
    );
    same_entries(&[&a, &b]);
    let repo_b = b.p("repo");
    git(
        &repo_b,
        "git config user.name 'Someone Else' && git config --get user.name",
    );
    git(&repo_b, "git gc -q && git fsck --full --strict");
    let st = git(&repo_b, "git status --porcelain --untracked-files=all");
    assert_eq!(st, "", "git status on B is not clean");
    same_entries(&[&a, &b]);
    for (what, m) in [("A", &a), ("B", &b)] {
        let ghosts: Vec<String> = all_names(&m.dir)
            .into_iter()
            .filter(|n| n.contains(".conflict-") || n.ends_with(".lock"))
            .collect();
        assert!(
            ghosts.is_empty(),
            "{what} shows lock files or conflict copies: {ghosts:?}"
        );
        check(m);
    }
    let st = git(
        &a.p("repo"),
        "git status --porcelain --untracked-files=all && git config --get user.name",
    );
    assert_eq!(st.trim(), "Someone Else", "A sees B's config and a clean status");
    a.remount();
    git(&a.p("repo"), "git fsck --full --strict");
    assert!(
        !all_names(&a.dir)
            .iter()
            .any(|n| n.contains(".conflict-") || n.ends_with(".lock")),
        "after unmount and mount A shows ghosts"
    );
    check(&a);
}

#[test]
fn a_write_to_an_open_file_beats_a_peers_delete_on_every_node() {
    let a = Mount::new();
    let b = join(&a);
    fs::write(a.p("draft.txt"), b"first words\n").unwrap();
    same_entries(&[&a, &b]);
    let f = OpenOptions::new().write(true).open(a.p("draft.txt")).unwrap();
    let before = b"written before the delete\n";
    f.write_all_at(before, 12).unwrap();
    // The peer deletes the file while it is open and being written here.
    fs::remove_file(b.p("draft.txt")).unwrap();
    // A holds B's delete. (Whether A still shows the file depends on whether
    // its first write was published before: any close of this descriptor
    // publishes it, and a process this test process starts meanwhile, here
    // or in a test running beside it, closes its inherited copy at exec.
    // Either way the writes win below.)
    same_entries(&[&a, &b]);
    f.write_all_at(b"written after the delete\n", 12 + before.len() as u64)
        .unwrap();
    f.write_all_at(b"FIRST", 0).unwrap();
    drop(f);
    let want = b"FIRST words\nwritten before the delete\nwritten after the delete\n".to_vec();
    same_entries(&[&a, &b]);
    for (what, m) in [("A", &a), ("B", &b)] {
        assert_eq!(names(&m.dir), vec![OsString::from("draft.txt")], "{what}");
        assert_bytes_eq(what, &want, &read(&m.p("draft.txt")));
        check(m);
    }
}

/// Close-to-open: a close publishes the closer's writes, not another
/// handle's unfinished ones. A reader that opens and closes the file while
/// a writer is half-way must not make the half-written file a version (in
/// the log, on a peer); the writer's close does.
///
/// The writer is another process: a process that holds the file open and
/// runs a program (as this test runs `mountctl`) closes its copy of the
/// descriptor at exec, and that close is the writer's own (POSIX: a close of
/// any descriptor of an open file), which does publish.
#[test]
fn a_readers_close_does_not_publish_a_half_written_file() {
    use std::io::{BufRead, BufReader, Write};
    let a = Mount::new();
    let b = join(&a);
    fs::write(a.p("doc.txt"), b"old").unwrap();
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_WRONLY)\n\
             os.pwrite(fd, b'half-way', 0)\n\
             print('half', flush=True)\n\
             sys.stdin.readline()\n\
             os.pwrite(fd, b' and done', 8)\n\
             os.close(fd)\n",
        )
        .arg(a.p("doc.txt"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), "half");
    for _ in 0..3 {
        // Each of these opens, reads and closes the file: a FLUSH, a RELEASE.
        assert_eq!(fs::read(a.p("doc.txt")).unwrap(), b"half-way");
    }
    // Everything A committed so far is in its store: the log tells.
    eventually("A has written what it committed", || {
        status_mount(&a.home, &a.dir).is_some_and(|s| s["unwritten"] == 0)
    });
    assert_eq!(
        sizes_logged(&a, "doc.txt"),
        vec![3],
        "a reader's close published the half-written file"
    );
    writeln!(writer.stdin.take().unwrap(), "go").unwrap();
    assert!(writer.wait().unwrap().success());
    eventually("the finished file on B", || {
        fs::read(b.p("doc.txt")).is_ok_and(|d| d == b"half-way and done")
    });
    assert_eq!(sizes_logged(&a, "doc.txt"), vec![3, 17]);
}

/// The sizes of a file's logged versions, oldest first.
fn sizes_logged(m: &Mount, rel: &str) -> Vec<u64> {
    let out = ctl(m, &["log", m.p(rel).to_str().unwrap(), "--json"]);
    assert!(out.ok(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["size"].as_u64())
        .collect()
}

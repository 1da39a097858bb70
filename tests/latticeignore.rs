//! `.latticeignore`: paths that stay on the machine that made them, work in
//! the mount like any file (and after a remount), and never reach a peer,
//! while everything else replicates; a save by rename out of an ignored name
//! is shared; moving a shared file into an ignored folder takes it out of
//! the share.

mod common;

use std::fs;

use common::*;

#[test]
fn ignored_paths_stay_local_and_everything_else_replicates() {
    let mut a = Mount::new();
    let b = join(&a);
    fs::write(
        a.p(".latticeignore"),
        "# build outputs and scratch\n*.tmp\nnode_modules/\n/build\n",
    )
    .unwrap();
    eventually("the patterns on B", || b.p(".latticeignore").exists());

    let local = [
        ("notes.tmp", "scratch"),
        ("node_modules/pkg/index.js", "module.exports = 1"),
        ("build/out.o", "object code"),
    ];
    fs::create_dir_all(a.p("node_modules/pkg")).unwrap();
    fs::create_dir(a.p("build")).unwrap();
    fs::create_dir(a.p("src")).unwrap();
    for (p, body) in local {
        fs::write(a.p(p), body).unwrap();
    }
    fs::write(a.p("src/main.rs"), "fn main() {}").unwrap();
    // `/build` is anchored at the root: this one is shared.
    fs::write(a.p("src/build"), "a file named build").unwrap();
    // An editor's save: write a temporary name, rename it over the real one.
    fs::write(a.p("doc.txt.tmp"), "saved by rename").unwrap();
    fs::rename(a.p("doc.txt.tmp"), a.p("doc.txt")).unwrap();

    same_entries(&[&a, &b]);
    eventually("the shared files on B", || {
        fs::read_to_string(b.p("doc.txt")).ok().as_deref() == Some("saved by rename")
            && b.p("src/main.rs").exists()
            && b.p("src/build").exists()
    });
    for p in ["notes.tmp", "node_modules", "build", "doc.txt.tmp"] {
        assert!(!b.p(p).exists(), "{p} reached B");
    }
    for (p, body) in local {
        assert_eq!(fs::read_to_string(a.p(p)).unwrap(), body, "{p} on A");
    }
    let st = status_mount(&a.home, &a.dir).unwrap();
    assert_eq!(st["local_only"], 6, "{st}");
    check(&a);
    check(&b);

    // B follows the same patterns.
    fs::write(b.p("b.tmp"), "b's scratch").unwrap();
    fs::write(b.p("b.txt"), "b's file").unwrap();
    eventually("b.txt on A", || a.p("b.txt").exists());
    assert!(!a.p("b.tmp").exists());

    // Local files are kept across a remount, and still not sent.
    a.remount();
    for (p, body) in local {
        assert_eq!(fs::read_to_string(a.p(p)).unwrap(), body, "{p} after a remount");
    }
    fs::write(a.p("build/more.o"), "more").unwrap();
    fs::remove_file(a.p("notes.tmp")).unwrap();
    a.remount();
    assert_eq!(fs::read_to_string(a.p("build/more.o")).unwrap(), "more");
    assert!(!a.p("notes.tmp").exists(), "a deleted local file stays deleted");

    // A shared file moved into an ignored folder leaves the share.
    sh(&a.dir, "mv src/main.rs build/main.rs");
    assert_eq!(fs::read_to_string(a.p("build/main.rs")).unwrap(), "fn main() {}");
    eventually("main.rs gone from B", || !b.p("src/main.rs").exists());
    same_entries(&[&a, &b]);
    check(&a);
    check(&b);
}

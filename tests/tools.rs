//! Real tools on a real Lattice mount: every test mounts a fresh node in temp
//! folders, runs ordinary programs (cp, tar, git, rsync, sed, sqlite) in
//! it and checks the bytes, not just exit codes. A test that cannot mount
//! fails; the `Mount` guard always unmounts.

mod common;

use std::ffi::OsString;
use std::fs::{self};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

// ---------------------------------------------------------------------------
// cp -a
// ---------------------------------------------------------------------------

#[test]
fn cp_a_tree_then_diff() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-cp-");
    let src = out.join("src");
    make_tree(&src.join("generated"), 1);
    // A real source tree too: the workspace's own store crate.
    sh(
        &out,
        &format!("cp -a {} {}", q(&workspace().join("store")), q(&src.join("store"))),
    );

    sh(&out, &format!("cp -a {} {}", q(&src), q(&m.p("copy"))));
    diff_r(&src, &m.p("copy"), "");
    let opts = Opts {
        file_mtime: true,
        dir_mtime: true,
        ino: false,
    };
    assert_same(
        "cp -a into the mount (kind, mode, size, content, link targets, mtimes)",
        &manifest(&src, opts),
        &manifest(&m.p("copy"), opts),
    );

    // And back out again.
    sh(&out, &format!("cp -a {} {}", q(&m.p("copy")), q(&out.join("back"))));
    diff_r(&src, &out.join("back"), "");
    assert_same(
        "cp -a out of the mount",
        &manifest(&src, opts),
        &manifest(&out.join("back"), opts),
    );

    // The executable in the copy runs.
    let ran = sh(&m.dir, "./copy/generated/run.sh");
    assert_eq!(ran, "tree-script-ran\n");
}

// ---------------------------------------------------------------------------
// tar
// ---------------------------------------------------------------------------

/// A manifest with mtimes truncated to whole seconds (GNU tar's default format
/// stores seconds).
fn manifest_secs(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Info> {
    let mut m = manifest(
        root,
        Opts {
            file_mtime: true,
            dir_mtime: true,
            ino: false,
        },
    );
    for v in m.values_mut() {
        if let Some((s, _)) = v.mtime {
            v.mtime = Some((s, 0));
        }
    }
    m
}

#[test]
fn tar_extract_into_and_create_from_mount() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-tar-");
    let src = out.join("src");
    make_tree(&src, 2);
    sh(&out, "tar -cf src.tar -C src .");

    fs::create_dir(m.p("x")).unwrap();
    sh(&out, &format!("tar -xf src.tar -C {}", q(&m.p("x"))));
    diff_r(&src, &m.p("x"), "");
    assert_same("tar -x into the mount", &manifest_secs(&src), &manifest_secs(&m.p("x")));

    // tar -c from inside the mount, extracted elsewhere.
    sh(&m.p("x"), &format!("tar -cf {} .", q(&out.join("back.tar"))));
    let list = |t: &str| {
        let s = sh(&out, &format!("tar -tf {t} | sort"));
        s.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let a = list("src.tar");
    let b = list("back.tar");
    assert!(a.len() > 40, "source tarball lists only {} entries", a.len());
    assert_eq!(
        a, b,
        "tar -tf of the tarball made in the mount differs from the source tarball"
    );
    fs::create_dir(out.join("back")).unwrap();
    sh(&out, "tar -xf back.tar -C back");
    diff_r(&src, &out.join("back"), "");
    assert_same(
        "tar -c from the mount, extracted outside",
        &manifest_secs(&src),
        &manifest_secs(&out.join("back")),
    );

    // Also piped through a pipe with gzip into the mount.
    sh(
        &out,
        &format!(
            "tar -czf - -C src . | (mkdir -p {d} && tar -xzf - -C {d})",
            d = q(&m.p("gz"))
        ),
    );
    diff_r(&src, &m.p("gz"), "");
}

// ---------------------------------------------------------------------------
// git
// ---------------------------------------------------------------------------

#[test]
fn git_init_commit_fsck_clone_both_ways() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-git-");

    // A repository inside the mount.
    git(
        &m.dir,
        r#"
        git init -q -b main repo
        cd repo
        printf 'hello\n' > README
        mkdir -p src/deep
        seq 1 5000 > src/numbers.txt
        printf '#!/bin/sh\necho hi\n' > src/deep/tool.sh
        chmod +x src/deep/tool.sh
        ln -s ../README src/readme_link
        git add -A
        git commit -q -m first
        printf 'more\n' >> README
        seq 5000 -1 1 > src/numbers.txt
        git rm -q src/readme_link
        printf 'new\n' > src/new.txt
        git add -A
        git commit -q -m second
        "#,
    );
    let log = git(&m.p("repo"), "git log --oneline");
    assert_eq!(log.lines().count(), 2, "git log:\n{log}");
    assert!(log.contains("second") && log.contains("first"), "git log:\n{log}");
    let st = git(&m.p("repo"), "git status --porcelain --untracked-files=all");
    assert_eq!(st, "", "git status not clean in the mount");
    git(&m.p("repo"), "git fsck --full --strict");
    // Packing: temp files, renames, mmap of packs.
    git(&m.p("repo"), "git gc -q --aggressive && git fsck --full --strict");
    let st = git(&m.p("repo"), "git status --porcelain --untracked-files=all");
    assert_eq!(st, "", "git status not clean after gc");
    assert_eq!(read(&m.p("repo/README")), b"hello\nmore\n");
    let exec = fs::metadata(m.p("repo/src/deep/tool.sh")).unwrap().mode();
    assert!(exec & 0o111 != 0, "tool.sh lost its x bit: {exec:o}");

    // Clone from the mount to outside.
    git(&out, &format!("git clone -q {} clone", q(&m.p("repo"))));
    diff_r(&m.p("repo"), &out.join("clone"), "--exclude=.git");
    git(&out.join("clone"), "git fsck --full --strict");
    let h1 = git(&m.p("repo"), "git rev-parse HEAD");
    let h2 = git(&out.join("clone"), "git rev-parse HEAD");
    assert_eq!(h1, h2);

    // An outside repository cloned into the mount (over the pack protocol).
    make_tree(&out.join("origin"), 3);
    git(
        &out.join("origin"),
        r#"
        rmdir a/empty_dir
        git init -q -b main
        git add -A
        git commit -q -m one
        seq 1 300 > counted.txt
        git add -A
        git commit -q -m two
        "#,
    );
    git(
        &m.dir,
        &format!("git clone -q --no-local {} clone2", q(&out.join("origin"))),
    );
    diff_r(&out.join("origin"), &m.p("clone2"), "--exclude=.git");
    git(&m.p("clone2"), "git fsck --full --strict");
    let st = git(&m.p("clone2"), "git status --porcelain --untracked-files=all");
    assert_eq!(st, "", "git status not clean in the clone made in the mount");
    let h1 = git(&out.join("origin"), "git rev-parse HEAD");
    let h2 = git(&m.p("clone2"), "git rev-parse HEAD");
    assert_eq!(h1, h2);

    // Work in the clone and push back out.
    git(
        &m.p("clone2"),
        r#"
        printf 'from the mount\n' > pushed.txt
        git add pushed.txt
        git commit -q -m three
        git push -q origin main:refs/heads/from-mount
        "#,
    );
    let shown = git(&out.join("origin"), "git show from-mount:pushed.txt");
    assert_eq!(shown, "from the mount\n");
    git(&out.join("origin"), "git fsck --full --strict");
}

// ---------------------------------------------------------------------------
// rsync
// ---------------------------------------------------------------------------

#[test]
fn rsync_then_rsync_delete() {
    let m = Mount::new();
    let (_tmp, out) = empty_dir("lattice-rsync-");
    let src = out.join("src");
    make_tree(&src, 4);
    let dst = m.p("dst");
    // rsync leaves a directory's time alone when it already matches to the
    // second (so on ext4 too, a directory it just made keeps its own time).
    // Directory times are checked to the second; file times to the nanosecond.
    let opts = Opts {
        file_mtime: true,
        dir_mtime: false,
        ino: false,
    };
    let same_dir_seconds = |what: &str| {
        let dirs = Opts {
            file_mtime: false,
            dir_mtime: true,
            ino: false,
        };
        let secs = |root: &Path| -> Vec<(PathBuf, Option<i64>)> {
            manifest(root, dirs)
                .into_iter()
                .map(|(p, i)| (p, i.mtime.map(|t| t.0)))
                .collect()
        };
        assert_eq!(secs(&src), secs(&dst), "{what}: directory mtimes differ in seconds");
    };

    sh(&out, &format!("rsync -a src/ {}/", q(&dst)));
    diff_r(&src, &dst, "");
    assert_same("rsync -a", &manifest(&src, opts), &manifest(&dst, opts));
    same_dir_seconds("rsync -a");

    // Delete one, add one, change one (different size), add a dir.
    fs::remove_file(src.join("docs/part00/doc00.md")).unwrap();
    write(&src.join("added.txt"), b"a file that was added\n");
    write(&src.join("small.txt"), &text(&mut Rng::new(99), 150));
    fs::create_dir_all(src.join("newdir/inner")).unwrap();
    write(&src.join("newdir/inner/n.txt"), b"n\n");
    fs::remove_dir_all(src.join("a/empty_dir")).unwrap();
    sh(&out, &format!("rsync -a --delete src/ {}/", q(&dst)));
    diff_r(&src, &dst, "");
    assert_same("rsync -a --delete", &manifest(&src, opts), &manifest(&dst, opts));
    same_dir_seconds("rsync -a --delete");
    assert!(!dst.join("docs/part00/doc00.md").exists());

    // A third run has nothing to do: sizes, modes and mtimes stuck.
    let itemized = sh(&out, &format!("rsync -a --delete -i src/ {}/", q(&dst)));
    assert_eq!(itemized, "", "rsync found differences right after syncing");

    // In-place delta updates (seek, write, ftruncate in the mount).
    let mut big = read(&src.join("big.bin"));
    big[300_000..300_100].fill(7);
    big.truncate(500_000);
    write(&src.join("big.bin"), &big);
    sh(&out, &format!("rsync -a --inplace --no-whole-file src/ {}/", q(&dst)));
    diff_r(&src, &dst, "");
    assert_bytes_eq("big.bin after rsync --inplace", &big, &read(&dst.join("big.bin")));
}

// ---------------------------------------------------------------------------
// sed -i
// ---------------------------------------------------------------------------

#[test]
fn sed_in_place() {
    let m = Mount::new();
    let f = m.p("conf.txt");
    write(&f, b"alpha=1\nbeta=2\ngamma=3\n");
    set_mode(&f, 0o640);
    sh(&m.dir, "sed -i 's/beta=2/beta=42/' conf.txt");
    assert_eq!(read(&f), b"alpha=1\nbeta=42\ngamma=3\n");
    sh(&m.dir, "sed -i -e '1i # header' -e '/gamma/d' conf.txt");
    assert_eq!(read(&f), b"# header\nalpha=1\nbeta=42\n");
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o7777,
        0o640,
        "sed -i must keep the mode"
    );
    // sed's temp file was renamed over the original: nothing else is left.
    assert_eq!(names(&m.dir), vec![OsString::from("conf.txt")]);
    let cat = sh(&m.dir, "cat conf.txt");
    assert_eq!(cat, "# header\nalpha=1\nbeta=42\n");
}

// ---------------------------------------------------------------------------
// sqlite
// ---------------------------------------------------------------------------

const SQLITE_PY: &str = r#"
import sqlite3, sys
path, journal = sys.argv[1], sys.argv[2]
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=" + journal)
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
for batch in range(10):
    with db:
        for i in range(100):
            n = batch * 100 + i
            db.execute("INSERT INTO t (id, name, blob) VALUES (?, ?, ?)", (n, "row %d" % n, bytes([n % 256]) * (n % 700)))
db.close()
db = sqlite3.connect(path)
count = db.execute("SELECT count(*) FROM t").fetchone()[0]
check = db.execute("PRAGMA integrity_check").fetchone()[0]
total = db.execute("SELECT sum(length(blob)) FROM t").fetchone()[0]
name = db.execute("SELECT name FROM t WHERE id = 777").fetchone()[0]
db.close()
print(count, check, total, name)
"#;

fn sqlite_in_mount(journal: &str) {
    let m = Mount::new();
    let out = sh_env(
        &m.dir,
        &format!("python3 -c \"$SQLITE_PY\" {} {journal}", q(&m.p("test.db"))),
        &[("SQLITE_PY", SQLITE_PY)],
    );
    let total: u64 = (0..1000u64).map(|n| n % 700).sum();
    assert_eq!(out, format!("1000 ok {total} row 777\n"));
    // The sqlite3 CLI agrees.
    let cli = sh(
        &m.dir,
        "sqlite3 test.db 'SELECT count(*) FROM t; PRAGMA integrity_check;'",
    );
    assert_eq!(cli, "1000\nok\n");
}

#[test]
fn sqlite_1000_inserts() {
    sqlite_in_mount("DELETE");
}

#[test]
fn sqlite_wal_mode() {
    sqlite_in_mount("WAL");
}

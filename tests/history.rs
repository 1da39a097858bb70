//! `mountctl log` and `restore` on real daemons: a file's versions, a
//! deleted file's, writing an old version back (in place, over a delete, to
//! a new path) and the restored version reaching a peer.

mod common;

use std::fs::{self, File};
use std::io::Write;

use common::*;

fn save(m: &Mount, rel: &str, body: &str) {
    let mut f = File::create(m.p(rel)).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    // Durable now: each save is its own version, not folded into the next.
    f.sync_all().unwrap();
}

fn versions(m: &Mount, rel: &str) -> Vec<serde_json::Value> {
    let out = ctl(m, &["log", m.p(rel).to_str().unwrap(), "--json"]);
    assert!(out.ok(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("log --json is JSON");
    v["versions"].as_array().unwrap().clone()
}

#[test]
fn log_and_restore_round_trip_and_reach_a_peer() {
    let a = Mount::new();
    let b = join(&a);
    fs::create_dir(a.p("docs")).unwrap();
    save(&a, "docs/plan.txt", "one");
    save(&a, "docs/plan.txt", "two, longer");
    save(&a, "docs/plan.txt", "three");
    let vs = versions(&a, "docs/plan.txt");
    // A save truncates first: that empty version may be a commit of its own.
    let content: Vec<_> = vs.iter().filter(|v| v["what"] == "content" && v["size"] != 0).collect();
    assert_eq!(content.len(), 3, "three saves: {vs:?}");
    let sizes: Vec<u64> = content.iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![3, 11, 5]);
    assert_eq!(content[2]["current"], true);
    assert!(content[..2].iter().all(|v| v["current"] == false));
    let me = status_mount(&a.home, &a.dir).unwrap()["author"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(content.iter().all(|v| v["author"] == me.as_str()));
    // The text form names the versions too.
    let text = ctl(&a, &["log", a.p("docs/plan.txt").to_str().unwrap()]);
    assert!(
        text.ok() && text.stdout.lines().count() == vs.len() + 1,
        "{}",
        text.describe()
    );
    // Written just now: "N s ago", on every line.
    assert!(
        text.stdout.lines().skip(1).all(|l| l.contains(" s ago")),
        "{}",
        text.stdout
    );

    // An old version back, in place: a new change that reaches B.
    let two = content[1]["entry"].as_str().unwrap()[..10].to_string();
    let out = ctl(&a, &["restore", a.p("docs/plan.txt").to_str().unwrap(), &two]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(fs::read_to_string(a.p("docs/plan.txt")).unwrap(), "two, longer");
    eventually("the restored version on B", || {
        fs::read_to_string(b.p("docs/plan.txt")).ok().as_deref() == Some("two, longer")
    });
    let now = versions(&a, "docs/plan.txt");
    assert_eq!(now.len(), vs.len() + 1);
    assert_eq!(
        (
            now.last().unwrap()["size"].as_u64(),
            now.last().unwrap()["current"].as_bool()
        ),
        (Some(11), Some(true))
    );

    // A deleted file is listed, its versions are kept, and it comes back.
    fs::remove_file(a.p("docs/plan.txt")).unwrap();
    eventually("the delete on B", || !b.p("docs/plan.txt").exists());
    let out = ctl(&a, &["log", "--deleted", a.p("docs").to_str().unwrap(), "--json"]);
    assert!(out.ok(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["deleted"][0]["path"], "/docs/plan.txt", "{v}");
    let vs = versions(&a, "docs/plan.txt");
    assert_eq!(vs.last().unwrap()["what"], "deleted");
    let three = vs.iter().filter(|v| v["size"] == 5).last().unwrap()["entry"]
        .as_str()
        .unwrap()[..12]
        .to_string();
    let out = ctl(&a, &["restore", a.p("docs/plan.txt").to_str().unwrap(), &three]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(fs::read_to_string(a.p("docs/plan.txt")).unwrap(), "three");
    eventually("the file back on B", || {
        fs::read_to_string(b.p("docs/plan.txt")).ok().as_deref() == Some("three")
    });

    // To a new path, leaving the file as it is.
    let one = vs.iter().find(|v| v["size"] == 3).unwrap()["entry"].as_str().unwrap()[..12].to_string();
    let out = ctl(
        &a,
        &[
            "restore",
            a.p("docs/plan.txt").to_str().unwrap(),
            &one,
            "--to",
            a.p("docs/plan-v1.txt").to_str().unwrap(),
        ],
    );
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(fs::read_to_string(a.p("docs/plan-v1.txt")).unwrap(), "one");
    assert_eq!(fs::read_to_string(a.p("docs/plan.txt")).unwrap(), "three");

    // Clear refusals.
    let out = ctl(&a, &["restore", a.p("docs/plan.txt").to_str().unwrap(), "ffffffff"]);
    assert_refused(&out, &["no such file", "version"]);
    let out = ctl(&a, &["restore", a.p("docs/plan.txt").to_str().unwrap(), "zz"]);
    assert_refused(&out, &["version"]);
    let out = ctl(&a, &["log", "/nowhere/x"]);
    assert_refused(&out, &["not inside a mount"]);

    let tree = converged(&[&a, &b]);
    assert!(tree.contains_key(std::path::Path::new("docs/plan-v1.txt")));
    check(&a);
    check(&b);
}

#[test]
fn dag_dot_is_accepted_by_graphviz_and_shows_authors_merges_and_conflicts() {
    let a = Mount::new();
    let b = join(&a);
    save(&a, "shared.txt", "from a");
    same_entries(&[&a, &b]);
    // Both write the same file while apart: a conflict once they meet.
    net(&b, "off");
    save(&a, "shared.txt", "a's edit");
    save(&b, "shared.txt", "b's edit");
    net(&b, "on");
    let out = ctl(&b, &["sync"]);
    assert!(out.ok(), "{}", out.describe());
    same_entries(&[&a, &b]);
    // While both versions are heads, their entries are marked.
    let out = ctl(&a, &["dag", a.p("shared.txt").to_str().unwrap(), "--dot"]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(out.stdout.matches("\\nconflict").count(), 2, "{}", out.stdout);
    // A merge: a write that names both heads.
    save(&a, "after.txt", "x");
    save(&a, "shared.txt", "merged by a");
    same_entries(&[&a, &b]);

    for args in [
        vec!["dag", "--dot"],
        vec!["dag", a.p("shared.txt").to_str().unwrap(), "--dot", "--last", "50"],
    ] {
        let out = ctl(&a, &args);
        assert!(out.ok(), "{}", out.describe());
        assert!(out.stdout.starts_with("digraph"), "{}", out.stdout);
        let (ida, idb) = (
            status_mount(&a.home, &a.dir).unwrap()["author"].as_str().unwrap()[..8].to_string(),
            status_mount(&b.home, &b.dir).unwrap()["author"].as_str().unwrap()[..8].to_string(),
        );
        assert!(
            out.stdout.contains(&ida) && out.stdout.contains(&idb),
            "both authors: {}",
            out.stdout
        );
        assert!(out.stdout.contains("merge"), "a merge is marked: {}", out.stdout);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("dag.dot"), &out.stdout).unwrap();
        let svg = bash(dir.path(), "dot -Tsvg dag.dot", &[]);
        assert!(
            svg.ok() && svg.stdout.contains("<svg"),
            "graphviz refused it: {}",
            svg.describe()
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `mount --at`: the share as it was at a time or at an entry, read-only,
/// next to the live mount, and gone with `unmount`.
#[test]
fn a_past_mount_shows_the_old_tree_and_refuses_writes() {
    let a = Mount::new();
    fs::create_dir(a.p("docs")).unwrap();
    save(&a, "docs/plan.txt", "one");
    save(&a, "old.txt", "deleted later");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let then = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    save(&a, "docs/plan.txt", "two");
    save(&a, "new.txt", "made later");
    fs::remove_file(a.p("old.txt")).unwrap();
    fs::rename(a.p("docs"), a.p("papers")).unwrap();

    let past = tempfile::tempdir().unwrap();
    let at = format!("@{}.{:03}", then / 1000, then % 1000);
    let out = ctl(&a, &["mount", past.path().to_str().unwrap(), "--at", &at]);
    assert!(out.ok(), "{}", out.describe());
    let p = |rel: &str| past.path().join(rel);
    assert_eq!(fs::read_to_string(p("docs/plan.txt")).unwrap(), "one");
    assert_eq!(fs::read_to_string(p("old.txt")).unwrap(), "deleted later");
    assert!(!p("new.txt").exists() && !p("papers").exists());
    // Read-only: the kernel says so at once.
    let e = fs::write(p("x.txt"), "no").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::remove_file(p("old.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // The live mount is as it was.
    assert_eq!(fs::read_to_string(a.p("papers/plan.txt")).unwrap(), "two");
    assert!(!a.p("old.txt").exists());
    let st = status_mount(&a.home, &a.dir).unwrap();
    assert_eq!(st["past"][0]["dir"], past.path().to_str().unwrap());

    // At an entry: the version `log` names.
    let two = versions(&a, "papers/plan.txt")
        .into_iter()
        .rfind(|v| v["size"] == 3)
        .unwrap()["entry"]
        .as_str()
        .unwrap()[..12]
        .to_string();
    let past2 = tempfile::tempdir().unwrap();
    let out = ctl(&a, &["mount", past2.path().to_str().unwrap(), "--at", &two]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(
        fs::read_to_string(past2.path().join("docs/plan.txt")).unwrap(),
        "two",
        "renamed after that entry"
    );

    for d in [past.path(), past2.path()] {
        let out = ctl(&a, &["unmount", d.to_str().unwrap()]);
        assert!(out.ok(), "{}", out.describe());
        assert!(!is_mountpoint(d), "{} is still mounted", d.display());
    }
    // Before the share existed, and a word that is no time: clear refusals.
    let out = ctl(&a, &["mount", past.path().to_str().unwrap(), "--at", "@1000000000"]);
    assert_refused(&out, &["did not exist yet"]);
    let out = ctl(&a, &["mount", past.path().to_str().unwrap(), "--at", "whenever"]);
    assert_refused(&out, &["neither a time"]);
    assert!(!is_mountpoint(past.path()));
}

//! Space that comes back: the retention policy, `mountctl gc` (measured with
//! `du`), versions the policy keeps still reading back, a new node joining a
//! share whose old content was collected, and a short disk collecting by
//! itself.

mod common;

use std::fs::{self, File};
use std::io::Write;

use common::*;

fn save(m: &Mount, rel: &str, body: &[u8]) {
    let mut f = File::create(m.p(rel)).unwrap();
    f.write_all(body).unwrap();
    f.sync_all().unwrap();
}

/// Disk blocks the store takes, as `du` counts them (KiB).
fn du_kib(m: &Mount) -> u64 {
    let out = sh(&m.home, "du -k shares/default/store.redb");
    out.split_whitespace().next().unwrap().parse().unwrap()
}

fn json(m: &Mount, args: &[&str]) -> serde_json::Value {
    let out = ctl(m, args);
    assert!(out.ok(), "{}", out.describe());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", out.stdout))
}

fn entries_of(m: &Mount, rel: &str) -> Vec<(String, u64)> {
    let v = json(m, &["log", m.p(rel).to_str().unwrap(), "--json"]);
    v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["what"] == "content" && v["size"] != 0)
        .map(|v| (v["entry"].as_str().unwrap().to_string(), v["size"].as_u64().unwrap()))
        .collect()
}

const MIB: usize = 1 << 20;

#[test]
fn gc_frees_space_on_disk_and_what_the_policy_keeps_reads_back() {
    let mut a = Mount::new();
    let b = join(&a);
    save(&a, "big.bin", &noise(8 * MIB, 1));
    save(&a, "big.bin", &noise(8 * MIB, 2));
    save(&a, "gone.bin", &noise(8 * MIB, 3));
    fs::remove_file(a.p("gone.bin")).unwrap();
    save(&a, "small.txt", b"one");
    save(&a, "small.txt", b"two");
    let before = converged(&[&a, &b]);

    // The default policy keeps every version for 30 days: nothing to free,
    // and status says what the history costs.
    let dry = json(&a, &["gc", "--dry-run", "--json"]);
    assert_eq!(dry["free_bytes"], 0, "{dry}");
    assert_eq!(dry["keep_history"], "30d");
    assert!(dry["history_bytes"].as_u64().unwrap() >= 16 * MIB as u64, "{dry}");
    let text = ctl(&a, &["status"]);
    assert!(text.stdout.contains("old versions take"), "{}", text.describe());

    let out = ctl(&a, &["config", "keep-history", "0"]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(ctl(&a, &["config", "keep-history"]).stdout.trim(), "0");
    let refused = ctl(&a, &["config", "keep-history", "soon"]);
    assert_refused(&refused, &["expected forever"]);

    let du_before = du_kib(&a);
    let dry = json(&a, &["gc", "--dry-run", "--json"]);
    assert!(dry["free_bytes"].as_u64().unwrap() >= 16 * MIB as u64, "{dry}");
    let done = json(&a, &["gc", "--json"]);
    assert!(done["bytes"].as_u64().unwrap() >= 16 * MIB as u64, "{done}");
    let du_after = du_kib(&a);
    assert!(
        du_after + 12 * 1024 < du_before,
        "du: {du_before} KiB before, {du_after} KiB after gc"
    );

    // What the mount shows is untouched, before and after a remount.
    assert_eq!(snapshot(&a), before);
    assert_eq!(fs::read(a.p("big.bin")).unwrap(), noise(8 * MIB, 2));
    a.remount();
    assert_eq!(snapshot(&a), before);

    // The old version is in the log, but its content is gone here: restore
    // says so. B's policy is its own: B still has it.
    let vs = entries_of(&a, "big.bin");
    // (A save of 8 MiB may be written in more than one version: the first
    // whole one is the first save's.)
    let first = vs
        .iter()
        .find(|v| v.1 == 8 * MIB as u64)
        .expect("a whole first version");
    assert!(vs.len() >= 2, "{vs:?}");
    let old = &first.0[..12];
    let out = ctl(&a, &["restore", a.p("big.bin").to_str().unwrap(), old]);
    assert_refused(&out, &["collected"]);
    let out = ctl(
        &b,
        &[
            "restore",
            b.p("big.bin").to_str().unwrap(),
            old,
            "--to",
            b.p("old.bin").to_str().unwrap(),
        ],
    );
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(fs::read(b.p("old.bin")).unwrap(), noise(8 * MIB, 1));

    // A new node joins a share whose old content A collected, and shows
    // the same tree.
    let c = join(&a);
    let tree = converged(&[&a, &b, &c]);
    assert_eq!(fs::read(c.p("old.bin")).unwrap(), noise(8 * MIB, 1));
    assert!(tree.contains_key(std::path::Path::new("big.bin")));
}

#[test]
fn a_short_disk_collects_old_versions_by_itself_and_says_so_once() {
    let a = Mount::new_with_env(&["mount"], &[("LATTICE_TEST_SPACE_TICK_MS", "200")]);
    save(&a, "f.bin", &noise(4 * MIB, 4));
    save(&a, "f.bin", &noise(4 * MIB, 5));
    save(&a, "f.bin", &noise(4 * MIB, 6));
    let du_before = du_kib(&a);
    // "Short" below 100 TiB free: always, here.
    let out = ctl(&a, &["config", "gc-below", "102400G"]);
    assert!(out.ok(), "{}", out.describe());
    eventually("the old versions collected", || {
        let s = status_mount(&a.home, &a.dir).unwrap();
        s["space"]["history_bytes"].as_u64() == Some(0) && s["space"]["collected_chunks"].as_u64() > Some(0)
    });
    assert!(du_kib(&a) + 6 * 1024 < du_before, "du did not shrink");
    assert_eq!(fs::read(a.p("f.bin")).unwrap(), noise(4 * MIB, 6));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = fs::read_to_string(a.home.join("shares/default/daemon.log")).unwrap();
    assert_eq!(log.matches("the disk is short of space").count(), 1, "{log}");
    // Room again: said once too.
    let out = ctl(&a, &["config", "gc-below", "0"]);
    assert!(out.ok(), "{}", out.describe());
    eventually("the log says the disk has room again", || {
        fs::read_to_string(a.home.join("shares/default/daemon.log"))
            .unwrap()
            .contains("the disk has room again")
    });
}

fn status_of(m: &Mount) -> serde_json::Value {
    status_mount(&m.home, &m.dir).unwrap()
}

/// A new node takes the share's state, not its history: it fetches the
/// content of current versions only, shows the same tree, and syncs on both
/// ways; `--full-history` replays everything; a snapshot node sponsors the
/// next one.
#[test]
fn a_new_node_bootstraps_from_a_snapshot() {
    let a = Mount::new();
    for i in 0..30 {
        save(&a, "log.bin", &noise(256 << 10, i));
    }
    for i in 0..20 {
        save(&a, &format!("tmp{i}.txt"), b"short-lived");
        fs::remove_file(a.p(format!("tmp{i}.txt"))).unwrap();
    }
    fs::create_dir(a.p("dir")).unwrap();
    save(&a, "dir/keep.txt", b"kept");

    let mut b = join(&a);
    converged(&[&a, &b]);
    let (sa, sb) = (status_of(&a), status_of(&b));
    assert_eq!(sb["from_snapshot"], true);
    assert!(
        sb["held_entries"].as_u64().unwrap() * 2 < sa["held_entries"].as_u64().unwrap(),
        "B holds {} entries, A {}",
        sb["held_entries"],
        sa["held_entries"]
    );
    // 30 versions of 256 KiB are history: B fetched the current one.
    let got = sb["bytes_received"].as_u64().unwrap();
    assert!(got < 2 * MIB as u64, "B received {got} bytes");
    assert_eq!(fs::read(b.p("log.bin")).unwrap(), noise(256 << 10, 29));
    // (Its first version comes along in the entry that also made the file,
    // which still heads the file's attributes; its content does not.)
    let vs = entries_of(&b, "log.bin");
    assert!(vs.len() <= 2, "B's history starts at the snapshot: {vs:?}");

    // On from there, both ways, and across a remount.
    save(&b, "dir/from-b.txt", b"b");
    save(&a, "log.bin", b"a again");
    converged(&[&a, &b]);
    b.remount();
    let tree = converged(&[&a, &b]);
    assert!(tree.contains_key(std::path::Path::new("dir/from-b.txt")));

    // The whole history on request.
    let t = invite(&a, &[]);
    let c = Mount::new_with(&["join", &t, "--full-history"]);
    converged(&[&a, &b, &c]);
    let sc = status_of(&c);
    assert_eq!(sc["from_snapshot"], false);
    assert_eq!(sc["held_entries"], status_of(&a)["held_entries"]);
    assert!(entries_of(&c, "log.bin").len() >= 30);

    // A node that joined by snapshot sponsors the next.
    let d = join(&b);
    converged(&[&a, &b, &c, &d]);
    assert_eq!(fs::read(d.p("dir/keep.txt")).unwrap(), b"kept");
}

/// Content that no entry names is still needed: a file that lives on this
/// machine only (`.latticeignore`d) shares its chunks with an old version a
/// collection lets go; the local file still reads back.
#[test]
fn gc_keeps_what_local_only_files_hold() {
    // Holds on freshly written chunks expire at once here: what keeps the
    // local file's content is that the mount says it needs it.
    let a = Mount::new_with_env(&["mount"], &[("LATTICE_TEST_HOLD_FOR_MS", "0")]);
    save(&a, ".latticeignore", b"*.bak\n");
    let body = noise(2 * MIB, 21);
    save(&a, "report.txt", &body);
    save(&a, "report.bak", &body);
    save(&a, "report.txt", &noise(2 * MIB, 22));
    let out = ctl(&a, &["config", "keep-history", "0"]);
    assert!(out.ok(), "{}", out.describe());
    let done = json(&a, &["gc", "--json"]);
    assert!(
        done["bytes"].as_u64().unwrap() == 0,
        "nothing is free: the local copy holds it ({done})"
    );
    assert_eq!(fs::read(a.p("report.bak")).unwrap(), body);
}

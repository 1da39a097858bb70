//! The ten partition scenarios, on real mounts and daemons: each ends with
//! the same tree on every node (and after a remount) and no lost write.
//! Partitions are made with the daemons' test-only fault layer
//! (`LATTICE_TEST_FAULTS=1`, then `mountctl net cut ID`, `net heal`,
//! `net gossip loss=.. dup=.. reorder=.. delay=..`), or by stopping and
//! killing daemons.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// Every node shows one tree; a remount of the first shows it too (the
/// store is the truth, not the live view); and no recorded write is lost.
fn settled(nodes: &mut [&mut Mount], ledger: &Ledger) {
    let tree = converged(&nodes.iter().map(|m| &**m).collect::<Vec<_>>());
    for m in nodes.iter() {
        ledger.nothing_lost(m);
        check(m);
    }
    nodes[0].remount();
    assert_same("after a remount", &tree, &snapshot(nodes[0]));
}

/// (1) A writes, edits, renames and deletes while B is stopped; B catches up.
#[test]
fn s01_a_writes_while_b_is_offline() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    let mut l = Ledger::default();
    for i in 0..20 {
        l.write(&a, &format!("d/old{i}.txt"), format!("old {i}").as_bytes());
    }
    converged(&[&a, &b]);
    b.unmount();
    for i in 0..200 {
        l.write(&a, &format!("new/{i}.txt"), format!("new {i}").as_bytes());
    }
    for i in 0..10 {
        l.write(&a, &format!("d/old{i}.txt"), format!("edited {i}").as_bytes());
    }
    for i in 10..15 {
        fs::remove_file(a.p(&format!("d/old{i}.txt"))).unwrap();
        l.forget(&format!("d/old{i}.txt"));
    }
    fs::rename(a.p("new"), a.p("renamed")).unwrap();
    l.0.iter_mut().for_each(|(p, _)| {
        if let Some(rest) = p.strip_prefix("new/") {
            *p = format!("renamed/{rest}");
        }
    });
    b.mount();
    settled(&mut [&mut b, &mut a], &l);
    assert!(!b.p("d/old12.txt").exists() && !b.p("new").exists());
}

/// (2) A chain A - B - C where A and C never talk: everything still reaches
/// everyone, through B.
#[test]
fn s02_a_chain_where_the_ends_never_meet() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    let mut c = member(&a, &[]);
    let (ia, ic) = (id(&a), id(&c));
    split(&[&a], &[&c], true);
    let (a_had, c_had) = (received_from(&a, &ic), received_from(&c, &ia));
    let mut l = Ledger::default();
    for i in 0..30 {
        l.write(&a, &format!("from-a/{i}.txt"), format!("a {i}").as_bytes());
        l.write(&c, &format!("from-c/{i}.txt"), format!("c {i}").as_bytes());
    }
    l.write(&b, "from-b.txt", b"b");
    // A big file, so that content (not only entries) travels the chain.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    l.write(&a, "big.bin", &big);
    converged(&[&a, &b, &c]);
    l.write(&c, "from-a/0.txt", b"c edits a's file");
    converged(&[&a, &b, &c]);
    assert_eq!(read(&a.p("from-a/0.txt")), b"c edits a's file");
    // The cut held: A and C exchanged nothing directly.
    assert_eq!(received_from(&a, &ic), a_had, "A received from C across the cut");
    assert_eq!(received_from(&c, &ia), c_had, "C received from A across the cut");
    split(&[&a], &[&c], false);
    settled(&mut [&mut c, &mut a, &mut b], &l);
}

/// (3) Two halves, A-B | C-D, both write (the same file too), then heal.
#[test]
fn s03_two_halves_write_then_heal() {
    let a = node(&[]);
    let b = member(&a, &[]);
    let c = member(&a, &[]);
    let d = member(&a, &[]);
    let (mut a, mut b, mut c, mut d) = (a, b, c, d);
    let mut l = Ledger::default();
    l.write(&a, "shared.txt", b"before the split");
    // Folders made at once on two nodes are two folders (one shown under a
    // clash name): make them before, so that the writes below share them.
    fs::create_dir(a.p("left")).unwrap();
    fs::create_dir(a.p("right")).unwrap();
    converged(&[&a, &b, &c, &d]);
    split(&[&a, &b], &[&c, &d], true);
    for i in 0..20 {
        l.write(&a, &format!("left/a{i}.txt"), b"a");
        l.write(&b, &format!("left/b{i}.txt"), b"b");
        l.write(&c, &format!("right/c{i}.txt"), b"c");
        l.write(&d, &format!("right/d{i}.txt"), b"d");
    }
    l.0.retain(|(p, _)| p != "shared.txt");
    l.write_concurrent(&b, "shared.txt", b"left's edit");
    l.write_concurrent(&d, "shared.txt", b"right's edit");
    // Each half agrees within itself while apart, and knows nothing of the other.
    converged(&[&a, &b]);
    converged(&[&c, &d]);
    assert!(!a.p("right/c0.txt").exists() && !c.p("left/a0.txt").exists());
    split(&[&a, &b], &[&c, &d], false);
    settled(&mut [&mut a, &mut b, &mut c, &mut d], &l);
    assert_eq!(versions_at(&c, "shared.txt").len(), 2, "one file, one conflict copy");
}

/// (4) A node SIGKILLed in the middle of a sync, then the node serving it:
/// each comes back and finishes.
#[test]
fn s04_sigkill_in_the_middle_of_a_sync() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    b.unmount();
    let mut l = Ledger::default();
    let big: Vec<u8> = (0..48_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    l.write(&a, "big.bin", &big);
    for i in 0..500 {
        l.write(&a, &format!("many/{i}.txt"), format!("{i}").as_bytes());
    }
    // The receiver dies mid-transfer (48 MB take more than the 150 ms here).
    b.mount();
    assert_ne!(frontier(&b), frontier(&a), "B had everything before it was killed");
    std::thread::sleep(Duration::from_millis(150));
    b.kill_daemon();
    b.mount();
    // Then the sender dies while B pulls.
    std::thread::sleep(Duration::from_millis(150));
    a.kill_daemon();
    a.mount();
    settled(&mut [&mut b, &mut a], &l);
    assert_bytes_eq("big.bin on B", &big, &read(&b.p("big.bin")));
}

/// (5) Gossip loses, repeats, reorders and delays messages: anti-entropy
/// repairs what it loses, and duplicates change nothing.
#[test]
fn s05_gossip_loses_messages() {
    let fast = ["--sync-interval", "1"];
    let mut a = node(&fast);
    let mut b = member(&a, &fast);
    let mut c = member(&a, &fast);
    for m in [&a, &b, &c] {
        ctl_ok(m, &["net", "gossip", "loss=50", "dup=20", "reorder=30", "delay=5"]);
    }
    // Per peer: what A delivers to C is worse still.
    ctl_ok(&c, &["net", "gossip", &id(&a), "loss=80", "delay=20"]);
    let mut l = Ledger::default();
    for i in 0..60 {
        l.write(&a, &format!("a{i}.txt"), format!("a {i}").as_bytes());
        if i % 3 == 0 {
            l.write(&b, &format!("b{i}.txt"), format!("b {i}").as_bytes());
        }
    }
    converged(&[&a, &b, &c]);
    for m in [&a, &b, &c] {
        ctl_ok(m, &["net", "heal"]);
    }
    settled(&mut [&mut c, &mut a, &mut b], &l);
}

/// (6) Split brain on one file: both sides edit it several times while cut
/// off; after the heal the last edit of each side is shown, one at the path
/// and one as a conflict copy, the same on both.
#[test]
fn s06_split_brain_on_one_file() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    let mut l = Ledger::default();
    l.write(&a, "notes.md", b"base");
    converged(&[&a, &b]);
    split(&[&a], &[&b], true);
    for i in 0..3 {
        write(&a.p("notes.md"), format!("A edit {i}").as_bytes());
        write(&b.p("notes.md"), format!("B edit {i}").as_bytes());
    }
    l.0.clear();
    l.write_concurrent(&a, "notes.md", b"A's last edit");
    l.write_concurrent(&b, "notes.md", b"B's last edit");
    split(&[&a], &[&b], false);
    settled(&mut [&mut b, &mut a], &l);
    assert_eq!(versions_at(&a, "notes.md").len(), 2);
}

/// (7) Five nodes write one file at the same moment; then again while each
/// is cut off from all the others. Every version is kept: in the file's
/// history always, and shown (file or conflict copy) when they were
/// concurrent.
#[test]
fn s07_five_nodes_write_one_file_at_once() {
    let a = node(&[]);
    let mut nodes = vec![a];
    for _ in 0..4 {
        let m = member(&nodes[0], &[]);
        nodes.push(m);
    }
    let at_once = |nodes: &[Mount], round: &str| {
        let go = Arc::new(Barrier::new(nodes.len()));
        std::thread::scope(|s| {
            for (i, m) in nodes.iter().enumerate() {
                let go = go.clone();
                s.spawn(move || {
                    go.wait();
                    write(&m.p("one.txt"), content(round, i).as_bytes());
                });
            }
        });
    };
    at_once(&nodes, "together");
    converged(&nodes.iter().collect::<Vec<_>>());
    // Whatever each writer saw first, its write is a version in the history
    // of one.txt or of a conflict copy of it (lengths tell them apart).
    let sizes = history_sizes(&nodes[3], "one.txt");
    for i in 0..5 {
        let len = content("together", i).len() as u64;
        assert!(
            sizes.contains(&len),
            "writer {i}'s version is not in the history: {sizes:?}"
        );
    }
    // Start the next round from one file.
    for n in names(&nodes[0].dir) {
        if n.to_string_lossy().starts_with("one.conflict-") {
            fs::remove_file(nodes[0].dir.join(n)).unwrap();
        }
    }
    converged(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(versions_at(&nodes[1], "one.txt").len(), 1);

    let refs: Vec<&Mount> = nodes.iter().collect();
    for (i, m) in refs.iter().enumerate() {
        split(&[m], &refs[i + 1..], true);
    }
    at_once(&nodes, "apart");
    for (i, m) in refs.iter().enumerate() {
        split(&[m], &refs[i + 1..], false);
    }
    let mut l = Ledger::default();
    for i in 0..5 {
        l.0.push(("one.txt".into(), content("apart", i).into_bytes()));
    }
    let mut muts: Vec<&mut Mount> = nodes.iter_mut().collect();
    settled(&mut muts, &l);
    assert_eq!(versions_at(&nodes[2], "one.txt").len(), 5);
}

/// What writer `i` writes in a round: a length of its own.
fn content(round: &str, i: usize) -> String {
    format!("{round} by writer {i}{}", "!".repeat(i))
}

/// The sizes of every version `mountctl log` lists for `path` and its
/// conflict copies.
fn history_sizes(m: &Mount, path: &str) -> BTreeSet<u64> {
    let stem = Path::new(path).file_stem().unwrap().to_string_lossy().into_owned();
    let mut sizes = BTreeSet::new();
    for n in names(&m.dir) {
        let n = n.to_string_lossy().into_owned();
        if n != path && !n.starts_with(&format!("{stem}.conflict-")) {
            continue;
        }
        let out = ctl(m, &["log", m.p(&n).to_str().unwrap(), "--json"]);
        assert!(out.ok(), "{}", out.describe());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        for x in v["versions"].as_array().into_iter().flatten() {
            sizes.extend(x["size"].as_u64());
        }
    }
    sizes
}

/// (8) A node 10,000 entries behind: it catches up by sync (gossip of new
/// entries far ahead of its chains is refused, not parked), with nothing
/// left over.
#[test]
fn s08_a_node_ten_thousand_entries_behind() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    b.unmount();
    let before = entries(&a);
    let mut l = Ledger::default();
    // One entry per durable write: fsync after each file.
    let mut n = 0;
    while entries(&a) < before + 10_000 {
        for _ in 0..500 {
            let p = a.p(&format!("f/{:05}.txt", n));
            fs::create_dir_all(a.p("f")).unwrap();
            let mut f = fs::File::create(&p).unwrap();
            std::io::Write::write_all(&mut f, format!("{n}").as_bytes()).unwrap();
            f.sync_all().unwrap();
            if n % 100 == 0 {
                l.0.push((format!("f/{:05}.txt", n), format!("{n}").into_bytes()));
            }
            n += 1;
        }
    }
    let t = Instant::now();
    b.mount();
    // A writes on while B catches up: its gossip reaches B far ahead.
    for i in 0..20 {
        l.write(&a, &format!("during/{i}.txt"), b"while B catches up");
    }
    converged(&[&a, &b]);
    eprintln!("B caught up on {} entries in {:?}", entries(&a) - before, t.elapsed());
    let orphans = status_mount(&b.home, &b.dir).unwrap()["orphans"].as_u64().unwrap();
    assert_eq!(orphans, 0, "orphans left on B");
    settled(&mut [&mut b, &mut a], &l);
}

fn entries(m: &Mount) -> u64 {
    status_mount(&m.home, &m.dir).unwrap()["entries"].as_u64().unwrap()
}

/// (9) A deletes a file and a folder while B, cut off, edits them: the edits
/// win (nothing anyone wrote is lost), the same on both.
#[test]
fn s09_a_delete_during_a_partition_with_a_concurrent_edit() {
    let mut a = node(&[]);
    let mut b = member(&a, &[]);
    let mut l = Ledger::default();
    l.write(&a, "doc.txt", b"first");
    l.write(&a, "dir/inner.txt", b"first");
    write(&a.p("gone.txt"), b"deleted, not edited");
    converged(&[&a, &b]);
    split(&[&a], &[&b], true);
    fs::remove_file(a.p("doc.txt")).unwrap();
    fs::remove_file(a.p("dir/inner.txt")).unwrap();
    fs::remove_dir(a.p("dir")).unwrap();
    fs::remove_file(a.p("gone.txt")).unwrap();
    l.write(&b, "doc.txt", b"edited while A deleted it");
    l.write(&b, "dir/inner.txt", b"edited inside the deleted folder");
    split(&[&a], &[&b], false);
    settled(&mut [&mut a, &mut b], &l);
    assert!(!b.p("gone.txt").exists(), "a delete nobody contested is kept");
}

/// (10) Clocks: a node 5 minutes ahead (within the drift bound) is ordered
/// right: a later edit elsewhere wins over its earlier one. A node an hour
/// ahead (beyond the bound) is refused, and both sides are told.
#[test]
fn s10_a_clock_ahead_within_and_beyond_the_bound() {
    let mut a = node(&[]);
    let t = invite(&a, &[]);
    let mut b = Mount::new_with_env(&["join", &t], &[FAULTS, ("LATTICE_TEST_CLOCK_OFFSET_MS", "300000")]);
    let mut l = Ledger::default();
    l.write(&b, "clock.txt", b"written first, by the fast clock");
    eventually("A sees B's write", || {
        fs::read(a.p("clock.txt")).is_ok_and(|d| d.starts_with(b"written"))
    });
    l.write(&a, "clock.txt", b"written second, by the right clock");
    settled(&mut [&mut b, &mut a], &l);
    assert_eq!(read(&b.p("clock.txt")), b"written second, by the right clock");
    assert_eq!(
        versions_at(&b, "clock.txt").len(),
        1,
        "no conflict: one wrote after the other"
    );

    let t = invite(&a, &[]);
    let c = Mount::new_with_env(&["join", &t], &[FAULTS, ("LATTICE_TEST_CLOCK_OFFSET_MS", "3600000")]);
    fs::write(c.p("from-the-future.txt"), b"x").unwrap();
    eventually("C's status says its clock is off", || {
        status_mount(&c.home, &c.dir).unwrap()["clock"]
            .as_str()
            .is_some_and(|w| w.contains("3600 s ahead") || w.contains("3599 s ahead"))
    });
    assert!(ctl(&c, &["status"]).stdout.contains("CLOCK"));
    eventually("A's status says C's clock is off", || {
        status_mount(&a.home, &a.dir).unwrap()["clock"].is_string()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !a.p("from-the-future.txt").exists(),
        "an entry from an hour ahead was accepted"
    );
    let log = fs::read_to_string(a.home.join("shares/default/daemon.log")).unwrap();
    let said = log.matches("refused an entry").count();
    assert!(
        (1..=3).contains(&said),
        "A's log says it refused C's entries {said} times:\n{log}"
    );
}

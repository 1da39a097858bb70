//! A change from a peer costs the nodes it changes, not the size of the share:
//! the same remote changes are applied to a share of 1,000 files and of
//! 100,000 files, and the work the view does (nodes visited while settling,
//! counted by the view) must be the same small number for both. No timing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fs::model::{attr_op, data_op, loc_op};
use fs::node::{Attr, Kind, Loc, NodeId};
use store::{Config, Identity, Location, Manifest, Op, Store};

fn file_ops(id: NodeId, parent: NodeId, name: &str, kind: Kind, version: u64) -> Vec<Op> {
    let loc = Loc {
        parent: parent.0.to_vec(),
        name: name.as_bytes().to_vec(),
        deleted: false,
        seen_data: vec![],
        ctime_ns: 0,
    };
    let attr = Attr {
        kind: kind as u32,
        mode: 0o644,
        uid: 0,
        gid: 0,
        target: vec![],
        rdev: 0,
        ctime_ns: 0,
    };
    vec![
        loc_op(id, &loc),
        attr_op(id, &attr),
        data_op(id, &Manifest::default(), 1, version),
    ]
}

fn node(i: u64) -> NodeId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[8] = 1;
    NodeId(b)
}

/// A share of `files` files in directories of 1,000; returns (A's store, dir ids).
fn share(files: u64) -> (Arc<Store>, Vec<NodeId>) {
    let a = Store::create_share(Location::Memory, Identity::generate(), Config::default(), vec![]).unwrap();
    let dirs: Vec<NodeId> = (0..files.div_ceil(1000)).map(|d| node(10_000_000 + d)).collect();
    let mut batches: Vec<Vec<Op>> = vec![
        dirs.iter()
            .enumerate()
            .flat_map(|(i, d)| file_ops(*d, NodeId::ROOT, &format!("dir{i}"), Kind::Dir, 1))
            .collect(),
    ];
    for chunk in (0..files).collect::<Vec<_>>().chunks(1000) {
        batches.push(
            chunk
                .iter()
                .flat_map(|i| {
                    file_ops(
                        node(*i),
                        dirs[(*i / 1000) as usize],
                        &format!("f{i}"),
                        Kind::File,
                        *i + 7,
                    )
                })
                .collect(),
        );
    }
    a.write_batches(batches, false).unwrap();
    (Arc::new(a), dirs)
}

/// A peer's entry, ingested by `a`.
fn from_peer(a: &Store, peer: &Store, ops: Vec<Op>) {
    peer.write_batches(vec![ops], true).unwrap();
    let theirs: BTreeMap<_, _> = a.frontier().unwrap().into_iter().map(|(k, (s, _))| (k, s)).collect();
    let entries = peer.entries_after(&theirs, usize::MAX).unwrap();
    for o in a.ingest(&entries).unwrap() {
        assert!(!matches!(o, store::Outcome::Refused(_)), "{o:?}");
    }
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(60), "not within 60 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The nodes visited to apply each of four remote changes.
fn visits_per_change(files: u64) -> Vec<u64> {
    let (a, dirs) = share(files);
    let peer =
        Store::create_for_share(Location::Memory, Identity::generate(), a.share_id(), Config::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_fs, handle) = fs::open(a.clone(), dir.path()).unwrap();
    let view = handle.view();
    assert!(view.lookup(&format!("/dir0/f{}", files.min(1000) - 1)).is_some());
    let mut out = Vec::new();
    let mut measure = |change: Vec<Op>, done: &dyn Fn(&fs::FsView) -> bool| {
        let before = view.stats().1;
        from_peer(&a, &peer, change);
        wait("the change is shown", || done(&view));
        out.push(view.stats().1 - before);
    };
    let last = dirs.len() - 1;
    // A new file.
    let new = node(99_000_000);
    measure(file_ops(new, dirs[last], "new.txt", Kind::File, 5), &|v| {
        v.lookup(&format!("/dir{last}/new.txt")).is_some()
    });
    // A rename into another directory.
    let loc = Loc {
        parent: dirs[0].0.to_vec(),
        name: b"moved.txt".to_vec(),
        deleted: false,
        seen_data: vec![],
        ctime_ns: 0,
    };
    measure(vec![loc_op(node(3), &loc)], &|v| v.lookup("/dir0/moved.txt").is_some());
    // A delete.
    let loc = Loc {
        parent: dirs[0].0.to_vec(),
        name: b"f5".to_vec(),
        deleted: true,
        seen_data: vec![5 + 7],
        ctime_ns: 0,
    };
    measure(vec![loc_op(node(5), &loc)], &|v| v.lookup("/dir0/f5").is_none());
    // A concurrent edit: a conflict copy appears beside the file.
    measure(vec![data_op(node(6), &Manifest::default(), 2, 424242)], &|v| {
        !v.conflicts().is_empty()
    });
    out
}

#[test]
fn a_remote_change_costs_the_same_at_1000_and_100000_files() {
    let small = visits_per_change(1_000);
    let large = visits_per_change(100_000);
    eprintln!("nodes visited per remote change: 1,000 files {small:?}; 100,000 files {large:?}");
    // The visits depend a little on where random node ids fall (11 or 16 for
    // the same change): what must not happen is growth with the share.
    assert!(
        small.iter().zip(&large).all(|(s, l)| *l <= 2 * *s),
        "the work grew with the share: {small:?} -> {large:?}"
    );
    assert!(large.iter().all(|v| *v < 40), "a single change visited {large:?} nodes");
}

//! Heads, winners, merges, tombstones, batches, scans and watches.

mod common;

use std::collections::BTreeMap;

use common::*;
use store::{Op, Outcome};

#[test]
fn concurrent_writes_leave_two_heads_and_a_merge_joins_them() {
    let a = mem_owner();
    let b = mem_peer(&a);
    sync(&a, &b);
    a.write(vec![Op::put("f", "from a")]).unwrap();
    // A later millisecond, so "the later HLC wins" decides, not the author tie-break.
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.write(vec![Op::put("f", "from b")]).unwrap();
    sync(&a, &b);
    sync(&b, &a);
    let ha = a.heads(b"f").unwrap();
    assert_eq!(ha.len(), 2);
    assert_eq!(ha, b.heads(b"f").unwrap());
    // Both pick the same winner: the later HLC (b wrote second).
    assert_eq!(a.get(b"f").unwrap().as_deref(), Some(&b"from b"[..]));
    assert_eq!(b.get(b"f").unwrap().as_deref(), Some(&b"from b"[..]));
    assert_eq!(a.multi_headed(b"").unwrap().len(), 1);
    // A write that saw both heads merges them.
    a.write(vec![Op::put("f", "merged")]).unwrap();
    sync(&a, &b);
    assert_eq!(b.heads(b"f").unwrap().len(), 1);
    assert_eq!(b.get(b"f").unwrap().as_deref(), Some(&b"merged"[..]));
}

#[test]
fn delete_leaves_a_tombstone_head() {
    let a = mem_owner();
    a.write(vec![Op::put("k", "v")]).unwrap();
    a.write(vec![Op::delete("k")]).unwrap();
    let h = a.heads(b"k").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].value, None);
    assert_eq!(a.get(b"k").unwrap(), None);
    assert!(a.scan(b"k").unwrap().is_empty());
}

#[test]
fn a_batch_is_one_entry_applied_whole() {
    let a = mem_owner();
    let b = mem_peer(&a);
    let ops: Vec<Op> = (0..100)
        .map(|i| Op::put(format!("dir/{i:03}"), format!("{i}")))
        .collect();
    a.write(ops).unwrap();
    let mut entries = all_entries(&a);
    assert_eq!(entries.len(), 2, "genesis + one entry");
    let last = entries.pop().unwrap();
    assert!(matches!(
        b.ingest(&[entries.pop().unwrap(), last]).unwrap()[1],
        Outcome::Applied { .. }
    ));
    let listed = b.scan(b"dir/").unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[7], (b"dir/007".to_vec(), b"7".to_vec()));
}

#[test]
fn scan_is_ordered_and_bounded_by_prefix() {
    let a = mem_owner();
    a.write(vec![
        Op::put("b/2", "x"),
        Op::put("b/1", "y"),
        Op::put("c", "z"),
        Op::put("a", "w"),
    ])
    .unwrap();
    let keys: Vec<_> = a.scan(b"b/").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"b/1".to_vec(), b"b/2".to_vec()]);
}

#[test]
fn watch_reports_local_and_remote_changes_under_a_prefix() {
    let a = mem_owner();
    let b = mem_peer(&a);
    let mut w = b.watch(b"dir/");
    b.write(vec![Op::put("dir/x", "1"), Op::put("other", "2")]).unwrap();
    let c = w.try_recv().unwrap();
    assert_eq!((c.key.as_slice(), c.local), (&b"dir/x"[..], true));
    assert!(w.try_recv().is_err(), "keys outside the prefix are not reported");
    a.write(vec![Op::put("dir/y", "3")]).unwrap();
    sync(&a, &b);
    let c = w.try_recv().unwrap();
    assert_eq!((c.key.as_slice(), c.local), (&b"dir/y"[..], false));
}

#[test]
fn entries_after_sends_only_what_is_missing_in_chain_order() {
    let a = mem_owner();
    let b = mem_peer(&a);
    for i in 0..10 {
        a.write(vec![Op::put("k", format!("{i}"))]).unwrap();
        b.write(vec![Op::put("j", format!("{i}"))]).unwrap();
    }
    sync(&b, &a);
    let theirs: BTreeMap<_, _> = [(a.author(), 4u64), (b.author(), 10)].into();
    let rest = a.entries_after(&theirs, usize::MAX).unwrap();
    assert_eq!(rest.len(), 7, "a's seqs 5..=11 (genesis is seq 1)");
    let seqs: Vec<u64> = rest.iter().map(|e| store::Entry::decode(e).unwrap().seq).collect();
    assert_eq!(seqs, (5..=11).collect::<Vec<_>>());
    assert_eq!(a.entries_after(&theirs, 3).unwrap().len(), 3, "bounded batches");
    // Batches resume where the last one stopped.
    let c = mem_peer(&a);
    loop {
        let f: BTreeMap<_, _> = c.frontier().unwrap().into_iter().map(|(k, (s, _))| (k, s)).collect();
        let batch = a.entries_after(&f, 4).unwrap();
        if batch.is_empty() {
            break;
        }
        for o in c.ingest(&batch).unwrap() {
            assert!(matches!(o, Outcome::Applied { .. }), "{o:?}");
        }
    }
    assert_eq!(c.frontier().unwrap(), a.frontier().unwrap());
}

#[test]
fn local_hlc_is_monotonic_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.redb");
    let id = store::Identity::generate();
    let a = store::Store::create_share(store::Location::File(&p), id.clone(), Default::default(), vec![]).unwrap();
    a.write(vec![Op::put("k", "1")]).unwrap();
    let before = a.heads(b"k").unwrap()[0].hlc;
    drop(a);
    let a = store::Store::open(&p, id, Default::default()).unwrap();
    a.write(vec![Op::put("k", "2")]).unwrap();
    assert!(a.heads(b"k").unwrap()[0].hlc > before);
    assert_eq!(a.verify_all().unwrap(), 3);
}

#[test]
fn a_key_written_twice_in_one_batch_keeps_the_last_op() {
    let a = mem_owner();
    a.write(vec![Op::put("k", "1"), Op::delete("k"), Op::put("k", "3")])
        .unwrap();
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"3"[..]));
    let e = store::Entry::decode(all_entries(&a).last().unwrap()).unwrap();
    assert_eq!(e.ops.len(), 1);
}

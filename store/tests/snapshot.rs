//! A node bootstrapped from a snapshot holds the sponsor's state (heads,
//! conflicts, deletes, frontier) without its history, and syncs on from
//! there both ways.

mod common;

use std::collections::BTreeMap;

use store::{Op, Outcome};

fn take(from: &store::Store, to: &store::Store) {
    let mut theirs: BTreeMap<_, _> = to.frontier().unwrap().into_iter().map(|(a, (s, _))| (a, s)).collect();
    loop {
        let batch = from.entries_after(&theirs, 100).unwrap();
        if batch.is_empty() {
            return;
        }
        for o in to.ingest(&batch).unwrap() {
            assert!(!matches!(o, Outcome::Refused(_)), "{o:?}");
        }
        theirs = to.frontier().unwrap().into_iter().map(|(a, (s, _))| (a, s)).collect();
    }
}

#[test]
fn a_snapshot_is_the_state_without_the_history() {
    let a = common::mem_owner();
    let b = common::mem_peer(&a);
    common::sync(&a, &b);
    for i in 0..40u32 {
        a.write(vec![Op::put(format!("k{}", i % 6), format!("a{i}"))]).unwrap();
        if i % 3 == 0 {
            b.write(vec![Op::put(format!("k{}", i % 4), format!("b{i}")), Op::delete("k5")])
                .unwrap();
        }
        if i % 10 == 0 {
            common::sync(&b, &a);
        }
    }
    common::sync(&b, &a);
    let all = common::all_entries(&a).len();
    assert!(
        a.scan_heads(b"").unwrap().iter().any(|(_, hs)| hs.len() > 1),
        "a conflict"
    );

    let snap = a.snapshot().unwrap();
    assert!(snap.entries.len() < all / 2, "{} of {all} entries", snap.entries.len());
    let c = common::mem_peer(&a);
    c.install_snapshot(&snap).unwrap();
    assert_eq!(c.scan_heads(b"").unwrap(), a.scan_heads(b"").unwrap());
    assert_eq!(c.frontier().unwrap(), a.frontier().unwrap());
    assert_eq!(c.get(b"k1").unwrap(), a.get(b"k1").unwrap());
    assert!(c.verify_all().is_ok());
    // Once only: a store with entries takes no snapshot.
    assert!(c.install_snapshot(&snap).is_err());

    // On from there, both ways.
    a.write(vec![Op::put("k1", "after")]).unwrap();
    take(&a, &c);
    assert_eq!(c.get(b"k1").unwrap().as_deref(), Some(&b"after"[..]));
    c.write(vec![Op::put("k2", "from c"), Op::put("new", "c")]).unwrap();
    take(&c, &a);
    take(&c, &b);
    assert_eq!(a.scan_heads(b"").unwrap(), c.scan_heads(b"").unwrap());
    // A peer behind c's floors gets nothing of those chains from c (it
    // would arrive with a gap), only c's own.
    let fresh = common::mem_peer(&a);
    let from_c = c.entries_after(&BTreeMap::new(), 1000).unwrap();
    assert!(
        from_c
            .iter()
            .all(|e| store::Entry::decode(e).unwrap().author == c.author())
    );
    drop(fresh);

    // A snapshot of a snapshot.
    let d = common::mem_peer(&a);
    d.install_snapshot(&c.snapshot().unwrap()).unwrap();
    assert_eq!(d.scan_heads(b"").unwrap(), a.scan_heads(b"").unwrap());

    // A forged entry in a snapshot is refused, and nothing is installed.
    let mut bad = a.snapshot().unwrap();
    let last = bad.entries.last_mut().unwrap();
    let n = last.len();
    last[n - 1] ^= 1;
    let e = common::mem_peer(&a);
    assert!(e.install_snapshot(&bad).is_err());
    assert!(e.frontier().unwrap().is_empty());
}

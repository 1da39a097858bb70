//! Indexing an entry costs O(ops + parents) table operations, never ops x
//! parents, and what it keeps for parents that have not arrived goes when they
//! do. Counted in table operations (`Store::index_work`), not timed.

mod common;

use common::*;
use store::entry::Draft;
use store::{Entry, EntryId, Identity, Op};

/// Work to index an entry that rewrites `n` keys, each written by its own
/// earlier entry (so it names `n` parents).
fn rewrite_cost(n: usize) -> u64 {
    let a = mem_owner();
    let batches: Vec<Vec<Op>> = (0..n).map(|i| vec![Op::put(format!("k{i}"), "1")]).collect();
    a.write_batches(batches, true).unwrap();
    let before = a.index_work();
    let ops: Vec<Op> = (0..n).map(|i| Op::put(format!("k{i}"), "2")).collect();
    a.write(ops).unwrap();
    for i in [0, n / 2, n - 1] {
        let h = a.heads(format!("k{i}").as_bytes()).unwrap();
        assert_eq!(h.len(), 1, "the rewrite supersedes the old head");
        assert_eq!(h[0].value.as_deref(), Some(&b"2"[..]));
    }
    a.index_work() - before
}

/// Work to index a peer's entry of `n` ops that names `n` parents not here.
fn absent_parents_cost(n: usize) -> (u64, u64) {
    let a = mem_owner();
    let peer = Identity::generate();
    let parents: Vec<EntryId> = (0..n)
        .map(|i| EntryId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let e = Entry::sign(
        &peer,
        Draft {
            share: Some(a.share_id()),
            seq: 1,
            prev: None,
            hlc: store::Hlc::new(store::hlc::wall_ms(), 0),
            parents,
            ops: (0..n).map(|i| Op::put(format!("k{i}"), "x")).collect(),
        },
    )
    .unwrap();
    let before = a.index_work();
    a.ingest(&[e.bytes.clone()]).unwrap();
    (a.index_work() - before, a.awaited_count().unwrap())
}

#[test]
fn index_cost_is_linear_in_ops_and_parents() {
    let (small, large) = (rewrite_cost(1_000), rewrite_cost(10_000));
    eprintln!("rewrite of n keys naming n parents: {small} ops at 1,000, {large} at 10,000");
    assert!(
        large <= small * 12,
        "10x the keys cost {}x the work",
        large / small.max(1)
    );
    let ((small, rows_s), (large, rows_l)) = (absent_parents_cost(1_000), absent_parents_cost(10_000));
    eprintln!("n ops naming n absent parents: {small} ops at 1,000, {large} at 10,000");
    assert!(
        large <= small * 12,
        "10x the parents cost {}x the work",
        large / small.max(1)
    );
    assert_eq!(
        (rows_s, rows_l),
        (1_000, 10_000),
        "one row per absent parent, not per key and parent"
    );
}

#[test]
fn rows_for_an_absent_parent_go_when_it_arrives_and_heads_come_out_the_same() {
    let a = mem_owner();
    let b = mem_peer(&a);
    let c = mem_peer(&a);
    sync(&a, &b);
    sync(&a, &c);
    a.write(vec![Op::put("x", "from a"), Op::put("y", "from a")]).unwrap();
    sync(&a, &b);
    // B overwrites x having seen A's write; C gets B's entry before A's.
    b.write(vec![Op::put("x", "from b")]).unwrap();
    let b_entries = chain_of(&b, b.author());
    let a_entries = chain_of(&a, a.author());
    c.ingest(&b_entries).unwrap();
    assert!(
        c.awaited_count().unwrap() > 0,
        "C remembers that B named an entry it lacks"
    );
    c.ingest(&a_entries).unwrap();
    assert_eq!(c.awaited_count().unwrap(), 0, "the rows go once the parent arrives");
    for k in ["x", "y"] {
        assert_eq!(
            c.heads(k.as_bytes()).unwrap(),
            b.heads(k.as_bytes()).unwrap(),
            "heads of {k}"
        );
    }
    assert_eq!(c.get(b"x").unwrap().as_deref(), Some(&b"from b"[..]));
}

//! The incremental view equals the specification (`tree::build`) after every
//! change, whatever the changes: random place heads (moves, deletes, cycles,
//! unknown parents, files as parents, name clashes, names that collide with
//! clash and copy names), kinds appearing late, content heads that conflict or
//! are unseen by a delete.

use proptest::prelude::*;
use store::{AuthorId, EntryId, Hlc};

use fs::node::{Attr, Loc, NodeId};
use fs::tree::{self, DataHead, LocHead};
use fs::view::View;

const NODES: u8 = 8;

fn id(n: u8) -> NodeId {
    if n == 0 { NodeId::ROOT } else { NodeId([n; 16]) }
}
fn author(n: u8) -> AuthorId {
    AuthorId([n; 32])
}

#[derive(Clone, Debug)]
enum Change {
    Locs(u8, Vec<(u8, u8, bool, Vec<u8>, u64, u8, u8)>),
    Attr(u8, Option<u8>),
    Data(u8, Vec<(u8, u64, u8, u8)>),
    Settle,
}

/// Names from a tiny set, so that clashes are common; some are another node's
/// clash name or a copy's name.
fn name(n: u8) -> Vec<u8> {
    match n % 7 {
        0 => b"a".to_vec(),
        1 => b"b.txt".to_vec(),
        2 => b"a.txt".to_vec(),
        3 => tree::clash_name(b"a", &author(1 + n % 3), id(1 + n % NODES)),
        4 => tree::conflict_name(
            b"b.txt",
            &format!("{}-{}", author(1 + n % 3).short(), EntryId([n % 5; 32]).short()),
        ),
        5 => b"..".to_vec(),
        _ => b"c".to_vec(),
    }
}

fn change() -> impl Strategy<Value = Change> {
    let loc = (
        0..=NODES,
        0u8..14,
        any::<bool>(),
        prop::collection::vec(1u8..6, 0..3),
        1u64..12,
        1u8..4,
        0u8..5,
    );
    prop_oneof![
        4 => (1..=NODES, prop::collection::vec(loc, 0..3)).prop_map(|(n, l)| Change::Locs(n, l)),
        2 => (1..=NODES, prop::option::weighted(0.9, 1u8..4)).prop_map(|(n, k)| Change::Attr(n, k)),
        2 => (1..=NODES, prop::collection::vec((1u8..6, 1u64..12, 1u8..4, 0u8..5), 0..3)).prop_map(|(n, d)| Change::Data(n, d)),
        2 => Just(Change::Settle),
    ]
}

fn apply(v: &mut View, c: &Change) {
    match c {
        Change::Locs(n, heads) => {
            let locs = heads
                .iter()
                .map(|(p, nm, del, seen, hlc, a, e)| LocHead {
                    loc: Loc {
                        parent: id(*p).0.to_vec(),
                        name: name(*nm),
                        deleted: *del,
                        seen_data: seen.iter().map(|s| *s as u64).collect(),
                        ctime_ns: 0,
                    },
                    hlc: Hlc::new(*hlc, 0),
                    author: author(*a),
                    entry: EntryId([*e; 32]),
                })
                .collect();
            v.set_locs(id(*n), locs);
        }
        Change::Attr(n, k) => v.set_attr(
            id(*n),
            k.map(|k| Attr {
                kind: k as u32,
                mode: 0o644,
                uid: 0,
                gid: 0,
                target: vec![],
                rdev: 0,
                ctime_ns: 0,
            }),
        ),
        Change::Data(n, heads) => {
            let mut data: Vec<DataHead> = Vec::new();
            for (ver, hlc, a, e) in heads {
                let h = DataHead {
                    version: *ver as u64,
                    hlc: Hlc::new(*hlc, 0),
                    author: author(*a),
                    entry: EntryId([*e + 10 * *ver; 32]),
                    mtime_ns: 0,
                    size: 0,
                    ctime_ns: 0,
                    atime_ns: 0,
                };
                if !data.iter().any(|d| d.entry == h.entry) {
                    data.push(h);
                }
            }
            v.set_data(id(*n), data);
        }
        Change::Settle => {}
    }
}

fn check(v: &mut View, step: usize) -> Result<(), TestCaseError> {
    v.settle();
    let want = tree::build(&v.inputs());
    let got = v.tree();
    prop_assert_eq!(got.walk(), want.walk(), "step {}: shown paths differ", step);
    prop_assert_eq!(got, want, "step {}: trees differ", step);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn view_equals_build_after_every_settle(changes in prop::collection::vec(change(), 1..40)) {
        let mut v = View::new();
        for (i, c) in changes.iter().enumerate() {
            apply(&mut v, c);
            if matches!(c, Change::Settle) {
                check(&mut v, i)?;
            }
        }
        check(&mut v, changes.len())?;
    }
}

#[test]
fn entry_numbers_do_not_pile_up_as_heads_are_superseded() {
    let mut v = View::new();
    v.set_attr(
        id(1),
        Some(Attr {
            kind: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            target: vec![],
            rdev: 0,
            ctime_ns: 0,
        }),
    );
    for i in 0..20_000u32 {
        let mut e = [0u8; 32];
        e[..4].copy_from_slice(&i.to_le_bytes());
        v.set_locs(
            id(1),
            vec![LocHead {
                loc: Loc {
                    parent: NodeId::ROOT.0.to_vec(),
                    name: format!("f{}", i % 7).into_bytes(),
                    deleted: false,
                    seen_data: vec![],
                    ctime_ns: 0,
                },
                hlc: Hlc::new(i as u64 + 1, 0),
                author: author(1),
                entry: EntryId(e),
            }],
        );
        v.settle();
    }
    assert!(
        v.numbered_entries() < 5_000,
        "{} entry ids kept for one node",
        v.numbered_entries()
    );
    assert_eq!(v.tree(), tree::build(&v.inputs()));
}

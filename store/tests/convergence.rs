//! The property the whole design rests on: stores that hold the same entries
//! hold the same state, whatever order (with duplicates and gaps) they arrived in.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use store::{Entry, Op, Outcome, Store};

const KEYS: [&str; 4] = ["a", "b", "dir/c", "dir/d"];

#[derive(Clone, Debug)]
enum Action {
    /// Author writes one entry touching some shared keys.
    Write {
        author: usize,
        keys: Vec<(usize, Option<u8>)>,
    },
    /// Author `to` ingests everything author `from` has (so later writes name its heads).
    Sync { from: usize, to: usize },
}

fn action(n: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..n, prop::collection::vec((0..KEYS.len(), prop::option::weighted(0.8, any::<u8>())), 1..4))
            .prop_map(|(author, keys)| Action::Write { author, keys }),
        1 => (0..n, 0..n).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

/// Heads of every key as sets of entry ids, and winners.
fn state(
    s: &Store,
) -> (
    BTreeMap<String, BTreeSet<store::EntryId>>,
    BTreeMap<String, Option<Vec<u8>>>,
) {
    let mut heads = BTreeMap::new();
    let mut winners = BTreeMap::new();
    for k in KEYS {
        heads.insert(
            k.to_string(),
            s.heads(k.as_bytes()).unwrap().into_iter().map(|h| h.entry).collect(),
        );
        winners.insert(k.to_string(), s.get(k.as_bytes()).unwrap());
    }
    (heads, winners)
}

/// `entries` shuffled by `seed`, with some repeated, cut into batches.
fn delivery(entries: &[Vec<u8>], seed: u64) -> Vec<Vec<Vec<u8>>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut all = entries.to_vec();
    let dups: Vec<_> = entries.iter().step_by(3).cloned().collect();
    all.extend(dups);
    all.shuffle(&mut rng);
    let mut batches = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let n = (rand::Rng::random_range(&mut rng, 1..=4)).min(rest.len());
        batches.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    batches
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_converges(
        n in 3usize..5,
        actions in prop::collection::vec(action(4), 1..40),
        seed1 in any::<u64>(),
        seed2 in any::<u64>(),
    ) {
        let owner = mem_owner();
        let mut nodes = vec![owner];
        for _ in 1..n {
            let p = mem_peer(&nodes[0]);
            nodes.push(p);
        }
        for act in actions {
            match act {
                Action::Write { author, keys } => {
                    let ops = keys.iter().map(|&(k, v)| match v {
                        Some(v) => Op::put(KEYS[k], vec![v]),
                        None => Op::delete(KEYS[k]),
                    }).collect();
                    nodes[author % n].write(ops).unwrap();
                }
                Action::Sync { from, to } => {
                    let (from, to) = (from % n, to % n);
                    if from != to {
                        sync(&nodes[from], &nodes[to]);
                    }
                }
            }
        }
        // Every entry anyone wrote.
        let mut everything = BTreeMap::new();
        for s in &nodes {
            for b in all_entries(s) {
                everything.insert(Entry::decode(&b).unwrap().id, b);
            }
        }
        let everything: Vec<_> = everything.into_values().collect();

        let x = mem_peer(&nodes[0]);
        let y = mem_peer(&nodes[0]);
        for (store, seed) in [(&x, seed1), (&y, seed2)] {
            for batch in delivery(&everything, seed) {
                for o in store.ingest(&batch).unwrap() {
                    prop_assert!(!matches!(o, Outcome::Refused(_)), "{:?}", o);
                }
            }
            prop_assert_eq!(store.orphan_count().unwrap(), 0, "every gap filled");
            prop_assert_eq!(store.verify_all().unwrap(), everything.len());
        }
        prop_assert_eq!(x.frontier().unwrap(), y.frontier().unwrap());
        let sx = state(&x);
        prop_assert_eq!(&sx, &state(&y));
        prop_assert_eq!(x.scan(b"").unwrap(), y.scan(b"").unwrap());

        // And a writer that has seen everything agrees too.
        let z = &nodes[0];
        for s in &nodes[1..] { sync(s, z); }
        prop_assert_eq!(&sx, &state(z));
    }
}

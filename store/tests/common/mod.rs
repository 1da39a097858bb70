#![allow(dead_code)]
//! Helpers shared by the store's integration tests.

use std::collections::BTreeMap;

use store::{AuthorId, Config, Identity, Location, Op, Store};

pub fn mem_owner() -> Store {
    Store::create_share(
        Location::Memory,
        Identity::generate(),
        Config::default(),
        vec![Op::put("peers/owner", "owner")],
    )
    .unwrap()
}

/// A fresh store of the same share, for another identity.
pub fn mem_peer(of: &Store) -> Store {
    mem_peer_with(of, Identity::generate())
}

pub fn mem_peer_with(of: &Store, id: Identity) -> Store {
    Store::create_for_share(Location::Memory, id, of.share_id(), Config::default()).unwrap()
}

/// Every entry `from` holds, in its log order.
pub fn all_entries(from: &Store) -> Vec<Vec<u8>> {
    from.entries_after(&BTreeMap::new(), usize::MAX).unwrap()
}

/// `to` ingests everything `from` has; panics on any refusal.
pub fn sync(from: &Store, to: &Store) {
    for o in to.ingest(&all_entries(from)).unwrap() {
        assert!(!matches!(o, store::Outcome::Refused(_)), "{o:?}");
    }
}

/// The entries one author wrote, in seq order, as held by `s`.
pub fn chain_of(s: &Store, a: AuthorId) -> Vec<Vec<u8>> {
    all_entries(s)
        .into_iter()
        .filter(|b| store::Entry::decode(b).unwrap().author == a)
        .collect()
}

/// `len` random bytes, the same for the same seed.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

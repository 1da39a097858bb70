//! Every decoder of bytes that come from peers or from disk, fed arbitrary
//! bytes: it returns an error, never panics, and a refused entry changes
//! nothing. Findings of the fuzz targets (`fuzz/`) are added here as cases.

use proptest::prelude::*;
use store::{Config, Entry, Identity, Location, Manifest, Op, Outcome, Role, Store};

fn owner() -> Store {
    Store::create_share(Location::Memory, Identity::generate(), Config::default(), vec![]).unwrap()
}

/// A share with a few entries, a replica holding all but the last, and
/// the last entry's bytes.
fn replica_missing_the_last() -> (Store, Vec<u8>) {
    let s = owner();
    s.write(vec![Op::put(b"k".to_vec(), b"v".to_vec())]).unwrap();
    let mut log: Vec<Vec<u8>> = s.log_since(0, 1000).unwrap().into_iter().map(|(_, e)| e).collect();
    let last = log.pop().unwrap();
    let t = Store::create_for_share(Location::Memory, Identity::generate(), s.share_id(), Config::default()).unwrap();
    let out = t.ingest(&log).unwrap();
    assert!(out.iter().all(|o| matches!(o, Outcome::Applied { .. })), "{out:?}");
    (t, last)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn entry_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Entry::decode(&bytes);
        let _ = Entry::decode_unverified(&bytes);
    }

    #[test]
    fn manifest_and_role_decode_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Manifest::decode(&bytes);
        let _ = Role::parse(&bytes);
    }

    #[test]
    fn ingesting_garbage_is_refused_and_changes_nothing(batch in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..8)) {
        let s = owner();
        let before = s.frontier().unwrap();
        let out = s.ingest(&batch).unwrap();
        prop_assert!(out.iter().all(|o| matches!(o, Outcome::Refused(_))), "{:?}", out);
        prop_assert_eq!(s.frontier().unwrap(), before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any change to any byte of a signed entry is refused, and the entry
    /// itself still applies afterwards.
    #[test]
    fn a_changed_byte_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (t, last) = replica_missing_the_last();
        let before = t.frontier().unwrap();
        let mut bad = last.clone();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        let out = t.ingest(&[bad]).unwrap();
        prop_assert!(matches!(out[0], Outcome::Refused(_)), "byte {} changed: {:?}", i, out[0]);
        prop_assert_eq!(t.frontier().unwrap(), before);
        let out = t.ingest(&[last]).unwrap();
        prop_assert!(matches!(out[0], Outcome::Applied { .. }), "{:?}", out[0]);
    }
}

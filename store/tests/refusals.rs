//! Every way an entry can be refused, and that a refusal changes nothing.

mod common;

use common::*;
use store::entry::{Draft, limits};
use store::{Config, Entry, Hlc, Identity, Location, Op, Outcome, Refusal, ShareId, Store};

fn draft(s: &Store, seq: u64, prev: Option<store::EntryId>, ops: Vec<Op>) -> Draft {
    Draft {
        share: Some(s.share_id()),
        seq,
        prev,
        hlc: Hlc::new(store::hlc::wall_ms(), 0),
        parents: vec![],
        ops,
    }
}

fn refused(s: &Store, bytes: Vec<u8>) -> Refusal {
    let before = s.frontier().unwrap();
    let out = s.ingest(&[bytes]).unwrap();
    assert_eq!(s.frontier().unwrap(), before, "a refusal must change nothing");
    match out.into_iter().next().unwrap() {
        Outcome::Refused(r) => r,
        o => panic!("expected a refusal, got {o:?}"),
    }
}

#[test]
fn bad_signature() {
    let a = mem_owner();
    let b = mem_peer(&a);
    b.write(vec![Op::put("k", "v")]).unwrap();
    let mut bytes = chain_of(&b, b.author()).remove(0);
    bytes[3] ^= 1; // inside the signature
    assert!(matches!(refused(&a, bytes), Refusal::BadSignature(x) if x == b.author()));
    assert_eq!(a.get(b"k").unwrap(), None);
}

#[test]
fn signature_by_someone_else() {
    let a = mem_owner();
    let mallory = Identity::generate();
    let e = Entry::sign(&mallory, draft(&a, 1, None, vec![Op::put("k", "v")])).unwrap();
    // Claim the entry is by the owner: swap the author field is impossible without
    // re-signing, so re-sign a body naming the owner with mallory's key instead.
    let mut forged = e.bytes.clone();
    let body = &mut forged[64..];
    let pos = body.windows(32).position(|w| w == mallory.author().0).unwrap();
    body[pos..pos + 32].copy_from_slice(&a.author().0);
    assert!(matches!(refused(&a, forged), Refusal::BadSignature(_)));
}

#[test]
fn wrong_share() {
    let a = mem_owner();
    let other = mem_owner();
    other.write(vec![Op::put("k", "v")]).unwrap();
    let bytes = chain_of(&other, other.author()).pop().unwrap();
    assert_eq!(refused(&a, bytes), Refusal::WrongShare);
    // Another share's genesis is refused too.
    let genesis = chain_of(&other, other.author()).remove(0);
    assert_eq!(refused(&a, genesis), Refusal::WrongShare);
    let _ = ShareId::default();
}

#[test]
fn seq_gap_is_orphaned_then_released() {
    let a = mem_owner();
    let b = mem_peer(&a);
    for i in 0..5 {
        b.write(vec![Op::put(format!("k{i}"), "v")]).unwrap();
    }
    let chain = chain_of(&b, b.author());
    let mut gaps = a.watch_gaps();
    // seq 4 and 5 first: both wait.
    let out = a.ingest(&[chain[3].clone(), chain[4].clone()]).unwrap();
    assert!(matches!(out[0], Outcome::Orphaned(g) if g.from == 1 && g.to == 3));
    assert!(matches!(out[1], Outcome::Orphaned(g) if g.from == 1 && g.to == 4));
    assert_eq!(gaps.try_recv().unwrap().to, 3);
    assert_eq!(a.orphan_count().unwrap(), 2);
    assert_eq!(a.get(b"k3").unwrap(), None);
    assert_eq!(a.gaps().unwrap().len(), 1);
    // The same orphan again is still an orphan, stored once.
    a.ingest(&[chain[3].clone()]).unwrap();
    assert_eq!(a.orphan_count().unwrap(), 2);
    // 1, 2 apply; 3 fills the gap and releases 4 and 5 in turn.
    a.ingest(&chain[..2]).unwrap();
    let out = a.ingest(&[chain[2].clone()]).unwrap();
    assert!(matches!(out[0], Outcome::Applied { released: 2, .. }), "{out:?}");
    assert_eq!(a.orphan_count().unwrap(), 0);
    assert_eq!(a.frontier().unwrap()[&b.author()].0, 5);
    assert_eq!(a.get(b"k4").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(a.gaps().unwrap().is_empty());
}

#[test]
fn orphans_survive_reopen_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let owner = Identity::generate();
    let a = Store::create_share(Location::File(&path), owner.clone(), Config::default(), vec![]).unwrap();
    let b = mem_peer(&a);
    b.write(vec![Op::put("x", "1")]).unwrap();
    b.write(vec![Op::put("x", "2")]).unwrap();
    let chain = chain_of(&b, b.author());
    a.ingest(&[chain[1].clone()]).unwrap();
    drop(a);
    let a = Store::open(&path, owner.clone(), Config::default()).unwrap();
    assert_eq!(a.orphan_count().unwrap(), 1, "orphans are persistent");
    a.ingest(&[chain[0].clone()]).unwrap();
    assert_eq!(a.get(b"x").unwrap().as_deref(), Some(&b"2"[..]));

    b.write(vec![Op::put("x", "3")]).unwrap();
    b.write(vec![Op::put("x", "4")]).unwrap();
    let chain = chain_of(&b, b.author());
    a.ingest(&[chain[3].clone()]).unwrap();
    assert_eq!(a.expire_orphans(store::hlc::wall_ms()).unwrap(), 0);
    let day = 24 * 3600 * 1000;
    assert_eq!(a.expire_orphans(store::hlc::wall_ms() + day + 1).unwrap(), 1);
    assert_eq!(a.orphan_count().unwrap(), 0);
}

#[test]
fn wrong_prev_hash() {
    let a = mem_owner();
    let b = Identity::generate();
    let e1 = Entry::sign(&b, draft(&a, 1, None, vec![Op::put("k", "1")])).unwrap();
    let wrong = Entry::sign(&b, draft(&a, 2, Some(store::EntryId([9; 32])), vec![Op::put("k", "2")])).unwrap();
    a.ingest(&[e1.bytes.clone()]).unwrap();
    assert!(matches!(refused(&a, wrong.bytes), Refusal::BadPrevHash { seq: 2, .. }));
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn duplicate_is_a_no_op_and_fork_is_refused() {
    let a = mem_owner();
    let b = Identity::generate();
    let e1 = Entry::sign(&b, draft(&a, 1, None, vec![Op::put("k", "1")])).unwrap();
    let fork = Entry::sign(&b, draft(&a, 1, None, vec![Op::put("k", "other")])).unwrap();
    a.ingest(&[e1.bytes.clone()]).unwrap();
    assert_eq!(a.ingest(&[e1.bytes.clone()]).unwrap(), vec![Outcome::Duplicate]);
    assert!(matches!(refused(&a, fork.bytes), Refusal::Fork { seq: 1, .. }));
    assert_eq!(a.get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn oversize() {
    let a = mem_owner();
    let big = vec![0u8; limits::MAX_ENTRY_BYTES + 1];
    assert!(matches!(refused(&a, big), Refusal::TooLarge { .. }));
    let b = Identity::generate();
    let key = vec![b'k'; limits::MAX_KEY_BYTES + 1];
    assert!(matches!(
        Entry::sign(&b, draft(&a, 1, None, vec![Op::put(key, "v")])),
        Err(Refusal::Malformed(_))
    ));
    let value = vec![0u8; limits::MAX_VALUE_BYTES + 1];
    assert!(matches!(
        Entry::sign(&b, draft(&a, 1, None, vec![Op::put("k", value)])),
        Err(Refusal::Malformed(_))
    ));
    let twice = vec![Op::put("k", "1"), Op::put("k", "2")];
    assert!(matches!(Entry::sign(&b, draft(&a, 1, None, twice)), Err(Refusal::Malformed(m)) if m.contains("twice")));
    let ops = (0..limits::MAX_OPS + 1).map(|i| Op::put(format!("{i}"), "")).collect();
    assert!(matches!(
        Entry::sign(&b, draft(&a, 1, None, ops)),
        Err(Refusal::Malformed(_))
    ));
    // A local write over the limit is an error, not a panic, and writes nothing.
    let f = a.frontier().unwrap();
    assert!(
        a.write(vec![Op::put(vec![b'k'; limits::MAX_KEY_BYTES + 1], "v")])
            .is_err()
    );
    assert_eq!(a.frontier().unwrap(), f);
}

#[test]
fn future_hlc_beyond_drift() {
    let a = mem_owner();
    let b = Identity::generate();
    let mut d = draft(&a, 1, None, vec![Op::put("k", "v")]);
    d.hlc = Hlc::new(store::hlc::wall_ms() + 11 * 60 * 1000, 0);
    let e = Entry::sign(&b, d).unwrap();
    match refused(&a, e.bytes) {
        Refusal::FromFuture {
            author,
            drift_ms,
            max_ms,
        } => {
            assert_eq!(author, b.author());
            assert!(drift_ms > 10 * 60 * 1000);
            assert_eq!(max_ms, 10 * 60 * 1000);
        }
        r => panic!("{r:?}"),
    }
    // Within the drift is fine, and the local clock moves past it.
    let mut d = draft(&a, 1, None, vec![Op::put("k", "v")]);
    d.hlc = Hlc::new(store::hlc::wall_ms() + 60 * 1000, 0);
    let e = Entry::sign(&b, d).unwrap();
    assert!(matches!(a.ingest(&[e.bytes]).unwrap()[0], Outcome::Applied { .. }));
    a.write(vec![Op::put("k", "mine")]).unwrap();
    assert_eq!(
        a.get(b"k").unwrap().as_deref(),
        Some(&b"mine"[..]),
        "a later local write wins"
    );
}

#[test]
fn garbage_never_panics() {
    let a = mem_owner();
    let mut rng = 0x1234_5678_u64;
    let mut batch = vec![vec![], vec![0; 64], vec![0xff; 65], vec![1; 1000]];
    for len in [10, 64, 65, 100, 500, 4096] {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            v.push(rng as u8);
        }
        batch.push(v);
    }
    let out = a.ingest(&batch).unwrap();
    assert!(out.iter().all(|o| matches!(o, Outcome::Refused(_))), "{out:?}");
    assert_eq!(a.frontier().unwrap().len(), 1);
}

#[test]
fn identity_file_errors_are_clear() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key");
    let id = Identity::create(&p).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(Identity::load(&p).unwrap().author(), id.author());
    assert!(matches!(Identity::create(&p), Err(store::Error::IdentityExists(_))));
    std::fs::write(&p, "not a key").unwrap();
    let err = Identity::load(&p).unwrap_err().to_string();
    assert!(err.contains("malformed") && err.contains("64 hex digits"), "{err}");
    let missing = Identity::load(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn an_entry_too_far_ahead_is_refused_not_parked() {
    let a = Store::create_share(
        Location::Memory,
        Identity::generate(),
        Config {
            max_orphan_gap: 3,
            ..Config::default()
        },
        vec![Op::put("peers/owner", "owner")],
    )
    .unwrap();
    let b = mem_peer(&a);
    for i in 0..6 {
        b.write(vec![Op::put(format!("k{i}"), "v")]).unwrap();
    }
    let chain = chain_of(&b, b.author());
    // seq 3 is within the bound (3 ahead of 0): parked.
    let out = a.ingest(&[chain[2].clone()]).unwrap();
    assert!(matches!(out[0], Outcome::Orphaned(_)), "{out:?}");
    // seq 5 is not: refused, and nothing is kept of it.
    let r = refused(&a, chain[4].clone());
    assert!(
        matches!(
            r,
            Refusal::TooFarAhead {
                seq: 5,
                last: 0,
                max: 3,
                ..
            }
        ),
        "{r}"
    );
    assert!(r.to_string().contains("not parked"));
    assert_eq!(a.orphan_count().unwrap(), 1);
    // In order, everything applies.
    for o in a.ingest(&chain).unwrap() {
        assert!(!matches!(o, Outcome::Refused(_)), "{o:?}");
    }
    assert_eq!(a.frontier().unwrap()[&b.author()].0, 6);
    assert_eq!(a.orphan_count().unwrap(), 0);
}

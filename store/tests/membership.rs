//! Membership enforced on ingest, content that must be present before an entry
//! applies, and the durable watermark that gates what leaves the machine.

mod common;

use std::collections::BTreeMap;

use prost::Message;
use store::membership::{Invite, invite_key, peer_key, secret_hash};
use store::{Config, Identity, Location, Op, Outcome, Refusal, Store};

fn enforcing_owner() -> Store {
    let me = Identity::generate();
    let cfg = Config {
        enforce_membership: true,
        ..Config::default()
    };
    let owner = Op::put(peer_key(&me.author()), "owner");
    Store::create_share(Location::Memory, me, cfg, vec![owner]).unwrap()
}

/// A store of `of`'s share for `id`, holding everything `of` has.
fn member_store(of: &Store, id: Identity) -> Store {
    let s = common::mem_peer_with(of, id);
    common::sync(of, &s);
    s
}

fn last_entry(s: &Store) -> Vec<u8> {
    common::all_entries(s).pop().unwrap()
}

fn outcome(s: &Store, bytes: Vec<u8>) -> Outcome {
    s.ingest(&[bytes]).unwrap().remove(0)
}

#[test]
fn roles_decide_whose_entries_apply() {
    let owner = enforcing_owner();
    let (w, r) = (Identity::generate(), Identity::generate());

    // A stranger is refused.
    let stranger = member_store(&owner, w.clone());
    stranger.write(vec![Op::put("x", "1")]).unwrap();
    assert_eq!(
        outcome(&owner, last_entry(&stranger)),
        Outcome::Refused(Refusal::NotAMember(w.author()))
    );

    // Once the owner admits w as a writer, the same entry applies.
    owner
        .write(vec![
            Op::put(peer_key(&w.author()), "writer"),
            Op::put(peer_key(&r.author()), "reader"),
        ])
        .unwrap();
    assert!(matches!(
        outcome(&owner, last_entry(&stranger)),
        Outcome::Applied { .. }
    ));
    assert_eq!(owner.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));

    // A reader's entries are refused.
    let reader = member_store(&owner, r.clone());
    reader.write(vec![Op::put("y", "no")]).unwrap();
    assert_eq!(
        outcome(&owner, last_entry(&reader)),
        Outcome::Refused(Refusal::ReadOnly(r.author()))
    );

    // Removing w cuts it off.
    owner.write(vec![Op::delete(peer_key(&w.author()))]).unwrap();
    stranger.write(vec![Op::put("x", "2")]).unwrap();
    assert_eq!(
        outcome(&owner, last_entry(&stranger)),
        Outcome::Refused(Refusal::NotAMember(w.author()))
    );
    assert_eq!(owner.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_writer_admits_only_with_a_matching_unexpired_invite() {
    let owner = enforcing_owner();
    let w = Identity::generate();
    owner.write(vec![Op::put(peer_key(&w.author()), "writer")]).unwrap();
    let writer = member_store(&owner, w.clone());
    let joiner = Identity::generate();

    // Without an invite: refused.
    writer
        .write(vec![Op::put(peer_key(&joiner.author()), "writer")])
        .unwrap();
    assert!(matches!(
        outcome(&owner, last_entry(&writer)),
        Outcome::Refused(Refusal::NotAllowed { .. })
    ));

    // The writer cannot mint an owner invite.
    let h = secret_hash(b"secret");
    let owner_invite = Invite {
        role: "owner".into(),
        expires_ms: u64::MAX,
        by: vec![],
    };
    let w2 = member_store(&owner, w.clone());
    w2.write(vec![Op::put(invite_key(&h), owner_invite.encode_to_vec())])
        .unwrap();
    assert!(matches!(
        outcome(&owner, last_entry(&w2)),
        Outcome::Refused(Refusal::NotAllowed { .. })
    ));

    // An owner's reader invite; the writer admits with it as a reader.
    let invite = Invite {
        role: "reader".into(),
        expires_ms: store::hlc::wall_ms() + 60_000,
        by: owner.author().0.to_vec(),
    };
    owner
        .write(vec![Op::put(invite_key(&h), invite.encode_to_vec())])
        .unwrap();
    let w3 = member_store(&owner, w.clone());
    w3.write(vec![
        Op::put(peer_key(&joiner.author()), "writer"),
        Op::delete(invite_key(&h)),
    ])
    .unwrap();
    assert!(
        matches!(
            outcome(&owner, last_entry(&w3)),
            Outcome::Refused(Refusal::NotAllowed { .. })
        ),
        "the invite is for a reader, not a writer"
    );
    let w4 = member_store(&owner, w.clone());
    w4.write(vec![
        Op::put(peer_key(&joiner.author()), "reader"),
        Op::delete(invite_key(&h)),
    ])
    .unwrap();
    assert!(matches!(outcome(&owner, last_entry(&w4)), Outcome::Applied { .. }));
    assert_eq!(
        owner.get(&peer_key(&joiner.author())).unwrap().as_deref(),
        Some(&b"reader"[..])
    );
    assert_eq!(owner.get(&invite_key(&h)).unwrap(), None, "an invite works once");

    // An expired invite admits nobody.
    let h2 = secret_hash(b"old");
    let expired = Invite {
        role: "writer".into(),
        expires_ms: 1,
        by: vec![],
    };
    owner
        .write(vec![Op::put(invite_key(&h2), expired.encode_to_vec())])
        .unwrap();
    let w5 = member_store(&owner, w);
    let late = Identity::generate();
    w5.write(vec![
        Op::put(peer_key(&late.author()), "writer"),
        Op::delete(invite_key(&h2)),
    ])
    .unwrap();
    assert!(matches!(
        outcome(&owner, last_entry(&w5)),
        Outcome::Refused(Refusal::NotAllowed { .. })
    ));
}

#[test]
fn an_entry_waits_for_its_content() {
    let a = common::mem_owner();
    let b = common::mem_peer(&a);
    let data = vec![5u8; 200_000];
    let m = a.put_content(&mut data.as_slice()).unwrap();
    a.write(vec![Op::put_with_refs("f", m.encode(), m.chunks())]).unwrap();
    let entries = common::all_entries(&a);
    assert_eq!(b.missing_refs(&entries).unwrap().len(), m.chunks().len());
    let out = b.ingest(&entries).unwrap();
    assert!(
        matches!(out[1], Outcome::Refused(Refusal::MissingContent(_))),
        "{out:?}"
    );
    for h in m.chunks() {
        b.put_chunk(h, &a.chunk(h).unwrap().unwrap()).unwrap();
    }
    assert!(b.missing_refs(&entries).unwrap().is_empty());
    assert!(matches!(b.ingest(&entries[1..]).unwrap()[0], Outcome::Applied { .. }));
    let got = store::Manifest::decode(&b.get(b"f").unwrap().unwrap()).unwrap();
    let mut buf = vec![0u8; data.len()];
    assert_eq!(b.read_content(&got, 0, &mut buf).unwrap(), data.len());
    assert_eq!(buf, data);
}

#[test]
fn only_durable_entries_leave() {
    let a = common::mem_owner();
    let durable = a.watch_durable();
    let before = *durable.borrow();
    a.write_batches(vec![vec![Op::put("k", "v")]], false).unwrap();
    let all = a.entries_after(&BTreeMap::new(), usize::MAX).unwrap();
    assert_eq!(all.len(), 1, "the unsynced entry is not offered to peers");
    assert!(a.log_since(0, 100).unwrap().len() == 1);
    a.sync().unwrap();
    assert!(*durable.borrow() > before);
    assert_eq!(a.entries_after(&BTreeMap::new(), usize::MAX).unwrap().len(), 2);
    assert_eq!(a.log_since(1, 100).unwrap().len(), 1);
}

#[test]
fn a_writer_cannot_change_a_members_role_and_admission_is_judged_at_its_own_time() {
    let owner = enforcing_owner();
    let w = Identity::generate();
    owner.write(vec![Op::put(peer_key(&w.author()), "writer")]).unwrap();

    // A reader invite consumed to demote the owner: refused.
    let h = secret_hash(b"s1");
    let invite = |role: &str, ttl: u64| Invite {
        role: role.into(),
        expires_ms: store::hlc::wall_ms() + ttl,
        by: vec![],
    };
    owner
        .write(vec![Op::put(invite_key(&h), invite("reader", 60_000).encode_to_vec())])
        .unwrap();
    let ws = member_store(&owner, w.clone());
    ws.write(vec![
        Op::put(peer_key(&owner.author()), "reader"),
        Op::delete(invite_key(&h)),
    ])
    .unwrap();
    assert!(matches!(
        outcome(&owner, last_entry(&ws)),
        Outcome::Refused(Refusal::NotAllowed { .. })
    ));

    // An admission made before the invite expired applies even when it
    // arrives after: every peer must decide the same, whenever it syncs.
    let h2 = secret_hash(b"s2");
    owner
        .write(vec![Op::put(invite_key(&h2), invite("writer", 300).encode_to_vec())])
        .unwrap();
    let ws = member_store(&owner, w);
    let joiner = Identity::generate();
    ws.write(vec![
        Op::put(peer_key(&joiner.author()), "writer"),
        Op::delete(invite_key(&h2)),
    ])
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(matches!(outcome(&owner, last_entry(&ws)), Outcome::Applied { .. }));
}

#[test]
fn a_non_members_entries_are_not_parked_behind_a_gap() {
    let owner = enforcing_owner();
    let (w, r) = (Identity::generate(), Identity::generate());
    owner.write(vec![Op::put(peer_key(&r.author()), "reader")]).unwrap();
    for (id, why) in [
        (w.clone(), Refusal::NotAMember(w.author())),
        (r.clone(), Refusal::ReadOnly(r.author())),
    ] {
        let s = member_store(&owner, id);
        s.write(vec![Op::put("a", "1")]).unwrap();
        s.write(vec![Op::put("b", "2")]).unwrap();
        // The second entry alone: a gap, but its author may not write here.
        assert_eq!(outcome(&owner, last_entry(&s)), Outcome::Refused(why));
    }
    assert_eq!(owner.orphan_count().unwrap(), 0, "nothing parked");

    // A member's entry behind a gap waits, as before.
    owner.write(vec![Op::put(peer_key(&w.author()), "writer")]).unwrap();
    let s = member_store(&owner, w.clone());
    s.write(vec![Op::put("a", "1")]).unwrap();
    s.write(vec![Op::put("b", "2")]).unwrap();
    assert!(matches!(outcome(&owner, last_entry(&s)), Outcome::Orphaned(_)));
    assert_eq!(owner.orphan_count().unwrap(), 1);
}

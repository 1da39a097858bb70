//! Collecting chunks: only what no kept version needs goes, the file shrinks,
//! kept versions read back, and a collected one says so.

mod common;

use common::random;

use store::{Config, Error, Identity, Keep, Location, Manifest, Op, Store, hlc::wall_ms};

fn put(s: &Store, key: &str, data: &[u8]) -> Manifest {
    let m = s.put_content(&mut &data[..]).unwrap();
    s.write(vec![Op::put_with_refs(key, m.encode(), m.chunks())]).unwrap();
    m
}

fn read(s: &Store, m: &Manifest) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0; m.size() as usize];
    s.read_content(m, 0, &mut buf)?;
    Ok(buf)
}

fn store(dir: &std::path::Path) -> Store {
    Store::create_share(
        Location::File(&dir.join("s.redb")),
        Identity::generate(),
        Config::default(),
        vec![Op::put("peers/owner", "owner")],
    )
    .unwrap()
}

const NONE_KEPT: fn() -> Keep = || Keep {
    window_ms: Some(0),
    now_ms: wall_ms() + 1,
};

#[test]
fn old_versions_go_current_ones_stay_and_the_file_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let old = put(&s, "f", &random(8 << 20, 1));
    let new = put(&s, "f", &random(8 << 20, 2));
    let other = put(&s, "g", &random(1 << 20, 3));

    let forever = s
        .space(
            Keep {
                window_ms: None,
                now_ms: wall_ms(),
            },
            &|_| None,
        )
        .unwrap();
    assert_eq!(forever.free_bytes, 0, "keeping every version frees nothing");
    assert!(forever.history_bytes >= 8 << 20, "{forever:?}");

    let plan = s.space(NONE_KEPT(), &|_| None).unwrap();
    assert_eq!(plan.free_bytes, 8 << 20, "{plan:?}");
    let done = s.collect_garbage(NONE_KEPT(), &|_| None, &[]).unwrap();
    assert_eq!(done.bytes, 8 << 20);
    assert!(
        done.file_after + (6 << 20) < done.file_before,
        "the file did not shrink: {done:?}"
    );
    assert_eq!(read(&s, &new).unwrap(), random(8 << 20, 2));
    assert_eq!(read(&s, &other).unwrap(), random(1 << 20, 3));
    assert!(matches!(read(&s, &old), Err(Error::Collected(_))));
    assert_eq!(s.space(NONE_KEPT(), &|_| None).unwrap().free_bytes, 0);
}

#[test]
fn a_retired_key_goes_after_the_window_and_a_write_after_its_delete_stays() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let gone = put(&s, "deleted", &random(1 << 20, 4));
    let deleted_at = store::Hlc::new(wall_ms(), u16::MAX);
    // Within a 1 h window the deleted file is kept.
    let hour = Keep {
        window_ms: Some(3_600_000),
        now_ms: wall_ms(),
    };
    assert_eq!(
        s.space(hour, &|k| (k == b"deleted").then_some(deleted_at))
            .unwrap()
            .free_bytes,
        0
    );
    // A write after the delete (a restore) is not covered by it.
    let back = put(&s, "restored", &random(1 << 20, 5));
    let retired = |k: &[u8]| (k == b"deleted" || k == b"restored").then_some(deleted_at);
    let done = s.collect_garbage(NONE_KEPT(), &retired, &[]).unwrap();
    assert_eq!(done.bytes, 1 << 20);
    assert!(matches!(read(&s, &gone), Err(Error::Collected(_))));
    assert_eq!(read(&s, &back).unwrap(), random(1 << 20, 5));
}

#[test]
fn held_chunks_are_not_collected_and_a_collected_chunk_comes_back_with_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let data = random(2 << 20, 6);
    let old = put(&s, "f", &data);
    put(&s, "f", &random(2 << 20, 7));
    // A writer about to name the old content again (a restore) holds it.
    assert!(s.hold_chunks(old.chunks()).unwrap().is_empty());
    assert_eq!(s.collect_garbage(NONE_KEPT(), &|_| None, &[]).unwrap().chunks, 0);
    s.write(vec![Op::put_with_refs("f", old.encode(), old.chunks())])
        .unwrap();
    assert_eq!(read(&s, &old).unwrap(), data);

    // Once collected, the same bytes written again are readable again.
    put(&s, "f", &random(2 << 20, 8));
    assert!(s.collect_garbage(NONE_KEPT(), &|_| None, &[]).unwrap().chunks > 0);
    assert!(matches!(read(&s, &old), Err(Error::Collected(_))));
    let again = put(&s, "h", &data);
    assert_eq!(read(&s, &again).unwrap(), data);
    assert!(!s.is_collected(&old.chunks()[0]).unwrap());
}

#[test]
fn a_peer_takes_entries_whose_chunks_were_collected() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path());
    let old = put(&a, "f", &random(1 << 20, 9));
    let new = put(&a, "f", &random(1 << 20, 10));
    a.collect_garbage(NONE_KEPT(), &|_| None, &[]).unwrap();

    let b = common::mem_peer(&a);
    let entries = common::all_entries(&a);
    let missing = b.missing_refs(&entries).unwrap();
    // What A still has, B fetches; what A collected, A says so.
    let (have, collected): (Vec<store::ChunkHash>, Vec<store::ChunkHash>) =
        missing.into_iter().partition(|h| a.chunk(h).unwrap().is_some());
    assert_eq!(collected.len(), old.chunks().len());
    let fetched: Vec<_> = have.iter().map(|h| (*h, a.chunk(h).unwrap().unwrap())).collect();
    b.put_fetched(&fetched).unwrap();
    let refused = b.ingest(&entries).unwrap();
    assert!(
        refused
            .iter()
            .any(|o| matches!(o, store::Outcome::Refused(store::Refusal::MissingContent(_)))),
        "without the collected chunks noted, the old version's entry is refused"
    );
    b.note_collected(&collected, wall_ms()).unwrap();
    common::sync(&a, &b);
    assert_eq!(read(&b, &new).unwrap(), random(1 << 20, 10));
    assert!(matches!(read(&b, &old), Err(Error::Collected(_))));
}

#[test]
fn a_replaced_version_is_kept_for_the_window_after_it_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let old = put(&s, "f", &random(1 << 20, 11));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let replaced_at = wall_ms();
    put(&s, "f", &random(1 << 20, 12));
    // Written 300+ ms before `now`, replaced 100 ms before it: a 200 ms window
    // keeps it (counted from the replacement, not from the write).
    let keep = Keep {
        window_ms: Some(200),
        now_ms: replaced_at + 100,
    };
    assert_eq!(s.collect_garbage(keep, &|_| None, &[]).unwrap().chunks, 0);
    assert_eq!(read(&s, &old).unwrap(), random(1 << 20, 11));
    let later = Keep {
        window_ms: Some(200),
        now_ms: replaced_at + 1000,
    };
    assert!(s.collect_garbage(later, &|_| None, &[]).unwrap().chunks > 0);
}

//! Races and corner cases found in review, driven through the model's own
//! calls (no kernel), each against a store and a peer store in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use store::{Config, Identity, Location, Store};

use crate::inode_map::ROOT_INO;
use crate::model::data_op;
use crate::node::{self, Kind};
use crate::setattr::SetAttr;
use crate::{FsHandle, LatticeFs};

/// `to` takes every entry (and chunk) `from` has that it lacks.
fn sync(to: &Store, from: &Store) {
    let theirs: BTreeMap<_, _> = to.frontier().unwrap().into_iter().map(|(k, (s, _))| (k, s)).collect();
    let entries = from.entries_after(&theirs, usize::MAX).unwrap();
    for h in to.missing_refs(&entries).unwrap() {
        to.put_chunk(&h, &from.chunk(&h).unwrap().unwrap()).unwrap();
    }
    for o in to.ingest(&entries).unwrap() {
        assert!(!matches!(o, store::Outcome::Refused(_)), "{o:?}");
    }
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(20), "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A mount's model over an in-memory store, its peer, and the group-commit window.
fn setup(window: Duration) -> (Arc<Store>, Store, LatticeFs, FsHandle, tempfile::TempDir) {
    let a = Arc::new(Store::create_share(Location::Memory, Identity::generate(), Config::default(), vec![]).unwrap());
    let peer =
        Store::create_for_share(Location::Memory, Identity::generate(), a.share_id(), Config::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (fs, h) = crate::open_with(a.clone(), dir.path(), window).unwrap();
    (a, peer, fs, h, dir)
}

fn by_path(size: u64) -> SetAttr {
    SetAttr {
        size: Some(size),
        ..Default::default()
    }
}

#[test]
fn a_write_after_a_commit_starts_from_a_peers_newer_version() {
    let (a, peer, fs, _h, _d) = setup(crate::GROUP_COMMIT);
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"f", 0o644, (0, 0), true).unwrap();
    s.write(attrs.ino, 0, b"hello world").unwrap();
    s.fsync(attrs.ino).unwrap();
    sync(&peer, &a);
    let id = s.lock().inodes.node(attrs.ino).unwrap();
    // The peer, having seen our version, writes a new one.
    let m = peer.put_content(&mut &b"PEER CONTENT!!"[..]).unwrap();
    peer.write_batches(vec![vec![data_op(id, &m, 5, 777)]], true).unwrap();
    sync(&a, &peer);
    wait("the peer's content is shown", || {
        s.read(attrs.ino, 0, 100).is_ok_and(|d| d == b"PEER CONTENT!!")
    });
    s.write(attrs.ino, 0, b"p").unwrap();
    s.release(fh).unwrap();
    assert_eq!(s.read(attrs.ino, 0, 100).unwrap(), b"pEER CONTENT!!");
}

#[test]
fn a_truncate_after_a_delete_here_does_not_bring_the_file_back() {
    let (_a, _peer, fs, _h, _d) = setup(crate::GROUP_COMMIT);
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"f", 0o644, (0, 0), true).unwrap();
    s.write(attrs.ino, 0, b"data").unwrap();
    s.release(fh).unwrap();
    s.flush_now(true).unwrap();
    s.remove(ROOT_INO, b"f", false).unwrap();
    // The kernel resolved the inode before the unlink; its setattr comes after.
    let _ = s.setattr(attrs.ino, by_path(0));
    assert_eq!(
        s.setattr(
            attrs.ino,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            }
        ),
        Err(crate::errno::Errno::ENOENT)
    );
    s.flush_now(true).unwrap();
    assert!(s.lookup(ROOT_INO, b"f").is_err(), "a file deleted here came back");
    assert_eq!(s.check_once().unwrap(), Vec::<String>::new());
}

#[test]
fn a_directory_never_written_but_named_by_a_written_node_is_written() {
    let (a, peer, fs, _h, _d) = setup(Duration::from_secs(3600));
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"w", 0o644, (0, 0), true).unwrap();
    s.write(attrs.ino, 0, b"data").unwrap();
    s.release(fh).unwrap();
    s.flush_now(true).unwrap();
    sync(&peer, &a);
    let w = s.lock().inodes.node(attrs.ino).unwrap();
    // All in one window: D is never written on its own account.
    let d = s
        .make(
            ROOT_INO,
            b"D",
            crate::local::New {
                kind: Kind::Dir,
                mode: 0o755,
                target: b"",
                owner: (0, 0),
                rdev: 0,
            },
        )
        .unwrap();
    s.rename(ROOT_INO, b"w", d.ino, b"w", false).unwrap();
    s.remove(d.ino, b"w", false).unwrap();
    s.remove(ROOT_INO, b"D", true).unwrap();
    s.forget(d.ino, 1);
    s.forget(attrs.ino, 2);
    s.flush_now(true).unwrap();
    assert_eq!(s.check_once().unwrap(), Vec::<String>::new());
    // A peer edits w, never having seen the delete: it comes back, in D.
    let m = peer.put_content(&mut &b"peer edit"[..]).unwrap();
    peer.write_batches(vec![vec![data_op(w, &m, 5, 999)]], true).unwrap();
    sync(&a, &peer);
    wait("the edit wins over the delete", || s.lookup(ROOT_INO, b"D").is_ok());
    assert_eq!(s.check_once().unwrap(), Vec::<String>::new());
}

#[test]
fn a_truncate_by_path_is_committed_at_once_while_others_have_the_file_open() {
    let (a, _peer, fs, _h, _d) = setup(crate::GROUP_COMMIT);
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"log", 0o644, (0, 0), true).unwrap();
    s.write(attrs.ino, 0, b"0123456789").unwrap();
    s.release(fh).unwrap();
    s.flush_now(true).unwrap();
    let _reader = s.open(attrs.ino, false).unwrap(); // `tail -f log`
    s.setattr(attrs.ino, by_path(0)).unwrap(); // `truncate -s 0 log`
    s.flush_now(true).unwrap();
    let id = s.lock().inodes.node(attrs.ino).unwrap();
    let sizes: Vec<u64> = a
        .heads(&node::data_key(id))
        .unwrap()
        .iter()
        .filter_map(|h| crate::inputs::decode_data(h.value.as_ref()?))
        .map(|(_, m)| m.size())
        .collect();
    assert_eq!(sizes, vec![0]);
}

#[test]
fn a_truncate_racing_closes_is_never_lost() {
    let (_a, _peer, fs, _h, _d) = setup(crate::GROUP_COMMIT);
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"f", 0o644, (0, 0), true).unwrap();
    s.release(fh).unwrap();
    let ino = attrs.ino;
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let fh = s.open(ino, false).unwrap();
                s.release(fh).unwrap();
            }
        })
    };
    let mut lost = 0;
    for i in 1..5000u64 {
        s.setattr(ino, by_path(i)).unwrap();
        if s.getattr(ino).unwrap().size != i {
            lost += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(lost, 0, "truncates lost");
}

#[test]
fn create_without_excl_opens_a_file_a_peer_just_made() {
    let (a, peer, fs, _h, _d) = setup(crate::GROUP_COMMIT);
    let s = fs.0.clone();
    let (attrs, fh) = s.create(ROOT_INO, b"f", 0o644, (0, 0), true).unwrap();
    s.release(fh).unwrap();
    s.flush_now(true).unwrap();
    sync(&peer, &a);
    assert_eq!(
        s.create(ROOT_INO, b"f", 0o644, (0, 0), true).err(),
        Some(crate::errno::Errno::EEXIST)
    );
    let (again, fh) = s.create(ROOT_INO, b"f", 0o644, (0, 0), false).unwrap();
    assert_eq!(again.ino, attrs.ino);
    s.release(fh).unwrap();
}

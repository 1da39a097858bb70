//! Damaged bytes on disk: a chunk whose bytes no longer match its hash is
//! never served (EIO, and the log names the file), is fetched again from a
//! peer that has it, and does not break a join through the damaged node.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Flips one byte in the middle of the only copy of `needle` inside `file`.
fn flip_inside(file: &Path, needle: &[u8]) {
    let mut bytes = fs::read(file).unwrap();
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the content should be stored exactly once in {}",
        file.display()
    );
    bytes[at[0] + needle.len() / 2] ^= 0xff;
    fs::write(file, bytes).unwrap();
}

fn log(m: &Mount) -> String {
    fs::read_to_string(m.home.join("shares/default/daemon.log")).unwrap_or_default()
}

#[test]
fn a_damaged_chunk_gives_eio_heals_from_a_peer_and_a_join_still_works() {
    let mut a = Mount::new();
    let b = join(&a);
    let data = Rng::new(42).bytes(300_000);
    write(&a.p("victim.bin"), &data);
    write(&a.p("other.txt"), b"untouched");
    same_entries(&[&a, &b]);
    // Damage the stopped node's copy of one chunk.
    a.unmount();
    flip_inside(&a.home.join("shares/default/store.redb"), &data[150_000..150_064]);
    a.mount();
    // The read that finds the damage gets EIO. The heal from B can be so
    // quick (a link to B is up) that the kernel's retry of the page already
    // gets the healed chunk: then the bytes must be the original ones. What
    // never happens is damaged bytes reaching the reader.
    match fs::read(a.p("victim.bin")) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        Ok(d) => assert!(d == data, "damaged bytes were served\n{}", log(&a)),
    }
    assert!(
        log(&a).contains("is damaged on disk"),
        "the damage was not found:\n{}",
        log(&a)
    );
    assert!(
        log(&a).contains("/victim.bin"),
        "the log does not name the file:\n{}",
        log(&a)
    );
    assert_eq!(read(&a.p("other.txt")), b"untouched");
    // B has the chunk: A fetches it again, by itself.
    eventually("A heals the chunk from B", || {
        fs::read(a.p("victim.bin")).is_ok_and(|d| d == data)
    });
    let out = mountctl_s(&a.home, &["check", "--content", a.dir.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.describe());
    // A join through A gets the whole file.
    let c = join(&a);
    same_entries(&[&a, &c]);
    assert_bytes_eq("victim.bin on C", &data, &read(&c.p("victim.bin")));
}

#[test]
fn check_content_finds_damage_no_peer_can_repair() {
    let mut a = Mount::new();
    let data = Rng::new(7).bytes(200_000);
    write(&a.p("alone.bin"), &data);
    a.unmount();
    flip_inside(&a.home.join("shares/default/store.redb"), &data[100_000..100_064]);
    a.mount();
    let out = mountctl_s(&a.home, &["check", "--content", a.dir.to_str().unwrap()]);
    assert!(!out.ok(), "check --content found nothing: {}", out.describe());
    assert!(out.stdout.contains("damaged"), "{}", out.describe());
    let e = fs::read(a.p("alone.bin")).expect_err("damaged bytes were served");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
}

/// Flips a byte inside every copy of `needle` in `file`; returns how many.
fn flip_all(file: &Path, needle: &[u8]) -> usize {
    let mut bytes = fs::read(file).unwrap();
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    for i in &at {
        bytes[i + needle.len() / 2] ^= 0xff;
    }
    fs::write(file, bytes).unwrap();
    at.len()
}

fn orphans(m: &Mount) -> u64 {
    status_mount(&m.home, &m.dir).unwrap()["orphans"].as_u64().unwrap()
}

#[test]
fn a_cut_tail_is_fetched_back_before_the_node_writes_again() {
    let mut a = Mount::new();
    let b = join(&a);
    write(&a.p("first.txt"), b"one");
    let marker = "tail-marker-7f3a9c02.txt";
    write(&a.p(marker), b"last");
    same_entries(&[&a, &b]);
    a.unmount();
    // Damage A's newest entry (the one naming the marker): opening cuts it.
    assert!(flip_all(&a.home.join("shares/default/store.redb"), marker.as_bytes()) > 0);
    a.mount();
    let log = fs::read_to_string(a.home.join("shares/default/daemon.log")).unwrap();
    assert!(
        log.contains("lost its own entries"),
        "A did not notice it lost its own entries:\n{log}"
    );
    // B returns them; only then does A write, and every peer accepts it.
    eventually("A writes again", || fs::write(a.p("after.txt"), b"new").is_ok());
    // Close does not wait for the group commit, so equal frontiers alone
    // could be the ones from before `after.txt` was written: wait for B to
    // show it, then for the stores to agree.
    eventually("B shows after.txt", || {
        fs::read(b.p("after.txt")).is_ok_and(|d| d == b"new")
    });
    same_entries(&[&a, &b]);
    assert_eq!(read(&a.p("after.txt")), b"new");
    assert_eq!(read(&a.p(marker)), b"last");
    assert_eq!((orphans(&a), orphans(&b)), (0, 0), "orphans stay behind");
    for m in [&a, &b] {
        let out = mountctl_s(&m.home, &["check", "--content", m.dir.to_str().unwrap()]);
        assert!(out.ok(), "{}", out.describe());
    }
}

//! Content-defined chunking: small edits move few chunks, reads are exact.

mod common;

use rand::{Rng, RngCore, SeedableRng};
use store::content::chunk_slice;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

#[test]
fn one_byte_change_in_16_mib_changes_at_most_two_chunks() {
    let mut data = random(16 << 20, 1);
    let before: std::collections::HashSet<_> = chunk_slice(&data).into_iter().map(|c| c.0).collect();
    assert!(
        before.len() > 100,
        "~64 KiB average gives ~256 chunks, got {}",
        before.len()
    );
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    let after = chunk_slice(&data);
    let changed = after.iter().filter(|c| !before.contains(&c.0)).count();
    assert!(changed <= 2, "{changed} chunks changed");
    // Inserting a byte shifts everything after it, and still moves few chunks.
    data.insert(mid, 42);
    let changed = chunk_slice(&data).iter().filter(|c| !before.contains(&c.0)).count();
    assert!(changed <= 2, "{changed} chunks changed after an insert");
}

#[test]
fn stored_content_dedups_and_reads_back_any_range() {
    let s = common::mem_owner();
    let mut data = random(3 << 20, 2);
    let m1 = s.put_content(&mut data.as_slice()).unwrap();
    assert_eq!(m1.size(), data.len() as u64);
    let n1 = s.chunk_count().unwrap();
    data[1 << 20] ^= 1;
    let m2 = s.put_content(&mut data.as_slice()).unwrap();
    assert!(s.chunk_count().unwrap() - n1 <= 2, "unchanged chunks are stored once");
    let decoded = store::Manifest::decode(&m2.encode()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let off = rng.random_range(0..data.len() + 10);
        let len = rng.random_range(0..300_000);
        let mut buf = vec![0u8; len];
        let n = s.read_content(&decoded, off as u64, &mut buf).unwrap();
        let want = &data[off.min(data.len())..(off + len).min(data.len())];
        assert_eq!(&buf[..n], want);
    }
    assert_eq!(s.missing_chunks(m2.chunks()).unwrap(), vec![]);
    let fresh = common::mem_peer(&s);
    assert_eq!(fresh.missing_chunks(m2.chunks()).unwrap().len(), m2.chunks().len());
    let h = m2.chunks()[0];
    let bytes = s.chunk(&h).unwrap().unwrap();
    assert!(matches!(
        fresh.put_chunk(&h, b"forged"),
        Err(store::Error::ChunkMismatch)
    ));
    fresh.put_chunk(&h, &bytes).unwrap();
    assert_eq!(fresh.missing_chunks(&[h]).unwrap(), vec![]);
}

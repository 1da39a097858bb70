//! Content-defined chunking: small edits move few chunks, reads are exact.

mod common;

use common::random;

use rand::{Rng, SeedableRng};
use store::content::chunk_slice;

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

/// The manifest chunking the whole of `data` gives.
fn full(data: &[u8]) -> store::Manifest {
    let mut m = store::Manifest::default();
    for (h, _, len) in chunk_slice(data) {
        m.push(h, len as u32);
    }
    m
}

/// Applies `edits` (write at offset / truncate to length) to `old` through
/// `rechunk`, and returns (new content, manifest, bytes chunked again).
fn edit(old: &[u8], edits: &[(u64, Vec<u8>, Option<u64>)]) -> (Vec<u8>, store::Manifest, u64) {
    let base = full(old);
    let mut new = old.to_vec();
    let mut changed = Vec::new();
    for (off, bytes, trunc) in edits {
        if let Some(t) = trunc {
            new.resize(*t as usize, 0);
            changed.push(*t..u64::MAX);
        }
        let end = *off as usize + bytes.len();
        if new.len() < end {
            new.resize(end, 0);
        }
        new[*off as usize..end].copy_from_slice(bytes);
        changed.push(*off..end as u64);
    }
    let mut stored = 0u64;
    let m = store::content::rechunk(
        &base,
        new.len() as u64,
        &changed,
        &mut |off, buf| {
            let off = off as usize;
            let n = buf.len().min(new.len() - off);
            buf[..n].copy_from_slice(&new[off..off + n]);
            Ok(n)
        },
        &mut |_, b| {
            stored += b.len() as u64;
            Ok(())
        },
    )
    .unwrap();
    (new, m, stored)
}

#[test]
fn rechunk_costs_the_change_and_chunks_as_a_full_pass_would() {
    let old = random(8 << 20, 4);
    // One byte in the middle: at most two chunks (<= 512 KiB) are chunked again.
    let (new, m, stored) = edit(&old, &[(4 << 20, vec![0xAB], None)]);
    assert_eq!(m, full(&new));
    assert!(stored <= 512 << 10, "chunked {stored} bytes again for a 1-byte edit");
    // An append: only the last chunk and the new bytes.
    let (new, m, stored) = edit(&old, &[(old.len() as u64, b"appended line\n".to_vec(), None)]);
    assert_eq!(m, full(&new));
    assert!(stored <= (256 << 10) + 14, "chunked {stored} bytes again for an append");
    // Truncate to 0 then write: all new.
    let (new, m, _) = edit(&old, &[(0, random(100_000, 5), Some(0))]);
    assert_eq!(m, full(&new));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn rechunk_matches_full_chunking(
        len in 0usize..1_500_000,
        seed in 0u64..1000,
        edits in proptest::collection::vec((0u64..1_700_000, 0usize..300_000, proptest::option::weighted(0.2, 0u64..1_600_000)), 0..5),
    ) {
        let old = random(len, seed);
        let edits: Vec<(u64, Vec<u8>, Option<u64>)> = edits
            .into_iter()
            .enumerate()
            .map(|(i, (off, n, t))| (off, random(n, seed ^ (i as u64 + 1)), t))
            .collect();
        let (new, m, _) = edit(&old, &edits);
        proptest::prop_assert_eq!(m.size(), new.len() as u64);
        proptest::prop_assert_eq!(m, full(&new));
    }
}

// The chunker's cuts depend on the byte after a cut and on how much input
// is left (up to its 256 KiB window): edits near the end of a file, where
// both change, found a rechunk that cut where a full pass does not.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn rechunk_matches_full_chunking_near_the_end(
        len in 16_000usize..1_000_000,
        seed in 0u64..1000,
        cut_back in 0usize..300_000,
        write_back in 0usize..300_000,
        n in 0usize..4,
    ) {
        let old = random(len, seed);
        let t = len.saturating_sub(cut_back) as u64;
        let at = (t as usize).saturating_sub(write_back) as u64;
        let edits = vec![(0, vec![], Some(t)), (at, random(n, seed + 1), None)];
        let (new, m, _) = edit(&old, &edits);
        proptest::prop_assert_eq!(m, full(&new));
    }
}

#[test]
fn truncating_two_bytes_and_writing_one_chunks_as_a_full_pass() {
    // The case that found it: a base cut 2 bytes before the end, 1 byte after it.
    let old = random(475_749, 669);
    let (new, m, _) = edit(&old, &[(0, vec![], Some(475_747)), (475_747, random(1, 670), None)]);
    assert_eq!(m, full(&new));
}

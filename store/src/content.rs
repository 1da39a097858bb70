//! File content: content-defined chunks stored once by blake3 hash, and the
//! manifest (size + chunk list) that is a file's value in the store.
//!
//! Chunk boundaries come from FastCDC (2020) with a 64 KiB average, so an edit
//! moves only the chunks around it and the rest dedup against what is stored.

use std::io::Read;
use std::ops::Range;

use prost::Message;

use crate::error::{Error, Result};
use crate::ids::ChunkHash;

pub const MIN_CHUNK: u32 = 16 << 10;
pub const AVG_CHUNK: u32 = 64 << 10;
pub const MAX_CHUNK: u32 = 256 << 10;

pub fn hash(bytes: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(bytes).as_bytes())
}

/// Boundaries of `data`, as (hash, start, len).
pub fn chunk_slice(data: &[u8]) -> Vec<(ChunkHash, usize, usize)> {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| (hash(&data[c.offset..c.offset + c.length]), c.offset, c.length))
        .collect()
}

/// The chunks of `r`, one at a time, with their hashes.
fn stream<R: Read>(r: R) -> impl Iterator<Item = Result<(ChunkHash, Vec<u8>)>> {
    fastcdc::v2020::StreamCDC::new(r, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).map(|c| {
        let c = c.map_err(|e| Error::Io {
            path: "<content>".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok((hash(&c.data), c.data))
    })
}

/// Streams `r` through the chunker without holding more than one chunk.
pub fn chunk_reader(r: &mut dyn Read, mut each: impl FnMut(ChunkHash, &[u8]) -> Result<()>) -> Result<Manifest> {
    let mut m = Manifest::default();
    for c in stream(r) {
        let (h, data) = c?;
        each(h, &data)?;
        m.push(h, data.len() as u32);
    }
    Ok(m)
}

/// The last chunk a reader got, verified: consecutive reads that share a
/// chunk neither read nor hash it twice.
#[derive(Default)]
pub struct ChunkCache {
    last: Option<(ChunkHash, std::sync::Arc<Vec<u8>>)>,
}

impl ChunkCache {
    pub fn get(&self, h: &ChunkHash) -> Option<std::sync::Arc<Vec<u8>>> {
        self.last.as_ref().filter(|(k, _)| k == h).map(|(_, v)| v.clone())
    }
    pub fn put(&mut self, h: ChunkHash, bytes: std::sync::Arc<Vec<u8>>) {
        self.last = Some((h, bytes));
    }
}

/// A file's new content as an edit of `base`, chunked exactly as chunking the
/// whole new content would chunk it, at a cost proportional to the change:
/// chunks of `base` that lie wholly outside `changed` are reused, chunking
/// restarts at the start of the first chunk a change touches, and it stops as
/// soon as it cuts where `base` was cut, past the change.
///
/// Where FastCDC (v2020) cuts a chunk depends on the chunk's bytes, on the
/// one byte after the cut (hashed before a cut is taken in front of it), and
/// on how many bytes are left up to `MAX_CHUNK` (it narrows its window and
/// changes its mask near the end of the input). So a base chunk is reused
/// only when all three are the same in the new content; a property test
/// compares the result with chunking the whole new content.
///
/// `len` is the new size. `changed` lists the byte ranges whose content may
/// differ from `base` (any order, may overlap); every other byte below `len` is
/// `base`'s, so bytes past `base.size()` count as changed whatever the caller
/// says. `read(offset, buf)` reads the new content; `store` receives each new chunk.
pub fn rechunk(
    base: &Manifest,
    len: u64,
    changed: &[Range<u64>],
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<usize>,
    store: &mut dyn FnMut(ChunkHash, &[u8]) -> Result<()>,
) -> Result<Manifest> {
    let mut regions: Vec<Range<u64>> = changed
        .iter()
        .map(|r| r.start.min(len)..r.end.min(len))
        .chain(std::iter::once(base.size().min(len)..len))
        .filter(|r| r.start < r.end)
        .collect();
    regions.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(regions.len());
    for r in regions {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    // The chunker sees the same input for a chunk starting at `start` in both
    // contents: the same bytes (up to and including the one after the cut,
    // checked against the changes), and the same number left, up to its window.
    let max = MAX_CHUNK as u64;
    let same_window = |start: u64| (len - start).min(max) == base.size().saturating_sub(start).min(max);
    let reusable = |start: u64, end: u64, next_change: u64| {
        same_window(start)
            && if end == len {
                // Cut by the end of both inputs.
                end == base.size() && end <= next_change
            } else {
                end < next_change && end < base.size()
            }
    };
    let mut out = Manifest {
        chunks: Vec::with_capacity(base.chunks.len() + 4),
        ends: Vec::with_capacity(base.chunks.len() + 4),
    };
    let (mut pos, mut i, mut r) = (0u64, 0usize, 0usize);
    while pos < len {
        // Reuse base chunks that start here and end before the next change.
        let next_change = merged.get(r).map_or(len, |g| g.start);
        while i < base.chunks.len() {
            let (h, start, n) = base.chunk_at(i);
            let end = start + n;
            if start != pos || end > len || !reusable(start, end, next_change) {
                break;
            }
            out.push(h, n as u32);
            pos = end;
            i += 1;
        }
        if pos >= len {
            break;
        }
        // Chunk again from `pos` (a real cut) until a cut lands on a base cut
        // past every change begun so far.
        let mut src = ReadAt {
            read: &mut *read,
            pos,
            end: len,
        };
        for c in stream(&mut src) {
            let (h, data) = c?;
            store(h, &data)?;
            out.push(h, data.len() as u32);
            pos += data.len() as u64;
            while r < merged.len() && merged[r].end <= pos {
                r += 1;
            }
            // A cut shared with `base`, past every change begun so far: the
            // reuse loop above judges whether the next base chunk is the same.
            let inside = merged.get(r).is_some_and(|g| g.start <= pos);
            if !inside
                && pos < len
                && let Ok(k) = base.ends.binary_search(&pos)
            {
                i = k + 1;
                break;
            }
        }
    }
    Ok(out)
}

/// `Read` over new content given by offset, from `pos` to `end`.
struct ReadAt<'a> {
    read: &'a mut dyn FnMut(u64, &mut [u8]) -> Result<usize>,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = (self.read)(self.pos, &mut buf[..want]).map_err(std::io::Error::other)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "content ended before its length",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[derive(Clone, PartialEq, Message)]
struct ManifestWire {
    #[prost(uint64, tag = "1")]
    size: u64,
    /// Chunk hashes back to back, 32 bytes each.
    #[prost(bytes = "vec", tag = "2")]
    hashes: Vec<u8>,
    #[prost(uint32, repeated, tag = "3")]
    lens: Vec<u32>,
}

/// A file's content: its chunks in order. Keeps prefix offsets so a read at
/// any offset finds its chunk by binary search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    chunks: Vec<ChunkHash>,
    /// `ends[i]` is the file offset just past chunk `i`.
    ends: Vec<u64>,
}

impl Manifest {
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn chunks(&self) -> &[ChunkHash] {
        &self.chunks
    }

    pub fn push(&mut self, h: ChunkHash, len: u32) {
        self.chunks.push(h);
        self.ends.push(self.size() + len as u64);
    }

    /// Chunk `i` as (hash, file offset, len).
    pub fn chunk_at(&self, i: usize) -> (ChunkHash, u64, u64) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.chunks[i], start, self.ends[i] - start)
    }

    /// Index of the chunk holding byte `offset`, if inside the file.
    pub fn find(&self, offset: u64) -> Option<usize> {
        let i = self.ends.partition_point(|&e| e <= offset);
        (i < self.chunks.len()).then_some(i)
    }

    /// The chunks as an op's refs (what a peer fetches before applying it).
    pub fn refs(&self) -> Vec<Vec<u8>> {
        self.chunks.iter().map(|h| h.0.to_vec()).collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut lens = Vec::with_capacity(self.chunks.len());
        let mut prev = 0;
        for &e in &self.ends {
            lens.push((e - prev) as u32);
            prev = e;
        }
        let mut hashes = Vec::with_capacity(self.chunks.len() * 32);
        for h in &self.chunks {
            hashes.extend_from_slice(&h.0);
        }
        ManifestWire {
            size: self.size(),
            hashes,
            lens,
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let bad = |why: &str| Error::Damaged(format!("manifest: {why}"));
        let w = ManifestWire::decode(bytes).map_err(|e| bad(&e.to_string()))?;
        if w.hashes.len() != w.lens.len() * 32 {
            return Err(bad("hash and length counts differ"));
        }
        let mut m = Manifest {
            chunks: Vec::with_capacity(w.lens.len()),
            ends: Vec::with_capacity(w.lens.len()),
        };
        let mut end = 0u64;
        for (h, &len) in w.hashes.chunks_exact(32).zip(&w.lens) {
            m.chunks.push(ChunkHash(h.try_into().expect("32-byte chunk")));
            end += len as u64;
            m.ends.push(end);
        }
        if m.size() != w.size {
            return Err(bad("size does not match its chunks"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_find() {
        let mut m = Manifest::default();
        m.push(hash(b"a"), 10);
        m.push(hash(b"b"), 5);
        let d = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.size(), 15);
        assert_eq!(d.find(0), Some(0));
        assert_eq!(d.find(9), Some(0));
        assert_eq!(d.find(10), Some(1));
        assert_eq!(d.find(15), None);
        assert_eq!(d.chunk_at(1), (hash(b"b"), 10, 5));
        assert!(Manifest::decode(b"\xff\xff").is_err());
    }
}

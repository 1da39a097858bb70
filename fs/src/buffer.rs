//! The content of a file being changed: the manifest it started from (its
//! base, in the store) plus the byte ranges written since (extents). Nothing is
//! copied when a file is opened or first written: `echo >> big.log` costs the
//! appended bytes, and the commit chunks again only the chunks around the
//! changes (`store::content::rechunk`). Extents live in memory up to
//! [`MEMORY_LIMIT`], then in an unnamed temporary file, so a 1 GiB copy costs
//! disk, not RAM.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use store::{ChunkHash, KvStore, Manifest};

/// The largest file: its manifest must fit in one entry (about 240,000
/// chunks of 64 KiB on average; see the README's limits).
pub const MAX_FILE_BYTES: u64 = 12 << 30;
/// The most chunks one file's manifest may list.
pub const MAX_CHUNKS: usize = 230_000;

/// Past this many changed bytes, extents move to a temporary file.
pub const MEMORY_LIMIT: u64 = 8 << 20;
/// New chunks are handed to the store in batches of about this many bytes.
const CHUNK_BATCH: usize = 16 << 20;

enum Extents {
    /// start -> bytes; disjoint and not touching.
    Mem(BTreeMap<u64, Vec<u8>>),
    /// The bytes sit at their own offsets in `file`; `ranges` says which.
    File { file: File, ranges: BTreeMap<u64, u64> },
}

pub struct FileBuf {
    base: Arc<Manifest>,
    /// The content version `base` is (the `d` head it was read from).
    pub base_version: u64,
    len: u64,
    /// Base bytes below this are still the file's (a truncate lowers it).
    valid: u64,
    ext: Extents,
    bytes: u64,
    /// Something changed since the last commit (content or mtime).
    pub dirty: bool,
    /// The mtime the next commit stores; `None` means now.
    pub mtime: Option<i64>,
}

impl FileBuf {
    pub fn new(base: Arc<Manifest>, base_version: u64) -> FileBuf {
        let len = base.size();
        FileBuf {
            base,
            base_version,
            len,
            valid: len,
            ext: Extents::Mem(BTreeMap::new()),
            bytes: 0,
            dirty: false,
            mtime: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn write_at(&mut self, off: u64, data: &[u8], spill_dir: &Path) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = off + data.len() as u64;
        if self.bytes + data.len() as u64 > MEMORY_LIMIT {
            self.spill(spill_dir)?;
        }
        match &mut self.ext {
            Extents::Mem(map) => {
                let mut start = off;
                if let Some((&s, v)) = map.range(..=off).next_back()
                    && s + v.len() as u64 >= off
                {
                    start = s;
                }
                let keys: Vec<u64> = map.range(start..=end).map(|(k, _)| *k).collect();
                if keys.len() == 1 && keys[0] == start && start <= off {
                    // The common case: writing inside or at the end of one extent.
                    let v = map.get_mut(&start).expect("listed");
                    let (rel, old) = ((off - start) as usize, v.len());
                    if v.len() < rel + data.len() {
                        v.resize(rel + data.len(), 0);
                    }
                    v[rel..rel + data.len()].copy_from_slice(data);
                    self.bytes += (v.len() - old) as u64;
                } else {
                    let new_end = keys
                        .iter()
                        .map(|k| k + map[k].len() as u64)
                        .max()
                        .unwrap_or(end)
                        .max(end);
                    let mut merged = vec![0u8; (new_end - start) as usize];
                    for k in keys {
                        let v = map.remove(&k).expect("listed");
                        self.bytes -= v.len() as u64;
                        let rel = (k - start) as usize;
                        merged[rel..rel + v.len()].copy_from_slice(&v);
                    }
                    let rel = (off - start) as usize;
                    merged[rel..rel + data.len()].copy_from_slice(data);
                    self.bytes += merged.len() as u64;
                    map.insert(start, merged);
                }
            }
            Extents::File { file, ranges } => {
                file.write_all_at(data, off)?;
                let mut start = off;
                let mut new_end = end;
                if let Some((&s, &e)) = ranges.range(..=off).next_back()
                    && e >= off
                {
                    start = s;
                    new_end = new_end.max(e);
                }
                let keys: Vec<(u64, u64)> = ranges.range(start..=end).map(|(s, e)| (*s, *e)).collect();
                for (s, e) in keys {
                    ranges.remove(&s);
                    self.bytes -= e - s;
                    new_end = new_end.max(e);
                }
                ranges.insert(start, new_end);
                self.bytes += new_end - start;
            }
        }
        self.len = self.len.max(end);
        self.dirty = true;
        Ok(())
    }

    pub fn set_len(&mut self, n: u64) -> io::Result<()> {
        self.valid = self.valid.min(n);
        self.len = n;
        match &mut self.ext {
            Extents::Mem(map) => {
                let cut: Vec<u64> = map
                    .range(..)
                    .filter(|(k, v)| *k + v.len() as u64 > n)
                    .map(|(k, _)| *k)
                    .collect();
                for k in cut {
                    let mut v = map.remove(&k).expect("listed");
                    self.bytes -= v.len() as u64;
                    if k < n {
                        v.truncate((n - k) as usize);
                        self.bytes += v.len() as u64;
                        map.insert(k, v);
                    }
                }
            }
            Extents::File { file, ranges } => {
                let cut: Vec<(u64, u64)> = ranges.iter().filter(|(_, e)| **e > n).map(|(s, e)| (*s, *e)).collect();
                for (s, e) in cut {
                    ranges.remove(&s);
                    self.bytes -= e - s;
                    if s < n {
                        ranges.insert(s, n);
                        self.bytes += n - s;
                    }
                }
                file.set_len(n)?;
            }
        }
        self.dirty = true;
        Ok(())
    }

    fn spill(&mut self, dir: &Path) -> io::Result<()> {
        if let Extents::Mem(map) = &self.ext {
            let file = tempfile::tempfile_in(dir)?;
            let mut ranges = BTreeMap::new();
            for (k, v) in map {
                file.write_all_at(v, *k)?;
                ranges.insert(*k, k + v.len() as u64);
            }
            self.ext = Extents::File { file, ranges };
        }
        Ok(())
    }

    /// The extent covering `pos`, as (its end, a reader), or where the next one starts.
    fn extent_at(&self, pos: u64) -> Result<u64, u64> {
        let (covering, next) = match &self.ext {
            Extents::Mem(map) => (
                map.range(..=pos)
                    .next_back()
                    .map(|(k, v)| k + v.len() as u64)
                    .filter(|e| *e > pos),
                map.range(pos + 1..).next().map(|(k, _)| *k),
            ),
            Extents::File { ranges, .. } => (
                ranges.range(..=pos).next_back().map(|(_, e)| *e).filter(|e| *e > pos),
                ranges.range(pos + 1..).next().map(|(k, _)| *k),
            ),
        };
        covering.ok_or(next.unwrap_or(u64::MAX))
    }

    fn read_extent(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.ext {
            Extents::Mem(map) => {
                let (k, v) = map.range(..=pos).next_back().expect("covered");
                let rel = (pos - k) as usize;
                buf.copy_from_slice(&v[rel..rel + buf.len()]);
                Ok(())
            }
            Extents::File { file, .. } => file.read_exact_at(buf, pos),
        }
    }

    /// Reads the file's current content: extents, else base bytes, else zeros.
    pub fn read_at(&self, off: u64, buf: &mut [u8], store: &dyn KvStore) -> store::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - off) as usize);
        let mut pos = off;
        while pos < off + n as u64 {
            let at = (pos - off) as usize;
            match self.extent_at(pos) {
                Ok(end) => {
                    let upto = end.min(off + n as u64);
                    self.read_extent(pos, &mut buf[at..(upto - off) as usize])
                        .map_err(|e| store::Error::Io {
                            path: "<write buffer>".into(),
                            source: e,
                        })?;
                    pos = upto;
                }
                Err(next) => {
                    let upto = next.min(off + n as u64);
                    if pos < self.valid {
                        let upto = upto.min(self.valid);
                        let want = &mut buf[at..(upto - off) as usize];
                        let mut got = 0;
                        while got < want.len() {
                            let k = store.read_content(&self.base, pos + got as u64, &mut want[got..])?;
                            if k == 0 {
                                return Err(store::Error::Damaged("content shorter than its manifest".into()));
                            }
                            got += k;
                        }
                        pos = upto;
                    } else {
                        buf[at..(upto - off) as usize].fill(0);
                        pos = upto;
                    }
                }
            }
        }
        Ok(n)
    }

    /// The changed ranges, for `rechunk`.
    fn changed(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = match &self.ext {
            Extents::Mem(map) => map.iter().map(|(k, v)| *k..k + v.len() as u64).collect(),
            Extents::File { ranges, .. } => ranges.iter().map(|(s, e)| *s..*e).collect(),
        };
        if self.valid < self.len {
            out.push(self.valid..self.len);
        }
        out
    }

    /// The new content as a manifest, its new chunks stored (not synced). The
    /// buffer is dropped once the manifest is committed.
    pub fn manifest(&self, store: &dyn KvStore) -> store::Result<Arc<Manifest>> {
        if self.valid == self.len && self.len == self.base.size() && self.bytes == 0 {
            return Ok(self.base.clone());
        }
        let mut batch: Vec<(ChunkHash, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0;
        let m = store::content::rechunk(
            &self.base,
            self.len,
            &self.changed(),
            &mut |off, buf| self.read_at(off, buf, store),
            &mut |h, data| {
                batch.push((h, data.to_vec()));
                batch_bytes += data.len();
                if batch_bytes >= CHUNK_BATCH {
                    store.put_chunks(std::mem::take(&mut batch))?;
                    batch_bytes = 0;
                }
                Ok(())
            },
        )?;
        store.put_chunks(batch)?;
        Ok(Arc::new(m))
    }

    pub fn base(&self) -> &Arc<Manifest> {
        &self.base
    }
}

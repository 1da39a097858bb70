//! The content half of the store: chunks put (see `shelf.rs` for why unsynced
//! ones are also kept in memory), read back verified, and served to peers.

use std::io::Read;

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::content::{self, ChunkCache, Manifest};
use crate::error::{Error, Result};
use crate::ids::ChunkHash;
use crate::store::Store;
use crate::tables::*;

impl Store {
    /// Chunks `r`, stores chunks not yet present (synced), returns the manifest.
    pub fn put_content(&self, r: &mut dyn Read) -> Result<Manifest> {
        let txn = self.db().begin_write()?;
        let mark = self.shelf.mark();
        let m = {
            let mut t = txn.open_table(CHUNKS)?;
            let mut collected = txn.open_table(COLLECTED)?;
            content::chunk_reader(r, |h, bytes| {
                self.held.add([h]);
                if t.get(&h.0)?.is_none() {
                    t.insert(&h.0, bytes)?;
                    collected.remove(&h.0)?;
                }
                Ok(())
            })?
        };
        txn.commit()?;
        self.shelf.synced(mark);
        Ok(m)
    }

    /// Stores chunks made here (by [`content::rechunk`]), skipping those already
    /// present. Not synced (the durable commit of the entry that names them
    /// is), but kept in memory until then: see `shelf.rs`.
    pub fn put_chunks(&self, chunks: Vec<(ChunkHash, Vec<u8>)>) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut txn = self.db().begin_write()?;
        let size = chunks.iter().map(|c| c.1.len()).sum();
        // Past the shelf's limit this put is synced, and so is every earlier one.
        let sync = self.shelf.full_with(size);
        if !sync {
            txn.set_durability(Durability::None)?;
        }
        let mark = self.shelf.mark();
        let mut new = Vec::with_capacity(chunks.len());
        self.held.add(chunks.iter().map(|c| c.0));
        {
            let mut t = txn.open_table(CHUNKS)?;
            let mut collected = txn.open_table(COLLECTED)?;
            for (h, bytes) in self.shelf.to_restore() {
                if t.get(&h.0)?.is_none() {
                    t.insert(&h.0, bytes.as_slice())?;
                }
            }
            for (h, bytes) in chunks {
                if t.get(&h.0)?.is_none() {
                    t.insert(&h.0, bytes.as_slice())?;
                    collected.remove(&h.0)?;
                    new.push((h, bytes));
                }
            }
        }
        if sync {
            txn.commit()?;
            self.shelf.synced(mark);
            return Ok(());
        }
        let first = self.shelf.keep(new);
        if let Err(e) = txn.commit() {
            self.shelf.drop_from(first);
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset` of the content `m`, touching
    /// only the chunks the range covers. Every chunk is checked against its
    /// hash: a damaged one is never returned (see [`Error::BadChunk`]).
    pub fn read_content(&self, m: &Manifest, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_content_with(m, offset, buf, &mut ChunkCache::default())
    }

    /// [`Store::read_content`] with the reader's own cache of its last chunk.
    pub fn read_content_with(
        &self,
        m: &Manifest,
        offset: u64,
        buf: &mut [u8],
        cache: &mut ChunkCache,
    ) -> Result<usize> {
        let Some(mut i) = m.find(offset) else {
            return Ok(0);
        };
        let mut done = 0;
        while done < buf.len() && i < m.chunks().len() {
            let (h, start, len) = m.chunk_at(i);
            let data = match cache.get(&h) {
                Some(d) => d,
                None => {
                    let d = match self.verified_chunk(&h)? {
                        Some(d) => std::sync::Arc::new(d),
                        None if self.is_collected(&h)? => {
                            // Collected here, or by the peer it was asked
                            // from: another member may still keep it.
                            self.watchers.want(h);
                            return Err(Error::Collected(h.to_string()));
                        }
                        None => return Err(Error::MissingChunk(h.to_string())),
                    };
                    cache.put(h, d.clone());
                    d
                }
            };
            if data.len() as u64 != len {
                return Err(Error::Damaged(format!("chunk {h} has the wrong length")));
            }
            let from = (offset + done as u64 - start) as usize;
            let n = (data.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
            i += 1;
        }
        Ok(done)
    }

    /// A chunk's bytes, checked against its hash. A damaged chunk is taken
    /// out of the store (so it counts as missing), announced to
    /// [`Store::watch_wanted`] so that peers are asked for it, and reported as
    /// [`Error::BadChunk`].
    pub fn verified_chunk(&self, h: &ChunkHash) -> Result<Option<Vec<u8>>> {
        let bytes = {
            let txn = self.db().begin_read()?;
            let t = txn.open_table(CHUNKS)?;
            t.get(&h.0)?.map(|v| v.value().to_vec())
        };
        match bytes {
            Some(b) if content::hash(&b) != *h => {
                tracing::error!("chunk {h} is damaged on disk; dropping it and asking peers for it");
                let txn = self.db().begin_write()?;
                txn.open_table(CHUNKS)?.remove(&h.0)?;
                txn.commit()?;
                self.watchers.want(*h);
                Err(Error::BadChunk(*h))
            }
            b => Ok(b),
        }
    }

    /// A chunk to serve a peer: only if it is here and whole.
    pub fn chunk(&self, h: &ChunkHash) -> Result<Option<Vec<u8>>> {
        match self.verified_chunk(h) {
            Err(Error::BadChunk(_)) => Ok(None),
            r => r,
        }
    }

    /// Chunks found damaged (and dropped), which peers should be asked for.
    pub fn watch_wanted(&self) -> UnboundedReceiver<ChunkHash> {
        self.watchers.watch_wanted()
    }

    /// Checks every stored chunk against its hash; drops and asks peers for
    /// the damaged ones. Returns (chunks checked, damaged ones).
    pub fn verify_chunks(&self) -> Result<(u64, Vec<ChunkHash>)> {
        let mut bad = Vec::new();
        let mut n = 0;
        let hashes: Vec<ChunkHash> = {
            let txn = self.db().begin_read()?;
            let t = txn.open_table(CHUNKS)?;
            t.iter()?
                .map(|r| r.map(|(k, _)| ChunkHash(*k.value())))
                .collect::<Result<_, _>>()?
        };
        for h in hashes {
            n += 1;
            if let Err(Error::BadChunk(h)) = self.verified_chunk(&h) {
                bad.push(h);
            }
        }
        Ok((n, bad))
    }

    /// Stores a chunk that arrived from a peer, after checking its hash.
    pub fn put_chunk(&self, h: &ChunkHash, bytes: &[u8]) -> Result<()> {
        if content::hash(bytes) != *h {
            return Err(Error::ChunkMismatch);
        }
        let txn = self.db().begin_write()?;
        txn.open_table(CHUNKS)?.insert(&h.0, bytes)?;
        txn.commit()?;
        Ok(())
    }

    /// Stores chunks fetched from a peer, each checked against its hash
    /// first (one wrong chunk refuses the lot: nothing unverified is kept),
    /// in one durable commit: a fetch makes a group of chunks durable with
    /// one fsync, and what is durable is never fetched again.
    pub fn put_fetched(&self, chunks: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        if chunks.iter().any(|(h, b)| content::hash(b) != *h) {
            return Err(Error::ChunkMismatch);
        }
        // Held until the entries that name them are ingested (see `gc.rs`).
        self.held.add(chunks.iter().map(|c| c.0));
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(CHUNKS)?;
            let mut collected = txn.open_table(COLLECTED)?;
            for (h, bytes) in chunks {
                if t.get(&h.0)?.is_none() {
                    t.insert(&h.0, bytes.as_slice())?;
                    collected.remove(&h.0)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The subset of `hs` this store does not hold.
    pub fn missing_chunks(&self, hs: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(CHUNKS)?;
        let mut out = Vec::new();
        for h in hs {
            if t.get(&h.0)?.is_none() {
                out.push(*h);
            }
        }
        Ok(out)
    }

    /// Rows kept for parents named before they arrived.
    pub fn awaited_count(&self) -> Result<u64> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(AWAITED)?.len()?)
    }

    pub fn chunk_count(&self) -> Result<u64> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(CHUNKS)?.len()?)
    }
}

//! Space: which chunks the kept versions need, and collecting the rest.
//!
//! Entries are never collected (they are the signed history, and small);
//! only content chunks are. The rule, per op that refers to chunks:
//!
//! - a version written within the retention window is kept;
//! - a key's current head is kept, unless the caller says the key was
//!   *retired* (its file deleted) at a time before the window, and the head
//!   is no newer than that: the file system knows which keys belong to
//!   deleted files, the store does not;
//! - everything else is collectable.
//!
//! A chunk is collected only when an op that is not kept names it and no kept
//! op names it. Chunks no entry names yet are never touched: they belong to a
//! write on its way to the store. So do chunks a writer *holds*
//! ([`Store::hold_chunks`], and every chunk handed to `put_chunks` or
//! `put_content`) until the entry naming them is written; and the whole
//! collection runs under the writer lock, so no entry is written between the
//! plan and the delete.
//!
//! Collected chunks are remembered in `COLLECTED`: a peer asking for one is
//! told it was collected (not that it is missing), an entry naming one is
//! still taken, and a read of one says the version is no longer kept.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::ids::ChunkHash;
use crate::store::Store;
use crate::tables::*;

/// How long every version is kept (`None`: for ever), as of `now_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Keep {
    pub window_ms: Option<u64>,
    pub now_ms: u64,
}

impl Keep {
    fn within(&self, at_ms: u64) -> bool {
        self.window_ms
            .is_none_or(|w| at_ms.saturating_add(w) >= self.now_ms)
    }
}

/// What the store's space goes to, and what a collection would free.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// The store file's size on disk.
    pub file_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Chunks only old (superseded or deleted) versions need: what history costs.
    pub history_bytes: u64,
    /// What a collection under this policy would free now.
    pub free_chunks: u64,
    pub free_bytes: u64,
    /// Chunks collected so far (here or by the peers they were asked from).
    pub collected: u64,
}

/// What a collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub chunks: u64,
    pub bytes: u64,
    pub file_before: u64,
    pub file_after: u64,
}

/// Chunks named by writes on their way to the store, with when they were
/// held. A write that never lands (a file made and deleted within one
/// group-commit window) leaves its chunks here: they are let go after
/// [`HOLD_FOR`], far beyond any write's way to the store.
#[derive(Default)]
pub(crate) struct Held(Mutex<HashMap<ChunkHash, Instant>>);

const HOLD_FOR: Duration = Duration::from_secs(3600);

impl Held {
    pub(crate) fn add(&self, hs: impl IntoIterator<Item = ChunkHash>) {
        let now = Instant::now();
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.extend(hs.into_iter().map(|h| (h, now)));
        if held.len() > 1 << 17 {
            held.retain(|_, at| now.duration_since(*at) < HOLD_FOR);
        }
    }
    /// The entry naming them is written: they are an entry's refs now.
    pub(crate) fn written(&self, hs: impl IntoIterator<Item = ChunkHash>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !held.is_empty() {
            for h in hs {
                held.remove(&h);
            }
        }
    }
    fn contains(&self, h: &ChunkHash) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(h)
    }
    fn prune(&self) {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| now.duration_since(*at) < HOLD_FOR);
    }
}

struct Plan {
    dead: Vec<ChunkHash>,
    space: Space,
}

impl Store {
    /// Marks `hs` as named by a write on its way (see the module doc), and
    /// returns those not here (missing or collected): a writer that reuses
    /// old content checks it this way, so it cannot be collected in between.
    pub fn hold_chunks(&self, hs: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.held.add(hs.iter().copied());
        self.missing_chunks(hs)
    }

    /// The space report under `keep`; `retired(key)` is when the key's file
    /// was deleted (the delete's clock), if it was.
    pub fn space(&self, keep: Keep, retired: &dyn Fn(&[u8]) -> Option<Hlc>) -> Result<Space> {
        Ok(self.plan(keep, retired)?.space)
    }

    /// Collects every chunk no kept version needs, then compacts the file
    /// so that the space goes back to the file system.
    pub fn collect_garbage(&self, keep: Keep, retired: &dyn Fn(&[u8]) -> Option<Hlc>) -> Result<Collected> {
        let file_before = self.file_bytes();
        let clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let plan = self.plan(keep, retired)?;
        let mut out = Collected {
            file_before,
            ..Default::default()
        };
        if !plan.dead.is_empty() {
            let txn = self.db().begin_write()?;
            {
                let mut chunks = txn.open_table(CHUNKS)?;
                let mut collected = txn.open_table(COLLECTED)?;
                for h in &plan.dead {
                    // Held now means a write began naming it after the plan.
                    if self.held.contains(h) {
                        continue;
                    }
                    if let Some(v) = chunks.remove(&h.0)? {
                        out.chunks += 1;
                        out.bytes += v.value().len() as u64;
                    }
                    collected.insert(&h.0, keep.now_ms)?;
                }
            }
            txn.commit()?;
        }
        drop(clock);
        if out.chunks > 0 {
            self.compact()?;
        }
        out.file_after = self.file_bytes();
        tracing::info!(
            chunks = out.chunks,
            bytes = out.bytes,
            file_before = out.file_before,
            file_after = out.file_after,
            "collected chunks no kept version needs"
        );
        Ok(out)
    }

    /// Records chunks a peer said it collected: entries naming them are taken
    /// without them (see `ingest`), and they are not asked for again.
    pub fn note_collected(&self, hs: &[ChunkHash], now_ms: u64) -> Result<()> {
        if hs.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        {
            let chunks = txn.open_table(CHUNKS)?;
            let mut t = txn.open_table(COLLECTED)?;
            for h in hs {
                if chunks.get(&h.0)?.is_none() {
                    t.insert(&h.0, now_ms)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Was this chunk collected (here, or by the peer it was asked from)?
    pub fn is_collected(&self, h: &ChunkHash) -> Result<bool> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(COLLECTED)?.get(&h.0)?.is_some())
    }

    pub fn file_bytes(&self) -> u64 {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    fn plan(&self, keep: Keep, retired: &dyn Fn(&[u8]) -> Option<Hlc>) -> Result<Plan> {
        self.held.prune();
        let txn = self.db().begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let heads = txn.open_table(HEADS)?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut kept: HashSet<ChunkHash> = HashSet::new();
        let mut current: HashSet<ChunkHash> = HashSet::new();
        let mut dropped: HashSet<ChunkHash> = HashSet::new();
        let mut old: HashSet<ChunkHash> = HashSet::new();
        for row in entries.iter()? {
            let (id, v) = row?;
            let e = Entry::decode_unverified(v.value().1).map_err(|r| Error::Damaged(r.to_string()))?;
            let at = e.hlc.ms();
            for op in e.ops.iter().filter(|op| !op.refs.is_empty()) {
                let refs = op.refs.iter().filter_map(|r| ChunkHash::from_slice(r));
                let head = heads.get((op.key.as_slice(), id.value()))?.is_some();
                // A deleted file's content is history from its delete on
                // (a write after the delete is not covered by it).
                let gone = retired(&op.key).filter(|gone| head && e.hlc <= *gone);
                let keep_it = match (head, gone) {
                    (true, Some(gone)) => keep.within(gone.ms()),
                    (true, None) => true,
                    (false, _) => keep.within(at),
                };
                match (keep_it, head && gone.is_none()) {
                    (true, true) => {
                        for r in refs {
                            kept.insert(r);
                            current.insert(r);
                        }
                    }
                    (true, false) => {
                        for r in refs {
                            kept.insert(r);
                            old.insert(r);
                        }
                    }
                    (false, _) => {
                        for r in refs {
                            dropped.insert(r);
                            old.insert(r);
                        }
                    }
                }
            }
        }
        let mut space = Space {
            file_bytes: self.file_bytes(),
            chunks: chunks.len()?,
            collected: txn.open_table(COLLECTED)?.len()?,
            ..Default::default()
        };
        for row in chunks.iter()? {
            let (_, v) = row?;
            space.chunk_bytes += v.value().len() as u64;
        }
        let size = |h: &ChunkHash| -> Result<Option<u64>> { Ok(chunks.get(&h.0)?.map(|v| v.value().len() as u64)) };
        for h in old.difference(&current) {
            space.history_bytes += size(h)?.unwrap_or(0);
        }
        let mut dead = Vec::new();
        for h in dropped.difference(&kept) {
            if self.held.contains(h) {
                continue;
            }
            if let Some(n) = size(h)? {
                space.free_chunks += 1;
                space.free_bytes += n;
                dead.push(*h);
            }
        }
        Ok(Plan { dead, space })
    }

    /// Gives the file's free pages back to the file system. Waits for every
    /// reader to let go (redb compacts only a handle nobody else holds).
    fn compact(&self) -> Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        let _w = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        let start = std::time::Instant::now();
        loop {
            if let Some(db) = std::sync::Arc::get_mut(&mut slot) {
                while db.compact().map_err(|e| Error::Db(e.to_string()))? {}
                return Ok(());
            }
            if start.elapsed() > std::time::Duration::from_secs(10) {
                return Err(Error::Db("the store is still in use; cannot compact it".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

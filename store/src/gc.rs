//! Space: which chunks the kept versions need, and collecting the rest.
//!
//! Entries are never collected (they are the signed history, and small);
//! only content chunks are. The rule, per op that refers to chunks:
//!
//! - a key's current head is kept, unless the caller says the key was
//!   *retired* (its file deleted): then it is kept for the retention window
//!   after the delete (a write after the delete is not covered by it);
//! - a version that was replaced is kept for the window after it was
//!   replaced (the clock of the first entry naming it as a parent for that
//!   key), so overwriting an old file by mistake leaves a window to restore it;
//! - everything else is collectable.
//!
//! A chunk is collected only when an op that is not kept names it and no kept
//! op names it, nor a parked orphan. Chunks no entry names yet are never
//! touched; nor are chunks *held*: every chunk handed to `put_chunks`,
//! `put_content` or `put_fetched` (a write or an ingest on its way) or to
//! [`Store::hold_chunks`] (a restore, an open file's base), until the entry
//! naming it is written or ingested; nor chunks named by entries written
//! after the plan was made. The delete runs under the writer lock and
//! re-reads what was written since the plan, so nothing lands between the
//! last look and the delete.
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
use crate::ids::{ChunkHash, EntryId};
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
        self.window_ms.is_none_or(|w| at_ms.saturating_add(w) >= self.now_ms)
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

/// Chunks named by writes or ingests on their way to the store: each hold
/// is counted, and let go when the entry naming the chunk is written or
/// ingested. A hold nobody lets go (a file made and deleted within one
/// group-commit window, a fetch whose entries never applied) expires after
/// [`HOLD_FOR`], far beyond any write's way to the store.
#[derive(Default)]
pub(crate) struct Held(Mutex<HashMap<ChunkHash, (u32, Instant)>>);

pub(crate) const HOLD_FOR: Duration = Duration::from_secs(3600);

/// [`HOLD_FOR`], unless the test hook `LATTICE_TEST_HOLD_FOR_MS` says
/// otherwise (so a test can see what protects content once holds expired).
fn hold_for() -> Duration {
    static D: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("LATTICE_TEST_HOLD_FOR_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(HOLD_FOR, Duration::from_millis)
    })
}

impl Held {
    pub(crate) fn add(&self, hs: impl IntoIterator<Item = ChunkHash>) {
        let now = Instant::now();
        let hs: HashSet<ChunkHash> = hs.into_iter().collect();
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for h in hs {
            let e = held.entry(h).or_insert((0, now));
            *e = (e.0.saturating_add(1), now);
        }
        if held.len() > 1 << 17 {
            held.retain(|_, (_, at)| now.duration_since(*at) < hold_for());
        }
    }
    /// The entries naming them are in the store: one hold each let go.
    pub(crate) fn release(&self, hs: impl IntoIterator<Item = ChunkHash>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_empty() {
            return;
        }
        let hs: HashSet<ChunkHash> = hs.into_iter().collect();
        for h in hs {
            if let Some(e) = held.get_mut(&h) {
                e.0 -= 1;
                if e.0 == 0 {
                    held.remove(&h);
                }
            }
        }
    }
    fn contains(&self, h: &ChunkHash) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(h)
            .is_some_and(|(_, at)| at.elapsed() < hold_for())
    }
    fn prune(&self) {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, at)| now.duration_since(*at) < hold_for());
    }
}

struct Plan {
    dead: Vec<ChunkHash>,
    space: Space,
    /// The log end the plan saw: entries from here on were written after it.
    log_end: u64,
}

impl Store {
    /// Marks `hs` as named by a write on its way (see the module doc), and
    /// returns those not here (missing or collected): a writer that reuses
    /// old content checks it this way, so it cannot be collected in between.
    pub fn hold_chunks(&self, hs: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.held.add(hs.iter().copied());
        // A collection that looked at the holds before this one finishes
        // first: what it deleted is missing below, what it did not is held.
        drop(self.clock.lock().unwrap_or_else(|p| p.into_inner()));
        self.missing_chunks(hs)
    }

    /// The space report under `keep`; `retired(key)` is when the key's file
    /// was deleted (the delete's clock), if it was.
    pub fn space(&self, keep: Keep, retired: &dyn Fn(&[u8]) -> Option<Hlc>) -> Result<Space> {
        Ok(self.plan(keep, retired, &[])?.space)
    }

    /// Collects every chunk no kept version needs (nor `also_keep`: the
    /// caller's, e.g. what open files stand on), then compacts the file so
    /// that the space goes back to the file system.
    pub fn collect_garbage(
        &self,
        keep: Keep,
        retired: &dyn Fn(&[u8]) -> Option<Hlc>,
        also_keep: &[ChunkHash],
    ) -> Result<Collected> {
        let file_before = self.file_bytes();
        // Planned without the writer lock (it reads the whole log); what was
        // written since is looked at again under it, below.
        let plan = self.plan(keep, retired, also_keep)?;
        let mut out = Collected {
            file_before,
            ..Default::default()
        };
        if !plan.dead.is_empty() {
            let _w = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            let txn = self.db().begin_write()?;
            {
                let log = txn.open_table(LOG)?;
                let entries = txn.open_table(ENTRIES)?;
                let mut since: HashSet<ChunkHash> = HashSet::new();
                for row in log.range(plan.log_end..)? {
                    let (_, id) = row?;
                    if let Some(v) = entries.get(id.value())?
                        && let Ok(e) = Entry::decode_unverified(v.value().1)
                    {
                        since.extend(e.refs());
                    }
                }
                let mut chunks = txn.open_table(CHUNKS)?;
                let mut collected = txn.open_table(COLLECTED)?;
                for h in &plan.dead {
                    if self.held.contains(h) || since.contains(h) {
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
        if out.chunks > 0 || self.compact_owed.load(std::sync::atomic::Ordering::Relaxed) {
            self.compact();
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

    fn plan(&self, keep: Keep, retired: &dyn Fn(&[u8]) -> Option<Hlc>, also_keep: &[ChunkHash]) -> Result<Plan> {
        self.held.prune();
        let txn = self.db().begin_read()?;
        let log_end = match txn.open_table(LOG)?.last()? {
            Some((k, _)) => k.value() + 1,
            None => 0,
        };
        let entries = txn.open_table(ENTRIES)?;
        let heads = txn.open_table(HEADS)?;
        let chunks = txn.open_table(CHUNKS)?;
        // Pass 1: the writes that name chunks.
        struct Write {
            key: Vec<u8>,
            entry: EntryId,
            hlc: Hlc,
            refs: Vec<ChunkHash>,
        }
        let mut writes: Vec<Write> = Vec::new();
        for row in entries.iter()? {
            let (_, v) = row?;
            let e = Entry::decode_unverified(v.value().1).map_err(|r| Error::Damaged(r.to_string()))?;
            for op in e.ops.into_iter().filter(|op| !op.refs.is_empty()) {
                writes.push(Write {
                    refs: op.refs.iter().filter_map(|r| ChunkHash::from_slice(r)).collect(),
                    key: op.key,
                    entry: e.id,
                    hlc: e.hlc,
                });
            }
        }
        // Pass 2: when each was replaced (the first entry naming it as a
        // parent for its key).
        let written: HashSet<(&[u8], EntryId)> = writes.iter().map(|w| (w.key.as_slice(), w.entry)).collect();
        let keys: HashSet<&[u8]> = writes.iter().map(|w| w.key.as_slice()).collect();
        let mut replaced: HashMap<(Vec<u8>, EntryId), Hlc> = HashMap::new();
        for row in entries.iter()? {
            let (_, v) = row?;
            let Ok(e) = Entry::decode_unverified(v.value().1) else {
                continue;
            };
            for op in e.ops.iter().filter(|op| keys.contains(op.key.as_slice())) {
                for p in &e.parents {
                    if written.contains(&(op.key.as_slice(), *p)) {
                        let at = replaced.entry((op.key.clone(), *p)).or_insert(e.hlc);
                        *at = (*at).min(e.hlc);
                    }
                }
            }
        }
        let mut kept: HashSet<ChunkHash> = HashSet::new();
        let mut current: HashSet<ChunkHash> = HashSet::new();
        let mut dropped: HashSet<ChunkHash> = HashSet::new();
        let mut old: HashSet<ChunkHash> = HashSet::new();
        for w in &writes {
            let head = heads.get((w.key.as_slice(), &w.entry.0))?.is_some();
            let keep_it = if head {
                // A deleted file's content is history from its delete on (a
                // write after the delete is not covered by it).
                match retired(&w.key).filter(|gone| w.hlc <= *gone) {
                    Some(gone) => {
                        old.extend(&w.refs);
                        keep.within(gone.ms())
                    }
                    None => {
                        current.extend(&w.refs);
                        true
                    }
                }
            } else {
                old.extend(&w.refs);
                // Not found: replaced by an entry this store does not hold
                // (it joined by snapshot); then its own clock is the bound.
                let at = replaced.get(&(w.key.clone(), w.entry)).copied().unwrap_or(w.hlc);
                keep.within(at.ms())
            };
            if keep_it {
                kept.extend(&w.refs);
            } else {
                dropped.extend(&w.refs);
            }
        }
        kept.extend(also_keep);
        // Parked entries wait for their author's gap: their content stays.
        for row in txn.open_table(ORPHANS)?.iter()? {
            let (_, v) = row?;
            if let Ok(e) = Entry::decode_unverified(v.value().1) {
                kept.extend(e.refs());
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
        Ok(Plan { dead, space, log_end })
    }

    /// Gives the file's free pages back to the file system, best effort:
    /// redb compacts only a handle no transaction is open on, so a busy store
    /// is tried a few times, then left for the next collection (the freed
    /// pages are reused meanwhile; only the file does not shrink).
    fn compact(&self) {
        if self.path.is_none() {
            return;
        }
        use std::sync::atomic::Ordering;
        for attempt in 0..20 {
            let done = {
                let _w = self.clock.lock().unwrap_or_else(|p| p.into_inner());
                let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
                match std::sync::Arc::get_mut(&mut slot) {
                    None => Err("the store is in use".to_string()),
                    Some(db) => loop {
                        match db.compact() {
                            Ok(true) => continue,
                            Ok(false) => break Ok(()),
                            Err(e) => break Err(e.to_string()),
                        }
                    },
                }
            };
            match done {
                Ok(()) => {
                    self.compact_owed.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) if attempt == 19 => {
                    tracing::warn!("cannot compact the store now ({e}); the next collection tries again");
                    self.compact_owed.store(true, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

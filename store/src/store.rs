//! [`Store`]: one share's entries and state in one redb database.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::entry::{Draft, Entry, Op};
use crate::error::{Error, Result};
use crate::head::{self, Head};
use crate::hlc::{Clock, Hlc};
use crate::identity::Identity;
use crate::ids::{AuthorId, ChunkHash, EntryId, ShareId};
use crate::index::{self, Tables};
use crate::tables::*;
use crate::watch::{Change, Gap, Watchers};

/// Settings of a store. `Default` gives the values the README names.
#[derive(Clone, Debug)]
pub struct Config {
    /// Entries whose HLC is further ahead of this machine's clock are refused.
    pub max_drift_ms: u64,
    /// Orphans older than this are dropped; anti-entropy fetches them again.
    pub orphan_ttl_ms: u64,
    /// An entry further than this ahead of its author's chain here is
    /// refused, not parked: it bounds what one author's orphans can take
    /// (sync sends entries in order; it comes again once the gap is filled).
    pub max_orphan_gap: u64,
    /// How many of the newest log entries are re-verified on open.
    pub tail_check: usize,
    /// Check every entry against the share's membership (see `membership.rs`).
    /// Off for a bare store; the daemon turns it on.
    pub enforce_membership: bool,
    /// redb's page cache. Its default (1 GiB) let a daemon's memory grow with
    /// every byte written or read through it; the OS page cache does that job.
    pub cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_drift_ms: 10 * 60 * 1000,
            orphan_ttl_ms: 24 * 3600 * 1000,
            max_orphan_gap: 10_000,
            tail_check: 64,
            enforce_membership: false,
            cache_bytes: 16 << 20,
        }
    }
}

/// Meta key: the highest seq this node ever wrote.
const OWN_SEQ: &str = "own_seq";

/// One entry a local write made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub id: EntryId,
    pub hlc: Hlc,
}

/// Where the database lives.
#[derive(Clone, Copy, Debug)]
pub enum Location<'a> {
    File(&'a Path),
    /// For tests and benches: gone when the store is dropped.
    Memory,
}

/// author -> (last seq, last entry id).
pub type Frontier = BTreeMap<AuthorId, (u64, EntryId)>;

/// What opening found and did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// Entries cut from the end of the log because they failed verification.
    pub cut: usize,
    pub orphans_expired: usize,
}

pub struct Store {
    /// Behind a lock so that it can be reopened after a failed write (redb
    /// refuses every later write on a handle that saw an I/O error).
    pub(crate) db: std::sync::RwLock<Arc<Database>>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) share: ShareId,
    pub(crate) me: Identity,
    /// Also the writer lock: held across every write transaction, so seqs and
    /// HLCs are handed out in commit order.
    pub(crate) clock: Mutex<Clock>,
    pub(crate) cfg: Config,
    pub(crate) watchers: Watchers,
    /// Log positions below this are durable here; only they may leave the machine.
    pub(crate) durable: tokio::sync::watch::Sender<u64>,
    /// Table operations indexing has done (see `index.rs`).
    pub(crate) index_work: std::sync::atomic::AtomicU64,
    /// (own entries held, own entries ever written) when a cut lost some: no
    /// local write until peers return them, or this node would sign a second
    /// entry with a seq it used (a fork every peer refuses).
    pub(crate) own_lost: Mutex<Option<(u64, u64)>>,
    /// Chunks committed unsynced, kept until a synced commit covers them.
    pub(crate) shelf: crate::shelf::Shelf,
    /// Chunks named by writes on their way to the store (see `gc.rs`).
    pub(crate) held: crate::gc::Held,
    /// A collection freed pages but could not compact the file (it was busy).
    pub(crate) compact_owed: std::sync::atomic::AtomicBool,
    report: OpenReport,
}

fn open_db(loc: Location, cfg: &Config) -> Result<Database> {
    let mut b = Database::builder();
    b.set_cache_size(cfg.cache_bytes);
    Ok(match loc {
        Location::File(p) => b.create(p)?,
        Location::Memory => b.create_with_backend(redb::backends::InMemoryBackend::new())?,
    })
}

fn loc_path(loc: Location) -> PathBuf {
    match loc {
        Location::File(p) => p.to_owned(),
        Location::Memory => PathBuf::from("<memory>"),
    }
}

impl Store {
    /// Creates a new share, owned by `me`. Its genesis entry carries `genesis`
    /// plus a random nonce (so two shares never share an id).
    pub fn create_share(loc: Location, me: Identity, cfg: Config, mut genesis: Vec<Op>) -> Result<Store> {
        if matches!(loc, Location::File(p) if p.exists()) {
            return Err(Error::StoreExists(loc_path(loc)));
        }
        genesis.push(Op::put("share/nonce", rand::random::<[u8; 16]>().to_vec()));
        let mut clock = Clock::new(Hlc::default(), cfg.max_drift_ms);
        let e = Entry::sign(
            &me,
            Draft {
                share: None,
                seq: 1,
                prev: None,
                hlc: clock.tick(),
                parents: vec![],
                ops: genesis,
            },
        )?;
        let share = ShareId(e.id.0);
        let db = open_db(loc, &cfg)?;
        let txn = db.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            t.meta.insert("share", share.0.as_slice())?;
            t.append(&e, &mut Vec::new(), true)?;
            t.meta.insert("hlc", clock.last().0.to_be_bytes().as_slice())?;
            t.meta.insert(OWN_SEQ, 1u64.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Self::finish_open(db, loc, me, cfg)
    }

    /// Creates an empty store for an existing share; its entries (genesis
    /// first or not) arrive through [`Store::ingest`].
    pub fn create_for_share(loc: Location, me: Identity, share: ShareId, cfg: Config) -> Result<Store> {
        if matches!(loc, Location::File(p) if p.exists()) {
            return Err(Error::StoreExists(loc_path(loc)));
        }
        let db = open_db(loc, &cfg)?;
        let txn = db.begin_write()?;
        Tables::open(&txn)?.meta.insert("share", share.0.as_slice())?;
        txn.commit()?;
        Self::finish_open(db, loc, me, cfg)
    }

    /// Opens an existing store. Re-verifies the newest entries and cuts any that
    /// fail (saying so in the log and in [`Store::open_report`]).
    pub fn open(path: &Path, me: Identity, cfg: Config) -> Result<Store> {
        if !path.exists() {
            return Err(Error::NoShare(path.to_owned()));
        }
        let db = Database::builder().set_cache_size(cfg.cache_bytes).open(path)?;
        Self::finish_open(db, Location::File(path), me, cfg)
    }

    fn finish_open(db: Database, loc: Location, me: Identity, cfg: Config) -> Result<Store> {
        let path = loc_path(loc);
        let txn = db.begin_write()?;
        let (share, hlc, cut, log_end) = {
            let t = Tables::open(&txn)?;
            let share = match t.meta.get("share")? {
                Some(v) => ShareId::from_slice(v.value()).ok_or_else(|| Error::Damaged("share id".into()))?,
                None => return Err(Error::NoShare(path)),
            };
            let hlc = match t.meta.get("hlc")? {
                Some(v) => Hlc(u64::from_be_bytes(
                    v.value().try_into().map_err(|_| Error::Damaged("hlc".into()))?,
                )),
                None => Hlc::default(),
            };
            let cut = damaged_tail(&t, cfg.tail_check)?;
            (share, hlc, cut, t.log_end()?)
        };
        let mut report = OpenReport::default();
        // A store indexed by an earlier format: index it again (the log is the truth).
        let old_index = txn.list_tables()?.any(|t| redb::TableHandle::name(&t) == "superseded");
        if old_index && cut.is_none() {
            index::rebuild(&txn)?;
            tracing::info!(path = %path.display(), "indexed the store again in the current format");
        }
        if let Some(from) = cut {
            report.cut = cut_log(&txn, from)?;
            tracing::warn!(
                path = %path.display(),
                cut = report.cut,
                "the store's newest entries failed verification; cut them and rebuilt the index (peers will send them again)"
            );
        }
        txn.commit()?;
        let log_end = if cut.is_some() { log_end_now(&db)? } else { log_end };
        let store = Store {
            db: std::sync::RwLock::new(Arc::new(db)),
            path: match loc {
                Location::File(p) => Some(p.to_owned()),
                Location::Memory => None,
            },
            durable: tokio::sync::watch::Sender::new(log_end),
            share,
            clock: Mutex::new(Clock::new(hlc, cfg.max_drift_ms)),
            me,
            cfg,
            watchers: Watchers::default(),
            index_work: Default::default(),
            own_lost: Mutex::new(None),
            shelf: Default::default(),
            held: Default::default(),
            compact_owed: Default::default(),
            report,
        };
        store.check_own_chain()?;
        let expired = store.expire_orphans(crate::hlc::wall_ms())?;
        let mut report = store.report.clone();
        report.orphans_expired = expired;
        Ok(Store { report, ..store })
    }

    /// Compares this node's chain here with the highest seq it ever wrote
    /// (kept apart from the log, so a cut of the log cannot lose it).
    pub(crate) fn check_own_chain(&self) -> Result<()> {
        let me = self.author();
        let txn = self.db().begin_write()?;
        let lost = {
            let mut t = Tables::open(&txn)?;
            let (have, _) = t.tip(&me)?;
            let had = match t.meta.get(OWN_SEQ)? {
                Some(v) => u64::from_be_bytes(v.value().try_into().map_err(|_| Error::Damaged("own seq".into()))?),
                None => have,
            };
            let had = had.max(have);
            t.meta.insert(OWN_SEQ, had.to_be_bytes().as_slice())?;
            (have < had).then_some((have, had))
        };
        txn.commit()?;
        let mut slot = self.own_lost.lock().unwrap();
        match (lost, slot.is_some()) {
            (Some((have, had)), false) => tracing::error!(
                "this node's store lost its own entries {} to {had}; it writes nothing until a peer returns them",
                have + 1
            ),
            (None, true) => tracing::info!("this node got its lost entries back from its peers; it writes again"),
            _ => {}
        }
        *slot = lost;
        Ok(())
    }

    /// Why local writes are refused now, if they are (own entries lost).
    pub fn write_blocked(&self) -> Option<String> {
        self.own_lost
            .lock()
            .unwrap()
            .map(|(have, had)| Error::OwnEntriesLost { have, had }.to_string())
    }

    /// Accepts that this node's lost entries are gone for good (no peer ever
    /// got them): it may write again, from the seq it has. A peer that did
    /// get them will refuse what it writes next.
    pub fn forget_lost_entries(&self) -> Result<()> {
        let me = self.author();
        let _w = self.clock.lock().unwrap();
        let txn = self.db().begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            let (have, _) = t.tip(&me)?;
            t.meta.insert(OWN_SEQ, have.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        *self.own_lost.lock().unwrap() = None;
        tracing::warn!("forgot this node's lost entries: it writes again from the seq it has");
        Ok(())
    }

    pub(crate) fn db(&self) -> Arc<Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reopens the database after an I/O error poisoned it (a full disk):
    /// what was committed before is there, what failed is not.
    pub fn reopen(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let _w = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Readers hold the handle only for a call: wait for them to let go,
        // since redb allows one open handle per file.
        let start = std::time::Instant::now();
        while Arc::strong_count(&slot) > 1 {
            if start.elapsed() > std::time::Duration::from_secs(10) {
                return Err(Error::Db("the store is still in use; cannot reopen it".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let placeholder = Arc::new(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?);
        drop(std::mem::replace(&mut *slot, placeholder));
        let db = Database::builder().set_cache_size(self.cfg.cache_bytes).open(path)?;
        *slot = Arc::new(db);
        drop(slot);
        drop(_w);
        // The reopen rolled the file back to its last synced commit.
        self.shelf.reopened();
        tracing::info!(path = %path.display(), "reopened the store");
        if let Err(e) = self.sync() {
            tracing::warn!(
                "cannot yet put back {} bytes of unsynced chunks (kept in memory, tried with the next write): {e}",
                self.shelf.bytes()
            );
        }
        Ok(())
    }

    /// Table operations indexing has done since open: a measure of its cost
    /// that does not depend on the machine.
    pub fn index_work(&self) -> u64 {
        self.index_work.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn share_id(&self) -> ShareId {
        self.share
    }

    pub fn author(&self) -> AuthorId {
        self.me.author()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ---- local writes ----

    /// Writes `ops` as one entry, durable when this returns. The entry names
    /// every current head of every key it writes, so it merges them.
    pub fn write(&self, ops: Vec<Op>) -> Result<EntryId> {
        Ok(self.write_batches(vec![ops], true)?[0].id)
    }

    /// Writes several entries in one transaction (a group commit). With
    /// `durable` false the commit is not synced: a crash may lose it, and a later
    /// durable commit makes it durable (redb orders commits).
    pub fn write_batches(&self, batches: Vec<Vec<Op>>, durable: bool) -> Result<Vec<Written>> {
        let mut clock = self.clock.lock().unwrap();
        if let Some((have, had)) = *self.own_lost.lock().unwrap() {
            return Err(Error::OwnEntriesLost { have, had });
        }
        let mut txn = self.db().begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        let mark = self.shelf.mark();
        let mut changes = Vec::new();
        let mut ids = Vec::with_capacity(batches.len());
        let mut named: Vec<ChunkHash> = Vec::new();
        let log_end;
        {
            let mut t = Tables::open(&txn)?;
            // After a reopen, chunks that entries may name go back first.
            for (h, b) in self.shelf.to_restore() {
                if t.chunks.get(&h.0)?.is_none() {
                    t.chunks.insert(&h.0, b.as_slice())?;
                }
            }
            let me = self.me.author();
            for ops in batches {
                let ops = last_op_per_key(ops);
                named.extend(
                    ops.iter()
                        .flat_map(|op| op.refs.iter())
                        .filter_map(|r| ChunkHash::from_slice(r)),
                );
                let (seq, prev) = t.tip(&me)?;
                let mut parents = BTreeSet::new();
                for op in &ops {
                    parents.extend(t.heads_of(&op.key)?.into_iter().map(|h| h.entry));
                }
                let hlc = clock.tick();
                let e = Entry::sign(
                    &self.me,
                    Draft {
                        share: Some(self.share),
                        seq: seq + 1,
                        prev,
                        hlc,
                        parents: parents.into_iter().collect(),
                        ops,
                    },
                )?;
                if self.cfg.enforce_membership
                    && let Some(r) = crate::membership::check(&t, &e, crate::hlc::wall_ms())?
                {
                    return Err(r.into());
                }
                t.append(&e, &mut changes, true)?;
                ids.push(Written { id: e.id, hlc });
            }
            t.meta.insert("hlc", clock.last().0.to_be_bytes().as_slice())?;
            let (own, _) = t.tip(&me)?;
            t.meta.insert(OWN_SEQ, own.to_be_bytes().as_slice())?;
            log_end = t.log_end()?;
            self.index_work.fetch_add(t.work, std::sync::atomic::Ordering::Relaxed);
        }
        txn.commit()?;
        if durable {
            self.shelf.synced(mark);
            self.durable.send_replace(log_end);
        }
        drop(clock);
        self.held.release(named);
        self.watchers.notify(&changes, &[]);
        Ok(ids)
    }

    /// Makes every earlier non-durable commit durable (one synced commit).
    pub fn sync(&self) -> Result<()> {
        let _w = self.clock.lock().unwrap();
        let txn = self.db().begin_write()?;
        let mark = self.shelf.mark();
        let log_end = {
            let mut t = Tables::open(&txn)?;
            for (h, b) in self.shelf.to_restore() {
                if t.chunks.get(&h.0)?.is_none() {
                    t.chunks.insert(&h.0, b.as_slice())?;
                }
            }
            t.log_end()?
        };
        txn.commit()?;
        self.shelf.synced(mark);
        self.durable.send_replace(log_end);
        Ok(())
    }

    /// The durable log end, and its changes: the network sends local entries
    /// only once they are durable here.
    pub fn watch_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Durable entries at log positions `from..`, at most `limit`, with their positions.
    pub fn log_since(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let end = *self.durable.borrow();
        let txn = self.db().begin_read()?;
        let log = txn.open_table(LOG)?;
        let entries = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for row in log.range(from..end)?.take(limit) {
            let (pos, id) = row?;
            if let Some(v) = entries.get(id.value())? {
                out.push((pos.value(), v.value().1.to_vec()));
            }
        }
        Ok(out)
    }

    /// Content chunks that `entries` (wire bytes) refer to and this store
    /// lacks; all of them are held until the entries are ingested.
    pub fn missing_refs(&self, entries: &[Vec<u8>]) -> Result<Vec<ChunkHash>> {
        let mut refs: Vec<ChunkHash> = entries
            .iter()
            // Only a peek: ingest verifies, and chunks are checked by hash.
            .filter_map(|b| Entry::decode_unverified(b).ok())
            .flat_map(|e| e.refs().collect::<Vec<_>>())
            .collect();
        refs.sort();
        refs.dedup();
        // Held until the entries are ingested, the ones here too (see
        // `gc.rs`): a collection cannot take them between this look and the
        // ingest.
        self.hold_chunks(&refs)
    }

    // ---- reads ----

    pub fn heads(&self, key: &[u8]) -> Result<Vec<Head>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(HEADS)?;
        let mut out = Vec::new();
        for row in t.range((key, &[0u8; 32])..=(key, &[0xffu8; 32]))? {
            let (k, v) = row?;
            out.push(Head::decode_record(EntryId(*k.value().1), v.value()));
        }
        Ok(out)
    }

    /// The heads of each of `keys`, read in one transaction (one snapshot).
    pub fn heads_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Vec<Head>>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(HEADS)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut hs = Vec::new();
            for row in t.range((key.as_slice(), &[0u8; 32])..=(key.as_slice(), &[0xffu8; 32]))? {
                let (k, v) = row?;
                hs.push(Head::decode_record(EntryId(*k.value().1), v.value()));
            }
            out.push(hs);
        }
        Ok(out)
    }

    /// The winning value of `key`; `None` if absent or deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(head::winner(&self.heads(key)?).and_then(|h| h.value.clone()))
    }

    /// Every live key under `prefix` with its winning value, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(HEADS)?;
        let mut out = Vec::new();
        let mut group: Vec<Head> = Vec::new();
        let mut group_key: Vec<u8> = Vec::new();
        let flush = |key: &[u8], group: &mut Vec<Head>, out: &mut Vec<(Vec<u8>, Vec<u8>)>| {
            if let Some(v) = head::winner(group).and_then(|h| h.value.clone()) {
                out.push((key.to_vec(), v));
            }
            group.clear();
        };
        for row in t.range((prefix, &[0u8; 32])..)? {
            let (k, v) = row?;
            let (key, id) = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if key != group_key.as_slice() {
                flush(&group_key, &mut group, &mut out);
                group_key = key.to_vec();
            }
            group.push(Head::decode_record(EntryId(*id), v.value()));
        }
        flush(&group_key, &mut group, &mut out);
        Ok(out)
    }

    /// Every key under `prefix` that has more than one head.
    pub fn multi_headed(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Head>)>> {
        let mut all = self.scan_heads(prefix)?;
        all.retain(|(_, hs)| hs.len() > 1);
        Ok(all)
    }

    /// Calls `f` with every key under `prefix` and all its heads (tombstones
    /// included), in key order, one key at a time: a whole share is never in
    /// memory at once.
    pub fn each_heads(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], Vec<Head>)) -> Result<()> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(HEADS)?;
        let mut key: Vec<u8> = Vec::new();
        let mut heads: Vec<Head> = Vec::new();
        for row in t.range((prefix, &[0u8; 32])..)? {
            let (k, v) = row?;
            let (k, id) = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if k != key.as_slice() && !heads.is_empty() {
                f(&key, std::mem::take(&mut heads));
            }
            if k != key.as_slice() {
                key = k.to_vec();
            }
            heads.push(Head::decode_record(EntryId(*id), v.value()));
        }
        if !heads.is_empty() {
            f(&key, heads);
        }
        Ok(())
    }

    /// Every key under `prefix` with all its heads (tombstones included), in key order.
    pub fn scan_heads(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Head>)>> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(HEADS)?;
        let mut out: Vec<(Vec<u8>, Vec<Head>)> = Vec::new();
        for row in t.range((prefix, &[0u8; 32])..)? {
            let (k, v) = row?;
            let (key, id) = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let h = Head::decode_record(EntryId(*id), v.value());
            match out.last_mut() {
                Some((k, hs)) if k.as_slice() == key => hs.push(h),
                _ => out.push((key.to_vec(), vec![h])),
            }
        }
        Ok(out)
    }

    /// Changes to keys under `prefix`, local and ingested alike, from now on.
    pub fn watch(&self, prefix: &[u8]) -> UnboundedReceiver<Change> {
        self.watchers.watch(prefix)
    }

    /// Gaps found by ingest, from now on.
    pub fn watch_gaps(&self) -> UnboundedReceiver<Gap> {
        self.watchers.watch_gaps()
    }

    // ---- the sync view ----

    pub fn frontier(&self) -> Result<Frontier> {
        let txn = self.db().begin_read()?;
        let t = txn.open_table(FRONTIER)?;
        let mut f = Frontier::new();
        for row in t.iter()? {
            let (a, v) = row?;
            let (seq, id) = v.value();
            f.insert(AuthorId(*a.value()), (seq, EntryId(*id)));
        }
        Ok(f)
    }

    /// Up to `limit` entries this store has and a peer at `theirs` lacks, as
    /// wire bytes, in this store's log order (each chain in seq order).
    pub fn entries_after(&self, theirs: &BTreeMap<AuthorId, u64>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let txn = self.db().begin_read()?;
        let chain = txn.open_table(CHAIN)?;
        let entries = txn.open_table(ENTRIES)?;
        let lookup = |a: &AuthorId, seq: u64| -> Result<(u64, [u8; 32])> {
            let id = *chain
                .get((&a.0, seq))?
                .ok_or_else(|| Error::Damaged("chain gap".into()))?
                .value();
            let pos = entries
                .get(&id)?
                .ok_or_else(|| Error::Damaged("chain names a missing entry".into()))?
                .value()
                .0;
            Ok((pos, id))
        };
        // A k-way merge of the chains by log position: each chain is already in
        // log order, so this costs O(limit log authors), not a sort of the backlog.
        let mut heap = BinaryHeap::new();
        // The frontier from the same snapshot as the chains it walks.
        let mut mine = Frontier::new();
        for row in txn.open_table(FRONTIER)?.iter()? {
            let (a, v) = row?;
            let (seq, id) = v.value();
            mine.insert(AuthorId(*a.value()), (seq, EntryId(*id)));
        }
        // A chain held from a floor (a snapshot) serves only a peer that has
        // everything below it: anything else would reach it with a gap.
        let floors = txn.open_table(FLOORS)?;
        for (a, (last, _)) in &mine {
            let from = theirs.get(a).copied().unwrap_or(0).saturating_add(1);
            let floor = floors.get(&a.0)?.map_or(1, |f| f.value());
            if from < floor {
                continue;
            }
            if from <= *last {
                let (pos, id) = lookup(a, from)?;
                heap.push(Reverse((pos, *a, from, *last, id)));
            }
        }
        let durable = *self.durable.borrow();
        let mut out = Vec::new();
        while let Some(Reverse((pos, a, seq, last, id))) = heap.pop() {
            // Popped in log order: everything after a non-durable entry is too.
            if out.len() >= limit || pos >= durable {
                break;
            }
            out.push(entries.get(&id)?.expect("looked up above").value().1.to_vec());
            if seq < last {
                let (pos, id) = lookup(&a, seq + 1)?;
                heap.push(Reverse((pos, a, seq + 1, last, id)));
            }
        }
        Ok(out)
    }

    /// Checks every chain end to end: contiguous seqs, prev hashes that link,
    /// signatures that verify, ids that match. Returns the number of entries.
    pub fn verify_all(&self) -> Result<usize> {
        let txn = self.db().begin_read()?;
        let chain = txn.open_table(CHAIN)?;
        let entries = txn.open_table(ENTRIES)?;
        let mut n = 0;
        let floors = self.floors()?;
        for (a, (last, last_id)) in self.frontier()? {
            let floor = floors.get(&a).copied().unwrap_or(1);
            let mut prev = None;
            for seq in floor..=last {
                let damaged = |why: &str| Error::Damaged(format!("author {a} seq {seq}: {why}"));
                let id = *chain.get((&a.0, seq))?.ok_or_else(|| damaged("missing"))?.value();
                let bytes = entries.get(&id)?.ok_or_else(|| damaged("entry missing"))?;
                let e = Entry::decode(bytes.value().1).map_err(|r| damaged(&r.to_string()))?;
                // The floor's own predecessor is not here (a snapshot).
                let links = e.prev == prev || (seq == floor && floor > 1);
                if e.id.0 != id || e.author != a || e.seq != seq || !links {
                    return Err(damaged("does not link"));
                }
                prev = Some(e.id);
                n += 1;
            }
            if prev != Some(last_id) {
                return Err(Error::Damaged(format!("author {a}: frontier does not match chain")));
            }
        }
        Ok(n)
    }
}

fn log_end_now(db: &Database) -> Result<u64> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    Ok(match log.last()? {
        Some((k, _)) => k.value() + 1,
        None => 0,
    })
}

/// Folds repeated keys of one batch into the last op for each (an entry
/// writes a key at most once), keeping first-appearance order.
fn last_op_per_key(ops: Vec<Op>) -> Vec<Op> {
    let mut at = std::collections::HashMap::with_capacity(ops.len());
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        match at.get(&op.key) {
            Some(&i) => out[i] = op,
            None => {
                at.insert(op.key.clone(), out.len());
                out.push(op);
            }
        }
    }
    out
}

/// The log position of the oldest entry among the newest `n` that fails to
/// verify, if any.
fn damaged_tail(t: &Tables, n: usize) -> Result<Option<u64>> {
    let mut bad = None;
    for row in t.log.iter()?.rev().take(n) {
        let (pos, id) = row?;
        let (pos, id) = (pos.value(), *id.value());
        let ok = match t.entries.get(&id)? {
            Some(v) => Entry::decode(v.value().1).is_ok_and(|e| e.id.0 == id) && v.value().0 == pos,
            None => false,
        };
        if !ok {
            bad = Some(pos);
        }
    }
    Ok(bad)
}

/// Removes log positions `from..` and their entries, then rebuilds the index.
fn cut_log(txn: &WriteTransaction, from: u64) -> Result<usize> {
    let mut cut = 0;
    {
        let mut t = Tables::open(txn)?;
        // A snapshot's entries are the base the rest stands on: never cut.
        let from = from.max(crate::index::snapshot_end(&t)?);
        let ids: Vec<[u8; 32]> = t
            .log
            .range(from..)?
            .map(|r| r.map(|(_, v)| *v.value()))
            .collect::<Result<_, _>>()?;
        for id in ids {
            t.entries.remove(&id)?;
            cut += 1;
        }
        t.log.retain_in(from.., |_, _| false)?;
    }
    index::rebuild(txn)?;
    Ok(cut)
}

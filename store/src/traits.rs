//! The two narrow views of a store (ARCHITECTURE.md): the file system sees a
//! key-value store and cannot ingest; the network sees a sync store and cannot
//! put. Each layer takes the trait, never [`Store`] itself.

use std::collections::BTreeMap;
use std::io::Read;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::content::{ChunkCache, Manifest};
use crate::entry::Op;
use crate::error::Result;
use crate::head::Head;
use crate::ids::{AuthorId, ChunkHash, ShareId};
use crate::ingest::Outcome;
use crate::store::{Frontier, Store, Written};
use crate::watch::{Change, Gap};

/// What the file system needs.
pub trait KvStore: Send + Sync {
    fn author(&self) -> AuthorId;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn heads(&self, key: &[u8]) -> Result<Vec<Head>>;
    /// The heads of each key, from one snapshot.
    fn heads_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Vec<Head>>>;
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn scan_heads(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Head>)>>;
    /// [`KvStore::scan_heads`] one key at a time.
    fn each_heads(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], Vec<Head>)) -> Result<()>;
    /// Each inner vec is one entry, applied atomically; see [`Store::write_batches`].
    fn write_batches(&self, batches: Vec<Vec<Op>>, durable: bool) -> Result<Vec<Written>>;
    /// Makes every earlier non-durable write durable.
    fn sync(&self) -> Result<()>;
    fn watch(&self, prefix: &[u8]) -> UnboundedReceiver<Change>;
    fn put_content(&self, r: &mut dyn Read) -> Result<Manifest>;
    fn read_content(&self, m: &Manifest, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// [`KvStore::read_content`] with the reader's cache of its last chunk.
    fn read_content_with(&self, m: &Manifest, offset: u64, buf: &mut [u8], cache: &mut ChunkCache) -> Result<usize>;
    /// Stores new chunks (not synced: the entry that names them is; kept in
    /// memory until then, so that a reopen cannot lose them).
    fn put_chunks(&self, chunks: Vec<(ChunkHash, Vec<u8>)>) -> Result<()>;
    /// Reopens the database after a failed write poisoned it.
    fn reopen(&self) -> Result<()>;
    /// Why local writes are refused now, if they are.
    fn write_blocked(&self) -> Option<String>;
    /// Every write of the keys `wanted` accepts, oldest first (see [`Store::history`]).
    fn history(&self, wanted: &dyn Fn(&[u8]) -> bool) -> Result<Vec<crate::KeyWrite>>;
    /// Which of `hashes` this store lacks.
    fn missing_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>>;
    /// Holds `hashes` for a write about to name them; returns those not here
    /// (see [`Store::hold_chunks`]).
    fn hold_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>>;
}

/// What the network needs.
pub trait SyncStore: Send + Sync {
    fn share_id(&self) -> ShareId;
    fn frontier(&self) -> Result<Frontier>;
    fn entries_after(&self, theirs: &BTreeMap<AuthorId, u64>, limit: usize) -> Result<Vec<Vec<u8>>>;
    fn ingest(&self, batch: &[Vec<u8>]) -> Result<Vec<Outcome>>;
    fn watch_gaps(&self) -> UnboundedReceiver<Gap>;
    fn missing_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>>;
    fn chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>>;
    fn put_chunk(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<()>;
    /// Verified chunks from a peer, durable in one commit (see [`Store::put_fetched`]).
    fn put_fetched(&self, chunks: &[(ChunkHash, Vec<u8>)]) -> Result<()>;
    /// Chunks that `entries` refer to and this store lacks.
    fn missing_refs(&self, entries: &[Vec<u8>]) -> Result<Vec<ChunkHash>>;
    /// The durable log end: only entries below it may leave the machine.
    fn watch_durable(&self) -> tokio::sync::watch::Receiver<u64>;
    fn log_since(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The signed entries that decided `peer`'s membership (see [`Store::membership_evidence`]).
    fn membership_evidence(&self, peer: &AuthorId) -> Result<Vec<Vec<u8>>>;
    /// Does `evidence` prove this node was removed or made a reader? (see [`Store::eviction`]).
    fn eviction(&self, evidence: &[Vec<u8>]) -> Option<String>;
    /// Chunks found damaged here, to fetch again from peers.
    fn watch_wanted(&self) -> UnboundedReceiver<ChunkHash>;
    /// Drops orphans older than the store's TTL (see [`Store::expire_orphans`]).
    fn expire_orphans(&self, now_ms: u64) -> Result<usize>;
    /// Was this chunk collected under the retention policy (here or by a peer)?
    fn is_collected(&self, hash: &ChunkHash) -> Result<bool>;
    /// Chunks a peer said it collected (see [`Store::note_collected`]).
    fn note_collected(&self, hashes: &[ChunkHash]) -> Result<()>;
    /// The share's state for a new node (see [`Store::snapshot`]).
    fn snapshot(&self) -> Result<crate::Snapshot>;
    /// Bootstraps an empty store (see [`Store::install_snapshot`]).
    fn install_snapshot(&self, snap: &crate::Snapshot) -> Result<usize>;
    /// Each chain's floor, when this store began from a snapshot (see [`Store::floors`]).
    fn floors(&self) -> Result<BTreeMap<AuthorId, u64>>;
}

impl KvStore for Store {
    fn history(&self, wanted: &dyn Fn(&[u8]) -> bool) -> Result<Vec<crate::KeyWrite>> {
        Store::history(self, wanted)
    }
    fn missing_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        Store::missing_chunks(self, hashes)
    }
    fn hold_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        Store::hold_chunks(self, hashes)
    }
    fn author(&self) -> AuthorId {
        Store::author(self)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Store::get(self, key)
    }
    fn heads(&self, key: &[u8]) -> Result<Vec<Head>> {
        Store::heads(self, key)
    }
    fn heads_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Vec<Head>>> {
        Store::heads_many(self, keys)
    }
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Store::scan(self, prefix)
    }
    fn scan_heads(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Head>)>> {
        Store::scan_heads(self, prefix)
    }
    fn each_heads(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], Vec<Head>)) -> Result<()> {
        Store::each_heads(self, prefix, f)
    }
    fn write_batches(&self, batches: Vec<Vec<Op>>, durable: bool) -> Result<Vec<Written>> {
        Store::write_batches(self, batches, durable)
    }
    fn sync(&self) -> Result<()> {
        Store::sync(self)
    }
    fn watch(&self, prefix: &[u8]) -> UnboundedReceiver<Change> {
        Store::watch(self, prefix)
    }
    fn put_content(&self, r: &mut dyn Read) -> Result<Manifest> {
        Store::put_content(self, r)
    }
    fn read_content(&self, m: &Manifest, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Store::read_content(self, m, offset, buf)
    }
    fn read_content_with(&self, m: &Manifest, offset: u64, buf: &mut [u8], cache: &mut ChunkCache) -> Result<usize> {
        Store::read_content_with(self, m, offset, buf, cache)
    }
    fn put_chunks(&self, chunks: Vec<(ChunkHash, Vec<u8>)>) -> Result<()> {
        Store::put_chunks(self, chunks)
    }
    fn reopen(&self) -> Result<()> {
        Store::reopen(self)
    }
    fn write_blocked(&self) -> Option<String> {
        Store::write_blocked(self)
    }
}

impl SyncStore for Store {
    fn expire_orphans(&self, now_ms: u64) -> Result<usize> {
        Store::expire_orphans(self, now_ms)
    }
    fn share_id(&self) -> ShareId {
        Store::share_id(self)
    }
    fn frontier(&self) -> Result<Frontier> {
        Store::frontier(self)
    }
    fn entries_after(&self, theirs: &BTreeMap<AuthorId, u64>, limit: usize) -> Result<Vec<Vec<u8>>> {
        Store::entries_after(self, theirs, limit)
    }
    fn ingest(&self, batch: &[Vec<u8>]) -> Result<Vec<Outcome>> {
        Store::ingest(self, batch)
    }
    fn watch_gaps(&self) -> UnboundedReceiver<Gap> {
        Store::watch_gaps(self)
    }
    fn missing_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        Store::missing_chunks(self, hashes)
    }
    fn chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>> {
        Store::chunk(self, hash)
    }
    fn put_chunk(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<()> {
        Store::put_chunk(self, hash, bytes)
    }
    fn is_collected(&self, hash: &ChunkHash) -> Result<bool> {
        Store::is_collected(self, hash)
    }
    fn note_collected(&self, hashes: &[ChunkHash]) -> Result<()> {
        Store::note_collected(self, hashes, crate::hlc::wall_ms())
    }
    fn snapshot(&self) -> Result<crate::Snapshot> {
        Store::snapshot(self)
    }
    fn install_snapshot(&self, snap: &crate::Snapshot) -> Result<usize> {
        Store::install_snapshot(self, snap)
    }
    fn floors(&self) -> Result<BTreeMap<AuthorId, u64>> {
        Store::floors(self)
    }
    fn put_fetched(&self, chunks: &[(ChunkHash, Vec<u8>)]) -> Result<()> {
        Store::put_fetched(self, chunks)
    }
    fn missing_refs(&self, entries: &[Vec<u8>]) -> Result<Vec<ChunkHash>> {
        Store::missing_refs(self, entries)
    }
    fn watch_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        Store::watch_durable(self)
    }
    fn log_since(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        Store::log_since(self, from, limit)
    }
    fn membership_evidence(&self, peer: &AuthorId) -> Result<Vec<Vec<u8>>> {
        Store::membership_evidence(self, peer)
    }
    fn eviction(&self, evidence: &[Vec<u8>]) -> Option<String> {
        Store::eviction(self, evidence)
    }
    fn watch_wanted(&self) -> UnboundedReceiver<ChunkHash> {
        Store::watch_wanted(self)
    }
}

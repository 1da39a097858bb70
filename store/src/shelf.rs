//! Chunks committed without a sync, kept in memory until a synced commit
//! covers them.
//!
//! Chunks of a closed file are committed with `Durability::None` (a sync per
//! close would cost a disk flush each time); the group commit of the entry
//! that names them syncs them. But when a later write fails (a full disk, an
//! I/O error), redb refuses every write on that handle and the store must be
//! reopened, which rolls the file back to its last synced commit: the chunks
//! would be gone while the entry naming them is still queued, and that entry
//! would then point at content nobody has. So the bytes stay here until a
//! synced commit, and the first write after a reopen puts them back in the
//! same transaction. The shelf is bounded by [`LIMIT`]: past it, the next put
//! is synced at once.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::ids::ChunkHash;

/// The most bytes kept unsynced; a put that would pass it is synced instead.
pub(crate) const LIMIT: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct Shelf(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    /// (put number, hash, bytes), oldest first.
    chunks: VecDeque<(u64, ChunkHash, Vec<u8>)>,
    next: u64,
    bytes: usize,
    /// The store was reopened: what is shelved may be missing from the file.
    reopened: bool,
}

impl Shelf {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Would `extra` more bytes pass the limit?
    pub(crate) fn full_with(&self, extra: usize) -> bool {
        self.inner().bytes + extra > LIMIT
    }

    /// Keeps chunks about to be committed unsynced. Called inside the write
    /// transaction, so put numbers follow commit order. Returns the first
    /// put number, for [`Shelf::drop_from`] if the commit fails.
    pub(crate) fn keep(&self, chunks: Vec<(ChunkHash, Vec<u8>)>) -> u64 {
        let mut s = self.inner();
        let first = s.next;
        for (h, b) in chunks {
            let n = s.next;
            s.next += 1;
            s.bytes += b.len();
            s.chunks.push_back((n, h, b));
        }
        first
    }

    /// Forgets puts from `first` on (their commit failed; the caller still has them).
    pub(crate) fn drop_from(&self, first: u64) {
        let mut s = self.inner();
        while s.chunks.back().is_some_and(|c| c.0 >= first) {
            let (_, _, b) = s.chunks.pop_back().expect("checked");
            s.bytes -= b.len();
        }
    }

    /// The put number a synced commit beginning now will cover up to
    /// (exclusive). Called inside that write transaction.
    pub(crate) fn mark(&self) -> u64 {
        self.inner().next
    }

    /// A synced commit that began at `mark` succeeded: what it covers is on disk.
    pub(crate) fn synced(&self, mark: u64) {
        let mut s = self.inner();
        while s.chunks.front().is_some_and(|c| c.0 < mark) {
            let (_, _, b) = s.chunks.pop_front().expect("checked");
            s.bytes -= b.len();
        }
        s.reopened = false;
    }

    /// The store was reopened after a failed write.
    pub(crate) fn reopened(&self) {
        self.inner().reopened = true;
    }

    /// After a reopen, every shelved chunk (to put back before anything that
    /// may name it is written); otherwise none.
    pub(crate) fn to_restore(&self) -> Vec<(ChunkHash, Vec<u8>)> {
        let s = self.inner();
        if !s.reopened {
            return Vec::new();
        }
        s.chunks.iter().map(|(_, h, b)| (*h, b.clone())).collect()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.inner().bytes
    }
}

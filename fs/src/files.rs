//! Open files: one record per node (not per handle, so that two handles of one
//! file see each other's writes, as POSIX wants), holding its write buffer.
//!
//! Lock order: a file's `buf` before the model's state lock, never the other
//! way round. The state side reads the size and mtime of a changed file from
//! the atomics, which every change of `buf` updates while holding it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use store::Manifest;

use crate::buffer::FileBuf;

pub const NO_MTIME: i64 = i64::MIN;

/// A file's uncommitted state, shared by its handles.
#[derive(Default)]
pub struct BufCell {
    /// Mirrors `buf.dirty`.
    pub dirty: AtomicBool,
    pub len: AtomicU64,
    /// The mtime the next commit stores, or [`NO_MTIME`] (then: the last write's time).
    pub mtime: AtomicI64,
    /// `None` until the first change loads the base.
    pub buf: Mutex<Option<FileBuf>>,
    /// The last chunk read through this file, verified.
    pub chunks: Mutex<store::ChunkCache>,
}

impl BufCell {
    pub fn new() -> Arc<BufCell> {
        Arc::new(BufCell {
            mtime: AtomicI64::new(NO_MTIME),
            ..Default::default()
        })
    }

    /// Publishes `b`'s size and state to readers of the atomics.
    pub fn publish(&self, b: &FileBuf) {
        self.len.store(b.len(), Ordering::Release);
        self.mtime.store(b.mtime.unwrap_or(NO_MTIME), Ordering::Release);
        self.dirty.store(b.dirty, Ordering::Release);
    }

    /// Nothing buffered any more.
    pub fn clear(&self) {
        self.dirty.store(false, Ordering::Release);
        self.mtime.store(NO_MTIME, Ordering::Release);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}

pub struct OpenFile {
    pub handles: u32,
    pub cell: Arc<BufCell>,
    /// The content reads use while the file is unchanged: (version, manifest).
    pub read_cache: Option<(u64, Arc<Manifest>)>,
    /// Deleted here with writes no one else will see: what its handles read
    /// (content, mtime).
    pub detached: Option<(Arc<Manifest>, i64)>,
    /// The handles that changed the file since its last commit. Closing one
    /// of them commits; closing another (a reader, or a writer whose
    /// changes were committed already) does not publish their unfinished
    /// changes (close-to-open: a close publishes the closer's writes).
    pub writers: std::collections::HashSet<u64>,
}

impl OpenFile {
    pub fn new() -> OpenFile {
        OpenFile {
            handles: 0,
            cell: BufCell::new(),
            read_cache: None,
            detached: None,
            writers: Default::default(),
        }
    }
}

impl Default for OpenFile {
    fn default() -> Self {
        Self::new()
    }
}

//! The Lattice file system: the node-id tree of DESIGN.md over a [`KvStore`],
//! served through FUSE (fuser). Knows nothing of the network.
//!
//! Writes to an open file are buffered (see [`buffer`]) and committed as one
//! entry on flush, fsync and release. Commits are not synced one by one: a
//! group-commit timer makes them durable every [`GROUP_COMMIT`] (and `fsync`
//! does so at once), so a daemon crash loses at most that window.

pub mod buffer;
pub mod inode_map;
pub mod node;
mod ops;
pub mod state;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use store::KvStore;

use crate::inode_map::InodeMap;
use crate::state::State;

/// Close-to-durable window: what `close` returned is synced within this.
pub const GROUP_COMMIT: Duration = Duration::from_millis(5);
/// How long the kernel may cache attributes and names.
pub const TTL: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub store: Arc<dyn KvStore>,
    pub state: Mutex<State>,
    pub spill_dir: PathBuf,
    pub unsynced: AtomicBool,
    pub stop: AtomicBool,
}

/// The `fuser::Filesystem`. Give it to fuser; keep the [`FsHandle`].
pub struct LatticeFs(pub(crate) Arc<Inner>);

/// What the daemon keeps: the group-commit timer and a clean shutdown.
pub struct FsHandle {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OpenError {}

/// Loads the tree from `store`; `local_dir` holds the inode map and spill files.
pub fn open(store: Arc<dyn KvStore>, local_dir: &Path) -> Result<(LatticeFs, FsHandle), OpenError> {
    let inodes = InodeMap::open(&local_dir.join("inodes.redb"))
        .map_err(|e| OpenError(format!("cannot open the inode map in {}: {e}", local_dir.display())))?;
    let state = State::load(store.as_ref(), inodes).map_err(|e| OpenError(format!("cannot load the tree: {e}")))?;
    let spill_dir = local_dir.join("spill");
    std::fs::create_dir_all(&spill_dir).map_err(|e| OpenError(format!("{}: {e}", spill_dir.display())))?;
    let inner = Arc::new(Inner {
        store,
        state: Mutex::new(state),
        spill_dir,
        unsynced: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let syncer = {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while !inner.stop.load(Ordering::Acquire) {
                    std::thread::sleep(GROUP_COMMIT);
                    inner.sync_if_needed();
                }
            })
            .expect("spawn group-commit thread")
    };
    Ok((
        LatticeFs(inner.clone()),
        FsHandle {
            inner,
            syncer: Some(syncer),
        },
    ))
}

impl Inner {
    fn sync_if_needed(&self) {
        if self.unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.store.sync() {
                tracing::error!("group commit failed: {e}");
                self.unsynced.store(true, Ordering::Release);
            }
            if let Err(e) = self.state.lock().unwrap().inodes.persist(true) {
                tracing::error!("saving the inode map failed: {e}");
            }
        }
    }
}

impl FsHandle {
    /// Commits every open file's pending writes and makes everything durable.
    /// Call before unmounting.
    pub fn shutdown(&mut self) {
        let ids: Vec<_> = self.inner.state.lock().unwrap().open.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.inner.commit(id) {
                tracing::error!("commit at shutdown failed: {e:?}");
            }
        }
        self.inner.stop.store(true, Ordering::Release);
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.inner.unsynced.store(true, Ordering::Release);
        self.inner.sync_if_needed();
    }

    /// Number of nodes shown (for status).
    pub fn node_count(&self) -> usize {
        self.inner.state.lock().unwrap().nodes.len()
    }
}

impl Drop for FsHandle {
    fn drop(&mut self) {
        if self.syncer.is_some() {
            self.shutdown();
        }
    }
}

//! The Lattice file system: the node-id tree of DESIGN.md over a [`KvStore`],
//! served through FUSE (fuser). Knows nothing of the network.
//!
//! Writes to an open file are buffered (see [`buffer`]) and committed as one
//! entry on flush, fsync and release. Commits are not synced one by one: a
//! group-commit timer makes them durable every [`GROUP_COMMIT`] (and `fsync`
//! does so at once), so a daemon crash loses at most that window.

pub mod buffer;
pub mod inode_map;
mod local;
pub mod node;
mod ops;
pub mod pending;
mod remote;
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
/// `LATTICE_GROUP_COMMIT_MS` changes it (tests stretch it so that only an
/// explicit fsync can have made data durable).
pub const GROUP_COMMIT: Duration = Duration::from_millis(5);

fn group_commit() -> Duration {
    std::env::var("LATTICE_GROUP_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GROUP_COMMIT, Duration::from_millis)
}
/// How long the kernel may cache attributes and names.
pub const TTL: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub store: Arc<dyn KvStore>,
    pub state: Mutex<State>,
    pub spill_dir: PathBuf,
    pub unsynced: AtomicBool,
    pub stop: AtomicBool,
    /// Held from taking a window's ops to their write.
    pub flush_order: Mutex<()>,
}

/// The `fuser::Filesystem`. Give it to fuser; keep the [`FsHandle`].
pub struct LatticeFs(pub(crate) Arc<Inner>);

/// What the daemon keeps: the group-commit timer and a clean shutdown.
pub struct FsHandle {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
    remote: Option<JoinHandle<()>>,
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
        flush_order: Mutex::new(()),
    });
    let syncer = {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                let mut ticks = 0u32;
                let window = group_commit();
                while !inner.stop.load(Ordering::Acquire) {
                    // Short sleeps, so shutdown is prompt even with a long window.
                    let t = std::time::Instant::now();
                    while t.elapsed() < window && !inner.stop.load(Ordering::Acquire) {
                        std::thread::sleep(window.min(GROUP_COMMIT));
                    }
                    ticks = ticks.wrapping_add(1);
                    // Inode numbers only need to outlive a clean unmount (see
                    // inode_map.rs), so they are synced about once a second.
                    let _ = inner.flush_inner(ticks % 200 == 0);
                }
            })
            .expect("spawn group-commit thread")
    };
    Ok((
        LatticeFs(inner.clone()),
        FsHandle {
            inner,
            syncer: Some(syncer),
            remote: None,
        },
    ))
}

impl Inner {
    /// The group commit: writes every pending op as one entry (a few if there
    /// are very many) and syncs. `fsync` calls it directly.
    pub(crate) fn flush(&self, sync_inodes: bool) -> Result<(), fuser::Errno> {
        self.flush_inner(sync_inodes)
    }

    fn flush_inner(&self, sync_inodes: bool) -> Result<(), fuser::Errno> {
        // Windows are written in the order they were taken: a key written in two
        // windows must end with the later value as the later entry.
        let _order = self.flush_order.lock().unwrap();
        self.flush_ordered(sync_inodes)
    }

    /// The group commit, for a caller that holds `flush_order`.
    pub(crate) fn flush_ordered(&self, sync_inodes: bool) -> Result<(), fuser::Errno> {
        let ops = {
            let mut st = self.state.lock().unwrap();
            if let Err(e) = st.inodes.persist(sync_inodes) {
                tracing::error!("saving the inode map failed: {e}");
            }
            let ops = st.pending.take();
            for op in &ops {
                if let Some(node::KeyKind::Loc(id)) = node::parse_key(&op.key) {
                    if let Some(n) = st.nodes.get_mut(&id) {
                        n.pending_create = false;
                    }
                }
            }
            ops
        };
        if !ops.is_empty() {
            tracing::debug!(ops = ops.len(), sync_inodes, "group commit");
            let batches: Vec<Vec<store::Op>> = ops.chunks(4096).map(|c| c.to_vec()).collect();
            if let Err(e) = self.store.write_batches(batches, false) {
                // Nothing is lost: the ops go back in front of anything newer.
                tracing::error!("group commit failed, will retry: {e}");
                let mut st = self.state.lock().unwrap();
                let newer = st.pending.take();
                st.pending.queue(ops);
                st.pending.queue(newer);
                return Err(fuser::Errno::EIO);
            }
            self.unsynced.store(true, Ordering::Release);
        }
        if self.unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.store.sync() {
                tracing::error!("group commit sync failed: {e}");
                self.unsynced.store(true, Ordering::Release);
                return Err(fuser::Errno::EIO);
            }
        }
        Ok(())
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
        if let Some(t) = self.remote.take() {
            let _ = t.join();
        }
        self.inner.unsynced.store(true, Ordering::Release);
        if self.inner.flush(true).is_err() {
            tracing::error!("the last group commit failed; see the errors above");
        }
    }

    /// Starts applying changes that peers make, invalidating the kernel's
    /// caches through `notifier` (the mounted session's).
    pub fn follow_remote(&mut self, notifier: fuser::Notifier) {
        let inner = self.inner.clone();
        self.remote = Some(
            std::thread::Builder::new()
                .name("remote-changes".into())
                .spawn(move || remote::watch(inner, notifier))
                .expect("spawn remote-changes thread"),
        );
    }

    /// A cheap handle for readers of the mount's state (the control socket).
    pub fn view(&self) -> FsView {
        FsView(self.inner.clone())
    }
}

/// Read-only access to a mounted file system's state.
#[derive(Clone)]
pub struct FsView(Arc<Inner>);

impl FsView {
    pub fn conflicts(&self) -> Vec<(String, String)> {
        self.0.state.lock().unwrap().conflicts()
    }
}

impl Drop for FsHandle {
    fn drop(&mut self) {
        if self.syncer.is_some() {
            self.shutdown();
        }
    }
}

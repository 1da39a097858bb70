//! The Lattice file system: the node-id tree of the design over a
//! [`KvStore`], served through FUSE. Knows nothing of the network.
//!
//! Layers, top to bottom:
//! - `adapter`: the fuser callbacks, mapping each onto one plain call below;
//!   the only place that knows fuser;
//! - `local` (operations), `commit` (the group commit), `follow` (changes
//!   from peers), `check` (the view against the specification);
//! - `model`: the state under one lock; `view` + `names`: the materialized
//!   tree and its incremental rules; `pending`: local changes not yet in the
//!   store; `files` + `buffer`: open files; `inode_map`;
//! - `tree`: the specification, a pure function of the store.
//!
//! Every change, local or remote, reaches the view the same way: as new heads
//! of some keys (a local op is a pending head until its entry is written),
//! then one settle. What the mount shows is what `tree::build` gives for the
//! store plus the pending ops; `mountctl check` verifies exactly that.

mod adapter;
pub mod buffer;
mod check;
mod commit;
pub mod errno;
mod files;
mod follow;
mod health;
pub mod history;
pub mod inode_map;
mod inputs;
mod latticeignore;
mod listing;
mod local;
pub mod model;
pub mod names;
pub mod node;
pub mod pending;
#[cfg(test)]
mod regressions;
mod setattr;
pub mod space;
pub mod tree;
pub mod view;
mod xattrs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use store::{AuthorId, KvStore};

pub use adapter::LatticeFs;
pub use model::Inval;

use crate::inode_map::InodeDb;
use crate::model::Model;

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

/// How long the kernel may cache attributes and names. Long: the kernel
/// updates what this mount changes itself, and a peer's change is told to
/// the kernel exactly (see `Inval` and the kernel-notify thread), so a
/// timeout only bounds a bug, and every `stat` served from the cache saves a
/// round trip.
pub const TTL: Duration = Duration::from_secs(60);

/// What every layer of the mount shares.
pub(crate) struct Shared {
    pub store: Arc<dyn KvStore>,
    pub me: AuthorId,
    pub state: Mutex<Model>,
    /// The commit lock: held while the store is written and the view told, and
    /// while remote changes are read and applied, so that the view never
    /// applies an older read of a key over a newer one. Never taken while the
    /// state lock is held.
    pub commit: Mutex<()>,
    pub inode_db: InodeDb,
    /// HOME/shares/NAME: spill files, refused changes.
    pub share_dir: PathBuf,
    pub spill_dir: PathBuf,
    kicked: Mutex<bool>,
    kick: Condvar,
    pub stop: AtomicBool,
    /// Set first at shutdown: nothing new is read from the store after it.
    pub stopping: AtomicBool,
    invals: Mutex<mpsc::Sender<Inval>>,
    /// The error of the last failed group commit, while it keeps failing (it is
    /// logged once, not every window).
    pub failing: Mutex<Option<String>>,
    /// The `.latticeignore` patterns in force.
    pub(crate) ignore: Mutex<latticeignore::Patterns>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Model> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands invalidations to the kernel-notifier thread.
    pub fn send(&self, invals: Vec<Inval>) {
        if invals.is_empty() {
            return;
        }
        let tx = self.invals.lock().unwrap_or_else(|p| p.into_inner());
        for i in invals {
            let _ = tx.send(i);
        }
    }

    /// Wakes the group commit.
    pub fn kick(&self) {
        *self.kicked.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.kick.notify_one();
    }
}

#[derive(Debug)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OpenError {}

/// What the daemon keeps: the threads, and a clean shutdown.
pub struct FsHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    invals: Option<mpsc::Receiver<Inval>>,
    done: bool,
}

/// Loads the view from `store`; `local_dir` holds the inode map and spill files.
pub fn open(store: Arc<dyn KvStore>, local_dir: &Path) -> Result<(LatticeFs, FsHandle), OpenError> {
    open_with(store, local_dir, group_commit())
}

/// [`open`] with a group-commit window of `window`.
pub(crate) fn open_with(
    store: Arc<dyn KvStore>,
    local_dir: &Path,
    window: Duration,
) -> Result<(LatticeFs, FsHandle), OpenError> {
    let (inode_db, inodes, fresh) = open_inode_map(&local_dir.join("inodes.redb"))?;
    let spill_dir = local_dir.join("spill");
    std::fs::create_dir_all(&spill_dir).map_err(|e| OpenError(format!("{}: {e}", spill_dir.display())))?;
    // Watch before loading, so that no change falls between the two.
    let changes = store.watch(node::PREFIX);
    let me = store.author();
    let local_rows = inode_db
        .local_rows()
        .map_err(|e| OpenError(format!("cannot read the local-only files: {e}")))?;
    let model = local::load(store.as_ref(), me, inodes, local_rows)
        .map_err(|e| OpenError(format!("cannot load the tree: {e}")))?;
    let mut model = model;
    if let Some(why) = store.write_blocked() {
        // Read-only until the store takes writes again (see health.rs).
        model.health.failed(errno::Errno::EROFS, why);
    }
    if fresh && model.view.len() > 2 {
        tracing::warn!("this share had no inode map here: inode numbers start afresh (the kernel holds none)");
    }
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        store,
        me,
        state: Mutex::new(model),
        commit: Mutex::new(()),
        inode_db,
        share_dir: local_dir.to_path_buf(),
        spill_dir,
        kicked: Mutex::new(false),
        kick: Condvar::new(),
        stop: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        invals: Mutex::new(tx),
        failing: Mutex::new(None),
        ignore: latticeignore::patterns(),
    });
    shared.kick();
    let threads = vec![
        {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("group-commit".into())
                .spawn(move || commit::run(s, window))
                .map_err(|e| OpenError(format!("cannot start the group commit: {e}")))?
        },
        {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("remote-changes".into())
                .spawn(move || follow::run(s, changes))
                .map_err(|e| OpenError(format!("cannot start the remote-change thread: {e}")))?
        },
    ];
    Ok((
        LatticeFs(shared.clone()),
        FsHandle {
            shared,
            threads,
            invals: Some(rx),
            done: false,
        },
    ))
}

/// The inode map: a damaged one is moved aside and started afresh (numbers
/// only need to be stable while mounted and across clean restarts). Says
/// whether it is new.
fn open_inode_map(path: &Path) -> Result<(InodeDb, inode_map::Inodes, bool), OpenError> {
    let fresh = !path.exists();
    match InodeDb::open(path) {
        Ok((db, inodes)) => Ok((db, inodes, fresh)),
        Err(e) => {
            let aside = path.with_extension("redb.damaged");
            tracing::warn!(
                "the inode map {} is damaged ({e}); moved it to {} and started a new one",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside)
                .map_err(|e| OpenError(format!("cannot move {} aside: {e}", path.display())))?;
            let (db, inodes) =
                InodeDb::open(path).map_err(|e| OpenError(format!("cannot create {}: {e}", path.display())))?;
            Ok((db, inodes, true))
        }
    }
}

impl FsHandle {
    /// Commits everything the kernel released and every open file's writes,
    /// makes it durable and stops the threads. Call after the kernel let go
    /// of the mount. An error says what could not be committed.
    pub fn shutdown(&mut self) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        self.shared.stopping.store(true, Ordering::Release);
        let r = self.shared.final_commit();
        self.shared.stop.store(true, Ordering::Release);
        self.shared.kick();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        r
    }

    /// A cheap handle for readers of the mount's state (the control socket).
    pub fn view(&self) -> FsView {
        FsView(self.shared.clone())
    }
}

impl Drop for FsHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("{e}");
        }
    }
}

/// Read-only access to a mounted file system's state.
#[derive(Clone)]
pub struct FsView(Arc<Shared>);

impl FsView {
    /// Conflict copies shown now: (copy path, file path).
    pub fn conflicts(&self) -> Vec<(String, String)> {
        self.0.lock().view.conflicts()
    }

    /// Every difference between what the mount shows and what the store (plus
    /// the changes not yet written) says it must show; empty when they agree.
    pub fn check(&self) -> Vec<String> {
        self.0.check()
    }

    /// The node shown at `path` (`/a/b`), if any.
    pub fn lookup(&self, path: &str) -> Option<node::NodeId> {
        let m = self.0.lock();
        let mut id = node::NodeId::ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            id = m.view.lookup(id, part.as_bytes())?;
        }
        Some(id)
    }

    /// Changes made here and not yet in the store (queued in the group-commit
    /// window, or being written). Zero means every file closed before this
    /// call is in the store: its frontier counts it.
    pub fn unwritten(&self) -> usize {
        let m = self.0.lock();
        // Closed files whose commit failed wait in their buffers for a retry.
        let left_over = m.open.values().filter(|o| o.handles == 0 && o.cell.is_dirty()).count();
        m.pending.unwritten() + left_over
    }

    /// The chunks this mount needs that no entry in the store names (yet): a
    /// collection keeps them whatever replaced the versions they came from.
    /// Open files' base versions (reused when they close), changes queued
    /// for the store, and the content of files that live on this machine
    /// only (`.latticeignore`).
    pub fn needed_unwritten(&self) -> Vec<store::ChunkHash> {
        let mut out = Vec::new();
        let cells: Vec<_> = {
            let m = self.0.lock();
            for (_, man) in m.local_content.values() {
                out.extend_from_slice(man.chunks());
            }
            for ch in m.pending.changes() {
                if let crate::pending::Change::Content { manifest, .. } = ch {
                    out.extend_from_slice(manifest.chunks());
                }
            }
            m.open.values().map(|o| o.cell.clone()).collect()
        };
        // A buffer's lock comes before the state lock, never after.
        for c in cells {
            if let Some(b) = c.buf.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                out.extend_from_slice(b.base().chunks());
            }
        }
        out
    }

    /// How many nodes live on this machine only (`.latticeignore`d, sockets).
    pub fn local_only(&self) -> usize {
        self.0.lock().local.len()
    }

    /// "ok", "failing, retrying: WHY" or "read-only: WHY (...)".
    pub fn health(&self) -> String {
        self.0.lock().health.describe()
    }

    /// This node may no longer write (removed, or made a reader): saves what
    /// is not written yet and makes the mount read-only.
    pub fn set_read_only(&self, why: String) {
        self.0.go_read_only(why)
    }

    /// How many nodes the view holds and has visited while settling.
    pub fn stats(&self) -> (usize, u64) {
        let m = self.0.lock();
        (m.view.len(), m.view.visits())
    }
}

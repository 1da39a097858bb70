//! Whether the mount can take changes, and what happens when the store will
//! not take them.
//!
//! - **Ok.**
//! - **Failing**: the store cannot take writes for now (a full disk, an I/O
//!   error). Every change already accepted is kept and retried with backoff
//!   (the store reopened, since redb refuses every write on a handle that saw
//!   an I/O error). Until a write works again, new changes fail at once with
//!   the same errno (ENOSPC for a full disk): nothing is accepted that cannot
//!   be written, so a delete fails instead of vanishing. The files whose
//!   changes were in a failed window get the error at their next `fsync` or
//!   `close`, as a disk file system reports a writeback error.
//! - **Read-only**: this node may not write any more (it was removed, or made
//!   a reader). Every change not yet written is saved under
//!   `HOME/shares/NAME/refused/<time>/` (file contents at their paths, and
//!   `CHANGES.txt` listing every change), then dropped: the mount shows what
//!   the store holds and answers EROFS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::Manifest;

use crate::Shared;
use crate::errno::{Errno, R};
use crate::node::{self, KeyKind, Loc, NodeId};
use crate::pending::Change;

/// The longest wait between two tries of a failing store.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub enum Health {
    Ok,
    Failing {
        errno: Errno,
        why: String,
        next_try: Instant,
        backoff: Duration,
    },
    ReadOnly {
        why: String,
        saved: Option<PathBuf>,
    },
}

impl Health {
    /// May a new change be accepted?
    pub fn check(&self) -> R<()> {
        match self {
            Health::Ok => Ok(()),
            Health::Failing { errno, .. } => Err(*errno),
            Health::ReadOnly { .. } => Err(Errno::EROFS),
        }
    }

    /// For `status`: "ok", "failing: WHY", "read-only: WHY (saved in DIR)".
    pub fn describe(&self) -> String {
        match self {
            Health::Ok => "ok".into(),
            Health::Failing { why, .. } => format!("failing, retrying: {why}"),
            Health::ReadOnly { why, saved: None } => format!("read-only: {why}"),
            Health::ReadOnly { why, saved: Some(d) } => {
                format!("read-only: {why} (changes not written are saved in {})", d.display())
            }
        }
    }

    /// A failed write of the store: failing from now, trying again after a
    /// backoff that doubles while it keeps failing.
    pub fn failed(&mut self, errno: Errno, why: String) {
        let backoff = match self {
            Health::Failing { backoff, .. } => (*backoff * 2).min(MAX_BACKOFF),
            _ => Duration::from_millis(500),
        };
        if !matches!(self, Health::Failing { .. }) {
            tracing::error!(
                "the store cannot take writes ({why}); new changes fail until it can, queued ones are kept and retried"
            );
        }
        if !matches!(self, Health::ReadOnly { .. }) {
            *self = Health::Failing {
                errno,
                why,
                next_try: Instant::now() + backoff,
                backoff,
            };
        }
    }

    /// Is it time to try a failing store again?
    pub fn due(&self) -> bool {
        matches!(self, Health::Failing { next_try, .. } if Instant::now() >= *next_try)
    }
}

impl Shared {
    /// A write the store could not take: the mount is failing from now on,
    /// and this is the errno to give. A poisoned handle (redb after an I/O
    /// error) reports the error that poisoned it, not "I/O error".
    pub(crate) fn store_failed(&self, e: &store::Error) -> Errno {
        let mut m = self.lock();
        if let (store::Error::Poisoned(_), Health::Failing { errno, why, .. }) = (e, &m.health) {
            let (errno, why) = (*errno, why.clone());
            m.health.failed(errno, why);
            return errno;
        }
        let errno = Errno(e.errno());
        m.health.failed(errno, e.to_string());
        errno
    }

    /// Tries a failing store again: reopens it (a failed write poisons a redb
    /// handle), writes what is queued, and is Ok again if that works (a
    /// failure waits twice as long for the next try).
    pub(crate) fn retry(&self) {
        if let Some(why) = self.store.write_blocked() {
            self.lock().health.failed(Errno::EROFS, why);
            return;
        }
        if let Err(e) = self.store.reopen() {
            tracing::warn!("cannot reopen the store yet: {e}");
        }
        if self.flush_now(false).is_ok() {
            let mut m = self.lock();
            if matches!(m.health, Health::Failing { .. }) {
                m.health = Health::Ok;
                tracing::info!("the store takes writes again; every queued change is written");
            }
            drop(m);
            self.commit_left_over();
        }
    }

    /// This node may no longer write: saves every change not yet written,
    /// drops them from the mount (which then shows what the store holds) and
    /// answers EROFS from now on.
    pub(crate) fn go_read_only(&self, why: String) {
        let _commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let (changes, paths) = {
            let mut m = self.lock();
            if matches!(m.health, Health::ReadOnly { .. }) {
                return;
            }
            m.health = Health::ReadOnly {
                why: why.clone(),
                saved: None,
            };
            let w = m.pending.take();
            m.pending.written();
            m.unwritten.clear();
            let paths: BTreeMap<NodeId, (String, bool)> = w
                .changes
                .iter()
                .filter_map(|(_, ch)| crate::inputs::node_of(ch.key()))
                .map(|id| (id, (m.view.path_of(id), m.kind(id) == Some(node::Kind::File))))
                .collect();
            (w.changes, paths)
        };
        let saved = if changes.is_empty() {
            None
        } else {
            match self.save_refused(&changes, &paths) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::error!("cannot save the changes this node may no longer write: {e}");
                    None
                }
            }
        };
        tracing::error!(
            "{why}: the mount is now read-only; {} changes not written{}",
            changes.len(),
            saved
                .as_ref()
                .map_or(String::new(), |d| format!(" are saved in {}", d.display()))
        );
        // Show what the store holds for every key a dropped change stood in for.
        let keys: Vec<Vec<u8>> = changes.iter().map(|(_, ch)| ch.key().to_vec()).collect();
        match self.store.heads_many(&keys) {
            Ok(heads) => {
                let mut m = self.lock();
                for (k, hs) in keys.iter().zip(&heads) {
                    crate::inputs::set_key(&mut m.view, k, hs);
                }
                if let Health::ReadOnly { saved: s, .. } = &mut m.health {
                    *s = saved;
                }
                let invals = m.settle(false, &[]);
                drop(m);
                self.send(invals);
            }
            Err(e) => tracing::error!("cannot read the store to show what it holds: {e}"),
        }
    }

    /// Writes `changes` out under `refused/<time>/`: each new content at its
    /// path, and `CHANGES.txt` listing them all. `paths`: each node's path
    /// and whether it is a file (only files have content to save).
    fn save_refused(
        &self,
        changes: &[(u64, Change)],
        paths: &BTreeMap<NodeId, (String, bool)>,
    ) -> std::io::Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = self.share_dir.join("refused").join(stamp.to_string());
        std::fs::create_dir_all(&dir)?;
        let mut list = String::new();
        for (_, ch) in changes {
            let Some(kind) = node::parse_key(ch.key()) else {
                continue;
            };
            let id = crate::inputs::node_of(ch.key()).expect("a node key");
            let (path, file) = paths.get(&id).cloned().unwrap_or_else(|| ("/".into(), false));
            match (kind, ch) {
                (KeyKind::Data(_), _) if !file => {
                    let _ = writeln!(list, "times\t{path}");
                }
                (KeyKind::Data(_), Change::Content { manifest, .. }) => {
                    let to = dir.join(path.trim_start_matches('/'));
                    self.write_content(manifest, &to)?;
                    let _ = writeln!(list, "content\t{path}\t(saved as {})", to.display());
                }
                (KeyKind::Loc(_), Change::Op(op)) => {
                    let loc: Option<Loc> = op.value.as_deref().and_then(node::decode);
                    let what = if loc.is_some_and(|l| l.deleted) {
                        "deleted"
                    } else {
                        "created or moved"
                    };
                    let _ = writeln!(list, "{what}\t{path}");
                }
                (KeyKind::Attr(_), _) => {
                    let _ = writeln!(list, "mode or owner\t{path}");
                }
                (KeyKind::Xattr(_, name), _) => {
                    let _ = writeln!(list, "xattr {}\t{path}", String::from_utf8_lossy(name));
                }
                _ => {
                    let _ = writeln!(list, "content\t{path}");
                }
            }
        }
        std::fs::write(dir.join("CHANGES.txt"), list)?;
        Ok(dir)
    }

    /// Writes the content `m` names to `to` (creating folders).
    pub(crate) fn write_content(&self, m: &Arc<Manifest>, to: &Path) -> std::io::Result<()> {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        let mut f = std::fs::File::create(to)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < m.size() {
            let n = self
                .store
                .read_content(m, off, &mut buf)
                .map_err(std::io::Error::other)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut f, &buf[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// The refused folder for content saved outside a window (an open file's
    /// last writes in a read-only mount).
    pub(crate) fn save_buffer(&self, id: NodeId, content: &Arc<Manifest>) -> Option<PathBuf> {
        let path = self.lock().view.path_of(id);
        let to = self
            .share_dir
            .join("refused")
            .join("open-files")
            .join(path.trim_start_matches('/'));
        match self.write_content(content, &to) {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::error!("cannot save {path}, which this node may no longer write: {e}");
                None
            }
        }
    }
}

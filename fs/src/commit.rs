//! The group commit: every queued op goes into the store as one entry (a few if
//! there are very many) and one synced commit, at most [`crate::GROUP_COMMIT`]
//! after the first op of a window was queued; `fsync` runs it at once.
//!
//! While a window is written its ops stay in the view as pending heads; once
//! written, each place it wrote gets its real HLC and entry (ranks decide name
//! clashes and cycles), under the commit lock, so that no read of the store
//! taken before the write can be applied after it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Shared;
use crate::errno::{Errno, R};
use crate::inputs::node_of;
use crate::node::{self, KeyKind};
use crate::tree::LocHead;

/// The group-commit thread: waits for a first change, lets the window fill,
/// writes it; until told to stop.
pub(crate) fn run(s: Arc<Shared>, window: Duration) {
    loop {
        {
            let mut k = s.kicked.lock().unwrap_or_else(|p| p.into_inner());
            while !*k && !s.stop.load(Ordering::Acquire) {
                let (g, t) = s
                    .kick
                    .wait_timeout(k, Duration::from_millis(250))
                    .unwrap_or_else(|p| p.into_inner());
                k = g;
                // Inode numbers handed out for listings and lookups are
                // saved once a second even when nothing else changes; a
                // failing store is tried again when its backoff is over.
                if t.timed_out() {
                    let (due, inodes) = {
                        let m = s.lock();
                        (m.health.due(), m.inodes.changed())
                    };
                    if due {
                        drop(k);
                        s.retry();
                        k = s.kicked.lock().unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    if inodes {
                        break;
                    }
                }
            }
            *k = false;
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        // Short sleeps, so that shutdown is prompt even with a long window.
        let t = Instant::now();
        while t.elapsed() < window && !s.stop.load(Ordering::Acquire) {
            std::thread::sleep((window - t.elapsed().min(window)).min(crate::GROUP_COMMIT));
        }
        let _ = s.flush_now(false);
    }
}

impl Shared {
    /// Writes every queued op and makes it durable. `sync_inodes` also syncs
    /// the inode map (at unmount).
    pub(crate) fn flush_now(&self, sync_inodes: bool) -> R<()> {
        let _commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let (window, inode_delta, was_unwritten) = {
            let mut m = self.lock();
            let w = m.pending.take();
            let mut was = Vec::new();
            for (_, ch) in &w.changes {
                if let Some(id) = node_of(ch.key())
                    && m.unwritten.remove(&id)
                {
                    was.push(id);
                }
            }
            (w, m.inodes.take_delta(), was)
        };
        let mut result = Ok(());
        if !window.is_empty() {
            let batches = window.batches();
            tracing::debug!(ops = window.changes.len(), entries = batches.len(), "group commit");
            match self.store.write_batches(batches.clone(), true) {
                Ok(written) => {
                    let mut m = self.lock();
                    m.pending.written();
                    for (batch, w) in batches.iter().zip(&written) {
                        for op in batch {
                            let Some(KeyKind::Loc(id)) = node::parse_key(&op.key) else {
                                continue;
                            };
                            if m.pending.is_queued(&op.key) {
                                continue;
                            }
                            if let Some(loc) = op.value.as_deref().and_then(node::decode) {
                                let head = LocHead {
                                    loc,
                                    hlc: w.hlc,
                                    author: self.me,
                                    entry: w.id,
                                };
                                m.view.rerank_loc(id, head);
                            }
                        }
                    }
                    let invals = m.settle(true, &[]);
                    drop(m);
                    self.send(invals);
                    let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
                    if failing.take().is_some() {
                        tracing::info!("group commit works again; every queued change is written");
                    }
                }
                Err(e) if e.is_permanent() => {
                    {
                        let mut m = self.lock();
                        m.pending.put_back(window);
                        m.unwritten.extend(was_unwritten);
                    }
                    *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    drop(_commit);
                    self.go_read_only(format!("the share refuses this node's changes: {e}"));
                    return Err(Errno::EROFS);
                }
                Err(e) => {
                    let errno = self.store_failed(&e);
                    {
                        let mut m = self.lock();
                        for (_, ch) in &window.changes {
                            if let Some(id) = node_of(ch.key()) {
                                m.write_errors.insert(id, errno);
                            }
                        }
                        m.pending.put_back(window);
                        m.unwritten.extend(was_unwritten);
                    }
                    // The first error of a streak is the cause; later ones
                    // (a poisoned database) only repeat it.
                    let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
                    if failing.is_none() {
                        *failing = Some(e.to_string());
                    }
                    result = Err(errno);
                }
            }
        }
        if let Err(e) = self.inode_db.write(&inode_delta, sync_inodes) {
            tracing::warn!("cannot save the inode map (kept, will retry): {e}");
            self.lock().inodes.put_back(inode_delta);
        }
        result
    }

    /// At shutdown: every open file's changes, then every queued op, durable.
    pub(crate) fn final_commit(&self) -> Result<(), String> {
        let ids: Vec<_> = self.lock().open.keys().copied().collect();
        let mut lost = Vec::new();
        for id in ids {
            if let Err(e) = self.commit(id) {
                lost.push(format!("{} ({e})", self.lock().view.path_of(id)));
            }
        }
        let flushed = self.flush_now(true);
        let queued = !self.lock().pending.is_empty();
        match (lost.is_empty(), flushed.is_ok() && !queued) {
            (true, true) => Ok(()),
            _ => {
                let why = self
                    .failing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "the store did not take them".into());
                let files = if lost.is_empty() {
                    String::new()
                } else {
                    format!(" (files: {})", lost.join(", "))
                };
                Err(format!("some changes could not be written to the store: {why}{files}"))
            }
        }
    }
}

//! Changes that peers make. The store says which keys changed; this thread
//! reads their heads and hands them to the view, the same way a local op
//! reaches it, then tells the kernel to forget exactly what changed.
//!
//! A key with a local op pending is left alone: that op's entry will name
//! every head the key has when it is written. Local changes are not read back:
//! the group commit tells the view what it wrote.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use store::Change;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::Shared;
use crate::inputs;

pub(crate) fn run(s: Arc<Shared>, mut changes: UnboundedReceiver<Change>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot follow remote changes: {e}");
            return;
        }
    };
    rt.block_on(async {
        while !s.stopping.load(Ordering::Acquire) {
            let first = match tokio::time::timeout(Duration::from_millis(100), changes.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(_) => continue,
            };
            let mut keys = BTreeSet::new();
            let mut note = |c: Change| {
                if !c.local {
                    keys.insert(c.key);
                }
            };
            note(first);
            while let Ok(c) = changes.try_recv() {
                note(c);
            }
            if !keys.is_empty() {
                s.apply_remote(keys.into_iter().collect());
            }
        }
    });
}

impl Shared {
    /// Applies the store's current heads of `keys` to the view. A failed read
    /// is retried without holding the commit lock (so the group commit and
    /// `fsync` go on), until it works or the mount shuts down.
    pub(crate) fn apply_remote(&self, keys: Vec<Vec<u8>>) {
        let mut failed = false;
        loop {
            let commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            match self.store.heads_many(&keys) {
                Ok(heads) => {
                    let mut m = self.lock();
                    for (key, hs) in keys.iter().zip(&heads) {
                        if !m.pending.overlays(key) {
                            inputs::set_key(&mut m.view, key, hs);
                        }
                    }
                    let invals = m.settle(false, &[]);
                    drop(m);
                    drop(commit);
                    self.send(invals);
                    if failed {
                        tracing::info!("reading changes from the store works again");
                    }
                    return;
                }
                Err(e) => {
                    drop(commit);
                    if !failed {
                        tracing::error!("cannot read {} changed keys from the store; retrying: {e}", keys.len());
                        failed = true;
                    }
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

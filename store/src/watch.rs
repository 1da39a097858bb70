//! Subscriptions to changes: keys written (locally or by ingest) and chain gaps.
//! Senders are dropped when their receiver is gone.

use std::sync::Mutex;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::ids::AuthorId;

/// A key whose heads changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// Written by this node (as opposed to ingested from a peer).
    pub local: bool,
}

/// Entries `from..=to` of `author` are missing: later ones wait as orphans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub author: AuthorId,
    pub from: u64,
    pub to: u64,
}

#[derive(Default)]
pub(crate) struct Watchers {
    changes: Mutex<Vec<(Vec<u8>, UnboundedSender<Change>)>>,
    gaps: Mutex<Vec<UnboundedSender<Gap>>>,
    wanted: Mutex<Vec<UnboundedSender<crate::ChunkHash>>>,
}

impl Watchers {
    pub fn watch(&self, prefix: &[u8]) -> UnboundedReceiver<Change> {
        let (tx, rx) = unbounded_channel();
        self.changes.lock().unwrap().push((prefix.to_vec(), tx));
        rx
    }

    pub fn watch_gaps(&self) -> UnboundedReceiver<Gap> {
        let (tx, rx) = unbounded_channel();
        self.gaps.lock().unwrap().push(tx);
        rx
    }

    pub fn watch_wanted(&self) -> UnboundedReceiver<crate::ChunkHash> {
        let (tx, rx) = unbounded_channel();
        self.wanted.lock().unwrap().push(tx);
        rx
    }

    /// A chunk went bad here: ask whoever listens to fetch it again.
    pub fn want(&self, h: crate::ChunkHash) {
        self.wanted.lock().unwrap().retain(|tx| tx.send(h).is_ok());
    }

    pub fn notify(&self, changes: &[Change], gaps: &[Gap]) {
        if !changes.is_empty() {
            self.changes.lock().unwrap().retain(|(prefix, tx)| {
                changes
                    .iter()
                    .filter(|c| c.key.starts_with(prefix))
                    .all(|c| tx.send(c.clone()).is_ok())
                    && !tx.is_closed()
            });
        }
        if !gaps.is_empty() {
            self.gaps
                .lock()
                .unwrap()
                .retain(|tx| gaps.iter().all(|g| tx.send(*g).is_ok()));
        }
    }
}

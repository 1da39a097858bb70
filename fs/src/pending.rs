//! Local changes not yet in the store: queued changes (the next group commit)
//! and the window being written. Both overlay the store in the view: while a
//! key has a change here, the view shows that change and ignores the key's
//! store heads (its entry will name them all as parents).
//!
//! Changes are folded by key (the last write of a key in a window counts), so
//! a file that is created, written, chmod'ed and touched within one window
//! costs one set of ops, and the window one entry and one synced commit. A new
//! content version keeps its manifest as it is until the window is written:
//! encoding it (and listing its chunks as refs) is the group commit's work,
//! not `close`'s.

use std::collections::HashMap;
use std::sync::Arc;

use store::{Manifest, Op};

use crate::inputs::node_of;
use crate::node::{self, Data};

/// Ops per entry; a window with more is written as several entries in one transaction.
pub const OPS_PER_ENTRY: usize = 4096;
/// Bytes per entry, well under the store's 16 MiB limit on one entry.
pub const BYTES_PER_ENTRY: usize = 6 << 20;

/// One local change of one key.
#[derive(Clone, Debug)]
pub enum Change {
    Op(Op),
    /// A new version of a node's content.
    Content {
        key: Vec<u8>,
        manifest: Arc<Manifest>,
        mtime_ns: i64,
        /// When it was written (see `node::Data`).
        ctime_ns: i64,
        /// An access time set explicitly, or 0.
        atime_ns: i64,
        version: u64,
    },
}

impl Change {
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Op(op) => &op.key,
            Change::Content { key, .. } => key,
        }
    }

    /// The op this change writes.
    pub fn op(&self) -> Op {
        match self {
            Change::Op(op) => op.clone(),
            Change::Content {
                key,
                manifest,
                mtime_ns,
                ctime_ns,
                atime_ns,
                version,
            } => {
                let d = Data {
                    manifest: manifest.encode(),
                    mtime_ns: *mtime_ns,
                    version: *version,
                    ctime_ns: *ctime_ns,
                    atime_ns: *atime_ns,
                };
                // The chunks travel as refs, so a peer fetches them before it applies this.
                Op {
                    key: key.clone(),
                    value: Some(prost::Message::encode_to_vec(&d)),
                    refs: manifest.refs(),
                }
            }
        }
    }

    /// About how many bytes it takes in an entry.
    fn weight(&self) -> usize {
        match self {
            Change::Op(op) => op.key.len() + op.value.as_ref().map_or(0, Vec::len) + op.refs.len() * 34 + 8,
            Change::Content { manifest, .. } => manifest.chunks().len() * 72 + 64,
        }
    }
}

#[derive(Default)]
pub struct Pending {
    queued: HashMap<Vec<u8>, (u64, Change)>,
    /// Keys in first-queued order; may name keys since forgotten.
    order: Vec<Vec<u8>>,
    next: u64,
    /// The window being written: key -> (seq, change).
    in_flight: HashMap<Vec<u8>, (u64, Change)>,
}

/// A window taken for writing: the changes in entry order, with their seqs.
pub struct Window {
    pub changes: Vec<(u64, Change)>,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The entries to write: never more than [`OPS_PER_ENTRY`] ops or about
    /// [`BYTES_PER_ENTRY`] bytes each, and a node's ops kept in one entry where
    /// they fit, so that a delete and the content version it names arrive
    /// together.
    pub fn batches(&self) -> Vec<Vec<Op>> {
        let mut out: Vec<(Vec<Op>, usize)> = vec![(Vec::new(), 0)];
        let c = &self.changes;
        let mut i = 0;
        while i < c.len() {
            let node = node_of(c[i].1.key());
            let mut j = i + 1;
            while j < c.len() && node.is_some() && node_of(c[j].1.key()) == node {
                j += 1;
            }
            let group = &c[i..j];
            let weight: usize = group.iter().map(|(_, ch)| ch.weight()).sum();
            let (ops, bytes) = out.last().expect("one batch");
            if !ops.is_empty() && (ops.len() + group.len() > OPS_PER_ENTRY || bytes + weight > BYTES_PER_ENTRY) {
                out.push((Vec::new(), 0));
            }
            // A node's ops stay in one entry unless they alone are too many.
            let split = group.len() > OPS_PER_ENTRY || weight > 2 * BYTES_PER_ENTRY;
            for (_, ch) in group {
                let (ops, bytes) = out.last().expect("one batch");
                if !ops.is_empty() && (ops.len() == OPS_PER_ENTRY || (split && bytes + ch.weight() > BYTES_PER_ENTRY)) {
                    out.push((Vec::new(), 0));
                }
                let last = out.last_mut().expect("one batch");
                last.0.push(ch.op());
                last.1 += ch.weight();
            }
            i = j;
        }
        out.into_iter().map(|(ops, _)| ops).filter(|b| !b.is_empty()).collect()
    }
}

impl Pending {
    pub fn queue(&mut self, ch: Change) {
        self.next += 1;
        let key = ch.key().to_vec();
        if !self.queued.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.queued.insert(key, (self.next, ch));
    }

    /// The newest local change of `key` not yet in the store.
    pub fn get(&self, key: &[u8]) -> Option<&Change> {
        self.queued
            .get(key)
            .or_else(|| self.in_flight.get(key))
            .map(|(_, ch)| ch)
    }

    /// The newest local content version of node key `key`: (version, manifest).
    pub fn content(&self, key: &[u8]) -> Option<(u64, Arc<Manifest>)> {
        match self.get(key)? {
            Change::Content { manifest, version, .. } => Some((*version, manifest.clone())),
            Change::Op(op) => {
                let d: Data = node::decode(op.value.as_ref()?)?;
                Some((d.version, Arc::new(Manifest::decode(&d.manifest).ok()?)))
            }
        }
    }

    /// Does a local change stand in for the store's heads of `key`?
    pub fn overlays(&self, key: &[u8]) -> bool {
        self.queued.contains_key(key) || self.in_flight.contains_key(key)
    }

    pub fn is_queued(&self, key: &[u8]) -> bool {
        self.queued.contains_key(key)
    }

    /// Drops the queued change of `key` (its node was created here and is
    /// deleted before it was written: nothing of it ever reaches the store).
    pub fn forget(&mut self, key: &[u8]) {
        self.queued.remove(key);
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Changes not yet in the store: queued, or being written now.
    pub fn unwritten(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// Every change not yet in the store, newest per key.
    pub fn changes(&self) -> Vec<Change> {
        let mut all: HashMap<&Vec<u8>, &Change> = self.in_flight.iter().map(|(k, (_, ch))| (k, ch)).collect();
        for (k, (_, ch)) in &self.queued {
            all.insert(k, ch);
        }
        all.into_values().cloned().collect()
    }

    /// Every queued change becomes the window in flight, grouped by node in
    /// the order nodes were first queued.
    pub fn take(&mut self) -> Window {
        let mut queued = std::mem::take(&mut self.queued);
        let mut changes: Vec<(u64, Change)> = self.order.drain(..).filter_map(|k| queued.remove(&k)).collect();
        debug_assert!(queued.is_empty());
        let mut rank: HashMap<Option<crate::node::NodeId>, usize> = HashMap::new();
        for (_, ch) in &changes {
            let n = rank.len();
            rank.entry(node_of(ch.key())).or_insert(n);
        }
        // Grouped by node, and within a node its content before its place, so
        // that a delete never reaches a peer before the version it names.
        changes.sort_by_key(|(_, ch)| {
            let content_first = !matches!(crate::node::parse_key(ch.key()), Some(crate::node::KeyKind::Data(_)));
            (rank[&node_of(ch.key())], content_first)
        });
        self.in_flight = changes
            .iter()
            .map(|(s, ch)| (ch.key().to_vec(), (*s, ch.clone())))
            .collect();
        Window { changes }
    }

    /// The window is in the store.
    pub fn written(&mut self) {
        self.in_flight.clear();
    }

    /// The window could not be written: its changes go back in front of anything newer.
    pub fn put_back(&mut self, w: Window) {
        self.in_flight.clear();
        let newer = std::mem::take(&mut self.queued);
        let newer_order = std::mem::take(&mut self.order);
        for (s, ch) in w.changes {
            self.order.push(ch.key().to_vec());
            self.queued.insert(ch.key().to_vec(), (s, ch));
        }
        for k in newer_order {
            if let Some(x) = newer.get(&k) {
                if !self.queued.contains_key(&k) {
                    self.order.push(k.clone());
                }
                self.queued.insert(k, x.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;

    #[test]
    fn folds_by_key_overlays_until_written_and_groups_nodes() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let mut p = Pending::default();
        p.queue(Change::Op(Op::put(node::loc_key(a), "1")));
        p.queue(Change::Op(Op::put(node::attr_key(b), "x")));
        p.queue(Change::Op(Op::put(node::loc_key(a), "2")));
        p.queue(Change::Op(Op::put(node::data_key(a), "d")));
        let w = p.take();
        assert!(p.overlays(&node::loc_key(a)) && !p.is_queued(&node::loc_key(a)));
        assert!(matches!(p.get(&node::loc_key(a)), Some(Change::Op(op)) if op.value.as_deref() == Some(&b"2"[..])));
        let keys: Vec<_> = w.batches().concat().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec![node::data_key(a), node::loc_key(a), node::attr_key(b)]);
        p.queue(Change::Op(Op::put(node::loc_key(b), "newer")));
        p.put_back(w);
        assert_eq!(p.take().changes.len(), 4);
        p.written();
        assert!(!p.overlays(&node::loc_key(a)));
    }

    #[test]
    fn large_manifests_are_split_over_entries_under_the_size_limit() {
        let mut p = Pending::default();
        let mut m = Manifest::default();
        for i in 0..40_000u32 {
            m.push(store::content::hash(&i.to_le_bytes()), 65_536);
        }
        let m = Arc::new(m);
        for _ in 0..10 {
            p.queue(Change::Content {
                key: node::data_key(NodeId::random()),
                manifest: m.clone(),
                mtime_ns: 0,
                ctime_ns: 0,
                atime_ns: 0,
                version: 1,
            });
        }
        let batches = p.take().batches();
        assert!(batches.len() >= 4, "{} entries", batches.len());
        for b in &batches {
            let bytes: usize = b
                .iter()
                .map(|o| o.value.as_ref().unwrap().len() + o.refs.len() * 32)
                .sum();
            assert!(bytes < 12 << 20, "an entry of {bytes} bytes");
        }
    }
}

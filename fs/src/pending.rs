//! Local changes not yet in the store: queued ops (the next group commit) and
//! the window being written. Both overlay the store in the view: while a key
//! has an op here, the view shows that op and ignores the key's store heads
//! (the op's entry will name them all as parents).
//!
//! Ops are folded by key (the last write of a key in a window counts), so a
//! file that is created, written, chmod'ed and touched within one window costs
//! one set of ops, and the window one entry and one synced commit.

use std::collections::HashMap;

use store::Op;

use crate::inputs::node_of;
use crate::node::NodeId;

/// Ops per entry; a window with more is written as several entries in one transaction.
pub const OPS_PER_ENTRY: usize = 4096;

#[derive(Default)]
pub struct Pending {
    queued: HashMap<Vec<u8>, (u64, Op)>,
    /// Keys in first-queued order; may name keys since forgotten.
    order: Vec<Vec<u8>>,
    next: u64,
    /// The window being written: key -> (seq, op).
    in_flight: HashMap<Vec<u8>, (u64, Op)>,
}

/// A window taken for writing: the ops in entry order, with their seqs.
pub struct Window {
    pub ops: Vec<(u64, Op)>,
}

impl Window {
    /// The entries to write: never more than [`OPS_PER_ENTRY`] ops each, and a
    /// node's ops kept in one entry where they fit, so that a delete and the
    /// content version it names arrive together.
    pub fn batches(&self) -> Vec<Vec<Op>> {
        let mut out: Vec<Vec<Op>> = vec![Vec::new()];
        let mut i = 0;
        while i < self.ops.len() {
            let node = node_of(&self.ops[i].1.key);
            let mut j = i + 1;
            while j < self.ops.len() && node.is_some() && node_of(&self.ops[j].1.key) == node {
                j += 1;
            }
            let group = &self.ops[i..j];
            let last = out.last_mut().expect("one batch");
            if !last.is_empty() && last.len() + group.len() > OPS_PER_ENTRY {
                out.push(Vec::new());
            }
            for (_, op) in group {
                let last = out.last_mut().expect("one batch");
                if last.len() == OPS_PER_ENTRY {
                    out.push(Vec::new());
                }
                out.last_mut().expect("one batch").push(op.clone());
            }
            i = j;
        }
        out.retain(|b| !b.is_empty());
        out
    }
}

impl Pending {
    pub fn queue(&mut self, op: Op) {
        self.next += 1;
        if !self.queued.contains_key(&op.key) {
            self.order.push(op.key.clone());
        }
        self.queued.insert(op.key.clone(), (self.next, op));
    }

    /// The newest local op of `key` not yet in the store.
    pub fn get(&self, key: &[u8]) -> Option<&Op> {
        self.queued
            .get(key)
            .or_else(|| self.in_flight.get(key))
            .map(|(_, op)| op)
    }

    /// Does a local op stand in for the store's heads of `key`?
    pub fn overlays(&self, key: &[u8]) -> bool {
        self.queued.contains_key(key) || self.in_flight.contains_key(key)
    }

    pub fn is_queued(&self, key: &[u8]) -> bool {
        self.queued.contains_key(key)
    }

    /// Drops the queued op of `key` (its node was created here and is deleted
    /// before it was written: nothing of it ever reaches the store).
    pub fn forget(&mut self, key: &[u8]) {
        self.queued.remove(key);
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Every op not yet in the store, newest per key.
    pub fn ops(&self) -> Vec<Op> {
        let mut all: HashMap<&Vec<u8>, &Op> = self.in_flight.iter().map(|(k, (_, op))| (k, op)).collect();
        for (k, (_, op)) in &self.queued {
            all.insert(k, op);
        }
        all.into_values().cloned().collect()
    }

    /// Every queued op becomes the window in flight, grouped by node in the
    /// order nodes were first queued.
    pub fn take(&mut self) -> Window {
        let mut queued = std::mem::take(&mut self.queued);
        let ops: Vec<(u64, Op)> = self.order.drain(..).filter_map(|k| queued.remove(&k)).collect();
        debug_assert!(queued.is_empty());
        let mut rank: HashMap<Option<NodeId>, usize> = HashMap::new();
        for (_, op) in &ops {
            let n = rank.len();
            rank.entry(node_of(&op.key)).or_insert(n);
        }
        let mut ops = ops;
        ops.sort_by_key(|(_, op)| rank[&node_of(&op.key)]);
        self.in_flight = ops.iter().map(|(s, op)| (op.key.clone(), (*s, op.clone()))).collect();
        Window { ops }
    }

    /// The window is in the store.
    pub fn written(&mut self) {
        self.in_flight.clear();
    }

    /// The window could not be written: its ops go back in front of anything newer.
    pub fn put_back(&mut self, w: Window) {
        self.in_flight.clear();
        let newer = std::mem::take(&mut self.queued);
        let newer_order = std::mem::take(&mut self.order);
        for (s, op) in w.ops {
            self.order.push(op.key.clone());
            self.queued.insert(op.key.clone(), (s, op));
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
    use crate::node;

    #[test]
    fn folds_by_key_overlays_until_written_and_groups_nodes() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let mut p = Pending::default();
        p.queue(Op::put(node::loc_key(a), "1"));
        p.queue(Op::put(node::attr_key(b), "x"));
        p.queue(Op::put(node::loc_key(a), "2"));
        p.queue(Op::put(node::data_key(a), "d"));
        let w = p.take();
        assert!(p.overlays(&node::loc_key(a)) && !p.is_queued(&node::loc_key(a)));
        assert_eq!(p.get(&node::loc_key(a)).unwrap().value.as_deref(), Some(&b"2"[..]));
        let keys: Vec<_> = w.batches().concat().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec![node::loc_key(a), node::data_key(a), node::attr_key(b)]);
        p.queue(Op::put(node::loc_key(b), "newer"));
        p.put_back(w);
        assert_eq!(p.take().ops.len(), 4);
        p.written();
        assert!(!p.overlays(&node::loc_key(a)));
    }
}

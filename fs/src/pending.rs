//! Local changes waiting for the next group commit. Ops are folded by key (the
//! last write of a key in a window is the one that counts), so a file that is
//! created, written, chmod'ed and touched within one window costs one set of
//! ops, and the window costs one entry and one synced commit.

use std::collections::HashMap;

use store::Op;

use crate::node::{self, NodeId};

#[derive(Default)]
pub struct Pending {
    /// Keys in first-queued order; may name keys since forgotten.
    order: Vec<Vec<u8>>,
    ops: HashMap<Vec<u8>, Op>,
}

impl Pending {
    pub fn queue(&mut self, ops: impl IntoIterator<Item = Op>) {
        for op in ops {
            if !self.ops.contains_key(&op.key) {
                self.order.push(op.key.clone());
            }
            self.ops.insert(op.key.clone(), op);
        }
    }

    /// Drops every queued op of node `id` (it is being deleted, or was never
    /// written and now never will be).
    pub fn forget_node<'a>(&mut self, id: NodeId, xattr_names: impl Iterator<Item = &'a Vec<u8>>) {
        for k in [node::loc_key(id), node::attr_key(id), node::data_key(id)] {
            self.ops.remove(&k);
        }
        for name in xattr_names {
            self.ops.remove(&node::xattr_key(id, name));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Everything queued, in first-queued order.
    pub fn take(&mut self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.ops);
        let out = self.order.drain(..).filter_map(|k| ops.remove(&k)).collect();
        debug_assert!(ops.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_by_key_keeps_order_and_forgets_nodes() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let mut p = Pending::default();
        p.queue([Op::put(node::loc_key(a), "1"), Op::put(node::attr_key(b), "x")]);
        p.queue([Op::put(node::loc_key(a), "2"), Op::put(node::data_key(a), "d")]);
        p.forget_node(b, std::iter::empty());
        let ops = p.take();
        assert_eq!(
            ops,
            vec![Op::put(node::loc_key(a), "2"), Op::put(node::data_key(a), "d")]
        );
        assert!(p.is_empty());
    }
}

//! Changes that arrive from peers. The store tells us which keys changed; the
//! mount then rebuilds its tree with the same pure function it loads with
//! (`tree::build`), so it shows exactly what every peer holding the same
//! entries shows, and tells the kernel to forget exactly what changed: the
//! directory entries of nodes that appeared, moved or went away, and the
//! cached attributes and pages of nodes whose content or attributes changed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fuser::{INodeNo, Notifier};

use crate::Inner;
use crate::node::{self, NodeId};
use crate::state::{Node, load_nodes};

/// What the kernel must forget.
#[derive(Debug, PartialEq, Eq)]
pub enum Inval {
    Entry(u64, Vec<u8>),
    Inode(u64),
}

fn changed(a: &Node, b: &Node) -> bool {
    a.mtime_ns != b.mtime_ns || a.attr != b.attr || *a.manifest != *b.manifest || a.xattrs != b.xattrs
}

impl Inner {
    /// Rebuilds the tree from the store and returns what the kernel must forget.
    pub(crate) fn apply_remote(&self) -> Vec<Inval> {
        loop {
            // Local changes first, so the store holds everything the mount shows;
            // `flush_order` is held until the tree is rebuilt, so no window can be
            // taken but not yet written while the store is read.
            let _order = self.flush_order.lock().unwrap();
            let _ = self.flush_ordered(false);
            let mut guard = self.state.lock().unwrap();
            if !guard.pending.is_empty() {
                continue;
            }
            // Field by field borrows: nodes are read while inode numbers are handed out.
            let st = &mut *guard;
            let mut fresh = match load_nodes(self.store.as_ref()) {
                Ok((nodes, _)) => nodes,
                Err(e) => {
                    tracing::error!("cannot rebuild the tree after a remote change: {e}");
                    return Vec::new();
                }
            };
            let mut out = Vec::new();
            let old_ids: Vec<NodeId> = st.nodes.keys().copied().collect();
            for id in old_ids {
                let old = &st.nodes[&id];
                if old.unlinked {
                    // Gone already; it lingers only while the kernel or a handle holds it.
                    let keep = st.nodes.remove(&id).expect("listed");
                    fresh.entry(id).or_insert(keep);
                    continue;
                }
                let (op, oname) = (old.parent, old.name.clone());
                match fresh.get(&id) {
                    None => {
                        out.push(Inval::Entry(st.inodes.ino(op), oname));
                        let mut keep = st.nodes.remove(&id).expect("listed");
                        if st.lookups.contains_key(&id) || st.open.get(&id).is_some_and(|o| o.handles > 0) {
                            keep.unlinked = true;
                            // Its children went with it (or moved): list none.
                            keep.children.clear();
                            fresh.insert(id, keep);
                        } else {
                            st.inodes.remove(id);
                        }
                    }
                    Some(n) => {
                        if id != NodeId::ROOT && (n.parent != op || n.name != oname) {
                            out.push(Inval::Entry(st.inodes.ino(op), oname));
                            out.push(Inval::Entry(st.inodes.ino(n.parent), n.name.clone()));
                        }
                        if changed(old, n) {
                            out.push(Inval::Inode(st.inodes.ino(id)));
                        }
                    }
                }
            }
            // New names: the kernel may hold a negative entry for them.
            for (id, n) in &fresh {
                if *id != NodeId::ROOT && !n.unlinked && !st.nodes.contains_key(id) {
                    let known_before = out
                        .iter()
                        .any(|i| matches!(i, Inval::Entry(_, name) if *name == n.name));
                    if !known_before {
                        out.push(Inval::Entry(st.inodes.ino(n.parent), n.name.clone()));
                    }
                }
            }
            st.nodes = fresh;
            return out;
        }
    }
}

/// Watches the store for remote changes until `inner.stop`; applies them and
/// tells the kernel. Runs on its own thread: it holds no fs lock while it
/// talks to the kernel.
pub(crate) fn watch(inner: Arc<Inner>, notifier: Notifier) {
    let mut rx = inner.store.watch(node::PREFIX);
    while !inner.stop.load(Ordering::Acquire) {
        let mut remote = false;
        while let Ok(c) = rx.try_recv() {
            remote |= !c.local;
        }
        if !remote {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        for inval in inner.apply_remote() {
            // ENOENT only means the kernel did not have it cached.
            let _ = match &inval {
                Inval::Entry(parent, name) => notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
                Inval::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
            };
        }
    }
}

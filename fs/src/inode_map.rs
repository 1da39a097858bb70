//! Inode numbers are local to one mount: a u64 <-> node id BiMap, kept in a
//! redb table beside the store so numbers stay the same across restarts.
//!
//! New numbers are written in batches ([`InodeMap::persist`], called by the
//! group-commit timer and at unmount): after a crash, nodes created in the
//! last window may get new numbers, which is harmless because the kernel
//! forgot every number when the mount died.

use std::path::Path;

use bimap::BiMap;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::node::NodeId;

const INODES: TableDefinition<&[u8; 16], u64> = TableDefinition::new("inodes");
/// "next": the next number to hand out (numbers are never reused).
const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("inode_counter");

pub const ROOT_INO: u64 = 1;

pub struct InodeMap {
    db: Database,
    map: BiMap<u64, NodeId>,
    next: u64,
    added: Vec<(NodeId, u64)>,
    removed: Vec<NodeId>,
}

impl InodeMap {
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(INODES)?;
        txn.open_table(COUNTER)?;
        txn.commit()?;
        let mut map = BiMap::new();
        map.insert(ROOT_INO, NodeId::ROOT);
        let mut next = ROOT_INO + 1;
        let txn = db.begin_read()?;
        if let Some(n) = txn.open_table(COUNTER)?.get("next")? {
            next = next.max(n.value());
        }
        for row in txn.open_table(INODES)?.iter()? {
            let (k, v) = row?;
            let ino = v.value();
            map.insert(ino, NodeId(*k.value()));
            next = next.max(ino + 1);
        }
        Ok(InodeMap {
            db,
            map,
            next,
            added: Vec::new(),
            removed: Vec::new(),
        })
    }

    /// The number of `id`, given one now if it has none.
    pub fn ino(&mut self, id: NodeId) -> u64 {
        if let Some(&ino) = self.map.get_by_right(&id) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.map.insert(ino, id);
        self.added.push((id, ino));
        ino
    }

    pub fn node(&self, ino: u64) -> Option<NodeId> {
        self.map.get_by_left(&ino).copied()
    }

    pub fn remove(&mut self, id: NodeId) {
        if id != NodeId::ROOT && self.map.remove_by_right(&id).is_some() {
            self.removed.push(id);
        }
    }

    /// Writes the changes since the last call; synced when `durable`.
    pub fn persist(&mut self, durable: bool) -> Result<(), redb::Error> {
        if self.added.is_empty() && self.removed.is_empty() && !durable {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut t = txn.open_table(INODES)?;
            for (id, ino) in self.added.drain(..) {
                t.insert(&id.0, ino)?;
            }
            for id in self.removed.drain(..) {
                t.remove(&id.0)?;
            }
        }
        txn.open_table(COUNTER)?.insert("next", self.next)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("local.redb");
        let (a, b) = (NodeId::random(), NodeId::random());
        let (ia, ib) = {
            let mut m = InodeMap::open(&p).unwrap();
            let r = (m.ino(a), m.ino(b));
            m.remove(b);
            m.persist(true).unwrap();
            r
        };
        assert_ne!(ia, ib);
        let mut m = InodeMap::open(&p).unwrap();
        assert_eq!(m.node(ia), Some(a));
        assert_eq!(m.node(ib), None);
        assert_eq!(m.ino(a), ia);
        assert!(m.ino(NodeId::random()) > ib, "numbers are never reused");
        assert_eq!(m.node(ROOT_INO), Some(NodeId::ROOT));
    }
}

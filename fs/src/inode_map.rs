//! Inode numbers are local to one mount: a u64 <-> node id BiMap, kept in a
//! redb table beside the store so numbers stay the same across restarts.
//!
//! [`Inodes`] is the map (under the model's lock); [`InodeDb`] its file, written
//! by the group commit outside that lock: after a crash, nodes numbered in the
//! last window may get new numbers, which is harmless because the kernel
//! forgot every number when the mount died.

use std::path::Path;

use std::collections::HashSet;

use bimap::BiMap;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::node::NodeId;

const INODES: TableDefinition<&[u8; 16], u64> = TableDefinition::new("inodes");
/// "next": the next number to hand out (numbers are never reused).
const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("inode_counter");
/// The keys of nodes that live on this machine only (`.latticeignore`d):
/// node key -> value, as an entry would hold it. Never sent anywhere.
const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local_nodes");

pub const ROOT_INO: u64 = 1;

pub struct Inodes {
    map: BiMap<u64, NodeId>,
    next: u64,
    delta: Delta,
}

/// Changes not yet written to the file.
#[derive(Default)]
pub struct Delta {
    added: Vec<(NodeId, u64)>,
    removed: HashSet<NodeId>,
    next: u64,
    /// Writes of local-only node keys, in order (`None`: remove the key).
    local: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.local.is_empty()
    }
}

pub struct InodeDb {
    db: Database,
}

impl InodeDb {
    /// Opens (or creates) the map's file and reads the map.
    pub fn open(path: &Path) -> Result<(InodeDb, Inodes), redb::Error> {
        let db = Database::builder().set_cache_size(4 << 20).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(INODES)?;
        txn.open_table(COUNTER)?;
        txn.open_table(LOCAL)?;
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
        Ok((
            InodeDb { db },
            Inodes {
                map,
                next,
                delta: Delta::default(),
            },
        ))
    }

    /// Writes `d`; synced when `durable`.
    pub fn write(&self, d: &Delta, durable: bool) -> Result<(), redb::Error> {
        if d.is_empty() && !durable {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            // Removals first: a node can lose its number and get a new one
            // within one delta.
            let mut t = txn.open_table(INODES)?;
            for id in &d.removed {
                t.remove(&id.0)?;
            }
            for (id, ino) in &d.added {
                t.insert(&id.0, *ino)?;
            }
        }
        if d.next > 0 {
            txn.open_table(COUNTER)?.insert("next", d.next)?;
        }
        if !d.local.is_empty() {
            let mut t = txn.open_table(LOCAL)?;
            for (k, v) in &d.local {
                match v {
                    Some(v) => t.insert(k.as_slice(), v.as_slice())?,
                    None => t.remove(k.as_slice())?,
                };
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every local-only node key and its value.
    pub fn local_rows(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(LOCAL)?.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every (number, node) in the file, for `check`.
    pub fn read_all(&self) -> Result<Vec<(u64, NodeId)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(INODES)?.iter()? {
            let (k, v) = row?;
            out.push((v.value(), NodeId(*k.value())));
        }
        Ok(out)
    }
}

impl Inodes {
    /// The number of `id`, given one now if it has none.
    pub fn ino(&mut self, id: NodeId) -> u64 {
        if let Some(&ino) = self.map.get_by_right(&id) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.map.insert(ino, id);
        self.delta.added.push((id, ino));
        ino
    }

    /// The number of `id` if it has one (the kernel may know it).
    pub fn get(&self, id: NodeId) -> Option<u64> {
        self.map.get_by_right(&id).copied()
    }

    pub fn node(&self, ino: u64) -> Option<NodeId> {
        self.map.get_by_left(&ino).copied()
    }

    pub fn remove(&mut self, id: NodeId) {
        if id != NodeId::ROOT && self.map.remove_by_right(&id).is_some() {
            self.delta.added.retain(|(a, _)| *a != id);
            self.delta.removed.insert(id);
        }
    }

    /// The changes since the last call, to write outside the lock.
    pub fn take_delta(&mut self) -> Delta {
        let mut d = std::mem::take(&mut self.delta);
        d.next = self.next;
        d
    }

    /// A delta that could not be written: it is written with the next one.
    pub fn put_back(&mut self, d: Delta) {
        let newer = std::mem::take(&mut self.delta);
        self.delta = d;
        for id in newer.removed {
            self.delta.added.retain(|(a, _)| *a != id);
            self.delta.removed.insert(id);
        }
        self.delta.added.extend(newer.added);
        self.delta.local.extend(newer.local);
    }

    /// A write of a local-only node's key, saved with the map.
    pub fn record_local(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.delta.local.push((key, value));
    }

    /// Are there changes to write?
    pub fn changed(&self) -> bool {
        !self.delta.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, NodeId)> + '_ {
        self.map.iter().map(|(i, n)| (*i, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_removed_then_given_again_in_one_delta_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inodes.redb");
        let a = NodeId::random();
        let (db, mut m) = InodeDb::open(&p).unwrap();
        m.ino(a);
        db.write(&m.take_delta(), true).unwrap();
        m.remove(a);
        let ia = m.ino(a);
        db.write(&m.take_delta(), true).unwrap();
        drop((db, m));
        let (_db, m) = InodeDb::open(&p).unwrap();
        assert_eq!(m.node(ia), Some(a));
    }

    #[test]
    fn numbers_survive_reopen_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inodes.redb");
        let (a, b) = (NodeId::random(), NodeId::random());
        let (ia, ib) = {
            let (db, mut m) = InodeDb::open(&p).unwrap();
            let r = (m.ino(a), m.ino(b));
            m.remove(b);
            db.write(&m.take_delta(), true).unwrap();
            r
        };
        assert_ne!(ia, ib);
        let (_db, mut m) = InodeDb::open(&p).unwrap();
        assert_eq!(m.node(ia), Some(a));
        assert_eq!(m.node(ib), None);
        assert_eq!(m.ino(a), ia);
        assert!(m.ino(NodeId::random()) > ib, "numbers are never reused");
        assert_eq!(m.node(ROOT_INO), Some(NodeId::ROOT));
    }
}

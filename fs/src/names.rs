//! Who holds each name of each directory (rule 5 of `tree.rs`), kept up to
//! date one name at a time.
//!
//! A directory's names are slots. A slot has claimants in three tiers, and its
//! holder is the first of the first non-empty tier:
//! - nodes whose own name it is, by (place HLC, node id);
//! - nodes that lost their own name and claim this as their clash name, by id;
//! - conflict copies, by id.
//!
//! Changing one claim touches its slot and, when the losers of a slot change,
//! the slots of their clash names: never the rest of the directory.

use std::collections::{BTreeMap, HashMap};

use store::{AuthorId, Hlc};

use crate::node::NodeId;
use crate::tree::clash_name;

/// A node's claim on its own name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub dir: NodeId,
    pub name: Vec<u8>,
    pub hlc: Hlc,
    pub author: AuthorId,
}

/// A slot whose holder changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub dir: NodeId,
    pub name: Vec<u8>,
    pub old: Option<NodeId>,
    pub new: Option<NodeId>,
}

#[derive(Default, Debug)]
struct Slot {
    /// Sorted: the first holds the name.
    own: Vec<(Hlc, NodeId, AuthorId)>,
    clash: Vec<NodeId>,
    copies: Vec<NodeId>,
    holder: Option<NodeId>,
}

impl Slot {
    fn holder(&self) -> Option<NodeId> {
        self.own
            .first()
            .map(|c| c.1)
            .or_else(|| self.clash.first().copied())
            .or_else(|| self.copies.first().copied())
    }
    fn is_empty(&self) -> bool {
        self.own.is_empty() && self.clash.is_empty() && self.copies.is_empty()
    }
}

fn insert_sorted<T: Ord>(v: &mut Vec<T>, x: T) {
    if let Err(i) = v.binary_search(&x) {
        v.insert(i, x);
    }
}

fn remove_sorted<T: Ord>(v: &mut Vec<T>, x: &T) {
    if let Ok(i) = v.binary_search(x) {
        v.remove(i);
    }
}

#[derive(Default)]
pub struct Names {
    dirs: HashMap<NodeId, BTreeMap<Vec<u8>, Slot>>,
}

impl Names {
    /// The holder of `name` in `dir`.
    pub fn get(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.dirs.get(&dir)?.get(name)?.holder
    }

    /// Every held name of `dir`, in name order.
    pub fn list(&self, dir: NodeId) -> impl Iterator<Item = (&Vec<u8>, NodeId)> {
        self.dirs
            .get(&dir)
            .into_iter()
            .flatten()
            .filter_map(|(name, s)| Some((name, s.holder?)))
    }

    /// Does `dir` hold any name?
    pub fn has_children(&self, dir: NodeId) -> bool {
        self.list(dir).next().is_some()
    }

    pub fn add_own(&mut self, id: NodeId, c: &Claim, ev: &mut Vec<Event>) {
        self.change_own(c, ev, |own| insert_sorted(own, (c.hlc, id, c.author)));
    }

    pub fn remove_own(&mut self, id: NodeId, c: &Claim, ev: &mut Vec<Event>) {
        self.change_own(c, ev, |own| remove_sorted(own, &(c.hlc, id, c.author)));
    }

    pub fn add_copy(&mut self, dir: NodeId, name: &[u8], id: NodeId, ev: &mut Vec<Event>) {
        insert_sorted(&mut self.slot(dir, name).copies, id);
        self.refresh(dir, name, ev);
    }

    pub fn remove_copy(&mut self, dir: NodeId, name: &[u8], id: NodeId, ev: &mut Vec<Event>) {
        remove_sorted(&mut self.slot(dir, name).copies, &id);
        self.refresh(dir, name, ev);
    }

    fn slot(&mut self, dir: NodeId, name: &[u8]) -> &mut Slot {
        let d = self.dirs.entry(dir).or_default();
        if !d.contains_key(name) {
            d.insert(name.to_vec(), Slot::default());
        }
        d.get_mut(name).expect("inserted")
    }

    /// Changes the own-name claims of one slot, then moves the clash claims of
    /// the nodes that stopped or started losing it.
    fn change_own(&mut self, c: &Claim, ev: &mut Vec<Event>, f: impl FnOnce(&mut Vec<(Hlc, NodeId, AuthorId)>)) {
        let slot = self.slot(c.dir, &c.name);
        let before: Vec<(NodeId, AuthorId)> = slot.own.iter().skip(1).map(|x| (x.1, x.2)).collect();
        f(&mut slot.own);
        let after: Vec<(NodeId, AuthorId)> = slot.own.iter().skip(1).map(|x| (x.1, x.2)).collect();
        for (id, author) in before.iter().filter(|l| !after.contains(l)) {
            let n = clash_name(&c.name, author, *id);
            remove_sorted(&mut self.slot(c.dir, &n).clash, id);
            self.refresh(c.dir, &n, ev);
        }
        for (id, author) in after.iter().filter(|l| !before.contains(l)) {
            let n = clash_name(&c.name, author, *id);
            insert_sorted(&mut self.slot(c.dir, &n).clash, *id);
            self.refresh(c.dir, &n, ev);
        }
        self.refresh(c.dir, &c.name, ev);
    }

    fn refresh(&mut self, dir: NodeId, name: &[u8], ev: &mut Vec<Event>) {
        let Some(d) = self.dirs.get_mut(&dir) else { return };
        let Some(slot) = d.get_mut(name) else { return };
        let new = slot.holder();
        let old = slot.holder;
        slot.holder = new;
        if slot.is_empty() {
            d.remove(name);
            if d.is_empty() {
                self.dirs.remove(&dir);
            }
        }
        if old != new {
            ev.push(Event {
                dir,
                name: name.to_vec(),
                old,
                new,
            });
        }
    }
}

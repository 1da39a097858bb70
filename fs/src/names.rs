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
//! the slots of their clash names: never the rest of the directory. Almost
//! every slot has one claimant and nothing else; that case is kept inline.

use std::collections::{BTreeMap, HashMap};

use store::{AuthorId, Hlc};

use crate::node::NodeId;
use crate::tree::clash_name;

/// A node's claim on its own name. `author` numbers the place's author in the
/// table the caller passes along.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub dir: NodeId,
    pub name: Box<[u8]>,
    pub hlc: Hlc,
    pub author: u32,
}

/// A slot whose holder changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub dir: NodeId,
    pub name: Box<[u8]>,
    pub old: Option<NodeId>,
    pub new: Option<NodeId>,
}

type Own = (Hlc, NodeId, u32);

#[derive(Default, Debug)]
struct Tiers {
    /// Sorted: the first holds the name.
    own: Vec<Own>,
    clash: Vec<NodeId>,
    copies: Vec<NodeId>,
}

#[derive(Debug)]
enum Slot {
    One(Own),
    Many(Box<Tiers>),
}

impl Slot {
    fn holder(&self) -> Option<NodeId> {
        match self {
            Slot::One(o) => Some(o.1),
            Slot::Many(t) => t
                .own
                .first()
                .map(|c| c.1)
                .or_else(|| t.clash.first().copied())
                .or_else(|| t.copies.first().copied()),
        }
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
    dirs: HashMap<NodeId, BTreeMap<Box<[u8]>, Slot>>,
}

impl Names {
    /// The holder of `name` in `dir`.
    pub fn get(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.dirs.get(&dir)?.get(name)?.holder()
    }

    /// Every held name of `dir`, in name order.
    pub fn list(&self, dir: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        self.dirs
            .get(&dir)
            .into_iter()
            .flatten()
            .filter_map(|(name, s)| Some((&name[..], s.holder()?)))
    }

    /// Does `dir` hold any name?
    pub fn has_children(&self, dir: NodeId) -> bool {
        self.list(dir).next().is_some()
    }

    pub fn add_own(&mut self, id: NodeId, c: &Claim, authors: &[AuthorId], ev: &mut Vec<Event>) {
        self.change_own(c, authors, ev, |own| insert_sorted(own, (c.hlc, id, c.author)));
    }

    pub fn remove_own(&mut self, id: NodeId, c: &Claim, authors: &[AuthorId], ev: &mut Vec<Event>) {
        self.change_own(c, authors, ev, |own| remove_sorted(own, &(c.hlc, id, c.author)));
    }

    pub fn add_copy(&mut self, dir: NodeId, name: &[u8], id: NodeId, ev: &mut Vec<Event>) {
        self.change(dir, name, ev, |t| insert_sorted(&mut t.copies, id));
    }

    pub fn remove_copy(&mut self, dir: NodeId, name: &[u8], id: NodeId, ev: &mut Vec<Event>) {
        self.change(dir, name, ev, |t| remove_sorted(&mut t.copies, &id));
    }

    /// Changes one slot through its tiers, keeps it compact, and records a
    /// change of holder.
    fn change<R>(&mut self, dir: NodeId, name: &[u8], ev: &mut Vec<Event>, f: impl FnOnce(&mut Tiers) -> R) -> R {
        let d = self.dirs.entry(dir).or_default();
        let (old, mut tiers) = match d.remove(name) {
            None => (None, Tiers::default()),
            Some(s) => (
                s.holder(),
                match s {
                    Slot::One(o) => Tiers {
                        own: vec![o],
                        ..Default::default()
                    },
                    Slot::Many(t) => *t,
                },
            ),
        };
        let r = f(&mut tiers);
        let slot = match (tiers.own.len(), tiers.clash.is_empty() && tiers.copies.is_empty()) {
            (0, true) => None,
            (1, true) => Some(Slot::One(tiers.own[0])),
            _ => Some(Slot::Many(Box::new(tiers))),
        };
        let new = slot.as_ref().and_then(Slot::holder);
        match slot {
            Some(s) => {
                d.insert(name.into(), s);
            }
            None if d.is_empty() => {
                self.dirs.remove(&dir);
            }
            None => {}
        }
        if old != new {
            ev.push(Event {
                dir,
                name: name.into(),
                old,
                new,
            });
        }
        r
    }

    /// Changes the own-name claims of one slot, then moves the clash claims of
    /// the nodes that stopped or started losing it.
    fn change_own(&mut self, c: &Claim, authors: &[AuthorId], ev: &mut Vec<Event>, f: impl FnOnce(&mut Vec<Own>)) {
        let (before, after) = self.change(c.dir, &c.name, ev, |t| {
            let losers = |own: &Vec<Own>| own.iter().skip(1).map(|x| (x.1, x.2)).collect::<Vec<_>>();
            let before = losers(&t.own);
            f(&mut t.own);
            (before, losers(&t.own))
        });
        for (id, author) in before.iter().filter(|l| !after.contains(l)) {
            let n = clash_name(&c.name, &authors[*author as usize], *id);
            self.change(c.dir, &n, ev, |t| remove_sorted(&mut t.clash, id));
        }
        for (id, author) in after.iter().filter(|l| !before.contains(l)) {
            let n = clash_name(&c.name, &authors[*author as usize], *id);
            self.change(c.dir, &n, ev, |t| insert_sorted(&mut t.clash, *id));
        }
    }
}

//! The materialized view: the result of `tree::build` kept up to date by
//! incremental rules, one changed node at a time.
//!
//! Every change, local or from a peer, arrives the same way: new inputs for a
//! node (its place heads, attributes, content heads, xattrs), then
//! [`View::settle`]. Settling recomputes what those inputs decide and follows
//! the consequences only as far as they go:
//!
//! - **place**: the winning `l` head, the raw parent and whether the node is
//!   present by its own right (rule 2);
//! - **cycles** (rule 4): a changed parent link can only close a cycle through
//!   the changed node, so a walk up from it finds it; a cycle it was in is
//!   dissolved and its members looked at again;
//! - **kept** (rule 2, bottom-up): a directory is kept while a kept child lives
//!   in it; each node counts its kept children, so a change climbs only while
//!   it flips something;
//! - **chain** (rule 3, top-down): a node is reachable when its parent is a
//!   known, reachable directory; a flip visits the children, which is exactly
//!   the part of the tree that appears or disappears;
//! - **names** (rules 5, 6): see `names.rs`.
//!
//! A node is shown when it is reachable and kept, and holds a name. The cost of
//! a change is the nodes whose state it changes, never the size of the tree:
//! [`View::visits`] counts them, and a test holds it flat at 100,000 files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::names::{Claim, Event, Names};
use crate::node::{Attr, Kind, NodeId};
use crate::tree::{self, Copy, DataHead, LocHead, NodeInput, Placed, Rank, Tree};

/// One node: its inputs (the heads of its keys, as the mount sees them) and
/// what the rules derived from them.
#[derive(Clone, Debug, Default)]
pub struct Rec {
    pub locs: Vec<LocHead>,
    pub attr: Option<Attr>,
    /// Live heads of the content key.
    pub data: Vec<DataHead>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    d: Derived,
}

#[derive(Clone, Debug, Default)]
struct Derived {
    /// Existence and kind as of the last settle (inputs change before it).
    exists: bool,
    kind: Option<Kind>,
    win: Option<usize>,
    rank: Option<Rank>,
    raw_parent: Option<NodeId>,
    link: Option<NodeId>,
    own: bool,
    chain_ok: bool,
    kept: bool,
    /// The parent whose kept-children count includes this node.
    contrib: Option<NodeId>,
    claim: Option<Claim>,
    shown: Option<(NodeId, Vec<u8>)>,
    /// Copies claimed for this file's other content heads: (copy, dir, name).
    copies: Vec<(NodeId, NodeId, Vec<u8>)>,
}

impl Rec {
    pub fn exists(&self) -> bool {
        self.d.win.is_some() && self.attr.is_some()
    }
    pub fn kind(&self) -> Option<Kind> {
        self.attr.as_ref().map(Attr::kind)
    }
    /// The winning place.
    pub fn win(&self) -> Option<&LocHead> {
        self.d.win.map(|i| &self.locs[i])
    }
    /// Where the node is shown: (directory, name).
    pub fn shown(&self) -> Option<&(NodeId, Vec<u8>)> {
        self.d.shown.as_ref()
    }
    /// The head whose content is shown.
    pub fn data_winner(&self) -> Option<&DataHead> {
        tree::data_winner(&self.data)
    }
    /// The node's parent after cycles are broken.
    pub fn link(&self) -> Option<NodeId> {
        self.d.link
    }
}

/// A conflict copy in the view.
#[derive(Clone, Debug)]
pub struct CopyRec {
    pub copy: Copy,
    pub shown: Option<(NodeId, Vec<u8>)>,
}

/// What a settle changed, for the kernel's caches.
#[derive(Debug, Default)]
pub struct Delta {
    /// Names whose holder changed: (directory, name).
    pub names: Vec<(NodeId, Vec<u8>)>,
    /// Nodes whose attributes or content changed.
    pub nodes: Vec<NodeId>,
    /// Nodes and copies no longer shown.
    pub hidden: Vec<NodeId>,
}

#[derive(Default)]
pub struct View {
    recs: HashMap<NodeId, Rec>,
    /// Children by link, whether or not they are shown.
    kids: HashMap<NodeId, HashSet<NodeId>>,
    kept_kids: HashMap<NodeId, u32>,
    /// Cycle member -> the member re-homed to the root.
    cycle_of: HashMap<NodeId, NodeId>,
    cycles: HashMap<NodeId, Vec<NodeId>>,
    names: Names,
    copies: HashMap<NodeId, CopyRec>,
    touched: BTreeSet<NodeId>,
    content: BTreeSet<NodeId>,
    visits: u64,
}

impl View {
    pub fn new() -> View {
        let mut v = View::default();
        v.recs.insert(NodeId::ROOT, Rec::default());
        v
    }

    /// Nodes visited by settling so far (the work counter the scale test reads).
    pub fn visits(&self) -> u64 {
        self.visits
    }

    pub fn get(&self, id: NodeId) -> Option<&Rec> {
        self.recs.get(&id)
    }

    pub fn copy(&self, id: NodeId) -> Option<&CopyRec> {
        self.copies.get(&id)
    }

    /// How many nodes the view holds (shown or not).
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.len() <= 1
    }

    /// The node or copy holding `name` in `dir`.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.names.get(dir, name)
    }

    /// `dir`'s shown children, in name order.
    pub fn list(&self, dir: NodeId) -> impl Iterator<Item = (&Vec<u8>, NodeId)> {
        self.names.list(dir)
    }

    pub fn has_children(&self, dir: NodeId) -> bool {
        self.names.has_children(dir)
    }

    /// Is `id` shown (the root always is)?
    pub fn is_shown(&self, id: NodeId) -> bool {
        id == NodeId::ROOT
            || self.recs.get(&id).is_some_and(|r| r.d.shown.is_some())
            || self.copies.get(&id).is_some_and(|c| c.shown.is_some())
    }

    /// Is shown `id` the directory `ancestor` or inside it?
    pub fn is_within(&self, mut id: NodeId, ancestor: NodeId) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            match self.recs.get(&id).and_then(|r| r.d.shown.as_ref()) {
                Some((p, _)) => id = *p,
                None => return false,
            }
        }
    }

    /// The path of a shown node, for messages and `mountctl conflicts`.
    pub fn path_of(&self, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while id != NodeId::ROOT {
            let shown = self
                .recs
                .get(&id)
                .and_then(|r| r.d.shown.as_ref())
                .or_else(|| self.copies.get(&id).and_then(|c| c.shown.as_ref()));
            let Some((p, name)) = shown else { break };
            parts.push(String::from_utf8_lossy(name).into_owned());
            id = *p;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Conflict copies shown now: (copy path, file path).
    pub fn conflicts(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .copies
            .iter()
            .filter(|(_, c)| c.shown.is_some())
            .map(|(id, c)| (self.path_of(*id), self.path_of(c.copy.of)))
            .collect();
        out.sort();
        out
    }

    // ---- inputs ----

    fn rec(&mut self, id: NodeId) -> &mut Rec {
        self.touched.insert(id);
        self.recs.entry(id).or_default()
    }

    pub fn set_locs(&mut self, id: NodeId, locs: Vec<LocHead>) {
        if id != NodeId::ROOT {
            self.rec(id).locs = locs;
        }
    }

    pub fn set_attr(&mut self, id: NodeId, attr: Option<Attr>) {
        self.content.insert(id);
        self.rec(id).attr = attr;
    }

    pub fn set_data(&mut self, id: NodeId, data: Vec<DataHead>) {
        self.content.insert(id);
        self.rec(id).data = data;
    }

    pub fn set_xattr(&mut self, id: NodeId, name: &[u8], value: Option<Vec<u8>>) {
        self.content.insert(id);
        let r = self.rec(id);
        match value {
            Some(v) => r.xattrs.insert(name.to_vec(), v),
            None => r.xattrs.remove(name),
        };
    }

    /// Replaces the head `entry` with `head` in `id`'s places (a pending write
    /// that got its entry).
    pub fn rerank_loc(&mut self, id: NodeId, head: LocHead) {
        if let Some(r) = self.recs.get(&id)
            && r.locs.len() == 1
            && r.locs[0].loc == head.loc
        {
            self.rec(id).locs = vec![head];
        }
    }

    /// Forgets a node that has no keys anywhere (created here and deleted before
    /// it was written). Only for nodes not shown, with nothing linked to them.
    pub fn forget(&mut self, id: NodeId) {
        let Some(r) = self.recs.get(&id) else { return };
        if id == NodeId::ROOT || r.d.shown.is_some() || r.d.contrib.is_some() || r.d.claim.is_some() {
            return;
        }
        if self.kids.get(&id).is_some_and(|k| !k.is_empty()) || self.cycle_of.contains_key(&id) {
            return;
        }
        if let Some(p) = r.d.link
            && let Some(k) = self.kids.get_mut(&p)
        {
            k.remove(&id);
            if k.is_empty() {
                self.kids.remove(&p);
            }
        }
        self.recs.remove(&id);
        self.touched.remove(&id);
        self.content.remove(&id);
    }

    // ---- settling ----

    /// Applies the rules to every node whose inputs changed since the last call.
    pub fn settle(&mut self) -> Delta {
        let touched: Vec<NodeId> = std::mem::take(&mut self.touched).into_iter().collect();
        let content: Vec<NodeId> = std::mem::take(&mut self.content).into_iter().collect();
        let mut relink: Vec<NodeId> = Vec::new();
        let mut kept_work: Vec<NodeId> = Vec::new();
        let mut chain_work: Vec<NodeId> = Vec::new();
        let mut name_work: BTreeSet<NodeId> = BTreeSet::new();
        let mut copy_work: BTreeSet<NodeId> = content.iter().copied().collect();

        // The node's own state.
        for &x in &touched {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let Some(r) = self.recs.get_mut(&x) else { continue };
            let (old_rank, old_raw, old_exists, old_kind) = (r.d.rank, r.d.raw_parent, r.d.exists, r.d.kind);
            r.d.win = r
                .locs
                .iter()
                .enumerate()
                .max_by_key(|(_, h)| tree::rank(x, h))
                .map(|(i, _)| i);
            let exists = r.exists();
            r.d.exists = exists;
            r.d.kind = r.kind();
            r.d.rank = if exists {
                r.win().map(|h| tree::rank(x, h))
            } else {
                None
            };
            r.d.raw_parent = if exists {
                r.win().and_then(|h| NodeId::from_slice(&h.loc.parent))
            } else {
                None
            };
            r.d.own = exists
                && r.d.raw_parent.is_some()
                && tree::alive(r.kind().expect("exists"), r.win().expect("exists"), &r.data);
            if r.d.raw_parent != old_raw || r.d.rank != old_rank {
                relink.push(x);
            }
            if exists != old_exists || r.kind() != old_kind {
                chain_work.extend(self.kids.get(&x).into_iter().flatten().copied());
            }
            kept_work.push(x);
            chain_work.push(x);
            name_work.insert(x);
            copy_work.insert(x);
        }

        // Cycles: dissolve the ones a changed node was in, then look again from
        // every node that was in one or changed its link.
        let mut recheck: BTreeSet<NodeId> = relink.iter().copied().collect();
        let mut found: Vec<NodeId> = Vec::new();
        for x in &relink {
            if let Some(rep) = self.cycle_of.get(x).copied() {
                for m in self.cycles.remove(&rep).unwrap_or_default() {
                    self.cycle_of.remove(&m);
                    recheck.insert(m);
                }
            }
        }
        for &y in &recheck {
            if self.cycle_of.contains_key(&y) {
                continue;
            }
            if let Some(members) = self.find_cycle(y) {
                let rep = *members
                    .iter()
                    .max_by_key(|m| self.recs[*m].d.rank)
                    .expect("non-empty cycle");
                for m in &members {
                    self.cycle_of.insert(*m, rep);
                }
                found.extend(&members);
                self.cycles.insert(rep, members);
            }
        }

        // Links.
        recheck.extend(found);
        for &y in &recheck {
            self.visits += 1;
            let Some(r) = self.recs.get(&y) else { continue };
            let link = if self.cycle_of.get(&y) == Some(&y) {
                Some(NodeId::ROOT)
            } else {
                r.d.raw_parent
            };
            let old = r.d.link;
            if link == old {
                continue;
            }
            self.recs.get_mut(&y).expect("present").d.link = link;
            if let Some(p) = old
                && let Some(k) = self.kids.get_mut(&p)
            {
                k.remove(&y);
                if k.is_empty() {
                    self.kids.remove(&p);
                }
            }
            if let Some(p) = link {
                self.kids.entry(p).or_default().insert(y);
            }
            kept_work.push(y);
            chain_work.push(y);
            name_work.insert(y);
        }

        // Kept, bottom-up.
        while let Some(x) = kept_work.pop() {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let kids_kept = self.kept_kids.get(&x).copied().unwrap_or(0);
            let Some(r) = self.recs.get_mut(&x) else { continue };
            let kept = r.exists() && (r.d.own || (r.kind() == Some(Kind::Dir) && kids_kept > 0));
            let contrib = if kept { r.d.link } else { None };
            if kept != r.d.kept {
                r.d.kept = kept;
                name_work.insert(x);
            }
            if contrib != r.d.contrib {
                let old = std::mem::replace(&mut r.d.contrib, contrib);
                if let Some(p) = old {
                    let n = self.kept_kids.get_mut(&p).expect("counted");
                    *n -= 1;
                    if *n == 0 {
                        self.kept_kids.remove(&p);
                    }
                    kept_work.push(p);
                }
                if let Some(p) = contrib {
                    *self.kept_kids.entry(p).or_default() += 1;
                    kept_work.push(p);
                }
            }
        }

        // Reachable, top-down.
        while let Some(x) = chain_work.pop() {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let Some(r) = self.recs.get(&x) else { continue };
            let ok = r.exists()
                && match r.d.link {
                    None => false,
                    Some(NodeId::ROOT) => true,
                    Some(p) => self
                        .recs
                        .get(&p)
                        .is_some_and(|pr| pr.exists() && pr.kind() == Some(Kind::Dir) && pr.d.chain_ok),
                };
            if ok != r.d.chain_ok {
                self.recs.get_mut(&x).expect("present").d.chain_ok = ok;
                name_work.insert(x);
                chain_work.extend(self.kids.get(&x).into_iter().flatten().copied());
            }
        }

        // Names.
        let mut ev = Vec::new();
        for x in name_work {
            self.visits += 1;
            let Some(r) = self.recs.get(&x) else { continue };
            let want = (r.exists() && r.d.chain_ok && r.d.kept).then(|| {
                let w = r.win().expect("exists");
                Claim {
                    dir: r.d.link.expect("reachable"),
                    name: tree::shown_name(&w.loc.name, x),
                    hlc: w.hlc,
                    author: w.author,
                }
            });
            if want != r.d.claim {
                let old = std::mem::replace(&mut self.recs.get_mut(&x).expect("present").d.claim, want.clone());
                if let Some(c) = old {
                    self.names.remove_own(x, &c, &mut ev);
                }
                if let Some(c) = want {
                    self.names.add_own(x, &c, &mut ev);
                }
            }
        }
        let mut delta = Delta::default();
        let mut moved: BTreeSet<NodeId> = BTreeSet::new();
        for id in self.apply_events(&ev, &mut delta) {
            copy_work.insert(id);
            moved.insert(id);
        }

        // Copies of content heads, for files whose heads or shown name changed.
        let mut ev = Vec::new();
        for x in copy_work {
            self.visits += 1;
            moved.extend(self.fix_copies(x, &mut ev));
        }
        moved.extend(self.apply_events(&ev, &mut delta));
        delta.hidden = moved.into_iter().filter(|id| !self.is_shown(*id)).collect();
        delta.nodes = content;
        delta
    }

    /// Walks raw parents up from `y`; the members of the cycle through `y`, if any.
    fn find_cycle(&mut self, y: NodeId) -> Option<Vec<NodeId>> {
        let mut path = vec![y];
        let mut seen = HashSet::from([y]);
        let mut cur = y;
        loop {
            self.visits += 1;
            let p = self.recs.get(&cur)?.d.raw_parent?;
            if p == y {
                return Some(path);
            }
            if p == NodeId::ROOT || self.cycle_of.contains_key(&p) || !seen.insert(p) {
                return None;
            }
            path.push(p);
            cur = p;
        }
    }

    /// Records new holders; returns the nodes and copies whose shown place changed.
    fn apply_events(&mut self, ev: &[Event], delta: &mut Delta) -> Vec<NodeId> {
        let mut moved = Vec::new();
        for e in ev {
            delta.names.push((e.dir, e.name.clone()));
            let place = (e.dir, e.name.clone());
            if let Some(o) = e.old {
                if let Some(r) = self.recs.get_mut(&o) {
                    if r.d.shown.as_ref() == Some(&place) {
                        r.d.shown = None;
                        moved.push(o);
                    }
                } else if let Some(c) = self.copies.get_mut(&o)
                    && c.shown.as_ref() == Some(&place)
                {
                    c.shown = None;
                    moved.push(o);
                }
            }
            if let Some(n) = e.new {
                if let Some(r) = self.recs.get_mut(&n) {
                    r.d.shown = Some(place);
                    moved.push(n);
                } else if let Some(c) = self.copies.get_mut(&n) {
                    c.shown = Some(place);
                    moved.push(n);
                }
            }
        }
        moved
    }

    /// Brings `x`'s copy claims in line with its content heads and shown name;
    /// returns the copies it dropped.
    fn fix_copies(&mut self, x: NodeId, ev: &mut Vec<Event>) -> Vec<NodeId> {
        let Some(r) = self.recs.get(&x) else { return Vec::new() };
        let mut want: Vec<(NodeId, NodeId, Vec<u8>, DataHead)> = Vec::new();
        if let (Some((dir, name)), Some(Kind::File), true) = (r.d.shown.as_ref(), r.kind(), r.data.len() > 1) {
            let w = r.data_winner().expect("several heads");
            for h in r.data.iter().filter(|h| *h != w) {
                let (cid, cname) = tree::copy_of(x, name, h);
                want.push((cid, *dir, cname, h.clone()));
            }
        }
        let have = r.d.copies.clone();
        if have.len() == want.len()
            && have
                .iter()
                .zip(&want)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
        {
            for (cid, _, _, head) in want {
                if let Some(c) = self.copies.get_mut(&cid) {
                    c.copy.head = head;
                }
            }
            return Vec::new();
        }
        let dropped = have
            .iter()
            .map(|c| c.0)
            .filter(|c| !want.iter().any(|w| w.0 == *c))
            .collect();
        for (cid, dir, name) in &have {
            self.copies.remove(cid);
            self.names.remove_copy(*dir, name, *cid, ev);
        }
        for (cid, dir, name, head) in &want {
            self.copies.insert(
                *cid,
                CopyRec {
                    copy: Copy {
                        of: x,
                        head: head.clone(),
                    },
                    shown: None,
                },
            );
            self.names.add_copy(*dir, name, *cid, ev);
        }
        self.recs.get_mut(&x).expect("present").d.copies =
            want.into_iter().map(|(cid, dir, name, _)| (cid, dir, name)).collect();
        dropped
    }

    /// The shown tree, in the form `tree::build` gives (for `mountctl check` and tests).
    pub fn tree(&self) -> Tree {
        let mut t = Tree::default();
        let mut stack = vec![NodeId::ROOT];
        while let Some(dir) = stack.pop() {
            let mut kids = BTreeMap::new();
            for (name, id) in self.names.list(dir) {
                kids.insert(name.clone(), id);
                t.placed.insert(
                    id,
                    Placed {
                        parent: dir,
                        name: name.clone(),
                    },
                );
                if let Some(c) = self.copies.get(&id) {
                    t.copies.insert(id, c.copy.clone());
                } else if self.recs.get(&id).and_then(Rec::kind) == Some(Kind::Dir) {
                    stack.push(id);
                }
            }
            t.children.insert(dir, kids);
        }
        t
    }

    /// Every node's inputs, as `tree::build` takes them.
    pub fn inputs(&self) -> BTreeMap<NodeId, NodeInput> {
        self.recs
            .iter()
            .filter(|(_, r)| r.attr.is_some())
            .map(|(id, r)| {
                (
                    *id,
                    NodeInput {
                        kind: r.kind().expect("has attr"),
                        locs: r.locs.clone(),
                        data: r.data.clone(),
                    },
                )
            })
            .collect()
    }
}

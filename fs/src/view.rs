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
//! - **reachable** (rule 3, top-down): a node is reachable when its parent is a
//!   known, reachable directory; a flip visits the children, which is exactly
//!   the part of the tree that appears or disappears;
//! - **names** (rules 5, 6): see `names.rs`.
//!
//! A node is shown when it is reachable and kept, and holds a name. The cost of
//! a change is the nodes whose state it changes, never the size of the tree:
//! [`View::visits`] counts them, and a test holds it flat at 100,000 files.
//!
//! Memory: a node's heads name their author and entry by number (a share has
//! few authors, and one entry writes many nodes), so a file costs a few hundred
//! bytes here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use store::{AuthorId, EntryId, Hlc};

use crate::names::{Claim, Event, Names};
use crate::node::{Attr, Kind, Loc, NodeId};
use crate::tree::{self, Copy, DataHead, LocHead, NodeInput, Placed, Rank, Tree};

mod settle;

/// Values numbered in the order they are first seen.
struct Table<T> {
    list: Vec<T>,
    no: HashMap<T, u32>,
}

impl<T: std::marker::Copy + Eq + Hash> Table<T> {
    fn new() -> Self {
        Table {
            list: Vec::new(),
            no: HashMap::new(),
        }
    }
    fn no(&mut self, t: T) -> u32 {
        if let Some(n) = self.no.get(&t) {
            return *n;
        }
        let n = self.list.len() as u32;
        self.list.push(t);
        self.no.insert(t, n);
        n
    }
    fn get(&self, n: u32) -> T {
        self.list[n as usize]
    }
}

/// One head of a node's place, compact.
#[derive(Clone, Debug)]
struct Place {
    /// `None` when the stored bytes are not a node id.
    parent: Option<NodeId>,
    name: Box<[u8]>,
    deleted: bool,
    seen: Box<[u64]>,
    ctime_ns: i64,
    hlc: Hlc,
    author: u32,
    entry: u32,
}

/// One live head of a node's content, compact.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    version: u64,
    hlc: Hlc,
    author: u32,
    entry: u32,
    mtime_ns: i64,
    size: u64,
    ctime_ns: i64,
    atime_ns: i64,
}

/// One node: its inputs (the heads of its keys, as the mount sees them) and
/// what the rules derived from them.
#[derive(Debug, Default)]
pub struct Rec {
    places: Box<[Place]>,
    pub attr: Option<Attr>,
    versions: Box<[Version]>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    d: Derived,
}

#[derive(Debug, Default)]
struct Derived {
    /// Existence and kind as of the last settle (inputs change before it).
    exists: bool,
    kind: Option<Kind>,
    own: bool,
    chain_ok: bool,
    kept: bool,
    win: Option<u32>,
    raw_parent: Option<NodeId>,
    link: Option<NodeId>,
    /// The parent whose kept-children count includes this node.
    contrib: Option<NodeId>,
    claim: Option<Claim>,
    /// Shown (in its claim's directory), and whether under its clash name.
    shown: Option<bool>,
    /// Copies claimed for this file's other content heads.
    copies: Box<[CopyClaim]>,
}

impl Rec {
    pub fn exists(&self) -> bool {
        self.d.win.is_some() && self.attr.is_some()
    }
    pub fn kind(&self) -> Option<Kind> {
        self.attr.as_ref().map(Attr::kind)
    }
    /// The node's parent after cycles are broken.
    pub fn link(&self) -> Option<NodeId> {
        self.d.link
    }
    /// The directory the node is shown in.
    pub fn shown_in(&self) -> Option<NodeId> {
        self.d.shown.and(self.d.claim.as_ref()).map(|c| c.dir)
    }
    /// The versions of its live content heads.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.versions.iter().map(|v| v.version)
    }
    fn place(&self) -> Option<&Place> {
        self.d.win.map(|i| &self.places[i as usize])
    }
}

/// A copy's claim: (copy, directory, name).
type CopyClaim = (NodeId, NodeId, Box<[u8]>);

/// A conflict copy in the view.
#[derive(Clone, Debug)]
pub struct CopyRec {
    pub copy: Copy,
    shown: Option<(NodeId, Box<[u8]>)>,
}

/// What a settle changed, for the kernel's caches.
#[derive(Debug, Default)]
pub struct Delta {
    /// Names whose holder changed: (directory, name).
    pub names: Vec<(NodeId, Box<[u8]>)>,
    /// Nodes whose attributes or content changed.
    pub nodes: Vec<NodeId>,
    /// Nodes and copies no longer shown.
    pub hidden: Vec<NodeId>,
}

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
    authors: Table<AuthorId>,
    entries: Table<EntryId>,
    touched: BTreeSet<NodeId>,
    content: BTreeSet<NodeId>,
    visits: u64,
}

impl Default for View {
    fn default() -> Self {
        Self::new()
    }
}

impl View {
    pub fn new() -> View {
        let mut recs = HashMap::new();
        recs.insert(NodeId::ROOT, Rec::default());
        View {
            recs,
            kids: HashMap::new(),
            kept_kids: HashMap::new(),
            cycle_of: HashMap::new(),
            cycles: HashMap::new(),
            names: Names::default(),
            copies: HashMap::new(),
            authors: Table::new(),
            entries: Table::new(),
            touched: BTreeSet::new(),
            content: BTreeSet::new(),
            visits: 0,
        }
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

    /// How many entry ids the view keeps numbers for.
    pub fn numbered_entries(&self) -> usize {
        self.entries.list.len()
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
    pub fn list(&self, dir: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
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
            match self.recs.get(&id).and_then(Rec::shown_in) {
                Some(p) => id = p,
                None => return false,
            }
        }
    }

    /// Where `id` is shown: (directory, name).
    pub fn place_of(&self, id: NodeId) -> Option<(NodeId, Vec<u8>)> {
        if let Some(c) = self.copies.get(&id) {
            return c.shown.as_ref().map(|(d, n)| (*d, n.to_vec()));
        }
        let r = self.recs.get(&id)?;
        let clash = r.d.shown?;
        let c = r.d.claim.as_ref()?;
        let dir = c.dir;
        Some(if clash {
            (dir, tree::clash_name(&c.name, &self.authors.get(c.author), id))
        } else {
            (dir, c.name.to_vec())
        })
    }

    /// The path of a shown node, for messages and `mountctl conflicts`.
    pub fn path_of(&self, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while id != NodeId::ROOT {
            let Some((p, name)) = self.place_of(id) else { break };
            parts.push(String::from_utf8_lossy(&name).into_owned());
            id = p;
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

    /// The node's winning place, as stored.
    pub fn loc(&self, id: NodeId) -> Option<Loc> {
        let p = self.recs.get(&id)?.place()?;
        Some(Loc {
            parent: p.parent.map_or_else(Vec::new, |n| n.0.to_vec()),
            name: p.name.to_vec(),
            deleted: p.deleted,
            seen_data: p.seen.to_vec(),
            ctime_ns: p.ctime_ns,
        })
    }

    /// The node's ctime: the latest time any of its keys (place, attributes,
    /// content) was written, as the store says; the same on every peer.
    pub fn ctime(&self, id: NodeId) -> Option<i64> {
        let r = self.recs.get(&id)?;
        let place = r.place().map_or(0, |p| p.ctime_ns);
        let attr = r.attr.as_ref().map_or(0, |a| a.ctime_ns);
        let data = self
            .winner(&r.versions)
            .map_or(0, |v| if v.ctime_ns != 0 { v.ctime_ns } else { v.mtime_ns });
        Some(place.max(attr).max(data))
    }

    /// The content head a file shows.
    pub fn shown_version(&self, id: NodeId) -> Option<DataHead> {
        let r = self.recs.get(&id)?;
        self.winner(&r.versions).map(|v| self.data_head(v))
    }

    fn data_head(&self, v: &Version) -> DataHead {
        DataHead {
            version: v.version,
            hlc: v.hlc,
            author: self.authors.get(v.author),
            entry: self.entries.get(v.entry),
            mtime_ns: v.mtime_ns,
            size: v.size,
            ctime_ns: v.ctime_ns,
            atime_ns: v.atime_ns,
        }
    }

    fn winner<'a>(&self, vs: &'a [Version]) -> Option<&'a Version> {
        vs.iter()
            .max_by_key(|v| (v.hlc, self.authors.get(v.author), self.entries.get(v.entry)))
    }

    fn rank(&self, id: NodeId, p: &Place) -> Rank {
        (p.hlc, self.authors.get(p.author), self.entries.get(p.entry), id)
    }

    // ---- inputs ----

    fn rec(&mut self, id: NodeId) -> &mut Rec {
        self.touched.insert(id);
        self.recs.entry(id).or_default()
    }

    pub fn set_locs(&mut self, id: NodeId, locs: Vec<LocHead>) {
        if id == NodeId::ROOT {
            return;
        }
        // Exact-size slices: a node's heads are kept for as long as it exists.
        let places = locs
            .into_iter()
            .map(|h| Place {
                parent: NodeId::from_slice(&h.loc.parent),
                name: h.loc.name.into_boxed_slice(),
                deleted: h.loc.deleted,
                seen: h.loc.seen_data.into_boxed_slice(),
                ctime_ns: h.loc.ctime_ns,
                hlc: h.hlc,
                author: self.authors.no(h.author),
                entry: self.entries.no(h.entry),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        self.rec(id).places = places;
    }

    pub fn set_attr(&mut self, id: NodeId, attr: Option<Attr>) {
        self.content.insert(id);
        self.rec(id).attr = attr;
    }

    pub fn set_data(&mut self, id: NodeId, data: Vec<DataHead>) {
        self.content.insert(id);
        let versions = data
            .into_iter()
            .map(|d| Version {
                version: d.version,
                hlc: d.hlc,
                author: self.authors.no(d.author),
                entry: self.entries.no(d.entry),
                mtime_ns: d.mtime_ns,
                size: d.size,
                ctime_ns: d.ctime_ns,
                atime_ns: d.atime_ns,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        self.rec(id).versions = versions;
    }

    pub fn set_xattr(&mut self, id: NodeId, name: &[u8], value: Option<Vec<u8>>) {
        self.content.insert(id);
        let r = self.rec(id);
        match value {
            Some(v) => r.xattrs.insert(name.to_vec(), v),
            None => r.xattrs.remove(name),
        };
    }

    /// Gives a pending place its entry: `head` replaces the node's only place
    /// head when that head says the same.
    pub fn rerank_loc(&mut self, id: NodeId, head: LocHead) {
        let same = self.recs.get(&id).is_some_and(|r| {
            r.places.len() == 1 && {
                let p = &r.places[0];
                p.parent == NodeId::from_slice(&head.loc.parent)
                    && *p.name == *head.loc.name
                    && p.deleted == head.loc.deleted
                    && *p.seen == *head.loc.seen_data
                    && p.ctime_ns == head.loc.ctime_ns
            }
        });
        if same {
            self.set_locs(id, vec![head]);
        }
    }

    /// Every node, shown or not (deleted ones too), whose place names `dir`.
    pub fn linked(&self, dir: NodeId) -> Vec<NodeId> {
        self.kids
            .get(&dir)
            .map_or_else(Vec::new, |k| k.iter().copied().collect())
    }

    /// Does any node, shown or not, name `id` as its parent?
    pub fn has_links(&self, id: NodeId) -> bool {
        self.kids.get(&id).is_some_and(|k| !k.is_empty())
    }

    /// Forgets a node that has no keys anywhere (created here and deleted before
    /// it was written). Only for nodes not shown, with nothing linked to them;
    /// says whether it did.
    pub fn forget(&mut self, id: NodeId) -> bool {
        let Some(r) = self.recs.get(&id) else { return true };
        if id == NodeId::ROOT || r.d.shown.is_some() || r.d.contrib.is_some() || r.d.claim.is_some() {
            return false;
        }
        if self.has_links(id) || self.cycle_of.contains_key(&id) {
            return false;
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
        true
    }

    /// The shown tree, in the form `tree::build` gives (for `mountctl check` and tests).
    pub fn tree(&self) -> Tree {
        let mut t = Tree::default();
        let mut stack = vec![NodeId::ROOT];
        while let Some(dir) = stack.pop() {
            let mut kids = BTreeMap::new();
            for (name, id) in self.names.list(dir) {
                kids.insert(name.to_vec(), id);
                t.placed.insert(
                    id,
                    Placed {
                        parent: dir,
                        name: name.to_vec(),
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
                let locs = r
                    .places
                    .iter()
                    .map(|p| LocHead {
                        loc: Loc {
                            parent: p.parent.map_or_else(Vec::new, |n| n.0.to_vec()),
                            name: p.name.to_vec(),
                            deleted: p.deleted,
                            seen_data: p.seen.to_vec(),
                            ctime_ns: p.ctime_ns,
                        },
                        hlc: p.hlc,
                        author: self.authors.get(p.author),
                        entry: self.entries.get(p.entry),
                    })
                    .collect();
                let data = r.versions.iter().map(|v| self.data_head(v)).collect();
                (
                    *id,
                    NodeInput {
                        kind: r.kind().expect("has attr"),
                        locs,
                        data,
                    },
                )
            })
            .collect()
    }
}

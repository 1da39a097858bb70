//! The tree a mount shows: a deterministic function of the store's state.
//!
//! This is the specification. The mount keeps its result as a materialized
//! view updated by incremental rules (`view.rs`); `mountctl check` and the
//! tests compare that view with [`build`] over the store. Peers holding the
//! same entries compute byte-identical trees. The rules, applied in this order:
//!
//! 1. A node's place is its `l` winner, by [`rank`]: highest HLC, then author,
//!    then entry, then node id (one entry can move several nodes).
//! 2. A node is present when that place is not deleted; a deleted file is
//!    present anyway when one of its `d` heads was not seen by the delete (an
//!    edit concurrent with the delete wins); a deleted directory is present
//!    while something present lives in it.
//! 3. A node whose parent is unknown (not arrived yet) or not a directory is
//!    hidden until that changes.
//! 4. Move cycles (x into y while y into x) are broken by re-homing, to the
//!    root, the cycle member with the highest rank.
//! 5. Names, per directory, in three tiers:
//!    - every shown node claims its name; of several claimants the one that has
//!      held it longest (lowest place HLC, then node id) gets it;
//!    - each other claimant claims `stem.conflict-<author>-<node>.ext` (both
//!      8 hex digits); it gets that name unless a node claims it as its own
//!      name (then, in the lowest node id wins, others are not shown);
//!    - a file whose content has several live heads shows its winner at its
//!      name and every other head as a read-only copy beside it,
//!      `stem.conflict-<author>-<entry>.ext`, unless the name is claimed above.
//! 6. A name no local file system could hold (empty, `.`, `..`, containing `/`
//!    or NUL, over 255 bytes) is shown as `invalid-name-<node>`.

use std::collections::{BTreeMap, HashMap, HashSet};

use store::{AuthorId, EntryId, Hlc};

use crate::node::{Kind, Loc, NodeId};

pub const NAME_MAX: usize = 255;

/// One head of a node's `l` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocHead {
    pub loc: Loc,
    pub hlc: Hlc,
    pub author: AuthorId,
    pub entry: EntryId,
}

/// The order of places: the highest wins a node's place and is re-homed out of
/// a cycle.
pub type Rank = (Hlc, AuthorId, EntryId, NodeId);

pub fn rank(id: NodeId, h: &LocHead) -> Rank {
    (h.hlc, h.author, h.entry, id)
}

/// One live head of a node's `d` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataHead {
    pub version: u64,
    pub hlc: Hlc,
    pub author: AuthorId,
    pub entry: EntryId,
    /// For display only (the tree does not depend on them).
    pub mtime_ns: i64,
    pub size: u64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
}

impl DataHead {
    fn rank(&self) -> (Hlc, AuthorId, EntryId) {
        (self.hlc, self.author, self.entry)
    }
}

/// The head whose content a file shows.
pub fn data_winner(heads: &[DataHead]) -> Option<&DataHead> {
    heads.iter().max_by_key(|h| h.rank())
}

/// What the tree function needs to know of one node.
#[derive(Clone, Debug)]
pub struct NodeInput {
    pub kind: Kind,
    pub locs: Vec<LocHead>,
    /// The node's live `d` heads.
    pub data: Vec<DataHead>,
}

impl NodeInput {
    pub fn win(&self, id: NodeId) -> Option<&LocHead> {
        self.locs.iter().max_by_key(|h| rank(id, h))
    }
}

/// Rule 2, the node's own part: not deleted, or a file with an edit the delete did not see.
pub fn alive(kind: Kind, win: &LocHead, data: &[DataHead]) -> bool {
    !win.loc.deleted || (kind != Kind::Dir && data.iter().any(|d| !win.loc.seen_data.contains(&d.version)))
}

/// Where a shown node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub parent: NodeId,
    pub name: Vec<u8>,
}

/// A conflict copy: a read-only view of another head of a file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub of: NodeId,
    pub head: DataHead,
}

/// The shown tree: only what is reachable from the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub placed: HashMap<NodeId, Placed>,
    pub children: HashMap<NodeId, BTreeMap<Vec<u8>, NodeId>>,
    pub copies: HashMap<NodeId, Copy>,
}

impl Tree {
    /// Every shown path with its node, sorted.
    pub fn walk(&self) -> Vec<(String, NodeId)> {
        let mut out = Vec::new();
        let mut stack = vec![(NodeId::ROOT, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for (name, id) in self.children.get(&dir).into_iter().flatten() {
                let p = format!("{prefix}/{}", String::from_utf8_lossy(name));
                out.push((p.clone(), *id));
                stack.push((*id, p));
            }
        }
        out.sort();
        out
    }

    /// Every shown path, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.walk().into_iter().map(|(p, _)| p).collect()
    }
}

pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// The name a node claims (rule 6).
pub fn shown_name(name: &[u8], id: NodeId) -> Vec<u8> {
    if valid_name(name) {
        name.to_vec()
    } else {
        format!("invalid-name-{}", id.short()).into_bytes()
    }
}

/// `stem.conflict-<tag>.ext`, keeping the extension so tools still recognise the file.
pub fn conflict_name(name: &[u8], tag: &str) -> Vec<u8> {
    let (stem, ext) = match name.iter().rposition(|&c| c == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    let mut out = Vec::with_capacity(name.len() + tag.len() + 10);
    out.extend_from_slice(stem);
    out.extend_from_slice(b".conflict-");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(ext);
    out
}

/// The second-tier name of a node that lost its name to another.
pub fn clash_name(name: &[u8], author: &AuthorId, id: NodeId) -> Vec<u8> {
    conflict_name(name, &format!("{}-{}", author.short(), id.short()))
}

/// The id and name of the copy of `head`, a losing content head of a file shown as `name`.
pub fn copy_of(node: NodeId, name: &[u8], head: &DataHead) -> (NodeId, Vec<u8>) {
    let mut seed = b"conflict".to_vec();
    seed.extend_from_slice(&node.0);
    seed.extend_from_slice(&head.entry.0);
    let id = NodeId(blake3::hash(&seed).as_bytes()[..16].try_into().expect("16 bytes"));
    (
        id,
        conflict_name(name, &format!("{}-{}", head.author.short(), head.entry.short())),
    )
}

pub fn build(nodes: &BTreeMap<NodeId, NodeInput>) -> Tree {
    // Rule 1: each node's winning place.
    let win: HashMap<NodeId, &LocHead> = nodes
        .iter()
        .filter(|(id, _)| **id != NodeId::ROOT)
        .filter_map(|(id, n)| n.win(*id).map(|h| (*id, h)))
        .collect();
    let mut parent: HashMap<NodeId, NodeId> = HashMap::new();
    for (id, h) in &win {
        if let Some(p) = NodeId::from_slice(&h.loc.parent) {
            parent.insert(*id, p);
        }
    }
    let known = |id: &NodeId| win.contains_key(id);

    // Rule 2 (own state): present by its own right.
    let mut present: Vec<NodeId> = win
        .iter()
        .filter(|(id, h)| alive(nodes[*id].kind, h, &nodes[*id].data) && parent.contains_key(*id))
        .map(|(id, _)| *id)
        .collect();
    present.sort();

    // Rule 4: break cycles among everything that has a parent link.
    break_cycles(&mut parent, &win);

    // Rules 2 (directories kept by their contents) and 3 (unknown ancestors).
    let mut shown: HashSet<NodeId> = HashSet::new();
    for id in present {
        let mut chain = vec![id];
        let mut cur = id;
        let ok = loop {
            let Some(&p) = parent.get(&cur) else { break false };
            if p == NodeId::ROOT {
                break true;
            }
            if !known(&p) || nodes[&p].kind != Kind::Dir {
                break false;
            }
            if shown.contains(&p) {
                break true;
            }
            chain.push(p);
            cur = p;
        };
        if ok {
            shown.extend(chain);
        }
    }

    // Rules 5 and 6: names, tier by tier.
    let mut real: HashMap<NodeId, BTreeMap<Vec<u8>, Vec<NodeId>>> = HashMap::new();
    for id in &shown {
        let name = shown_name(&win[id].loc.name, *id);
        real.entry(parent[id]).or_default().entry(name).or_default().push(*id);
    }
    let mut children: HashMap<NodeId, BTreeMap<Vec<u8>, NodeId>> = HashMap::new();
    for (dir, names) in &real {
        let mut clashes: BTreeMap<Vec<u8>, Vec<NodeId>> = BTreeMap::new();
        let taken = children.entry(*dir).or_default();
        for (name, ids) in names {
            let mut ids = ids.clone();
            ids.sort_by_key(|id| (win[id].hlc, *id));
            taken.insert(name.clone(), ids[0]);
            for id in &ids[1..] {
                clashes
                    .entry(clash_name(name, &win[id].author, *id))
                    .or_default()
                    .push(*id);
            }
        }
        for (name, ids) in clashes {
            if !names.contains_key(&name) {
                taken.insert(name, *ids.iter().min().expect("non-empty"));
            }
        }
    }
    // Copies: claimed after every node's name, so they never displace one.
    let mut copies: HashMap<NodeId, Copy> = HashMap::new();
    let mut copy_claims: HashMap<NodeId, BTreeMap<Vec<u8>, Vec<NodeId>>> = HashMap::new();
    for (dir, names) in &children {
        for (name, id) in names {
            let n = &nodes[id];
            if n.kind != Kind::File || n.data.len() < 2 {
                continue;
            }
            let w = data_winner(&n.data).expect("several heads");
            for h in n.data.iter().filter(|h| *h != w) {
                let (cid, cname) = copy_of(*id, name, h);
                copies.insert(
                    cid,
                    Copy {
                        of: *id,
                        head: h.clone(),
                    },
                );
                copy_claims.entry(*dir).or_default().entry(cname).or_default().push(cid);
            }
        }
    }
    for (dir, names) in copy_claims {
        let taken = children.entry(dir).or_default();
        let real_here = real.get(&dir);
        for (name, ids) in names {
            let claimed = taken.contains_key(&name) || real_here.is_some_and(|r| r.contains_key(&name));
            if !claimed {
                taken.insert(name, *ids.iter().min().expect("non-empty"));
            }
        }
    }
    for id in &shown {
        if nodes[id].kind == Kind::Dir {
            children.entry(*id).or_default();
        }
    }

    // Only what the root reaches is shown.
    let mut tree = Tree::default();
    let mut stack = vec![NodeId::ROOT];
    while let Some(dir) = stack.pop() {
        let kids = children.remove(&dir).unwrap_or_default();
        for (name, id) in &kids {
            tree.placed.insert(
                *id,
                Placed {
                    parent: dir,
                    name: name.clone(),
                },
            );
            if let Some(c) = copies.remove(id) {
                tree.copies.insert(*id, c);
            } else if nodes[id].kind == Kind::Dir {
                stack.push(*id);
            }
        }
        tree.children.insert(dir, kids);
    }
    tree
}

/// Re-homes to the root the highest-ranked member of each parent cycle.
fn break_cycles(parent: &mut HashMap<NodeId, NodeId>, win: &HashMap<NodeId, &LocHead>) {
    let mut ids: Vec<NodeId> = parent.keys().copied().collect();
    ids.sort();
    // done: nodes known to reach the root or a dead end.
    let mut done: HashSet<NodeId> = HashSet::new();
    for start in ids {
        loop {
            let mut path = Vec::new();
            let mut on_path = HashSet::new();
            let mut cur = start;
            let cycle_at = loop {
                if done.contains(&cur) || cur == NodeId::ROOT {
                    break None;
                }
                if !on_path.insert(cur) {
                    break Some(cur);
                }
                path.push(cur);
                match parent.get(&cur) {
                    Some(&p) => cur = p,
                    None => break None,
                }
            };
            match cycle_at {
                None => {
                    done.extend(path);
                    break;
                }
                Some(c) => {
                    let i = path.iter().position(|&n| n == c).expect("cycle member on path");
                    let last = *path[i..]
                        .iter()
                        .max_by_key(|n| rank(**n, win[*n]))
                        .expect("non-empty cycle");
                    parent.insert(last, NodeId::ROOT);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S {
        nodes: BTreeMap<NodeId, NodeInput>,
        clock: u64,
    }

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }
    fn author(n: u8) -> AuthorId {
        AuthorId([n; 32])
    }
    fn data(v: u64, by: u8, e: u8) -> DataHead {
        DataHead {
            version: v,
            hlc: Hlc::new(v, 0),
            author: author(by),
            entry: EntryId([e; 32]),
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            size: 0,
        }
    }

    impl S {
        fn new() -> Self {
            S {
                nodes: BTreeMap::new(),
                clock: 1,
            }
        }
        fn head(&mut self, parent: NodeId, name: &str, deleted: bool, by: u8) -> LocHead {
            self.clock += 1;
            LocHead {
                loc: Loc {
                    parent: parent.0.to_vec(),
                    name: name.as_bytes().to_vec(),
                    deleted,
                    seen_data: vec![],
                    ctime_ns: 0,
                },
                hlc: Hlc::new(self.clock, 0),
                author: author(by),
                entry: EntryId([self.clock as u8; 32]),
            }
        }
        fn add(&mut self, n: u8, kind: Kind, parent: NodeId, name: &str) {
            let h = self.head(parent, name, false, 1);
            self.nodes.insert(
                id(n),
                NodeInput {
                    kind,
                    locs: vec![h],
                    data: vec![data(200 + n as u64, 1, n)],
                },
            );
        }
        /// Adds a concurrent head to node `n`'s place.
        fn also(&mut self, n: u8, parent: NodeId, name: &str, deleted: bool, by: u8) {
            let h = self.head(parent, name, deleted, by);
            self.nodes.get_mut(&id(n)).unwrap().locs.push(h);
        }
        /// Replaces node `n`'s place (a write that saw the previous one).
        fn set(&mut self, n: u8, parent: NodeId, name: &str, deleted: bool, by: u8) {
            let mut h = self.head(parent, name, deleted, by);
            if deleted {
                h.loc.seen_data = self.nodes[&id(n)].data.iter().map(|d| d.version).collect();
            }
            self.nodes.get_mut(&id(n)).unwrap().locs = vec![h];
        }
        fn paths(&self) -> Vec<String> {
            build(&self.nodes).paths()
        }
    }

    #[test]
    fn plain_tree() {
        let mut s = S::new();
        s.add(1, Kind::Dir, NodeId::ROOT, "d");
        s.add(2, Kind::File, id(1), "f.txt");
        s.add(3, Kind::Symlink, NodeId::ROOT, "l");
        assert_eq!(s.paths(), vec!["/d", "/d/f.txt", "/l"]);
    }

    #[test]
    fn rename_is_one_write_and_concurrent_renames_pick_one_place() {
        let mut s = S::new();
        s.add(1, Kind::File, NodeId::ROOT, "f");
        s.set(1, NodeId::ROOT, "g", false, 1);
        s.also(1, NodeId::ROOT, "h", false, 2);
        let p = s.paths();
        assert_eq!(p, vec!["/h"], "the later rename wins; the node is in exactly one place");
    }

    #[test]
    fn edit_concurrent_with_delete_wins() {
        let mut s = S::new();
        s.add(1, Kind::Dir, NodeId::ROOT, "d");
        s.add(2, Kind::File, id(1), "f");
        s.set(2, id(1), "f", true, 1); // deleted, seeing the data head
        s.set(1, NodeId::ROOT, "d", true, 1); // and its directory
        assert_eq!(s.paths(), Vec::<String>::new());
        // An edit the delete did not see: the file and its directory come back.
        s.nodes.get_mut(&id(2)).unwrap().data = vec![data(99, 2, 99)];
        assert_eq!(s.paths(), vec!["/d", "/d/f"]);
    }

    #[test]
    fn delete_that_saw_the_edit_stays_deleted() {
        let mut s = S::new();
        s.add(2, Kind::File, NodeId::ROOT, "f");
        s.set(2, NodeId::ROOT, "f", true, 1);
        assert!(s.paths().is_empty());
    }

    #[test]
    fn move_cycle_is_broken_the_same_way_whatever_the_order() {
        let mut s = S::new();
        s.add(1, Kind::Dir, NodeId::ROOT, "x");
        s.add(2, Kind::Dir, NodeId::ROOT, "y");
        s.add(3, Kind::File, id(1), "in-x");
        s.set(1, id(2), "x", false, 1); // x into y
        s.set(2, id(1), "y", false, 2); // y into x, later
        let p = s.paths();
        assert_eq!(
            p,
            vec!["/y", "/y/x", "/y/x/in-x"],
            "y moved last, so y goes back to the root"
        );
        // Same inputs in another map order give the same tree.
        let mut rev: BTreeMap<NodeId, NodeInput> = BTreeMap::new();
        for (k, v) in s.nodes.iter().rev() {
            rev.insert(*k, v.clone());
        }
        assert_eq!(build(&rev), build(&s.nodes));
    }

    #[test]
    fn same_name_keeps_both_with_stable_names() {
        let mut s = S::new();
        s.add(1, Kind::File, NodeId::ROOT, "notes.txt");
        s.add(2, Kind::File, NodeId::ROOT, "notes.txt");
        s.nodes.get_mut(&id(2)).unwrap().locs[0].author = author(7);
        let p = s.paths();
        assert_eq!(
            p,
            vec![
                format!("/notes.conflict-{}-{}.txt", author(7).short(), id(2).short()),
                "/notes.txt".to_string()
            ]
        );
    }

    #[test]
    fn a_name_beats_a_clash_name_and_content_heads_show_as_copies() {
        let mut s = S::new();
        s.add(1, Kind::File, NodeId::ROOT, "a");
        s.add(2, Kind::File, NodeId::ROOT, "a");
        let clash = String::from_utf8(clash_name(b"a", &author(1), id(2))).unwrap();
        s.add(3, Kind::File, NodeId::ROOT, &clash);
        // Node 2 lost "a" and its clash name is taken by node 3's own name: not shown.
        assert_eq!(s.paths(), vec!["/a".to_string(), format!("/{clash}")]);
        // Two content heads of node 1: the loser shows beside it.
        s.nodes.get_mut(&id(1)).unwrap().data.push(data(500, 9, 77));
        let t = build(&s.nodes);
        let loser = data(201, 1, 1);
        let (cid, cname) = copy_of(id(1), b"a", &loser);
        assert_eq!(t.children[&NodeId::ROOT].get(&cname), Some(&cid));
        assert_eq!(t.copies[&cid].of, id(1));
    }

    #[test]
    fn unknown_parent_hides_until_it_arrives_and_bad_names_are_made_safe() {
        let mut s = S::new();
        s.add(2, Kind::File, id(1), "f");
        assert!(s.paths().is_empty());
        s.add(1, Kind::Dir, NodeId::ROOT, "d");
        assert_eq!(s.paths(), vec!["/d", "/d/f"]);
        s.add(3, Kind::File, NodeId::ROOT, "a/b");
        assert!(s.paths().contains(&format!("/invalid-name-{}", id(3).short())));
    }

    #[test]
    fn file_as_parent_hides_children() {
        let mut s = S::new();
        s.add(1, Kind::File, NodeId::ROOT, "f");
        s.add(2, Kind::File, id(1), "g");
        assert_eq!(s.paths(), vec!["/f"]);
    }

    #[test]
    fn conflict_names_keep_extension() {
        assert_eq!(conflict_name(b"a.tar.gz", "x"), b"a.tar.conflict-x.gz");
        assert_eq!(conflict_name(b".bashrc", "x"), b".bashrc.conflict-x");
        assert_eq!(conflict_name(b"Makefile", "x"), b"Makefile.conflict-x");
    }
}

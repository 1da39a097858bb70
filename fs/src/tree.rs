//! The tree a mount shows: a deterministic function of the store's state.
//!
//! Peers holding the same entries compute byte-identical trees. The rules,
//! applied in this order:
//!
//! 1. A node's place is its `l` winner (highest HLC, then author, then entry).
//! 2. A node is present when that place is not deleted; a deleted file is
//!    present anyway when one of its `d` heads was not seen by the delete (an
//!    edit concurrent with the delete wins); a deleted directory is present
//!    while something present lives in it.
//! 3. A node whose parent is unknown (not arrived yet) is hidden until it is.
//! 4. Move cycles (x into y while y into x) are broken by re-homing, to the
//!    root, the cycle member whose place was written last (highest rank).
//! 5. Several nodes claiming one name in one directory: the one that has held
//!    it longest (lowest place HLC, then node id) keeps it; each other becomes
//!    `stem.conflict-<author>-<node>.ext`, both parts 8 hex digits.
//! 6. A name no local file system could hold (empty, `.`, `..`, containing `/`
//!    or NUL, over 255 bytes) is shown as `invalid-name-<node>`.

use std::collections::{BTreeMap, HashMap, HashSet};

use store::{AuthorId, EntryId, Hlc};

use crate::node::{Kind, Loc, NodeId};

pub const NAME_MAX: usize = 255;

/// One head of a node's `l` key.
#[derive(Clone, Debug)]
pub struct LocHead {
    pub loc: Loc,
    pub hlc: Hlc,
    pub author: AuthorId,
    pub entry: EntryId,
}

impl LocHead {
    fn rank(&self) -> (Hlc, AuthorId, EntryId) {
        (self.hlc, self.author, self.entry)
    }
}

/// What the tree function needs to know of one node.
#[derive(Clone, Debug)]
pub struct NodeInput {
    pub kind: Kind,
    pub locs: Vec<LocHead>,
    /// Versions of the node's current (live) `d` heads.
    pub data_heads: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub parent: NodeId,
    pub name: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub placed: HashMap<NodeId, Placed>,
    pub children: HashMap<NodeId, BTreeMap<Vec<u8>, NodeId>>,
}

impl Tree {
    /// Every present path, sorted: for tests and for comparing peers.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(NodeId::ROOT, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for (name, id) in self.children.get(&dir).into_iter().flatten() {
                let p = format!("{prefix}/{}", String::from_utf8_lossy(name));
                out.push(p.clone());
                stack.push((*id, p));
            }
        }
        out.sort();
        out
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

pub fn build(nodes: &BTreeMap<NodeId, NodeInput>) -> Tree {
    // Rule 1: each node's winning place.
    let win: HashMap<NodeId, &LocHead> = nodes
        .iter()
        .filter_map(|(id, n)| n.locs.iter().max_by_key(|h| h.rank()).map(|h| (*id, h)))
        .collect();
    let mut parent: HashMap<NodeId, NodeId> = HashMap::new();
    for (id, h) in &win {
        if *id != NodeId::ROOT {
            if let Some(p) = NodeId::from_slice(&h.loc.parent) {
                parent.insert(*id, p);
            }
        }
    }
    let known = |id: &NodeId| *id == NodeId::ROOT || (win.contains_key(id) && nodes.get(id).is_some());

    // Rule 2 (own state): present by its own right.
    let mut present: HashSet<NodeId> = HashSet::new();
    for (id, h) in &win {
        let n = &nodes[id];
        let alive =
            !h.loc.deleted || (n.kind != Kind::Dir && n.data_heads.iter().any(|d| !h.loc.seen_data.contains(d)));
        if alive && parent.contains_key(id) {
            present.insert(*id);
        }
    }

    // Rule 4: break cycles among everything that has a parent link.
    break_cycles(&mut parent, &win);

    // Rules 2 (directories kept by their contents) and 3 (unknown ancestors).
    let mut shown: HashSet<NodeId> = HashSet::new();
    let mut ids: Vec<NodeId> = present.iter().copied().collect();
    ids.sort();
    for id in ids {
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

    // Rules 5 and 6: names.
    let mut claims: HashMap<NodeId, BTreeMap<Vec<u8>, Vec<NodeId>>> = HashMap::new();
    for id in &shown {
        let h = win[id];
        let name = if valid_name(&h.loc.name) {
            h.loc.name.clone()
        } else {
            format!("invalid-name-{}", id.short()).into_bytes()
        };
        claims.entry(parent[id]).or_default().entry(name).or_default().push(*id);
    }
    let mut tree = Tree::default();
    tree.children.insert(NodeId::ROOT, BTreeMap::new());
    for (dir, names) in claims {
        let mut taken: BTreeMap<Vec<u8>, NodeId> = BTreeMap::new();
        let mut losers = Vec::new();
        for (name, mut ids) in names {
            ids.sort_by_key(|id| (win[id].hlc, *id));
            taken.insert(name.clone(), ids[0]);
            losers.extend(ids[1..].iter().map(|id| (name.clone(), *id)));
        }
        for (name, id) in losers {
            let tag = format!("{}-{}", win[&id].author.short(), id.short());
            taken.insert(conflict_name(&name, &tag), id);
        }
        for (name, id) in &taken {
            tree.placed.insert(
                *id,
                Placed {
                    parent: dir,
                    name: name.clone(),
                },
            );
        }
        tree.children.insert(dir, taken);
    }
    for id in &shown {
        if nodes[id].kind == Kind::Dir {
            tree.children.entry(*id).or_default();
        }
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
                        .max_by_key(|n| win[*n].rank())
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
                    data_heads: vec![200 + n as u64],
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
                h.loc.seen_data = self.nodes[&id(n)].data_heads.clone();
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
        // A data head the delete did not see: the file and its directory come back.
        s.nodes.get_mut(&id(2)).unwrap().data_heads.push(99);
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

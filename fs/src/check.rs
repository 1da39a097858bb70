//! `mountctl check`: the live view against the specification. The store is
//! scanned afresh, the local ops not yet written are laid over it exactly as
//! the view lays them, `tree::build` runs, and every shown path, node,
//! attribute and conflict copy is compared; so is the inode map in memory
//! with its file. Changes arriving from peers while it runs can make the two
//! differ for a moment, so a difference is confirmed over a few tries.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use store::{AuthorId, Head};

use crate::Shared;
use crate::inputs::{self, PENDING_ENTRY, PENDING_HLC};
use crate::model::Model;
use crate::node::{self, Attr, KeyKind, NodeId};
use crate::tree::{self, DataHead, LocHead, NodeInput, Tree};

/// What a user sees of a shown node, besides its place.
#[derive(Clone, Debug, PartialEq)]
struct Facts {
    attr: Option<Attr>,
    size: u64,
    mtime_ns: i64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Default)]
struct SpecNode {
    locs: Vec<LocHead>,
    attr: Option<Attr>,
    data: Vec<DataHead>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Shared {
    pub(crate) fn check(&self) -> Vec<String> {
        let mut last = Vec::new();
        for attempt in 0..10 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            last = self.check_once().unwrap_or_else(|e| vec![e]);
            if last.is_empty() {
                break;
            }
        }
        last
    }

    pub(crate) fn check_once(&self) -> Result<Vec<String>, String> {
        let _commit = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let scan = inputs::scan(self.store.as_ref()).map_err(|e| format!("cannot scan the store: {e}"))?;
        let (tree, facts, overlay, memory, delta) = {
            let mut m = self.lock();
            let mut tree = m.view.tree();
            // Sockets are this mount's alone: the store never has them.
            tree.placed.retain(|id, _| !m.local.contains(id));
            for kids in tree.children.values_mut() {
                kids.retain(|_, id| !m.local.contains(id));
            }
            let facts = view_facts(&m, &tree);
            let memory: Vec<(u64, NodeId)> = m.inodes.iter().collect();
            let unknown: Vec<String> = memory
                .iter()
                .filter(|(_, id)| m.view.get(*id).is_none() && m.view.copy(*id).is_none())
                .map(|(ino, id)| format!("inode {ino} names node {id:?}, which the mount does not know"))
                .collect();
            (
                tree,
                facts,
                m.pending.changes(),
                (memory, unknown),
                m.inodes.take_delta(),
            )
        };
        self.inode_db
            .write(&delta, false)
            .map_err(|e| format!("cannot save the inode map: {e}"))?;
        let file = self
            .inode_db
            .read_all()
            .map_err(|e| format!("cannot read the inode map: {e}"))?;
        drop(_commit);

        let mut out = Vec::new();
        let overlay: Vec<store::Op> = overlay.iter().map(|c| c.op()).collect();
        let (spec_tree, spec_facts) = spec(scan, &overlay, self.me);
        compare(&tree, &facts, &spec_tree, &spec_facts, &mut out);
        let (memory, unknown) = memory;
        out.extend(unknown);
        let mut mem: Vec<(u64, NodeId)> = memory
            .into_iter()
            .filter(|(i, _)| *i != crate::inode_map::ROOT_INO)
            .collect();
        let mut file = file;
        mem.sort();
        file.sort();
        if mem != file {
            let only_mem = mem.iter().filter(|x| !file.contains(x)).count();
            let only_file = file.iter().filter(|x| !mem.contains(x)).count();
            out.push(format!(
                "the inode map in memory and its file differ: {only_mem} numbers only in memory, {only_file} only in the file"
            ));
        }
        Ok(out)
    }
}

fn view_facts(m: &Model, t: &Tree) -> HashMap<NodeId, Facts> {
    let mut out = HashMap::new();
    for id in t.placed.keys().chain(std::iter::once(&NodeId::ROOT)) {
        if let Some(r) = m.view.get(*id) {
            let w = m.view.shown_version(*id);
            out.insert(
                *id,
                Facts {
                    attr: r.attr.clone(),
                    size: w.as_ref().map_or(0, |d| d.size),
                    mtime_ns: w.as_ref().map_or(0, |d| d.mtime_ns),
                    xattrs: r.xattrs.clone(),
                },
            );
        }
    }
    out
}

/// The tree and facts the store plus the pending ops give, by the specification alone.
fn spec(scan: BTreeMap<Vec<u8>, Vec<Head>>, overlay: &[store::Op], me: AuthorId) -> (Tree, HashMap<NodeId, Facts>) {
    let mut keys = scan;
    for op in overlay {
        keys.insert(
            op.key.clone(),
            vec![Head {
                entry: PENDING_ENTRY,
                author: me,
                hlc: PENDING_HLC,
                value: op.value.clone(),
            }],
        );
    }
    let mut nodes: BTreeMap<NodeId, SpecNode> = BTreeMap::new();
    for (key, heads) in &keys {
        match node::parse_key(key) {
            Some(KeyKind::Loc(id)) => nodes.entry(id).or_default().locs = inputs::loc_heads(heads),
            Some(KeyKind::Attr(id)) => nodes.entry(id).or_default().attr = inputs::attr_winner(heads),
            Some(KeyKind::Data(id)) => nodes.entry(id).or_default().data = inputs::data_heads(heads),
            Some(KeyKind::Xattr(id, name)) => {
                if let Some(v) = inputs::xattr_winner(heads) {
                    nodes.entry(id).or_default().xattrs.insert(name.to_vec(), v);
                }
            }
            None => {}
        }
    }
    let input: BTreeMap<NodeId, NodeInput> = nodes
        .iter()
        .filter_map(|(id, n)| {
            Some((
                *id,
                NodeInput {
                    kind: n.attr.as_ref()?.kind(),
                    locs: n.locs.clone(),
                    data: n.data.clone(),
                },
            ))
        })
        .collect();
    let t = tree::build(&input);
    let facts = nodes
        .into_iter()
        .map(|(id, n)| {
            let w = tree::data_winner(&n.data);
            (
                id,
                Facts {
                    attr: n.attr,
                    size: w.map_or(0, |d| d.size),
                    mtime_ns: w.map_or(0, |d| d.mtime_ns),
                    xattrs: n.xattrs,
                },
            )
        })
        .collect();
    (t, facts)
}

fn compare(
    view: &Tree,
    facts: &HashMap<NodeId, Facts>,
    spec: &Tree,
    spec_facts: &HashMap<NodeId, Facts>,
    out: &mut Vec<String>,
) {
    let v: BTreeMap<String, NodeId> = view.walk().into_iter().collect();
    let s: BTreeMap<String, NodeId> = spec.walk().into_iter().collect();
    for (path, id) in &v {
        match s.get(path) {
            None => out.push(format!("{path}: shown by the mount, not by the store")),
            Some(sid) if sid != id => out.push(format!(
                "{path}: the mount shows node {}, the store node {}",
                id.short(),
                sid.short()
            )),
            Some(_) => {
                if let Some(c) = view.copies.get(id) {
                    if spec.copies.get(id) != Some(c) {
                        out.push(format!("{path}: the conflict copy differs from the store's"));
                    }
                } else if facts.get(id) != spec_facts.get(id) {
                    out.push(format!(
                        "{path}: attributes differ: mount {:?}, store {:?}",
                        facts.get(id),
                        spec_facts.get(id)
                    ));
                }
            }
        }
    }
    for path in s.keys().filter(|p| !v.contains_key(*p)) {
        out.push(format!("{path}: in the store, not shown by the mount"));
    }
    let root = NodeId::ROOT;
    if facts.get(&root).map(|f| (&f.attr, f.mtime_ns)) != spec_facts.get(&root).map(|f| (&f.attr, f.mtime_ns)) {
        out.push("/: the root's attributes differ from the store's".into());
    }
}

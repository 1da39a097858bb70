//! The mount's in-memory model: every present node with its place, attributes
//! and content manifest, the inode map, and open files. Built once from the
//! store by the tree function; local operations then update it and the store
//! together, under one lock, so the two never disagree.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use store::{Head, KvStore, Manifest, Op};

use crate::buffer::Buffer;
use crate::inode_map::InodeMap;
use crate::node::{self, Attr, Data, KeyKind, Kind, Loc, NodeId};
use crate::tree::{self, LocHead, NodeInput};

pub struct Node {
    pub kind: Kind,
    pub parent: NodeId,
    pub name: Vec<u8>,
    pub attr: Attr,
    pub mtime_ns: i64,
    pub manifest: Arc<Manifest>,
    /// Versions of the `d` heads: an unlink records them (edit beats delete).
    pub data_heads: Vec<u64>,
    /// The `l` winner says deleted, yet the node is shown (a concurrent edit
    /// kept it): the next local write of it puts its place back.
    pub loc_deleted: bool,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub children: BTreeMap<Vec<u8>, NodeId>,
    /// Gone from its directory but still open: readable until the last close.
    pub unlinked: bool,
    /// Created here and not yet written to the store (its ops are pending):
    /// deleting it now just forgets them.
    pub pending_create: bool,
    /// A conflict copy: a read-only view of another head of `.0`'s content.
    /// It exists only in the tree shown, never in the store.
    pub conflict_of: Option<NodeId>,
    /// Conflict copies of this file are shown.
    pub has_conflicts: bool,
}

/// A file's content while it is open for writing.
pub struct Dirty {
    pub buf: Buffer,
    /// Changed since the last commit.
    pub dirty: bool,
}

/// An open file's buffer. Lock order: `content` before the state lock, never
/// the other way round; so the state side reads the size from `len`, which
/// every change of `content` updates while holding it.
pub struct OpenBuffer {
    pub len: AtomicU64,
    /// The mtime the next commit stores: the time of the last write or
    /// truncate, or a time set since (`futimens` before `close`, as cp and tar
    /// do). [`NO_MTIME`] until either happens.
    pub mtime: AtomicI64,
    pub content: Mutex<Dirty>,
}

pub const NO_MTIME: i64 = i64::MIN;

impl OpenBuffer {
    pub fn new(buf: Buffer, dirty: bool) -> Arc<OpenBuffer> {
        Arc::new(OpenBuffer {
            len: AtomicU64::new(buf.len()),
            mtime: AtomicI64::new(NO_MTIME),
            content: Mutex::new(Dirty { buf, dirty }),
        })
    }

    /// Records a change of content: new length, mtime now.
    pub fn changed(&self, d: &Dirty) {
        self.len.store(d.buf.len(), Ordering::Release);
        self.mtime.store(now_ns(), Ordering::Release);
    }

    pub fn mtime(&self) -> Option<i64> {
        Some(self.mtime.load(Ordering::Acquire)).filter(|&t| t != NO_MTIME)
    }
}

#[derive(Default)]
pub struct OpenFile {
    pub handles: u32,
    pub buf: Option<Arc<OpenBuffer>>,
}

pub enum Handle {
    File(NodeId),
    /// A directory listing taken at opendir: offsets index into it, so a large
    /// directory streams in O(1) per entry.
    Dir(Vec<(u64, FileType, Vec<u8>)>),
}

pub struct State {
    pub nodes: HashMap<NodeId, Node>,
    pub inodes: InodeMap,
    pub open: HashMap<NodeId, OpenFile>,
    pub handles: HashMap<u64, Handle>,
    pub pending: crate::pending::Pending,
    /// How many times the kernel was told of each node (FUSE lookup counts).
    /// A node the kernel still knows stays openable after an unlink or a
    /// rename over it, until `forget`.
    pub lookups: HashMap<NodeId, u64>,
    next_fh: u64,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub fn loc_op(id: NodeId, parent: NodeId, name: &[u8]) -> Op {
    let l = Loc {
        parent: parent.0.to_vec(),
        name: name.to_vec(),
        deleted: false,
        seen_data: vec![],
    };
    Op::put(node::loc_key(id), prost::Message::encode_to_vec(&l))
}

pub fn delete_op(id: NodeId, n: &Node) -> Op {
    let l = Loc {
        parent: n.parent.0.to_vec(),
        name: n.name.clone(),
        deleted: true,
        seen_data: n.data_heads.clone(),
    };
    Op::put(node::loc_key(id), prost::Message::encode_to_vec(&l))
}

pub fn attr_op(id: NodeId, a: &Attr) -> Op {
    Op::put(node::attr_key(id), prost::Message::encode_to_vec(a))
}

/// A new version of `d`; the caller records `version` in the node's data heads.
pub fn data_op(id: NodeId, m: &Manifest, mtime_ns: i64, version: u64) -> Op {
    let d = Data {
        manifest: m.encode(),
        mtime_ns,
        version,
    };
    // The chunks travel as refs, so a peer fetches them before it applies this.
    Op::put_with_refs(node::data_key(id), prost::Message::encode_to_vec(&d), m.chunks())
}

impl Node {
    pub fn new(kind: Kind, parent: NodeId, name: &[u8], attr: Attr) -> Node {
        Node {
            kind,
            parent,
            name: name.to_vec(),
            attr,
            mtime_ns: now_ns(),
            manifest: Arc::new(Manifest::default()),
            data_heads: vec![],
            loc_deleted: false,
            xattrs: BTreeMap::new(),
            children: BTreeMap::new(),
            unlinked: false,
            pending_create: false,
            conflict_of: None,
            has_conflicts: false,
        }
    }

    pub fn file_type(&self) -> FileType {
        match self.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
        }
    }

    /// Every op that writes this node's place, attributes and content.
    pub fn create_ops(&mut self, id: NodeId) -> Vec<Op> {
        vec![
            loc_op(id, self.parent, &self.name),
            attr_op(id, &self.attr),
            self.data_op(id),
        ]
    }

    /// Writes the node's current content and mtime as a new version.
    pub fn data_op(&mut self, id: NodeId) -> Op {
        let v = rand::random();
        self.data_heads = vec![v];
        data_op(id, &self.manifest, self.mtime_ns, v)
    }
}

impl State {
    /// Builds the model from the store: one scan, then the tree function.
    pub fn load(store: &dyn KvStore, inodes: InodeMap) -> store::Result<State> {
        let (nodes, init) = load_nodes(store)?;
        let mut st = State {
            nodes,
            inodes,
            open: HashMap::new(),
            handles: HashMap::new(),
            pending: Default::default(),
            lookups: HashMap::new(),
            next_fh: 1,
        };
        st.pending.queue(init);
        Ok(st)
    }
}

/// Every present node, built from the store by the tree function, and the ops
/// that initialise the root of a new share (empty otherwise).
pub fn load_nodes(store: &dyn KvStore) -> store::Result<(HashMap<NodeId, Node>, Vec<Op>)> {
    {
        let mut inputs: BTreeMap<NodeId, NodeInput> = BTreeMap::new();
        let mut attrs: HashMap<NodeId, Attr> = HashMap::new();
        let mut datas: HashMap<NodeId, Data> = HashMap::new();
        let mut xattrs: HashMap<NodeId, BTreeMap<Vec<u8>, Vec<u8>>> = HashMap::new();
        let mut locs: HashMap<NodeId, Vec<LocHead>> = HashMap::new();
        let mut data_heads: HashMap<NodeId, Vec<u64>> = HashMap::new();
        let mut data_conflicts: HashMap<NodeId, Vec<Head>> = HashMap::new();
        let winner = |hs: &[Head]| store::head::winner(hs).and_then(|h| h.value.clone());
        for (key, heads) in store.scan_heads(node::PREFIX)? {
            match node::parse_key(&key) {
                Some(KeyKind::Loc(id)) => {
                    let hs = heads
                        .iter()
                        .filter_map(|h| {
                            Some(LocHead {
                                loc: node::decode(h.value.as_ref()?)?,
                                hlc: h.hlc,
                                author: h.author,
                                entry: h.entry,
                            })
                        })
                        .collect();
                    locs.insert(id, hs);
                }
                Some(KeyKind::Attr(id)) => {
                    if let Some(a) = winner(&heads).and_then(|v| node::decode::<Attr>(&v)) {
                        attrs.insert(id, a);
                    }
                }
                Some(KeyKind::Data(id)) => {
                    let versions = heads
                        .iter()
                        .filter_map(|h| node::decode::<Data>(h.value.as_ref()?))
                        .map(|d| d.version);
                    data_heads.insert(id, versions.collect());
                    if let Some(d) = winner(&heads).and_then(|v| node::decode::<Data>(&v)) {
                        datas.insert(id, d);
                    }
                    let live: Vec<Head> = heads.iter().filter(|h| h.value.is_some()).cloned().collect();
                    if live.len() > 1 {
                        data_conflicts.insert(id, live);
                    }
                }
                Some(KeyKind::Xattr(id, name)) => {
                    if let Some(v) = winner(&heads) {
                        xattrs.entry(id).or_default().insert(name.to_vec(), v);
                    }
                }
                None => {}
            }
        }
        for (id, hs) in &locs {
            if let Some(a) = attrs.get(id) {
                inputs.insert(
                    *id,
                    NodeInput {
                        kind: a.kind(),
                        locs: hs.clone(),
                        data_heads: data_heads.get(id).cloned().unwrap_or_default(),
                    },
                );
            }
        }
        let t = tree::build(&inputs);
        let mut nodes: HashMap<NodeId, Node> = HashMap::new();
        let mut init = Vec::new();
        let root_attr = attrs.remove(&NodeId::ROOT).unwrap_or(Attr {
            kind: Kind::Dir as u32,
            mode: 0o755,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            target: vec![],
        });
        let mut root = Node::new(Kind::Dir, NodeId::ROOT, b"", root_attr);
        match datas.get(&NodeId::ROOT) {
            Some(d) => root.mtime_ns = d.mtime_ns,
            // A new share: its root's attributes and time are written once, so
            // every later mount (and every peer) shows the same.
            None => init = vec![attr_op(NodeId::ROOT, &root.attr), root.data_op(NodeId::ROOT)],
        }
        nodes.insert(NodeId::ROOT, root);
        for (id, placed) in &t.placed {
            let attr = attrs[id].clone();
            let mut n = Node::new(attr.kind(), placed.parent, &placed.name, attr);
            if let Some(d) = datas.get(id) {
                n.mtime_ns = d.mtime_ns;
                n.manifest = Arc::new(Manifest::decode(&d.manifest).unwrap_or_default());
            }
            n.data_heads = data_heads.remove(id).unwrap_or_default();
            n.loc_deleted = locs[id]
                .iter()
                .max_by_key(|h| (h.hlc, h.author, h.entry))
                .is_some_and(|h| h.loc.deleted);
            n.xattrs = xattrs.remove(id).unwrap_or_default();
            nodes.insert(*id, n);
        }
        for (dir, kids) in t.children {
            if let Some(n) = nodes.get_mut(&dir) {
                n.children = kids;
            }
        }
        add_conflict_copies(&mut nodes, &data_conflicts);
        Ok((nodes, init))
    }
}

/// Shows every losing head of a file's content beside it, as
/// `NAME.conflict-<author>-<entry>.EXT` (both 8 hex digits): the same names on
/// every peer, since they come from the heads alone.
fn add_conflict_copies(nodes: &mut HashMap<NodeId, Node>, conflicts: &HashMap<NodeId, Vec<Head>>) {
    let mut ids: Vec<&NodeId> = conflicts.keys().collect();
    ids.sort();
    for id in ids {
        let Some(n) = nodes.get(id) else { continue };
        if n.kind != Kind::File {
            continue;
        }
        let win = store::head::winner(&conflicts[id]).map(|h| h.entry);
        let (parent, name, attr) = (n.parent, n.name.clone(), n.attr.clone());
        nodes.get_mut(id).expect("present").has_conflicts = true;
        for h in &conflicts[id] {
            if Some(h.entry) == win {
                continue;
            }
            let Some(d) = h.value.as_ref().and_then(|v| node::decode::<Data>(v)) else {
                continue;
            };
            let mut seed = b"conflict".to_vec();
            seed.extend_from_slice(&id.0);
            seed.extend_from_slice(&h.entry.0);
            let cid = NodeId(blake3::hash(&seed).as_bytes()[..16].try_into().expect("16 bytes"));
            let cname = tree::conflict_name(&name, &format!("{}-{}", h.author.short(), h.entry.short()));
            let mut c = Node::new(Kind::File, parent, &cname, attr.clone());
            c.mtime_ns = d.mtime_ns;
            c.manifest = Arc::new(Manifest::decode(&d.manifest).unwrap_or_default());
            c.conflict_of = Some(*id);
            if let Some(p) = nodes.get_mut(&parent) {
                p.children.entry(cname).or_insert(cid);
            }
            nodes.insert(cid, c);
        }
    }
}

impl State {
    /// The path of `id` from the mount's root.
    pub fn path_of(&self, mut id: NodeId) -> String {
        let mut parts = Vec::new();
        while id != NodeId::ROOT {
            let Some(n) = self.nodes.get(&id) else { break };
            parts.push(String::from_utf8_lossy(&n.name).into_owned());
            id = n.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Conflict copies shown now: (copy path, file path).
    pub fn conflicts(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.unlinked)
            .filter_map(|(id, n)| Some((self.path_of(*id), self.path_of(n.conflict_of?))))
            .collect();
        out.sort();
        out
    }

    /// Takes a file's conflict copies out of the tree: a local write of the file
    /// merged every head.
    pub fn drop_conflict_copies(&mut self, of: NodeId) {
        let copies: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.conflict_of == Some(of) && !n.unlinked)
            .map(|(id, _)| *id)
            .collect();
        for c in copies {
            self.drop_node(c);
        }
        if let Some(n) = self.nodes.get_mut(&of) {
            n.has_conflicts = false;
        }
    }

    pub fn new_fh(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    pub fn id_of(&self, ino: INodeNo) -> Option<NodeId> {
        self.inodes.node(ino.0)
    }

    pub fn size_of(&self, id: NodeId) -> u64 {
        if let Some(b) = self.open.get(&id).and_then(|o| o.buf.as_ref()) {
            return b.len.load(Ordering::Acquire);
        }
        match self.nodes.get(&id) {
            Some(n) if n.kind == Kind::Symlink => n.attr.target.len() as u64,
            Some(n) => n.manifest.size(),
            None => 0,
        }
    }

    pub fn file_attr(&mut self, id: NodeId) -> Option<FileAttr> {
        let size = self.size_of(id);
        let ino = self.inodes.ino(id);
        let n = self.nodes.get(&id)?;
        let open_mtime = self.open.get(&id).and_then(|o| o.buf.as_ref()).and_then(|b| b.mtime());
        let t = time(open_mtime.unwrap_or(n.mtime_ns));
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: n.file_type(),
            perm: (n.attr.mode & 0o7777) as u16,
            nlink: 1,
            uid: n.attr.uid,
            gid: n.attr.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Takes a node out of the model (after its delete was written), unless it
    /// is still open: then it lingers, unlinked, until the last close.
    pub fn drop_node(&mut self, id: NodeId) {
        if let Some((parent, name)) = self.nodes.get(&id).map(|n| (n.parent, n.name.clone())) {
            if let Some(p) = self.nodes.get_mut(&parent) {
                if p.children.get(&name) == Some(&id) {
                    p.children.remove(&name);
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.unlinked = true;
        }
        self.reap(id);
    }

    /// Forgets an unlinked node once nothing refers to it: no open handle and
    /// no kernel lookup.
    pub fn reap(&mut self, id: NodeId) {
        let unlinked = self.nodes.get(&id).is_some_and(|n| n.unlinked);
        let open = self.open.get(&id).is_some_and(|o| o.handles > 0);
        if unlinked && !open && !self.lookups.contains_key(&id) {
            self.nodes.remove(&id);
            self.open.remove(&id);
            self.inodes.remove(id);
        }
    }

    /// Is `id` the directory `ancestor` or inside it?
    pub fn is_within(&self, mut id: NodeId, ancestor: NodeId) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            if id == NodeId::ROOT {
                return false;
            }
            match self.nodes.get(&id) {
                Some(n) => id = n.parent,
                None => return false,
            }
        }
    }
}

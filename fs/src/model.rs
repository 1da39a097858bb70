//! The mount's state, under one lock: the view, the local changes not yet in
//! the store, inode numbers, open files and handles, and what the kernel holds.
//!
//! Nothing here does I/O: the lock is never held across a store read or write,
//! a chunking pass or an fsync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use store::{AuthorId, Manifest, Op};

use crate::errno::{Errno, R};
use crate::files::{NO_MTIME, OpenFile};
use crate::health::Health;
use crate::inode_map::Inodes;
use crate::inputs;
use crate::node::{self, Attr, Data, Kind, Loc, NodeId};
use crate::pending::{Change, Pending};
use crate::tree::DataHead;
use crate::view::View;

/// What the kernel must forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inval {
    Entry(u64, Vec<u8>),
    Inode(u64),
}

/// A node's attributes as the kernel sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
    pub nlink: u32,
    pub rdev: u32,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
}

pub enum Handle {
    File(NodeId),
    /// A listing taken at opendir: offsets index into it, so a large directory
    /// streams in O(1) per entry.
    Dir(Vec<DirEntry>),
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub fn loc_op(id: NodeId, loc: &Loc) -> Op {
    Op::put(node::loc_key(id), prost::Message::encode_to_vec(loc))
}

pub fn attr_op(id: NodeId, a: &Attr) -> Op {
    Op::put(node::attr_key(id), prost::Message::encode_to_vec(a))
}

/// A new version of `d`.
pub fn data_op(id: NodeId, m: &Manifest, mtime_ns: i64, version: u64) -> Op {
    let d = Data {
        manifest: m.encode(),
        mtime_ns,
        version,
        ctime_ns: now_ns(),
        atime_ns: 0,
    };
    // The chunks travel as refs, so a peer fetches them before it applies this.
    Op::put_with_refs(node::data_key(id), prost::Message::encode_to_vec(&d), m.chunks())
}

pub struct Model {
    pub me: AuthorId,
    pub view: View,
    pub pending: Pending,
    pub inodes: Inodes,
    pub open: HashMap<NodeId, OpenFile>,
    pub handles: HashMap<u64, Handle>,
    /// How many times the kernel was told of each node (FUSE lookup counts).
    pub lookups: HashMap<NodeId, u64>,
    /// Created here; none of its keys written or being written yet.
    pub unwritten: HashSet<NodeId>,
    /// Deleted before any key of it was written: its record goes once nothing
    /// refers to it.
    pub forgotten: HashSet<NodeId>,
    /// Nodes of this machine only, never written to the store: paths
    /// `.latticeignore` names (kept in the inode map's file) and Unix
    /// sockets (`ephemeral`: not kept at all).
    pub local: HashSet<NodeId>,
    pub ephemeral: HashSet<NodeId>,
    /// The content of local-only files: (version, manifest).
    pub local_content: HashMap<NodeId, (u64, Arc<Manifest>)>,
    /// Subdirectory counts of directories (see [`Model::subdirs`]).
    subdirs: HashMap<NodeId, HashSet<Box<[u8]>>>,
    /// Access times of reads on this machine (see [`Model::accessed`]).
    pub atimes: HashMap<NodeId, i64>,
    /// Nodes this mount deleted that the kernel still holds.
    deleted_here: HashSet<NodeId>,
    /// Whether changes can be taken (see `health.rs`).
    pub health: Health,
    /// Nodes whose changes were in a window the store refused: the error
    /// their next fsync or close reports.
    pub write_errors: HashMap<NodeId, Errno>,
    /// Manifests of files recently written here: (version, manifest).
    recent: HashMap<NodeId, (u64, Arc<Manifest>)>,
    recent_chunks: usize,
    next_fh: u64,
}

impl Model {
    pub fn new(me: AuthorId, view: View, inodes: Inodes) -> Model {
        Model {
            me,
            view,
            pending: Pending::default(),
            inodes,
            open: HashMap::new(),
            handles: HashMap::new(),
            lookups: HashMap::new(),
            unwritten: HashSet::new(),
            forgotten: HashSet::new(),
            deleted_here: HashSet::new(),
            local: HashSet::new(),
            ephemeral: HashSet::new(),
            local_content: HashMap::new(),
            atimes: HashMap::new(),
            subdirs: HashMap::new(),
            health: Health::Ok,
            write_errors: HashMap::new(),
            recent: HashMap::new(),
            recent_chunks: 0,
            next_fh: 1,
        }
    }

    pub fn new_fh(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    /// The node or copy of `ino`, if the mount still knows it.
    pub fn id(&self, ino: u64) -> R<NodeId> {
        let id = self.inodes.node(ino).ok_or(Errno::ENOENT)?;
        if self.view.get(id).is_some() || self.view.copy(id).is_some() {
            Ok(id)
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// `ino` as a shown directory (the one a new name can go in).
    pub fn dir(&self, ino: u64) -> R<NodeId> {
        let id = self.id(ino)?;
        if self.view.copy(id).is_some() || self.kind(id) != Some(Kind::Dir) {
            return Err(Errno::ENOTDIR);
        }
        if !self.view.is_shown(id) {
            return Err(Errno::ENOENT);
        }
        Ok(id)
    }

    pub fn kind(&self, id: NodeId) -> Option<Kind> {
        if id == NodeId::ROOT {
            return Some(Kind::Dir);
        }
        if self.view.copy(id).is_some() {
            return Some(Kind::File);
        }
        self.view.get(id)?.kind()
    }

    pub fn attrs(&mut self, id: NodeId) -> Option<Attrs> {
        let ino = self.inodes.ino(id);
        if let Some(c) = self.view.copy(id) {
            let a = self.view.get(c.copy.of).and_then(|r| r.attr.clone())?;
            return Some(Attrs {
                ino,
                kind: Kind::File,
                size: c.copy.head.size,
                // A copy is a read-only view of another version.
                perm: (a.mode & 0o7555) as u16,
                uid: a.uid,
                gid: a.gid,
                mtime_ns: c.copy.head.mtime_ns,
                ctime_ns: c.copy.head.ctime_ns.max(c.copy.head.mtime_ns),
                atime_ns: c.copy.head.mtime_ns,
                nlink: 1,
                rdev: 0,
            });
        }
        let r = self.view.get(id)?;
        let a = match (&r.attr, id == NodeId::ROOT) {
            (Some(a), _) => a.clone(),
            (None, true) => root_attr(),
            (None, false) => return None,
        };
        let w = self.view.shown_version(id);
        let (mut size, mut mtime) = (w.as_ref().map_or(0, |d| d.size), w.as_ref().map_or(0, |d| d.mtime_ns));
        if a.kind() == Kind::Symlink {
            size = a.target.len() as u64;
        }
        if let Some((m, t)) = self.open.get(&id).and_then(|o| o.detached.as_ref()) {
            size = m.size();
            mtime = *t;
        }
        if let Some(of) = self.open.get(&id)
            && of.cell.is_dirty()
        {
            size = of.cell.len.load(std::sync::atomic::Ordering::Acquire);
            let t = of.cell.mtime.load(std::sync::atomic::Ordering::Acquire);
            mtime = if t == NO_MTIME { mtime } else { t };
        }
        let mut ctime = self.view.ctime(id).unwrap_or(mtime);
        if mtime > ctime {
            // A write not committed yet (or a detached file's last one).
            ctime = mtime;
        }
        let nlink = match a.kind() {
            // `.`, its name in the parent, and each subdirectory's `..`.
            Kind::Dir => 2 + self.subdirs(id),
            // An open file deleted here has no name left.
            _ if self.deleted_here(id) && !self.view.is_shown(id) => 0,
            _ => 1,
        };
        Some(Attrs {
            ino,
            kind: a.kind(),
            size,
            perm: (a.mode & 0o7777) as u16,
            uid: a.uid,
            gid: a.gid,
            mtime_ns: mtime,
            ctime_ns: ctime,
            atime_ns: self.atime(id),
            nlink,
            rdev: a.rdev as u32,
        })
    }

    /// How many subdirectories `dir` shows: counted on first use, then kept
    /// up by each settle (a directory's attributes are asked for at every
    /// change in it, so a count per ask would make filling it quadratic).
    fn subdirs(&mut self, dir: NodeId) -> u32 {
        if let Some(names) = self.subdirs.get(&dir) {
            return names.len() as u32;
        }
        let names: HashSet<Box<[u8]>> = self
            .view
            .list(dir)
            .filter(|(_, c)| self.kind(*c) == Some(Kind::Dir))
            .map(|(n, _)| n.into())
            .collect();
        let n = names.len() as u32;
        self.subdirs.insert(dir, names);
        n
    }

    /// Tells the kernel of a node: it now holds one more lookup of it.
    pub fn entry(&mut self, id: NodeId) -> R<Attrs> {
        let a = self.attrs(id).ok_or(Errno::ENOENT)?;
        *self.lookups.entry(id).or_default() += 1;
        Ok(a)
    }

    /// Drops what the mount keeps of `id` once nothing refers to it: not shown,
    /// no kernel lookup, not open.
    pub fn reap(&mut self, id: NodeId) {
        if id == NodeId::ROOT || self.lookups.contains_key(&id) || self.open.contains_key(&id) || self.view.is_shown(id)
        {
            return;
        }
        self.inodes.remove(id);
        self.deleted_here.remove(&id);
        self.local.remove(&id);
        self.ephemeral.remove(&id);
        self.local_content.remove(&id);
        self.atimes.remove(&id);
        self.subdirs.remove(&id);
        if self.forgotten.contains(&id) && self.view.forget(id) {
            self.forgotten.remove(&id);
        }
    }

    /// Was `id` deleted by this mount (and is still known to the kernel)?
    /// Its handles keep working, but nothing they do reaches the store.
    pub fn deleted_here(&self, id: NodeId) -> bool {
        self.deleted_here.contains(&id)
    }

    /// Queues a local op and shows it at once.
    pub fn queue(&mut self, op: Op) {
        inputs::set_pending(&mut self.view, &op, self.me);
        if let Some(id) = inputs::node_of(&op.key).filter(|id| self.local.contains(id)) {
            if !self.ephemeral.contains(&id) {
                self.inodes.record_local(op.key, op.value);
            }
            return;
        }
        self.pending.queue(Change::Op(op));
    }

    /// Queues a new content version of `id` and shows it at once. The
    /// manifest is encoded when the window is written, not here.
    pub fn queue_content(&mut self, id: NodeId, manifest: Arc<Manifest>, mtime_ns: i64, atime_ns: i64, version: u64) {
        let ctime_ns = now_ns();
        let head = DataHead {
            version,
            hlc: inputs::PENDING_HLC,
            author: self.me,
            entry: inputs::PENDING_ENTRY,
            mtime_ns,
            size: manifest.size(),
            ctime_ns,
            atime_ns,
        };
        self.view.set_data(id, vec![head]);
        self.remember(id, version, manifest.clone());
        if self.local.contains(&id) {
            if !self.ephemeral.contains(&id) {
                let d = Data {
                    manifest: manifest.encode(),
                    mtime_ns,
                    version,
                    ctime_ns,
                    atime_ns,
                };
                self.inodes
                    .record_local(node::data_key(id), Some(prost::Message::encode_to_vec(&d)));
            }
            self.local_content.insert(id, (version, manifest));
            return;
        }
        self.pending.queue(Change::Content {
            key: node::data_key(id),
            manifest,
            mtime_ns,
            ctime_ns,
            atime_ns,
            version,
        });
    }

    /// The access time `id` shows: read here (relatime), or as stored.
    pub fn atime(&self, id: NodeId) -> i64 {
        let stored = self
            .view
            .shown_version(id)
            .map_or(0, |d| if d.atime_ns != 0 { d.atime_ns } else { d.mtime_ns });
        self.atimes.get(&id).map_or(stored, |t| (*t).max(stored))
    }

    /// A read of `id`: its atime moves as relatime moves it (when it is not
    /// newer than the mtime or ctime, or a day old). Kept on this machine
    /// only: a read is not a change to replicate.
    pub fn accessed(&mut self, id: NodeId) {
        let now = now_ns();
        let at = self.atime(id);
        let (mtime, ctime) = (
            self.view.shown_version(id).map_or(0, |d| d.mtime_ns),
            self.view.ctime(id).unwrap_or(0),
        );
        if at <= mtime || at <= ctime || now - at > 86_400 * 1_000_000_000 {
            self.atimes.insert(id, now);
        }
    }

    /// Queues a change of the directory `dir`'s listing: its mtime and ctime
    /// become now, in the same group commit as the change itself.
    pub fn dir_changed(&mut self, dir: NodeId) {
        if self.kind(dir) != Some(Kind::Dir) || self.local.contains(&dir) {
            return;
        }
        let at = self.atime(dir);
        self.atimes.remove(&dir);
        self.queue_content(dir, Arc::default(), now_ns(), at, rand::random());
    }

    /// Keeps a large file's manifest for its next reader or writer, so that it
    /// is not decoded again at every open. Small manifests decode in no time
    /// and are not kept; the cache is bounded in entries and chunks.
    pub fn remember(&mut self, id: NodeId, version: u64, manifest: Arc<Manifest>) {
        const MIN_CHUNKS: usize = 64;
        const MAX_ENTRIES: usize = 64;
        const MAX_CHUNKS: usize = 1 << 18;
        let n = manifest.chunks().len();
        if let Some((_, old)) = self.recent.remove(&id) {
            self.recent_chunks -= old.chunks().len();
        }
        if !(MIN_CHUNKS..=MAX_CHUNKS).contains(&n) {
            return;
        }
        if self.recent.len() >= MAX_ENTRIES || self.recent_chunks + n > MAX_CHUNKS {
            self.recent.clear();
            self.recent_chunks = 0;
        }
        self.recent.insert(id, (version, manifest));
        self.recent_chunks += n;
    }

    /// A remembered manifest of `id` at `version`.
    pub fn recalled(&self, id: NodeId, version: u64) -> Option<Arc<Manifest>> {
        self.recent
            .get(&id)
            .filter(|(v, _)| *v == version)
            .map(|(_, m)| m.clone())
    }

    /// A local change of a node deleted elsewhere gives it its place back: a
    /// content change always (edit beats delete), other changes (`content`
    /// false) only while a concurrent edit keeps it shown. Never for a node
    /// deleted here.
    pub fn restore_place(&mut self, id: NodeId, content: bool) {
        if self.deleted_here(id) || (!content && !self.view.is_shown(id)) {
            return;
        }
        let Some(w) = self.view.loc(id) else { return };
        if w.deleted {
            let loc = Loc {
                deleted: false,
                seen_data: vec![],
                ..w
            };
            self.queue(loc_op(id, &loc));
        }
    }

    /// Deletes a node: a delete that names every content version the mount
    /// shows (all in the store, or written in the same window as this), or,
    /// for a node none of whose keys was ever written and that no other node
    /// names as its parent, no op at all.
    pub fn delete(&mut self, id: NodeId) {
        let Some(r) = self.view.get(id) else { return };
        let Some(w) = self.view.loc(id) else { return };
        let loc = Loc {
            deleted: true,
            seen_data: r.versions().collect(),
            ..w
        };
        self.deleted_here.insert(id);
        let local = self.local.contains(&id);
        if local && !self.ephemeral.contains(&id) {
            // Nothing of it is kept any more.
            let xattrs: Vec<Vec<u8>> = r.xattrs.keys().cloned().collect();
            for k in [node::loc_key(id), node::attr_key(id), node::data_key(id)] {
                self.inodes.record_local(k, None);
            }
            for name in xattrs {
                self.inodes.record_local(node::xattr_key(id, &name), None);
            }
        }
        if !self.view.has_links(id) && (self.unwritten.remove(&id) || local) {
            // An open handle still reads and writes it (POSIX): its content
            // lives on there, since the store will never have it.
            let content = self.pending_content(id);
            let mtime = self.view.shown_version(id).map_or(0, |d| d.mtime_ns);
            if let Some(o) = self.open.get_mut(&id) {
                o.detached = o.detached.take().or(content.map(|(_, m)| (m, mtime)));
            }
            let r = self.view.get(id).expect("looked up above");
            let xattrs: Vec<Vec<u8>> = r.xattrs.keys().cloned().collect();
            for k in [node::loc_key(id), node::attr_key(id), node::data_key(id)] {
                self.pending.forget(&k);
            }
            for name in xattrs {
                self.pending.forget(&node::xattr_key(id, &name));
            }
            self.view.set_locs(id, vec![inputs::pending_loc(loc, self.me)]);
            self.forgotten.insert(id);
        } else {
            self.queue(loc_op(id, &loc));
        }
    }

    /// Settles the view. Returns what the kernel must forget, leaving out the
    /// names a local operation changed itself (`own`: the kernel did that) and,
    /// for local changes, the changed node's own attributes.
    pub fn settle(&mut self, local: bool, own: &[(NodeId, &[u8])]) -> Vec<Inval> {
        let d = self.view.settle();
        let mut out = Vec::new();
        for (dir, name) in &d.names {
            if self.subdirs.contains_key(dir) {
                let is_dir = self
                    .view
                    .lookup(*dir, name)
                    .is_some_and(|c| self.kind(c) == Some(Kind::Dir));
                let names = self.subdirs.get_mut(dir).expect("checked");
                if is_dir {
                    names.insert(name.clone());
                } else {
                    names.remove(name);
                }
            }
        }
        for (dir, name) in d.names {
            if own.iter().any(|(p, n)| *p == dir && *n == &name[..]) {
                continue;
            }
            if let Some(pino) = self.inodes.get(dir) {
                out.push(Inval::Entry(pino, name.into_vec()));
            }
        }
        if !local {
            for id in d.nodes {
                if let Some(ino) = self.inodes.get(id) {
                    out.push(Inval::Inode(ino));
                }
            }
        }
        for id in d.hidden {
            self.reap(id);
        }
        out
    }

    /// The content version a reader of `id` should see.
    pub fn content_version(&self, id: NodeId) -> Option<u64> {
        if let Some(c) = self.view.copy(id) {
            return Some(c.copy.head.version);
        }
        self.view.shown_version(id).map(|d| d.version)
    }

    /// The listing of a shown directory, numbering its children.
    pub fn listing(&mut self, dir: NodeId) -> Vec<DirEntry> {
        let kids: Vec<(Vec<u8>, NodeId)> = self.view.list(dir).map(|(n, id)| (n.to_vec(), id)).collect();
        let parent = self.view.get(dir).and_then(|r| r.shown_in()).unwrap_or(NodeId::ROOT);
        let mut out = Vec::with_capacity(kids.len() + 2);
        out.push(DirEntry {
            ino: self.inodes.ino(dir),
            kind: Kind::Dir,
            name: b".".to_vec(),
        });
        out.push(DirEntry {
            ino: self.inodes.ino(parent),
            kind: Kind::Dir,
            name: b"..".to_vec(),
        });
        for (name, id) in kids {
            let kind = self.kind(id).unwrap_or(Kind::File);
            out.push(DirEntry {
                ino: self.inodes.ino(id),
                kind,
                name,
            });
        }
        out
    }

    /// The content of a pending change of `id`'s `d` key, if there is one.
    pub fn pending_content(&self, id: NodeId) -> Option<(u64, Arc<Manifest>)> {
        self.pending
            .content(&node::data_key(id))
            .or_else(|| self.local_content.get(&id).cloned())
    }
}

/// The root's attributes before its first write.
pub fn root_attr() -> Attr {
    Attr {
        kind: Kind::Dir as u32,
        mode: 0o755,
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        target: vec![],
        rdev: 0,
        ctime_ns: 0,
    }
}

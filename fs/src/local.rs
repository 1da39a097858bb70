//! Local operations on the model: what each FUSE call does to the tree, the
//! open files and the pending changes. `ops.rs` maps the callbacks onto these.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, INodeNo, RenameFlags, ReplyEntry, Request, TimeOrNow};
use store::Op;

use crate::Inner;
use crate::buffer::Buffer;
use crate::node::{self, Attr, Kind, NodeId};
use crate::ops::{R, check_name, eio, reply_entry};
use crate::state::{self, Node, OpenBuffer, State, now_ns};

impl Inner {
    /// Queues ops of node `id` for the next group commit. A node that a
    /// concurrent edit kept alive after a delete gets its place back with them.
    pub(crate) fn queue(st: &mut State, id: NodeId, ops: Vec<Op>) {
        if st.nodes[&id].has_conflicts && ops.iter().any(|o| o.key == node::data_key(id)) {
            // This write names every head of the content: the conflict is resolved.
            st.drop_conflict_copies(id);
        }
        let n = st.nodes.get_mut(&id).expect("queued for a present node");
        if n.loc_deleted {
            n.loc_deleted = false;
            let (parent, name) = (n.parent, n.name.clone());
            st.pending.queue([state::loc_op(id, parent, &name)]);
        }
        st.pending.queue(ops);
    }

    /// Queues the delete of `id` (or forgets it, if it never reached the store).
    pub(crate) fn queue_delete(st: &mut State, id: NodeId) {
        let n = &st.nodes[&id];
        let was_written = !n.pending_create;
        let names: Vec<Vec<u8>> = n.xattrs.keys().cloned().collect();
        let op = state::delete_op(id, n);
        st.pending.forget_node(id, names.iter());
        if was_written {
            st.pending.queue([op]);
        }
    }

    pub(crate) fn node_id(st: &State, ino: INodeNo) -> R<NodeId> {
        let id = st.id_of(ino).ok_or(Errno::ENOENT)?;
        if st.nodes.contains_key(&id) {
            Ok(id)
        } else {
            Err(Errno::ENOENT)
        }
    }

    pub(crate) fn dir(st: &State, ino: INodeNo) -> R<NodeId> {
        let id = Self::node_id(st, ino)?;
        if st.nodes[&id].kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(id)
    }

    /// The open-file buffer of `id`, filled with its current content if new.
    pub(crate) fn buffer(&self, st: &mut State, id: NodeId) -> R<Arc<OpenBuffer>> {
        let o = st.open.entry(id).or_default();
        if let Some(b) = &o.buf {
            return Ok(b.clone());
        }
        let m = st.nodes.get(&id).ok_or(Errno::ENOENT)?.manifest.clone();
        let mut buf = Buffer::new();
        let mut off = 0u64;
        let mut chunk = vec![0u8; 1 << 20];
        while off < m.size() {
            let n = self.store.read_content(&m, off, &mut chunk).map_err(eio)?;
            if n == 0 {
                break;
            }
            buf.write_at(off, &chunk[..n], &self.spill_dir).map_err(eio)?;
            off += n as u64;
        }
        let b = OpenBuffer::new(buf, false);
        st.open.get_mut(&id).expect("inserted above").buf = Some(b.clone());
        Ok(b)
    }

    /// Commits `id`'s buffered writes as one entry (content, mtime, and place
    /// and attributes if it was never committed). Lock order: buffer, then state.
    pub(crate) fn commit(&self, id: NodeId) -> R<()> {
        let Some(b) = self.state.lock().unwrap().open.get(&id).and_then(|o| o.buf.clone()) else {
            return Ok(());
        };
        let mut d = b.content.lock().unwrap();
        if !d.dirty {
            return Ok(());
        }
        let manifest = self.store.put_content(&mut d.buf.reader().map_err(eio)?).map_err(eio)?;
        d.dirty = false;
        let mut st = self.state.lock().unwrap();
        let Some(n) = st.nodes.get_mut(&id) else { return Ok(()) };
        if n.unlinked {
            return Ok(());
        }
        if let Some(t) = b.mtime() {
            n.mtime_ns = t;
        }
        n.manifest = Arc::new(manifest);
        let op = n.data_op(id);
        Self::queue(&mut st, id, vec![op]);
        Ok(())
    }

    /// A new node under `parent`, not yet inserted (callers hold the state lock).
    pub(crate) fn new_node(
        st: &State,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        target: &[u8],
    ) -> R<(NodeId, Node)> {
        let name = check_name(name)?;
        let p = Self::dir(st, parent)?;
        if st.nodes[&p].unlinked {
            return Err(Errno::ENOENT);
        }
        if st.nodes[&p].children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let attr = Attr {
            kind: kind as u32,
            mode: mode & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
            target: target.to_vec(),
        };
        Ok((NodeId::random(), Node::new(kind, p, name, attr)))
    }

    /// mknod, mkdir, symlink: a new node, queued, and told to the kernel.
    pub(crate) fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        target: &[u8],
        reply: ReplyEntry,
    ) {
        let mut st = self.state.lock().unwrap();
        match Self::new_node(&st, req, parent, name, kind, mode, target) {
            Ok((id, n)) => {
                self.insert(&mut st, id, n);
                reply_entry(&mut st, id, reply)
            }
            Err(e) => reply.error(e),
        }
    }

    /// Adds a node to the model (after its entry, if any, was written).
    pub(crate) fn insert(&self, st: &mut State, id: NodeId, mut n: Node) {
        let (p, name) = (n.parent, n.name.clone());
        let ops = n.create_ops(id);
        st.pending.queue(ops);
        n.pending_create = true;
        st.nodes.insert(id, n);
        st.nodes.get_mut(&p).expect("parent checked").children.insert(name, id);
    }

    pub(crate) fn remove(&self, parent: INodeNo, name: &OsStr, want_dir: bool) -> R<()> {
        let name = check_name(name)?;
        let mut st = self.state.lock().unwrap();
        let p = Self::dir(&st, parent)?;
        let id = *st.nodes[&p].children.get(name).ok_or(Errno::ENOENT)?;
        let n = &st.nodes[&id];
        match (want_dir, n.kind == Kind::Dir) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if !n.children.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        if let Some(of) = st.nodes[&id].conflict_of {
            // Deleting a copy keeps the winner: a new version of the file that
            // merges every head, so the copies go on every peer.
            if let Some(n) = st.nodes.get_mut(&of) {
                let op = n.data_op(of);
                Self::queue(&mut st, of, vec![op]);
            }
            st.drop_node(id);
            return Ok(());
        }
        Self::queue_delete(&mut st, id);
        st.drop_node(id);
        Ok(())
    }

    pub(crate) fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let (name, newname) = (check_name(name)?, check_name(newname)?);
        let mut st = self.state.lock().unwrap();
        let (p, np) = (Self::dir(&st, parent)?, Self::dir(&st, newparent)?);
        let id = *st.nodes[&p].children.get(name).ok_or(Errno::ENOENT)?;
        if st.nodes[&id].conflict_of.is_some() {
            // A copy is a view, not a file: `mv` then copies it and deletes it.
            return Err(Errno::EXDEV);
        }
        let is_dir = st.nodes[&id].kind == Kind::Dir;
        if is_dir && st.is_within(np, id) {
            return Err(Errno::EINVAL);
        }
        let target = st.nodes[&np].children.get(newname).copied();
        if let Some(t) = target {
            if t == id {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let tn = &st.nodes[&t];
            match (is_dir, tn.kind == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !tn.children.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            Self::queue_delete(&mut st, t);
            st.drop_node(t);
        }
        let n = st.nodes.get_mut(&id).expect("looked up");
        n.parent = np;
        n.name = newname.to_vec();
        Self::queue(&mut st, id, vec![state::loc_op(id, np, newname)]);
        st.nodes.get_mut(&p).expect("dir").children.remove(name);
        st.nodes
            .get_mut(&np)
            .expect("dir")
            .children
            .insert(newname.to_vec(), id);
        Ok(())
    }

    pub(crate) fn setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> R<()> {
        let id = Self::node_id(&self.state.lock().unwrap(), ino)?;
        if self
            .state
            .lock()
            .unwrap()
            .nodes
            .get(&id)
            .is_none_or(|n| n.conflict_of.is_some())
        {
            return Err(Errno::EPERM);
        }
        if let Some(size) = size {
            let mut st = self.state.lock().unwrap();
            if st.nodes.get(&id).is_none_or(|n| n.kind != Kind::File) {
                return Err(Errno::EISDIR);
            }
            let open = st.open.get(&id).is_some_and(|o| o.handles > 0);
            let b = self.buffer(&mut st, id)?;
            drop(st);
            {
                let mut d = b.content.lock().unwrap();
                d.buf.set_len(size, &self.spill_dir).map_err(eio)?;
                d.dirty = true;
                b.changed(&d);
            }
            if !open {
                // Not open: a truncate(2) is its own change, committed now.
                self.commit(id)?;
                let mut st = self.state.lock().unwrap();
                if st.open.get(&id).is_some_and(|o| o.handles == 0) {
                    st.open.remove(&id);
                }
            }
        }
        let mut st = self.state.lock().unwrap();
        let n = st.nodes.get_mut(&id).ok_or(Errno::ENOENT)?;
        let mut ops = Vec::new();
        if mode.is_some() || uid.is_some() || gid.is_some() {
            if let Some(m) = mode {
                n.attr.mode = m & 0o7777;
            }
            if let Some(u) = uid {
                n.attr.uid = u;
            }
            if let Some(g) = gid {
                n.attr.gid = g;
            }
            ops.push(state::attr_op(id, &n.attr));
        }
        if let Some(t) = mtime {
            let t = match t {
                TimeOrNow::Now => now_ns(),
                TimeOrNow::SpecificTime(t) => match t.duration_since(SystemTime::UNIX_EPOCH) {
                    Ok(d) => d.as_nanos() as i64,
                    Err(e) => -(e.duration().as_nanos() as i64),
                },
            };
            n.mtime_ns = t;
            ops.push(n.data_op(id));
            if let Some(b) = st.open.get(&id).and_then(|o| o.buf.as_ref()) {
                b.mtime.store(t, std::sync::atomic::Ordering::Release);
            }
        }
        if !ops.is_empty() {
            Self::queue(&mut st, id, ops);
        }
        Ok(())
    }

    pub(crate) fn release_file(&self, id: NodeId) -> R<()> {
        let r = self.commit(id);
        let mut st = self.state.lock().unwrap();
        let last = match st.open.get_mut(&id) {
            Some(o) => {
                o.handles = o.handles.saturating_sub(1);
                o.handles == 0
            }
            None => false,
        };
        if last {
            st.open.remove(&id);
            st.reap(id);
        }
        r
    }
}

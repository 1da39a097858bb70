//! The FUSE callbacks. Each one maps to a local operation on the model and,
//! for changes, one entry in the store.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use store::Op;

use crate::buffer::Buffer;
use crate::node::{self, Attr, Kind, NodeId};
use crate::state::{self, Handle, Node, OpenBuffer, OpenFile, State, now_ns};
use crate::tree::NAME_MAX;
use crate::{Inner, LatticeFs, TTL};

type R<T> = Result<T, Errno>;

fn eio<E: std::fmt::Display>(e: E) -> Errno {
    tracing::error!("i/o error: {e}");
    Errno::EIO
}

fn check_name(name: &OsStr) -> R<&[u8]> {
    let b = name.as_bytes();
    if b.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(b)
}

fn user_xattr(name: &OsStr) -> R<&[u8]> {
    let b = name.as_bytes();
    if !b.starts_with(b"user.") {
        return Err(Errno::ENOTSUP);
    }
    Ok(b)
}

impl Inner {
    /// Queues ops of node `id` for the next group commit. A node that a
    /// concurrent edit kept alive after a delete gets its place back with them.
    fn queue(st: &mut State, id: NodeId, ops: Vec<Op>) {
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
    fn queue_delete(st: &mut State, id: NodeId) {
        let n = &st.nodes[&id];
        let was_written = !n.pending_create;
        let names: Vec<Vec<u8>> = n.xattrs.keys().cloned().collect();
        let op = state::delete_op(id, n);
        st.pending.forget_node(id, names.iter());
        if was_written {
            st.pending.queue([op]);
        }
    }

    fn node_id(st: &State, ino: INodeNo) -> R<NodeId> {
        let id = st.id_of(ino).ok_or(Errno::ENOENT)?;
        if st.nodes.contains_key(&id) {
            Ok(id)
        } else {
            Err(Errno::ENOENT)
        }
    }

    fn dir(st: &State, ino: INodeNo) -> R<NodeId> {
        let id = Self::node_id(st, ino)?;
        if st.nodes[&id].kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(id)
    }

    /// The open-file buffer of `id`, filled with its current content if new.
    fn buffer(&self, st: &mut State, id: NodeId) -> R<Arc<OpenBuffer>> {
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
    fn new_node(
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
    fn make(
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
    fn insert(&self, st: &mut State, id: NodeId, mut n: Node) {
        let (p, name) = (n.parent, n.name.clone());
        let ops = n.create_ops(id);
        st.pending.queue(ops);
        n.pending_create = true;
        st.nodes.insert(id, n);
        st.nodes.get_mut(&p).expect("parent checked").children.insert(name, id);
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, want_dir: bool) -> R<()> {
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

    fn rename(&self, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags) -> R<()> {
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

    fn setattr(
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

    fn release_file(&self, id: NodeId) -> R<()> {
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

/// Tells the kernel of a node; it now holds one more lookup of it.
fn reply_entry(st: &mut State, id: NodeId, reply: ReplyEntry) {
    match st.file_attr(id) {
        Some(a) => {
            *st.lookups.entry(id).or_default() += 1;
            reply.entry(&TTL, &a, Generation(0))
        }
        None => reply.error(Errno::ENOENT),
    }
}

impl Filesystem for LatticeFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.0.state.lock().unwrap();
        let r = (|| {
            let name = name.as_bytes();
            if name.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let p = Inner::dir(&st, parent)?;
            st.nodes[&p].children.get(name).copied().ok_or(Errno::ENOENT)
        })();
        match r {
            Ok(id) => reply_entry(&mut st, id, reply),
            // A negative entry (inode 0) lets the kernel cache "no such name".
            Err(Errno::ENOENT) => match st.file_attr(NodeId::ROOT) {
                Some(mut a) => {
                    a.ino = INodeNo(0);
                    reply.entry(&TTL, &a, Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.0.state.lock().unwrap();
        let Some(id) = st.id_of(ino) else { return };
        if let Some(n) = st.lookups.get_mut(&id) {
            *n = n.saturating_sub(nlookup);
            if *n == 0 {
                st.lookups.remove(&id);
                st.reap(id);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut st = self.0.state.lock().unwrap();
        match Inner::node_id(&st, ino).ok().and_then(|id| st.file_attr(id)) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.0.setattr(ino, mode, uid, gid, size, mtime) {
            Ok(()) => {
                let mut st = self.0.state.lock().unwrap();
                match Inner::node_id(&st, ino).ok().and_then(|id| st.file_attr(id)) {
                    Some(a) => reply.attr(&TTL, &a),
                    None => reply.error(Errno::ENOENT),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.0.state.lock().unwrap();
        match Inner::node_id(&st, ino) {
            Ok(id) if st.nodes[&id].kind == Kind::Symlink => reply.data(&st.nodes[&id].attr.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            // Devices, FIFOs and sockets have no meaning on other machines.
            return reply.error(Errno::EPERM);
        }
        self.0.make(req, parent, name, Kind::File, mode & !umask, b"", reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.0.make(req, parent, name, Kind::Dir, mode & !umask, b"", reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.0.make(
            req,
            parent,
            link_name,
            Kind::Symlink,
            0o777,
            target.as_os_str().as_bytes(),
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.0.rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        // A node lives in exactly one place (DESIGN.md), so hard links cannot be.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.0.state.lock().unwrap();
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        match Inner::node_id(&st, ino) {
            Ok(id) if st.nodes[&id].kind == Kind::Dir => reply.error(Errno::EISDIR),
            // Conflict copies are read-only views of another version.
            Ok(id) if writing && st.nodes[&id].conflict_of.is_some() => reply.error(Errno::EROFS),
            Ok(id) => {
                st.open.entry(id).or_default().handles += 1;
                let fh = st.new_fh(Handle::File(id));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let mut st = self.0.state.lock().unwrap();
            let (id, n) = Inner::new_node(&st, req, parent, name, Kind::File, mode & !umask, b"")?;
            self.0.insert(&mut st, id, n);
            let buf = OpenBuffer::new(Buffer::new(), true);
            st.open.insert(
                id,
                OpenFile {
                    handles: 1,
                    buf: Some(buf),
                },
            );
            let fh = st.new_fh(Handle::File(id));
            Ok((id, fh, st))
        })();
        match r {
            Ok((id, fh, mut st)) => match st.file_attr(id) {
                Some(a) => {
                    *st.lookups.entry(id).or_default() += 1;
                    reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
                }
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let source = {
            let st = self.0.state.lock().unwrap();
            let id = match st.id_of(ino) {
                Some(id) if st.nodes.contains_key(&id) => id,
                _ => return reply.error(Errno::ENOENT),
            };
            match st.open.get(&id).and_then(|o| o.buf.clone()) {
                Some(b) => Err(b),
                None => Ok(st.nodes[&id].manifest.clone()),
            }
        };
        let mut buf = vec![0u8; size as usize];
        let n = match source {
            Err(b) => b.content.lock().unwrap().buf.read_at(offset, &mut buf).map_err(eio),
            Ok(m) => self.0.store.read_content(&m, offset, &mut buf).map_err(eio),
        };
        match n {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let b = {
            let mut st = self.0.state.lock().unwrap();
            match Inner::node_id(&st, ino).and_then(|id| self.0.buffer(&mut st, id)) {
                Ok(b) => b,
                Err(e) => return reply.error(e),
            }
        };
        let mut d = b.content.lock().unwrap();
        match d.buf.write_at(offset, data, &self.0.spill_dir) {
            Ok(()) => {
                d.dirty = true;
                b.changed(&d);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(eio(e)),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        let id = self.0.state.lock().unwrap().id_of(ino);
        match id.map_or(Ok(()), |id| self.0.commit(id)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.0.state.lock().unwrap().handles.remove(&fh.0);
        match h {
            Some(Handle::File(id)) => match self.0.release_file(id) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            _ => reply.ok(),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let id = self.0.state.lock().unwrap().id_of(ino);
        // Durable when this returns: the file's buffer and every pending change.
        let r = id
            .map_or(Ok(()), |id| self.0.commit(id))
            .and_then(|()| self.0.flush(true));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.0.state.lock().unwrap();
        let id = match Inner::dir(&st, ino) {
            Ok(id) => id,
            Err(e) => return reply.error(e),
        };
        let n = &st.nodes[&id];
        let parent = n.parent;
        let kids: Vec<(NodeId, fuser::FileType, Vec<u8>)> = n
            .children
            .iter()
            .filter_map(|(name, c)| Some((*c, st.nodes.get(c)?.file_type(), name.clone())))
            .collect();
        let mut list = Vec::with_capacity(kids.len() + 2);
        list.push((ino.0, fuser::FileType::Directory, b".".to_vec()));
        let pino = st.inodes.ino(parent);
        list.push((pino, fuser::FileType::Directory, b"..".to_vec()));
        for (c, t, name) in kids {
            list.push((st.inodes.ino(c), t, name));
        }
        let fh = st.new_fh(Handle::Dir(list));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.0.state.lock().unwrap();
        let Some(Handle::Dir(list)) = st.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.0.state.lock().unwrap().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.0.flush(true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let path = std::ffi::CString::new(self.0.spill_dir.as_os_str().as_bytes()).expect("no NUL in path");
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return reply.error(Errno::EIO);
        }
        let files = self.0.state.lock().unwrap().nodes.len() as u64;
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            files,
            s.f_ffree,
            s.f_bsize as u32,
            NAME_MAX as u32,
            s.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let name = user_xattr(name)?;
            let mut st = self.0.state.lock().unwrap();
            let id = Inner::node_id(&st, ino)?;
            if st.nodes[&id].conflict_of.is_some() {
                return Err(Errno::EPERM);
            }
            let exists = st.nodes[&id].xattrs.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(Errno::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(Errno::ENODATA);
            }
            Inner::queue(&mut st, id, vec![Op::put(node::xattr_key(id, name), value.to_vec())]);
            st.nodes
                .get_mut(&id)
                .expect("checked")
                .xattrs
                .insert(name.to_vec(), value.to_vec());
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let st = self.0.state.lock().unwrap();
        let v = Inner::node_id(&st, ino)
            .and_then(|id| st.nodes[&id].xattrs.get(name.as_bytes()).cloned().ok_or(Errno::ENODATA));
        match v {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let st = self.0.state.lock().unwrap();
        let id = match Inner::node_id(&st, ino) {
            Ok(id) => id,
            Err(e) => return reply.error(e),
        };
        let mut list = Vec::new();
        for k in st.nodes[&id].xattrs.keys() {
            list.extend_from_slice(k);
            list.push(0);
        }
        if size == 0 {
            reply.size(list.len() as u32)
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&list)
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            let name = user_xattr(name).map_err(|_| Errno::ENODATA)?;
            let mut st = self.0.state.lock().unwrap();
            let id = Inner::node_id(&st, ino)?;
            if !st.nodes[&id].xattrs.contains_key(name) {
                return Err(Errno::ENODATA);
            }
            Inner::queue(&mut st, id, vec![Op::delete(node::xattr_key(id, name))]);
            st.nodes.get_mut(&id).expect("checked").xattrs.remove(name);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The mount uses default_permissions: the kernel checks modes itself.
        reply.ok();
    }
}

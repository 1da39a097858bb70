//! The FUSE callbacks. Each one maps to a local operation on the model and,
//! for changes, one entry in the store.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use store::Op;

use crate::buffer::Buffer;
use crate::node::{self, Kind, NodeId};
use crate::state::{Handle, OpenBuffer, OpenFile, State};
use crate::tree::NAME_MAX;
use crate::{Inner, LatticeFs, TTL};

pub(crate) type R<T> = Result<T, Errno>;

pub(crate) fn eio<E: std::fmt::Display>(e: E) -> Errno {
    tracing::error!("i/o error: {e}");
    Errno::EIO
}

pub(crate) fn check_name(name: &OsStr) -> R<&[u8]> {
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

/// Tells the kernel of a node; it now holds one more lookup of it.
pub(crate) fn reply_entry(st: &mut State, id: NodeId, reply: ReplyEntry) {
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

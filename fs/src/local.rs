//! Local operations: what each file-system call does. A change is a store
//! write in waiting: an op queued for the next group commit and shown at once
//! through the view (the same path a peer's entry takes). No call holds the
//! state lock across I/O: content is read and chunked outside it.

use std::sync::Arc;

use store::{AuthorId, KvStore, Manifest, Op};

use crate::buffer::FileBuf;
use crate::errno::{Errno, R, eio};
use crate::files::OpenFile;
use crate::inode_map::Inodes;
use crate::inputs;
use crate::model::{self, Attrs, Handle, Model, attr_op, loc_op, now_ns};
use crate::node::{self, Attr, Kind, Loc, NodeId};
use crate::tree::NAME_MAX;
use crate::view::View;
use crate::{Inval, Shared};

/// What a new node is: kind, permission bits, symlink target, (uid, gid),
/// device number.
pub struct New<'a> {
    pub kind: Kind,
    pub mode: u32,
    pub target: &'a [u8],
    pub owner: (u32, u32),
    pub rdev: u64,
}

pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
}

pub fn check_name(name: &[u8]) -> R<&[u8]> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

/// Builds the model from the store: every node key, one settle.
pub(crate) fn load(
    store: &dyn KvStore,
    me: AuthorId,
    inodes: Inodes,
    local: Vec<(Vec<u8>, Vec<u8>)>,
) -> store::Result<Model> {
    let mut view = View::new();
    store.each_heads(node::PREFIX, &mut |key, heads| inputs::set_key(&mut view, key, &heads))?;
    // Local-only nodes (see latticeignore.rs) as pending writes that never leave.
    let mut local_ids = std::collections::HashSet::new();
    let mut local_content = std::collections::HashMap::new();
    for (key, value) in local {
        let Some(id) = inputs::node_of(&key) else { continue };
        if let Some((d, man)) = node::parse_key(&key)
            .filter(|k| matches!(k, node::KeyKind::Data(_)))
            .and_then(|_| inputs::decode_data(&value))
        {
            local_content.insert(id, (d.version, Arc::new(man)));
        }
        inputs::set_pending(&mut view, &Op::put(key, value), me);
        local_ids.insert(id);
    }
    view.settle();
    release_free_memory();
    let mut m = Model::new(me, view, inodes);
    m.local = local_ids;
    m.local_content = local_content;
    // The map is saved apart from the store, so after a crash it can name
    // nodes whose creation never reached the store: their numbers go.
    let unknown: Vec<NodeId> = m
        .inodes
        .iter()
        .filter(|(_, id)| m.view.get(*id).is_none() && m.view.copy(*id).is_none())
        .map(|(_, id)| id)
        .collect();
    for id in unknown {
        m.inodes.remove(id);
    }
    if m.view.get(NodeId::ROOT).is_none_or(|r| r.attr.is_none()) {
        // A new share: its root's attributes and time are written once, so
        // every later mount (and every peer) shows the same.
        m.queue(attr_op(NodeId::ROOT, &model::root_attr()));
        m.queue_content(NodeId::ROOT, Arc::default(), now_ns(), 0, rand::random());
        m.settle(true, &[]);
    }
    Ok(m)
}

/// Makes the local-only node `id` (and what it holds) shared: every key of
/// it is queued as a store write, and its rows leave the local table. The
/// caller queues `id`'s new place.
fn publish(m: &mut Model, id: NodeId) {
    let Some(r) = m.view.get(id) else { return };
    let attr = r.attr.clone();
    let xattrs: Vec<(Vec<u8>, Vec<u8>)> = r.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let shown = m.view.shown_version(id);
    m.local.remove(&id);
    for k in [node::loc_key(id), node::attr_key(id), node::data_key(id)] {
        m.inodes.record_local(k, None);
    }
    if let Some(a) = attr {
        m.queue(attr_op(id, &a));
    }
    let (mtime, atime) = (shown.as_ref().map_or_else(now_ns, |d| d.mtime_ns), m.atime(id));
    let content = m.local_content.remove(&id).map_or_else(Arc::default, |(_, man)| man);
    m.queue_content(id, content, mtime, atime, rand::random());
    for (name, value) in xattrs {
        m.inodes.record_local(node::xattr_key(id, &name), None);
        m.queue(Op::put(node::xattr_key(id, &name), value));
    }
    for kid in m.view.linked(id) {
        if !m.local.contains(&kid) || m.ephemeral.contains(&kid) || !m.view.is_shown(kid) {
            continue;
        }
        if let Some(loc) = m.view.loc(kid) {
            publish(m, kid);
            m.queue(loc_op(kid, &loc));
        }
    }
}

/// Gives the memory a large load freed back to the system (glibc keeps it
/// otherwise, and the daemon's RSS would stay at its peak).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Shared {
    pub(crate) fn finish(&self, invals: Vec<Inval>) {
        self.send(invals);
        self.kick();
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> R<Attrs> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut m = self.lock();
        let p = m.dir(parent)?;
        let id = m.view.lookup(p, name).ok_or(Errno::ENOENT)?;
        m.entry(id)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut m = self.lock();
        let Some(id) = m.inodes.node(ino) else { return };
        if let Some(c) = m.lookups.get_mut(&id) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                m.lookups.remove(&id);
                m.reap(id);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> R<Attrs> {
        let mut m = self.lock();
        let id = m.id(ino)?;
        m.attrs(id).ok_or(Errno::ENOENT)
    }

    pub fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let m = self.lock();
        let id = m.id(ino)?;
        match m.view.get(id).and_then(|r| r.attr.as_ref()) {
            Some(a) if a.kind() == Kind::Symlink => Ok(a.target.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// A new node (mknod, mkdir, symlink, create). Returns it, looked up once.
    pub(crate) fn make_locked(
        &self,
        m: &mut Model,
        parent: u64,
        name: &[u8],
        new: New,
    ) -> R<(NodeId, Attrs, Vec<Inval>, u64)> {
        let New {
            kind,
            mode,
            target,
            owner,
            rdev,
        } = new;
        let name = check_name(name)?;
        let p = m.dir(parent)?;
        if m.view.lookup(p, name).is_some() {
            return Err(Errno::EEXIST);
        }
        m.health.check()?;
        let id = NodeId::random();
        let now = now_ns();
        let attr = Attr {
            kind: kind as u32,
            mode: mode & 0o7777,
            uid: owner.0,
            gid: owner.1,
            target: target.to_vec(),
            rdev,
            ctime_ns: now,
        };
        let loc = Loc {
            parent: p.0.to_vec(),
            name: name.to_vec(),
            deleted: false,
            seen_data: vec![],
            ctime_ns: now,
        };
        if kind == Kind::Socket {
            m.local.insert(id);
            m.ephemeral.insert(id);
        } else if self.ignored(m, p, name, kind == Kind::Dir) {
            m.local.insert(id);
        } else {
            m.dir_changed(p);
        }
        let version = rand::random();
        m.queue(loc_op(id, &loc));
        m.queue(attr_op(id, &attr));
        m.queue_content(id, Arc::default(), now, 0, version);
        m.unwritten.insert(id);
        let invals = m.settle(true, &[(p, name)]);
        let a = m.entry(id)?;
        Ok((id, a, invals, version))
    }

    pub fn make(&self, parent: u64, name: &[u8], new: New) -> R<Attrs> {
        self.refresh_ignore();
        let mut m = self.lock();
        let (_, a, invals, _) = self.make_locked(&mut m, parent, name, new)?;
        drop(m);
        self.finish(invals);
        Ok(a)
    }

    /// `creat`: a new file, open. Without `excl` an existing file of that
    /// name is opened instead (the kernel may have thought it absent).
    pub fn create(&self, parent: u64, name: &[u8], mode: u32, owner: (u32, u32), excl: bool) -> R<(Attrs, u64)> {
        self.refresh_ignore();
        let mut m = self.lock();
        if !excl {
            let p = m.dir(parent)?;
            if let Some(id) = m.view.lookup(p, check_name(name)?) {
                if m.view.copy(id).is_some() {
                    return Err(Errno::EROFS);
                }
                if m.kind(id) == Some(Kind::Dir) {
                    return Err(Errno::EISDIR);
                }
                let a = m.entry(id)?;
                m.open.entry(id).or_default().handles += 1;
                let fh = m.new_fh(Handle::File(id));
                return Ok((a, fh));
            }
        }
        let new = New {
            kind: Kind::File,
            mode,
            target: b"",
            owner,
            rdev: 0,
        };
        let (id, a, invals, version) = self.make_locked(&mut m, parent, name, new)?;
        let mut of = OpenFile::new();
        of.handles = 1;
        *of.cell.buf.lock().unwrap() = Some(FileBuf::new(Arc::new(Manifest::default()), version));
        m.open.insert(id, of);
        let fh = m.new_fh(Handle::File(id));
        drop(m);
        self.finish(invals);
        Ok((a, fh))
    }

    pub fn remove(&self, parent: u64, name: &[u8], want_dir: bool) -> R<()> {
        let name = check_name(name)?;
        let mut m = self.lock();
        let p = m.dir(parent)?;
        let id = m.view.lookup(p, name).ok_or(Errno::ENOENT)?;
        if let Some(c) = m.view.copy(id) {
            if want_dir {
                return Err(Errno::ENOTDIR);
            }
            // Deleting a copy keeps the file as shown: a version that merges
            // every head, so the copies go on every peer.
            let of = c.copy.of;
            drop(m);
            return self.merge_content(of);
        }
        let is_dir = m.kind(id) == Some(Kind::Dir);
        match (want_dir, is_dir) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if m.view.has_children(id) => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // A delete the store cannot take fails here, rather than vanish later.
        m.health.check()?;
        if !m.local.contains(&id) {
            m.dir_changed(p);
        }
        m.delete(id);
        let invals = m.settle(true, &[(p, name)]);
        drop(m);
        self.finish(invals);
        Ok(())
    }

    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], noreplace: bool) -> R<()> {
        let (name, newname) = (check_name(name)?, check_name(newname)?);
        self.refresh_ignore();
        let mut m = self.lock();
        let (p, np) = (m.dir(parent)?, m.dir(newparent)?);
        let id = m.view.lookup(p, name).ok_or(Errno::ENOENT)?;
        if m.view.copy(id).is_some() {
            // A copy is a view, not a file: `mv` then copies it and deletes it.
            return Err(Errno::EXDEV);
        }
        let is_dir = m.kind(id) == Some(Kind::Dir);
        if is_dir && m.view.is_within(np, id) {
            return Err(Errno::EINVAL);
        }
        if let Some(t) = m.view.lookup(np, newname) {
            if t == id {
                return Ok(());
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if m.view.copy(t).is_some() {
                // Conflict copies are read-only; delete the copy first.
                return Err(Errno::EPERM);
            }
            match (is_dir, m.kind(t) == Some(Kind::Dir)) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if m.view.has_children(t) => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            m.delete(t);
        }
        m.health.check()?;
        if !m.local.contains(&id) && m.local.contains(&np) && !m.ephemeral.contains(&np) {
            // Into a local-only folder: the node would leave the share; `mv`
            // copies it there and deletes it, which says exactly that.
            return Err(Errno::EXDEV);
        }
        if m.local.contains(&id) && !m.ephemeral.contains(&id) && !self.ignored(&m, np, newname, is_dir) {
            // Out of the ignored paths: from now on it is shared.
            publish(&mut m, id);
        }
        let loc = Loc {
            parent: np.0.to_vec(),
            name: newname.to_vec(),
            deleted: false,
            seen_data: vec![],
            ctime_ns: now_ns(),
        };
        if !m.local.contains(&id) {
            m.dir_changed(p);
            if np != p {
                m.dir_changed(np);
            }
        }
        m.queue(loc_op(id, &loc));
        let invals = m.settle(true, &[(p, name), (np, newname)]);
        drop(m);
        self.finish(invals);
        Ok(())
    }

    /// Changes a file's buffer. A change by path, or of a file no handle has
    /// open, is committed at once (a `truncate(2)` or `utimes(2)` is its own
    /// change); one through a handle is committed at that handle's close. The
    /// open-file record is pinned meanwhile, so a racing close cannot drop it.
    pub(crate) fn change_file(&self, id: NodeId, by_path: bool, f: impl FnOnce(&mut FileBuf) -> R<()>) -> R<()> {
        let (cell, now) = {
            let mut m = self.lock();
            if !m.deleted_here(id) {
                m.health.check()?;
            }
            let of = m.open.entry(id).or_default();
            let now = by_path || of.handles == 0;
            of.handles += 1;
            (of.cell.clone(), now)
        };
        let r = {
            let mut g = cell.buf.lock().unwrap_or_else(|p| p.into_inner());
            self.loaded(id, &mut g).and_then(|b| {
                f(b)?;
                if b.mtime.is_none() {
                    b.mtime = Some(now_ns());
                }
                cell.publish(b);
                Ok(())
            })
        };
        let r = r.and_then(|()| if now { self.commit(id) } else { Ok(()) });
        let mut m = self.lock();
        if let Some(o) = m.open.get_mut(&id) {
            o.handles -= 1;
            if o.handles == 0 && !o.cell.is_dirty() {
                m.open.remove(&id);
                m.reap(id);
            }
        }
        r
    }

    /// The buffer of `id`, its base loaded on first use.
    fn loaded<'a>(&self, id: NodeId, g: &'a mut Option<FileBuf>) -> R<&'a mut FileBuf> {
        let stale = match g.as_ref() {
            None => true,
            // A clean buffer must start from what the file shows now, or a
            // later commit would silently replace a peer's newer version.
            Some(b) if !b.dirty => {
                let m = self.lock();
                let now = m.pending_content(id).map(|p| p.0).or_else(|| m.content_version(id));
                let detached = m.open.get(&id).is_some_and(|o| o.detached.is_some());
                !detached && now != Some(b.base_version)
            }
            Some(_) => false,
        };
        if stale {
            let (v, m) = self.current_content(id)?;
            *g = Some(FileBuf::new(m, v));
        }
        Ok(g.as_mut().expect("loaded"))
    }

    /// The content (version, manifest) a reader of `id` sees now: a pending
    /// write's, else the shown head's from the store.
    pub(crate) fn current_content(&self, id: NodeId) -> R<(u64, Arc<Manifest>)> {
        let (key, version) = {
            let m = self.lock();
            if let Some((d, _)) = m.open.get(&id).and_then(|o| o.detached.as_ref()) {
                return Ok((0, d.clone()));
            }
            if let Some(c) = m.view.copy(id) {
                (node::data_key(c.copy.of), Some(c.copy.head.version))
            } else {
                if let Some(p) = m.pending_content(id) {
                    return Ok(p);
                }
                m.view.get(id).ok_or(Errno::ENOENT)?;
                let v = m.view.shown_version(id).map(|d| d.version);
                if let Some(man) = v.and_then(|v| m.recalled(id, v)) {
                    return Ok((v.expect("recalled"), man));
                }
                (node::data_key(id), v)
            }
        };
        let Some(version) = version else {
            return Ok((0, Arc::new(Manifest::default())));
        };
        let heads = self.store.heads(&key).map_err(eio)?;
        let mut decoded: Vec<(&store::Head, u64, Manifest)> = heads
            .iter()
            .filter_map(|h| inputs::decode_data(h.value.as_ref()?).map(|(d, m)| (h, d.version, m)))
            .collect();
        // The store may be ahead of the view (a peer's write not applied yet):
        // then the head that wins there is the one to read.
        let at = decoded
            .iter()
            .position(|x| x.1 == version)
            .or_else(|| {
                (0..decoded.len()).max_by_key(|i| {
                    let h = decoded[*i].0;
                    (h.hlc, h.author, h.entry)
                })
            })
            .ok_or_else(|| eio(format!("no content for node {id:?}")))?;
        let (_, v, man) = decoded.swap_remove(at);
        let man = Arc::new(man);
        self.lock().remember(id, v, man.clone());
        Ok((v, man))
    }

    pub fn open(&self, ino: u64, write: bool) -> R<u64> {
        let mut m = self.lock();
        let id = m.id(ino)?;
        if m.view.copy(id).is_some() {
            if write {
                return Err(Errno::EROFS);
            }
        } else if m.kind(id) == Some(Kind::Dir) {
            return Err(Errno::EISDIR);
        }
        m.open.entry(id).or_default().handles += 1;
        Ok(m.new_fh(Handle::File(id)))
    }

    pub fn read(&self, ino: u64, off: u64, size: u32) -> R<Vec<u8>> {
        let (id, cell) = {
            let m = self.lock();
            let id = m.id(ino)?;
            (id, m.open.get(&id).map(|o| o.cell.clone()))
        };
        let mut buf = vec![0u8; size as usize];
        // The buffer lock is held to the end, so that a commit cannot slip
        // between choosing where the bytes come from and reading them.
        let g = cell.as_ref().map(|c| c.buf.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(b) = g.as_ref().and_then(|g| g.as_ref()).filter(|b| b.dirty) {
            let n = b
                .read_at(off, &mut buf, self.store.as_ref())
                .map_err(|e| self.content_error(id, e))?;
            buf.truncate(n);
            return Ok(buf);
        }
        let cached = {
            let mut m = self.lock();
            m.accessed(id);
            let version = m.content_version(id);
            let of = m.open.get(&id);
            of.and_then(|o| o.detached.as_ref().map(|d| d.0.clone())).or_else(|| {
                of.and_then(|o| o.read_cache.clone())
                    .filter(|(v, _)| Some(*v) == version)
                    .map(|(_, man)| man)
            })
        };
        let manifest = match cached {
            Some(man) => man,
            None => {
                let (v, man) = self.current_content(id)?;
                if let Some(of) = self.lock().open.get_mut(&id) {
                    of.read_cache = Some((v, man.clone()));
                }
                man
            }
        };
        let n = match &cell {
            Some(c) => {
                let mut cache = c.chunks.lock().unwrap_or_else(|p| p.into_inner());
                self.store.read_content_with(&manifest, off, &mut buf, &mut cache)
            }
            None => self.store.read_content(&manifest, off, &mut buf),
        }
        .map_err(|e| self.content_error(id, e))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// A read of `id`'s content failed: EIO, and a log line that names the file.
    fn content_error(&self, id: NodeId, e: store::Error) -> Errno {
        let path = self.lock().view.path_of(id);
        tracing::error!("cannot read {path}: {e}");
        Errno::EIO
    }

    #[cfg(test)]
    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> R<u32> {
        self.write_by(ino, None, off, data)
    }

    /// A write through handle `fh` (its close commits it; see `OpenFile::writers`).
    pub fn write_by(&self, ino: u64, fh: Option<u64>, off: u64, data: &[u8]) -> R<u32> {
        if off + data.len() as u64 > crate::buffer::MAX_FILE_BYTES {
            return Err(Errno::EFBIG);
        }
        let (id, cell) = {
            let mut m = self.lock();
            let id = m.id(ino)?;
            if m.view.copy(id).is_some() {
                return Err(Errno::EROFS);
            }
            if !m.deleted_here(id) {
                m.health.check()?;
            }
            let of = m.open.entry(id).or_default();
            if let Some(fh) = fh {
                of.writers.insert(fh);
            }
            (id, of.cell.clone())
        };
        let mut g = cell.buf.lock().unwrap_or_else(|p| p.into_inner());
        let b = self.loaded(id, &mut g)?;
        b.write_at(off, data, &self.spill_dir).map_err(eio)?;
        b.mtime = Some(now_ns());
        cell.publish(b);
        Ok(data.len() as u32)
    }

    /// Commits `id`'s buffered changes as a new content version (queued for
    /// the next group commit, shown at once). Lock order: buffer, then state.
    pub(crate) fn commit(&self, id: NodeId) -> R<()> {
        let Some(cell) = self.lock().open.get(&id).map(|o| o.cell.clone()) else {
            return Ok(());
        };
        let mut g = cell.buf.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = g.as_mut() else { return Ok(()) };
        if !b.dirty {
            return Ok(());
        }
        let manifest = match b.manifest(self.store.as_ref()) {
            Ok(m) => m,
            Err(e) => return Err(self.store_failed(&e)),
        };
        if manifest.chunks().len() > crate::buffer::MAX_CHUNKS {
            // Content no entry can describe: the writer hears it now.
            tracing::error!(
                "{} is too large to share ({} chunks)",
                self.lock().view.path_of(id),
                manifest.chunks().len()
            );
            *g = None;
            cell.clear();
            return Err(Errno::EFBIG);
        }
        if matches!(self.lock().health, crate::health::Health::ReadOnly { .. }) && !self.lock().deleted_here(id) {
            // This node may no longer write: keep what was written, say so.
            *g = None;
            cell.clear();
            drop(g);
            self.save_buffer(id, &manifest);
            return Err(Errno::EROFS);
        }
        let mtime = b.mtime.unwrap_or_else(now_ns);
        let version: u64 = rand::random();
        let invals = {
            let mut m = self.lock();
            let gone = m.deleted_here(id) || m.view.get(id).is_none();
            if gone {
                // Deleted here while open: its writes go with it, but its
                // handles still read them (POSIX).
                if let Some(of) = m.open.get_mut(&id) {
                    of.detached = Some((manifest.clone(), mtime));
                }
                Vec::new()
            } else {
                // A delete from a peer loses to this write (edit beats delete).
                m.restore_place(id, true);
                let atime = m.atime(id);
                m.atimes.remove(&id);
                m.queue_content(id, manifest.clone(), mtime, atime, version);
                if let Some(of) = m.open.get_mut(&id) {
                    of.read_cache = Some((version, manifest.clone()));
                }
                m.settle(true, &[])
            }
        };
        // The next change starts from what the file shows then, which may be
        // a peer's newer version.
        *g = None;
        cell.clear();
        drop(g);
        self.finish(invals);
        Ok(())
    }

    /// Writes a file's shown content again as a version that merges every
    /// head of it (resolves its conflict copies everywhere).
    fn merge_content(&self, id: NodeId) -> R<()> {
        let (_, manifest) = self.current_content(id)?;
        let mut m = self.lock();
        let mtime = m.view.shown_version(id).map_or_else(now_ns, |d| d.mtime_ns);
        let atime = m.atime(id);
        m.queue_content(id, manifest, mtime, atime, rand::random());
        let invals = m.settle(true, &[]);
        drop(m);
        self.finish(invals);
        Ok(())
    }

    /// Commits the file's changes; reports, once, an error the store gave a
    /// window that held earlier changes of it.
    pub fn flush(&self, ino: u64) -> R<()> {
        self.flush_by(ino, None)
    }

    /// `close` of handle `fh`: commits what it changed. The changes other
    /// handles are still making are not published by it (a reader's close,
    /// or a late release of a handle whose writes were committed, must not
    /// publish another writer's half-written file).
    pub fn flush_by(&self, ino: u64, fh: Option<u64>) -> R<()> {
        let Some(id) = self.lock().inodes.node(ino) else {
            return Ok(());
        };
        if self.closer_commits(id, fh, false) {
            self.commit_by(id)?;
        }
        match self.lock().write_errors.remove(&id) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Does closing `fh` commit `id`? When it changed the file, when nobody
    /// is known to have (changes with no handle: commit as before), or when
    /// it is the last handle.
    fn closer_commits(&self, id: NodeId, fh: Option<u64>, last_release: bool) -> bool {
        let m = self.lock();
        let Some(o) = m.open.get(&id) else { return true };
        match fh {
            None => true,
            Some(fh) => o.writers.is_empty() || o.writers.contains(&fh) || (last_release && o.handles <= 1),
        }
    }

    /// [`Shared::commit`], and the writers it published forgotten.
    fn commit_by(&self, id: NodeId) -> R<()> {
        let before: std::collections::HashSet<u64> =
            self.lock().open.get(&id).map(|o| o.writers.clone()).unwrap_or_default();
        self.commit(id)?;
        // A handle that wrote again during the commit stays a writer only if
        // it was not one before: its newer change is then still to publish.
        if let Some(o) = self.lock().open.get_mut(&id) {
            o.writers.retain(|w| !before.contains(w));
        }
        Ok(())
    }

    pub fn release(&self, fh: u64) -> R<()> {
        let h = self.lock().handles.remove(&fh);
        let Some(Handle::File(id)) = h else { return Ok(()) };
        let r = if self.closer_commits(id, Some(fh), true) {
            self.commit_by(id)
        } else {
            Ok(())
        };
        if let Some(o) = self.lock().open.get_mut(&id) {
            o.writers.remove(&fh);
        }
        let mut m = self.lock();
        if let Some(o) = m.open.get_mut(&id) {
            o.handles = o.handles.saturating_sub(1);
            // A buffer whose commit failed stays, so that shutdown tries again.
            if o.handles == 0 && !o.cell.is_dirty() {
                m.open.remove(&id);
                m.reap(id);
            }
        }
        r
    }

    /// Commits the files closed with changes the store could not take then
    /// (their `close` reported it): once the store takes writes again, what
    /// was written to them is kept, as a disk keeps dirty pages it could not
    /// write at first.
    pub(crate) fn commit_left_over(&self) {
        let ids: Vec<_> = {
            let m = self.lock();
            m.open
                .iter()
                .filter(|(_, o)| o.handles == 0 && o.cell.is_dirty())
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            if self.commit(id).is_err() {
                return;
            }
            let mut m = self.lock();
            if m.open.get(&id).is_some_and(|o| o.handles == 0 && !o.cell.is_dirty()) {
                m.open.remove(&id);
                m.reap(id);
            }
        }
    }

    /// Durable when this returns: the file's buffer and every pending change.
    pub fn fsync(&self, ino: u64) -> R<()> {
        self.flush(ino)?;
        self.flush_now(true)
    }
}

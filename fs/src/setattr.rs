//! `setattr` and its relatives: mode, owner, size and times of a node, and
//! `fallocate`. A change by path is committed at once; one through a handle
//! at that handle's close (see `Shared::change_file`).

use std::sync::Arc;

use crate::Shared;
use crate::errno::{Errno, R, eio};
use crate::model::{self, Attrs, attr_op, now_ns};
use crate::node::{Kind, NodeId};

/// A time to set: now, or nanoseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    Now,
    At(i64),
}

/// What `setattr` changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// The handle it came through (`ftruncate`, `futimens`), if any: a change
    /// by path is committed at once, one through a handle at its close.
    pub fh: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<Time>,
    pub atime: Option<Time>,
}

impl Shared {
    pub fn setattr(&self, ino: u64, s: SetAttr) -> R<Attrs> {
        let id = {
            let m = self.lock();
            let id = m.id(ino)?;
            if m.view.copy(id).is_some() {
                return Err(Errno::EPERM);
            }
            id
        };
        let kind = self.lock().kind(id).ok_or(Errno::ENOENT)?;
        let by_path = s.fh.is_none();
        if let Some(fh) = s.fh
            && (s.size.is_some() || s.mtime.is_some() || s.atime.is_some())
            && let Some(o) = self.lock().open.get_mut(&id)
        {
            // Its close commits this change (see `OpenFile::writers`).
            o.writers.insert(fh);
        }
        if let Some(size) = s.size {
            if kind != Kind::File {
                return Err(Errno::EISDIR);
            }
            if size > crate::buffer::MAX_FILE_BYTES {
                return Err(Errno::EFBIG);
            }
            self.change_file(id, by_path, |b| b.set_len(size).map_err(eio))?;
        }
        if s.mode.is_some() || s.uid.is_some() || s.gid.is_some() {
            let mut m = self.lock();
            if m.deleted_here(id) && !m.view.is_shown(id) {
                // Deleted here: there is no file left to change.
                return Err(Errno::ENOENT);
            }
            m.health.check()?;
            let mut a = m
                .view
                .get(id)
                .and_then(|r| r.attr.clone())
                .unwrap_or_else(model::root_attr);
            if let Some(mode) = s.mode {
                a.mode = mode & 0o7777;
            }
            if let Some(u) = s.uid {
                a.uid = u;
            }
            if let Some(g) = s.gid {
                a.gid = g;
            }
            a.ctime_ns = now_ns();
            m.restore_place(id, false);
            m.queue(attr_op(id, &a));
            let invals = m.settle(true, &[]);
            drop(m);
            self.finish(invals);
        }
        if s.mtime.is_some() || s.atime.is_some() {
            let now = now_ns();
            let at = |t: Time| match t {
                Time::Now => now,
                Time::At(t) => t,
            };
            self.set_times(id, kind, by_path, s.mtime.map(at), s.atime.map(at))?;
        }
        self.getattr(ino)
    }

    /// `utimensat`: a file with writes not yet committed (or deleted here
    /// while open) takes the times into its buffer; otherwise they are a new
    /// version of the node's `d` key with the same content.
    fn set_times(&self, id: NodeId, kind: Kind, by_path: bool, mtime: Option<i64>, atime: Option<i64>) -> R<()> {
        let buffered = {
            let m = self.lock();
            kind == Kind::File && (m.deleted_here(id) || m.open.get(&id).is_some_and(|o| o.cell.is_dirty()))
        };
        if buffered {
            if let Some(a) = atime {
                self.lock().atimes.insert(id, a);
            }
            return self.change_file(id, by_path, |b| {
                if let Some(t) = mtime {
                    b.mtime = Some(t);
                }
                b.dirty = true;
                Ok(())
            });
        }
        let manifest = if kind == Kind::File {
            self.current_content(id)?.1
        } else {
            Arc::default()
        };
        let mut m = self.lock();
        if m.deleted_here(id) && !m.view.is_shown(id) {
            return Err(Errno::ENOENT);
        }
        m.health.check()?;
        m.restore_place(id, false);
        let mtime = mtime.unwrap_or_else(|| m.view.shown_version(id).map_or(0, |d| d.mtime_ns));
        let atime = atime.unwrap_or_else(|| m.atime(id));
        m.atimes.remove(&id);
        m.queue_content(id, manifest, mtime, atime, rand::random());
        let invals = m.settle(true, &[]);
        drop(m);
        self.finish(invals);
        Ok(())
    }

    /// `fallocate`: mode 0 makes the file at least `off + len` long (the new
    /// bytes read as zeros); `KEEP_SIZE` changes nothing (the store has no
    /// space to reserve: chunks are written when there are bytes). Other
    /// modes (punching holes, collapsing ranges) are not supported.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> R<()> {
        let id = {
            let m = self.lock();
            let id = m.id(ino)?;
            if m.view.copy(id).is_some() {
                return Err(Errno::EROFS);
            }
            if m.kind(id) != Some(Kind::File) {
                return Err(Errno::ENODEV);
            }
            id
        };
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > crate::buffer::MAX_FILE_BYTES {
            return Err(Errno::EFBIG);
        }
        match mode {
            0 => self.change_file(id, false, |b| {
                if b.len() < end {
                    b.set_len(end).map_err(eio)?;
                }
                Ok(())
            }),
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

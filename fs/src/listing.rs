//! Directory listings (taken whole at opendir, so offsets are stable and a
//! large directory streams in O(1) per entry) and `statfs`.

use crate::Shared;
use crate::errno::{Errno, R, eio};
use crate::local::StatFs;
use crate::model::{Attrs, DirEntry, Handle};
use crate::node::Kind;

impl Shared {
    pub fn opendir(&self, ino: u64) -> R<u64> {
        let mut m = self.lock();
        let id = m.id(ino)?;
        if m.kind(id) != Some(Kind::Dir) {
            return Err(Errno::ENOTDIR);
        }
        let list = m.listing(id);
        Ok(m.new_fh(Handle::Dir(list)))
    }

    /// Entries of an open directory from `offset` on, each with the offset of the next.
    pub fn readdir(&self, fh: u64, offset: u64, mut each: impl FnMut(&DirEntry, u64) -> bool) -> R<()> {
        let m = self.lock();
        let Some(Handle::Dir(list)) = m.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            if each(e, i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    /// `readdir` with each entry's attributes, so that `ls -l` or a first
    /// `git status` needs no lookup per name. Every entry the kernel takes,
    /// but `.` and `..`, counts as a lookup of its node (as `lookup` does);
    /// `each` gets `None` for those two and for a node gone since opendir.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut each: impl FnMut(&DirEntry, Option<&Attrs>, u64) -> bool,
    ) -> R<()> {
        let mut m = self.lock();
        let Some(Handle::Dir(list)) = m.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let rest: Vec<DirEntry> = list.iter().skip(offset as usize).cloned().collect();
        for (i, e) in rest.iter().enumerate() {
            let next = offset + i as u64 + 1;
            let node = if e.name == b"." || e.name == b".." {
                None
            } else {
                m.inodes.node(e.ino)
            };
            let attrs = node.and_then(|id| m.attrs(id));
            if each(e, attrs.as_ref(), next) {
                break;
            }
            if let (Some(id), Some(_)) = (node, attrs) {
                *m.lookups.entry(id).or_default() += 1;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.lock().handles.remove(&fh);
    }

    pub fn statfs(&self) -> R<StatFs> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.spill_dir.as_os_str().as_bytes()).map_err(eio)?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return Err(eio(std::io::Error::last_os_error()));
        }
        let files = self.lock().view.len() as u64;
        Ok(StatFs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files,
            ffree: s.f_ffree,
            bsize: s.f_bsize as u32,
            frsize: s.f_frsize as u32,
        })
    }
}

//! Extended attributes: `user.*` names only, each one key of its node, so
//! they replicate and merge like any key.

use store::Op;

use crate::Shared;
use crate::errno::{Errno, R};
use crate::node;

fn user_xattr(name: &[u8]) -> R<&[u8]> {
    if !name.starts_with(b"user.") {
        return Err(Errno::ENOTSUP);
    }
    Ok(name)
}

impl Shared {
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], create: bool, replace: bool) -> R<()> {
        let name = user_xattr(name)?;
        let mut m = self.lock();
        let id = m.id(ino)?;
        if m.view.copy(id).is_some() {
            return Err(Errno::EPERM);
        }
        if m.deleted_here(id) && !m.view.is_shown(id) {
            return Err(Errno::ENOENT);
        }
        m.health.check()?;
        let exists = m.view.get(id).is_some_and(|r| r.xattrs.contains_key(name));
        if create && exists {
            return Err(Errno::EEXIST);
        }
        if replace && !exists {
            return Err(Errno::ENODATA);
        }
        m.restore_place(id, false);
        m.queue(Op::put(node::xattr_key(id, name), value.to_vec()));
        let invals = m.settle(true, &[]);
        drop(m);
        self.finish(invals);
        Ok(())
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> R<Vec<u8>> {
        // Only `user.` names are ever stored. ENOTSUP (not ENODATA) for the
        // others lets programs stop asking: `ls -l` asks for ACLs and SELinux
        // labels once per file system instead of twice per file.
        user_xattr(name)?;
        let m = self.lock();
        let id = m.id(ino)?;
        m.view
            .get(id)
            .and_then(|r| r.xattrs.get(name).cloned())
            .ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, ino: u64) -> R<Vec<u8>> {
        let m = self.lock();
        let id = m.id(ino)?;
        let mut list = Vec::new();
        for k in m.view.get(id).into_iter().flat_map(|r| r.xattrs.keys()) {
            list.extend_from_slice(k);
            list.push(0);
        }
        Ok(list)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> R<()> {
        let name = user_xattr(name).map_err(|_| Errno::ENODATA)?;
        let mut m = self.lock();
        let id = m.id(ino)?;
        if m.deleted_here(id) && !m.view.is_shown(id) {
            return Err(Errno::ENOENT);
        }
        if !m.view.get(id).is_some_and(|r| r.xattrs.contains_key(name)) {
            return Err(Errno::ENODATA);
        }
        m.health.check()?;
        m.restore_place(id, false);
        m.queue(Op::delete(node::xattr_key(id, name)));
        let invals = m.settle(true, &[]);
        drop(m);
        self.finish(invals);
        Ok(())
    }
}

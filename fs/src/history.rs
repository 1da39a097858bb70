//! `mountctl log` and `restore`: a file's versions as the store holds them,
//! and writing an old one back as a new change (so that it replicates like
//! any write). Deleted files are found through their last place: a delete
//! keeps the node and its content versions in the store.

use std::sync::Arc;

use store::{KeyWrite, Manifest};

use crate::errno::{Errno, R, eio};
use crate::local::New;
use crate::model::{loc_op, now_ns};
use crate::node::{self, Data, Kind, Loc, NodeId};
use crate::{FsView, Shared};

/// One version of a file's content, or its deletion.
#[derive(Clone, Debug)]
pub struct Version {
    /// The entry that wrote it (hex).
    pub entry: String,
    pub author: String,
    /// When it was written (the entry's clock), ms since the epoch.
    pub at_ms: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// `content` or `deleted`.
    pub what: &'static str,
    /// The version the file shows now.
    pub current: bool,
    /// A content head that is not the one shown: a conflict copy shows it.
    pub conflict: bool,
}

/// A file deleted from a directory, and when.
#[derive(Clone, Debug)]
pub struct Deleted {
    pub path: String,
    pub at_ms: u64,
    pub versions: usize,
}

impl FsView {
    /// The versions of the file at `path` (shown, or deleted from there),
    /// oldest first.
    pub fn log(&self, path: &str) -> R<Vec<Version>> {
        self.0.file_log(path)
    }

    /// Files deleted from the directory at `path` (not shown any more).
    pub fn deleted(&self, path: &str) -> R<Vec<Deleted>> {
        self.0.deleted_in(path)
    }

    /// The node at `path`: a shown file or folder, or a file deleted there.
    pub fn node_at(&self, path: &str) -> R<NodeId> {
        self.0.dir_at(path).or_else(|_| self.0.file_at(path))
    }

    /// Writes version `entry` (a unique start of its id) of the file at
    /// `path` back as a new change: at `to` when given (a new file), else in
    /// place (bringing a deleted file back). Returns the path written.
    pub fn restore(&self, path: &str, entry: &str, to: Option<&str>) -> R<String> {
        self.0.restore(path, entry, to)
    }
}

fn parts(path: &str) -> Vec<&[u8]> {
    path.split('/').filter(|p| !p.is_empty()).map(str::as_bytes).collect()
}

impl Shared {
    /// The shown directory at `path`.
    fn dir_at(&self, path: &str) -> R<NodeId> {
        let m = self.lock();
        let mut id = NodeId::ROOT;
        for part in parts(path) {
            id = m.view.lookup(id, part).ok_or(Errno::ENOENT)?;
        }
        if m.kind(id) != Some(Kind::Dir) {
            return Err(Errno::ENOTDIR);
        }
        Ok(id)
    }

    /// The shown directory a path's last name is in, and that name;
    /// `root` is the error for the root itself (no name).
    fn place_at(&self, path: &str, root: Errno) -> R<(NodeId, Vec<u8>)> {
        let all = parts(path);
        let (name, dirs) = all.split_last().ok_or(root)?;
        let dirs: Vec<_> = dirs.iter().map(|p| String::from_utf8_lossy(p)).collect();
        Ok((self.dir_at(&dirs.join("/"))?, name.to_vec()))
    }

    /// The file at `path`: the one shown, else the last one deleted there.
    fn file_at(&self, path: &str) -> R<NodeId> {
        let (dir, name) = self.place_at(path, Errno::EISDIR)?;
        let name = name.as_slice();
        let m = self.lock();
        let id = m.view.lookup(dir, name).or_else(|| {
            m.view
                .linked(dir)
                .into_iter()
                .filter_map(|id| Some((m.view.loc(id)?, id)))
                .filter(|(l, id)| l.deleted && l.name == *name && !m.view.is_shown(*id))
                .max_by_key(|(l, _)| l.ctime_ns)
                .map(|(_, id)| id)
        });
        let id = id.ok_or(Errno::ENOENT)?;
        if m.view.copy(id).is_some() || m.kind(id) != Some(Kind::File) {
            return Err(Errno::EINVAL);
        }
        Ok(id)
    }

    fn writes(&self, id: NodeId) -> R<Vec<KeyWrite>> {
        let (d, l) = (node::data_key(id), node::loc_key(id));
        self.store.history(&|k| k == d || k == l).map_err(eio)
    }

    fn file_log(&self, path: &str) -> R<Vec<Version>> {
        let id = self.file_at(path)?;
        let writes = self.writes(id)?;
        let (shown, heads): (Option<u64>, Vec<u64>) = {
            let m = self.lock();
            let shown = m.view.is_shown(id).then(|| m.content_version(id)).flatten();
            (shown, m.view.get(id).map_or_else(Vec::new, |r| r.versions().collect()))
        };
        let mut out = Vec::new();
        for w in writes {
            let base = |what, size, mtime_ns, version: Option<u64>| Version {
                entry: w.entry.to_string(),
                author: w.author.to_string(),
                at_ms: w.hlc.ms(),
                size,
                mtime_ns,
                what,
                current: version.is_some() && version == shown,
                conflict: version.is_some_and(|v| heads.contains(&v) && Some(v) != shown && shown.is_some()),
            };
            if w.key == node::data_key(id) {
                let Some(d) = w.value.as_deref().and_then(node::decode::<Data>) else {
                    continue;
                };
                let size = Manifest::decode(&d.manifest).map_or(0, |m| m.size());
                out.push(base("content", size, d.mtime_ns, Some(d.version)));
            } else if let Some(l) = w.value.as_deref().and_then(node::decode::<Loc>)
                && l.deleted
            {
                out.push(base("deleted", 0, 0, None));
            }
        }
        Ok(out)
    }

    fn deleted_in(&self, path: &str) -> R<Vec<Deleted>> {
        let dir = self.dir_at(path)?;
        let gone: Vec<(NodeId, Loc)> = {
            let m = self.lock();
            m.view
                .linked(dir)
                .into_iter()
                .filter(|id| !m.view.is_shown(*id) && m.kind(*id) == Some(Kind::File))
                .filter_map(|id| Some((id, m.view.loc(id)?)))
                .filter(|(_, l)| l.deleted)
                .collect()
        };
        let base = path.trim_end_matches('/');
        let mut out: Vec<Deleted> = gone
            .into_iter()
            .map(|(id, l)| Deleted {
                path: format!("{base}/{}", String::from_utf8_lossy(&l.name)),
                at_ms: (l.ctime_ns / 1_000_000).max(0) as u64,
                versions: self.lock().view.get(id).map_or(0, |r| r.versions().count()),
            })
            .collect();
        out.sort_by(|a, b| (&a.path, a.at_ms).cmp(&(&b.path, b.at_ms)));
        Ok(out)
    }

    fn restore(&self, path: &str, entry: &str, to: Option<&str>) -> R<String> {
        let id = self.file_at(path)?;
        let entry = entry.to_ascii_lowercase();
        let found: Vec<KeyWrite> = self
            .writes(id)?
            .into_iter()
            .filter(|w| w.key == node::data_key(id) && w.value.is_some() && w.entry.to_string().starts_with(&entry))
            .collect();
        let w = match found.as_slice() {
            [w] => w,
            [] => return Err(Errno::ENOENT),
            _ => return Err(Errno::EINVAL),
        };
        let d: Data = w.value.as_deref().and_then(node::decode).ok_or(Errno::EIO)?;
        let manifest = Arc::new(Manifest::decode(&d.manifest).map_err(eio)?);
        // Held, so that a collection cannot take them before the entry is written.
        if !self.store.hold_chunks(manifest.chunks()).map_err(eio)?.is_empty() {
            // Its bytes never reached this node (or were collected).
            return Err(Errno::ENODATA);
        }
        let mut m = self.lock();
        m.health.check()?;
        let (target, written) = match to {
            Some(to) => {
                drop(m);
                let (dir, name) = self.place_at(to, Errno::EINVAL)?;
                let name = name.as_slice();
                m = self.lock();
                let attr = m.view.get(id).and_then(|r| r.attr.clone()).ok_or(Errno::ENOENT)?;
                let new = New {
                    kind: Kind::File,
                    mode: attr.mode,
                    target: b"",
                    owner: (attr.uid, attr.gid),
                    rdev: 0,
                };
                let dir_ino = m.inodes.ino(dir);
                let (nid, _, invals, _) = self.make_locked(&mut m, dir_ino, name, new)?;
                // Made for this restore only: the kernel was not told of it.
                if m.lookups.get(&nid).is_some_and(|c| *c <= 1) {
                    m.lookups.remove(&nid);
                } else if let Some(c) = m.lookups.get_mut(&nid) {
                    *c -= 1;
                }
                self.send(invals);
                (nid, to.to_string())
            }
            None => {
                if !m.view.is_shown(id) {
                    let l = m.view.loc(id).ok_or(Errno::ENOENT)?;
                    let parent = NodeId::from_slice(&l.parent).ok_or(Errno::EIO)?;
                    if m.view.lookup(parent, &l.name).is_some() {
                        // Another file took the name since: say where to put it.
                        return Err(Errno::EEXIST);
                    }
                    m.dir_changed(parent);
                    let back = Loc {
                        deleted: false,
                        seen_data: vec![],
                        ctime_ns: now_ns(),
                        ..l
                    };
                    m.queue(loc_op(id, &back));
                }
                (id, path.to_string())
            }
        };
        let atime = m.atime(target);
        m.queue_content(target, manifest, d.mtime_ns, atime, rand::random());
        let invals = m.settle(false, &[]);
        drop(m);
        self.send(invals);
        self.kick();
        Ok(written)
    }
}

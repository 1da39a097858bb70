//! `.latticeignore`: paths that stay on this machine. The file sits at the
//! share's root, uses gitignore syntax, and is itself replicated, so every
//! member ignores the same paths.
//!
//! A name it matches, created here, becomes a local-only node: it works in
//! the mount like any file (and survives a remount: its keys are kept in the
//! inode map's file) but never becomes an entry. Whatever is created inside
//! a local-only folder is local-only too. Moving a local-only node to a path
//! the patterns do not match shares it (so `save.tmp` renamed over `save`
//! reaches every peer); a shared file moved to an ignored path stays shared,
//! as a tracked file stays tracked in git. Patterns apply when a name is
//! made or moved, not to what already exists.

use std::sync::Mutex;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::Shared;
use crate::model::Model;
use crate::node::NodeId;

pub const FILE_NAME: &[u8] = b".latticeignore";

/// The patterns, as of one content version of the root's `.latticeignore`.
#[derive(Default)]
pub struct Patterns {
    version: Option<u64>,
    matcher: Option<Gitignore>,
}

impl Shared {
    /// Reads `.latticeignore` again if it changed (outside the state lock).
    pub(crate) fn refresh_ignore(&self) {
        let now = {
            let m = self.lock();
            m.view
                .lookup(NodeId::ROOT, FILE_NAME)
                .map(|id| (id, m.pending_content(id).map(|p| p.0).or_else(|| m.content_version(id))))
        };
        let version = now.and_then(|(_, v)| v);
        if self.ignore.lock().unwrap_or_else(|p| p.into_inner()).version == version && version.is_some() {
            return;
        }
        let matcher = now.and_then(|(id, _)| {
            // Said once per version of the file (the version is cached even
            // when it cannot be read): until then, nothing is ignored.
            let unreadable = |e: &dyn std::fmt::Display| {
                tracing::error!(
                    "cannot read {}: nothing is ignored until it can be read: {e}",
                    String::from_utf8_lossy(FILE_NAME)
                )
            };
            let (_, manifest) = self
                .current_content(id)
                .map_err(|e| unreadable(&std::io::Error::from_raw_os_error(e.0)))
                .ok()?;
            let mut buf = vec![0u8; manifest.size().min(1 << 20) as usize];
            let n = self
                .store
                .read_content(&manifest, 0, &mut buf)
                .map_err(|e| unreadable(&e))
                .ok()?;
            let mut b = GitignoreBuilder::new("/");
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if let Err(e) = b.add_line(None, line) {
                    tracing::warn!("{}: {line:?} is not a pattern: {e}", String::from_utf8_lossy(FILE_NAME));
                }
            }
            b.build().ok()
        });
        *self.ignore.lock().unwrap_or_else(|p| p.into_inner()) = Patterns { version, matcher };
    }

    /// Is a new name `name` in `dir` local-only?
    pub(crate) fn ignored(&self, m: &Model, dir: NodeId, name: &[u8], is_dir: bool) -> bool {
        if m.local.contains(&dir) && !m.ephemeral.contains(&dir) {
            return true;
        }
        if dir == NodeId::ROOT && name == FILE_NAME {
            return false;
        }
        let g = self.ignore.lock().unwrap_or_else(|p| p.into_inner());
        let Some(matcher) = g.matcher.as_ref() else {
            return false;
        };
        let mut path = m.view.path_of(dir);
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(&String::from_utf8_lossy(name));
        matcher
            .matched_path_or_any_parents(path.trim_start_matches('/'), is_dir)
            .is_ignore()
    }
}

/// A fresh, empty cache.
pub(crate) fn patterns() -> Mutex<Patterns> {
    Mutex::new(Patterns::default())
}

//! A node's data folder (`--home`, `LATTICE_HOME`, default `~/.lattice`):
//!
//! ```text
//! HOME/identity                  Ed25519 key, mode 0600 (mountctl init)
//! HOME/shares/NAME/store.redb    the share's store
//! HOME/shares/NAME/inodes.redb   this machine's inode numbers
//! HOME/shares/NAME/daemon.lock   held (flock) by the running daemon
//! HOME/shares/NAME/control.sock  the running daemon's control socket
//! HOME/shares/NAME/mountpoint    where it is mounted
//! HOME/shares/NAME/daemon.log    the daemon's log
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn resolve(arg: Option<PathBuf>) -> Result<Home> {
        let dir = match arg {
            Some(d) => d,
            None => {
                PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --home DIR")?).join(".lattice")
            }
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Home { dir })
    }

    pub fn identity_path(&self) -> PathBuf {
        self.dir.join("identity")
    }

    pub fn identity(&self) -> Result<store::Identity> {
        let p = self.identity_path();
        if !p.exists() {
            bail!(
                "this machine has no identity in {}: run `mountctl init` first",
                self.dir.display()
            );
        }
        Ok(store::Identity::load(&p)?)
    }

    pub fn share(&self, name: &str) -> ShareDir {
        ShareDir {
            dir: self.dir.join("shares").join(name),
            name: name.to_string(),
        }
    }

    pub fn shares(&self) -> Vec<ShareDir> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("shares")) {
            for e in rd.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    out.push(self.share(name));
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// A share name: letters, digits, `.`, `_`, `-`; at most 64 of them; not
/// `.` or `..` (it names a folder under HOME/shares).
pub fn share_name(s: &str) -> std::result::Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a share name: use letters, digits, '.', '_' and '-' (at most 64, not '.' or '..')"
        ))
    }
}

/// The file-system type and source of the mount at `dir`, if one is there.
pub fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if left.split(' ').nth(4) != Some(want.as_str()) {
            return None;
        }
        let mut r = right.split(' ');
        Some((r.next()?.to_string(), r.next()?.to_string()))
    })
}

pub struct ShareDir {
    pub dir: PathBuf,
    pub name: String,
}

impl ShareDir {
    pub fn store(&self) -> PathBuf {
        self.dir.join("store.redb")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
    pub fn mountpoint_file(&self) -> PathBuf {
        self.dir.join("mountpoint")
    }
    /// Written when the share's store is created: a folder that has it and no
    /// store lost its store (it is never replaced by a new, empty share).
    pub fn id_file(&self) -> PathBuf {
        self.dir.join("share-id")
    }
    /// The UDP port the share's endpoint took at its first start, kept so
    /// that peers find it at the same address after every restart.
    pub fn port_file(&self) -> PathBuf {
        self.dir.join("port")
    }
    /// The HTTP API's port, chosen at its first start and kept.
    pub fn api_port_file(&self) -> PathBuf {
        self.dir.join("api_port")
    }
    /// The ticket of a join that has not finished (admission and backfill):
    /// `join` or `mount` carries it on.
    pub fn join_file(&self) -> PathBuf {
        self.dir.join("joining")
    }
    /// The source a mount of this share shows in /proc/self/mountinfo.
    pub fn mount_source(&self) -> String {
        format!("lattice:{}", self.name)
    }
    pub fn mountpoint(&self) -> Option<PathBuf> {
        std::fs::read_to_string(self.mountpoint_file())
            .ok()
            .map(|s| PathBuf::from(s.trim_end_matches('\n')))
    }
}

/// Is `dir` a mount point now (per /proc/self/mountinfo)?
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.as_os_str().to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// An absolute path without resolving through a possibly dead mount.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    // Canonicalize the parent (alive), keep the last component as given.
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name)),
        _ => Ok(abs),
    }
}

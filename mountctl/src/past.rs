//! Time travel: `mountctl mount DIR --at TIME|ENTRY` mounts the share
//! read-only as it was then.
//!
//! The share's daemon serves it (it holds the store): a second FUSE session
//! over [`store::AsOf`], the state made of every entry with a clock at or
//! before the moment, through the same file-system code as the live mount.
//! The kernel refuses writes (a read-only mount: EROFS). It lives until
//! `mountctl unmount DIR` or until the share's daemon stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::home::{self, Home};

/// One past mount, owned by the daemon.
pub struct PastMount {
    pub dir: PathBuf,
    pub at_ms: u64,
    session: fuser::BackgroundSession,
    fs: fs::FsHandle,
    /// Its inode map and spill folder: thrown away with it.
    scratch: PathBuf,
}

/// The source a past mount shows in /proc/self/mountinfo.
pub fn source(share: &str, at_ms: u64) -> String {
    format!("lattice-at:{share}@{at_ms}")
}

/// TIME as `date -d` reads it ("2026-12-04 10:00", "yesterday", "10 minutes
/// ago", "@1796000000"), in ms since the epoch; `None` if it is not a time.
fn parse_time(s: &str) -> Option<u64> {
    let out = std::process::Command::new("date")
        .args(["-d", s, "+%s%3N"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `mountctl mount DIR --at WHEN`: an entry id (a unique start of 8 hex
/// digits or more), else a time.
pub fn mount(home: &Home, dir: &Path, share: &str, when: &str) -> Result<()> {
    let dir = home::absolute(dir)?;
    crate::daemon::check_mountpoint(&dir)?;
    // 8 hex digits or more name an entry ("12345678" would also be a time).
    let spec = if when.len() >= 8 && when.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("entry {when}")
    } else {
        match parse_time(when) {
            Some(ms) => format!("time {ms}"),
            None => bail!(
                "{when:?} is neither a time `date -d` reads (\"2026-12-04 10:00\", \"1 hour ago\", \"@1796000000\") nor an entry id (8 hex digits or more)"
            ),
        }
    };
    let dir_hex = hex::encode(dir.as_os_str().as_encoded_bytes());
    let v = crate::ask(home, share, &format!("at {spec} {dir_hex}"))?;
    println!(
        "{} shows share {share:?} as it was at {} ({} entries), read-only; `mountctl unmount {}` when done",
        dir.display(),
        v["at"].as_str().unwrap_or("?"),
        v["entries"],
        dir.display()
    );
    Ok(())
}

/// The share whose past mount is at `dir`, if it is one.
pub fn share_of_past(dir: &Path) -> Option<String> {
    let (fstype, source) = home::mount_entry(dir)?;
    if !fstype.starts_with("fuse") {
        return None;
    }
    let rest = source.strip_prefix("lattice-at:")?;
    Some(rest.rsplit_once('@')?.0.to_string())
}

/// `mountctl unmount DIR` for a past mount: its daemon lets go of it; with no
/// daemon (it died), the mount is detached.
pub fn unmount(home: &Home, dir: &Path, share: &str) -> Result<()> {
    let sd = home.share(share);
    let hexed = hex::encode(dir.as_os_str().as_encoded_bytes());
    match crate::control::request(&sd.socket(), &format!("unmount-at {hexed}"), Duration::from_secs(60)) {
        Ok(v) if v["error"].is_null() => Ok(()),
        Ok(v) => bail!("{}", v["error"].as_str().unwrap_or("?")),
        Err(_) => {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                bail!("cannot detach {}: {}", dir.display(), std::io::Error::last_os_error());
            }
            Ok(())
        }
    }
}

/// In the daemon (blocking): `at time MS DIR` or `at entry ID DIR`.
pub fn open(d: &Daemon, kind: &str, what: &str, dir_hex: &str) -> Result<Value> {
    let dir = PathBuf::from(String::from_utf8(hex::decode(dir_hex)?).map_err(|_| anyhow!("the path is not UTF-8"))?);
    let at = match kind {
        "time" => {
            let ms: u64 = what.parse().context("not a time")?;
            store::Hlc::new(ms, u16::MAX)
        }
        _ => store::AsOf::clock_of(&d.store, what)?.ok_or_else(|| anyhow!("no entry {what} in this share"))?,
    };
    let view = store::AsOf::new(d.store.clone(), at)?;
    if view.entries == 0 {
        bail!("the share did not exist yet at that time");
    }
    let entries = view.entries;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = d.share_dir().join("past").join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let (fs, mut handle) = fs::open(Arc::new(view), &scratch).map_err(|e| anyhow!("{e}"))?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(source(&d.name, at.ms())),
        fuser::MountOption::Subtype("lattice".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::RO,
    ];
    let session = fuser::Session::new(fs, &dir, &config)
        .with_context(|| format!("cannot mount {}", dir.display()))?
        .spawn()
        .context("cannot start the FUSE session")?;
    handle.attach(session.notifier());
    tracing::info!(dir = %dir.display(), at_ms = at.ms(), entries, "mounted the share as it was then");
    d.past.lock().unwrap().push(PastMount {
        dir,
        at_ms: at.ms(),
        session,
        fs: handle,
        scratch,
    });
    Ok(json!({ "at": crate::show::ago(at.ms()), "at_ms": at.ms(), "entries": entries }))
}

/// In the daemon (blocking): lets go of the past mount at `dir_hex`.
pub fn close(d: &Daemon, dir_hex: &str) -> Result<Value> {
    let dir = PathBuf::from(String::from_utf8(hex::decode(dir_hex)?).map_err(|_| anyhow!("the path is not UTF-8"))?);
    let found = {
        let mut past = d.past.lock().unwrap();
        let i = past.iter().position(|p| p.dir == dir);
        i.map(|i| past.remove(i))
    };
    let p = found.ok_or_else(|| anyhow!("{} is not a past mount of this share", dir.display()))?;
    release(p);
    Ok(json!({ "ok": true }))
}

/// Unmounts one past mount (detaching it if busy) and frees what it used.
pub fn release(p: PastMount) {
    crate::daemon::release_mount(&p.dir, p.session);
    let mut fs = p.fs;
    let _ = fs.shutdown();
    let _ = std::fs::remove_dir_all(&p.scratch);
    tracing::info!(dir = %p.dir.display(), at_ms = p.at_ms, "unmounted a past mount");
}

//! A mount whose daemon died (kill -9, a crash, the OOM killer).
//!
//! Detaching such a mount is not enough. Processes that were waiting on it
//! when the daemon died stay blocked in the kernel, and the daemon itself may
//! not finish dying: a daemon thread that was sending the kernel an
//! invalidation waits, uninterruptibly, for a directory lock that a blocked
//! caller holds (measured: a `rename` and a `create` in the mount, the
//! daemon's notifier thread in `fuse_reverse_inval_entry`, forever). Its
//! `/dev/fuse` descriptor then never closes, so the kernel never fails the
//! waiting requests. Aborting the FUSE connection (fusectl's `abort`) fails
//! them at once (ENOTCONN), which releases the lock and lets the daemon go.

use std::path::Path;

use anyhow::{Context, Result, bail};

const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// Is the daemon `pid` gone, or dying (a zombie, or SIGKILL pending)?
/// A dying daemon can still hold its control socket open, so it must not be
/// asked anything: nobody would answer.
pub fn daemon_gone(pid: i32) -> bool {
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name's closing parenthesis.
    let state = stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        let Some(mask) = l.strip_prefix("ShdPnd:").or_else(|| l.strip_prefix("SigPnd:")) else {
            return false;
        };
        u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    })
}

/// Does no process hold the daemon lock at `lock` (an flock, which the kernel
/// drops when its holder is gone, even if the pid was reused since)?
pub fn lock_free(lock: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(lock) else { return true };
    // Released again when `f` closes.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The FUSE connection number of the mount at `dir` (its device's minor
/// number), read from mountinfo: touching a dead mount itself could block.
fn connection(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        (f.nth(1)? == want).then(|| dev.split_once(':').map(|(_, minor)| minor.to_string()))?
    })
}

/// Fails every request waiting on the FUSE mount at `dir`. Mounts fusectl
/// first when it is not mounted (it needs root, as does clearing another
/// process's FUSE mount at all).
pub fn abort_connection(dir: &Path) -> Result<()> {
    let conn = connection(dir).with_context(|| format!("{} is not in mountinfo", dir.display()))?;
    let abort = Path::new(CONNECTIONS).join(&conn).join("abort");
    if !abort.exists() {
        let target = std::ffi::CString::new(CONNECTIONS)?;
        let fs = c"fusectl";
        let r = unsafe { libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if r != 0 && !abort.exists() {
            bail!(
                "cannot reach the FUSE connection ({}): mount -t fusectl none {CONNECTIONS}: {}",
                abort.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    std::fs::write(&abort, "1").with_context(|| format!("writing {}", abort.display()))
}

//! Shared harness for the mount tests: run `mountctl`, mount a fresh node in
//! temp folders, always unmount (a `Drop` guard), generate trees, compare trees.
//!
//! Every helper fails the test loudly: a test that cannot mount FAILS, it never
//! skips.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The built `mountctl` binary (cargo builds it for this package's tests).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mountctl"))
}

/// The workspace root (this package is `mountctl/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a finished command left behind.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Out {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.map(|s| s.success()).unwrap_or(false)
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    /// Panics with the full story unless the command exited 0.
    pub fn expect_ok(self) -> Out {
        if !self.ok() {
            panic!("command failed: {}", self.describe());
        }
        self
    }
    pub fn describe(&self) -> String {
        format!(
            "`{}`\n  status: {}\n  stdout: {}\n  stderr: {}",
            self.what,
            if self.timed_out {
                "TIMED OUT (killed)".to_string()
            } else {
                format!("{:?}", self.status)
            },
            snippet(&self.stdout),
            snippet(&self.stderr)
        )
    }
}

fn snippet(s: &str) -> String {
    const MAX: usize = 4000;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut cut = s.len() - MAX;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[...{} bytes cut...]{}", cut, &s[cut..])
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr sent to files (never pipes:
/// a daemon that `mountctl mount` leaves behind may inherit them and would keep
/// a pipe open forever). Kills it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
    let what = format!("{:?}", cmd);
    let logs = tempfile::tempdir().expect("tempdir for command output");
    let out_path = logs.path().join("stdout");
    let err_path = logs.path().join("stderr");
    let out_f = fs::File::create(&out_path).unwrap();
    let err_f = fs::File::create(&err_path).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out_f))
        .stderr(Stdio::from(err_f));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start {what}: {e}"),
    };
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Out {
        what,
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        timed_out,
    }
}

/// `mountctl --home HOME ARGS...` (with `LATTICE_HOME` removed from the
/// environment so that only `--home` counts).
pub fn mountctl(home: &Path, args: &[&OsStr], timeout: Duration) -> Out {
    mountctl_env(home, args, &[], timeout)
}

/// `mountctl` with extra environment (which a daemon it starts inherits).
pub fn mountctl_env(home: &Path, args: &[&OsStr], env: &[(&str, &str)], timeout: Duration) -> Out {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home).args(args).env_remove("LATTICE_HOME");
    // No relays and no public address lookup: this machine has no internet,
    // and peers dial each other on loopback. A test that wants them says so.
    cmd.env("LATTICE_RELAY", "off")
        .env("LATTICE_DNS", "off")
        .env("LATTICE_LAN", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, timeout)
}

/// Shorthand for string arguments.
pub fn mountctl_s(home: &Path, args: &[&str]) -> Out {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    mountctl(home, &args, MOUNT_TIMEOUT)
}

/// `bash -c SCRIPT` in `cwd` with `set -euo pipefail`, extra environment `env`.
pub fn bash(cwd: &Path, script: &str, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(cwd)
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, TOOL_TIMEOUT)
}

/// `bash` that must succeed; returns its stdout.
pub fn sh(cwd: &Path, script: &str) -> String {
    bash(cwd, script, &[]).expect_ok().stdout
}

pub fn sh_env(cwd: &Path, script: &str, env: &[(&str, &str)]) -> String {
    bash(cwd, script, env).expect_ok().stdout
}

pub const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "Lattice Test"),
    ("GIT_AUTHOR_EMAIL", "test@lattice.invalid"),
    ("GIT_COMMITTER_NAME", "Lattice Test"),
    ("GIT_COMMITTER_EMAIL", "test@lattice.invalid"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_TERMINAL_PROMPT", "0"),
];

/// A git script with a fixed identity and no user or system config.
pub fn git(cwd: &Path, script: &str) -> String {
    sh_env(cwd, script, GIT_ENV)
}

/// A refused command: non-zero exit, in time, one sentence on one line of
/// stderr, no panic, mentioning one of `words` (case-insensitive).
pub fn assert_refused(out: &Out, words: &[&str]) {
    assert!(!out.timed_out, "timed out: {}", out.describe());
    assert!(!out.ok(), "should have failed: {}", out.describe());
    let err = out.stderr.trim();
    assert!(!err.is_empty(), "no message on stderr: {}", out.describe());
    assert!(!err.contains("panicked"), "it panicked: {}", out.describe());
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one sentence on one line of stderr: {}",
        out.describe()
    );
    let lower = err.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(&w.to_lowercase())),
        "stderr should mention one of {words:?}: {}",
        out.describe()
    );
}

/// A small tmpfs of its own, unmounted when dropped.
pub struct Tmpfs(pub std::path::PathBuf, Option<tempfile::TempDir>);

impl Tmpfs {
    pub fn new(size: &str) -> Tmpfs {
        let (tmp, dir) = empty_dir("lattice-tmpfs-");
        sh(
            Path::new("/"),
            &format!("mount -t tmpfs -o size={size} lattice-test {}", q(&dir)),
        );
        Tmpfs(dir, Some(tmp))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        self.1.take();
    }
}

/// Single-quotes a path for a shell script.
pub fn q(p: &Path) -> String {
    let s = p.to_str().expect("test paths are UTF-8");
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

/// Unescapes the octal escapes (`\040`) of /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Mount points (field 5) of /proc/self/mountinfo.
pub fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f))))
        .collect()
}

/// Is `dir` (an absolute, canonical path) a mount point right now?
pub fn is_mountpoint(dir: &Path) -> bool {
    mount_points().iter().any(|m| m == dir)
}

/// The mountinfo line for `dir`, if mounted (for messages).
pub fn mountinfo_line(dir: &Path) -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .find(|l| {
            l.split(' ')
                .nth(4)
                .map(|f| Path::new(OsStr::from_bytes(&unescape_mountinfo(f))) == dir)
                .unwrap_or(false)
        })
        .map(|s| s.to_string())
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            !matches!(state, Some('Z') | Some('X') | None)
        }
    }
}

/// Waits until `pid` is gone (or a zombie); true if it went within `timeout`.
pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !pid_alive(pid)
}

pub fn kill(pid: u32, sig: i32) {
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// A fresh data folder (`--home`) in a temp dir, with `mountctl init` run.
pub struct Home {
    pub path: PathBuf,
    tmp: Option<TempDir>,
}

impl Home {
    /// A temp home where `init` has NOT been run.
    pub fn bare() -> Home {
        let tmp = tempfile::Builder::new().prefix("lattice-home-").tempdir().unwrap();
        let path = tmp.path().canonicalize().unwrap();
        Home { path, tmp: Some(tmp) }
    }

    /// A temp home with an identity (`mountctl init`, which must exit 0).
    pub fn new() -> Home {
        let h = Home::bare();
        let out = mountctl_s(&h.path, &["init"]);
        if !out.ok() {
            panic!("mountctl init failed: {}", out.describe());
        }
        h
    }
}

/// A fresh empty temp directory usable as a mount point (canonical path).
pub fn empty_dir(prefix: &str) -> (TempDir, PathBuf) {
    let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let p = tmp.path().canonicalize().unwrap();
    (tmp, p)
}

/// Parsed `mountctl status --json`.
pub fn status_json(home: &Path) -> serde_json::Value {
    let out = mountctl_s(home, &["status", "--json"]);
    if !out.ok() {
        panic!("mountctl status --json failed: {}", out.describe());
    }
    match serde_json::from_str(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("status --json printed invalid JSON ({e}):\n{}", out.stdout),
    }
}

/// The `mounts[]` element of `status --json` whose `dir` is `dir`.
pub fn status_mount(home: &Path, dir: &Path) -> Option<serde_json::Value> {
    let v = status_json(home);
    let mounts = v.get("mounts")?.as_array()?.clone();
    mounts.into_iter().find(|m| {
        m.get("dir")
            .and_then(|d| d.as_str())
            .map(|d| Path::new(d) == dir)
            .unwrap_or(false)
    })
}

/// A mounted node. Dropping it always unmounts: `mountctl unmount DIR`, then if
/// DIR is still a mount point `umount -l DIR`, and a daemon still alive after
/// that is killed. A test that panics never leaves a mount behind.
pub struct Mount {
    /// The mount point (absolute, canonical).
    pub dir: PathBuf,
    /// The node's data folder.
    pub home: PathBuf,
    /// The daemon's pid as `status --json` gave it after mounting.
    pid: Option<u32>,
    mounted: bool,
    /// Stops the watchdog when the guard is dropped.
    watchdog: Option<std::sync::mpsc::Sender<()>>,
    /// The pid the watchdog kills if the test runs too long (0: none).
    watch_pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    dir_tmp: Option<TempDir>,
    home_tmp: Option<Home>,
    /// Environment for the daemons this guard starts.
    pub env: Vec<(&'static str, &'static str)>,
    /// Mount with `--bind 127.0.0.1:0` (false: the default binding).
    pub loopback: bool,
}

/// How long one test may keep a mount before the watchdog kills its daemon
/// (so a hung file system call fails with ENOTCONN instead of hanging the
/// whole suite). `LATTICE_TEST_TIMEOUT_SECS` overrides the default 300.
pub fn test_deadline() -> Duration {
    let secs = std::env::var("LATTICE_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

fn start_watchdog(dir: PathBuf, pid: std::sync::Arc<std::sync::atomic::AtomicU32>) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let deadline = test_deadline();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
            let p = pid.load(std::sync::atomic::Ordering::SeqCst);
            eprintln!(
                "harness: WATCHDOG: the test kept {} for more than {:?}; killing its daemon (pid {p}) so blocked calls fail",
                dir.display(),
                deadline
            );
            if p != 0 {
                unsafe {
                    libc::kill(p as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    });
    tx
}

impl Mount {
    /// A new node (temp home, `init`) mounted on a new temp directory.
    /// Panics (test fails) if anything goes wrong.
    pub fn new() -> Mount {
        Mount::new_with(&["mount"])
    }

    /// A new node mounted by `mountctl ARGS... DIR --bind 127.0.0.1:0`
    /// (`["mount"]`, or `["join", TICKET]`).
    pub fn new_with(args: &[&str]) -> Mount {
        Mount::new_with_env(args, &[])
    }

    /// Like [`Mount::new_with`], with environment for the daemon.
    pub fn new_with_env(args: &[&str], env: &[(&'static str, &'static str)]) -> Mount {
        // Tests expect new files to be 0644 and dirs 0755.
        unsafe {
            libc::umask(0o022);
        }
        let home = Home::new();
        let (dir_tmp, dir) = empty_dir("lattice-mnt-");
        let watch_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut m = Mount {
            watchdog: Some(start_watchdog(dir.clone(), watch_pid.clone())),
            watch_pid,
            dir,
            home: home.path.clone(),
            pid: None,
            mounted: false,
            dir_tmp: Some(dir_tmp),
            home_tmp: Some(home),
            env: env.to_vec(),
            loopback: true,
        };
        m.mount_with(args);
        m
    }

    /// Like [`Mount::new_with_env`], with the default binding (all
    /// interfaces, the share's kept port) instead of a loopback port.
    pub fn new_default_bind(args: &[&str], env: &[(&'static str, &'static str)]) -> Mount {
        unsafe {
            libc::umask(0o022);
        }
        let home = Home::new();
        let (dir_tmp, dir) = empty_dir("lattice-mnt-");
        let watch_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut m = Mount {
            watchdog: Some(start_watchdog(dir.clone(), watch_pid.clone())),
            watch_pid,
            dir,
            home: home.path.clone(),
            pid: None,
            mounted: false,
            dir_tmp: Some(dir_tmp),
            home_tmp: Some(home),
            env: env.to_vec(),
            loopback: false,
        };
        m.mount_with(args);
        m
    }

    /// Mounts `home` (already initialised) on `dir` (an existing, empty,
    /// canonical path the caller owns). Panics if the mount fails.
    pub fn at(home: &Path, dir: &Path) -> Mount {
        let mut m = Mount::guard(home, dir);
        m.mount();
        m
    }

    /// A guard for `home` on `dir` that does not mount: dropping it unmounts
    /// `dir` if something (a command that should have failed) mounted it.
    pub fn guard(home: &Path, dir: &Path) -> Mount {
        let watch_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        Mount {
            watchdog: Some(start_watchdog(dir.to_path_buf(), watch_pid.clone())),
            watch_pid,
            dir: dir.to_path_buf(),
            home: home.to_path_buf(),
            pid: None,
            mounted: false,
            dir_tmp: None,
            home_tmp: None,
            env: Vec::new(),
            loopback: true,
        }
    }

    /// `mountctl mount DIR`; must exit 0 and leave DIR in /proc/self/mountinfo.
    pub fn mount(&mut self) {
        self.mount_with(&["mount"]);
    }

    /// `mountctl ARGS... DIR --bind 127.0.0.1:0`: peers stay on loopback
    /// (unless the mount was made with the default binding).
    pub fn mount_with(&mut self, args: &[&str]) {
        let mut argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        argv.push(self.dir.as_os_str());
        if self.loopback {
            argv.extend([OsStr::new("--bind"), OsStr::new("127.0.0.1:0")]);
        }
        let out = mountctl_env(&self.home, &argv, &self.env, MOUNT_TIMEOUT);
        // Even a failed/timed-out attempt may have mounted: let Drop clean up.
        self.mounted = true;
        if !out.ok() {
            panic!("cannot mount {}: {}", self.dir.display(), out.describe());
        }
        if !is_mountpoint(&self.dir) {
            panic!(
                "`mountctl mount {}` exited 0 but the directory is not in /proc/self/mountinfo\n{}",
                self.dir.display(),
                out.describe()
            );
        }
        // Remember the daemon so Drop can make sure it is gone; status may not
        // be reliable in every test, so this is best effort here.
        self.pid = self.try_status_pid();
        self.watch_pid
            .store(self.pid.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    fn try_status_pid(&self) -> Option<u32> {
        let out = mountctl_s(&self.home, &["status", "--json"]);
        if !out.ok() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        v.get("mounts")?
            .as_array()?
            .iter()
            .find(|m| {
                m.get("dir")
                    .and_then(|d| d.as_str())
                    .map(|d| Path::new(d) == self.dir)
                    .unwrap_or(false)
            })?
            .get("pid")?
            .as_u64()
            .map(|p| p as u32)
    }

    /// The daemon's pid, from `status --json` (panics if absent).
    pub fn daemon_pid(&self) -> u32 {
        let m = status_mount(&self.home, &self.dir).unwrap_or_else(|| {
            panic!(
                "status --json does not list {}:\n{}",
                self.dir.display(),
                status_json(&self.home)
            )
        });
        let pid = m
            .get("pid")
            .and_then(|p| p.as_u64())
            .unwrap_or_else(|| panic!("no pid in {m}"));
        pid as u32
    }

    /// `mountctl unmount DIR`; must exit 0, DIR must no longer be a mount
    /// point, and the daemon must exit.
    pub fn unmount(&mut self) {
        let pid = self.pid;
        let out = mountctl(
            &self.home,
            &[OsStr::new("unmount"), self.dir.as_os_str()],
            MOUNT_TIMEOUT,
        );
        if !out.ok() {
            panic!(
                "cannot unmount {}: {}\n{}",
                self.dir.display(),
                out.describe(),
                log_tails(&self.home)
            );
        }
        if is_mountpoint(&self.dir) {
            panic!(
                "`mountctl unmount` exited 0 but {} is still mounted: {:?}",
                self.dir.display(),
                mountinfo_line(&self.dir)
            );
        }
        self.mounted = false;
        if let Some(pid) = pid {
            assert!(
                wait_pid_gone(pid, Duration::from_secs(20)),
                "daemon {pid} still running 20 s after `mountctl unmount` returned"
            );
        }
        self.pid = None;
        self.watch_pid.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Unmount, then mount again on the same directory.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Kills the daemon with SIGKILL and clears its dead mount (as a user
    /// would: `mountctl unmount DIR`), ready for [`Mount::mount`].
    pub fn kill_daemon(&mut self) {
        let pid = self.daemon_pid();
        kill(pid, libc::SIGKILL);
        assert!(
            wait_pid_gone(pid, Duration::from_secs(20)),
            "daemon {pid} survived SIGKILL"
        );
        let out = mountctl(
            &self.home,
            &[OsStr::new("unmount"), self.dir.as_os_str()],
            MOUNT_TIMEOUT,
        );
        assert!(out.ok(), "clearing the dead mount: {}", out.describe());
        self.mark_unmounted();
    }

    /// For tests that took the mount down themselves (SIGTERM): forget it.
    pub fn mark_unmounted(&mut self) {
        self.mounted = false;
        self.pid = None;
        self.watch_pid.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the pid Drop should make sure is gone (after a re-mount by hand).
    pub fn set_pid(&mut self, pid: Option<u32>) {
        self.pid = pid;
        self.watch_pid
            .store(pid.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    /// A path inside the mount.
    pub fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Never panic here: this runs while a failing test unwinds.
        self.watchdog.take();
        if self.mounted || is_mountpoint(&self.dir) {
            let out = mountctl(
                &self.home,
                &[OsStr::new("unmount"), self.dir.as_os_str()],
                Duration::from_secs(30),
            );
            if is_mountpoint(&self.dir) {
                eprintln!(
                    "harness: `mountctl unmount {}` did not unmount ({}); using umount -l",
                    self.dir.display(),
                    out.describe()
                );
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if let Some(pid) = self.pid
                && !wait_pid_gone(pid, Duration::from_secs(10))
            {
                eprintln!("harness: daemon {pid} still alive after unmount; killing it");
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                wait_pid_gone(pid, Duration::from_secs(5));
            }
        }
        if is_mountpoint(&self.dir) {
            // Do not let TempDir recurse into a live or broken mount.
            eprintln!(
                "harness: {} is STILL mounted; leaving its temp dirs in place",
                self.dir.display()
            );
            if let Some(t) = self.dir_tmp.take() {
                let _ = t.keep();
            }
            if let Some(mut h) = self.home_tmp.take()
                && let Some(t) = h.tmp.take()
            {
                let _ = t.keep();
            }
        }
    }
}

mod faults;
mod peers;

/// Random bytes that do not compress or repeat (each 64 KiB is its own
/// chunk), the same for the same seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
mod tree;
#[allow(unused_imports)]
pub use faults::*;
pub use peers::*;
pub use tree::*;

/// The last lines of every daemon log under `home`, for a failure message.
pub fn log_tails(home: &Path) -> String {
    let mut out = String::new();
    let Ok(shares) = std::fs::read_dir(home.join("shares")) else {
        return out;
    };
    for share in shares.flatten() {
        let log = share.path().join("daemon.log");
        if let Ok(text) = std::fs::read_to_string(&log) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out += &format!("--- last lines of {}:\n{}\n", log.display(), tail.join("\n"));
        }
    }
    out
}

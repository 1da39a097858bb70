//! Space: the retention policy (`mountctl config`), collection of what no
//! kept version needs (`mountctl gc`, and by itself when the disk runs
//! short), and the figures `status` shows.
//!
//! The policy is this node's own (kept in `HOME/shares/NAME/config.json`),
//! like Syncthing's file versioning: each machine decides how much history
//! it pays for. Entries (the signed history of who changed what) are always
//! kept; what goes is the content of versions the policy no longer keeps.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::home::Home;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Keep every version this long, then only the latest of each file.
pub const DEFAULT_KEEP_MS: u64 = 30 * DAY_MS;
/// Below this much free space (or 5% of the disk, if less) the daemon
/// collects by itself.
const DEFAULT_GC_BELOW: u64 = 1 << 30;

/// A share's policy, as `config.json` holds it (absent keys: the defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `None`: every version for ever.
    pub keep_history_ms: Option<u64>,
    /// Free bytes below which collection runs by itself; `None`: the default.
    pub gc_below: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_history_ms: Some(DEFAULT_KEEP_MS),
            gc_below: None,
        }
    }
}

pub fn config_file(share_dir: &Path) -> PathBuf {
    share_dir.join("config.json")
}

pub fn load(share_dir: &Path) -> Result<Policy> {
    let path = config_file(share_dir);
    let raw = match std::fs::read_to_string(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let v: Value = serde_json::from_str(&raw).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut p = Policy::default();
    if let Some(k) = v.get("keep-history").and_then(Value::as_str) {
        p.keep_history_ms = parse_keep(k).map_err(|e| anyhow!("{}: keep-history: {e}", path.display()))?;
    }
    if let Some(b) = v.get("gc-below").and_then(Value::as_str) {
        p.gc_below = Some(parse_bytes(b).map_err(|e| anyhow!("{}: gc-below: {e}", path.display()))?);
    }
    Ok(p)
}

/// `forever`, `0`, or a number with s, m, h or d.
pub fn parse_keep(s: &str) -> Result<Option<u64>, String> {
    if s == "forever" {
        return Ok(None);
    }
    if s == "0" {
        return Ok(Some(0));
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected forever, 0, or a number with s, m, h or d (30d)"))?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => {
            return Err(format!(
                "{s:?}: expected forever, 0, or a number with s, m, h or d (30d)"
            ));
        }
    };
    Ok(Some(n.saturating_mul(ms)))
}

/// A byte count: 512M, 2G, 100000 (K, M, G are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: expected a size like 512M or 2G");
    let (n, mul) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().map(|n| n.saturating_mul(mul)).map_err(|_| bad())
}

fn show_keep(k: Option<u64>) -> String {
    match k {
        None => "forever".into(),
        Some(0) => "0".into(),
        Some(ms) if ms % DAY_MS == 0 => format!("{}d", ms / DAY_MS),
        Some(ms) if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        Some(ms) => format!("{}s", ms / 1000),
    }
}

pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// `mountctl config [KEY [VALUE]]`: prints the policy, one key, or sets one.
pub fn config(home: &Home, share: &str, key: Option<&str>, value: Option<&str>) -> Result<()> {
    let sd = home.share(share);
    if !sd.dir.exists() {
        bail!("this home has no share {share:?}");
    }
    let p = load(&sd.dir)?;
    let shown = |k: &str| -> Result<String> {
        Ok(match k {
            "keep-history" => show_keep(p.keep_history_ms),
            "gc-below" => p
                .gc_below
                .map_or("default (1G, or 5% of the disk if less)".into(), |b| b.to_string()),
            _ => bail!("no setting {k:?}: the settings are keep-history and gc-below"),
        })
    };
    match (key, value) {
        (None, _) => {
            for k in ["keep-history", "gc-below"] {
                println!("{k} = {}", shown(k)?);
            }
        }
        (Some(k), None) => println!("{}", shown(k)?),
        (Some(k), Some(v)) => {
            match k {
                "keep-history" => drop(parse_keep(v).map_err(|e| anyhow!(e))?),
                "gc-below" => drop(parse_bytes(v).map_err(|e| anyhow!(e))?),
                _ => bail!("no setting {k:?}: the settings are keep-history and gc-below"),
            }
            let path = config_file(&sd.dir);
            let mut all: Value = match std::fs::read_to_string(&path) {
                Ok(raw) => serde_json::from_str(&raw).unwrap_or_else(|_| json!({})),
                Err(_) => json!({}),
            };
            all[k] = json!(v);
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, format!("{all:#}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
            println!("{k} = {v} (the next collection uses it; a mounted share needs no restart)");
        }
    }
    Ok(())
}

/// `mountctl gc [--dry-run] [--keep D] [--json]`.
pub fn gc(home: &Home, share: &str, dry_run: bool, keep: Option<&str>, as_json: bool) -> Result<()> {
    let keep = match keep {
        Some(k) => {
            parse_keep(k).map_err(|e| anyhow!(e))?;
            k
        }
        None => "policy",
    };
    let v = crate::ask(
        home,
        share,
        &format!("gc {keep} {}", if dry_run { "dry" } else { "run" }),
    )?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "keeping every version for {}, then the latest of each file",
        v["keep_history"].as_str().unwrap_or("?")
    );
    if dry_run {
        println!(
            "would free {} ({} chunks); the store is {}, of which old versions take {}",
            mib(n("free_bytes")),
            n("free_chunks"),
            mib(n("file_bytes")),
            mib(n("history_bytes"))
        );
    } else {
        println!(
            "freed {} ({} chunks); the store went from {} to {}",
            mib(n("bytes")),
            n("chunks"),
            mib(n("file_before")),
            mib(n("file_after"))
        );
    }
    Ok(())
}

/// The daemon's side of space: the last report, and the disk watch.
#[derive(Default)]
pub struct Watch {
    last: Mutex<Option<Value>>,
    /// The log end the last report saw (no new entries, no new scan), and when.
    seen: Mutex<Option<(u64, std::time::Instant)>>,
    short: Mutex<bool>,
    /// The log end and time of the last short-disk collection that freed nothing.
    fruitless: Mutex<Option<(u64, std::time::Instant)>>,
}

/// A report is made again at most this often (it reads the whole log).
const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Watch {
    /// The last report, for `status`.
    pub fn report(&self) -> Value {
        self.last.lock().unwrap().clone().unwrap_or(Value::Null)
    }
}

/// The report for `status`: the last one, or a first one made now.
pub fn report(d: &Daemon) -> Value {
    let v = d.space.report();
    if !v.is_null() {
        return v;
    }
    let policy = load(d.share_dir()).unwrap_or_default();
    match refresh(d, &policy) {
        Ok(()) => d.space.report(),
        Err(e) => json!({ "error": format!("{e:#}") }),
    }
}

fn keep_of(p: &Policy, asked: &str) -> Result<Option<u64>, String> {
    match asked {
        "policy" => Ok(p.keep_history_ms),
        k => parse_keep(k),
    }
}

/// Runs in the daemon (blocking): `gc KEEP dry|run`.
pub fn run(d: &Daemon, keep: &str, dry: bool) -> Result<Value> {
    let policy = load(d.share_dir())?;
    let window = keep_of(&policy, keep).map_err(|e| anyhow!(e))?;
    let v = if dry {
        let s = space(d, window)?;
        if keep == "policy" {
            // What `status` shows is the policy's figure, not a what-if.
            *d.space.last.lock().unwrap() = Some(s.clone());
        }
        s
    } else {
        let c = collect(d, window)?;
        refresh(d, &policy)?;
        c
    };
    Ok(v)
}

fn keep_at(window: Option<u64>) -> store::Keep {
    store::Keep {
        window_ms: window,
        now_ms: store::hlc::wall_ms(),
    }
}

fn space(d: &Daemon, window: Option<u64>) -> Result<Value> {
    let retired = fs::space::retired(d.store.as_ref())?;
    let s = d.store.space(keep_at(window), &|k| retired.get(k).copied())?;
    Ok(json!({
        "keep_history": show_keep(window),
        "file_bytes": s.file_bytes, "chunks": s.chunks, "chunk_bytes": s.chunk_bytes,
        "history_bytes": s.history_bytes, "free_chunks": s.free_chunks, "free_bytes": s.free_bytes,
        "collected_chunks": s.collected, "at_ms": store::hlc::wall_ms(),
    }))
}

fn collect(d: &Daemon, window: Option<u64>) -> Result<Value> {
    let retired = fs::space::retired(d.store.as_ref())?;
    let c = d
        .store
        .collect_garbage(keep_at(window), &|k| retired.get(k).copied(), &d.fs.needed_unwritten())?;
    Ok(json!({
        "keep_history": show_keep(window),
        "chunks": c.chunks, "bytes": c.bytes, "file_before": c.file_before, "file_after": c.file_after,
    }))
}

fn refresh(d: &Daemon, p: &Policy) -> Result<()> {
    let s = space(d, p.keep_history_ms)?;
    *d.space.last.lock().unwrap() = Some(s);
    *d.space.seen.lock().unwrap() = Some((*d.store.watch_durable().borrow(), std::time::Instant::now()));
    Ok(())
}

/// Free bytes on the file system holding `dir`, and its size.
fn disk(dir: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| {
        (
            s.f_bavail as u64 * s.f_frsize as u64,
            s.f_blocks as u64 * s.f_frsize as u64,
        )
    })
}

/// How often the daemon looks at the disk (`LATTICE_TEST_SPACE_TICK_MS` for
/// tests): a `statvfs`, cheap; the report is made again far less often.
pub fn tick_every() -> Duration {
    std::env::var("LATTICE_TEST_SPACE_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// Runs in the daemon (blocking), every [`tick_every`]: refreshes the report
/// when the log moved (at most every minute), and collects when the disk is
/// short: first under the
/// policy, then, if still short, every old version (the latest of each
/// file stays). Said once per episode in the log, not at every tick.
pub fn tick(d: &Daemon) {
    let policy = match load(d.share_dir()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("{e:#}; using the default retention policy");
            Policy::default()
        }
    };
    let end = *d.store.watch_durable().borrow();
    let stale = match *d.space.seen.lock().unwrap() {
        None => true,
        Some((seen, at)) => seen != end && at.elapsed() >= REPORT_EVERY,
    };
    if stale && let Err(e) = refresh(d, &policy) {
        tracing::debug!("cannot compute the space report: {e:#}");
    }
    let Some((free, size)) = disk(d.share_dir()) else {
        return;
    };
    let below = policy.gc_below.unwrap_or(DEFAULT_GC_BELOW.min(size / 20));
    let short = free < below;
    let was = std::mem::replace(&mut *d.space.short.lock().unwrap(), short);
    if !short {
        if was {
            tracing::info!(free, "the disk has room again");
        }
        return;
    }
    // A collection that freed nothing is not run again until the log moves
    // or ten minutes pass: the disk stays short, the store does not change.
    if let Some((at_end, at)) = *d.space.fruitless.lock().unwrap()
        && at_end == end
        && at.elapsed() < Duration::from_secs(600)
    {
        return;
    }
    if !was {
        tracing::warn!(
            free,
            below,
            "the disk is short of space: collecting old versions (first those the retention policy lets go, then, if still short, every version but the latest)"
        );
    }
    let mut freed = 0;
    for window in [policy.keep_history_ms, Some(0)] {
        match collect(d, window) {
            Ok(v) => freed += v["bytes"].as_u64().unwrap_or(0),
            Err(e) => {
                if !was {
                    tracing::error!("cannot collect: {e:#}");
                }
                return;
            }
        }
        if disk(d.share_dir()).is_some_and(|(f, _)| f >= below) || window == Some(0) {
            break;
        }
    }
    if freed > 0 {
        tracing::warn!(freed, "collected old versions because the disk was short");
        let _ = refresh(d, &policy);
        *d.space.fruitless.lock().unwrap() = None;
    } else {
        *d.space.fruitless.lock().unwrap() = Some((end, std::time::Instant::now()));
    }
}

impl Daemon {
    pub fn share_dir(&self) -> &Path {
        self.store_file.parent().unwrap_or(Path::new("."))
    }
}

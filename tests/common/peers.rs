//! Several nodes of one share: invite and join, wait until they hold the same
//! entries and show the same tree, cut a node off the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

pub const CONVERGE: Duration = Duration::from_secs(30);

pub fn ctl(m: &Mount, args: &[&str]) -> Out {
    mountctl_s(&m.home, args)
}

pub fn invite(owner: &Mount, extra: &[&str]) -> String {
    let mut args = vec!["invite"];
    args.extend(extra);
    let out = ctl(owner, &args);
    assert!(out.ok(), "invite failed: {}", out.describe());
    out.stdout.trim().to_string()
}

pub fn join(owner: &Mount) -> Mount {
    let t = invite(owner, &[]);
    Mount::new_with(&["join", &t])
}

/// Paths, kinds, modes, sizes, contents, link targets and file mtimes.
pub fn snapshot(m: &Mount) -> BTreeMap<PathBuf, Info> {
    manifest(
        &m.dir,
        Opts {
            file_mtime: true,
            dir_mtime: false,
            ino: false,
        },
    )
}

pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < CONVERGE, "not within {CONVERGE:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A snapshot taken while changes arrive may see a name vanish between
/// readdir and lstat: that is "not converged yet", not a failure.
pub fn try_snapshot(m: &Mount) -> Option<BTreeMap<PathBuf, Info>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| snapshot(m))).ok()
}

/// What each author's chain holds on `m` (`status --json`), when the daemon answers.
pub fn frontier(m: &Mount) -> Option<serde_json::Value> {
    let out = ctl(m, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    Some(v["mounts"][0]["frontier"].clone()).filter(|f| f.is_object())
}

/// The frontier, once every change made on `m` is in its store (`None`
/// while some wait in the group-commit window): equal settled frontiers mean
/// the same entries, every closed file included.
pub fn settled_frontier(m: &Mount) -> Option<serde_json::Value> {
    let out = ctl(m, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let m = &v["mounts"][0];
    (m["unwritten"].as_u64() == Some(0))
        .then(|| m["frontier"].clone())
        .filter(|f| f.is_object())
}

/// Every mount holds the same entries and shows the same tree; returns it.
///
/// Equal snapshots alone prove nothing: a snapshot is not atomic, and one
/// taken on B while A's entry is being applied there (B's `same.txt` listed,
/// then A's read through the same name) can agree with A's and C's before
/// either has seen B's entry. So the stores must hold the same entries
/// before and after the snapshots, and the agreement must hold twice.
pub fn converged(ms: &[&Mount]) -> BTreeMap<PathBuf, Info> {
    let t = Instant::now();
    let mut agreed = None;
    // Why rounds failed, for the message when they never stop failing.
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let same_entries = || {
            let f: Vec<_> = ms.iter().map(|m| settled_frontier(m)).collect();
            Some(f[0].clone()?).filter(|first| f.iter().all(|x| x.as_ref() == Some(first)))
        };
        let mut tree = None;
        let mut failed = |w: String| *why.entry(w).or_default() += 1;
        match same_entries() {
            None => {
                let f: Vec<_> = ms.iter().map(|m| settled_frontier(m)).collect();
                let odd: Vec<_> = f
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.is_none() || *x != &f[0])
                    .map(|(i, x)| {
                        if x.is_none() {
                            format!("{i}: no status")
                        } else {
                            format!("{i}: {}", x.as_ref().unwrap())
                        }
                    })
                    .collect();
                failed(format!("entries differ (then: {})", odd.join("; ")))
            }
            Some(before) => match try_snapshot(ms[0]) {
                None => failed(format!("snapshot of {} failed", ms[0].dir.display())),
                Some(first) => {
                    if let Some(m) = ms[1..].iter().find(|m| try_snapshot(m).as_ref() != Some(&first)) {
                        failed(format!("{} shows another tree (or none)", m.dir.display()));
                    } else if same_entries() != Some(before) {
                        failed("entries changed during the snapshots".into());
                    } else {
                        tree = Some(first);
                    }
                }
            },
        }
        match (tree, agreed.take()) {
            (Some(now), Some(last)) if now == last => {
                if t.elapsed() > Duration::from_secs(10) {
                    eprintln!("converged after {:?}; rounds failed because {why:?}", t.elapsed());
                }
                return now;
            }
            (Some(now), Some(_)) => {
                why.entry("the tree changed between rounds".into())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                agreed = Some(now);
            }
            (now, _) => agreed = now,
        }
        if t.elapsed() > CONVERGE {
            let f: Vec<_> = ms.iter().map(|m| frontier(m)).collect();
            let first = snapshot(ms[0]);
            for m in &ms[1..] {
                assert_same("mounts did not converge", &first, &snapshot(m));
            }
            assert!(
                t.elapsed() < CONVERGE * 2,
                "the mounts kept changing for {:?}; rounds failed because {why:?}; frontiers {f:?}",
                CONVERGE * 2
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn net(m: &Mount, state: &str) {
    let out = ctl(m, &["net", state]);
    assert!(out.ok(), "net {state}: {}", out.describe());
}

/// `mountctl check DIR` must find no difference between the mount and its store.
pub fn check(m: &Mount) {
    let out = mountctl(&m.home, &[OsStr::new("check"), m.dir.as_os_str()], TOOL_TIMEOUT);
    assert!(out.ok(), "mountctl check {}: {}", m.dir.display(), out.describe());
}

/// Waits until every mount's store holds the same entries.
pub fn same_entries(ms: &[&Mount]) {
    eventually("the same entries everywhere", || {
        let f: Vec<_> = ms.iter().map(|m| settled_frontier(m)).collect();
        f[0].is_some() && f.iter().all(|x| *x == f[0])
    });
}

//! Nodes with the daemons' test-only fault layer on (`LATTICE_TEST_FAULTS=1`):
//! cut and heal traffic between them, and a ledger of writes that must
//! survive whatever the network did.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::*;

pub const FAULTS: (&str, &str) = ("LATTICE_TEST_FAULTS", "1");

/// A new share with fault injection on (and `args` for `mount`).
pub fn node(args: &[&str]) -> Mount {
    let mut argv = vec!["mount"];
    argv.extend(args);
    Mount::new_with_env(&argv, &[FAULTS])
}

/// A new member of `owner`'s share, with fault injection on.
pub fn member(owner: &Mount, args: &[&str]) -> Mount {
    let t = invite(owner, &[]);
    let mut argv = vec!["join", t.as_str()];
    argv.extend(args);
    Mount::new_with_env(&argv, &[FAULTS])
}

pub fn id(m: &Mount) -> String {
    status_mount(&m.home, &m.dir).unwrap()["author"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn ctl_ok(m: &Mount, args: &[&str]) {
    let out = ctl(m, args);
    assert!(out.ok(), "mountctl {args:?}: {}", out.describe());
}

/// Cuts (or heals) all traffic between every node of `left` and every node of `right`.
pub fn split(left: &[&Mount], right: &[&Mount], cut: bool) {
    let verb = if cut { "cut" } else { "heal" };
    for l in left {
        for r in right {
            ctl_ok(l, &["net", verb, &id(r)]);
            ctl_ok(r, &["net", verb, &id(l)]);
        }
    }
}

/// What each node's peers say they received from `peer`, in bytes.
pub fn received_from(m: &Mount, peer: &str) -> u64 {
    let out = ctl(m, &["peers", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == peer)
        .map_or(0, |p| p["bytes_received"].as_u64().unwrap_or(0))
}

/// Writes that must survive: each (path, bytes) is found at the path or in
/// one of its conflict copies.
#[derive(Default)]
pub struct Ledger(pub Vec<(String, Vec<u8>)>);

impl Ledger {
    pub fn write(&mut self, m: &Mount, path: &str, data: &[u8]) {
        if let Some(parent) = Path::new(path).parent() {
            fs::create_dir_all(m.p(parent.to_str().unwrap())).unwrap();
        }
        write(&m.p(path), data);
        self.0.retain(|(p, _)| p != path);
        self.0.push((path.to_string(), data.to_vec()));
    }

    /// Like `write`, for a write another write at the same path may race:
    /// both must survive.
    pub fn write_concurrent(&mut self, m: &Mount, path: &str, data: &[u8]) {
        write(&m.p(path), data);
        self.0.push((path.to_string(), data.to_vec()));
    }

    pub fn forget(&mut self, path: &str) {
        self.0.retain(|(p, _)| p != path && !p.starts_with(&format!("{path}/")));
    }

    pub fn nothing_lost(&self, m: &Mount) {
        for (path, data) in &self.0 {
            let versions = versions_at(m, path);
            assert!(
                versions.contains(data),
                "{path} on {}: the write {:?} is lost; shown: {:?}",
                m.dir.display(),
                String::from_utf8_lossy(&data[..data.len().min(40)]),
                versions
                    .iter()
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned())
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// The contents shown at `path` and in its conflict copies.
pub fn versions_at(m: &Mount, path: &str) -> BTreeSet<Vec<u8>> {
    let p = Path::new(path);
    let dir = m.dir.join(p.parent().unwrap_or(Path::new("")));
    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = BTreeSet::new();
    for n in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = n.file_name().to_string_lossy().into_owned();
        if (n == name || n.starts_with(&format!("{stem}.conflict-")))
            && let Ok(data) = fs::read(dir.join(&n))
        {
            out.insert(data);
        }
    }
    out
}

//! `mountctl debug-bundle`: what a bug report needs, in one archive: the
//! status and peers of every share of this home (as the daemons answer, or
//! why they cannot), the last lines of each daemon log, and the size of every
//! file in the data folder. Never a file's content, the node's secret key, a
//! ticket or a join in progress (both carry an invite secret).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::home::Home;

/// Lines of each daemon log that go in.
const LOG_LINES: usize = 2000;

/// Writes the bundle to `out` (a .tar.gz); returns its path.
pub fn write(home: &Home, out: Option<PathBuf>) -> Result<PathBuf> {
    let stamp = store::hlc::wall_ms() / 1000;
    let name = format!("lattice-debug-{stamp}");
    let out = match out {
        Some(p) => p,
        None => std::env::current_dir()?.join(format!("{name}.tar.gz")),
    };
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    let root = tmp.path().join(&name);
    std::fs::create_dir(&root)?;

    let mut about = String::new();
    let _ = writeln!(about, "mountctl {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(about, "home {}", home.dir.display());
    for (what, cmd) in [("kernel", "uname -a"), ("fuse", "fusermount3 --version")] {
        let got = Command::new("sh").arg("-c").arg(cmd).output();
        let text = got.map_or_else(
            |e| e.to_string(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        );
        let _ = writeln!(about, "{what}: {text}");
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    let _ = writeln!(
        about,
        "user_allow_other in /etc/fuse.conf: {}",
        conf.lines().any(|l| l.trim() == "user_allow_other")
    );
    std::fs::write(root.join("about.txt"), about)?;
    std::fs::write(root.join("files.txt"), sizes(&home.dir))?;

    for sd in home.shares() {
        let dir = root.join(format!("share-{}", sd.name));
        std::fs::create_dir(&dir)?;
        for (file, req) in [("status.json", "status"), ("peers.json", "peers")] {
            let v = crate::ask(home, &sd.name, req)
                .map_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()), |v| format!("{v:#}"));
            std::fs::write(dir.join(file), v)?;
        }
        let log = std::fs::read_to_string(sd.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
        std::fs::write(dir.join("daemon.log"), tail)?;
    }

    let status = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(tmp.path())
        .arg(&name)
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar could not write {}", out.display());
    }
    Ok(out)
}

/// Every file under `dir` with its size (names and sizes only).
fn sizes(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => {
                    let _ = writeln!(out, "{:>14}  {}", m.len(), p.strip_prefix(dir).unwrap_or(&p).display());
                }
                Err(_) => {}
            }
        }
    }
    out
}

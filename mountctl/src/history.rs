//! `mountctl log` and `mountctl restore`: which mount a path is in, the
//! question to its daemon, and the answer printed for a person or as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use crate::home::{self, Home};
use crate::show::ago;

/// The share whose mount holds `path`, and `path` inside it (`/a/b`).
fn locate(home: &Home, path: &Path) -> Result<(String, PathBuf, String)> {
    let abs = home::absolute(path)?;
    for s in home.shares() {
        let Some(mnt) = s.mountpoint() else { continue };
        if let Ok(rel) = abs.strip_prefix(&mnt) {
            let rel = format!("/{}", rel.to_string_lossy());
            return Ok((s.name, mnt, rel));
        }
    }
    Err(anyhow!(
        "{} is not inside a mount of {}",
        abs.display(),
        home.dir.display()
    ))
}

fn hexed(rel: &str) -> String {
    hex::encode(rel.as_bytes())
}

/// `mountctl log PATH [--json]`, or with `deleted`, the files deleted from the folder PATH.
pub fn log(home: &Home, path: &Path, deleted: bool, json: bool) -> Result<()> {
    let (share, mnt, rel) = locate(home, path)?;
    let verb = if deleted { "deleted" } else { "log" };
    let v = crate::ask(home, &share, &format!("{verb} {}", hexed(&rel)))?;
    if json {
        println!("{v}");
        return Ok(());
    }
    if deleted {
        let list = v["deleted"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!(
                "nothing deleted from {}",
                mnt.join(rel.trim_start_matches('/')).display()
            );
        }
        for x in list {
            println!(
                "{}\tdeleted {}\t{} versions",
                mnt.join(x["path"].as_str().unwrap_or("?").trim_start_matches('/'))
                    .display(),
                ago(x["deleted_ms"].as_u64().unwrap_or(0)),
                x["versions"].as_u64().unwrap_or(0)
            );
        }
        return Ok(());
    }
    println!("VERSION   WHEN            AUTHOR    SIZE");
    for x in v["versions"].as_array().into_iter().flatten() {
        let mut notes = Vec::new();
        if x["current"].as_bool() == Some(true) {
            notes.push("shown now");
        }
        if x["conflict"].as_bool() == Some(true) {
            notes.push("conflict copy");
        }
        let size = if x["what"] == "deleted" {
            "deleted".to_string()
        } else {
            x["size"].as_u64().unwrap_or(0).to_string()
        };
        println!(
            "{:<8}  {:<14}  {:<8}  {size}{}",
            x["entry"].as_str().unwrap_or("?").get(..8).unwrap_or("?"),
            ago(x["at_ms"].as_u64().unwrap_or(0)),
            x["author_short"].as_str().unwrap_or("?"),
            if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            }
        );
    }
    Ok(())
}

/// `mountctl dag [PATH] [--last N] --dot`.
pub fn dag(home: &Home, path: Option<&Path>, last: usize, share: String) -> Result<()> {
    let (share, arg) = match path {
        Some(p) => {
            let (share, _, rel) = locate(home, p)?;
            (share, hexed(&rel))
        }
        None => (share, "-".to_string()),
    };
    let v = crate::ask(home, &share, &format!("dag {arg} {}", last.max(1)))?;
    print!("{}", v["dot"].as_str().unwrap_or(""));
    Ok(())
}

/// `mountctl restore PATH VERSION [--to NEW_PATH]`.
pub fn restore(home: &Home, path: &Path, version: &str, to: Option<&Path>) -> Result<()> {
    if version.len() < 4 || !version.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("a version is the start of an id that `mountctl log` prints (at least 4 hex digits), not {version:?}");
    }
    let (share, mnt, rel) = locate(home, path)?;
    let mut req = format!("restore {} {version}", hexed(&rel));
    if let Some(to) = to {
        let (to_share, _, to_rel) = locate(home, to)?;
        if to_share != share {
            bail!("--to must be in the same share as {}", path.display());
        }
        req.push(' ');
        req.push_str(&hexed(&to_rel));
    }
    let v = crate::ask(home, &share, &req)?;
    let written = v["restored"].as_str().unwrap_or("?");
    println!("restored {}", mnt.join(written.trim_start_matches('/')).display());
    Ok(())
}

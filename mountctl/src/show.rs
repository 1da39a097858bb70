//! What `status` and `peers` print for a person: human times and sizes, one
//! line per peer.

use std::time::Duration;

use anyhow::Result;

use crate::control;
use crate::home::Home;

/// "3 s ago", "5 min ago", "2 h ago", "4 days ago".
pub fn ago(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1048576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1048576..1073741824 => format!("{:.1} MiB", b as f64 / 1048576.0),
        _ => format!("{:.2} GiB", b as f64 / 1073741824.0),
    }
}

/// One line per peer, for `peers` and `status`.
pub fn peer_line(p: &serde_json::Value) -> String {
    let skew = p["skew_ms"].as_i64().unwrap_or(0);
    let mut line = format!(
        "{}  {:<6}  {:<7}  last sync {}  pending {}  behind {}  sent {}  received {}",
        &p["id"].as_str().unwrap_or("?"),
        p["role"].as_str().unwrap_or("?"),
        if p["online"].as_bool() == Some(true) {
            "online"
        } else {
            "offline"
        },
        p["last_sync_ms"].as_u64().map_or("never".to_string(), ago),
        p["pending"],
        p["behind"],
        human_bytes(p["bytes_sent"].as_u64().unwrap_or(0)),
        human_bytes(p["bytes_received"].as_u64().unwrap_or(0)),
    );
    if p["clock_refused"].as_bool() == Some(true) {
        line += &format!(
            "  CLOCK {} s {}",
            skew.abs() / 1000,
            if skew > 0 { "ahead" } else { "behind" }
        );
    }
    line
}

pub fn status(home: &Home, json: bool) -> Result<()> {
    let mut mounts = Vec::new();
    for s in home.shares() {
        if let Ok(v) = control::request(&s.socket(), "status", Duration::from_secs(5)) {
            mounts.push(v);
        }
    }
    if json {
        println!("{}", serde_json::json!({ "home": home.dir, "mounts": mounts }));
        return Ok(());
    }
    if mounts.is_empty() {
        println!("no mounts in {}", home.dir.display());
    }
    for m in &mounts {
        println!(
            "{}  share {} ({})  pid {}  entries {}  orphans {}  conflicts {}  {}",
            m["dir"].as_str().unwrap_or("?"),
            &m["share"].as_str().unwrap_or("?")[..8.min(m["share"].as_str().unwrap_or("?").len())],
            m["share_name"].as_str().unwrap_or("?"),
            m["pid"],
            m["entries"],
            m["orphans"],
            m["conflicts"],
            m["state"].as_str().unwrap_or("?"),
        );
        if let Some(b) = m["store_bytes"].as_u64() {
            let sp = &m["space"];
            match (sp["history_bytes"].as_u64(), sp["free_bytes"].as_u64()) {
                (Some(h), Some(f)) => println!(
                    "  store: {}; old versions take {}; gc would free {} (keeping {})",
                    crate::space::mib(b),
                    crate::space::mib(h),
                    crate::space::mib(f),
                    sp["keep_history"].as_str().unwrap_or("?")
                ),
                _ => println!("  store: {}", crate::space::mib(b)),
            }
        }
        if let Some(a) = m["api"].as_str() {
            println!("  HTTP API: {a}");
        }
        if let Some(n) = m["local_only"].as_u64().filter(|n| *n > 0) {
            println!("  {n} files and folders on this machine only (.latticeignore)");
        }
        if let Some(b) = m["behind"].as_u64().filter(|b| *b > 0) {
            println!("  catching up: {b} entries still to come from peers");
        }
        if let Some(c) = m["clock"].as_str() {
            println!("  CLOCK: {c}");
        }
        println!(
            "  listening on {}",
            m["addrs"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
        for r in m["relays"].as_array().into_iter().flatten() {
            println!("  relay {}", r.as_str().unwrap_or("?"));
        }
        for p in m["peers"].as_array().into_iter().flatten() {
            println!("  {}", peer_line(p));
        }
    }
    Ok(())
}

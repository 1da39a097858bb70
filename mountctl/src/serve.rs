//! The daemon's control socket: one request line, one JSON reply line.
//!
//! `status`, `unmount` (answered once unmounted), `check`, `invite ROLE TTL_MS`, `peers`,
//! `remove ID`, `leave`, `sync`, `conflicts`, `log PATH`, `deleted DIR`,
//! `restore PATH ENTRY [TO]`, `dag PATH|- N` (paths hex-encoded, relative
//! to the mount),
//! `net off` / `net on` (fault injection for partition tests: the node stops
//! accepting, dialing and gossiping, as if unplugged).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use store::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::daemon::Daemon;

/// Who asked to unmount: told how it ended.
pub type Waiter = OwnedWriteHalf;

/// Sends the final reply to the one who asked to unmount.
pub async fn reply(mut w: Waiter, v: Value) -> std::io::Result<()> {
    w.write_all(format!("{v}\n").as_bytes()).await
}

/// Answers requests until an unmount request or SIGTERM/SIGINT; returns why it
/// stopped and, for an unmount request, who to tell how it ended.
pub async fn serve(sock: PathBuf, d: Arc<Daemon>) -> (String, Option<Waiter>) {
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", sock.display());
            return ("control socket failed".into(), None);
        }
    };
    let (stop_tx, mut stop_rx) = mpsc::channel::<(String, Option<Waiter>)>(4);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("signal handler");
    let mut peers_changed = d.store.watch(store::membership::PEERS.as_bytes());
    let mut addrs_changed = d.store.watch(b"addrs/");
    let mut evicted = d.net.watch_evicted();
    let mut requests = tokio::task::JoinSet::new();
    // Addresses change (a relay connects, an interface comes up): publish
    // them when they do, so members dial what is true now.
    let mut republish = tokio::time::interval(std::time::Duration::from_secs(5));
    // The disk watch: one at a time, owned by this loop like the requests.
    let every = crate::space::tick_every();
    let mut space_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut space_task: Option<tokio::task::JoinHandle<()>> = None;
    let why = loop {
        tokio::select! {
            _ = space_tick.tick() => {
                if space_task.as_ref().is_none_or(|t| t.is_finished()) {
                    let d = d.clone();
                    space_task = Some(tokio::task::spawn_blocking(move || crate::space::tick(&d)));
                }
            }
            _ = republish.tick() => {
                if let Err(e) = d.directory.publish(&d.net.addrs()) {
                    tracing::debug!("cannot publish this node's addresses: {e}");
                }
            }
            _ = term.recv() => break ("SIGTERM".to_string(), None),
            _ = int.recv() => break ("SIGINT".to_string(), None),
            Some(why) = stop_rx.recv() => break why,
            Some(_) = peers_changed.recv() => {
                while peers_changed.try_recv().is_ok() {}
                d.net.directory_changed();
                // Removed or made a reader: the mount may not write any more.
                if let Some(why) = may_not_write(&d) {
                    let fs = d.fs.clone();
                    let _ = tokio::task::spawn_blocking(move || fs.set_read_only(why)).await;
                }
            }
            Ok(()) = evicted.changed() => {
                let why = evicted.borrow_and_update().clone();
                if let Some(why) = why {
                    let fs = d.fs.clone();
                    let _ = tokio::task::spawn_blocking(move || fs.set_read_only(why)).await;
                }
            }
            Some(_) = addrs_changed.recv() => {
                while addrs_changed.try_recv().is_ok() {}
                d.net.directory_changed();
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            Ok((conn, _)) = listener.accept() => {
                let (d, stop_tx) = (d.clone(), stop_tx.clone());
                requests.spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut line = String::new();
                    if BufReader::new(r).read_line(&mut line).await.is_err() {
                        return;
                    }
                    if line.trim() == "unmount" {
                        // The reply waits until the unmount is done.
                        let _ = stop_tx.send(("unmount requested".into(), Some(w))).await;
                        return;
                    }
                    let reply = answer(&d, line.trim()).await;
                    let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
                });
            }
        }
    };
    requests.abort_all();
    if let Some(t) = space_task {
        // A collection under way finishes (it holds the store's writer lock).
        let _ = t.await;
    }
    why
}

/// A path sent hex-encoded (so that any byte, a space too, crosses the line protocol).
fn unhex(s: &str) -> String {
    hex::decode(s)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs a history question (a read of the whole log) off the async workers;
/// its failure as the reply to send.
async fn blocking_history<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, fs::errno::Errno> + Send + 'static,
) -> Result<T, Value> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(history_error(e))),
        Err(e) => Err(err(e)),
    }
}

/// What a history request's errno means to the person who asked.
fn history_error(e: fs::errno::Errno) -> String {
    match e.0 {
        libc::ENOENT => "no such file here, shown or deleted (or no version with that id)".into(),
        libc::ENOTDIR => "a folder on that path is not a folder".into(),
        libc::EISDIR => "that is the share's root, not a file".into(),
        libc::EINVAL => "not a file, or the version id matches several versions: give more of it".into(),
        libc::ENODATA => "the content of that version is not on this node (never fetched here, or collected under the retention policy: see `mountctl config`)".into(),
        libc::EEXIST => "another file has that name now: restore with --to NEW_PATH".into(),
        libc::EROFS => "this node may not write to the share".into(),
        n => format!("{}", std::io::Error::from_raw_os_error(n)),
    }
}

/// A member's short id, as messages print it.
fn short_author(author: &str) -> String {
    store::AuthorId::parse_hex(author).map_or_else(|| author.chars().take(8).collect(), |a| a.short())
}

fn err(msg: impl std::fmt::Display) -> Value {
    json!({ "error": msg.to_string() })
}

async fn answer(d: &Arc<Daemon>, req: &str) -> Value {
    let words: Vec<&str> = req.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => status(d).await,
        ["at", kind, what, dir] => {
            let (dd, kind, what, dir) = (d.clone(), kind.to_string(), what.to_string(), dir.to_string());
            match tokio::task::spawn_blocking(move || crate::past::open(&dd, &kind, &what, &dir)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => err(format!("{e:#}")),
                Err(e) => err(e),
            }
        }
        ["unmount-at", dir] => {
            let (dd, dir) = (d.clone(), dir.to_string());
            match tokio::task::spawn_blocking(move || crate::past::close(&dd, &dir)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => err(format!("{e:#}")),
                Err(e) => err(e),
            }
        }
        ["gc", keep, mode] => {
            let (dd, keep, dry) = (d.clone(), keep.to_string(), *mode == "dry");
            match tokio::task::spawn_blocking(move || crate::space::run(&dd, &keep, dry)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => err(format!("{e:#}")),
                Err(e) => err(e),
            }
        }
        ["check"] => {
            let fs = d.fs.clone();
            match tokio::task::spawn_blocking(move || fs.check()).await {
                Ok(diffs) => json!({ "dir": d.dir, "differences": diffs }),
                Err(e) => err(format!("the check failed: {e}")),
            }
        }
        ["check", "content"] => {
            let (fs, store) = (d.fs.clone(), d.store.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let mut diffs = fs.check();
                let entries = match store.verify_all() {
                    Ok(n) => n,
                    Err(e) => {
                        diffs.push(format!("the log does not verify: {e}"));
                        0
                    }
                };
                let (chunks, bad) = store.verify_chunks().unwrap_or_else(|e| {
                    diffs.push(format!("cannot check the content chunks: {e}"));
                    (0, Vec::new())
                });
                for h in &bad {
                    diffs.push(format!("chunk {h} was damaged: dropped, and asked for from peers"));
                }
                (diffs, entries, chunks)
            })
            .await;
            match checked {
                Ok((diffs, entries, chunks)) => {
                    json!({ "dir": d.dir, "differences": diffs, "entries": entries, "chunks": chunks })
                }
                Err(e) => err(format!("the check failed: {e}")),
            }
        }
        ["invite", role, ttl_ms] => {
            let role = match Role::parse(role.as_bytes()) {
                Some(r @ (Role::Writer | Role::Reader)) => r,
                _ => return err("an invite is for a writer or a reader"),
            };
            let Ok(ttl) = ttl_ms.parse::<u64>() else {
                return err("bad expiry");
            };
            // With relays on, the ticket names this node's home relay too.
            d.net.online(std::time::Duration::from_secs(3)).await;
            match d.directory.invite(role, ttl) {
                Ok(secret) => {
                    // Any member named can admit the joiner: a few that are
                    // online now, besides this one.
                    let others = d
                        .net
                        .reachable_members(net::ticket::MAX_OTHERS)
                        .into_iter()
                        .map(|(id, addrs)| (id.0, addrs))
                        .collect();
                    let t = net::Ticket {
                        share: d.store.share_id().0,
                        inviter: d.store.author().0,
                        addrs: d.net.addrs(),
                        secret,
                        others,
                    };
                    json!({ "ticket": t.encode() })
                }
                Err(e) => err(format!("cannot invite: {e}")),
            }
        }
        ["peers"] => json!({ "peers": peers(d).await }),
        ["log", path] => {
            let (fs, path) = (d.fs.clone(), unhex(path));
            match blocking_history(move || fs.log(&path)).await {
                Ok(vs) => {
                    let list: Vec<Value> = vs
                        .into_iter()
                        .map(|v| {
                            json!({ "entry": v.entry, "author": v.author, "author_short": short_author(&v.author),
                                    "at_ms": v.at_ms, "size": v.size, "mtime_ns": v.mtime_ns, "what": v.what,
                                    "current": v.current, "conflict": v.conflict })
                        })
                        .collect();
                    json!({ "dir": d.dir, "versions": list })
                }
                Err(e) => e,
            }
        }
        ["deleted", path] => {
            let (fs, path) = (d.fs.clone(), unhex(path));
            match blocking_history(move || fs.deleted(&path)).await {
                Ok(list) => {
                    let list: Vec<Value> = list
                        .into_iter()
                        .map(|x| json!({ "path": x.path, "deleted_ms": x.at_ms, "versions": x.versions }))
                        .collect();
                    json!({ "dir": d.dir, "deleted": list })
                }
                Err(e) => e,
            }
        }
        ["restore", path, entry, to @ ..] if to.len() <= 1 => {
            let (fs, path, entry) = (d.fs.clone(), unhex(path), entry.to_string());
            let to = to.first().map(|t| unhex(t));
            match blocking_history(move || fs.restore(&path, &entry, to.as_deref())).await {
                Ok(written) => json!({ "dir": d.dir, "restored": written }),
                Err(e) => e,
            }
        }
        ["dag", path, last] => {
            let prefix = if *path == "-" {
                None
            } else {
                match d.fs.node_at(&unhex(path)) {
                    Ok(id) => Some([fs::node::PREFIX, &id.0[..]].concat()),
                    Err(e) => return err(history_error(e)),
                }
            };
            let last: usize = last.parse().unwrap_or(200);
            let store = d.store.clone();
            match tokio::task::spawn_blocking(move || crate::dag::dot(&store, prefix.as_deref(), last)).await {
                Ok(Ok(dot)) => json!({ "dot": dot }),
                Ok(Err(e)) => err(format!("cannot read the log: {e}")),
                Err(e) => err(e),
            }
        }
        ["conflicts"] => {
            let list: Vec<Value> =
                d.fs.conflicts()
                    .into_iter()
                    .map(|(copy, of)| json!({ "copy": copy, "of": of }))
                    .collect();
            json!({ "dir": d.dir, "conflicts": list })
        }
        ["remove", id] => {
            let id = match member_by_prefix(d, id) {
                Ok(id) => id,
                Err(e) => return err(e),
            };
            if net::Directory::role(d.directory.as_ref(), &id).is_none() {
                return err(format!("{id} is not a member of this share"));
            }
            if last_owner(d, &id) {
                return err("that is the share's last owner: add another owner first, or it would have none");
            }
            match d.store.write(vec![store::Op::delete(store::membership::peer_key(&id))]) {
                Ok(_) => {
                    d.net.notify_removed(id);
                    d.net.directory_changed();
                    json!({ "ok": true })
                }
                Err(e) => err(format!("cannot remove {}: {e}", id.short())),
            }
        }
        ["leave"] => {
            let me = d.store.author();
            if last_owner(d, &me) {
                return err("this node is the share's last owner: it cannot leave (add another owner first)");
            }
            match d.store.write(vec![store::Op::delete(store::membership::peer_key(&me))]) {
                Ok(_) => {
                    d.net.directory_changed();
                    json!({ "ok": true })
                }
                Err(e) => err(format!("cannot leave: {e}")),
            }
        }
        ["forget-lost-entries"] => match d.store.forget_lost_entries() {
            Ok(()) => json!({ "ok": true }),
            Err(e) => err(format!("cannot forget the lost entries: {e}")),
        },
        ["sync"] => {
            let results: Vec<Value> = d
                .net
                .sync_all()
                .await
                .into_iter()
                .map(|(id, r)| match r {
                    Ok(n) => json!({ "peer": id.to_string(), "applied": n }),
                    Err(e) => json!({ "peer": id.to_string(), "error": format!("{e:#}") }),
                })
                .collect();
            json!({ "synced": results })
        }
        ["net", "off"] => {
            d.net.set_paused(true);
            json!({ "ok": true })
        }
        ["net", "on"] => {
            d.net.set_paused(false);
            json!({ "ok": true })
        }
        ["net", "cut" | "heal", id] => {
            let cut = words[1] == "cut";
            match member_by_prefix(d, id).and_then(|id| d.net.cut(id, cut)) {
                Ok(()) => json!({ "ok": true }),
                Err(e) => err(e),
            }
        }
        ["net", "heal"] => match d.net.heal_all() {
            Ok(()) => json!({ "ok": true }),
            Err(e) => err(e),
        },
        ["net", "gossip", faults @ ..] => {
            match gossip_faults(d, faults).and_then(|(from, g)| d.net.set_gossip_faults(from, g)) {
                Ok(()) => json!({ "ok": true }),
                Err(e) => err(e),
            }
        }
        _ => err(format!("unknown request {req:?}")),
    }
}

/// Is `id` the only owner of the share?
fn last_owner(d: &Daemon, id: &store::AuthorId) -> bool {
    let owners: Vec<_> = d
        .directory
        .all_members()
        .into_iter()
        .filter(|(_, r)| *r == Role::Owner)
        .map(|(a, _)| a)
        .collect();
    owners == [*id]
}

/// The member whose id is `given` or starts with it (at least 4 hex digits,
/// and no other member's id may start the same way).
fn member_by_prefix(d: &Daemon, given: &str) -> Result<store::AuthorId, String> {
    let given = given.trim().to_ascii_lowercase();
    if let Some(id) = store::AuthorId::parse_hex(&given) {
        return Ok(id);
    }
    if given.len() < 4 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{given:?} is not a node id: give the 64 hex digits, or a unique start of them (8 are enough)"
        ));
    }
    let hits: Vec<_> = d
        .directory
        .all_members()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.to_string().starts_with(&given))
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no member's id starts with {given}")),
        _ => Err(format!(
            "{} members' ids start with {given}: give more of it",
            hits.len()
        )),
    }
}

/// Why this node may not write any more, if it may not.
pub fn may_not_write(d: &Daemon) -> Option<String> {
    match net::Directory::role(d.directory.as_ref(), &d.store.author()) {
        None => Some("this node was removed from the share".into()),
        Some(Role::Reader) => Some("this node is now a reader of the share".into()),
        Some(_) => None,
    }
}

/// Each member, with figures as of now: it is asked for its frontier first
/// (a second at most).
async fn peers(d: &Daemon) -> Vec<Value> {
    let roles: std::collections::HashMap<_, _> = d.directory.all_members().into_iter().collect();
    let bound = d.store.config().max_drift_ms as i64;
    d.net
        .peers_fresh(std::time::Duration::from_secs(1))
        .await
        .into_iter()
        .map(|p| {
            json!({
                "id": p.id.to_string(),
                "role": roles.get(&p.id).map(|r| r.as_str()),
                "online": p.online,
                "last_sync_ms": p.last_sync_ms,
                "pending": p.pending,
                "behind": p.behind,
                "bytes_sent": p.bytes_sent,
                "bytes_received": p.bytes_received,
                "chunks_sent": p.chunks_sent,
                "skew_ms": p.skew_ms,
                "clock_refused": p.skew_ms.abs() > bound,
                "addrs": p.addrs,
            })
        })
        .collect()
}

/// What to tell the user about clocks: set when this node's clock is too far
/// from a peer's for entries to cross (one way or the other).
fn clock_warning(d: &Daemon, peers: &[Value]) -> Option<String> {
    let bound = d.store.config().max_drift_ms as i64;
    let bad: Vec<String> = peers
        .iter()
        .filter(|p| p["clock_refused"].as_bool() == Some(true))
        .map(|p| {
            let skew = p["skew_ms"].as_i64().unwrap_or(0);
            let id = p["id"].as_str().unwrap_or("?");
            format!(
                "this node's clock is {} s {} {}'s",
                skew.abs() / 1000,
                if skew < 0 { "ahead of" } else { "behind" },
                &id[..8.min(id.len())]
            )
        })
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{}; entries more than {} s ahead of the receiver's clock are refused: set the clocks right (NTP)",
            bad.join(", "),
            bound / 1000
        )
    })
}

async fn status(d: &Arc<Daemon>) -> Value {
    let space = {
        let d = d.clone();
        tokio::task::spawn_blocking(move || crate::space::report(&d))
            .await
            .unwrap_or(Value::Null)
    };
    // Read before the frontier: when it is 0, the frontier holds every change
    // made before `status` was asked.
    let unwritten = d.fs.unwritten();
    let s = &d.store;
    let frontier = s.frontier().unwrap_or_default();
    let entries: u64 = frontier.values().map(|v| v.0).sum();
    // Per author, the last entry held: two peers that print the same frontier hold the same entries.
    let frontier: serde_json::Map<String, Value> = frontier
        .iter()
        .map(|(a, (seq, _))| (a.to_string(), json!(seq)))
        .collect();
    let role = net::Directory::role(d.directory.as_ref(), &s.author()).map(|r| r.as_str());
    let peers = peers(d).await;
    let got = d.net.progress();
    json!({
        "dir": d.dir,
        "pid": std::process::id(),
        "share": s.share_id().to_string(),
        "share_name": d.name,
        "author": s.author().to_string(),
        "role": role,
        "state": d.fs.health(),
        "addrs": d.net.addrs(),
        "relays": d.net.relays(),
        "entries": entries,
        "frontier": frontier,
        "unwritten": unwritten,
        "api": d.api.get(),
        "orphans": s.orphan_count().unwrap_or(0),
        "conflicts": d.fs.conflicts().len(),
        "clock": clock_warning(d, &peers),
        "peers": peers,
        "behind": got.behind,
        "bytes_sent": d.net.bytes_sent(),
        "bytes_received": got.bytes,
        "chunks_received": got.chunks,
        "view_nodes": d.fs.stats().0,
        "local_only": d.fs.local_only(),
        "store_bytes": std::fs::metadata(&d.store_file).map_or(0, |m| m.len()),
        "space": space,
        "held_entries": s.held_entries().unwrap_or(0),
        "from_snapshot": s.floors().is_ok_and(|f| !f.is_empty()),
        "past": d.past.lock().unwrap().iter().map(|p| json!({ "dir": p.dir, "at_ms": p.at_ms })).collect::<Vec<_>>(),
    })
}

/// `[PEER] loss=PCT dup=PCT reorder=PCT delay=MS` (any subset; the rest are
/// 0). Without PEER, for gossip any peer delivers.
fn gossip_faults(d: &Daemon, words: &[&str]) -> Result<(Option<store::AuthorId>, net::GossipFaults), String> {
    let mut g = net::GossipFaults::default();
    let (from, words) = match words.split_first() {
        Some((w, rest)) if !w.contains('=') => (Some(member_by_prefix(d, w)?), rest),
        _ => (None, words),
    };
    for w in words {
        let bad = || format!("{w:?}: expected loss=PCT, dup=PCT, reorder=PCT or delay=MS");
        let (k, v) = w.split_once('=').ok_or_else(bad)?;
        let n: u64 = v.parse().map_err(|_| bad())?;
        let pct = || u8::try_from(n).ok().filter(|p| *p <= 100).ok_or_else(bad);
        match k {
            "loss" => g.loss = pct()?,
            "dup" => g.duplicate = pct()?,
            "reorder" => g.reorder = pct()?,
            "delay" => g.delay = std::time::Duration::from_millis(n),
            _ => return Err(bad()),
        }
    }
    Ok((from, g))
}

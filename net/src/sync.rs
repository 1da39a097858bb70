//! Sync over a link. Either end asks on a new stream of the link:
//!
//! - `Pull{frontier}`: answered by `Batch`es of what the asker lacks, then
//!   `Done`. The asker fetches the chunks a batch refers to before it ingests
//!   the batch, and each batch is durable before the next is read, so a cut
//!   session resumes where it stopped. An answerer that sees the asker has
//!   entries it lacks pulls them back over the same link (before `Done` when
//!   the asker said `both_ways`): no dial-back, so a peer reached through a
//!   relay or a NAT is synced both ways all the same.
//! - `Want{hashes}`: answered by `Chunk`s (see `fetch.rs`).
//! - `Hello`: answered by `Hello`, a probe of the peer's frontier.

use std::sync::Arc;

use anyhow::{Result, bail};
use iroh::endpoint::{Connection, SendStream, VarInt};
use store::{AuthorId, Outcome};

use crate::frames::{recv, send};
use crate::handshake::{self, Frontier, ahead, from_wire, hello, learn, my_frontier, to_wire};
use crate::wire::{self, Kind};
use crate::{Ask, Shared, fetch};

/// Entries per batch, and roughly the bytes, so one frame stays far below the limit.
const BATCH_ENTRIES: usize = 256;
const BATCH_BYTES: usize = 8 << 20;

/// Serves the requests the peer makes on `conn` until the link closes.
pub(crate) async fn serve_link(s: Arc<Shared>, conn: Connection, peer: AuthorId) {
    // Each request on its own task: a pull blocked on flow control (the peer
    // is busy fetching the chunks of the last batch) must not hold up the
    // chunk request the peer is waiting on.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let (mut tx, mut rx) = tokio::select! {
            r = conn.accept_bi() => match r {
                Ok(x) => x,
                Err(_) => break, // the link closed
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        if s.cut_off(&peer) {
            conn.close(VarInt::from_u32(handshake::CODE_REFUSED), b"peer is offline");
            break;
        }
        // Membership is checked at every request, not only at the handshake:
        // a link opened before the peer was removed (or while it joined)
        // serves it nothing more, and it is shown why. A node still joining
        // cannot judge (it has not backfilled who the members are): it
        // refuses the request but keeps the link it is joining over.
        if s.dir.role(&peer).is_none() {
            let judge = s.dir.role(&s.me).is_some();
            let evidence = s.store.membership_evidence(&peer).unwrap_or_default();
            let r = wire::Refused {
                reason: format!("node {peer} is not a member of this share"),
                evidence: if judge { evidence } else { Vec::new() },
            };
            let _ = send(&s, peer, &mut tx, Kind::Refused(r)).await;
            let _ = tx.finish();
            if !judge {
                continue;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
            conn.close(VarInt::from_u32(handshake::CODE_REFUSED), b"not a member");
            break;
        }
        let (s, conn) = (s.clone(), conn.clone());
        requests.spawn(async move {
            let r = async {
                match recv(&s, peer, &mut rx).await? {
                    Kind::Pull(p) => serve_pull(&s, &conn, peer, &mut tx, from_wire(&p.frontier), p.both_ways).await?,
                    Kind::Want(w) => fetch::serve_want(&s, peer, &mut tx, &w.hashes).await?,
                    Kind::SnapshotAsk(_) => crate::snapshot::serve(&s, peer, &mut tx).await?,
                    Kind::Hello(h) => {
                        learn(&s, peer, &conn, &h);
                        send(&s, peer, &mut tx, hello(&s, None)?).await?;
                    }
                    _ => bail!("unexpected request"),
                }
                tx.finish()?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::debug!(peer = %peer.short(), "request failed: {e:#}");
            }
        });
    }
    requests.abort_all();
}

async fn serve_pull(
    s: &Arc<Shared>,
    conn: &Connection,
    peer: AuthorId,
    tx: &mut SendStream,
    asked: Frontier,
    both_ways: bool,
) -> Result<()> {
    let mut theirs = asked.clone();
    below_floor(s, peer, &asked);
    loop {
        if s.cut_off(&peer) {
            bail!("this node went offline");
        }
        let mut batch = s.store.entries_after(&theirs, BATCH_ENTRIES)?;
        let mut bytes = 0;
        if let Some(cut) = batch.iter().position(|e| {
            bytes += e.len();
            bytes > BATCH_BYTES
        }) {
            batch.truncate(cut.max(1));
        }
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            // Our own store's bytes: verified when they were taken.
            if let Ok(e) = store::Entry::decode_unverified(e) {
                let s = theirs.entry(e.author).or_default();
                *s = (*s).max(e.seq);
            }
        }
        send(s, peer, tx, Kind::Batch(wire::Batch { entries: batch })).await?;
    }
    s.peers.has(peer, &theirs);
    if ahead(&asked, &my_frontier(s)?) {
        if both_ways {
            pull_over(s, conn, peer, false).await?;
        } else {
            let _ = s.asks.try_send(Ask::Pull(peer));
        }
    }
    send(s, peer, tx, Kind::Done(wire::Done {})).await
}

/// Says (once per peer and author while this daemon runs) when `peer` lacks
/// entries this node cannot send: older than the snapshot it joined from.
/// Such a peer gets them from a member that holds the full history.
fn below_floor(s: &Shared, peer: AuthorId, asked: &Frontier) {
    static SAID: std::sync::Mutex<std::collections::BTreeSet<(AuthorId, AuthorId)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let Ok(floors) = s.store.floors() else { return };
    for (author, floor) in floors {
        let have = asked.get(&author).copied().unwrap_or(0);
        if have + 1 < floor && SAID.lock().unwrap_or_else(|p| p.into_inner()).insert((peer, author)) {
            tracing::warn!(
                peer = %peer.short(),
                author = %author.short(),
                "the peer lacks this author's entries {} to {}, which this node does not hold (it joined from a snapshot): a member with the full history can send them",
                have + 1,
                floor - 1
            );
        }
    }
}

/// Pulls what `peer` has and this node lacks over `conn`: entries applied.
pub(crate) async fn pull_over(s: &Arc<Shared>, conn: &Connection, peer: AuthorId, both_ways: bool) -> Result<usize> {
    let (mut tx, mut rx) = conn.open_bi().await?;
    let pull = wire::Pull {
        frontier: to_wire(&my_frontier(s)?),
        both_ways,
    };
    send(s, peer, &mut tx, Kind::Pull(pull)).await?;
    tx.finish()?;
    let mut applied = 0;
    // Asked both ways, the peer pulls back before its `Done`: that may take
    // as long as the transfer (the link's keep-alive tells a dead peer).
    let limit = if both_ways {
        std::time::Duration::from_secs(300)
    } else {
        crate::frames::READ_TIMEOUT
    };
    loop {
        match crate::frames::recv_within(s, peer, &mut rx, limit).await? {
            Kind::Batch(b) => applied += take_batch(s, conn, peer, b.entries).await?,
            Kind::Done(_) => break,
            Kind::Refused(r) => return Err(handshake::refused(s, peer, r)),
            _ => bail!("unexpected frame in a pull"),
        }
    }
    s.peers.has(peer, &my_frontier(s)?);
    Ok(applied)
}

/// One sync with `peer` now, over its link (dialed if there is none; dialed
/// afresh once if the link turns out dead): entries applied.
pub(crate) async fn pull(s: &Arc<Shared>, peer: AuthorId, both_ways: bool) -> Result<usize> {
    if s.cut_off(&peer) {
        bail!("this node is offline");
    }
    let cached = s.links.get(&peer);
    let r = match cached {
        Some(conn) => match pull_over(s, &conn, peer, both_ways).await {
            Err(e) if conn.close_reason().is_some() => {
                tracing::debug!(peer = %peer.short(), "the link was dead ({e:#}); dialing again");
                s.links.remove(&peer, &conn);
                pull_fresh(s, peer, both_ways).await
            }
            r => r,
        },
        None => pull_fresh(s, peer, both_ways).await,
    };
    match &r {
        Ok(_) => s.peers.synced(peer),
        Err(_) => s.peers.failed(peer),
    }
    r
}

async fn pull_fresh(s: &Arc<Shared>, peer: AuthorId, both_ways: bool) -> Result<usize> {
    let conn = handshake::dial(s, peer, None).await?;
    pull_over(s, &conn, peer, both_ways).await
}

/// Joins through `peer`: presents the invite secret, takes the share's
/// state from a snapshot (when this node holds nothing yet), then pulls
/// what is left.
pub(crate) async fn join(s: &Arc<Shared>, peer: AuthorId, secret: &[u8]) -> Result<usize> {
    let conn = handshake::dial(s, peer, Some(secret)).await?;
    let mut took = 0;
    if s.cfg.join_snapshot && my_frontier(s)?.is_empty() {
        match crate::snapshot::take(s, &conn, peer).await {
            Ok(n) => took = n,
            Err(e) => {
                if conn.close_reason().is_some() {
                    return Err(e);
                }
                tracing::info!(peer = %peer.short(), "no snapshot ({e:#}): taking every entry instead");
            }
        }
    }
    let r = pull_over(s, &conn, peer, false).await.map(|n| n + took);
    if r.is_ok() {
        s.peers.synced(peer);
    }
    r
}

/// Asks `peer` for its frontier now (over its link): fresh figures for `peers`.
pub(crate) async fn probe(s: &Arc<Shared>, peer: AuthorId) -> Result<()> {
    let conn = handshake::link(s, peer).await?;
    let (mut tx, mut rx) = conn.open_bi().await?;
    send(s, peer, &mut tx, hello(s, None)?).await?;
    tx.finish()?;
    match recv(s, peer, &mut rx).await? {
        Kind::Hello(h) => {
            learn(s, peer, &conn, &h);
            Ok(())
        }
        Kind::Refused(r) => Err(handshake::refused(s, peer, r)),
        _ => bail!("unexpected answer to a probe"),
    }
}

/// Fetches what a batch refers to, then ingests it.
async fn take_batch(s: &Arc<Shared>, conn: &Connection, peer: AuthorId, entries: Vec<Vec<u8>>) -> Result<usize> {
    if s.cut_off(&peer) {
        // Cut off mid-session: nothing more crosses, as if the link dropped.
        bail!("this node went offline");
    }
    let missing = s.store.missing_refs(&entries)?;
    if !missing.is_empty() {
        fetch::fetch_chunks(s, conn, peer, &missing).await?;
    }
    let n = entries.len();
    let store = s.store.clone();
    let out = tokio::task::spawn_blocking(move || store.ingest(&entries)).await??;
    let mut applied = 0;
    let mut refused = 0;
    for o in out {
        match o {
            Outcome::Applied { released, .. } => applied += 1 + released,
            Outcome::Refused(r) => {
                refused += 1;
                s.note_refusal(peer, &r);
            }
            _ => {}
        }
    }
    s.progress.entries(n);
    if applied > 0 {
        s.took.notify_one();
    }
    if applied == 0 && refused > 0 {
        // Nothing this peer sends can apply now: back off rather than loop.
        bail!("every entry the peer sent was refused ({refused})");
    }
    Ok(applied)
}

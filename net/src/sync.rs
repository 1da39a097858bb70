//! The sync protocol (`lattice/sync/1`). A session is a pull: the dialer sends
//! `Hello` (versions, share, its frontier, maybe an invite secret); the
//! acceptor checks versions, share and membership and answers `Hello` or
//! `Refused`; then on further streams of the same connection the dialer asks
//! `Pull{frontier}` (answered by `Batch`es then `Done`) and `Want{hashes}`
//! (answered by `Chunk`s). The dialer fetches the chunks a batch refers to
//! before it ingests the batch, and each batch is durable before the next is
//! asked for, so a cut session resumes where it stopped. An acceptor that sees
//! the dialer has entries it lacks dials back for its own pull.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use store::{AuthorId, ChunkHash, Outcome};
use tokio::sync::mpsc;

use crate::wire::{self, Kind};
use crate::{SYNC_ALPN, Shared, author_id, endpoint_id};

pub(crate) const CODE_REFUSED: u32 = 403;
const CODE_DONE: u32 = 0;
/// Entries per batch, and roughly the bytes, so one frame stays far below the limit.
const BATCH_ENTRIES: usize = 256;
const BATCH_BYTES: usize = 8 << 20;
const WANT_PER_REQUEST: usize = 256;
const READ_TIMEOUT: Duration = Duration::from_secs(30);

type Frontier = BTreeMap<AuthorId, u64>;

fn to_wire(f: &Frontier) -> Vec<wire::Seq> {
    f.iter()
        .map(|(a, s)| wire::Seq {
            author: a.0.to_vec(),
            seq: *s,
        })
        .collect()
}

fn from_wire(v: &[wire::Seq]) -> Frontier {
    v.iter()
        .filter_map(|s| Some((AuthorId::from_slice(&s.author)?, s.seq)))
        .collect()
}

fn my_frontier(s: &Shared) -> Result<Frontier> {
    Ok(s.store.frontier()?.into_iter().map(|(a, (seq, _))| (a, seq)).collect())
}

/// Does `theirs` have something `mine` lacks?
fn ahead(theirs: &Frontier, mine: &Frontier) -> bool {
    theirs.iter().any(|(a, s)| *s > mine.get(a).copied().unwrap_or(0))
}

fn hello(s: &Shared, join_secret: Option<&[u8]>) -> Result<Kind> {
    Ok(Kind::Hello(wire::Hello {
        protocol: wire::protocol_version(),
        format: store::FORMAT_VERSION,
        share: s.store.share_id().0.to_vec(),
        frontier: to_wire(&my_frontier(s)?),
        join_secret: join_secret.map(|x| x.to_vec()).unwrap_or_default(),
    }))
}

async fn read_frame(r: &mut RecvStream) -> Result<Kind> {
    match tokio::time::timeout(READ_TIMEOUT, wire::read(r)).await {
        Err(_) => bail!("the peer did not answer within {} s", READ_TIMEOUT.as_secs()),
        Ok(Ok(Some(k))) => Ok(k),
        Ok(Ok(None)) => bail!("the peer closed the stream"),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Why the versions in `h` cannot talk to this node, if they cannot.
fn version_mismatch(h: &wire::Hello) -> Option<String> {
    let ours = wire::protocol_version();
    if h.protocol != ours {
        return Some(format!(
            "sync protocol version {} is not supported: this peer speaks version {ours}",
            h.protocol
        ));
    }
    if h.format != store::FORMAT_VERSION {
        return Some(format!(
            "entry format version {} is not supported: this peer uses version {}",
            h.format,
            store::FORMAT_VERSION
        ));
    }
    None
}

// ---- the acceptor side ----

#[derive(Debug, Clone)]
pub(crate) struct SyncProtocol(pub Arc<Shared>);

impl ProtocolHandler for SyncProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let s = &self.0;
        let peer = author_id(&conn.remote_id());
        if s.paused() {
            conn.close(VarInt::from_u32(CODE_REFUSED), b"peer is offline");
            return Ok(());
        }
        if let Err(e) = serve(s, &conn, peer).await {
            tracing::debug!(peer = %peer.short(), "sync session ended: {e:#}");
        }
        Ok(())
    }
}

async fn refuse(send: &mut SendStream, conn: &Connection, reason: String) {
    refuse_with(send, conn, reason, Vec::new()).await
}

async fn refuse_with(send: &mut SendStream, conn: &Connection, reason: String, evidence: Vec<Vec<u8>>) {
    tracing::warn!("refused a sync session: {reason}");
    let _ = wire::write(
        send,
        Kind::Refused(wire::Refused {
            reason: reason.clone(),
            evidence,
        }),
    )
    .await;
    let _ = send.finish();
    // Let the dialer read the reason before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(VarInt::from_u32(CODE_REFUSED), reason.as_bytes());
}

async fn serve(s: &Arc<Shared>, conn: &Connection, peer: AuthorId) -> Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let h = match read_frame(&mut recv).await? {
        Kind::Hello(h) => h,
        // A member tells this node it was removed: believe the signed entry, not the words.
        Kind::Refused(r) if s.dir.role(&peer).is_some() => {
            if let Some(why) = s.store.eviction(&r.evidence) {
                tracing::error!("{why}");
                s.evicted.send_replace(Some(why));
            }
            return Ok(());
        }
        _ => bail!("the first frame was not a hello"),
    };
    if let Some(why) = version_mismatch(&h) {
        refuse(&mut send, conn, why).await;
        return Ok(());
    }
    if h.share != s.store.share_id().0 {
        refuse(&mut send, conn, "this peer does not hold that share".into()).await;
        return Ok(());
    }
    if s.dir.role(&peer).is_none() {
        if h.join_secret.is_empty() {
            // A removed member is shown the entry that removed it.
            let evidence = s.store.membership_evidence(&peer).unwrap_or_default();
            refuse_with(
                &mut send,
                conn,
                format!("node {peer} is not a member of this share"),
                evidence,
            )
            .await;
            return Ok(());
        }
        if let Err(why) = s.dir.admit(&peer, &h.join_secret) {
            refuse(&mut send, conn, why).await;
            return Ok(());
        }
        tracing::info!(peer = %peer, "admitted a new member with an invite");
    }
    let theirs = from_wire(&h.frontier);
    wire::write(&mut send, hello(s, None)?).await?;
    send.finish()?;
    s.peers.contact(peer, theirs.clone());
    if ahead(&theirs, &my_frontier(s)?) {
        let _ = s.pull_tx.send(peer);
    }
    // Each request on its own task: a pull blocked on flow control (the dialer
    // is busy fetching the chunks of the last batch) must not hold up the
    // chunk request the dialer is waiting on.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let (mut send, mut recv) = tokio::select! {
            r = conn.accept_bi() => match r {
                Ok(x) => x,
                Err(_) => break, // the dialer is done
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        let s = s.clone();
        requests.spawn(async move {
            let r = async {
                match read_frame(&mut recv).await? {
                    Kind::Pull(p) => serve_pull(&s, &mut send, from_wire(&p.frontier)).await?,
                    Kind::Want(w) => serve_want(&s, &mut send, &w.hashes).await?,
                    _ => bail!("unexpected request"),
                }
                send.finish()?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::debug!("sync request failed: {e:#}");
            }
        });
    }
    requests.abort_all();
    Ok(())
}

async fn serve_pull(s: &Shared, send: &mut SendStream, mut theirs: Frontier) -> Result<()> {
    loop {
        if s.paused() {
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
            wire::write(send, Kind::Done(wire::Done {})).await?;
            return Ok(());
        }
        for e in &batch {
            // Our own store's bytes: verified when they were taken.
            if let Ok(e) = store::Entry::decode_unverified(e) {
                let s = theirs.entry(e.author).or_default();
                *s = (*s).max(e.seq);
            }
        }
        let n: usize = batch.iter().map(|e| e.len()).sum();
        wire::write(send, Kind::Batch(wire::Batch { entries: batch })).await?;
        s.sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_want(s: &Shared, send: &mut SendStream, hashes: &[Vec<u8>]) -> Result<()> {
    for h in hashes.iter().take(WANT_PER_REQUEST) {
        let data = match ChunkHash::from_slice(h) {
            Some(h) => s.store.chunk(&h)?,
            None => None,
        };
        let missing = data.is_none();
        let c = wire::Chunk {
            hash: h.clone(),
            data: data.unwrap_or_default(),
            missing,
        };
        wire::write(send, Kind::Chunk(c)).await?;
    }
    Ok(())
}

// ---- the dialer side ----

/// One pull session with `peer`: entries applied.
pub(crate) async fn pull(s: &Arc<Shared>, peer: AuthorId, join_secret: Option<&[u8]>) -> Result<usize> {
    if s.paused() {
        bail!("this node is offline");
    }
    let id = endpoint_id(&peer).ok_or_else(|| anyhow!("{peer} is not a valid node id"))?;
    let conn = tokio::time::timeout(s.cfg.dial_timeout, s.endpoint.connect(id, SYNC_ALPN))
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from {} within {} s",
                peer.short(),
                s.cfg.dial_timeout.as_secs()
            )
        })?
        .with_context(|| format!("cannot reach {}", peer.short()))?;
    let r = session(s, &conn, peer, join_secret).await;
    conn.close(VarInt::from_u32(CODE_DONE), b"done");
    match &r {
        Ok(_) => s.peers.synced(peer),
        Err(_) => s.peers.failed(peer),
    }
    r
}

async fn session(s: &Arc<Shared>, conn: &Connection, peer: AuthorId, join_secret: Option<&[u8]>) -> Result<usize> {
    let (mut send, mut recv) = conn.open_bi().await?;
    wire::write(&mut send, hello(s, join_secret)?).await?;
    send.finish()?;
    let theirs = match read_frame(&mut recv).await.context("the peer closed the session")? {
        Kind::Hello(h) => {
            if let Some(why) = version_mismatch(&h) {
                bail!("{why}");
            }
            from_wire(&h.frontier)
        }
        Kind::Refused(r) => {
            if let Some(why) = s.store.eviction(&r.evidence) {
                tracing::error!("{why}");
                s.evicted.send_replace(Some(why));
            }
            bail!("{} refused: {}", peer.short(), r.reason)
        }
        _ => bail!("unexpected answer to hello"),
    };
    s.peers.contact(peer, theirs.clone());
    let mut applied = 0;
    if ahead(&theirs, &my_frontier(s)?) {
        let (mut send, mut recv) = conn.open_bi().await?;
        wire::write(
            &mut send,
            Kind::Pull(wire::Pull {
                frontier: to_wire(&my_frontier(s)?),
            }),
        )
        .await?;
        send.finish()?;
        loop {
            match read_frame(&mut recv).await? {
                Kind::Batch(b) => applied += take_batch(s, conn, b.entries).await?,
                Kind::Done(_) => break,
                _ => bail!("unexpected frame in a pull"),
            }
        }
    }
    Ok(applied)
}

/// Fetches what a batch refers to, then ingests it.
async fn take_batch(s: &Shared, conn: &Connection, entries: Vec<Vec<u8>>) -> Result<usize> {
    if s.paused() {
        // Cut off mid-session: nothing more crosses, as if the link dropped.
        bail!("this node went offline");
    }
    let missing = s.store.missing_refs(&entries)?;
    if !missing.is_empty() {
        fetch_chunks(s, conn, &missing).await?;
    }
    let out = s.store.ingest(&entries)?;
    let mut applied = 0;
    let mut refused = 0;
    for o in out {
        match o {
            Outcome::Applied { released, .. } => applied += 1 + released,
            Outcome::Refused(r) => {
                refused += 1;
                tracing::debug!("entry refused in sync: {r}");
            }
            _ => {}
        }
    }
    if applied == 0 && refused > 0 {
        // Nothing this peer sends can apply now: back off rather than loop.
        bail!("every entry the peer sent was refused ({refused})");
    }
    Ok(applied)
}

pub(crate) async fn fetch_chunks(s: &Shared, conn: &Connection, hashes: &[ChunkHash]) -> Result<()> {
    for group in hashes.chunks(WANT_PER_REQUEST) {
        let (mut send, mut recv) = conn.open_bi().await?;
        let want = wire::Want {
            hashes: group.iter().map(|h| h.0.to_vec()).collect(),
        };
        wire::write(&mut send, Kind::Want(want)).await?;
        send.finish()?;
        for _ in group {
            let Kind::Chunk(c) = read_frame(&mut recv).await? else {
                bail!("expected a chunk")
            };
            let Some(h) = ChunkHash::from_slice(&c.hash) else {
                bail!("malformed chunk hash")
            };
            if c.missing {
                bail!("the peer lacks chunk {h}");
            }
            // put_chunk verifies the hash: a wrong chunk is refused, never stored.
            s.store.put_chunk(&h, &c.data)?;
        }
    }
    Ok(())
}

/// Shows `peer` the signed entries that removed it (or made it a reader).
pub(crate) async fn notify_removed(s: &Arc<Shared>, peer: AuthorId) -> Result<()> {
    let id = endpoint_id(&peer).ok_or_else(|| anyhow!("bad id"))?;
    let evidence = s.store.membership_evidence(&peer)?;
    let conn = tokio::time::timeout(s.cfg.dial_timeout, s.endpoint.connect(id, SYNC_ALPN)).await??;
    let (mut send, mut recv) = conn.open_bi().await?;
    let notice = wire::Refused {
        reason: "removed from the share".into(),
        evidence,
    };
    wire::write(&mut send, Kind::Refused(notice)).await?;
    send.finish()?;
    // The peer reads it and closes; do not cut it short.
    let _ = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut recv)).await;
    conn.close(VarInt::from_u32(CODE_DONE), b"done");
    Ok(())
}

/// Fetches chunks from `peer` on a fresh connection (for gossiped entries).
pub(crate) async fn fetch_from(s: &Arc<Shared>, peer: AuthorId, hashes: &[ChunkHash]) -> Result<()> {
    let id = endpoint_id(&peer).ok_or_else(|| anyhow!("bad id"))?;
    let conn = tokio::time::timeout(s.cfg.dial_timeout, s.endpoint.connect(id, SYNC_ALPN)).await??;
    let (mut send, mut recv) = conn.open_bi().await?;
    wire::write(&mut send, hello(s, None)?).await?;
    send.finish()?;
    match read_frame(&mut recv).await? {
        Kind::Hello(_) => {}
        Kind::Refused(r) => bail!("{}", r.reason),
        _ => bail!("unexpected answer"),
    }
    let r = fetch_chunks(s, &conn, hashes).await;
    conn.close(VarInt::from_u32(CODE_DONE), b"done");
    r
}

// ---- tasks ----

/// Runs requested sessions: one at a time per peer, many peers at once, each
/// peer backing off on its own, so a slow or dead peer delays nobody else.
pub(crate) async fn scheduler(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<AuthorId>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AuthorId>();
    let mut running: HashSet<AuthorId> = HashSet::new();
    let mut again: HashSet<AuthorId> = HashSet::new();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(peer) = rx.recv() => {
                if peer == s.me || s.paused() || !s.peers.may_try(&peer) {
                    continue;
                }
                if !running.insert(peer) {
                    again.insert(peer);
                    continue;
                }
                let (s2, done) = (s.clone(), done_tx.clone());
                sessions.spawn(async move {
                    if let Err(e) = pull(&s2, peer, None).await {
                        tracing::debug!(peer = %peer.short(), "sync failed: {e:#}");
                    }
                    let _ = done.send(peer);
                });
            }
            Some(peer) = done_rx.recv() => {
                running.remove(&peer);
                if again.remove(&peer) {
                    let _ = s.pull_tx.send(peer);
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// On start, with every member; then periodically with a random one; and with
/// the author of every gap the store reports.
pub(crate) async fn anti_entropy(s: Arc<Shared>) {
    for id in s.refresh_lookup() {
        let _ = s.pull_tx.send(id);
    }
    let mut gaps = s.store.watch_gaps();
    let mut tick = tokio::time::interval(s.cfg.anti_entropy);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let members = s.refresh_lookup();
                if !members.is_empty() {
                    let pick = members[rand::random_range(0..members.len())];
                    let _ = s.pull_tx.send(pick);
                }
            }
            Some(gap) = gaps.recv() => {
                let members = s.refresh_lookup();
                let target = if members.contains(&gap.author) {
                    gap.author
                } else if !members.is_empty() {
                    members[rand::random_range(0..members.len())]
                } else {
                    continue;
                };
                let _ = s.pull_tx.send(target);
            }
        }
    }
}

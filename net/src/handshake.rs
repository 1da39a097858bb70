//! Opening a link (`lattice/sync/2`): the dialer sends `Hello` (versions,
//! share, its frontier, its addresses and clock, maybe an invite secret); the
//! acceptor checks versions, share and membership and answers `Hello` or
//! `Refused`. Then both ends serve requests on the link (see `sync.rs`).
//!
//! What a handshake says about the peer is believed at once, because the
//! peer's key authenticated the connection: its addresses go to the address
//! book (a restarted peer is found at its new address without waiting for
//! its `addrs/` entry, which may sit behind a gap in its chain), and its
//! clock is compared with ours.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use iroh::TransportAddr;
use iroh::endpoint::{Connection, SendStream, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use store::AuthorId;

use crate::frames::{recv, send};
use crate::wire::{self, Kind};
use crate::{Ask, SYNC_ALPN, Shared, author_id, endpoint, endpoint_id, sync};

pub(crate) const CODE_REFUSED: u32 = 403;
pub(crate) const CODE_DONE: u32 = 0;

pub(crate) type Frontier = BTreeMap<AuthorId, u64>;

pub(crate) fn to_wire(f: &Frontier) -> Vec<wire::Seq> {
    f.iter()
        .map(|(a, s)| wire::Seq {
            author: a.0.to_vec(),
            seq: *s,
        })
        .collect()
}

pub(crate) fn from_wire(v: &[wire::Seq]) -> Frontier {
    v.iter()
        .filter_map(|s| Some((AuthorId::from_slice(&s.author)?, s.seq)))
        .collect()
}

pub(crate) fn my_frontier(s: &Shared) -> Result<Frontier> {
    Ok(s.store.frontier()?.into_iter().map(|(a, (seq, _))| (a, seq)).collect())
}

/// Does `theirs` have something `mine` lacks?
pub(crate) fn ahead(theirs: &Frontier, mine: &Frontier) -> bool {
    theirs.iter().any(|(a, s)| *s > mine.get(a).copied().unwrap_or(0))
}

pub(crate) fn hello(s: &Shared, join_secret: Option<&[u8]>) -> Result<Kind> {
    Ok(Kind::Hello(wire::Hello {
        protocol: wire::protocol_version(),
        format: store::FORMAT_VERSION,
        share: s.store.share_id().0.to_vec(),
        frontier: to_wire(&my_frontier(s)?),
        join_secret: join_secret.map(|x| x.to_vec()).unwrap_or_default(),
        addrs: endpoint::advertised(&s.endpoint),
        clock_ms: store::hlc::wall_ms(),
    }))
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

/// Takes in what a peer's hello says: its frontier, where it is, its clock.
pub(crate) fn learn(s: &Shared, peer: AuthorId, conn: &Connection, h: &wire::Hello) {
    let mut seen: Vec<String> = conn
        .paths()
        .iter()
        .filter_map(|p| match p.remote_addr() {
            TransportAddr::Ip(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    for a in &h.addrs {
        if !seen.contains(a) {
            seen.push(a.clone());
        }
    }
    endpoint::remember(&s.lookup, peer.0, &seen);
    let skew =
        (h.clock_ms as i128 - store::hlc::wall_ms() as i128).clamp(i64::MIN as i128 + 1, i64::MAX as i128) as i64;
    let before = s.peers.contact(peer, from_wire(&h.frontier), seen, skew);
    let bound = s.cfg.max_drift.as_millis() as i64;
    if skew.unsigned_abs() > bound.unsigned_abs() && before.unsigned_abs() <= bound.unsigned_abs() {
        let whose = if skew > 0 {
            "the peer's clock is ahead of this node's"
        } else {
            "this node's clock is ahead of the peer's"
        };
        tracing::error!(
            peer = %peer.short(),
            "clocks differ by {} s ({whose}); entries more than {} s ahead of the receiver's clock are refused: check the clocks (NTP)",
            skew.unsigned_abs() / 1000,
            bound / 1000
        );
    }
}

// ---- the acceptor side ----

#[derive(Debug, Clone)]
pub(crate) struct SyncProtocol(pub Arc<Shared>);

impl ProtocolHandler for SyncProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let s = &self.0;
        let peer = author_id(&conn.remote_id());
        if s.cut_off(&peer) {
            conn.close(VarInt::from_u32(CODE_REFUSED), b"peer is offline");
            return Ok(());
        }
        match accept_hello(s, &conn, peer).await {
            Ok(true) => {
                if s.links.insert(peer, &conn) {
                    // The peer came back on a new connection: a session on
                    // the old one must not hold back the catch-up.
                    let _ = s.asks.try_send(Ask::Fresh(peer));
                }
                sync::serve_link(s.clone(), conn.clone(), peer).await;
                s.links.remove(&peer, &conn);
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(peer = %peer.short(), "handshake failed: {e:#}"),
        }
        Ok(())
    }
}

async fn refuse(
    s: &Shared,
    peer: AuthorId,
    send: &mut SendStream,
    conn: &Connection,
    reason: String,
    evidence: Vec<Vec<u8>>,
) {
    tracing::warn!("refused a sync session: {reason}");
    let r = wire::Refused {
        reason: reason.clone(),
        evidence,
    };
    let _ = self::send(s, peer, send, Kind::Refused(r)).await;
    let _ = send.finish();
    // Let the dialer read the reason before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(VarInt::from_u32(CODE_REFUSED), reason.as_bytes());
}

/// The acceptor's half of the handshake: true when the link is open.
async fn accept_hello(s: &Arc<Shared>, conn: &Connection, peer: AuthorId) -> Result<bool> {
    // A peer that connects and says nothing holds a connection slot (see
    // `gate.rs`) only this long.
    let (mut tx, mut rx) = tokio::time::timeout(crate::frames::HELLO_WAIT, conn.accept_bi())
        .await
        .map_err(|_| anyhow!("no hello within {} s", crate::frames::HELLO_WAIT.as_secs()))??;
    let h = match crate::frames::recv_first(s, peer, &mut rx).await? {
        Kind::Hello(h) => h,
        // A member tells this node it was removed: believe the signed entry, not the words.
        Kind::Refused(r) if s.dir.role(&peer).is_some() => {
            if let Some(why) = s.store.eviction(&r.evidence) {
                tracing::error!("{why}");
                s.evicted.send_replace(Some(why));
            }
            return Ok(false);
        }
        _ => bail!("the first frame was not a hello"),
    };
    if let Some(why) = version_mismatch(&h) {
        refuse(s, peer, &mut tx, conn, why, Vec::new()).await;
        return Ok(false);
    }
    if h.share != s.store.share_id().0 {
        refuse(
            s,
            peer,
            &mut tx,
            conn,
            "this peer does not hold that share".into(),
            Vec::new(),
        )
        .await;
        return Ok(false);
    }
    if s.dir.role(&peer).is_none() {
        if h.join_secret.is_empty() {
            // A removed member is shown the entry that removed it.
            let evidence = s.store.membership_evidence(&peer).unwrap_or_default();
            let why = format!("node {peer} is not a member of this share");
            refuse(s, peer, &mut tx, conn, why, evidence).await;
            return Ok(false);
        }
        if let Err(why) = s.dir.admit(&peer, &h.join_secret) {
            refuse(s, peer, &mut tx, conn, why, Vec::new()).await;
            return Ok(false);
        }
        s.gate.admitted(conn);
        tracing::info!(peer = %peer, "admitted a new member with an invite");
    }
    send(s, peer, &mut tx, hello(s, None)?).await?;
    tx.finish()?;
    learn(s, peer, conn, &h);
    if ahead(&from_wire(&h.frontier), &my_frontier(s)?) {
        let _ = s.asks.try_send(Ask::Pull(peer));
    }
    Ok(true)
}

// ---- the dialer side ----

/// A peer refused us: if its evidence proves this node was removed (or made
/// a reader), say so for the mount to turn read-only; the error for the caller.
pub(crate) fn refused(s: &Shared, peer: AuthorId, r: wire::Refused) -> anyhow::Error {
    if let Some(why) = s.store.eviction(&r.evidence) {
        tracing::error!("{why}");
        s.evicted.send_replace(Some(why));
    }
    crate::Refused(format!("{} refused: {}", peer.short(), r.reason)).into()
}

/// The live link with `peer`, dialing it when there is none.
pub(crate) async fn link(s: &Arc<Shared>, peer: AuthorId) -> Result<Connection> {
    match s.links.get(&peer) {
        Some(c) => Ok(c),
        None => dial(s, peer, None).await,
    }
}

/// Dials `peer`, says hello (with an invite secret when joining), and
/// serves the link's requests until it closes.
pub(crate) async fn dial(s: &Arc<Shared>, peer: AuthorId, join_secret: Option<&[u8]>) -> Result<Connection> {
    if s.cut_off(&peer) {
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
    let (mut tx, mut rx) = conn.open_bi().await?;
    send(s, peer, &mut tx, hello(s, join_secret)?).await?;
    tx.finish()?;
    match recv(s, peer, &mut rx).await.context("the peer closed the link")? {
        Kind::Hello(h) => {
            if let Some(why) = version_mismatch(&h) {
                conn.close(VarInt::from_u32(CODE_REFUSED), why.as_bytes());
                bail!("{why}");
            }
            learn(s, peer, &conn, &h);
        }
        Kind::Refused(r) => return Err(refused(s, peer, r)),
        _ => bail!("unexpected answer to hello"),
    }
    s.links.insert(peer, &conn);
    let (s2, c2) = (s.clone(), conn.clone());
    s.links.serve(async move {
        sync::serve_link(s2.clone(), c2.clone(), peer).await;
        s2.links.remove(&peer, &c2);
    });
    Ok(conn)
}

/// Shows `peer` the signed entries that removed it (or made it a reader).
pub(crate) async fn notify_removed(s: &Arc<Shared>, peer: AuthorId) -> Result<()> {
    let id = endpoint_id(&peer).ok_or_else(|| anyhow!("bad id"))?;
    let evidence = s.store.membership_evidence(&peer)?;
    let conn = tokio::time::timeout(s.cfg.dial_timeout, s.endpoint.connect(id, SYNC_ALPN)).await??;
    let (mut tx, mut rx) = conn.open_bi().await?;
    let notice = wire::Refused {
        reason: "removed from the share".into(),
        evidence,
    };
    send(s, peer, &mut tx, Kind::Refused(notice)).await?;
    tx.finish()?;
    // The peer reads it and closes; do not cut it short.
    let _ = tokio::time::timeout(Duration::from_secs(2), recv(s, peer, &mut rx)).await;
    conn.close(VarInt::from_u32(CODE_DONE), b"done");
    Ok(())
}

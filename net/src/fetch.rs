//! Content chunks over a link: `Want{hashes}` answered by `Chunk`s.
//!
//! The asker keeps [`IN_FLIGHT`] requests open at once on one link, so the
//! answerer streams while the asker verifies and stores, and each request's
//! chunks are made durable together (one fsync per request, not per chunk).
//! What is durable is never asked for again: a fetch cut at any moment
//! repeats at most the requests that were in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow, bail};
use iroh::endpoint::{Connection, SendStream};
use store::{AuthorId, ChunkHash};

use crate::frames::{recv, send};
use crate::wire::{self, Kind};
use crate::{Shared, handshake};

/// Chunks per request (~4 MiB at the average chunk size), made durable together.
const WANT_PER_REQUEST: usize = 64;
/// The most chunks one request is answered with.
const MAX_WANT: usize = 256;
/// Requests open at once on one link: at most this many requests' chunks
/// (~16 MiB) are fetched again after a cut.
const IN_FLIGHT: usize = 4;

/// Test hook: `LATTICE_TEST_SERVE_DELAY_US` slows serving each chunk, so a
/// test can cut a transfer in the middle however fast this machine is.
fn serve_delay() -> Option<std::time::Duration> {
    static D: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("LATTICE_TEST_SERVE_DELAY_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_micros)
    })
}

pub(crate) async fn serve_want(s: &Shared, peer: AuthorId, tx: &mut SendStream, hashes: &[Vec<u8>]) -> Result<()> {
    for h in hashes.iter().take(MAX_WANT) {
        if let Some(d) = serve_delay() {
            tokio::time::sleep(d).await;
        }
        let (data, collected) = match ChunkHash::from_slice(h) {
            Some(h) => match s.store.chunk(&h)? {
                Some(d) => (Some(d), false),
                None => (None, s.store.is_collected(&h)?),
            },
            None => (None, false),
        };
        let missing = data.is_none();
        if !missing {
            s.peers.chunk_sent(peer);
        }
        let c = wire::Chunk {
            hash: h.clone(),
            data: data.unwrap_or_default(),
            missing,
            collected,
        };
        send(s, peer, tx, Kind::Chunk(c)).await?;
    }
    Ok(())
}

/// Fetches `hashes` from `peer` over `conn`, verified and durable.
pub(crate) async fn fetch_chunks(
    s: &Arc<Shared>,
    conn: &Connection,
    peer: AuthorId,
    hashes: &[ChunkHash],
) -> Result<()> {
    let mut groups = hashes.chunks(WANT_PER_REQUEST);
    let mut open = VecDeque::new();
    // The last group's store (verify, write, fsync) runs while the next one
    // is read off the link.
    let mut storing: Option<tokio::task::JoinHandle<store::Result<()>>> = None;
    loop {
        while open.len() < IN_FLIGHT {
            let Some(group) = groups.next() else { break };
            let (mut tx, rx) = conn.open_bi().await?;
            let want = wire::Want {
                hashes: group.iter().map(|h| h.0.to_vec()).collect(),
            };
            send(s, peer, &mut tx, Kind::Want(want)).await?;
            tx.finish()?;
            open.push_back((group, rx));
        }
        let Some((group, mut rx)) = open.pop_front() else {
            if let Some(t) = storing.take() {
                t.await??;
            }
            return Ok(());
        };
        let mut got = Vec::with_capacity(group.len());
        let mut collected = Vec::new();
        for want in group {
            let c = match recv(s, peer, &mut rx).await? {
                Kind::Chunk(c) => c,
                Kind::Refused(r) => return Err(handshake::refused(s, peer, r)),
                _ => bail!("expected a chunk"),
            };
            if c.hash != want.0 {
                bail!("the peer sent chunk {} out of turn", hex::encode(&c.hash));
            }
            if c.missing && c.collected {
                collected.push(*want);
                continue;
            }
            if c.missing {
                bail!("the peer lacks chunk {want}");
            }
            got.push((*want, c.data));
        }
        if !collected.is_empty() {
            tracing::debug!(peer = %peer.short(), n = collected.len(), "the peer collected chunks of versions it no longer keeps");
            s.store.note_collected(&collected)?;
        }
        if let Some(t) = storing.take() {
            t.await??;
        }
        s.progress.chunks.fetch_add(got.len() as u64, Ordering::Relaxed);
        s.progress
            .chunk_bytes
            .fetch_add(got.iter().map(|c| c.1.len() as u64).sum(), Ordering::Relaxed);
        // put_fetched verifies every hash: a wrong chunk is refused, never stored.
        let store = s.store.clone();
        storing = Some(tokio::task::spawn_blocking(move || store.put_fetched(&got)));
    }
}

/// Fetches chunks from `peer` over its link (for gossiped entries and healing).
pub(crate) async fn fetch_from(s: &Arc<Shared>, peer: AuthorId, hashes: &[ChunkHash]) -> Result<()> {
    let conn = handshake::link(s, peer).await?;
    match fetch_chunks(s, &conn, peer, hashes).await {
        Err(e) if conn.close_reason().is_some() => {
            s.links.remove(&peer, &conn);
            let conn = handshake::dial(s, peer, None)
                .await
                .map_err(|d| anyhow!("{e:#}; dialing again: {d:#}"))?;
            fetch_chunks(s, &conn, peer, hashes).await
        }
        r => r,
    }
}

//! Frames on a peer's streams, counted: every byte this node sends to or
//! receives from a peer (sync frames, content chunks, handshakes) shows in
//! that peer's counters and in the node's total.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use iroh::endpoint::{RecvStream, SendStream};
use store::AuthorId;

use crate::Shared;
use crate::wire::{self, Kind};

/// How long a peer may take to send the next frame of an answer.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connecting peer may take to open its stream and say hello.
pub(crate) const HELLO_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn send(s: &Shared, peer: AuthorId, w: &mut SendStream, k: Kind) -> Result<()> {
    let n = wire::write(w, k).await?;
    s.peers.sent(peer, n);
    s.sent.fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

pub(crate) async fn recv(s: &Shared, peer: AuthorId, r: &mut RecvStream) -> Result<Kind> {
    recv_within(s, peer, r, READ_TIMEOUT).await
}

/// The first frame of a connection, from a peer that may not be a member:
/// held to [`wire::MAX_FIRST_FRAME`].
pub(crate) async fn recv_first(s: &Shared, peer: AuthorId, r: &mut RecvStream) -> Result<Kind> {
    read_within(s, peer, r, HELLO_WAIT, wire::MAX_FIRST_FRAME).await
}

/// [`recv`] for an answer that may legitimately take long (a pull-back).
pub(crate) async fn recv_within(s: &Shared, peer: AuthorId, r: &mut RecvStream, limit: Duration) -> Result<Kind> {
    read_within(s, peer, r, limit, wire::MAX_FRAME).await
}

async fn read_within(s: &Shared, peer: AuthorId, r: &mut RecvStream, limit: Duration, max: usize) -> Result<Kind> {
    match tokio::time::timeout(limit, wire::read_max(r, max)).await {
        Err(_) => bail!("the peer did not answer within {} s", limit.as_secs()),
        Ok(Ok(Some((k, n)))) => {
            s.peers.received(peer, n);
            s.received.fetch_add(n as u64, Ordering::Relaxed);
            Ok(k)
        }
        Ok(Ok(None)) => bail!("the peer closed the stream"),
        Ok(Err(e)) => Err(e.into()),
    }
}

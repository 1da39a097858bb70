//! The frames of Lattice's wire protocols: prost messages, each preceded by
//! its length (u32, big endian). A frame larger than [`MAX_FRAME`] is refused
//! before anything is allocated for it, and the buffer of one within the
//! limit grows with the bytes that actually arrive, not with what the length
//! prefix claims: four bytes from a stranger cost no more than four bytes.

use prost::{Message, Oneof};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on any incompatible change to the sync or chunk protocols.
/// 3: snapshots for joins, and chunks answered as collected.
pub const PROTOCOL_VERSION: u32 = 3;
pub const MAX_FRAME: usize = 32 << 20;
/// The first frame on a connection (a hello, a join, a refusal): what a peer
/// not yet known as a member may send.
pub const MAX_FIRST_FRAME: usize = 256 << 10;
/// The buffer a frame starts with; it grows as its bytes arrive.
const FIRST_ALLOCATION: usize = 64 << 10;

/// The protocol version this node speaks: [`PROTOCOL_VERSION`], unless the
/// test hook `LATTICE_TEST_PROTOCOL_VERSION` says otherwise (so a test can run
/// a node from "another release").
pub fn protocol_version() -> u32 {
    std::env::var("LATTICE_TEST_PROTOCOL_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PROTOCOL_VERSION)
}

#[derive(Clone, PartialEq, Message)]
pub struct Frame {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Batch(Batch),
    #[prost(message, tag = "3")]
    Done(Done),
    #[prost(message, tag = "4")]
    Refused(Refused),
    #[prost(message, tag = "5")]
    Want(Want),
    #[prost(message, tag = "6")]
    Chunk(Chunk),
    #[prost(message, tag = "7")]
    Pull(Pull),
    #[prost(message, tag = "8")]
    SnapshotAsk(SnapshotAsk),
    #[prost(message, tag = "9")]
    Snapshot(SnapshotPart),
}

/// A joining node asks for the share's state instead of its whole history
/// (answered by `Snapshot` parts, then `Done`; a peer that does not know the
/// request ends the stream, and the joiner pulls every entry instead).
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotAsk {}

/// One part of a snapshot: some keys with their head entry ids, and some
/// entries (see `store::Snapshot`).
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotPart {
    #[prost(message, repeated, tag = "1")]
    pub heads: Vec<KeyHeads>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub entries: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyHeads {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub ids: Vec<Vec<u8>>,
}

/// Send me what I lack: my frontier.
#[derive(Clone, PartialEq, Message)]
pub struct Pull {
    #[prost(message, repeated, tag = "1")]
    pub frontier: Vec<Seq>,
    /// Answer `Done` only after pulling back what the asker has and the
    /// answerer lacks (`mountctl sync`: both ways before it returns).
    #[prost(bool, tag = "2")]
    pub both_ways: bool,
}

/// What gossip carries: a new entry (when it fits) or just its coordinates.
#[derive(Clone, PartialEq, Message)]
pub struct Announce {
    #[prost(bytes = "vec", tag = "1")]
    pub author: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub entry: Vec<u8>,
    /// Gossip drops a message identical to one it has seen; this keeps two
    /// announcements apart.
    #[prost(uint64, tag = "4")]
    pub nonce: u64,
    /// In a digest (no entry, seq 0): what the sender holds of some authors'
    /// chains, after it took entries from a sync. A receiver holding less
    /// pulls from it: an author's own announcement may have been lost (sent
    /// before the gossip links were up), and this way others learn that the
    /// entries exist without waiting for the anti-entropy round.
    #[prost(message, repeated, tag = "5")]
    pub have: Vec<Seq>,
}

/// The first frame each side of a sync session sends.
#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    #[prost(uint32, tag = "1")]
    pub protocol: u32,
    #[prost(uint32, tag = "2")]
    pub format: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub share: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub frontier: Vec<Seq>,
    /// A joiner's one-time invite secret (dialer only).
    #[prost(bytes = "vec", tag = "5")]
    pub join_secret: Vec<u8>,
    /// Where the sender can be reached now ("IP:PORT" or a relay URL). Said
    /// over a connection the sender's key authenticated, so it is believed
    /// at once: a peer's new address never waits behind a gap in its chain.
    #[prost(string, repeated, tag = "6")]
    pub addrs: Vec<String>,
    /// The sender's wall clock (ms since the epoch), so that each side can
    /// tell the user when their clocks are too far apart for its entries to
    /// be accepted.
    #[prost(uint64, tag = "7")]
    pub clock_ms: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Seq {
    #[prost(bytes = "vec", tag = "1")]
    pub author: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// Entries (wire bytes) in the sender's log order.
#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub entries: Vec<Vec<u8>>,
}

/// Nothing more from this side.
#[derive(Clone, PartialEq, Message)]
pub struct Done {}

/// The session is refused; `reason` is one sentence for the user.
#[derive(Clone, PartialEq, Message)]
pub struct Refused {
    #[prost(string, tag = "1")]
    pub reason: String,
    /// Signed entries behind the refusal (for a removed member: the entry
    /// that removed it), so that it can see for itself.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub evidence: Vec<Vec<u8>>,
}

/// Chunks by hash.
#[derive(Clone, PartialEq, Message)]
pub struct Want {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub hashes: Vec<Vec<u8>>,
}

/// One chunk; empty `data` with `missing` when the peer does not have it,
/// and `collected` too when it let it go under its retention policy (no
/// version it keeps needs it): the asker takes the entries naming it anyway.
#[derive(Clone, PartialEq, Message)]
pub struct Chunk {
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub missing: bool,
    #[prost(bool, tag = "4")]
    pub collected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("peer sent a malformed frame: {0}")]
    Malformed(String),
    #[error("peer closed the stream")]
    Closed,
}

/// Writes one frame; returns the bytes it took on the wire.
pub async fn write(w: &mut (impl AsyncWrite + Unpin), kind: Kind) -> Result<usize, WireError> {
    let bytes = Frame { kind: Some(kind) }.encode_to_vec();
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    Ok(4 + bytes.len())
}

/// The next frame and the bytes it took, or `None` at a clean end of stream.
pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<(Kind, usize)>, WireError> {
    read_max(r, MAX_FRAME).await
}

/// [`read`], refusing frames longer than `max` bytes.
pub async fn read_max(r: &mut (impl AsyncRead + Unpin), max: usize) -> Result<Option<(Kind, usize)>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max.min(MAX_FRAME) {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len.min(FIRST_ALLOCATION));
    (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(WireError::Closed);
    }
    let f = Frame::decode(buf.as_slice()).map_err(|e| WireError::Malformed(e.to_string()))?;
    f.kind
        .map(|k| Some((k, 4 + len)))
        .ok_or_else(|| WireError::Malformed("empty frame".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(
            &mut a,
            Kind::Refused(Refused {
                reason: "no".into(),
                evidence: vec![b"entry".to_vec()],
            }),
        )
        .await
        .unwrap();
        write(&mut a, Kind::Done(Done {})).await.unwrap();
        drop(a);
        assert_eq!(
            read(&mut b).await.unwrap().map(|(k, _)| k),
            Some(Kind::Refused(Refused {
                reason: "no".into(),
                evidence: vec![b"entry".to_vec()]
            }))
        );
        assert_eq!(read(&mut b).await.unwrap(), Some((Kind::Done(Done {}), 6)));
        assert_eq!(read(&mut b).await.unwrap(), None);

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        assert!(matches!(read(&mut b).await, Err(WireError::TooLarge(_))));

        // A first frame is held to the smaller limit.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FIRST_FRAME + 1) as u32).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_max(&mut b, MAX_FIRST_FRAME).await,
            Err(WireError::TooLarge(_))
        ));

        // A length that claims more than arrives: an error once the stream
        // ends, and nothing allocated beyond what came.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME - 1) as u32).to_be_bytes()).await.unwrap();
        a.write_all(b"only this").await.unwrap();
        drop(a);
        assert!(matches!(read(&mut b).await, Err(WireError::Closed)));
    }
}

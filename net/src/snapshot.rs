//! Snapshots over a link: a joining node asks its sponsor for the share's
//! state (`SnapshotAsk`), receives it in parts, fetches the content its
//! heads need, and installs it in one transaction (store's `snapshot.rs`).
//! Then an ordinary pull brings whatever came after.
//!
//! Only the content of current versions crosses: a new node of a share with
//! a long history fetches what the share holds now, not every version ever.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Result, bail};
use iroh::endpoint::{Connection, SendStream};
use store::{AuthorId, ChunkHash, EntryId};

use crate::frames::{recv_within, send};
use crate::wire::{self, Kind};
use crate::{Shared, fetch, handshake};

/// Roughly the bytes of one part: far below the frame limit.
const PART_BYTES: usize = 4 << 20;
/// The most a joiner takes in one snapshot (it is held in memory until it
/// is installed): past it, the join pulls entries in batches instead.
const MAX_SNAPSHOT_BYTES: usize = 2 << 30;

/// One snapshot is built at a time (each holds the share's state in memory).
static SERVING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(crate) async fn serve(s: &Arc<Shared>, peer: AuthorId, tx: &mut SendStream) -> Result<()> {
    let _one = SERVING.acquire().await?;
    let store = s.store.clone();
    let snap = tokio::task::spawn_blocking(move || store.snapshot()).await??;
    tracing::info!(
        peer = %peer.short(),
        entries = snap.entries.len(),
        keys = snap.heads.len(),
        "sending a snapshot of the share to a new member"
    );
    let mut part = wire::SnapshotPart::default();
    let mut size = 0;
    for (key, ids) in snap.heads {
        size += key.len() + 32 * ids.len() + 8;
        part.heads.push(wire::KeyHeads {
            key,
            ids: ids.into_iter().map(|i| i.0.to_vec()).collect(),
        });
        if size > PART_BYTES {
            send(s, peer, tx, Kind::Snapshot(std::mem::take(&mut part))).await?;
            size = 0;
        }
    }
    for e in snap.entries {
        size += e.len() + 8;
        part.entries.push(e);
        if size > PART_BYTES {
            send(s, peer, tx, Kind::Snapshot(std::mem::take(&mut part))).await?;
            size = 0;
        }
    }
    if !part.heads.is_empty() || !part.entries.is_empty() {
        send(s, peer, tx, Kind::Snapshot(part)).await?;
    }
    send(s, peer, tx, Kind::Done(wire::Done {})).await
}

/// Takes a snapshot from `peer` over `conn` and installs it: entries taken.
pub(crate) async fn take(s: &Arc<Shared>, conn: &Connection, peer: AuthorId) -> Result<usize> {
    let (mut tx, mut rx) = conn.open_bi().await?;
    send(s, peer, &mut tx, Kind::SnapshotAsk(wire::SnapshotAsk {})).await?;
    tx.finish()?;
    let mut snap = store::Snapshot::default();
    let mut bytes = 0usize;
    loop {
        match recv_within(s, peer, &mut rx, crate::frames::READ_TIMEOUT).await? {
            Kind::Snapshot(p) => {
                bytes += p.entries.iter().map(Vec::len).sum::<usize>()
                    + p.heads.iter().map(|k| k.key.len() + 32 * k.ids.len()).sum::<usize>();
                if bytes > MAX_SNAPSHOT_BYTES {
                    bail!("the snapshot is larger than {} GiB", MAX_SNAPSHOT_BYTES >> 30);
                }
                for kh in p.heads {
                    let ids = kh
                        .ids
                        .iter()
                        .map(|i| EntryId::from_slice(i))
                        .collect::<Option<Vec<_>>>();
                    let Some(ids) = ids else {
                        bail!("a snapshot names a malformed entry id")
                    };
                    snap.heads.push((kh.key, ids));
                }
                s.progress.entries(p.entries.len());
                snap.entries.extend(p.entries);
            }
            Kind::Done(_) => break,
            Kind::Refused(r) => return Err(handshake::refused(s, peer, r)),
            _ => bail!("unexpected frame in a snapshot"),
        }
    }
    // The content the heads show; versions no head names stay behind.
    let named: HashSet<(&[u8], EntryId)> = snap
        .heads
        .iter()
        .flat_map(|(k, ids)| ids.iter().map(move |i| (k.as_slice(), *i)))
        .collect();
    let mut refs: Vec<ChunkHash> = Vec::new();
    for bytes in &snap.entries {
        let Ok(e) = store::Entry::decode_unverified(bytes) else {
            continue;
        };
        for op in e.ops.iter().filter(|op| named.contains(&(op.key.as_slice(), e.id))) {
            refs.extend(op.refs.iter().filter_map(|r| ChunkHash::from_slice(r)));
        }
    }
    refs.sort();
    refs.dedup();
    let missing = s.store.missing_chunks(&refs)?;
    if !missing.is_empty() {
        fetch::fetch_chunks(s, conn, peer, &missing).await?;
    }
    let store = s.store.clone();
    let n = tokio::task::spawn_blocking(move || store.install_snapshot(&snap)).await??;
    s.took.notify_one();
    Ok(n)
}

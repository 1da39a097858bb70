//! Live push: every local entry, once durable, is announced on the share's
//! gossip topic (the entry itself when it fits in a gossip message, else its
//! coordinates). Receivers fetch missing content, ingest, and fall back to a
//! sync session with the author when anything is missing. Gossip is best
//! effort; anti-entropy repairs what it loses.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use iroh::endpoint::{Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh_gossip::api::{Event, GossipReceiver, GossipSender};
use iroh_gossip::{Gossip, TopicId};
use n0_future::StreamExt;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use store::{AuthorId, Outcome};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::wire::Announce;
use crate::{Ask, Shared, author_id, endpoint_id, fetch, handshake};

/// iroh-gossip frames add 38 bytes and must stay under its 4096-byte default;
/// a larger message is dropped silently and jams the link, so stay well below.
const MAX_GOSSIP: usize = 4000;

/// Below this many live gossip links, `meet` keeps trying members without one.
const FEW_LINKS: usize = 3;

/// The gossip handler, refusing while paused (the gate admits only members).
#[derive(Debug, Clone)]
pub(crate) struct Guarded {
    pub gossip: Gossip,
    pub shared: Arc<Shared>,
}

impl ProtocolHandler for Guarded {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        if self.shared.cut_off(&author_id(&conn.remote_id())) {
            conn.close(VarInt::from_u32(handshake::CODE_REFUSED), b"peer is offline");
            return Ok(());
        }
        ProtocolHandler::accept(&self.gossip, conn).await
    }
}

fn topic(s: &Shared) -> TopicId {
    TopicId::from_bytes(topic_of(&s.store.share_id()))
}

/// The share's gossip topic (public so that a test's hostile client can
/// join it with a member's key).
pub fn topic_of(share: &store::ShareId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"lattice/gossip/v1");
    h.update(&share.0);
    *h.finalize().as_bytes()
}

pub(crate) async fn start(
    tasks: &mut JoinSet<()>,
    s: Arc<Shared>,
    gossip: Gossip,
    members: Vec<AuthorId>,
) -> Result<()> {
    let bootstrap = members.iter().filter_map(endpoint_id).collect();
    let (tx, rx) = gossip.subscribe(topic(&s), bootstrap).await?.split();
    let _ = s.gossip_tx.set(tx.clone());
    tasks.spawn(announce(s.clone(), tx.clone()));
    tasks.spawn(tell_haves(s.clone(), tx.clone()));
    tasks.spawn(receive(s.clone(), rx));
    tasks.spawn(meet(s, tx, gossip));
    Ok(())
}

/// Authors a digest names at most (about 46 bytes each, under [`MAX_GOSSIP`]).
const MAX_HAVE: usize = 80;

/// After this node took entries from a sync, tells its neighbours what it
/// now holds (at most once a second; a random [`MAX_HAVE`] authors when
/// there are more).
async fn tell_haves(s: Arc<Shared>, tx: GossipSender) {
    loop {
        s.took.notified().await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if s.paused() {
            continue;
        }
        let s2 = s.clone();
        let Ok(Ok(mine)) = tokio::task::spawn_blocking(move || handshake::my_frontier(&s2)).await else {
            continue;
        };
        let mut have = handshake::to_wire(&mine);
        if have.len() > MAX_HAVE {
            use rand::seq::SliceRandom;
            have.shuffle(&mut rand::rng());
            have.truncate(MAX_HAVE);
        }
        let msg = Announce {
            author: s.me.0.to_vec(),
            seq: 0,
            entry: Vec::new(),
            nonce: rand::random(),
            have,
        }
        .encode_to_vec();
        s.sent.fetch_add(msg.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Err(err) = tx.broadcast(Bytes::from(msg)).await {
            tracing::debug!("gossip broadcast failed: {err}");
        }
    }
}

/// Announces this node's own entries as they become durable.
async fn announce(s: Arc<Shared>, tx: GossipSender) {
    let mut durable = s.store.watch_durable();
    let mut next = *durable.borrow_and_update();
    loop {
        if durable.changed().await.is_err() {
            return;
        }
        let end = *durable.borrow_and_update();
        while next < end {
            let Ok(batch) = s.store.log_since(next, 256) else { break };
            let Some(last) = batch.last().map(|(p, _)| *p) else {
                break;
            };
            next = last + 1;
            if s.paused() {
                continue;
            }
            for (_, bytes) in batch {
                // Our own store's bytes: verified when written.
                let Ok(e) = store::Entry::decode_unverified(&bytes) else {
                    continue;
                };
                if e.author != s.me {
                    continue;
                }
                let mut a = Announce {
                    author: e.author.0.to_vec(),
                    seq: e.seq,
                    entry: bytes,
                    nonce: rand::random(),
                    have: Vec::new(),
                };
                if a.encoded_len() > MAX_GOSSIP {
                    a.entry.clear();
                }
                let msg = a.encode_to_vec();
                s.sent.fetch_add(msg.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Err(err) = tx.broadcast(Bytes::from(msg)).await {
                    tracing::debug!("gossip broadcast failed: {err}");
                }
            }
        }
    }
}

/// An announced entry waiting to be taken: its author and sequence number,
/// the neighbour that delivered it, and its bytes (empty when it did not fit
/// in a message).
type Announced = (AuthorId, u64, AuthorId, Vec<u8>);

/// What the receive loop hands the taker.
enum Heard {
    Entry(Announced),
    /// A digest: the neighbour that sent it, and what it holds.
    Have(AuthorId, Vec<(AuthorId, u64)>),
}

/// How often, and how long, an announced entry not yet held is asked for
/// again: at 0.5, 1, 2, 4, 8 and 16 s after it came.
const RETRIES: u32 = 6;
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Announcements waiting for the taker; past this, they are dropped and a
/// sync with their source repairs what they carried.
const QUEUE: usize = 4096;

async fn receive(s: Arc<Shared>, mut rx: GossipReceiver) {
    // The taker is owned here: when this task stops (shutdown aborts it),
    // dropping the set aborts it too.
    let (queue, taken) = mpsc::channel(QUEUE);
    let mut taker = JoinSet::new();
    taker.spawn(take_all(s.clone(), taken));
    while let Some(ev) = rx.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("gossip stopped: {e}");
                return;
            }
        };
        match ev {
            Event::NeighborUp(id) => {
                // A (re)connection: sync, to repair what was broadcast before it.
                s.peers.gossip(author_id(&id), true);
                let _ = s.asks.try_send(Ask::Pull(author_id(&id)));
            }
            Event::NeighborDown(id) => s.peers.gossip(author_id(&id), false),
            Event::Lagged => {
                // Announcements were dropped before we read them: sync with everyone.
                tracing::debug!("gossip lagged; asking every member for a sync");
                for id in s.refresh_lookup() {
                    let _ = s.asks.try_send(Ask::Pull(id));
                }
            }
            Event::Received(m) if !s.paused() => {
                let from = author_id(&m.delivered_from);
                if s.faults.is_cut(&from) {
                    continue;
                }
                for content in s.faults.gossip(from, m.content).await {
                    s.peers.received(from, content.len());
                    queue_announced(&s, &queue, from, &content);
                }
            }
            _ => {}
        }
    }
}

/// Queues one announcement delivered by `from` for the taker; when the queue
/// is full, a sync with `from` stands in for it.
fn queue_announced(s: &Shared, queue: &mpsc::Sender<Heard>, from: AuthorId, content: &[u8]) {
    let Ok(a) = Announce::decode(content) else {
        return;
    };
    if a.seq == 0 && a.entry.is_empty() {
        let have: Vec<_> = handshake::from_wire(&a.have).into_iter().take(MAX_HAVE).collect();
        if !have.is_empty() {
            let _ = queue.try_send(Heard::Have(from, have));
        }
        return;
    }
    let Some(author) = AuthorId::from_slice(&a.author) else {
        return;
    };
    if author != s.me && queue.try_send(Heard::Entry((author, a.seq, from, a.entry))).is_err() {
        let _ = s.asks.try_send(Ask::Pull(from));
    }
}

/// Takes announced entries in groups: whatever arrived while the last group
/// was taken is fetched and ingested together, with one fsync.
///
/// An announcement can outrun what it announces: a neighbour relays it
/// before it has taken the entry itself (in a chain A-B-C where A and C never
/// meet, C hears of A's entry through B while B is still fetching it). So
/// an announced entry not held after the group is asked for again from its
/// deliverers, with backoff, until it is held or [`RETRIES`] ran out (the
/// anti-entropy round repairs the rest).
async fn take_all(s: Arc<Shared>, mut taken: mpsc::Receiver<Heard>) {
    let mut heard = Vec::new();
    // (author, seq) -> (who to ask, retries done, when next)
    let mut waiting: HashMap<(AuthorId, u64), (BTreeSet<AuthorId>, u32, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(FIRST_RETRY);
    // The tick is off while nothing waits: missed ticks must not come in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = taken.recv_many(&mut heard, 256) => {
                if n == 0 {
                    return;
                }
                let mut group = Vec::new();
                for h in heard.drain(..) {
                    match h {
                        Heard::Entry(a) => group.push(a),
                        // A digest: what the neighbour holds is checked at
                        // once below, and pulled from it if missing here.
                        Heard::Have(from, have) => {
                            let now = Instant::now();
                            for (author, seq) in have {
                                if author != s.me && waiting.len() < QUEUE && s.dir.role(&author).is_some() {
                                    waiting.entry((author, seq)).or_insert_with(|| (BTreeSet::new(), 0, now)).0.insert(from);
                                }
                            }
                        }
                    }
                }
                let announced: Vec<_> = group.iter().map(|(a, seq, from, _)| (*a, *seq, *from)).collect();
                let held = take(&s, std::mem::take(&mut group)).await;
                let next = Instant::now() + FIRST_RETRY;
                // Only what was not taken waits: the usual group costs no
                // second look at the store.
                for (author, seq, from) in announced {
                    if !held.contains(&(author, seq)) && waiting.len() < QUEUE {
                        let w = waiting.entry((author, seq)).or_insert_with(|| (BTreeSet::new(), 0, next));
                        w.0.insert(from);
                        if s.dir.role(&author).is_some() {
                            w.0.insert(author);
                        }
                    }
                }
            }
            _ = tick.tick(), if !waiting.is_empty() => {}
        }
        if waiting.is_empty() {
            continue;
        }
        let store = s.store.clone();
        let Ok(Ok(held)) = tokio::task::spawn_blocking(move || store.frontier()).await else {
            continue;
        };
        let now = Instant::now();
        waiting.retain(|(author, seq), (ask, tries, when)| {
            if held.get(author).is_some_and(|(h, _)| h >= seq) || *tries >= RETRIES {
                return false;
            }
            if *when <= now {
                for peer in ask.iter() {
                    let _ = s.asks.try_send(Ask::Pull(*peer));
                }
                *tries += 1;
                *when = now + FIRST_RETRY * 2u32.pow(*tries);
            }
            true
        });
    }
}

/// Applies announced entries, or asks their sources for a sync when it
/// cannot. Returns the (author, seq) of those it applied or already held.
async fn take(s: &Arc<Shared>, group: Vec<Announced>) -> BTreeSet<(AuthorId, u64)> {
    let mut held = BTreeSet::new();
    if s.paused() {
        return held;
    }
    // Content comes from the author when it is a member we can reach, else
    // from whoever delivered the announcement. When that fails, a sync with
    // the deliverer stands in too: it holds what it passed on, even where
    // the author is out of reach (a chain A-B-C where A and C never meet).
    let mut by_source: BTreeMap<AuthorId, (Vec<Vec<u8>>, Vec<(AuthorId, u64)>, BTreeSet<AuthorId>)> = BTreeMap::new();
    for (author, seq, from, entry) in group {
        let source = if s.dir.role(&author).is_some() && !s.cut_off(&author) {
            author
        } else {
            from
        };
        if entry.is_empty() {
            let _ = s.asks.try_send(Ask::Pull(source));
            let _ = s.asks.try_send(Ask::Pull(from));
        } else {
            let (entries, keys, deliverers) = by_source.entry(source).or_default();
            entries.push(entry);
            keys.push((author, seq));
            deliverers.insert(from);
        }
    }
    let mut ready = Vec::new();
    let mut sources = Vec::new();
    let mut ready_keys = Vec::new();
    for (source, (entries, keys, deliverers)) in by_source {
        let fetched = async {
            let missing = s.store.missing_refs(&entries)?;
            if !missing.is_empty() {
                fetch::fetch_from(s, source, &missing).await?;
            }
            anyhow::Ok(())
        }
        .await;
        match fetched {
            Ok(()) => {
                sources.extend(std::iter::repeat_n(source, entries.len()));
                ready.extend(entries);
                ready_keys.extend(keys);
            }
            Err(e) => {
                tracing::debug!(peer = %source.short(), "cannot fetch announced content: {e:#}");
                for peer in deliverers.into_iter().chain([source]) {
                    let _ = s.asks.try_send(Ask::Pull(peer));
                }
            }
        }
    }
    if ready.is_empty() || s.paused() {
        return held;
    }
    let store = s.store.clone();
    let out = match tokio::task::spawn_blocking(move || store.ingest(&ready)).await {
        Ok(Ok(out)) => out,
        _ => {
            for source in sources {
                let _ = s.asks.try_send(Ask::Pull(source));
            }
            return held;
        }
    };
    for ((o, source), key) in out.into_iter().zip(sources).zip(ready_keys) {
        match o {
            Outcome::Applied { .. } | Outcome::Duplicate => {
                held.insert(key);
            }
            Outcome::Refused(r) => {
                s.note_refusal(source, &r);
                let _ = s.asks.try_send(Ask::Pull(source));
            }
            _ => {
                let _ = s.asks.try_send(Ask::Pull(source));
            }
        }
    }
    held
}

/// Keeps the topic joined with members: new ones at once; and every 10 s,
/// while this node has fewer than [`FEW_LINKS`] live links, those without one
/// (a link refused because one side had not yet seen the other's admission
/// is tried again, and a node whose neighbours left is never isolated). The
/// gossip layer keeps a bounded set of neighbours, so a well-linked node does
/// not churn it.
async fn meet(s: Arc<Shared>, tx: GossipSender, _gossip: Gossip) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let mut known = std::collections::HashSet::new();
    let mut round = 0u32;
    loop {
        tick.tick().await;
        round = round.wrapping_add(1);
        let members = s.refresh_lookup();
        let up = members.iter().filter(|id| s.peers.gossip_up(id)).count();
        let retry = round.is_multiple_of(5) && up < FEW_LINKS;
        let ids: Vec<_> = members
            .into_iter()
            .filter(|id| known.insert(*id) || (retry && !s.peers.gossip_up(id)))
            .filter_map(|id| endpoint_id(&id))
            .collect();
        let ids: Vec<_> = ids.into_iter().filter(|id| !s.faults.is_cut(&author_id(id))).collect();
        if !ids.is_empty() && !s.paused() {
            let _ = tx.join_peers(ids).await;
        }
    }
}

//! What this node knows of each peer: when it last synced, what the peer had
//! then, where it was last seen, the bytes exchanged, its clock, failures and
//! backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use store::AuthorId;

use crate::Directory;

#[derive(Default)]
struct Peer {
    last_sync_ms: Option<u64>,
    last_contact: Option<Instant>,
    frontier: BTreeMap<AuthorId, u64>,
    /// Addresses the peer announced in its last handshake, and those its
    /// connections came from.
    seen_at: Vec<String>,
    failures: u32,
    retry_at: Option<Instant>,
    gossip_up: bool,
    bytes_sent: u64,
    bytes_received: u64,
    chunks_sent: u64,
    /// The peer's clock minus ours at the last handshake (ms).
    skew_ms: i64,
}

#[derive(Default)]
pub(crate) struct Peers(Mutex<HashMap<AuthorId, Peer>>);

/// One line of `mountctl status` / `mountctl peers`.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub id: AuthorId,
    /// Published addresses first, then those the peer was last seen at.
    pub addrs: Vec<String>,
    pub online: bool,
    pub last_sync_ms: Option<u64>,
    /// Entries this node has that the peer lacked at the last contact.
    pub pending: u64,
    /// Entries the peer had at the last contact that this node lacks.
    pub behind: u64,
    pub failures: u32,
    /// Bytes of every kind (sync frames, content chunks, gossip) since start.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Content chunks this node served to the peer.
    pub chunks_sent: u64,
    /// The peer's clock minus this node's, at the last handshake.
    pub skew_ms: i64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Peers contacted within this long count as online.
const ONLINE: Duration = Duration::from_secs(60);

fn missing(have: &BTreeMap<AuthorId, u64>, lacks: &BTreeMap<AuthorId, u64>) -> u64 {
    have.iter()
        .map(|(a, s)| s.saturating_sub(lacks.get(a).copied().unwrap_or(0)))
        .fold(0u64, u64::saturating_add)
}

impl Peers {
    /// Is a gossip link with `id` up now?
    pub fn gossip_up(&self, id: &AuthorId) -> bool {
        self.0.lock().unwrap().get(id).is_some_and(|p| p.gossip_up)
    }

    pub fn known(&self, id: &AuthorId) -> bool {
        self.0.lock().unwrap().contains_key(id)
    }

    /// A handshake with `id` succeeded: it is reachable, so its backoff is
    /// over (a dial-back must not wait out failures from before). Returns the
    /// clock skew it had before, to log a change once.
    pub fn contact(&self, id: AuthorId, frontier: BTreeMap<AuthorId, u64>, seen_at: Vec<String>, skew_ms: i64) -> i64 {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.last_contact = Some(Instant::now());
        p.frontier = frontier;
        if !seen_at.is_empty() {
            p.seen_at = seen_at;
        }
        p.failures = 0;
        p.retry_at = None;
        std::mem::replace(&mut p.skew_ms, skew_ms)
    }

    /// The peer now has at least `frontier` (it pulled it from us, or we from it).
    pub fn has(&self, id: AuthorId, frontier: &BTreeMap<AuthorId, u64>) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        for (a, s) in frontier {
            let e = p.frontier.entry(*a).or_default();
            *e = (*e).max(*s);
        }
    }

    pub fn synced(&self, id: AuthorId) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.last_sync_ms = Some(now_ms());
        p.last_contact = Some(Instant::now());
        p.failures = 0;
        p.retry_at = None;
    }

    pub fn sent(&self, id: AuthorId, n: usize) {
        self.0.lock().unwrap().entry(id).or_default().bytes_sent += n as u64;
    }

    pub fn chunk_sent(&self, id: AuthorId) {
        self.0.lock().unwrap().entry(id).or_default().chunks_sent += 1;
    }

    pub fn received(&self, id: AuthorId, n: usize) {
        self.0.lock().unwrap().entry(id).or_default().bytes_received += n as u64;
    }

    /// Exponential backoff, 1 s doubling to 60 s; other peers are unaffected.
    pub fn failed(&self, id: AuthorId) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.failures += 1;
        let secs = 1u64 << p.failures.min(6);
        p.retry_at = Some(Instant::now() + Duration::from_secs(secs.min(60)));
    }

    pub fn may_try(&self, id: &AuthorId) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(id)
            .and_then(|p| p.retry_at)
            .is_none_or(|t| Instant::now() >= t)
    }

    /// A gossip link with `id` came up or went down. Up proves it reachable:
    /// its backoff ends, so the sync its link asks for is not dropped.
    pub fn gossip(&self, id: AuthorId, up: bool) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.gossip_up = up;
        if up {
            p.last_contact = Some(Instant::now());
            p.failures = 0;
            p.retry_at = None;
        }
    }

    /// The network this node had to `id` is back (a test healed a cut, or
    /// the node was put back online): failures from before do not count.
    pub fn forgive(&self, id: AuthorId) {
        if let Some(p) = self.0.lock().unwrap().get_mut(&id) {
            p.failures = 0;
            p.retry_at = None;
        }
    }

    /// Forgets what was known of peers that are no longer members (the gate
    /// closes their connections).
    pub fn forget_non_members(&self, dir: &dyn Directory) {
        self.0.lock().unwrap().retain(|id, _| dir.role(id).is_some());
    }

    pub fn status(&self, members: &[(AuthorId, Vec<String>)], mine: &BTreeMap<AuthorId, u64>) -> Vec<PeerStatus> {
        let m = self.0.lock().unwrap();
        members
            .iter()
            .map(|(id, addrs)| {
                let p = m.get(id);
                let mut addrs = addrs.clone();
                for a in p.map(|p| p.seen_at.clone()).unwrap_or_default() {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                PeerStatus {
                    id: *id,
                    addrs,
                    online: p.is_some_and(|p| p.gossip_up || p.last_contact.is_some_and(|t| t.elapsed() < ONLINE)),
                    last_sync_ms: p.and_then(|p| p.last_sync_ms),
                    pending: p.map_or_else(
                        || mine.values().fold(0u64, |a, b| a.saturating_add(*b)),
                        |p| missing(mine, &p.frontier),
                    ),
                    behind: p.map_or(0, |p| missing(&p.frontier, mine)),
                    failures: p.map_or(0, |p| p.failures),
                    bytes_sent: p.map_or(0, |p| p.bytes_sent),
                    bytes_received: p.map_or(0, |p| p.bytes_received),
                    chunks_sent: p.map_or(0, |p| p.chunks_sent),
                    skew_ms: p.map_or(0, |p| p.skew_ms),
                }
            })
            .collect()
    }
}

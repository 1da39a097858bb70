//! What this node knows of each peer: when it last synced, what the peer had
//! then, failures and backoff.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use store::AuthorId;

use crate::Directory;

#[derive(Default)]
struct Peer {
    last_sync_ms: Option<u64>,
    last_contact: Option<Instant>,
    frontier: BTreeMap<AuthorId, u64>,
    failures: u32,
    retry_at: Option<Instant>,
    gossip_up: bool,
}

#[derive(Default)]
pub(crate) struct Peers(Mutex<HashMap<AuthorId, Peer>>);

/// One line of `mountctl status` / `mountctl peers`.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub id: AuthorId,
    pub addrs: Vec<SocketAddr>,
    pub online: bool,
    pub last_sync_ms: Option<u64>,
    /// Entries this node has that the peer lacked at the last contact.
    pub pending: u64,
    pub failures: u32,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Peers contacted within this long count as online.
const ONLINE: Duration = Duration::from_secs(60);

impl Peers {
    /// Is a gossip link with `id` up now?
    pub fn gossip_up(&self, id: &AuthorId) -> bool {
        self.0.lock().unwrap().get(id).is_some_and(|p| p.gossip_up)
    }

    pub fn known(&self, id: &AuthorId) -> bool {
        self.0.lock().unwrap().contains_key(id)
    }

    /// A session handshake with `id` succeeded: it is reachable, so its
    /// backoff is over (a dial-back must not wait out failures from before).
    pub fn contact(&self, id: AuthorId, frontier: BTreeMap<AuthorId, u64>) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.last_contact = Some(Instant::now());
        p.frontier = frontier;
        p.failures = 0;
        p.retry_at = None;
    }

    pub fn synced(&self, id: AuthorId) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.last_sync_ms = Some(now_ms());
        p.last_contact = Some(Instant::now());
        p.failures = 0;
        p.retry_at = None;
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

    pub fn gossip(&self, id: AuthorId, up: bool) {
        let mut m = self.0.lock().unwrap();
        let p = m.entry(id).or_default();
        p.gossip_up = up;
        if up {
            p.last_contact = Some(Instant::now());
        }
    }

    /// Forgets what was known of peers that are no longer members (the gate
    /// closes their connections).
    pub fn forget_non_members(&self, dir: &dyn Directory) {
        self.0.lock().unwrap().retain(|id, _| dir.role(id).is_some());
    }

    pub fn status(&self, members: &[(AuthorId, Vec<SocketAddr>)], mine: &BTreeMap<AuthorId, u64>) -> Vec<PeerStatus> {
        let m = self.0.lock().unwrap();
        members
            .iter()
            .map(|(id, addrs)| {
                let p = m.get(id);
                let pending = p.map_or_else(
                    || mine.values().sum(),
                    |p| {
                        mine.iter()
                            .map(|(a, s)| s.saturating_sub(p.frontier.get(a).copied().unwrap_or(0)))
                            .sum()
                    },
                );
                PeerStatus {
                    id: *id,
                    addrs: addrs.clone(),
                    online: p.is_some_and(|p| p.gossip_up || p.last_contact.is_some_and(|t| t.elapsed() < ONLINE)),
                    last_sync_ms: p.and_then(|p| p.last_sync_ms),
                    pending,
                    failures: p.map_or(0, |p| p.failures),
                }
            })
            .collect()
    }
}

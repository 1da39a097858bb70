//! Lattice's network layer: an iroh endpoint keyed by the node's identity,
//! the sync protocol (`lattice/sync/1`: frontiers, then what the other side
//! lacks, in bounded batches, with content chunks fetched before the entries
//! that need them), live push over iroh-gossip, anti-entropy with backoff,
//! invites and admission.
//!
//! It sees the store only as a [`store::SyncStore`] and the share's membership
//! only through [`Directory`], which the daemon implements: the network never
//! writes to the store itself (admission goes through `Directory::admit`).

pub mod endpoint;
mod gate;
mod gossip;
mod heal;
mod peers;
mod sync;
pub mod ticket;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use iroh::address_lookup::MemoryLookup;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointId};
use store::{AuthorId, Role, SyncStore};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use peers::PeerStatus;
pub use ticket::Ticket;

pub const SYNC_ALPN: &[u8] = b"lattice/sync/1";

/// The share's membership as the network needs it. Implemented by the daemon
/// over the store.
pub trait Directory: Send + Sync + 'static {
    fn role(&self, id: &AuthorId) -> Option<Role>;
    /// Every other member, with the addresses it published.
    fn members(&self) -> Vec<(AuthorId, Vec<SocketAddr>)>;
    /// Admits `joiner` with an invite secret: writes the admission entry
    /// (durably) or says why not.
    fn admit(&self, joiner: &AuthorId, secret: &[u8]) -> Result<Role, String>;
}

#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// Period of the anti-entropy round with a random member.
    pub anti_entropy: Duration,
    /// Timeout of every dial.
    pub dial_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "0.0.0.0:0".parse().expect("literal"),
            anti_entropy: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
        }
    }
}

/// State shared by the protocol handlers and the tasks.
pub(crate) struct Shared {
    pub store: Arc<dyn SyncStore>,
    pub dir: Arc<dyn Directory>,
    pub endpoint: Endpoint,
    pub lookup: MemoryLookup,
    pub cfg: Config,
    pub me: AuthorId,
    /// Fault injection for partition tests: while set, the node neither
    /// accepts, dials nor gossips, as if its network were cut.
    pub paused: AtomicBool,
    pub peers: peers::Peers,
    /// Every connection, to cut off a removed peer.
    pub gate: gate::Gate,
    /// Ask for a sync session with a peer.
    pub pull_tx: mpsc::UnboundedSender<AuthorId>,
    /// Bytes this node sent to peers (sync frames, chunks, gossip).
    pub sent: std::sync::atomic::AtomicU64,
    /// The share's gossip topic, once subscribed.
    pub gossip_tx: std::sync::OnceLock<iroh_gossip::api::GossipSender>,
    /// Set when a peer proved this node was removed or made a reader.
    pub evicted: tokio::sync::watch::Sender<Option<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({})", self.me)
    }
}

impl Shared {
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Feeds the address book from the directory.
    pub fn refresh_lookup(&self) -> Vec<AuthorId> {
        let members = self.dir.members();
        for (id, addrs) in &members {
            endpoint::remember(&self.lookup, id.0, addrs);
        }
        members
            .into_iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(id, _)| id)
            .collect()
    }

    /// Links up on the gossip topic with every member we can reach, now: a
    /// message broadcast before a link exists is lost.
    pub async fn meet(&self) {
        let ids: Vec<_> = self.refresh_lookup().iter().filter_map(endpoint_id).collect();
        if let (Some(tx), false) = (self.gossip_tx.get(), ids.is_empty()) {
            let _ = tx.join_peers(ids).await;
        }
    }
}

pub(crate) fn endpoint_id(a: &AuthorId) -> Option<EndpointId> {
    iroh::PublicKey::from_bytes(&a.0).ok()
}

pub(crate) fn author_id(e: &EndpointId) -> AuthorId {
    AuthorId(*e.as_bytes())
}

/// A running network service. Every task it spawns is owned here and stops
/// on [`Net::shutdown`].
pub struct Net {
    shared: Arc<Shared>,
    router: Router,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl Net {
    pub async fn start(
        secret: [u8; 32],
        store: Arc<dyn SyncStore>,
        dir: Arc<dyn Directory>,
        cfg: Config,
    ) -> Result<Net> {
        let lookup = MemoryLookup::new();
        let gate = gate::Gate::new(dir.clone());
        let ep = endpoint::bind(secret, cfg.bind, &lookup, gate.clone()).await?;
        let (pull_tx, pull_rx) = mpsc::unbounded_channel();
        let me = author_id(&ep.id());
        let shared = Arc::new(Shared {
            store,
            dir,
            endpoint: ep.clone(),
            lookup,
            cfg,
            me,
            paused: AtomicBool::new(false),
            peers: peers::Peers::default(),
            gate,
            pull_tx,
            gossip_tx: std::sync::OnceLock::new(),
            evicted: tokio::sync::watch::Sender::new(None),
            sent: std::sync::atomic::AtomicU64::new(0),
        });
        let members = shared.refresh_lookup();
        let gossip = iroh_gossip::Gossip::builder().spawn(ep.clone());
        let router = Router::builder(ep)
            .accept(SYNC_ALPN, sync::SyncProtocol(shared.clone()))
            .accept(
                iroh_gossip::ALPN,
                gossip::Guarded {
                    gossip: gossip.clone(),
                    shared: shared.clone(),
                },
            )
            .spawn();
        let mut tasks = JoinSet::new();
        tasks.spawn(sync::scheduler(shared.clone(), pull_rx));
        tasks.spawn(sync::anti_entropy(shared.clone()));
        tasks.spawn(heal::run(shared.clone(), shared.store.watch_wanted()));
        gossip::start(&mut tasks, shared.clone(), gossip, members).await?;
        Ok(Net {
            shared,
            router,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Addresses peers can dial (for tickets and `addrs/`).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        endpoint::advertised(&self.shared.endpoint)
    }

    /// Joins a share through an inviter: one sync session that presents the
    /// secret, is admitted, and pulls everything. Returns entries applied.
    pub async fn join(&self, t: &Ticket) -> Result<usize> {
        let inviter = AuthorId(t.inviter);
        endpoint::remember(&self.shared.lookup, t.inviter, &t.addrs);
        let n = sync::pull(&self.shared, inviter, Some(&t.secret)).await?;
        self.shared.meet().await;
        Ok(n)
    }

    /// One sync session with `peer` now; entries applied.
    pub async fn sync_with(&self, peer: AuthorId) -> Result<usize> {
        sync::pull(&self.shared, peer, None).await
    }

    /// An anti-entropy round with every member now (`mountctl sync`).
    pub async fn sync_all(&self) -> Vec<(AuthorId, Result<usize>)> {
        let mut out = Vec::new();
        for id in self.shared.refresh_lookup() {
            out.push((id, sync::pull(&self.shared, id, None).await));
        }
        out
    }

    /// The directory changed (members, roles, addresses): refresh addresses,
    /// meet new members, and cut off removed ones.
    pub fn directory_changed(&self) {
        let s = self.shared.clone();
        {
            let mut tasks = self.tasks.lock().unwrap();
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move { s.meet().await });
        }
        for id in self.shared.refresh_lookup() {
            if !self.shared.peers.known(&id) {
                let _ = self.shared.pull_tx.send(id);
            }
        }
        self.shared.peers.forget_non_members(self.shared.dir.as_ref());
        self.shared.gate.close_non_members();
    }

    /// Tells `peer`, just removed from the share (or made a reader), with the
    /// signed entry that did it and nothing else, so that its mount turns
    /// read-only at once instead of failing in silence.
    pub fn notify_removed(&self, peer: AuthorId) {
        let s = self.shared.clone();
        self.tasks.lock().unwrap().spawn(async move {
            match sync::notify_removed(&s, peer).await {
                Ok(()) => tracing::info!(peer = %peer.short(), "told a removed peer"),
                Err(e) => tracing::info!(peer = %peer.short(), "cannot tell a removed peer now (it will learn at its next sync): {e:#}"),
            }
        });
    }

    /// Changes to `Some(why)` when a peer proves this node was removed from
    /// the share or made a reader.
    pub fn watch_evicted(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.evicted.subscribe()
    }

    /// Bytes sent to peers since start.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
        if !paused {
            for id in self.shared.refresh_lookup() {
                let _ = self.shared.pull_tx.send(id);
            }
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let mine: BTreeMap<AuthorId, u64> = self
            .shared
            .store
            .frontier()
            .unwrap_or_default()
            .into_iter()
            .map(|(a, (s, _))| (a, s))
            .collect();
        let members = self.shared.dir.members();
        self.shared.peers.status(&members, &mine)
    }

    pub async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        if tokio::time::timeout(Duration::from_secs(5), self.router.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the peer endpoint did not close within 5 s");
        }
    }
}

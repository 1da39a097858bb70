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
mod faults;
mod fetch;
mod frames;
mod gate;
mod gossip;
mod handshake;
mod heal;
mod links;
mod peers;
mod schedule;
mod snapshot;
mod sync;
pub mod ticket;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use iroh::address_lookup::MemoryLookup;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointId};
use store::{AuthorId, Role, SyncStore};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use faults::GossipFaults;
pub use gossip::topic_of as gossip_topic;
pub use peers::PeerStatus;

/// A peer answered and said no (not a member, a used or expired ticket, a
/// version it does not speak), as opposed to not answering.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
pub use ticket::Ticket;

pub const SYNC_ALPN: &[u8] = b"lattice/sync/2";

/// The share's membership as the network needs it. Implemented by the daemon
/// over the store.
pub trait Directory: Send + Sync + 'static {
    fn role(&self, id: &AuthorId) -> Option<Role>;
    /// Every other member, with the addresses it published ("IP:PORT" or a
    /// relay URL).
    fn members(&self) -> Vec<(AuthorId, Vec<String>)>;
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
    /// How far ahead of ours a peer's clock may be before its entries are
    /// refused (the store's bound; here to tell the user).
    pub max_drift: Duration,
    /// Relays, address lookup and local discovery (see [`endpoint::Reach`]).
    pub reach: endpoint::Reach,
    /// Whether tests may inject faults (see [`Net::cut`]); off for real use.
    pub faults: bool,
    /// A join takes the share's state from a snapshot, not every entry
    /// since the share began (see `snapshot.rs`).
    pub join_snapshot: bool,
}

impl Default for Config {
    /// What tests and embedded uses want: no relay, no lookup beyond the
    /// share's own address records. `mountctl` turns the real-world reach on.
    fn default() -> Self {
        Config {
            bind: "0.0.0.0:0".parse().expect("literal"),
            anti_entropy: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
            max_drift: Duration::from_secs(600),
            reach: endpoint::Reach::default(),
            faults: false,
            join_snapshot: true,
        }
    }
}

/// Asks waiting for the scheduler. Past this, new ones are dropped: each is
/// a sync the next ask or the anti-entropy round also does, and a peer's
/// flood must not grow a queue without bound.
const ASKS: usize = 4096;

/// What the scheduler is asked to do.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ask {
    /// A sync session with the peer (unless one runs: then once more after it).
    Pull(AuthorId),
    /// The peer is back on a new link: drop any session on the old one and start anew.
    Fresh(AuthorId),
}

/// Counters of what came in, for join progress and `status`.
#[derive(Default, Debug)]
pub(crate) struct Progress {
    pub entries: AtomicU64,
    pub chunks: AtomicU64,
    pub chunk_bytes: AtomicU64,
}

impl Progress {
    pub fn entries(&self, n: usize) {
        self.entries.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What has come in since start (see [`Net::progress`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    /// Entries received in sync batches.
    pub entries: u64,
    /// Content chunks fetched, and their bytes.
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Every byte received from peers.
    pub bytes: u64,
    /// Entries the best-informed peer has that this node lacks (as of the
    /// last contact with each).
    pub behind: u64,
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
    /// Per-peer cuts and gossip faults, for tests.
    pub faults: Arc<faults::Faults>,
    pub peers: peers::Peers,
    /// Every connection, to cut off a removed peer.
    pub gate: gate::Gate,
    /// Asks for the scheduler.
    pub asks: mpsc::Sender<Ask>,
    /// Live connections with peers.
    pub links: links::Links,
    /// Bytes this node sent to peers (sync frames, chunks, gossip), and received.
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub progress: Progress,
    /// Refusals already logged, per peer and kind: each is logged once.
    pub refusals: std::sync::Mutex<std::collections::HashSet<(AuthorId, std::mem::Discriminant<store::Refusal>)>>,
    /// The share's gossip topic, once subscribed.
    pub gossip_tx: std::sync::OnceLock<iroh_gossip::api::GossipSender>,
    /// Woken when a sync applied entries here: neighbours are told what this
    /// node now holds (see `wire::Announce::have`).
    pub took: tokio::sync::Notify,
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

    /// Is traffic with `peer` cut (this node offline, or a test's cut)?
    pub fn cut_off(&self, peer: &AuthorId) -> bool {
        self.paused() || self.faults.is_cut(peer)
    }

    /// Logs a refused entry from `peer`: the first of each kind as a warning,
    /// the rest quietly (a peer resends what was refused at every sync).
    pub fn note_refusal(&self, peer: AuthorId, r: &store::Refusal) {
        let first = self.refusals.lock().unwrap().insert((peer, std::mem::discriminant(r)));
        if first {
            tracing::warn!(peer = %peer.short(), "refused an entry (said once per peer and kind): {r}");
        } else {
            tracing::debug!(peer = %peer.short(), "refused an entry: {r}");
        }
    }

    /// Feeds the address book from the directory; returns every other
    /// member. One that published no address may still be reachable: its
    /// handshake, a ticket or address lookup may have told where.
    pub fn refresh_lookup(&self) -> Vec<AuthorId> {
        let members = self.dir.members();
        for (id, addrs) in &members {
            endpoint::remember(&self.lookup, id.0, addrs);
        }
        members.into_iter().map(|(id, _)| id).collect()
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
        let faults = Arc::new(faults::Faults::new(cfg.faults));
        let gate = gate::Gate::new(dir.clone(), faults.clone());
        let ep = endpoint::bind(secret, cfg.bind, &cfg.reach, &lookup, gate.clone()).await?;
        let (asks, asks_rx) = mpsc::channel(ASKS);
        let me = author_id(&ep.id());
        let shared = Arc::new(Shared {
            store,
            dir,
            endpoint: ep.clone(),
            lookup,
            cfg,
            me,
            paused: AtomicBool::new(false),
            faults,
            peers: peers::Peers::default(),
            gate,
            asks,
            links: links::Links::default(),
            gossip_tx: std::sync::OnceLock::new(),
            evicted: tokio::sync::watch::Sender::new(None),
            took: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            progress: Progress::default(),
            refusals: Default::default(),
        });
        let members = shared.refresh_lookup();
        let gossip = iroh_gossip::Gossip::builder().spawn(ep.clone());
        let router = Router::builder(ep)
            .accept(SYNC_ALPN, handshake::SyncProtocol(shared.clone()))
            .accept(
                iroh_gossip::ALPN,
                gossip::Guarded {
                    gossip: gossip.clone(),
                    shared: shared.clone(),
                },
            )
            .spawn();
        let mut tasks = JoinSet::new();
        tasks.spawn(schedule::scheduler(shared.clone(), asks_rx));
        tasks.spawn(schedule::anti_entropy(shared.clone()));
        tasks.spawn(heal::run(shared.clone(), shared.store.watch_wanted()));
        gossip::start(&mut tasks, shared.clone(), gossip, members).await?;
        Ok(Net {
            shared,
            router,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Addresses peers can dial (for tickets and `addrs/`): "IP:PORT" and,
    /// with relays on, this node's home relay URL.
    pub fn addrs(&self) -> Vec<String> {
        endpoint::advertised(&self.shared.endpoint)
    }

    /// With relays on, waits (at most `wait`) until this node is connected
    /// to its home relay, so that its addresses include it (for tickets).
    pub async fn online(&self, wait: Duration) {
        if self.shared.cfg.reach.relay != endpoint::Relay::Off {
            let _ = tokio::time::timeout(wait, self.shared.endpoint.online()).await;
        }
    }

    /// The home relays and whether each is connected, for `status`.
    pub fn relays(&self) -> Vec<String> {
        use iroh::Watcher;
        self.shared
            .endpoint
            .home_relay_status()
            .get()
            .iter()
            .map(|r| match (r.is_connected(), r.last_error()) {
                (true, _) => format!("{} (connected)", r.url()),
                (false, Some(e)) => format!("{} (not connected: {e})", r.url()),
                (false, None) => format!("{} (not connected)", r.url()),
            })
            .collect()
    }

    /// The sockets the endpoint is bound to.
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.shared.endpoint.bound_sockets()
    }

    /// Members to name in a ticket besides this node: those reached within
    /// the last minute, with the addresses they were seen at (at most `n`).
    pub fn reachable_members(&self, n: usize) -> Vec<(AuthorId, Vec<String>)> {
        self.peers()
            .into_iter()
            .filter(|p| p.online && !p.addrs.is_empty())
            .take(n)
            .map(|p| (p.id, p.addrs))
            .collect()
    }

    /// Joins a share with a ticket: tries each member it names (the inviter
    /// first) until one admits this node, then pulls everything from it.
    /// Admission is idempotent: a joiner cut off before it heard the answer
    /// presents the same secret again and is let in as the member it is.
    /// Returns entries applied.
    pub async fn join(&self, t: &Ticket) -> Result<usize> {
        let mut unreachable = Vec::new();
        let mut refusals = Vec::new();
        // A member that has not yet received the invite refuses it while
        // another admits: every member named is tried before giving up.
        for (id, addrs) in t.members() {
            endpoint::remember(&self.shared.lookup, id, &addrs);
            match sync::join(&self.shared, AuthorId(id), &t.secret).await {
                Ok(n) => {
                    self.shared.meet().await;
                    return Ok(n);
                }
                Err(e) => {
                    let why = format!("{}: {e:#}", AuthorId(id).short());
                    tracing::info!("cannot join through {why}");
                    if e.downcast_ref::<Refused>().is_some() {
                        refusals.push(why);
                    } else {
                        unreachable.push(why);
                    }
                }
            }
        }
        if unreachable.is_empty() && !refusals.is_empty() {
            return Err(Refused(refusals.join("; ")).into());
        }
        refusals.extend(unreachable);
        anyhow::bail!(
            "no member named in the ticket admitted this node ({})",
            refusals.join("; ")
        )
    }

    /// One sync session with `peer` now; entries applied.
    pub async fn sync_with(&self, peer: AuthorId) -> Result<usize> {
        sync::pull(&self.shared, peer, false).await
    }

    /// A sync with every member now, both ways, all at once (`mountctl
    /// sync`): returns when each has pulled from this node and this node
    /// from it, or failed. Entries applied here, per member.
    pub async fn sync_all(&self) -> Vec<(AuthorId, Result<usize>)> {
        let ids = self.shared.refresh_lookup();
        let runs = ids.iter().map(|id| {
            let s = self.shared.clone();
            let id = *id;
            async move {
                let r = tokio::time::timeout(Duration::from_secs(300), sync::pull(&s, id, true))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 300 s")));
                (id, r)
            }
        });
        n0_future::join_all(runs).await
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
                let _ = self.shared.asks.try_send(Ask::Pull(id));
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
            match handshake::notify_removed(&s, peer).await {
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
                self.shared.peers.forgive(id);
                let _ = self.shared.asks.try_send(Ask::Pull(id));
            }
        }
    }

    /// Cuts (or, with `cut` false, restores) all traffic with `peer`, as a
    /// partition would: its link is closed, nothing is dialed, accepted or
    /// taken from gossip it delivers. Tests only (see [`Config::faults`]).
    pub fn cut(&self, peer: AuthorId, cut: bool) -> Result<(), String> {
        self.shared.faults.set_cut(peer, cut)?;
        if cut {
            self.shared.links.close(&peer);
            self.shared.gate.close_peer(&peer);
        } else {
            self.shared.peers.forgive(peer);
            let _ = self.shared.asks.try_send(Ask::Pull(peer));
        }
        Ok(())
    }

    /// Lifts every cut and gossip fault. Tests only.
    pub fn heal_all(&self) -> Result<(), String> {
        let cut = self.shared.faults.cut();
        self.shared.faults.heal_all()?;
        for id in cut {
            self.shared.peers.forgive(id);
            let _ = self.shared.asks.try_send(Ask::Pull(id));
        }
        Ok(())
    }

    /// Makes received gossip lost, duplicated, reordered or late. Tests only.
    /// `from`: only gossip that peer delivers; `None`: from every peer.
    pub fn set_gossip_faults(&self, from: Option<AuthorId>, g: GossipFaults) -> Result<(), String> {
        self.shared.faults.set_gossip(from, g)
    }

    /// What came in since start, and how far behind the best-informed peer
    /// this node is.
    pub fn progress(&self) -> Received {
        let p = &self.shared.progress;
        Received {
            entries: p.entries.load(Ordering::Relaxed),
            chunks: p.chunks.load(Ordering::Relaxed),
            chunk_bytes: p.chunk_bytes.load(Ordering::Relaxed),
            bytes: self.shared.received.load(Ordering::Relaxed),
            behind: self.peers().iter().map(|p| p.behind).max().unwrap_or(0),
        }
    }

    /// [`Net::peers`] after asking every member for its frontier now (each
    /// within `wait`): pending counts as of now, not as of the last sync.
    pub async fn peers_fresh(&self, wait: Duration) -> Vec<PeerStatus> {
        let probes = self.shared.refresh_lookup().into_iter().map(|id| {
            let s = self.shared.clone();
            async move {
                let _ = tokio::time::timeout(wait, sync::probe(&s, id)).await;
            }
        });
        n0_future::join_all(probes).await;
        self.peers()
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
        let t = std::time::Instant::now();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.shared.links.shutdown().await;
        tracing::debug!("tasks and links stopped in {:?}", t.elapsed());
        if tokio::time::timeout(Duration::from_secs(5), self.router.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the peer endpoint did not close within 5 s");
        }
        tracing::debug!("network stopped in {:?}", t.elapsed());
    }
}

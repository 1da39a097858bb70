//! Membership at the handshake: an endpoint hook that sees every connection,
//! ours and theirs, once the peer's key is known.
//!
//! Gossip connections are refused in both directions unless the peer is a
//! member: a removed peer can neither dial us nor be dialed by the gossip
//! layer (which dials on its own, out of our handlers' sight). Sync
//! connections pass: the sync handler admits a joiner by its invite secret
//! and refuses everyone else with a reason the dialer can print.
//!
//! Connections are bounded: at most [`PER_PEER`] live connections with any
//! one peer, and at most [`STRANGERS`] with peers that are not members
//! (joiners presenting invites, strangers about to be refused). Past either,
//! a new connection closes the oldest one over the cap: a restarted peer's
//! old connections look alive until QUIC's idle timeout and its new ones must
//! win, and a flood of strangers must not lock out a joiner. A stranger that
//! says nothing is dropped after 10 s (`frames::HELLO_WAIT`). Members are
//! never counted against the strangers' cap.
//!
//! Connections with members are remembered (weakly), so
//! [`Gate::close_non_members`] can cut a removed peer off at once, whichever
//! side dialed. A joiner's connection is not one of them: a directory change
//! while it presents its invite must not cut it.

use std::sync::{Arc, Mutex};

use iroh::endpoint::{AfterHandshakeOutcome, Connection, EndpointHooks, VarInt, WeakConnectionHandle};

use crate::faults::Faults;
use crate::{Directory, author_id, handshake};

#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Inner>);

/// Live connections one peer may hold with this node (a link, gossip, and
/// the overlap while a restarted peer replaces its old ones).
pub(crate) const PER_PEER: usize = 8;
/// Live connections with non-members (joiners presenting invites, or
/// strangers about to be refused) all together.
pub(crate) const STRANGERS: usize = 64;

struct Inner {
    dir: Arc<dyn Directory>,
    /// A test's cuts: no connection with a cut peer, on any protocol.
    faults: Arc<Faults>,
    /// Connections with members. Invariant: a connection is added under this
    /// lock only after its peer was found a member under it, and removals
    /// check membership under it too, so a removal cannot slip between the
    /// check and the record.
    conns: Mutex<Vec<WeakConnectionHandle>>,
    /// Every live connection, with whether its peer was a member when it
    /// came, for the caps.
    live: Mutex<Vec<(store::AuthorId, bool, WeakConnectionHandle)>>,
    /// Set while connections are being refused over a cap: said once in
    /// the log per episode, not once per connection.
    over_cap: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.conns.try_lock() {
            Ok(c) => write!(f, "Gate({} connections)", c.len()),
            Err(_) => f.write_str("Gate(busy)"),
        }
    }
}

impl Gate {
    pub fn new(dir: Arc<dyn Directory>, faults: Arc<Faults>) -> Gate {
        Gate(Arc::new(Inner {
            dir,
            faults,
            conns: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            over_cap: Default::default(),
        }))
    }

    /// Closes every open connection with a peer that is no longer a member.
    pub fn close_non_members(&self) {
        let mut gone = Vec::new();
        {
            let mut conns = self.0.conns.lock().unwrap();
            conns.retain(|w| {
                let Some(c) = w.upgrade() else { return false };
                if self.0.dir.role(&author_id(&c.remote_id())).is_some() {
                    return true;
                }
                gone.push(c);
                false
            });
        }
        for c in gone {
            tracing::info!(peer = %author_id(&c.remote_id()).short(), "closing a removed peer's connection");
            c.close(VarInt::from_u32(handshake::CODE_REFUSED), b"removed from the share");
        }
    }
}

impl Gate {
    /// Closes every open connection with `peer` (a test cut it off).
    pub fn close_peer(&self, peer: &store::AuthorId) {
        let gone: Vec<_> = {
            let mut conns = self.0.conns.lock().unwrap();
            let mut gone = Vec::new();
            conns.retain(|w| match w.upgrade() {
                Some(c) if author_id(&c.remote_id()) == *peer => {
                    gone.push(c);
                    false
                }
                Some(_) => true,
                None => false,
            });
            gone
        };
        for c in gone {
            c.close(VarInt::from_u32(handshake::CODE_REFUSED), b"cut");
        }
    }

    /// A joiner was admitted on `conn`: from now on it is cut off like any
    /// member's if it is removed.
    pub fn admitted(&self, conn: &Connection) {
        // No longer a stranger: not to be closed for the strangers' cap.
        for (_, member, w) in self.0.live.lock().unwrap().iter_mut() {
            if w.upgrade().is_some_and(|c| c.stable_id() == conn.stable_id()) {
                *member = true;
            }
        }
        let mut conns = self.0.conns.lock().unwrap();
        if self.0.dir.role(&author_id(&conn.remote_id())).is_some() {
            conns.retain(|w| w.upgrade().is_some());
            conns.push(conn.weak_handle());
        }
    }
}

impl EndpointHooks for Gate {
    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        let peer = author_id(&conn.remote_id());
        if self.0.faults.is_cut(&peer) {
            return AfterHandshakeOutcome::Reject {
                error_code: VarInt::from_u32(handshake::CODE_REFUSED),
                reason: b"cut".to_vec(),
            };
        }
        let member = self.0.dir.role(&peer).is_some();
        {
            let mut live = self.0.live.lock().unwrap();
            live.retain(|(_, _, w)| w.upgrade().is_some_and(|c| c.close_reason().is_none()));
            let theirs = live.iter().filter(|(p, _, _)| *p == peer).count();
            let strangers = live.iter().filter(|(_, m, _)| !m).count();
            if !member && strangers >= STRANGERS {
                // The oldest stranger goes, not the newcomer: a flood of
                // strangers must not lock a joiner with a valid invite out.
                if !self.0.over_cap.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %peer.short(),
                        "over the caps: more than {STRANGERS} connections from non-members, the oldest are closed; said once until they clear"
                    );
                }
                if let Some(i) = live.iter().position(|(_, m, _)| !m) {
                    let (_, _, w) = live.remove(i);
                    if let Some(c) = w.upgrade() {
                        c.close(VarInt::from_u32(handshake::CODE_REFUSED), b"too many connections");
                    }
                }
            }
            if theirs >= PER_PEER {
                // The newest wins: a peer killed and restarted leaves live-
                // looking connections here until QUIC's idle timeout, and its
                // new ones must get in. The oldest of its connections go.
                let mut extra = theirs + 1 - PER_PEER;
                live.retain(|(p, _, w)| {
                    if extra == 0 || *p != peer {
                        return true;
                    }
                    extra -= 1;
                    if let Some(c) = w.upgrade() {
                        c.close(VarInt::from_u32(handshake::CODE_REFUSED), b"too many connections");
                    }
                    false
                });
                tracing::debug!(peer = %peer.short(), "over {PER_PEER} connections: closed its oldest");
            }
            if strangers < STRANGERS / 2 {
                self.0.over_cap.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            live.push((peer, member, conn.weak_handle()));
        }
        let mut conns = self.0.conns.lock().unwrap();
        if !member && conn.alpn() == iroh_gossip::ALPN {
            tracing::debug!(peer = %peer.short(), "refused a gossip link with a non-member");
            return AfterHandshakeOutcome::Reject {
                error_code: VarInt::from_u32(handshake::CODE_REFUSED),
                reason: b"not a member of this share".to_vec(),
            };
        }
        if member {
            conns.retain(|w| w.upgrade().is_some());
            conns.push(conn.weak_handle());
        }
        AfterHandshakeOutcome::Accept
    }
}

//! Live connections with peers, one per peer, shared by every sync session,
//! chunk fetch and probe: a gossip fetch or an anti-entropy round never pays
//! for a dial and a handshake while a link is up. Both ends serve requests on
//! a link, so either side pulls over it, whoever dialed.
//!
//! A peer that restarts dials in on a new connection while the old one may
//! still look alive here (until QUIC's idle timeout). The newest link wins,
//! and [`Links::insert`] says so, so that a session stuck on the old one is
//! restarted at once instead of holding back the catch-up. The old one is
//! not closed: when both sides dial at the same moment, each would close the
//! other's choice and leave none.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use iroh::endpoint::{Connection, VarInt};
use store::AuthorId;
use tokio::task::JoinSet;

#[derive(Default)]
pub(crate) struct Links {
    live: Mutex<HashMap<AuthorId, Connection>>,
    /// The request loops of links this node dialed (those it accepted are
    /// served by the router's accept task).
    served: Mutex<JoinSet<()>>,
}

impl Links {
    /// The live link with `peer`, if any.
    pub fn get(&self, peer: &AuthorId) -> Option<Connection> {
        let mut m = self.live.lock().unwrap();
        match m.get(peer) {
            Some(c) if c.close_reason().is_none() => Some(c.clone()),
            Some(_) => {
                m.remove(peer);
                None
            }
            None => None,
        }
    }

    /// Records `conn` as the link with `peer`. True when it replaces another
    /// live link: the peer came back on a new connection.
    pub fn insert(&self, peer: AuthorId, conn: &Connection) -> bool {
        let old = self.live.lock().unwrap().insert(peer, conn.clone());
        old.is_some_and(|o| o.stable_id() != conn.stable_id() && o.close_reason().is_none())
    }

    /// Forgets `conn` if it is still the link with `peer`.
    pub fn remove(&self, peer: &AuthorId, conn: &Connection) {
        let mut m = self.live.lock().unwrap();
        if m.get(peer).is_some_and(|c| c.stable_id() == conn.stable_id()) {
            m.remove(peer);
        }
    }

    /// Closes the link with `peer`, if any.
    pub fn close(&self, peer: &AuthorId) {
        if let Some(c) = self.live.lock().unwrap().remove(peer) {
            c.close(VarInt::from_u32(0), b"cut");
        }
    }

    /// Runs the request loop of a link this node dialed, owned here.
    pub fn serve(&self, f: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.served.lock().unwrap();
        while set.try_join_next().is_some() {}
        set.spawn(f);
    }

    /// Stops every request loop and closes every link.
    pub async fn shutdown(&self) {
        let mut set = std::mem::take(&mut *self.served.lock().unwrap());
        set.abort_all();
        while set.join_next().await.is_some() {}
        for (_, c) in self.live.lock().unwrap().drain() {
            c.close(VarInt::from_u32(0), b"shutting down");
        }
    }
}

//! Faults for partition tests: a node can be told to cut its traffic with
//! chosen peers (a partition, or a chain where two members never talk), and
//! to lose, duplicate, reorder or delay the gossip it receives.
//!
//! Only tests turn this on ([`crate::Config::faults`], set by the daemon
//! from `LATTICE_TEST_FAULTS=1`); with it off every check here is one
//! relaxed load. The sync protocol runs over QUIC streams, which a real
//! network can only slow down or break, never corrupt or reorder: a cut
//! covers that. Gossip is where a real network loses, repeats and reorders
//! what the application sees, so that is where those faults apply.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use store::AuthorId;

/// What gossip suffers, in percent per message (delay: for every message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipFaults {
    pub loss: u8,
    pub duplicate: u8,
    pub reorder: u8,
    pub delay: Duration,
}

#[derive(Default)]
pub(crate) struct Faults {
    enabled: bool,
    /// Set while any fault is in force: the fast path reads only this.
    active: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cut: HashSet<AuthorId>,
    /// Per deliverer (`None`: every other one).
    gossip: std::collections::HashMap<Option<AuthorId>, GossipFaults>,
    /// A message held back to be delivered after the next one.
    held: Option<Bytes>,
}

impl Faults {
    pub fn new(enabled: bool) -> Faults {
        Faults {
            enabled,
            ..Faults::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh(&self, st: &State) {
        let on = !st.cut.is_empty() || !st.gossip.is_empty() || st.held.is_some();
        self.active.store(on, Ordering::Release);
    }

    fn check_enabled(&self) -> Result<(), String> {
        if self.enabled {
            Ok(())
        } else {
            Err("fault injection is off: it is for tests (start the daemon with LATTICE_TEST_FAULTS=1)".into())
        }
    }

    /// Cuts (or restores, with `cut` false) all traffic with `peer`.
    pub fn set_cut(&self, peer: AuthorId, cut: bool) -> Result<(), String> {
        self.check_enabled()?;
        let mut st = self.state();
        if cut {
            st.cut.insert(peer);
        } else {
            st.cut.remove(&peer);
        }
        self.refresh(&st);
        Ok(())
    }

    /// Restores traffic with every peer and clears the gossip faults.
    pub fn heal_all(&self) -> Result<(), String> {
        self.check_enabled()?;
        let mut st = self.state();
        st.cut.clear();
        st.gossip.clear();
        self.refresh(&st);
        Ok(())
    }

    /// Sets what gossip delivered by `from` suffers (`None`: by any peer
    /// without faults of its own); all zero clears them.
    pub fn set_gossip(&self, from: Option<AuthorId>, g: GossipFaults) -> Result<(), String> {
        self.check_enabled()?;
        let mut st = self.state();
        if g == GossipFaults::default() {
            st.gossip.remove(&from);
        } else {
            st.gossip.insert(from, g);
        }
        self.refresh(&st);
        Ok(())
    }

    /// Is traffic with `peer` cut?
    pub fn is_cut(&self, peer: &AuthorId) -> bool {
        self.active.load(Ordering::Acquire) && self.state().cut.contains(peer)
    }

    /// The peers traffic is cut with.
    pub fn cut(&self) -> Vec<AuthorId> {
        self.state().cut.iter().copied().collect()
    }

    /// What the application sees of one received gossip message: nothing
    /// (lost, or held back), the message, or it twice; a held-back message
    /// follows the next one. Waits out the delay first.
    pub async fn gossip(&self, from: AuthorId, msg: Bytes) -> Vec<Bytes> {
        if !self.active.load(Ordering::Acquire) {
            return vec![msg];
        }
        let g = {
            let st = self.state();
            st.gossip
                .get(&Some(from))
                .or(st.gossip.get(&None))
                .copied()
                .unwrap_or_default()
        };
        let delay = g.delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.state();
        let roll = |pct: u8| pct > 0 && rand::random::<u8>() % 100 < pct;
        let out = if roll(g.loss) {
            Vec::new()
        } else if st.held.is_none() && roll(g.reorder) {
            st.held = Some(msg);
            Vec::new()
        } else {
            let mut out = vec![msg.clone()];
            if roll(g.duplicate) {
                out.push(msg);
            }
            out.extend(st.held.take());
            out
        };
        self.refresh(&st);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_enabled() {
        let f = Faults::new(false);
        assert!(f.set_cut(AuthorId([1; 32]), true).is_err());
        assert!(!f.is_cut(&AuthorId([1; 32])));
    }

    #[tokio::test]
    async fn reorder_holds_one_back_and_loss_drops() {
        let f = Faults::new(true);
        let p = AuthorId([1; 32]);
        f.set_cut(p, true).unwrap();
        assert!(f.is_cut(&p) && !f.is_cut(&AuthorId([2; 32])));
        f.set_gossip(
            None,
            GossipFaults {
                reorder: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(f.gossip(p, Bytes::from_static(b"1")).await.is_empty());
        // Held already: the next passes, followed by the held one.
        let out = f.gossip(p, Bytes::from_static(b"2")).await;
        assert_eq!(out, vec![Bytes::from_static(b"2"), Bytes::from_static(b"1")]);
        f.set_gossip(
            None,
            GossipFaults {
                loss: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(f.gossip(p, Bytes::from_static(b"3")).await.is_empty());
        // Per deliverer: another peer's gossip passes.
        f.set_gossip(
            Some(p),
            GossipFaults {
                loss: 100,
                ..Default::default()
            },
        )
        .unwrap();
        f.set_gossip(None, GossipFaults::default()).unwrap();
        assert!(f.gossip(p, Bytes::from_static(b"5")).await.is_empty());
        assert_eq!(f.gossip(AuthorId([2; 32]), Bytes::from_static(b"6")).await.len(), 1);
        f.heal_all().unwrap();
        assert!(!f.is_cut(&p));
        assert_eq!(f.gossip(p, Bytes::from_static(b"4")).await.len(), 1);
    }
}

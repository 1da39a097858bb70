//! When sessions run: one at a time per peer, many peers at once, each peer
//! backing off on its own, so a slow or dead peer delays nobody else; a peer
//! that comes back on a new link gets a new session at once, even while one
//! on its old link is still waiting out a timeout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use store::AuthorId;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::{Ask, Shared, sync};

pub(crate) async fn scheduler(s: Arc<Shared>, mut rx: mpsc::Receiver<Ask>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(AuthorId, tokio::task::Id)>();
    let mut running: HashMap<AuthorId, AbortHandle> = HashMap::new();
    let mut again: HashSet<AuthorId> = HashSet::new();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let peer = tokio::select! {
            Some(ask) = rx.recv() => match ask {
                Ask::Pull(peer) => {
                    if peer == s.me || s.cut_off(&peer) || !s.peers.may_try(&peer) {
                        continue;
                    }
                    if running.contains_key(&peer) {
                        again.insert(peer);
                        continue;
                    }
                    peer
                }
                Ask::Fresh(peer) => {
                    if peer == s.me || s.cut_off(&peer) {
                        continue;
                    }
                    if let Some(old) = running.remove(&peer) {
                        tracing::debug!(peer = %peer.short(), "the peer is back on a new link: restarting its session");
                        old.abort();
                    }
                    again.remove(&peer);
                    peer
                }
            },
            Some((peer, id)) = done_rx.recv() => {
                if running.get(&peer).is_some_and(|h| h.id() == id) {
                    running.remove(&peer);
                    if again.remove(&peer) {
                        let _ = s.asks.try_send(Ask::Pull(peer));
                    }
                }
                continue;
            }
            Some(r) = sessions.join_next_with_id(), if !sessions.is_empty() => {
                // A session that ended without saying so (it panicked) must
                // not leave its peer marked as running for good.
                let id = match &r {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                if let Some(peer) = running.iter().find(|(_, h)| h.id() == id).map(|(p, _)| *p) {
                    running.remove(&peer);
                    if again.remove(&peer) {
                        let _ = s.asks.try_send(Ask::Pull(peer));
                    }
                }
                continue;
            }
        };
        let (s2, done) = (s.clone(), done_tx.clone());
        let handle = sessions.spawn(async move {
            if let Err(e) = sync::pull(&s2, peer, false).await {
                tracing::debug!(peer = %peer.short(), "sync failed: {e:#}");
            }
            let _ = done.send((peer, tokio::task::id()));
        });
        running.insert(peer, handle);
    }
}

/// On start, with every member; then periodically with a random one; and with
/// the author of every gap the store reports.
pub(crate) async fn anti_entropy(s: Arc<Shared>) {
    for id in s.refresh_lookup() {
        let _ = s.asks.try_send(Ask::Pull(id));
    }
    let mut gaps = s.store.watch_gaps();
    let mut tick = tokio::time::interval(s.cfg.anti_entropy);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Orphans whose gap never filled go while the node runs, not
                // only when the store opens.
                let s2 = s.clone();
                match tokio::task::spawn_blocking(move || s2.store.expire_orphans(store::hlc::wall_ms())).await {
                    Ok(Err(e)) => tracing::warn!("cannot expire orphans: {e}"),
                    Err(e) => tracing::warn!("cannot expire orphans: {e}"),
                    Ok(Ok(_)) => {}
                }
                // A member known to be out of reach (backing off, or cut by
                // a test) would waste the round: pick among the others.
                let members = s.refresh_lookup();
                let mut likely: Vec<_> = members.iter().filter(|id| !s.cut_off(id) && s.peers.may_try(id)).copied().collect();
                if likely.is_empty() {
                    likely = members;
                }
                if !likely.is_empty() {
                    let pick = likely[rand::random_range(0..likely.len())];
                    let _ = s.asks.try_send(Ask::Pull(pick));
                }
            }
            Some(gap) = gaps.recv() => {
                let members = s.refresh_lookup();
                let target = if members.contains(&gap.author) {
                    gap.author
                } else if !members.is_empty() {
                    members[rand::random_range(0..members.len())]
                } else {
                    continue;
                };
                let _ = s.asks.try_send(Ask::Pull(target));
            }
        }
    }
}

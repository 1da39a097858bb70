//! Self-healing content: a chunk found damaged here (its bytes do not match
//! its hash) is dropped by the store and asked for again from the members,
//! one after another, until one has it; while none has it, it is asked for
//! again every [`RETRY`]. A chunk read here as collected is asked for the
//! same way (a member may still keep it); once every member said it has not
//! got it, it is left alone for [`GIVEN_UP_FOR`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use store::ChunkHash;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{Shared, fetch};

/// How often chunks no member had are asked for again.
const RETRY: Duration = Duration::from_secs(30);

/// How long a chunk every member said it collected is not asked for again
/// (a past mount reading collected versions asks for each chunk it reads).
const GIVEN_UP_FOR: Duration = Duration::from_secs(3600);

pub(crate) async fn run(s: Arc<Shared>, mut wanted: UnboundedReceiver<ChunkHash>) {
    let mut outstanding: BTreeSet<ChunkHash> = BTreeSet::new();
    let mut given_up: std::collections::HashMap<ChunkHash, std::time::Instant> = Default::default();
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            h = wanted.recv() => match h {
                Some(h) => {
                    given_up.retain(|_, at| at.elapsed() < GIVEN_UP_FOR);
                    let mut take = |h: ChunkHash| {
                        if !given_up.contains_key(&h) {
                            outstanding.insert(h);
                        }
                    };
                    take(h);
                    while let Ok(h) = wanted.try_recv() {
                        take(h);
                    }
                    if outstanding.is_empty() {
                        continue;
                    }
                }
                None => return,
            },
            _ = tick.tick(), if !outstanding.is_empty() => {}
        }
        if s.paused() {
            continue;
        }
        let mut healed = 0;
        for h in outstanding.clone() {
            // A member that collected it says so (the fetch succeeds without
            // it): ask the next. When every member answered and all of them
            // collected it, no version anyone keeps needs it: stop asking.
            let (mut answered, mut members) = (0, 0);
            for (peer, _) in s.dir.members() {
                members += 1;
                let fetched = tokio::time::timeout(Duration::from_secs(30), fetch::fetch_from(&s, peer, &[h])).await;
                match fetched {
                    Ok(Ok(())) => answered += 1,
                    // It answered that it does not have it.
                    Ok(Err(e)) if format!("{e:#}").contains("lacks chunk") => {
                        answered += 1;
                        continue;
                    }
                    _ => continue,
                }
                if s.store.missing_chunks(&[h]).is_ok_and(|m| m.is_empty()) {
                    tracing::info!(chunk = %h, peer = %peer.short(), "fetched a damaged or missing chunk again from a peer");
                    outstanding.remove(&h);
                    healed += 1;
                    break;
                }
            }
            if outstanding.contains(&h) && answered == members && s.store.is_collected(&h).unwrap_or(false) {
                tracing::info!(chunk = %h, "no member keeps this chunk any more (collected under their retention policies)");
                outstanding.remove(&h);
                given_up.insert(h, std::time::Instant::now());
            }
        }
        if !outstanding.is_empty() {
            tracing::warn!(
                healed,
                missing = outstanding.len(),
                "no member has some damaged chunks now; asking again in {} s",
                RETRY.as_secs()
            );
        }
    }
}

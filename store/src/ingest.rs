//! Accepting entries from peers: every check a peer's entry must pass, in the
//! order that makes a refusal say the most useful thing.

use redb::{Durability, ReadableDatabase, ReadableTable};

use crate::entry::Entry;
use crate::error::{Refusal, Result};
use crate::hlc::{Clock, wall_ms};
use crate::ids::EntryId;
use crate::index::Tables;
use crate::store::Store;
use crate::watch::{Change, Gap};

/// What became of one offered entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, and with it `released` orphans whose gap it filled.
    Applied {
        id: EntryId,
        released: usize,
    },
    /// Already here; nothing changed.
    Duplicate,
    /// Parked until the gap before it fills.
    Orphaned(Gap),
    Refused(Refusal),
}

impl Store {
    /// Offers a batch of wire entries; one transaction, one outcome each. The
    /// batch is durable when this returns.
    pub fn ingest(&self, batch: &[Vec<u8>]) -> Result<Vec<Outcome>> {
        // Signature checks need no lock.
        let decoded: Vec<_> = batch.iter().map(|b| Entry::decode(b)).collect();
        let now = wall_ms();
        let mut clock = self.clock.lock().unwrap();
        let mut txn = self.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut changes = Vec::new();
        let mut gaps = Vec::new();
        let mut out = Vec::with_capacity(batch.len());
        let log_end;
        {
            let mut t = Tables::open(&txn)?;
            for d in decoded {
                let o = match d {
                    Ok(e) => self.admit(&mut t, e, now, &mut clock, &mut changes)?,
                    Err(r) => Outcome::Refused(r),
                };
                match &o {
                    Outcome::Refused(r) => tracing::debug!("refused an entry: {r}"),
                    Outcome::Orphaned(g) => gaps.push(*g),
                    _ => {}
                }
                out.push(o);
            }
            t.meta.insert("hlc", clock.last().0.to_be_bytes().as_slice())?;
            log_end = t.log_end()?;
            self.index_work.fetch_add(t.work, std::sync::atomic::Ordering::Relaxed);
        }
        txn.commit()?;
        self.durable.send_replace(log_end);
        drop(clock);
        // The chunks fetched for this batch are named by stored entries now
        // (or their entries were refused): see `gc.rs`.
        self.held.release(
            batch
                .iter()
                .filter_map(|b| Entry::decode_unverified(b).ok())
                .flat_map(|e| e.refs().collect::<Vec<_>>()),
        );
        // Peers may have returned entries of ours a cut had lost.
        if self.own_lost.lock().unwrap().is_some() {
            self.check_own_chain()?;
        }
        self.watchers.notify(&changes, &gaps);
        Ok(out)
    }

    fn admit(
        &self,
        t: &mut Tables,
        e: Entry,
        now: u64,
        clock: &mut Clock,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome> {
        let refuse = |r| Ok(Outcome::Refused(r));
        match e.share {
            None if e.id.0 != self.share.0 => return refuse(Refusal::WrongShare),
            Some(s) if s != self.share => return refuse(Refusal::WrongShare),
            _ => {}
        }
        if let Some(drift_ms) = clock.too_far_ahead(e.hlc, now) {
            return refuse(Refusal::FromFuture {
                author: e.author,
                drift_ms,
                max_ms: clock.max_drift_ms(),
            });
        }
        let (last, last_id) = t.tip(&e.author)?;
        if e.seq <= last {
            let same = t.chain.get((&e.author.0, e.seq))?.is_some_and(|v| *v.value() == e.id.0);
            return if same {
                Ok(Outcome::Duplicate)
            } else {
                refuse(Refusal::Fork {
                    author: e.author,
                    seq: e.seq,
                })
            };
        }
        if e.seq > last + 1 {
            if e.seq - last > self.cfg.max_orphan_gap {
                return refuse(Refusal::TooFarAhead {
                    author: e.author,
                    seq: e.seq,
                    last,
                    max: self.cfg.max_orphan_gap,
                });
            }
            if self.cfg.enforce_membership
                && let Some(r) = crate::membership::may_park(t, &e.author)?
            {
                return refuse(r);
            }
            let gap = Gap {
                author: e.author,
                from: last + 1,
                to: e.seq - 1,
            };
            let key = (&e.author.0, e.seq);
            if t.orphans.get(key)?.is_none() {
                t.orphans.insert(key, (now, e.bytes.as_slice()))?;
            }
            return Ok(Outcome::Orphaned(gap));
        }
        if e.prev != last_id {
            return refuse(Refusal::BadPrevHash {
                author: e.author,
                seq: e.seq,
            });
        }
        if let Some(r) = self.may_apply(t, &e, now)? {
            return refuse(r);
        }
        let id = e.id;
        let (author, mut seq, mut prev) = (e.author, e.seq, e.id);
        clock.observe(e.hlc);
        t.append(&e, changes, false)?;
        // Release every orphan this entry unblocks, one link at a time.
        let mut released = 0;
        loop {
            let next = t.orphans.remove((&author.0, seq + 1))?.map(|v| v.value().1.to_vec());
            let Some(bytes) = next else { break };
            match Entry::decode(&bytes) {
                Ok(o) if o.prev == Some(prev) => {
                    if let Some(r) = self.may_apply(t, &o, now)? {
                        // Not yet: it waits again (a later ingest may allow it).
                        tracing::debug!("orphan stays parked: {r}");
                        t.orphans.insert((&author.0, o.seq), (now, bytes.as_slice()))?;
                        break;
                    }
                    clock.observe(o.hlc);
                    t.append(&o, changes, false)?;
                    (seq, prev) = (o.seq, o.id);
                    released += 1;
                }
                Ok(o) => {
                    tracing::warn!("dropped an orphan: {}", Refusal::BadPrevHash { author, seq: o.seq });
                    break;
                }
                Err(r) => {
                    tracing::warn!("dropped a damaged orphan: {r}");
                    break;
                }
            }
        }
        Ok(Outcome::Applied { id, released })
    }

    /// The state-dependent checks: membership, and that every chunk the entry
    /// refers to is here (so a shown file never lacks its content).
    fn may_apply(&self, t: &Tables, e: &Entry, now: u64) -> Result<Option<Refusal>> {
        if self.cfg.enforce_membership
            && let Some(r) = crate::membership::check(t, e, now)?
        {
            return Ok(Some(r));
        }
        Ok(t.missing_ref(e)?.map(Refusal::MissingContent))
    }

    /// Drops orphans received more than the configured TTL before `now_ms`.
    pub fn expire_orphans(&self, now_ms: u64) -> Result<usize> {
        let ttl = self.cfg.orphan_ttl_ms;
        if self.orphan_count()? == 0 {
            // Nothing to look at: no write transaction at all.
            return Ok(0);
        }
        let _w = self.clock.lock().unwrap();
        let txn = self.db().begin_write()?;
        let mut n = 0;
        txn.open_table(crate::tables::ORPHANS)?.retain(|_, (at, _)| {
            let keep = at.saturating_add(ttl) > now_ms;
            n += usize::from(!keep);
            keep
        })?;
        txn.commit()?;
        if n > 0 {
            tracing::info!(expired = n, "dropped orphans whose gap never filled");
        }
        Ok(n)
    }

    /// The gaps behind the orphans held now, one per author (the lowest).
    pub fn gaps(&self) -> Result<Vec<Gap>> {
        let frontier = self.frontier()?;
        let txn = self.db().begin_read()?;
        let t = txn.open_table(crate::tables::ORPHANS)?;
        let mut out: Vec<Gap> = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            let (a, seq) = k.value();
            let author = crate::ids::AuthorId(*a);
            if out.last().is_some_and(|g| g.author == author) {
                continue;
            }
            let have = frontier.get(&author).map_or(0, |f| f.0);
            out.push(Gap {
                author,
                from: have + 1,
                to: seq - 1,
            });
        }
        Ok(out)
    }

    pub fn orphan_count(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(crate::tables::ORPHANS)?.len()?)
    }
}

//! Applying a verified entry to the tables: the log, the chains and the DAG
//! heads of every key it writes. Local writes, ingest and rebuilds all come
//! through [`Tables::append`] / [`Tables::index`], so the invariants live here:
//!
//! - an entry is appended only when it is its author's next seq and links to
//!   the previous entry (callers check; `append` asserts nothing is skipped);
//! - an entry writes each key at most once (`Entry::decode` refuses more);
//! - heads(k) = entries writing k, minus those named as a parent by an entry
//!   writing k. Parents that have not arrived yet are remembered in
//!   `SUPERSEDED`, so the result does not depend on arrival order.

use std::collections::HashSet;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::entry::Entry;
use crate::error::Result;
use crate::head::Head;
use crate::ids::{AuthorId, EntryId};
use crate::tables::*;
use crate::watch::Change;

pub(crate) struct Tables<'t> {
    pub meta: Table<'t, &'static str, &'static [u8]>,
    pub entries: Table<'t, Id, (u64, &'static [u8])>,
    pub log: Table<'t, u64, Id>,
    pub chain: Table<'t, (Id, u64), Id>,
    pub frontier: Table<'t, Id, (u64, Id)>,
    pub heads: Table<'t, (&'static [u8], Id), &'static [u8]>,
    pub awaited: Table<'t, (Id, Id), ()>,
    pub orphans: Table<'t, (Id, u64), (u64, &'static [u8])>,
    pub chunks: Table<'t, Id, &'static [u8]>,
    pub collected: Table<'t, Id, u64>,
    /// Table operations done by `index` (the index-cost test reads it).
    pub work: u64,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self> {
        // Tables only some stores fill: made here, so that readers find them.
        txn.open_table(FLOORS)?;
        txn.open_table(BASE_HEADS)?;
        Ok(Tables {
            meta: txn.open_table(META)?,
            entries: txn.open_table(ENTRIES)?,
            log: txn.open_table(LOG)?,
            chain: txn.open_table(CHAIN)?,
            frontier: txn.open_table(FRONTIER)?,
            heads: txn.open_table(HEADS)?,
            awaited: txn.open_table(AWAITED)?,
            orphans: txn.open_table(ORPHANS)?,
            chunks: txn.open_table(CHUNKS)?,
            collected: txn.open_table(COLLECTED)?,
            work: 0,
        })
    }

    /// (last seq, last id) of `author`'s chain here.
    pub fn tip(&self, author: &AuthorId) -> Result<(u64, Option<EntryId>)> {
        Ok(match self.frontier.get(&author.0)? {
            Some(g) => {
                let (seq, id) = g.value();
                (seq, Some(EntryId(*id)))
            }
            None => (0, None),
        })
    }

    pub fn heads_of(&self, key: &[u8]) -> Result<Vec<Head>> {
        let mut out = Vec::new();
        for row in self.heads.range((key, &[0u8; 32])..=(key, &[0xffu8; 32]))? {
            let (k, v) = row?;
            out.push(Head::decode_record(EntryId(*k.value().1), v.value()));
        }
        Ok(out)
    }

    /// The first content chunk `e` refers to that is not stored here.
    /// A ref that is neither here nor known to be collected (see `gc.rs`).
    pub fn missing_ref(&self, e: &Entry) -> Result<Option<crate::ChunkHash>> {
        for r in e.refs() {
            if self.chunks.get(&r.0)?.is_none() && self.collected.get(&r.0)?.is_none() {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The log position the next entry gets.
    pub fn log_end(&self) -> Result<u64> {
        Ok(match self.log.last()? {
            Some((k, _)) => k.value() + 1,
            None => 0,
        })
    }

    /// Stores `e` at the end of the log and indexes it.
    pub fn append(&mut self, e: &Entry, changes: &mut Vec<Change>, local: bool) -> Result<()> {
        let pos = self.log_end()?;
        self.entries.insert(&e.id.0, (pos, e.bytes.as_slice()))?;
        self.log.insert(pos, &e.id.0)?;
        self.index(e, changes, local)
    }

    /// Updates the chain, frontier and heads for `e`, which is already in `entries`.
    pub fn index(&mut self, e: &Entry, changes: &mut Vec<Change>, local: bool) -> Result<()> {
        debug_assert_eq!(self.tip(&e.author)?.0 + 1, e.seq, "chains are applied in order");
        self.chain.insert((&e.author.0, e.seq), &e.id.0)?;
        self.frontier.insert(&e.author.0, (e.seq, &e.id.0))?;

        let parents: HashSet<[u8; 32]> = e.parents.iter().map(|p| p.0).collect();
        for p in &parents {
            self.work += 1;
            if self.entries.get(p)?.is_none() {
                self.awaited.insert((p, &e.id.0), ())?;
            }
        }
        // Entries that named this one before it arrived: it is not a head of
        // any key they write.
        let mut covered: HashSet<Vec<u8>> = HashSet::new();
        let waiting: Vec<[u8; 32]> = self
            .awaited
            .range((&e.id.0, &[0u8; 32])..=(&e.id.0, &[0xffu8; 32]))?
            .map(|r| r.map(|(k, _)| *k.value().1))
            .collect::<Result<_, _>>()?;
        for c in &waiting {
            self.work += 1;
            if let Some(v) = self.entries.get(c)? {
                let child = Entry::decode_unverified(v.value().1)
                    .map_err(|r| crate::Error::Damaged(format!("stored entry: {r}")))?;
                covered.extend(child.ops.into_iter().map(|op| op.key));
            }
            self.awaited.remove((&e.id.0, c))?;
        }
        for op in &e.ops {
            let key = op.key.as_slice();
            let heads: Vec<[u8; 32]> = self
                .heads
                .range((key, &[0u8; 32])..=(key, &[0xffu8; 32]))?
                .map(|r| r.map(|(k, _)| *k.value().1))
                .collect::<Result<_, _>>()?;
            for h in heads.iter().filter(|h| parents.contains(*h)) {
                self.work += 1;
                self.heads.remove((key, h))?;
            }
            self.work += 1;
            if !covered.contains(key) {
                let rec = Head::encode_record(e.hlc, &e.author, op.value.as_deref());
                self.heads.insert((key, &e.id.0), rec.as_slice())?;
            }
            changes.push(Change {
                key: op.key.clone(),
                local,
            });
        }
        Ok(())
    }
}

/// Drops every derived table and re-indexes the log from the start.
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<usize> {
    txn.delete_table(CHAIN)?;
    txn.delete_table(FRONTIER)?;
    txn.delete_table(HEADS)?;
    txn.delete_table(AWAITED)?;
    txn.delete_table(OLD_SUPERSEDED)?;
    let mut t = Tables::open(txn)?;
    let ids: Vec<(u64, [u8; 32])> = t
        .log
        .iter()?
        .map(|r| r.map(|(k, v)| (k.value(), *v.value())))
        .collect::<Result<_, _>>()?;
    // A store bootstrapped from a snapshot starts from the heads it installed
    // (its entries' parents are not here to compute them from).
    let base_end = snapshot_end(&t)?;
    if base_end > 0 {
        let base = txn.open_table(BASE_HEADS)?;
        for row in base.iter()? {
            let (k, v) = row?;
            t.heads.insert(k.value(), v.value())?;
        }
    }
    let mut scratch = Vec::new();
    for (pos, id) in &ids {
        let bytes = t.entries.get(id)?.expect("log names a stored entry").value().1.to_vec();
        let e = Entry::decode(&bytes).map_err(|r| crate::Error::Damaged(format!("entry in log: {r}")))?;
        if *pos < base_end {
            t.chain.insert((&e.author.0, e.seq), &e.id.0)?;
            if t.tip(&e.author)?.0 < e.seq {
                t.frontier.insert(&e.author.0, (e.seq, &e.id.0))?;
            }
            continue;
        }
        t.index(&e, &mut scratch, false)?;
        scratch.clear();
    }
    Ok(ids.len())
}

/// Where entries after a snapshot begin in the log (0: no snapshot).
pub(crate) fn snapshot_end(t: &Tables) -> Result<u64> {
    Ok(match t.meta.get(crate::snapshot::SNAPSHOT_END)? {
        Some(v) => u64::from_be_bytes(
            v.value()
                .try_into()
                .map_err(|_| crate::Error::Damaged("snapshot end".into()))?,
        ),
        None => 0,
    })
}

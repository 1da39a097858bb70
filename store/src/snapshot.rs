//! Bootstrapping from a snapshot: a new node takes the share's *state* (every
//! key's heads, with the entries that wrote them, and each author's newest
//! entry) instead of replaying every entry since the share began.
//!
//! Each entry in a snapshot is signed by its author and checked here like any
//! other; what the new node trusts its sponsor for is the choice of heads
//! (which the sponsor could equally withhold in a full sync). After install,
//! the node's frontier is the sponsor's, so later entries follow by the
//! ordinary protocol. What it does not hold is the history before: `log`,
//! `restore` and `mount --at` reach back to the snapshot, not beyond.
//!
//! Invariants, kept here:
//! - a snapshot is installed only into a store holding no entries, in one
//!   transaction (a cut join installs all of it or nothing);
//! - each author's chain is held contiguously from its *floor* (the newest
//!   seq at install) upwards; `entries_after` serves only from there;
//! - the installed heads are kept as a base (`BASE_HEADS`), so that an index
//!   rebuild starts from them, not from entries whose parents are not here.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable};

use crate::entry::Entry;
use crate::error::{Error, Refusal, Result};
use crate::head::Head;
use crate::ids::{AuthorId, EntryId};
use crate::index::Tables;
use crate::store::Store;
use crate::tables::*;

/// A share's state, as a sponsor sends it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Wire bytes of every entry named in `heads`, and of each author's newest.
    pub entries: Vec<Vec<u8>>,
    /// Every key with the entries that are its heads.
    pub heads: Vec<(Vec<u8>, Vec<EntryId>)>,
}

/// Where a store bootstrapped from a snapshot began (see [`Store::snapshot_base`]).
pub struct SnapshotBase {
    /// The log position where entries after the snapshot begin.
    pub end: u64,
    /// The heads the snapshot installed.
    pub heads: Vec<(Vec<u8>, Head)>,
    /// The newest clock among the snapshot's entries.
    pub high: crate::hlc::Hlc,
}

/// The META key of the log position where entries after the snapshot begin.
pub(crate) const SNAPSHOT_END: &str = "snapshot_end";

impl Store {
    /// This store's state as a snapshot for a new node. Everything in it is
    /// durable first: a sponsor must never hand out an entry a crash could
    /// still take back (it would sign another with the same seq).
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.sync()?;
        let txn = self.db().begin_read()?;
        let heads_t = txn.open_table(HEADS)?;
        let entries_t = txn.open_table(ENTRIES)?;
        let mut heads: Vec<(Vec<u8>, Vec<EntryId>)> = Vec::new();
        let mut wanted: BTreeMap<[u8; 32], ()> = BTreeMap::new();
        for row in heads_t.iter()? {
            let (k, _) = row?;
            let (key, id) = k.value();
            match heads.last_mut() {
                Some((last, ids)) if last.as_slice() == key => ids.push(EntryId(*id)),
                _ => heads.push((key.to_vec(), vec![EntryId(*id)])),
            }
            wanted.insert(*id, ());
        }
        for row in txn.open_table(FRONTIER)?.iter()? {
            let (_, v) = row?;
            wanted.insert(*v.value().1, ());
        }
        // In log order, so a reader sees them as this store applied them.
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::with_capacity(wanted.len());
        for id in wanted.keys() {
            let v = entries_t
                .get(id)?
                .ok_or_else(|| Error::Damaged("a head names a missing entry".into()))?;
            let (pos, bytes) = v.value();
            entries.push((pos, bytes.to_vec()));
        }
        entries.sort_by_key(|e| e.0);
        Ok(Snapshot {
            entries: entries.into_iter().map(|e| e.1).collect(),
            heads,
        })
    }

    /// Installs `snap` into this store, which must hold no entries yet. Every
    /// entry is verified (signature, share); every head must be an entry of
    /// the snapshot that writes that key.
    pub fn install_snapshot(&self, snap: &Snapshot) -> Result<usize> {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_id: HashMap<EntryId, Entry> = HashMap::with_capacity(snap.entries.len());
        let mut seqs: HashMap<(AuthorId, u64), EntryId> = HashMap::with_capacity(snap.entries.len());
        for bytes in &snap.entries {
            let e = Entry::decode(bytes).map_err(Error::Refused)?;
            if let Some(other) = seqs.insert((e.author, e.seq), e.id)
                && other != e.id
            {
                return Err(Error::Damaged(format!(
                    "the snapshot holds two entries for seq {} of author {} (a fork)",
                    e.seq, e.author
                )));
            }
            // The genesis entry names no share: its id is the share's.
            let ours = match e.share {
                Some(s) => s == self.share,
                None => e.id.0 == self.share.0,
            };
            if !ours {
                return Err(Error::Refused(Refusal::WrongShare));
            }
            by_id.insert(e.id, e);
        }
        let txn = self.db().begin_write()?;
        let log_end = {
            let mut t = Tables::open(&txn)?;
            if t.log_end()? != 0 {
                return Err(Error::Db(
                    "a snapshot goes only into a store that holds no entries".into(),
                ));
            }
            let mut base = txn.open_table(BASE_HEADS)?;
            let mut floors = txn.open_table(FLOORS)?;
            for (key, ids) in &snap.heads {
                for id in ids {
                    let e = by_id
                        .get(id)
                        .ok_or_else(|| Error::Damaged(format!("the snapshot names head {id} but not its entry")))?;
                    let op = e
                        .ops
                        .iter()
                        .find(|op| &op.key == key)
                        .ok_or_else(|| Error::Damaged(format!("entry {id} does not write the key it heads")))?;
                    let rec = Head::encode_record(e.hlc, &e.author, op.value.as_deref());
                    t.heads.insert((key.as_slice(), &id.0), rec.as_slice())?;
                    base.insert((key.as_slice(), &id.0), rec.as_slice())?;
                }
            }
            let mut tips: BTreeMap<AuthorId, (u64, EntryId)> = BTreeMap::new();
            let mut high = crate::hlc::Hlc::default();
            let mut placed: std::collections::HashSet<EntryId> = std::collections::HashSet::new();
            for bytes in &snap.entries {
                let Ok(e) = Entry::decode_unverified(bytes) else {
                    continue;
                };
                if !placed.insert(e.id) {
                    continue;
                }
                let pos = t.log_end()?;
                t.entries.insert(&e.id.0, (pos, bytes.as_slice()))?;
                t.log.insert(pos, &e.id.0)?;
                t.chain.insert((&e.author.0, e.seq), &e.id.0)?;
                let tip = tips.entry(e.author).or_insert((e.seq, e.id));
                if e.seq >= tip.0 {
                    *tip = (e.seq, e.id);
                }
                high = high.max(e.hlc);
            }
            for (a, (seq, id)) in &tips {
                t.frontier.insert(&a.0, (*seq, &id.0))?;
                floors.insert(&a.0, *seq)?;
            }
            clock.observe(high);
            t.meta.insert("hlc", clock.last().0.to_be_bytes().as_slice())?;
            let end = t.log_end()?;
            t.meta.insert(SNAPSHOT_END, end.to_be_bytes().as_slice())?;
            end
        };
        txn.commit()?;
        drop(clock);
        self.durable.send_replace(log_end);
        tracing::info!(
            entries = snap.entries.len(),
            keys = snap.heads.len(),
            "installed the share's state from a snapshot"
        );
        Ok(snap.entries.len())
    }

    /// Where this store's state began, if it was bootstrapped from a
    /// snapshot: the installed heads, and the newest clock among the
    /// snapshot's entries (the share is known from that moment on).
    pub fn snapshot_base(&self) -> Result<Option<SnapshotBase>> {
        let txn = self.db().begin_read()?;
        let end = match txn.open_table(META)?.get(SNAPSHOT_END)? {
            Some(v) => u64::from_be_bytes(
                v.value()
                    .try_into()
                    .map_err(|_| Error::Damaged("snapshot end".into()))?,
            ),
            None => return Ok(None),
        };
        let mut heads = Vec::new();
        for row in txn.open_table(BASE_HEADS)?.iter()? {
            let (k, v) = row?;
            let (key, id) = k.value();
            heads.push((key.to_vec(), Head::decode_record(EntryId(*id), v.value())));
        }
        let mut high = crate::hlc::Hlc::default();
        let log = txn.open_table(LOG)?;
        let entries = txn.open_table(ENTRIES)?;
        for row in log.range(..end)? {
            let (_, id) = row?;
            if let Some(v) = entries.get(id.value())?
                && let Ok(e) = Entry::decode_unverified(v.value().1)
            {
                high = high.max(e.hlc);
            }
        }
        Ok(Some(SnapshotBase { end, heads, high }))
    }

    /// Entries held here (fewer than the frontier counts after a snapshot).
    pub fn held_entries(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }

    /// Each author's floor: held contiguously from there up (empty when the
    /// store replayed every entry).
    pub fn floors(&self) -> Result<BTreeMap<AuthorId, u64>> {
        let txn = self.db().begin_read()?;
        let mut out = BTreeMap::new();
        for row in txn.open_table(FLOORS)?.iter()? {
            let (a, s) = row?;
            out.insert(AuthorId(*a.value()), s.value());
        }
        Ok(out)
    }
}

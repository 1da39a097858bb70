//! The share as it was at a moment: a read-only [`KvStore`] over the entries
//! a store held with a clock at or before it (`mountctl mount --at`).
//!
//! HLCs only grow along the DAG (an entry's clock is above its parents'), so
//! "every entry at or before T" is closed under parents: it is a state some
//! node could have held, and its heads are computed by the same rule as the
//! live store's (a write is a head of its key unless another write of the
//! key in the set names it as a parent). Content is read from the live
//! store, verified as always; a version whose chunks were collected reads as
//! [`Error::Collected`].

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::content::{ChunkCache, Manifest};
use crate::entry::Op;
use crate::error::{Error, Result};
use crate::head::{self, Head};
use crate::hlc::Hlc;
use crate::ids::{AuthorId, ChunkHash, EntryId};
use crate::store::{Store, Written};
use crate::traits::KvStore;
use crate::watch::Change;

pub struct AsOf {
    live: Arc<Store>,
    heads: BTreeMap<Vec<u8>, Vec<Head>>,
    /// The moment shown (the HLC bound).
    pub at: Hlc,
    /// How many entries the state is made of.
    pub entries: usize,
}

impl AsOf {
    /// The state of `live` at HLC `at` (every entry with a clock `<= at`).
    pub fn new(live: Arc<Store>, at: Hlc) -> Result<AsOf> {
        let mut writes: Vec<(Vec<u8>, Head)> = Vec::new();
        let mut superseded: HashSet<(Vec<u8>, EntryId)> = HashSet::new();
        let mut entries = 0;
        // A store bootstrapped from a snapshot knows the share from the
        // snapshot on: its heads are the start (the entries before it are
        // not here to compute them from), and earlier moments are refused.
        let mut from = 0;
        if let Some(crate::snapshot::SnapshotBase { end, heads, high }) = live.snapshot_base()? {
            if at < high {
                return Err(Error::Db(format!(
                    "this node holds the share's history from {} ms since the epoch on (it joined from a snapshot then): an earlier moment is not here",
                    high.ms()
                )));
            }
            from = end;
            entries = heads.len();
            writes.extend(heads);
        }
        live.each_entry_from(from, &mut |e| {
            if e.hlc > at {
                return;
            }
            entries += 1;
            for op in e.ops {
                for p in &e.parents {
                    superseded.insert((op.key.clone(), *p));
                }
                writes.push((
                    op.key,
                    Head {
                        entry: e.id,
                        author: e.author,
                        hlc: e.hlc,
                        value: op.value,
                    },
                ));
            }
        })?;
        let mut heads: BTreeMap<Vec<u8>, Vec<Head>> = BTreeMap::new();
        for (key, h) in writes {
            if !superseded.contains(&(key.clone(), h.entry)) {
                heads.entry(key).or_default().push(h);
            }
        }
        for hs in heads.values_mut() {
            // The live store's order (by entry id), so both list heads alike.
            hs.sort_by_key(|h| h.entry);
            hs.dedup_by_key(|h| h.entry);
        }
        Ok(AsOf {
            live,
            heads,
            at,
            entries,
        })
    }

    /// The HLC of entry `id` (a unique start of its hex id), to show the share as of it.
    pub fn clock_of(live: &Store, id_prefix: &str) -> Result<Option<Hlc>> {
        let want = id_prefix.to_ascii_lowercase();
        let mut found: Vec<Hlc> = Vec::new();
        live.each_entry(&mut |e| {
            if e.id.to_string().starts_with(&want) {
                found.push(e.hlc);
            }
        })?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            _ => Err(Error::Db(format!(
                "{id_prefix:?} matches several entries: give more of it"
            ))),
        }
    }

    fn under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<Head>)> + 'a {
        self.heads
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

fn read_only() -> Error {
    Error::Db("this is the share as it was at a past moment: it cannot be written".into())
}

impl KvStore for AsOf {
    fn author(&self) -> AuthorId {
        self.live.author()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .heads
            .get(key)
            .and_then(|hs| head::winner(hs))
            .and_then(|h| h.value.clone()))
    }
    fn heads(&self, key: &[u8]) -> Result<Vec<Head>> {
        Ok(self.heads.get(key).cloned().unwrap_or_default())
    }
    fn heads_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Vec<Head>>> {
        keys.iter().map(|k| self.heads(k)).collect()
    }
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .under(prefix)
            .filter_map(|(k, hs)| Some((k.clone(), head::winner(hs)?.value.clone()?)))
            .collect())
    }
    fn scan_heads(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<Head>)>> {
        Ok(self.under(prefix).map(|(k, hs)| (k.clone(), hs.clone())).collect())
    }
    fn each_heads(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], Vec<Head>)) -> Result<()> {
        for (k, hs) in self.under(prefix) {
            f(k, hs.clone());
        }
        Ok(())
    }
    fn write_batches(&self, _: Vec<Vec<Op>>, _: bool) -> Result<Vec<Written>> {
        Err(read_only())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn watch(&self, _: &[u8]) -> UnboundedReceiver<Change> {
        // The past does not change: a channel whose sender is gone at once.
        tokio::sync::mpsc::unbounded_channel().1
    }
    fn put_content(&self, _: &mut dyn Read) -> Result<Manifest> {
        Err(read_only())
    }
    fn read_content(&self, m: &Manifest, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.live.read_content(m, offset, buf)
    }
    fn read_content_with(&self, m: &Manifest, offset: u64, buf: &mut [u8], cache: &mut ChunkCache) -> Result<usize> {
        self.live.read_content_with(m, offset, buf, cache)
    }
    fn put_chunks(&self, _: Vec<(ChunkHash, Vec<u8>)>) -> Result<()> {
        Err(read_only())
    }
    fn reopen(&self) -> Result<()> {
        Ok(())
    }
    fn write_blocked(&self) -> Option<String> {
        Some("this is the share as it was at a past moment".into())
    }
    fn history(&self, wanted: &dyn Fn(&[u8]) -> bool) -> Result<Vec<crate::KeyWrite>> {
        let at = self.at;
        let mut all = self.live.history(wanted)?;
        all.retain(|w| w.hlc <= at);
        Ok(all)
    }
    fn missing_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.live.missing_chunks(hashes)
    }
    fn hold_chunks(&self, hashes: &[ChunkHash]) -> Result<Vec<ChunkHash>> {
        self.live.missing_chunks(hashes)
    }
}

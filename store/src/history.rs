//! A key's history: every entry that wrote it, read from the log.
//!
//! There is no index by key: a question reads the whole log once, which
//! keeps every write as cheap as it is. `mountctl log` and `restore` are
//! rare; writes are not. (An index is the step if shares grow long histories.)

use crate::entry::Entry;
use crate::{AuthorId, EntryId, Hlc, Result, Store};

/// One write of a key: by which entry, author and clock, and what it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrite {
    pub entry: EntryId,
    pub author: AuthorId,
    pub hlc: Hlc,
    pub key: Vec<u8>,
    /// `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
}

impl Store {
    /// Calls `f` with every durable entry, in log order. An entry was
    /// verified when it was stored; one that no longer decodes is skipped.
    pub(crate) fn each_entry(&self, f: &mut dyn FnMut(Entry)) -> Result<()> {
        self.each_entry_from(0, f)
    }

    /// [`Store::each_entry`] from log position `from` on.
    pub(crate) fn each_entry_from(&self, mut from: u64, f: &mut dyn FnMut(Entry)) -> Result<()> {
        loop {
            let batch = self.log_since(from, 1024)?;
            let Some((last, _)) = batch.last() else { return Ok(()) };
            from = last + 1;
            for (_, bytes) in &batch {
                if let Ok(e) = Entry::decode_unverified(bytes) {
                    f(e);
                }
            }
        }
    }

    /// Every write of a key `wanted` accepts, oldest first (by HLC, then
    /// author and entry: the order every peer computes).
    pub fn history(&self, wanted: &dyn Fn(&[u8]) -> bool) -> Result<Vec<KeyWrite>> {
        let mut out = Vec::new();
        self.each_entry(&mut |e| {
            for op in e.ops.iter().filter(|op| wanted(&op.key)) {
                out.push(KeyWrite {
                    entry: e.id,
                    author: e.author,
                    hlc: e.hlc,
                    key: op.key.clone(),
                    value: op.value.clone(),
                });
            }
        })?;
        out.sort_by_key(|w| (w.hlc, w.author, w.entry));
        Ok(out)
    }

    /// The newest `last` entries `wanted` accepts, oldest first.
    pub fn entries_where(&self, wanted: &dyn Fn(&Entry) -> bool, last: usize) -> Result<Vec<Entry>> {
        let mut out = std::collections::VecDeque::new();
        self.each_entry(&mut |e| {
            if wanted(&e) {
                out.push_back(e);
                if out.len() > last {
                    out.pop_front();
                }
            }
        })?;
        let mut out: Vec<Entry> = out.into();
        out.sort_by_key(|e| (e.hlc, e.author, e.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Identity, Location, Op, Store};

    #[test]
    fn a_keys_writes_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        let s = Store::create_share(
            Location::File(&dir.path().join("s.redb")),
            id,
            Config::default(),
            vec![],
        )
        .unwrap();
        s.write(vec![Op::put("a", "1"), Op::put("b", "x")]).unwrap();
        s.write(vec![Op::put("a", "2")]).unwrap();
        s.write(vec![Op::delete("a")]).unwrap();
        let h = s.history(&|k| k == b"a").unwrap();
        let values: Vec<_> = h.iter().map(|w| w.value.clone()).collect();
        assert_eq!(values, vec![Some(b"1".to_vec()), Some(b"2".to_vec()), None]);
        assert!(h.windows(2).all(|w| w[0].hlc < w[1].hlc));
    }
}

//! From store heads to the view's inputs, and the heads a pending local write
//! stands for until its entry exists.
//!
//! A pending op is shown as the single head of its key: when it is written, the
//! entry names every head of the key as a parent, so it is the only head then.
//! Its rank is the highest there is (its HLC will be above everything this node
//! has seen); once written, `rerank` gives it its real HLC and entry.

use std::collections::BTreeMap;

use store::{AuthorId, EntryId, Head, Hlc, KvStore, Manifest};

use crate::node::{self, Attr, Data, KeyKind, Loc, NodeId};
use crate::tree::{DataHead, LocHead};
use crate::view::View;

pub const PENDING_HLC: Hlc = Hlc(u64::MAX);
pub const PENDING_ENTRY: EntryId = EntryId([0xff; 32]);

pub fn loc_heads(heads: &[Head]) -> Vec<LocHead> {
    heads
        .iter()
        .filter_map(|h| {
            Some(LocHead {
                loc: node::decode(h.value.as_ref()?)?,
                hlc: h.hlc,
                author: h.author,
                entry: h.entry,
            })
        })
        .collect()
}

fn winner(heads: &[Head]) -> Option<&Vec<u8>> {
    store::head::winner(heads).and_then(|h| h.value.as_ref())
}

pub fn attr_winner(heads: &[Head]) -> Option<Attr> {
    winner(heads).and_then(|v| node::decode(v))
}

pub fn xattr_winner(heads: &[Head]) -> Option<Vec<u8>> {
    winner(heads).cloned()
}

pub fn data_head(d: &Data, hlc: Hlc, author: AuthorId, entry: EntryId) -> DataHead {
    DataHead {
        version: d.version,
        hlc,
        author,
        entry,
        mtime_ns: d.mtime_ns,
        size: Manifest::decode(&d.manifest).map_or(0, |m| m.size()),
        ctime_ns: d.ctime_ns,
        atime_ns: d.atime_ns,
    }
}

pub fn data_heads(heads: &[Head]) -> Vec<DataHead> {
    heads
        .iter()
        .filter_map(|h| Some(data_head(&node::decode(h.value.as_ref()?)?, h.hlc, h.author, h.entry)))
        .collect()
}

pub fn pending_loc(loc: Loc, me: AuthorId) -> LocHead {
    LocHead {
        loc,
        hlc: PENDING_HLC,
        author: me,
        entry: PENDING_ENTRY,
    }
}

/// Sets what `heads` (of `key`) say in the view. Keys that are not a node's are ignored.
pub fn set_key(view: &mut View, key: &[u8], heads: &[Head]) {
    match node::parse_key(key) {
        Some(KeyKind::Loc(id)) => view.set_locs(id, loc_heads(heads)),
        Some(KeyKind::Attr(id)) => view.set_attr(id, attr_winner(heads)),
        Some(KeyKind::Data(id)) => view.set_data(id, data_heads(heads)),
        Some(KeyKind::Xattr(id, name)) => view.set_xattr(id, name, xattr_winner(heads)),
        None => {}
    }
}

/// Sets what a pending op of this node says in the view.
pub fn set_pending(view: &mut View, op: &store::Op, me: AuthorId) {
    let heads: Vec<Head> = vec![Head {
        entry: PENDING_ENTRY,
        author: me,
        hlc: PENDING_HLC,
        value: op.value.clone(),
    }];
    set_key(view, &op.key, &heads);
}

/// Every node key in the store, by key.
pub fn scan(store: &dyn KvStore) -> store::Result<BTreeMap<Vec<u8>, Vec<Head>>> {
    Ok(store.scan_heads(node::PREFIX)?.into_iter().collect())
}

/// The decoded content value of a file, from a pending op or a head.
pub fn decode_data(value: &[u8]) -> Option<(Data, Manifest)> {
    let d: Data = node::decode(value)?;
    let m = Manifest::decode(&d.manifest).ok()?;
    Some((d, m))
}

/// The id of the node a key belongs to.
pub fn node_of(key: &[u8]) -> Option<NodeId> {
    node::parse_key(key).map(|k| match k {
        KeyKind::Loc(id) | KeyKind::Attr(id) | KeyKind::Data(id) | KeyKind::Xattr(id, _) => id,
    })
}

//! What the store's collector cannot know by itself: which keys belong to
//! deleted files, and since when. A file's content versions are kept for the
//! retention window after its delete, then they may go (store's `gc.rs`).
//!
//! Computed from the store's heads, like the tree: a delete counts only when
//! the tree would hide the file (a content version the delete did not see
//! keeps it, and so keeps its content).

use std::collections::HashMap;

use store::KvStore;

use crate::inputs::{attr_winner, data_heads, loc_heads};
use crate::node::{self, KeyKind, Kind, NodeId};
use crate::tree::{self, DataHead, LocHead, NodeInput};

/// `data key -> the clock of its file's delete`, for every deleted file.
pub fn retired(store: &dyn KvStore) -> store::Result<HashMap<Vec<u8>, store::Hlc>> {
    #[derive(Default)]
    struct Seen {
        kind: Option<Kind>,
        locs: Vec<LocHead>,
        data: Vec<DataHead>,
    }
    let mut nodes: HashMap<NodeId, Seen> = HashMap::new();
    store.each_heads(node::PREFIX, &mut |k, heads| match node::parse_key(k) {
        Some(KeyKind::Loc(id)) => nodes.entry(id).or_default().locs = loc_heads(&heads),
        Some(KeyKind::Attr(id)) => nodes.entry(id).or_default().kind = attr_winner(&heads).map(|a| a.kind()),
        Some(KeyKind::Data(id)) => nodes.entry(id).or_default().data = data_heads(&heads),
        _ => {}
    })?;
    let mut out = HashMap::new();
    for (id, n) in nodes {
        let input = NodeInput {
            kind: n.kind.unwrap_or(Kind::File),
            locs: n.locs,
            data: n.data,
        };
        let Some(win) = input.win(id) else { continue };
        if win.loc.deleted && !tree::alive(input.kind, win, &input.data) {
            out.insert(node::data_key(id), win.hlc);
        }
    }
    Ok(out)
}

//! `mountctl dag`: the entries of the share (or of one file) as a Graphviz
//! DOT graph. One box per entry, one colour per author; an edge from each
//! entry to the entries it names as parents (the heads of the keys it wrote,
//! as its writer saw them). A merge (several parents) has a double border;
//! an entry whose write is one of several heads of a key now (a conflict,
//! shown as a conflict copy) is drawn in red.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use store::{Entry, EntryId, Store};

const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
];

/// The newest `last` entries that wrote a key starting with `prefix` (every
/// entry when `None`), as DOT.
pub fn dot(store: &Store, prefix: Option<&[u8]>, last: usize) -> store::Result<String> {
    let touches = |e: &Entry| prefix.is_none_or(|p| e.ops.iter().any(|op| op.key.starts_with(p)));
    let entries = store.entries_where(&touches, last)?;
    let conflicted: HashSet<EntryId> = store
        .multi_headed(prefix.unwrap_or(b""))?
        .into_iter()
        .flat_map(|(_, heads)| heads.into_iter().map(|h| h.entry))
        .collect();
    let ids: HashSet<EntryId> = entries.iter().map(|e| e.id).collect();
    let mut colours = BTreeMap::new();
    let mut out = String::from(
        "digraph lattice {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\", fontcolor=white];\n",
    );
    for e in &entries {
        let n = colours.len();
        let colour = *colours.entry(e.author).or_insert(PALETTE[n % PALETTE.len()]);
        let merge = e.parents.len() > 1;
        let conflict = conflicted.contains(&e.id);
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{} #{}\\n{}\\n{} ops{}{}\", fillcolor=\"{colour}\"{}{}];",
            e.id.short(),
            e.author.short(),
            e.seq,
            e.hlc.ms(),
            e.ops.len(),
            if merge { "\\nmerge" } else { "" },
            if conflict { "\\nconflict" } else { "" },
            if merge { ", peripheries=2" } else { "" },
            if conflict { ", color=red, penwidth=3" } else { "" },
        );
    }
    for e in &entries {
        for p in e.parents.iter().filter(|p| ids.contains(p)) {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", e.id.short(), p.short());
        }
    }
    out.push_str("  subgraph cluster_authors {\n    label=\"authors\";\n");
    for (a, c) in &colours {
        let _ = writeln!(out, "    \"author {}\" [fillcolor=\"{c}\"];", a.short());
    }
    out.push_str("  }\n}\n");
    Ok(out)
}

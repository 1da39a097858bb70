//! The redb tables of a store. Everything but `entries`, `log`, `orphans`,
//! `chunks`, `collected`, `floors`,
//! `base_heads` and `meta` is derived, and can be rebuilt from `log`.

use redb::TableDefinition;

pub type Id = &'static [u8; 32];

/// "share", "hlc", "format".
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Entry id -> (log position, wire bytes).
pub const ENTRIES: TableDefinition<Id, (u64, &[u8])> = TableDefinition::new("entries");
/// Log position -> entry id: the order this store applied entries in. Each
/// author's entries appear in seq order, so it is a causal order per chain.
pub const LOG: TableDefinition<u64, Id> = TableDefinition::new("log");
/// (author, seq) -> entry id.
pub const CHAIN: TableDefinition<(Id, u64), Id> = TableDefinition::new("chain");
/// author -> (last seq, last entry id).
pub const FRONTIER: TableDefinition<Id, (u64, Id)> = TableDefinition::new("frontier");
/// (key, entry id) -> head record (see `head.rs`). Exactly the DAG heads of each key.
pub const HEADS: TableDefinition<(&[u8], Id), &[u8]> = TableDefinition::new("heads");
/// (parent id, entry id): `entry` named `parent`, which has not arrived yet.
/// When the parent arrives it is not a head of the keys `entry` writes; then
/// the rows go. Keeps head sets independent of arrival order, at a cost of one
/// row per absent parent.
pub const AWAITED: TableDefinition<(Id, Id), ()> = TableDefinition::new("awaited");
/// The table an earlier index format kept (a row per key and absent parent);
/// a store that has it is indexed again on open.
pub const OLD_SUPERSEDED: TableDefinition<(&[u8], Id), ()> = TableDefinition::new("superseded");
/// (author, seq) -> (received at ms, wire bytes): entries waiting for a gap to fill.
pub const ORPHANS: TableDefinition<(Id, u64), (u64, &[u8])> = TableDefinition::new("orphans");
/// chunk hash -> bytes.
pub const CHUNKS: TableDefinition<Id, &[u8]> = TableDefinition::new("chunks");
/// author -> seq: the chain is held from this seq up (a store bootstrapped
/// from a snapshot; see `snapshot.rs`). Absent: held from seq 1.
pub const FLOORS: TableDefinition<Id, u64> = TableDefinition::new("floors");
/// (key, entry id) -> head record: the heads a snapshot installed, where an
/// index rebuild starts (see `snapshot.rs`).
pub const BASE_HEADS: TableDefinition<(&[u8], Id), &[u8]> = TableDefinition::new("base_heads");
/// chunk hash -> when it was collected (ms): no kept version needs it (see `gc.rs`).
pub const COLLECTED: TableDefinition<Id, u64> = TableDefinition::new("collected");

//! The Lattice store: a signed, append-only, DAG-based key-value store on redb.
//!
//! Every change is an [`Entry`] signed by its author, appended to that author's
//! hash-linked chain. Each key keeps the DAG heads of the entries that wrote it;
//! reads return a deterministic winner. Stores that hold the same entries hold
//! the same state, whatever order the entries arrived in.
//!
//! This crate knows nothing of FUSE or the network. The file system uses it
//! through [`KvStore`], the network through [`SyncStore`].

mod as_of;
mod chunks;
pub mod content;
pub mod entry;
mod error;
mod gc;
pub mod head;
mod history;
pub mod hlc;
mod identity;
mod ids;
mod index;
mod ingest;
pub mod membership;
mod shelf;
mod snapshot;
mod store;
#[doc(hidden)]
pub mod tables;
mod traits;
mod watch;

pub use as_of::AsOf;
pub use content::{ChunkCache, Manifest};
pub use entry::{Entry, FORMAT_VERSION, Op};
pub use error::{Error, Refusal, Result};
pub use gc::{Collected, Keep, Space};
pub use head::Head;
pub use history::KeyWrite;
pub use hlc::Hlc;
pub use identity::Identity;
pub use ids::{AuthorId, ChunkHash, EntryId, ShareId};
pub use ingest::Outcome;
pub use membership::Role;
pub use snapshot::Snapshot;
pub use store::{Config, Frontier, Location, OpenReport, Store, Written};
pub use traits::{KvStore, SyncStore};
pub use watch::{Change, Gap};

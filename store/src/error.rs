//! Errors of the store, and the reasons an incoming entry is refused.

use std::path::PathBuf;

use crate::ids::{AuthorId, ChunkHash};

/// Why an entry offered to [`crate::Store::ingest`] was not accepted. Each variant
/// reads as one sentence so it can go straight into a log line or a peer's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("entry is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("entry is malformed: {0}")]
    Malformed(String),
    #[error("entry format version {theirs} is not supported (this node speaks version {ours})")]
    UnsupportedFormat { theirs: u32, ours: u32 },
    #[error("entry signature does not verify for author {0}")]
    BadSignature(AuthorId),
    #[error("entry belongs to another share")]
    WrongShare,
    #[error("entry seq {seq} of author {author} does not link to the previous entry (wrong prev hash)")]
    BadPrevHash { author: AuthorId, seq: u64 },
    #[error("author {author} signed two different entries with seq {seq} (forked chain)")]
    Fork { author: AuthorId, seq: u64 },
    #[error("entry from author {author} is {drift_ms} ms in the future, beyond the allowed drift of {max_ms} ms")]
    FromFuture {
        author: AuthorId,
        drift_ms: u64,
        max_ms: u64,
    },
    #[error("author {0} is not a member of this share")]
    NotAMember(AuthorId),
    #[error("author {0} is a reader of this share and may not write")]
    ReadOnly(AuthorId),
    #[error("author {author} may not do this: {why}")]
    NotAllowed { author: AuthorId, why: String },
    #[error("entry refers to content chunk {0} that is not here yet")]
    MissingContent(ChunkHash),
    #[error("entry seq {seq} of author {author} is more than {max} ahead of the {last} held here: not parked")]
    TooFarAhead {
        author: AuthorId,
        seq: u64,
        last: u64,
        max: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store database failed: {0}")]
    Db(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("identity file {path} is malformed: {why}")]
    BadIdentity { path: PathBuf, why: String },
    #[error("identity file {0} already exists")]
    IdentityExists(PathBuf),
    #[error("the store at {0} holds no share")]
    NoShare(PathBuf),
    #[error("a store already exists at {0}")]
    StoreExists(PathBuf),
    #[error("chunk content does not match its hash")]
    ChunkMismatch,
    #[error("chunk {0} is not in the store")]
    MissingChunk(String),
    #[error("chunk {0} was collected: no version the retention policy keeps needs it")]
    Collected(String),
    #[error("local write refused: {0}")]
    Refused(#[from] Refusal),
    #[error("store is damaged: {0}")]
    Damaged(String),
    #[error("chunk {0} is damaged on disk (its bytes do not match its hash); it is being fetched again from peers")]
    BadChunk(crate::ChunkHash),
    #[error(
        "this node's store lost its own entries {} to {had} when a damaged tail was cut: it writes nothing until a peer returns them (if no peer ever got them: mountctl forget-lost-entries)",
        have + 1
    )]
    OwnEntriesLost { have: u64, had: u64 },
    #[error("the disk is full: {0}")]
    NoSpace(String),
    #[error("the store must be reopened after an I/O error: {0}")]
    Poisoned(String),
}

impl Error {
    /// Will this write never succeed from this node (it is not a member, or a reader)?
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Refused(Refusal::NotAMember(_) | Refusal::ReadOnly(_) | Refusal::NotAllowed { .. })
        )
    }

    /// The errno a caller of the file system should see for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NoSpace(_) => libc_enospc(),
            Error::Refused(Refusal::TooLarge { .. }) => 27, // EFBIG
            Error::OwnEntriesLost { .. } => 30,             // EROFS
            e if e.is_permanent() => 30,                    // EROFS
            _ => 5,                                         // EIO
        }
    }
}

const fn libc_enospc() -> i32 {
    28
}

/// A database error, by what it means for the caller: the disk is full, the
/// handle is poisoned (redb wants a reopen after a failed write), or other.
fn classify(msg: String) -> Error {
    if msg.contains("os error 28") || msg.contains("No space left on device") {
        Error::NoSpace(msg)
    } else if msg.contains("Previous I/O error") {
        Error::Poisoned(msg)
    } else {
        Error::Db(msg)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// redb has one error type per operation; for callers they all mean the same thing.
macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { classify(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

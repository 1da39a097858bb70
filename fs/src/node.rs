//! How a file tree is laid out in the store (ARCHITECTURE.md, "The file tree").
//!
//! Every file, directory and symlink is a node with a stable random id. Its
//! state is split over keys that change independently, so concurrent changes
//! to different aspects merge instead of conflicting:
//!
//! | key                    | value                                   | written by            |
//! |------------------------|-----------------------------------------|-----------------------|
//! | `n` id `l`             | [`Loc`]: parent, name, deleted flag     | create, rename, unlink |
//! | `n` id `a`             | [`Attr`]: kind, mode, uid, gid, target, rdev | create, chmod, chown |
//! | `n` id `d`             | [`Data`]: content manifest, mtime, atime | close after write, utimens, truncate; a directory's when a name in it changes |
//! | `n` id `x` name        | an xattr value                          | setxattr / removexattr |
//!
//! Each of `l`, `a` and `d` carries the time it was written; a node's ctime
//! is the latest of the three, so it follows every change of content or
//! metadata, replicates, and is the same after a restart.
//!
//! A rename is one write to `l`. An unlink writes `l` with `deleted` set and
//! leaves `d` alone: the deleted `Loc` keeps the last place and lists the
//! versions of the `d` heads the deleter saw, so an edit it did not see (a concurrent one) brings
//! the file back there (edit beats delete), and a rename racing the delete
//! never loses the content.

use prost::Message;

/// A node's stable id. The root is all zeros.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    pub const ROOT: NodeId = NodeId([0; 16]);

    pub fn random() -> Self {
        NodeId(rand::random())
    }
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(NodeId(b.try_into().ok()?))
    }
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", hex::encode(self.0))
    }
}

pub const PREFIX: &[u8] = b"n";
const LOC: u8 = b'l';
const ATTR: u8 = b'a';
const DATA: u8 = b'd';
const XATTR: u8 = b'x';

fn key(id: NodeId, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&id.0);
    k.push(tag);
    k
}

pub fn loc_key(id: NodeId) -> Vec<u8> {
    key(id, LOC)
}
pub fn attr_key(id: NodeId) -> Vec<u8> {
    key(id, ATTR)
}
pub fn data_key(id: NodeId) -> Vec<u8> {
    key(id, DATA)
}
pub fn xattr_key(id: NodeId, name: &[u8]) -> Vec<u8> {
    let mut k = key(id, XATTR);
    k.extend_from_slice(name);
    k
}

/// Which key of which node a store key is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Loc(NodeId),
    Attr(NodeId),
    Data(NodeId),
    Xattr(NodeId, &'a [u8]),
}

pub fn parse_key(k: &[u8]) -> Option<KeyKind<'_>> {
    let rest = k.strip_prefix(PREFIX)?;
    let id = NodeId::from_slice(rest.get(..16)?)?;
    let (&tag, tail) = rest.get(16..)?.split_first()?;
    Some(match (tag, tail.is_empty()) {
        (LOC, true) => KeyKind::Loc(id),
        (ATTR, true) => KeyKind::Attr(id),
        (DATA, true) => KeyKind::Data(id),
        (XATTR, false) => KeyKind::Xattr(id, tail),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    CharDevice = 5,
    BlockDevice = 6,
    /// A Unix socket: a rendezvous point of processes on one machine, so it
    /// is shown by the mount that made it and never written to the store.
    Socket = 7,
}

impl Kind {
    /// Nodes with no content of their own (FIFOs, devices, sockets): what
    /// they carry is in their attributes.
    pub fn is_special(self) -> bool {
        matches!(self, Kind::Fifo | Kind::CharDevice | Kind::BlockDevice | Kind::Socket)
    }
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Loc {
    #[prost(bytes = "vec", tag = "1")]
    pub parent: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub name: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub deleted: bool,
    /// With `deleted`: the versions of the `d` heads the deleter saw.
    #[prost(uint64, repeated, tag = "4")]
    pub seen_data: Vec<u64>,
    /// When the node was placed here (its ctime, as far as this key goes).
    #[prost(int64, tag = "5")]
    pub ctime_ns: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Attr {
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// Permission bits only (07777).
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    #[prost(bytes = "vec", tag = "5")]
    pub target: Vec<u8>,
    /// A device node's device number.
    #[prost(uint64, tag = "6")]
    pub rdev: u64,
    /// When these attributes were set (the node's ctime, as far as this key goes).
    #[prost(int64, tag = "7")]
    pub ctime_ns: i64,
}

impl Attr {
    pub fn kind(&self) -> Kind {
        match self.kind {
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::CharDevice,
            6 => Kind::BlockDevice,
            7 => Kind::Socket,
            _ => Kind::File,
        }
    }
}

/// Content and modification time travel together: writing one sets the other.
#[derive(Clone, PartialEq, Message)]
pub struct Data {
    /// A `store::Manifest`, encoded; empty for directories and symlinks.
    #[prost(bytes = "vec", tag = "1")]
    pub manifest: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub mtime_ns: i64,
    /// Random, new with every write: lets a delete name the versions it saw
    /// before the entry that carries them has an id.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// When this version was written: differs from `mtime_ns` once a
    /// program sets the mtime (touch -d, tar, rsync). 0 in older entries: the mtime.
    #[prost(int64, tag = "4")]
    pub ctime_ns: i64,
    /// The access time a program set explicitly (utimensat); 0: the mtime.
    /// Reads move the atime only on this machine (see `atime.rs`).
    #[prost(int64, tag = "5")]
    pub atime_ns: i64,
}

pub fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let id = NodeId::random();
        assert_eq!(parse_key(&loc_key(id)), Some(KeyKind::Loc(id)));
        assert_eq!(parse_key(&data_key(id)), Some(KeyKind::Data(id)));
        assert_eq!(
            parse_key(&xattr_key(id, b"user.a")),
            Some(KeyKind::Xattr(id, b"user.a"))
        );
        assert_eq!(parse_key(b"peers/x"), None);
        assert_eq!(parse_key(&attr_key(id)[..10]), None);
    }
}

//! A head of a key: one concurrent version. The winner among several heads is
//! the highest HLC, then the highest author bytes, then the highest entry id,
//! so every peer picks the same one.

use crate::hlc::Hlc;
use crate::ids::{AuthorId, EntryId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub entry: EntryId,
    pub author: AuthorId,
    pub hlc: Hlc,
    /// `None` is a tombstone: the key was deleted in this version.
    pub value: Option<Vec<u8>>,
}

impl Head {
    fn rank(&self) -> (Hlc, AuthorId, EntryId) {
        (self.hlc, self.author, self.entry)
    }

    /// Record layout: hlc (8, big endian) | author (32) | 0 = tombstone, 1 = value | value.
    pub(crate) fn encode_record(hlc: crate::hlc::Hlc, author: &AuthorId, value: Option<&[u8]>) -> Vec<u8> {
        let mut r = Vec::with_capacity(41 + value.map_or(0, |v| v.len()));
        r.extend_from_slice(&hlc.0.to_be_bytes());
        r.extend_from_slice(&author.0);
        match value {
            Some(v) => {
                r.push(1);
                r.extend_from_slice(v);
            }
            None => r.push(0),
        }
        r
    }

    pub(crate) fn decode_record(entry: EntryId, r: &[u8]) -> Head {
        // Records are written only by `encode_record`; a short one means the
        // database itself is corrupt, which redb's checksums rule out.
        Head {
            entry,
            hlc: Hlc(u64::from_be_bytes(r[..8].try_into().expect("head record"))),
            author: AuthorId::from_slice(&r[8..40]).expect("head record"),
            value: (r[40] == 1).then(|| r[41..].to_vec()),
        }
    }
}

/// The deterministic winner among a key's heads.
pub fn winner(heads: &[Head]) -> Option<&Head> {
    heads.iter().max_by(|a, b| a.rank().cmp(&b.rank()))
}

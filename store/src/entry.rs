//! The entry: the unit of change that peers exchange.
//!
//! Wire form: `signature (64 bytes) || body`, where `body` is a prost-encoded
//! [`Body`]. The signature covers a domain tag and the exact body bytes, and the
//! entry id is blake3 of those body bytes. Nothing is ever re-encoded to verify,
//! and the fixed envelope leaves no room to alter an entry without changing
//! its id or breaking its signature.

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;

use crate::error::Refusal;
use crate::hlc::Hlc;
use crate::identity::Identity;
use crate::ids::{AuthorId, ChunkHash, EntryId, ShareId};

/// The entry format this build writes and accepts.
pub const FORMAT_VERSION: u32 = 1;

const SIG_LEN: usize = 64;
const SIGN_DOMAIN: &[u8] = b"lattice/entry/v1\0";

/// Limits, checked on the raw bytes before decoding and on every field after.
pub mod limits {
    /// A whole entry on the wire.
    pub const MAX_ENTRY_BYTES: usize = 16 << 20;
    pub const MAX_OPS: usize = 10_000;
    pub const MAX_PARENTS: usize = 10_000;
    pub const MAX_KEY_BYTES: usize = 4096;
    /// Large enough for the manifest of a ~100 GiB file at 64 KiB chunks.
    pub const MAX_VALUE_BYTES: usize = 8 << 20;
    /// As many chunks as the largest manifest can name.
    pub const MAX_REFS_PER_OP: usize = MAX_VALUE_BYTES / 32;
}

#[derive(Clone, PartialEq, Message)]
pub struct Body {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// Empty only in the genesis entry, whose id becomes the share id.
    #[prost(bytes = "vec", tag = "2")]
    pub share_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub author: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub seq: u64,
    /// Empty for seq 1.
    #[prost(bytes = "vec", tag = "5")]
    pub prev_hash: Vec<u8>,
    #[prost(uint64, tag = "6")]
    pub hlc: u64,
    /// The heads, as the author saw them, of every key this entry writes.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub parents: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "8")]
    pub ops: Vec<Op>,
}

/// `put(key, value)` when `value` is set, `delete(key)` when it is not.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Op {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
    /// Content chunks the value refers to (32-byte hashes). A peer fetches the
    /// ones it lacks before it applies the entry, without knowing how values
    /// are encoded.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub refs: Vec<Vec<u8>>,
}

impl Op {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op {
            key: key.into(),
            value: Some(value.into()),
            refs: vec![],
        }
    }
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op {
            key: key.into(),
            value: None,
            refs: vec![],
        }
    }
    /// A put whose value refers to content chunks.
    pub fn put_with_refs(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, refs: &[ChunkHash]) -> Self {
        Op {
            key: key.into(),
            value: Some(value.into()),
            refs: refs.iter().map(|h| h.0.to_vec()).collect(),
        }
    }
}

/// An entry whose bytes decoded, whose fields are within limits and whose
/// signature verified. Only [`Entry::decode`] and [`Entry::sign`] make one.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: EntryId,
    pub author: AuthorId,
    pub share: Option<ShareId>,
    pub seq: u64,
    pub prev: Option<EntryId>,
    pub hlc: Hlc,
    pub parents: Vec<EntryId>,
    pub ops: Vec<Op>,
    /// The exact wire bytes this entry came from; stored and forwarded as is.
    pub bytes: Vec<u8>,
}

/// What a writer fills in; [`Entry::sign`] turns it into an [`Entry`].
pub struct Draft {
    pub share: Option<ShareId>,
    pub seq: u64,
    pub prev: Option<EntryId>,
    pub hlc: Hlc,
    pub parents: Vec<EntryId>,
    pub ops: Vec<Op>,
}

impl Entry {
    /// Every chunk hash the entry's ops refer to.
    pub fn refs(&self) -> impl Iterator<Item = ChunkHash> + '_ {
        self.ops
            .iter()
            .flat_map(|op| op.refs.iter())
            .filter_map(|r| ChunkHash::from_slice(r))
    }

    pub fn sign(id: &Identity, d: Draft) -> Result<Entry, Refusal> {
        let body = Body {
            format: FORMAT_VERSION,
            share_id: d.share.map(|s| s.0.to_vec()).unwrap_or_default(),
            author: id.author().0.to_vec(),
            seq: d.seq,
            prev_hash: d.prev.map(|p| p.0.to_vec()).unwrap_or_default(),
            hlc: d.hlc.0,
            parents: d.parents.iter().map(|p| p.0.to_vec()).collect(),
            ops: d.ops,
        }
        .encode_to_vec();
        let mut bytes = Vec::with_capacity(SIG_LEN + body.len());
        bytes.extend_from_slice(&id.sign(&signed_message(&body)));
        bytes.extend_from_slice(&body);
        // Our own bytes go through every check a peer applies (but the signature,
        // which we just made), so a local write never yields an entry others refuse.
        Entry::check(&bytes, false)
    }

    /// Decodes and verifies wire bytes. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Entry, Refusal> {
        Entry::check(bytes, true)
    }

    /// Decodes with every check but the signature: for bytes this store
    /// verified when it took them, or to look inside an entry that `ingest`
    /// will verify anyway. Never trust its result for anything else.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Entry, Refusal> {
        Entry::check(bytes, false)
    }

    fn check(bytes: &[u8], verify_signature: bool) -> Result<Entry, Refusal> {
        use limits::*;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(Refusal::TooLarge {
                len: bytes.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        if bytes.len() <= SIG_LEN {
            return Err(Refusal::Malformed(format!(
                "{} bytes is too short for an entry",
                bytes.len()
            )));
        }
        let (sig, body_bytes) = bytes.split_at(SIG_LEN);
        let body = Body::decode(body_bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if body.format != FORMAT_VERSION {
            return Err(Refusal::UnsupportedFormat {
                theirs: body.format,
                ours: FORMAT_VERSION,
            });
        }
        let malformed = |s: &str| Refusal::Malformed(s.to_string());
        let author = AuthorId::from_slice(&body.author).ok_or_else(|| malformed("author is not 32 bytes"))?;
        let share = match body.share_id.len() {
            0 => None,
            _ => Some(ShareId::from_slice(&body.share_id).ok_or_else(|| malformed("share id is not 32 bytes"))?),
        };
        if body.seq == 0 {
            return Err(malformed("seq starts at 1"));
        }
        let prev = match body.prev_hash.len() {
            0 => None,
            _ => Some(EntryId::from_slice(&body.prev_hash).ok_or_else(|| malformed("prev hash is not 32 bytes"))?),
        };
        if (body.seq == 1) != prev.is_none() {
            return Err(malformed("seq 1 and only seq 1 has no prev hash"));
        }
        if share.is_none() && body.seq != 1 {
            return Err(malformed("only a genesis entry (seq 1) may omit the share id"));
        }
        if body.ops.is_empty() || body.ops.len() > MAX_OPS {
            return Err(Refusal::Malformed(format!(
                "{} ops (must be 1..={MAX_OPS})",
                body.ops.len()
            )));
        }
        if body.parents.len() > MAX_PARENTS {
            return Err(malformed("too many parents"));
        }
        let parents = body
            .parents
            .iter()
            .map(|p| EntryId::from_slice(p))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("a parent is not 32 bytes"))?;
        // One op per key: the order-independence of heads (index.rs) relies on it.
        let mut seen = std::collections::HashSet::with_capacity(body.ops.len());
        for op in &body.ops {
            if !seen.insert(op.key.as_slice()) {
                return Err(malformed("a key is written twice in one entry"));
            }
            if op.key.is_empty() || op.key.len() > MAX_KEY_BYTES {
                return Err(Refusal::Malformed(format!(
                    "key of {} bytes (must be 1..={MAX_KEY_BYTES})",
                    op.key.len()
                )));
            }
            if op.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
                return Err(Refusal::Malformed(format!("value larger than {MAX_VALUE_BYTES} bytes")));
            }
            if op.refs.len() > MAX_REFS_PER_OP || op.refs.iter().any(|r| r.len() != 32) {
                return Err(malformed("refs must be at most MAX_REFS_PER_OP 32-byte hashes"));
            }
        }
        if verify_signature {
            let key = VerifyingKey::from_bytes(&author.0).map_err(|_| Refusal::BadSignature(author))?;
            let sig = Signature::from_bytes(sig.try_into().expect("split at SIG_LEN"));
            key.verify_strict(&signed_message(body_bytes), &sig)
                .map_err(|_| Refusal::BadSignature(author))?;
        }
        Ok(Entry {
            id: EntryId(*blake3::hash(body_bytes).as_bytes()),
            author,
            share,
            seq: body.seq,
            prev,
            hlc: Hlc(body.hlc),
            parents,
            ops: body.ops,
            bytes: bytes.to_vec(),
        })
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + body.len());
    m.extend_from_slice(SIGN_DOMAIN);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(ops: Vec<Op>) -> Draft {
        Draft {
            share: Some(ShareId([7; 32])),
            seq: 1,
            prev: None,
            hlc: Hlc::new(1000, 0),
            parents: vec![],
            ops,
        }
    }

    #[test]
    fn round_trip_keeps_bytes_and_id() {
        let id = Identity::generate();
        let e = Entry::sign(&id, draft(vec![Op::put("a", "1"), Op::delete("b")])).unwrap();
        let d = Entry::decode(&e.bytes).unwrap();
        assert_eq!(d.id, e.id);
        assert_eq!(d.author, id.author());
        assert_eq!(d.ops, vec![Op::put("a", "1"), Op::delete("b")]);
    }

    #[test]
    fn unverified_decode_skips_only_the_signature() {
        let id = Identity::generate();
        let e = Entry::sign(&id, draft(vec![Op::put("a", "1")])).unwrap();
        let mut forged = e.bytes.clone();
        forged[0] ^= 1; // the signature
        assert!(Entry::decode(&forged).is_err());
        assert_eq!(Entry::decode_unverified(&forged).unwrap().id, e.id);
        assert!(
            Entry::decode_unverified(&forged[..70]).is_err(),
            "every other check still holds"
        );
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let id = Identity::generate();
        let e = Entry::sign(&id, draft(vec![Op::put("a", "1")])).unwrap();
        for i in 0..e.bytes.len() {
            let mut b = e.bytes.clone();
            b[i] ^= 0x10;
            assert!(Entry::decode(&b).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn other_format_names_both_versions() {
        let id = Identity::generate();
        let body = Body {
            format: 9,
            author: id.author().0.to_vec(),
            seq: 1,
            ops: vec![Op::put("a", "b")],
            ..Default::default()
        }
        .encode_to_vec();
        let mut bytes = id.sign(&signed_message(&body)).to_vec();
        bytes.extend_from_slice(&body);
        let err = Entry::decode(&bytes).unwrap_err();
        assert_eq!(err, Refusal::UnsupportedFormat { theirs: 9, ours: 1 });
        assert!(err.to_string().contains("version 9") && err.to_string().contains("version 1"));
    }
}

//! Fixed-size identifiers: authors (Ed25519 public keys), entries and shares
//! (blake3 hashes). Displayed as lowercase hex.

use std::fmt;

macro_rules! id32 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some(Self(b.try_into().ok()?))
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// The first 8 hex digits, for names a person reads.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            pub fn parse_hex(s: &str) -> Option<Self> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b).ok()?;
                Some(Self(b))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id32!(
    /// An Ed25519 public key: a node's identity and the author of its entries.
    AuthorId
);
id32!(
    /// blake3 of an entry's signed body bytes.
    EntryId
);
id32!(
    /// The id of a share: the [`EntryId`] of its genesis entry.
    ShareId
);
id32!(
    /// blake3 of a content chunk.
    ChunkHash
);

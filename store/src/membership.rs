//! Who may write to a share. Membership lives in the share itself:
//!
//! - `peers/<author hex>` -> `owner` | `writer` | `reader` (deleted: removed);
//! - `invites/<blake3(secret) hex>` -> [`Invite`]: a one-time admission.
//!
//! With [`crate::Config::enforce_membership`], every entry is checked against
//! the state it arrives into: a non-member's or a reader's entry is refused;
//! a writer may invite (as writer or reader) and admit a joiner by consuming an
//! invite of the same role in the same entry; only an owner may change roles
//! or remove peers. A refused entry is not stored, so a peer sends it again
//! later, when (if ever) the state allows it.

use prost::Message;

use crate::entry::Entry;
use crate::error::{Refusal, Result};
use crate::head;
use crate::ids::AuthorId;
use crate::index::Tables;

pub const PEERS: &str = "peers/";
pub const INVITES: &str = "invites/";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Writer,
    Reader,
}

impl Role {
    pub fn parse(b: &[u8]) -> Option<Role> {
        match b {
            b"owner" => Some(Role::Owner),
            b"writer" => Some(Role::Writer),
            b"reader" => Some(Role::Reader),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

pub fn peer_key(a: &AuthorId) -> Vec<u8> {
    format!("{PEERS}{a}").into_bytes()
}

/// The key of the invite whose secret hashes to `secret_hash`.
pub fn invite_key(secret_hash: &[u8; 32]) -> Vec<u8> {
    format!("{INVITES}{}", hex::encode(secret_hash)).into_bytes()
}

pub fn secret_hash(secret: &[u8]) -> [u8; 32] {
    *blake3::hash(secret).as_bytes()
}

/// What the share stores of an invite: never the secret, only its hash (the key).
#[derive(Clone, PartialEq, Message)]
pub struct Invite {
    #[prost(string, tag = "1")]
    pub role: String,
    #[prost(uint64, tag = "2")]
    pub expires_ms: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub by: Vec<u8>,
}

fn winner(t: &Tables, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(head::winner(&t.heads_of(key)?).and_then(|h| h.value.clone()))
}

pub(crate) fn role_in(t: &Tables, a: &AuthorId) -> Result<Option<Role>> {
    Ok(winner(t, &peer_key(a))?.and_then(|v| Role::parse(&v)))
}

/// Why an entry of `author` cannot even wait for a gap to fill: its author is
/// not a member, or only reads. (Parked entries are bounded by membership,
/// not only by their expiry.)
pub(crate) fn may_park(t: &Tables, author: &AuthorId) -> Result<Option<Refusal>> {
    Ok(match role_in(t, author)? {
        None => Some(Refusal::NotAMember(*author)),
        Some(Role::Reader) => Some(Refusal::ReadOnly(*author)),
        Some(_) => None,
    })
}

/// Why `e` may not be applied to the state in `t`, if it may not.
pub(crate) fn check(t: &Tables, e: &Entry, _now_ms: u64) -> Result<Option<Refusal>> {
    if e.share.is_none() {
        return Ok(None); // the genesis: its id is the share id, checked before
    }
    let not_allowed = |why: &str| {
        Ok(Some(Refusal::NotAllowed {
            author: e.author,
            why: why.to_string(),
        }))
    };
    match role_in(t, &e.author)? {
        None => Ok(Some(Refusal::NotAMember(e.author))),
        Some(Role::Reader) => Ok(Some(Refusal::ReadOnly(e.author))),
        Some(Role::Owner) => Ok(None),
        Some(Role::Writer) => {
            for op in &e.ops {
                if op.key.starts_with(INVITES.as_bytes()) {
                    if let Some(v) = &op.value {
                        match Invite::decode(v.as_slice()) {
                            Ok(i) if i.role != "owner" => {}
                            _ => return not_allowed("only an owner may invite an owner"),
                        }
                    }
                } else if op.key.starts_with(PEERS.as_bytes()) {
                    let Some(role) = op.value.as_deref() else {
                        return not_allowed("only an owner may remove a peer");
                    };
                    let who = std::str::from_utf8(&op.key[PEERS.len()..])
                        .ok()
                        .and_then(AuthorId::parse_hex);
                    if who.is_none_or(|id| role_in(t, &id).ok().flatten().is_some()) {
                        return not_allowed("only an owner may change a member's role");
                    }
                    // A writer admits only by consuming, in the same entry, an
                    // invite for exactly that role, unexpired at the entry's
                    // own time (so every peer decides the same, whenever the
                    // entry reaches it).
                    let mut ok = false;
                    for other in e
                        .ops
                        .iter()
                        .filter(|o| o.value.is_none() && o.key.starts_with(INVITES.as_bytes()))
                    {
                        if let Some(inv) = winner(t, &other.key)?.and_then(|v| Invite::decode(v.as_slice()).ok()) {
                            ok |= inv.role.as_bytes() == role && inv.expires_ms > e.hlc.ms();
                        }
                    }
                    if !ok {
                        return not_allowed("a writer may add a peer only with an invite for that role");
                    }
                }
            }
            Ok(None)
        }
    }
}

impl crate::Store {
    /// The signed entries that decided `peer`'s membership (the heads of its
    /// `peers/` key), as wire bytes: what a refusal shows a removed peer.
    pub fn membership_evidence(&self, peer: &AuthorId) -> Result<Vec<Vec<u8>>> {
        let txn = redb::ReadableDatabase::begin_read(&*self.db())?;
        let entries = txn.open_table(crate::tables::ENTRIES)?;
        let mut out = Vec::new();
        for h in self.heads(&peer_key(peer))? {
            if let Some(v) = redb::ReadableTable::get(&entries, &h.entry.0)? {
                out.push(v.value().1.to_vec());
            }
        }
        Ok(out)
    }

    /// If `evidence` proves this node was removed from the share or made a
    /// reader (an entry of this share, signed by someone this node knows as
    /// an owner, that deletes or demotes its `peers/` key), says how.
    pub fn eviction(&self, evidence: &[Vec<u8>]) -> Option<String> {
        let mine = peer_key(&self.author());
        for bytes in evidence {
            let Ok(e) = Entry::decode(bytes) else { continue };
            if e.share != Some(self.share_id()) {
                continue;
            }
            let by_owner = self
                .get(&peer_key(&e.author))
                .ok()
                .flatten()
                .and_then(|v| Role::parse(&v))
                == Some(Role::Owner);
            if !by_owner {
                continue;
            }
            for op in e.ops.iter().filter(|op| op.key == mine) {
                match op.value.as_deref().and_then(Role::parse) {
                    None => return Some(format!("this node was removed from the share by {}", e.author.short())),
                    Some(Role::Reader) => return Some(format!("this node was made a reader by {}", e.author.short())),
                    Some(_) => {}
                }
            }
        }
        None
    }
}

//! The share's membership for the network layer ([`net::Directory`]), read
//! from the store: `peers/<id>` roles, `invites/<hash>`, and `addrs/<id>`
//! (the addresses each member publishes, comma separated: "IP:PORT" or a
//! relay URL).

use std::sync::Arc;

use prost::Message;
use store::membership::{Invite, invite_key, peer_key, secret_hash};
use store::{AuthorId, Op, Role, Store};

pub struct ShareDirectory(pub Arc<Store>);

pub fn addrs_key(id: &AuthorId) -> Vec<u8> {
    format!("addrs/{id}").into_bytes()
}

impl ShareDirectory {
    pub fn all_members(&self) -> Vec<(AuthorId, Role)> {
        let mut out = Vec::new();
        for (k, v) in self.0.scan(store::membership::PEERS.as_bytes()).unwrap_or_default() {
            let id = std::str::from_utf8(&k[store::membership::PEERS.len()..])
                .ok()
                .and_then(AuthorId::parse_hex);
            if let (Some(id), Some(role)) = (id, Role::parse(&v)) {
                out.push((id, role));
            }
        }
        out
    }

    /// Writes this node's addresses into the share when they changed (writers
    /// and owners only: a reader cannot write, and others reach it when it dials).
    pub fn publish(&self, addrs: &[String]) -> store::Result<()> {
        let me = self.0.author();
        if !matches!(net::Directory::role(self, &me), Some(Role::Owner | Role::Writer)) {
            return Ok(());
        }
        let v = addrs.join(",");
        if self.0.get(&addrs_key(&me))?.as_deref() != Some(v.as_bytes()) {
            self.0.write(vec![Op::put(addrs_key(&me), v)])?;
        }
        Ok(())
    }

    /// Writes an invite; returns its secret.
    pub fn invite(&self, role: Role, ttl_ms: u64) -> store::Result<[u8; 32]> {
        let secret: [u8; 32] = rand::random();
        let inv = Invite {
            role: role.as_str().into(),
            expires_ms: store::hlc::wall_ms() + ttl_ms,
            by: self.0.author().0.to_vec(),
        };
        self.0
            .write(vec![Op::put(invite_key(&secret_hash(&secret)), inv.encode_to_vec())])?;
        Ok(secret)
    }
}

impl net::Directory for ShareDirectory {
    fn role(&self, id: &AuthorId) -> Option<Role> {
        self.0.get(&peer_key(id)).ok().flatten().and_then(|v| Role::parse(&v))
    }

    fn members(&self) -> Vec<(AuthorId, Vec<String>)> {
        let me = self.0.author();
        self.all_members()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, _)| {
                let addrs = self
                    .0
                    .get(&addrs_key(&id))
                    .ok()
                    .flatten()
                    .map(|v| {
                        String::from_utf8_lossy(&v)
                            .split(',')
                            .filter(|a| !a.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                (id, addrs)
            })
            .collect()
    }

    fn admit(&self, joiner: &AuthorId, secret: &[u8]) -> Result<Role, String> {
        let key = invite_key(&secret_hash(secret));
        let inv = self
            .0
            .get(&key)
            .map_err(|e| e.to_string())?
            .ok_or("this ticket is not valid: it was used already, or never issued for this share")?;
        let inv = Invite::decode(inv.as_slice()).map_err(|e| format!("the invite is damaged: {e}"))?;
        if inv.expires_ms <= store::hlc::wall_ms() {
            return Err("this ticket has expired".into());
        }
        let role = Role::parse(inv.role.as_bytes()).ok_or("the invite names no known role")?;
        // One entry: the joiner becomes a member and the invite is gone, so a
        // ticket works once.
        self.0
            .write(vec![Op::put(peer_key(joiner), role.as_str()), Op::delete(key)])
            .map_err(|e| format!("cannot admit: {e}"))?;
        Ok(role)
    }
}

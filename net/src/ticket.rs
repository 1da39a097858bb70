//! Invite tickets: what `mountctl invite` prints and `mountctl join` takes.
//! `lattice1` followed by the hex of a prost message: the share id, the
//! inviter's endpoint id and addresses, a few other members reachable when
//! the ticket was made (any of them can admit the joiner), and a one-time
//! secret. The share keeps only the secret's hash.

use prost::Message;

const PREFIX: &str = "lattice1";

#[derive(Clone, PartialEq, Message)]
struct TicketWire {
    #[prost(bytes = "vec", tag = "1")]
    share: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    inviter: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    addrs: Vec<String>,
    #[prost(bytes = "vec", tag = "4")]
    secret: Vec<u8>,
    #[prost(message, repeated, tag = "5")]
    others: Vec<MemberWire>,
}

#[derive(Clone, PartialEq, Message)]
struct MemberWire {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, repeated, tag = "2")]
    addrs: Vec<String>,
}

/// At most this many members besides the inviter go into a ticket.
pub const MAX_OTHERS: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub share: [u8; 32],
    pub inviter: [u8; 32],
    /// The inviter's addresses ("IP:PORT" or relay URLs).
    pub addrs: Vec<String>,
    pub secret: [u8; 32],
    /// Other members that can admit the joiner, with their addresses.
    pub others: Vec<([u8; 32], Vec<String>)>,
}

impl Ticket {
    /// Every member named, the inviter first.
    pub fn members(&self) -> Vec<([u8; 32], Vec<String>)> {
        let mut out = vec![(self.inviter, self.addrs.clone())];
        out.extend(self.others.iter().filter(|(id, _)| *id != self.inviter).cloned());
        out
    }

    pub fn encode(&self) -> String {
        let w = TicketWire {
            share: self.share.to_vec(),
            inviter: self.inviter.to_vec(),
            addrs: self.addrs.clone(),
            secret: self.secret.to_vec(),
            others: self
                .others
                .iter()
                .take(MAX_OTHERS)
                .map(|(id, addrs)| MemberWire {
                    id: id.to_vec(),
                    addrs: addrs.clone(),
                })
                .collect(),
        };
        format!("{PREFIX}{}", hex::encode(w.encode_to_vec()))
    }

    pub fn decode(s: &str) -> Result<Ticket, String> {
        let bad = |why: &str| format!("this is not a Lattice ticket ({why})");
        let hexed = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with lattice1"))?;
        let bytes = hex::decode(hexed).map_err(|_| bad("not hex"))?;
        let w = TicketWire::decode(bytes.as_slice()).map_err(|_| bad("malformed"))?;
        let arr = |v: &[u8], what: &str| -> Result<[u8; 32], String> { v.try_into().map_err(|_| bad(what)) };
        Ok(Ticket {
            share: arr(&w.share, "share id")?,
            inviter: arr(&w.inviter, "inviter id")?,
            addrs: w.addrs,
            secret: arr(&w.secret, "secret")?,
            others: w
                .others
                .iter()
                .take(MAX_OTHERS)
                .map(|m| Ok((arr(&m.id, "member id")?, m.addrs.clone())))
                .collect::<Result<_, String>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let t = Ticket {
            share: [1; 32],
            inviter: [2; 32],
            addrs: vec!["127.0.0.1:4000".into()],
            secret: [3; 32],
            others: vec![([4; 32], vec!["127.0.0.1:4001".into(), "https://relay.example./".into()])],
        };
        assert_eq!(t.members().len(), 2);
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
        assert!(Ticket::decode("hello").unwrap_err().contains("not a Lattice ticket"));
        assert!(Ticket::decode("lattice1zz").is_err());
    }
}

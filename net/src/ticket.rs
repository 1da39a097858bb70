//! Invite tickets: what `mountctl invite` prints and `mountctl join` takes.
//! `lattice1` followed by the hex of a prost message: the share id, the
//! inviter's endpoint id and addresses, and a one-time secret. The share keeps
//! only the secret's hash.

use std::net::SocketAddr;

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub share: [u8; 32],
    pub inviter: [u8; 32],
    pub addrs: Vec<SocketAddr>,
    pub secret: [u8; 32],
}

impl Ticket {
    pub fn encode(&self) -> String {
        let w = TicketWire {
            share: self.share.to_vec(),
            inviter: self.inviter.to_vec(),
            addrs: self.addrs.iter().map(|a| a.to_string()).collect(),
            secret: self.secret.to_vec(),
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
            addrs: w
                .addrs
                .iter()
                .map(|a| a.parse().map_err(|_| bad("address")))
                .collect::<Result<_, _>>()?,
            secret: arr(&w.secret, "secret")?,
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
            addrs: vec!["127.0.0.1:4000".parse().unwrap()],
            secret: [3; 32],
        };
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
        assert!(Ticket::decode("hello").unwrap_err().contains("not a Lattice ticket"));
        assert!(Ticket::decode("lattice1zz").is_err());
    }
}

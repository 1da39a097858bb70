//! Every decoder of bytes a peer sends, fed arbitrary bytes: frames (with
//! the length prefix a stranger controls), gossip announcements and
//! tickets. Each returns an error or a value, never panics, and a frame is
//! never longer than the limit it was read against. Findings of the fuzz
//! targets (`fuzz/`) are added here as cases.

use net::Ticket;
use net::wire::{self, Announce};
use proptest::prelude::*;
use prost::Message;

fn read_all(bytes: &[u8], max: usize) -> Vec<Result<usize, String>> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match wire::read_max(&mut r, max).await {
                Ok(Some((_, n))) => out.push(Ok(n)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn frames_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 0usize..8192) {
        for n in read_all(&bytes, max).into_iter().flatten() {
            prop_assert!(n <= 4 + max, "a frame of {} bytes passed a limit of {}", n, max);
        }
    }

    /// A length prefix the peer chose, followed by arbitrary bytes.
    #[test]
    fn frames_with_a_chosen_length(len in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let bytes = [len.to_be_bytes().as_slice(), &body].concat();
        let out = read_all(&bytes, wire::MAX_FIRST_FRAME);
        if len as usize > wire::MAX_FIRST_FRAME {
            prop_assert!(matches!(out.first(), Some(Err(e)) if e.contains("over the limit")), "{:?}", out);
        }
    }

    #[test]
    fn announcements_and_tickets(bytes in proptest::collection::vec(any::<u8>(), 0..4096), text in ".{0,300}") {
        let _ = Announce::decode(bytes.as_slice());
        let _ = Ticket::decode(&text);
        let _ = Ticket::decode(&format!("lattice1{}", hex::encode(&bytes)));
    }
}

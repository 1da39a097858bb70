#![no_main]
//! Gossip announcements and invite tickets.
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = net::wire::Announce::decode(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = net::Ticket::decode(s);
    }
});

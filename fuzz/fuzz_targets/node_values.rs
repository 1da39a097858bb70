#![no_main]
//! A file's keys and values as a peer may have signed them.
use fs::node::{self, Attr, Data, Loc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = node::parse_key(data);
    let _ = node::decode::<Loc>(data);
    let _ = node::decode::<Attr>(data);
    let _ = node::decode::<Data>(data);
});

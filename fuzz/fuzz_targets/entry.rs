#![no_main]
//! Entry decoding, with and without the signature check.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = store::Entry::decode(data);
    let _ = store::Entry::decode_unverified(data);
});

#![no_main]
//! Content manifests and role records, as read from the store.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = store::Manifest::decode(data);
    let _ = store::Role::parse(data);
});

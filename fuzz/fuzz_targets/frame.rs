#![no_main]
//! Sync-protocol frames, length prefix included, read against the first
//! frame's limit and the general one.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for max in [net::wire::MAX_FIRST_FRAME, net::wire::MAX_FRAME] {
            let mut r = data;
            while let Ok(Some((_, n))) = net::wire::read_max(&mut r, max).await {
                assert!(n <= 4 + max);
            }
        }
    });
});

//! The decoders of what a peer writes into the store under a file's keys:
//! keys, places, attributes, content records. A peer can sign any bytes
//! there; each decodes to a value or to nothing, never a panic. (What the
//! view makes of arbitrary but well-formed values: `view_rules.rs`.)

use fs::node::{self, Attr, Data, Loc};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn node_keys_and_values_from_arbitrary_bytes(key in proptest::collection::vec(any::<u8>(), 0..64), value in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = node::parse_key(&key);
        let _ = node::decode::<Loc>(&value);
        let _ = node::decode::<Attr>(&value);
        let _ = node::decode::<Data>(&value);
    }
}

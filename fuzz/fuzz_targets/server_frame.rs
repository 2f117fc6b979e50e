//! One payload decoded as a `ServerFrame`, as the SDK reads a node's answers and events. No
//! panic; a decoded frame re-encodes to a payload that decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_proto::{decode, encode, ServerFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode::<ServerFrame>(data) {
        let again = encode(&f).expect("a decoded frame encodes");
        assert_eq!(decode::<ServerFrame>(&again).expect("and decodes"), f);
    }
});

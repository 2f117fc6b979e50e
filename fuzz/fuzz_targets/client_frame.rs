//! One payload decoded as a `ClientFrame`: every request type a client can send. No panic; a
//! decoded frame re-encodes to a payload that decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_proto::{decode, encode, ClientFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode::<ClientFrame>(data) {
        let again = encode(&f).expect("a decoded frame encodes");
        assert_eq!(decode::<ClientFrame>(&again).expect("and decodes"), f);
    }
});

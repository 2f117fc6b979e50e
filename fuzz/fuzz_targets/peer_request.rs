//! A peer call as the node reads it (`net::peer::serve`): the whole stream decoded as a
//! `PeerRequest` (Raft append, vote, snapshot chunk, forwarded proposal), and as a
//! `PeerResponse`, as the caller reads the answer. No panic; what decodes encodes again to bytes
//! that decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_node::net::peer::{PeerRequest, PeerResponse};
use stoa_proto::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode::<PeerRequest>(data) {
        let again = encode(&r).expect("a decoded request encodes");
        let back = decode::<PeerRequest>(&again).expect("and decodes");
        assert_eq!(encode(&back).expect("encodes"), again);
    }
    if let Ok(r) = decode::<PeerResponse>(data) {
        let again = encode(&r).expect("a decoded response encodes");
        let back = decode::<PeerResponse>(&again).expect("and decodes");
        assert_eq!(encode(&back).expect("encodes"), again);
    }
});

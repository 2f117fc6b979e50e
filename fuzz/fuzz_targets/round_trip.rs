//! Structure-aware: the input is entropy for `cluster_tests::arbitrary`, which turns any bytes
//! into a value of a wire type (every variant reachable), so the fuzzer explores values rather
//! than mostly-invalid bytes. Each value must survive encode and decode unchanged.
#![no_main]

use cluster_tests::arbitrary::value;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use stoa_node::net::peer::{PeerRequest, PeerResponse};
use stoa_proto::{decode, encode, ClientFrame, ServerFrame};

fn same_bytes<T: Serialize + DeserializeOwned>(v: &T) {
    let bytes = encode(v).expect("a value encodes");
    let back: T = decode(&bytes).expect("its encoding decodes");
    assert_eq!(encode(&back).expect("encodes"), bytes);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, entropy)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let f: ClientFrame = value(entropy).expect("any entropy is a client frame");
            same_bytes(&f);
            assert_eq!(decode::<ClientFrame>(&encode(&f).unwrap()).unwrap(), f);
        }
        1 => {
            let f: ServerFrame = value(entropy).expect("any entropy is a server frame");
            same_bytes(&f);
            assert_eq!(decode::<ServerFrame>(&encode(&f).unwrap()).unwrap(), f);
        }
        2 => {
            if let Ok(r) = value::<PeerRequest>(entropy) {
                same_bytes(&r);
            }
        }
        _ => {
            if let Ok(r) = value::<PeerResponse>(entropy) {
                same_bytes(&r);
            }
        }
    }
});

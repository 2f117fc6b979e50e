//! The client stream as the node reads it: bytes in arbitrary chunks through a `FrameDecoder`
//! with an arbitrary limit, each payload decoded as a `ClientFrame` (what a node reads) and a
//! `ServerFrame` (what the SDK reads). No panic, no payload over the limit, and whatever decodes
//! encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoa_proto::{decode, encode, ClientFrame, CodecError, FrameDecoder, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, c], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limit = usize::from(u16::from_le_bytes([a, b]));
    let chunk = usize::from(c).max(1);
    let mut dec = FrameDecoder::new(limit);
    for piece in stream.chunks(chunk) {
        dec.extend(piece);
        loop {
            match dec.next_payload() {
                Ok(Some(p)) => {
                    assert!(p.len() <= limit);
                    if let Ok(f) = decode::<ClientFrame>(&p) {
                        assert_eq!(decode::<ClientFrame>(&encode(&f).unwrap()).unwrap(), f);
                    }
                    if let Ok(f) = decode::<ServerFrame>(&p) {
                        assert_eq!(decode::<ServerFrame>(&encode(&f).unwrap()).unwrap(), f);
                    }
                }
                Ok(None) => break,
                Err(CodecError::FrameTooLarge { .. }) => return,
                Err(e) => panic!("the framing layer only refuses sizes: {e}"),
            }
        }
    }
});

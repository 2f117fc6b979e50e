//! The decoders on arbitrary input, as property tests that run with every `cargo test`:
//! - arbitrary and mutated bytes never panic the node's peer decoder (`PeerRequest`,
//!   `PeerResponse`);
//! - arbitrary values of every wire type — every variant of every client request, server
//!   frame and peer request, built by [`cluster_tests::arbitrary`] — survive encode, framing in
//!   random chunks, and decode unchanged.
//!
//! `proto/src/codec/tests.rs` has the byte-level properties of the frame codec; `fuzz/` has
//! coverage-guided targets for the same decoders.

use cluster_tests::arbitrary;
use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Vote};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use stoa_node::net::peer::{PeerRequest, PeerResponse};
use stoa_node::raft::GroupId;
use stoa_proto::{encode_frame, ClientFrame, FrameDecoder, ServerFrame};

const FRAME_MAX: usize = stoa_proto::limits::FRAME_BYTES_MAX;

fn valid_requests() -> Vec<Vec<u8>> {
    let vote = |term, node, last: Option<(u64, u64)>| PeerRequest::Vote {
        group: GroupId(term as u32 % 3),
        rpc: VoteRequest::new(
            Vote::new(term, node),
            last.map(|(t, i)| LogId::new(CommittedLeaderId::new(t, node), i)),
        ),
    };
    [vote(1, 2, None), vote(7, 3, Some((6, 1000)))]
        .iter()
        .map(|r| stoa_proto::encode(r).expect("encode"))
        .collect()
}

/// `value` framed, cut into chunks of the given sizes, fed to a decoder: the one frame that
/// comes out decodes to a value that encodes to the same bytes.
fn framed_round_trip<T: Serialize + DeserializeOwned + Debug>(
    value: &T,
    chunks: &[usize],
) -> Result<(), TestCaseError> {
    let Ok(frame) = encode_frame(value, FRAME_MAX) else {
        return Ok(()); // over the frame limit: nothing to send
    };
    let mut dec = FrameDecoder::new(FRAME_MAX);
    let mut rest: &[u8] = &frame;
    let mut payloads = Vec::new();
    for &c in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(c.clamp(1, rest.len()));
        dec.extend(now);
        rest = later;
        while let Some(p) = dec.next_payload().expect("a frame under the limit") {
            payloads.push(p);
        }
    }
    prop_assert_eq!(payloads.len(), 1);
    prop_assert_eq!(dec.buffered(), 0);
    let back: T = stoa_proto::decode(&payloads[0]).expect("an encoded value decodes");
    prop_assert_eq!(
        stoa_proto::encode(&back).expect("encode again"),
        stoa_proto::encode(value).expect("encode"),
        "{:?} came back as {:?}",
        value,
        back
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_peer_decoder(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = stoa_proto::decode::<PeerRequest>(&data);
        let _ = stoa_proto::decode::<PeerResponse>(&data);
    }

    #[test]
    fn mutated_peer_requests_never_panic(which in 0usize..2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = valid_requests()[which].clone();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(req) = stoa_proto::decode::<PeerRequest>(&bytes) {
            // Whatever decodes is a value the node could have been sent: it encodes back.
            let again = stoa_proto::encode(&req).expect("re-encode");
            prop_assert!(stoa_proto::decode::<PeerRequest>(&again).is_ok());
        }
    }

    #[test]
    fn every_client_frame_round_trips(entropy in proptest::collection::vec(any::<u8>(), 0..256), chunks in proptest::collection::vec(1usize..64, 1..6)) {
        let frame: ClientFrame = arbitrary::value(&entropy).expect("any entropy is a client frame");
        framed_round_trip(&frame, &chunks)?;
        let back: ClientFrame = stoa_proto::decode(&stoa_proto::encode(&frame).expect("encode")).expect("decode");
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn every_server_frame_round_trips(entropy in proptest::collection::vec(any::<u8>(), 0..256), chunks in proptest::collection::vec(1usize..64, 1..6)) {
        let frame: ServerFrame = arbitrary::value(&entropy).expect("any entropy is a server frame");
        framed_round_trip(&frame, &chunks)?;
        let back: ServerFrame = stoa_proto::decode(&stoa_proto::encode(&frame).expect("encode")).expect("decode");
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn every_peer_request_and_response_round_trips(entropy in proptest::collection::vec(any::<u8>(), 0..512), chunks in proptest::collection::vec(1usize..64, 1..6)) {
        // openraft validates some of its types on the way in; those values are skipped.
        if let Ok(req) = arbitrary::value::<PeerRequest>(&entropy) {
            framed_round_trip(&req, &chunks)?;
        }
        if let Ok(resp) = arbitrary::value::<PeerResponse>(&entropy) {
            framed_round_trip(&resp, &chunks)?;
        }
    }
}

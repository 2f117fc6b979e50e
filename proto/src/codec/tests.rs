use super::*;
use crate::*;
use proptest::prelude::*;

fn sample_post() -> ClientFrame {
    ClientFrame::Request {
        id: 7,
        body: Request::Post(Post {
            room: "lobby".into(),
            client_msg_id: "c1".into(),
            text: "hi".into(),
            alert: false,
        }),
    }
}

fn sample_event() -> ServerFrame {
    ServerFrame::Event(Event::Message(Message {
        room: "lobby".into(),
        seq: Seq(300),
        author: "ann".into(),
        text: "hello".into(),
        ts_ms: 1_700_000_000_000,
        alert: true,
        moderated: None,
        file: None,
    }))
}

fn sample_replaced() -> ServerFrame {
    ServerFrame::Event(Event::Replaced {
        room: "r".into(),
        messages: vec![Message {
            room: "r".into(),
            seq: Seq(2),
            author: "a".into(),
            text: String::new(),
            ts_ms: 5,
            alert: false,
            moderated: Some(Moderation::Removed),
            file: Some(FileRef {
                id: "f".into(),
                name: "n".into(),
                size: 3,
                sha256: "h".into(),
            }),
        }],
        moderation: 3,
    })
}

#[test]
fn golden_bytes_of_a_replaced_event() {
    let frame = encode_frame(&sample_replaced(), FRAME_BYTES_MAX).unwrap();
    assert_eq!(hex(&frame), GOLDEN_REPLACED);
}

/// Golden bytes: if this changes, old clients break. Bump PROTOCOL_VERSION and update on purpose.
#[test]
fn golden_bytes_of_a_post_request() {
    let frame = encode_frame(&sample_post(), FRAME_BYTES_MAX).unwrap();
    assert_eq!(hex(&frame), GOLDEN_POST);
}

#[test]
fn golden_bytes_of_a_message_event() {
    let frame = encode_frame(&sample_event(), FRAME_BYTES_MAX).unwrap();
    assert_eq!(hex(&frame), GOLDEN_EVENT);
}

#[test]
fn golden_bytes_of_hello_and_error() {
    let hello = ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: "t".into(),
    });
    assert_eq!(
        hex(&encode_frame(&hello, FRAME_BYTES_MAX).unwrap()),
        GOLDEN_HELLO
    );
    let err = ServerFrame::Response {
        id: 1,
        result: Err(ApiError::new(ErrorCode::Unavailable, "x")),
    };
    assert_eq!(
        hex(&encode_frame(&err, FRAME_BYTES_MAX).unwrap()),
        GOLDEN_ERROR
    );
}

/// Presence frames (appended variants: `Request::Participants`, `Response::Participants`,
/// `Event::Roster`), pinned like the others.
fn presence_frames() -> Vec<(&'static str, Vec<u8>)> {
    let frames: Vec<(&'static str, Result<bytes::Bytes, CodecError>)> = vec![
        (
            "request",
            encode_frame(
                &ClientFrame::Request {
                    id: 7,
                    body: Request::Participants {
                        room: "lobby".into(),
                    },
                },
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "names",
            encode_frame(
                &ServerFrame::Response {
                    id: 7,
                    result: Ok(Response::Participants {
                        room: "lobby".into(),
                        roster: Roster::Names(vec!["ann".into(), "bo".into()]),
                    }),
                },
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "over",
            encode_frame(
                &ServerFrame::Response {
                    id: 7,
                    result: Ok(Response::Participants {
                        room: "lobby".into(),
                        roster: Roster::OverLimit {
                            count: 300,
                            limit: 75,
                        },
                    }),
                },
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "all",
            encode_frame(
                &ServerFrame::Event(Event::Roster {
                    room: "lobby".into(),
                    change: RosterChange::All(vec!["ann".into()]),
                }),
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "joined",
            encode_frame(
                &ServerFrame::Event(Event::Roster {
                    room: "lobby".into(),
                    change: RosterChange::Joined("ann".into()),
                }),
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "left",
            encode_frame(
                &ServerFrame::Event(Event::Roster {
                    room: "lobby".into(),
                    change: RosterChange::Left("ann".into()),
                }),
                FRAME_BYTES_MAX,
            ),
        ),
        (
            "notice",
            encode_frame(
                &ServerFrame::Event(Event::Roster {
                    room: "lobby".into(),
                    change: RosterChange::OverLimit {
                        count: 76,
                        limit: 75,
                    },
                }),
                FRAME_BYTES_MAX,
            ),
        ),
    ];
    frames
        .into_iter()
        .map(|(name, f)| (name, f.unwrap().to_vec()))
        .collect()
}

#[test]
fn golden_bytes_of_presence_frames() {
    let got: Vec<(&str, String)> = presence_frames()
        .into_iter()
        .map(|(name, f)| (name, hex(&f)))
        .collect();
    let want: Vec<(&str, String)> = GOLDEN_PRESENCE
        .iter()
        .map(|(name, h)| (*name, h.to_string()))
        .collect();
    assert_eq!(got, want);
}

/// Request 26 (Participants); Response 25 (Participants) with Roster 0 (Names) or 1
/// (OverLimit, 300 as varint fb2c01); Event 4 (Roster) with RosterChange 0..=3.
const GOLDEN_PRESENCE: [(&str, &str); 7] = [
    ("request", "0000000901071a056c6f626279"),
    ("names", "0000001301070019056c6f626279000203616e6e02626f"),
    ("over", "0000000f01070019056c6f62627901fb2c014b"),
    ("all", "0000000e0204056c6f626279000103616e6e"),
    ("joined", "0000000d0204056c6f6262790103616e6e"),
    ("left", "0000000d0204056c6f6262790203616e6e"),
    ("notice", "0000000b0204056c6f626279034c4b"),
];

const GOLDEN_POST: &str = "00000010010700056c6f62627902633102686900";
const GOLDEN_EVENT: &str =
    "000000210200056c6f626279fb2c0103616e6e0568656c6c6ffd0068e5cf8b010000010000";
const GOLDEN_REPLACED: &str = "00000018020301720101720201610005000100010166016e03016803";
const GOLDEN_HELLO: &str = "0000000400030174";
const GOLDEN_ERROR: &str = "00000006010101050178";

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn frames_split_across_reads_are_reassembled() {
    let a = encode_frame(&sample_post(), 1024).unwrap();
    let b = encode_frame(&sample_event(), 1024).unwrap();
    let mut all = a.to_vec();
    all.extend_from_slice(&b);
    let mut dec = FrameDecoder::new(1024);
    let mut got_client = Vec::new();
    let mut got_server = Vec::new();
    for chunk in all.chunks(3) {
        dec.extend(chunk);
        while let Some(p) = dec.next_payload().unwrap() {
            if got_client.is_empty() {
                got_client.push(decode::<ClientFrame>(&p).unwrap());
            } else {
                got_server.push(decode::<ServerFrame>(&p).unwrap());
            }
        }
    }
    assert_eq!(got_client, vec![sample_post()]);
    assert_eq!(got_server, vec![sample_event()]);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut dec = FrameDecoder::new(1024);
    dec.extend(&(1025u32).to_be_bytes());
    assert!(matches!(
        dec.next_payload(),
        Err(CodecError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    let mut dec = FrameDecoder::new(usize::MAX);
    dec.extend(&u32::MAX.to_be_bytes());
    assert!(matches!(
        dec.next_payload(),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn encode_refuses_a_frame_over_the_limit() {
    let big = ClientFrame::Hello(Hello {
        version: 1,
        token: "x".repeat(200),
    });
    assert!(matches!(
        encode_frame(&big, 100),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload = encode(&sample_post()).unwrap();
    payload.push(0);
    assert!(matches!(
        decode::<ClientFrame>(&payload),
        Err(CodecError::TrailingBytes { extra: 1 })
    ));
}

#[test]
fn a_lying_length_inside_a_frame_does_not_allocate() {
    // Variant Request(Post) with a string length claiming ~2^62 bytes.
    let payload = [
        1u8, 7, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x3f,
    ];
    assert!(decode::<ClientFrame>(&payload).is_err());
}

proptest! {
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientFrame>(&data);
        let _ = decode::<ServerFrame>(&data);
        let mut dec = FrameDecoder::new(256);
        dec.extend(&data);
        while let Ok(Some(p)) = dec.next_payload() {
            let _ = decode::<ClientFrame>(&p);
        }
    }

    #[test]
    fn posts_round_trip(id in any::<u64>(), room in ".{0,40}", text in ".{0,200}", cid in "[a-z0-9]{0,20}", alert in any::<bool>()) {
        let frame = ClientFrame::Request { id, body: Request::Post(Post { room, client_msg_id: cid, text, alert }) };
        let bytes = encode_frame(&frame, FRAME_BYTES_MAX).unwrap();
        let mut dec = FrameDecoder::new(FRAME_BYTES_MAX);
        dec.extend(&bytes);
        prop_assert_eq!(dec.next_frame::<ClientFrame>().unwrap(), Some(frame));
    }
}

/// Requests of the core kinds with arbitrary fields (every request kind, including the directory
/// operations, is also round-tripped by `cluster-tests/tests/hostile/t30_decode.rs`, which builds
/// arbitrary values of any wire type).
fn any_request() -> impl Strategy<Value = Request> {
    let s = || ".{0,24}";
    let seq = || proptest::option::of(any::<u64>().prop_map(Seq));
    prop_oneof![
        (s(), s(), ".{0,200}", any::<bool>()).prop_map(|(room, client_msg_id, text, alert)| {
            Request::Post(Post {
                room,
                client_msg_id,
                text,
                alert,
            })
        }),
        s().prop_map(|room| Request::Join { room }),
        (s(), seq(), seq(), any::<u32>()).prop_map(|(room, before, after, limit)| {
            Request::History {
                room,
                before,
                after,
                limit,
            }
        }),
        (s(), seq(), proptest::option::of(any::<u64>())).prop_map(
            |(room, after, moderated_after)| Request::Subscribe {
                room,
                after,
                moderated_after
            }
        ),
        s().prop_map(|room| Request::Unsubscribe { room }),
        (s(), any::<bool>()).prop_map(|(name, admin)| Request::CreateUser { name, admin }),
        (s(), s()).prop_map(|(name, description)| Request::CreateRoom { name, description }),
        Just(Request::ListRooms),
        Just(Request::WhoAmI),
    ]
}

/// The sample frames of the golden tests, encoded whole.
fn sample_frames() -> Vec<Vec<u8>> {
    let hello = ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: "token".into(),
    });
    vec![
        encode_frame(&sample_post(), FRAME_BYTES_MAX)
            .unwrap()
            .to_vec(),
        encode_frame(&sample_event(), FRAME_BYTES_MAX)
            .unwrap()
            .to_vec(),
        encode_frame(&hello, FRAME_BYTES_MAX).unwrap().to_vec(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any byte stream, cut anywhere, through a decoder with any limit: no panic, no payload over
    /// the limit, and after a too-large header the decoder keeps refusing (the stream is dead).
    #[test]
    fn any_stream_in_any_chunks_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in proptest::collection::vec(1usize..300, 1..8),
        limit in 0usize..2048,
    ) {
        let mut dec = FrameDecoder::new(limit);
        let mut rest: &[u8] = &data;
        'feed: for &c in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(c.min(rest.len()));
            dec.extend(now);
            rest = later;
            loop {
                match dec.next_payload() {
                    Ok(Some(p)) => {
                        prop_assert!(p.len() <= limit);
                        let _ = decode::<ClientFrame>(&p);
                        let _ = decode::<ServerFrame>(&p);
                    }
                    Ok(None) => break,
                    Err(CodecError::FrameTooLarge { len, max }) => {
                        prop_assert!(len > max && max == limit);
                        prop_assert!(dec.next_payload().is_err());
                        break 'feed;
                    }
                    Err(e) => panic!("the framing layer only refuses sizes, got {e}"),
                }
            }
        }
    }

    /// Valid frames with bytes flipped or cut: no panic; what still decodes re-encodes and
    /// decodes to the same value.
    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = sample_frames()[which].clone();
        let payload_len = bytes.len() - FRAME_HEADER_BYTES;
        for (at, b) in flips {
            // Leave the header alone half the time, so payload mutations get decoded.
            let i = if at % 2 == 0 { FRAME_HEADER_BYTES + at % payload_len } else { at % bytes.len() };
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let mut dec = FrameDecoder::new(FRAME_BYTES_MAX);
        dec.extend(&bytes);
        if let Ok(Some(p)) = dec.next_payload() {
            if let Ok(f) = decode::<ClientFrame>(&p) {
                prop_assert_eq!(decode::<ClientFrame>(&encode(&f).unwrap()).unwrap(), f);
            }
            if let Ok(f) = decode::<ServerFrame>(&p) {
                prop_assert_eq!(decode::<ServerFrame>(&encode(&f).unwrap()).unwrap(), f);
            }
        }
    }

    /// Arbitrary requests survive framing and decoding unchanged, also when several frames
    /// arrive in one read.
    #[test]
    fn requests_round_trip(reqs in proptest::collection::vec((any::<u64>(), any_request()), 1..5)) {
        let frames: Vec<ClientFrame> = reqs
            .into_iter()
            .map(|(id, body)| ClientFrame::Request { id, body })
            .collect();
        let mut dec = FrameDecoder::new(FRAME_BYTES_MAX);
        for f in &frames {
            dec.extend(&encode_frame(f, FRAME_BYTES_MAX).unwrap());
        }
        let mut back = Vec::new();
        while let Some(f) = dec.next_frame::<ClientFrame>().unwrap() {
            back.push(f);
        }
        prop_assert_eq!(back, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }
}

#[test]
#[ignore = "prints the golden bytes when they change on purpose"]
fn print_golden() {
    let hello = ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: "t".into(),
    });
    let err = ServerFrame::Response {
        id: 1,
        result: Err(ApiError::new(ErrorCode::Unavailable, "x")),
    };
    println!(
        "POST {}",
        hex(&encode_frame(&sample_post(), FRAME_BYTES_MAX).unwrap())
    );
    println!(
        "EVENT {}",
        hex(&encode_frame(&sample_event(), FRAME_BYTES_MAX).unwrap())
    );
    println!(
        "HELLO {}",
        hex(&encode_frame(&hello, FRAME_BYTES_MAX).unwrap())
    );
    println!(
        "ERROR {}",
        hex(&encode_frame(&err, FRAME_BYTES_MAX).unwrap())
    );
    println!(
        "REPLACED {}",
        hex(&encode_frame(&sample_replaced(), FRAME_BYTES_MAX).unwrap())
    );
}

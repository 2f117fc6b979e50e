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
    }))
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

const GOLDEN_POST: &str = "00000010010700056c6f62627902633102686900";
const GOLDEN_EVENT: &str = "0000001f0200056c6f626279fb2c0103616e6e0568656c6c6ffd0068e5cf8b01000001";
const GOLDEN_HELLO: &str = "0000000400010174";
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
}

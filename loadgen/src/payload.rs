//! The text of a load post: who sent it, which of that publisher's posts it is and when it was sent,
//! padded to exactly the requested size. Receivers read latency and identity from it, and the
//! auditor compares it with what was acknowledged.
//!
//! Layout (ASCII, fixed width): `P` publisher (6 digits) `C` counter (10 digits) `T` send time in
//! µs since the UNIX epoch (16 digits) `|`, then `.` up to the size.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the header; the smallest payload.
pub const HEADER_BYTES: usize = 36;
/// Largest payload: the node's text limit (16 KiB).
pub const SIZE_MAX: usize = 16 * 1024;
/// Publishers are numbered in 6 digits.
pub const PUBLISHERS_MAX: u32 = 999_999;
const COUNTER_MAX: u64 = 9_999_999_999;
const PAD: u8 = b'.';

/// What a post carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    pub publisher: u32,
    pub counter: u64,
    pub sent_us: u64,
}

/// Microseconds since the UNIX epoch (the clock of every payload timestamp).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The text of `stamp`, exactly `size` bytes.
///
/// Panics if `size` is outside `HEADER_BYTES..=SIZE_MAX` or a field outgrows its width; the
/// arguments are validated before any post is made, and counters stay far below 10^10.
pub fn encode(stamp: Stamp, size: usize) -> String {
    assert!(
        (HEADER_BYTES..=SIZE_MAX).contains(&size),
        "payload size {size} outside {HEADER_BYTES}..={SIZE_MAX}"
    );
    assert!(stamp.publisher <= PUBLISHERS_MAX && stamp.counter <= COUNTER_MAX);
    let mut text = format!(
        "P{:06}C{:010}T{:016}|",
        stamp.publisher, stamp.counter, stamp.sent_us
    );
    debug_assert_eq!(text.len(), HEADER_BYTES);
    text.extend(std::iter::repeat_n(PAD as char, size - HEADER_BYTES));
    text
}

/// The stamp of a text made by [`encode`] with this `size`; `None` for anything else (wrong
/// length, header or padding).
pub fn decode(text: &str, size: usize) -> Option<Stamp> {
    let b = text.as_bytes();
    if b.len() != size || size < HEADER_BYTES {
        return None;
    }
    if b[0] != b'P' || b[7] != b'C' || b[18] != b'T' || b[35] != b'|' {
        return None;
    }
    if !is_padding(&b[HEADER_BYTES..]) {
        return None;
    }
    Some(Stamp {
        publisher: u32::try_from(digits(&b[1..7])?).ok()?,
        counter: digits(&b[8..18])?,
        sent_us: digits(&b[19..35])?,
    })
}

/// Whether `b` is all padding: compared a block at a time (this runs for every delivery).
fn is_padding(b: &[u8]) -> bool {
    const BLOCK: [u8; 64] = [PAD; 64];
    let mut blocks = b.chunks_exact(BLOCK.len());
    blocks.all(|c| c == BLOCK) && blocks.remainder() == &BLOCK[..blocks.remainder().len()]
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        publisher: 42,
        counter: 1_234_567,
        sent_us: 1_712_345_678_901_234,
    };

    #[test]
    fn round_trip_at_every_size_edge() {
        for size in [HEADER_BYTES, 37, 200, SIZE_MAX] {
            let text = encode(S, size);
            assert_eq!(text.len(), size);
            assert_eq!(decode(&text, size), Some(S));
        }
    }

    #[test]
    fn largest_fields_fit() {
        let s = Stamp {
            publisher: PUBLISHERS_MAX,
            counter: COUNTER_MAX,
            sent_us: 9_999_999_999_999_999,
        };
        assert_eq!(decode(&encode(s, 64), 64), Some(s));
    }

    #[test]
    fn anything_else_is_refused() {
        let text = encode(S, 100);
        assert_eq!(decode(&text, 101), None, "size differs");
        assert_eq!(decode("hello", 5), None);
        let mut bad_pad = text.clone().into_bytes();
        bad_pad[99] = b'x';
        assert_eq!(decode(std::str::from_utf8(&bad_pad).unwrap(), 100), None);
        // 200 bytes: two whole blocks of padding and a remainder; a byte off in either.
        for at in [HEADER_BYTES, 50, 150, 199] {
            let mut bad = encode(S, 200).into_bytes();
            bad[at] = b'-';
            assert_eq!(
                decode(std::str::from_utf8(&bad).unwrap(), 200),
                None,
                "at {at}"
            );
        }
        let mut bad_digit = text.into_bytes();
        bad_digit[3] = b'a';
        assert_eq!(decode(std::str::from_utf8(&bad_digit).unwrap(), 100), None);
    }

    #[test]
    #[should_panic]
    fn too_small_a_size_is_a_bug() {
        encode(S, HEADER_BYTES - 1);
    }
}

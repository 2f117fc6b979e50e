//! Length-prefixed frames: a u32 big-endian payload length, then the bincode 2 (standard config)
//! encoding of the frame. The decoder refuses a frame over its limit before buffering it.

pub use crate::limits::FRAME_BYTES_MAX;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

pub const FRAME_HEADER_BYTES: usize = 4;

/// bincode's own allocation limit mirrors the hard frame limit, so a lying length inside a frame
/// cannot make the decoder reserve more than a frame could hold.
type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<FRAME_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<FRAME_BYTES_MAX>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode frame: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{extra} unread bytes after the frame's value")]
    TrailingBytes { extra: usize },
}

/// The bincode payload of a value, without a header.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decode one payload; the whole payload must be consumed.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(payload, config())?;
    if read != payload.len() {
        return Err(CodecError::TrailingBytes {
            extra: payload.len() - read,
        });
    }
    Ok(value)
}

/// A whole frame (header and payload), ready to write; encoded once and shared by every receiver.
pub fn encode_frame<T: Serialize>(value: &T, frame_bytes_max: usize) -> Result<Bytes, CodecError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(0);
    {
        let mut writer = (&mut buf).writer();
        bincode::serde::encode_into_std_write(value, &mut writer, config())?;
    }
    let len = buf.len() - FRAME_HEADER_BYTES;
    if len > frame_bytes_max.min(FRAME_BYTES_MAX) {
        return Err(CodecError::FrameTooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    // The length fits in u32: it is at most FRAME_BYTES_MAX, checked just above.
    buf[..FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf.freeze())
}

/// Splits a byte stream into frame payloads.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            frame_bytes_max: frame_bytes_max.min(FRAME_BYTES_MAX),
        }
    }

    /// Append bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete payload, `None` if more bytes are needed, an error if the announced length
    /// is over the limit (the stream must then be closed: it cannot be resynchronised).
    pub fn next_payload(&mut self) -> Result<Option<Bytes>, CodecError> {
        let Some(len) = self.complete_len()? else {
            return Ok(None);
        };
        self.buf.advance(FRAME_HEADER_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The next complete frame, decoded straight from the buffer (no shared copy of the payload
    /// is made: this runs once per message received).
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let Some(len) = self.complete_len()? else {
            return Ok(None);
        };
        let value = decode(&self.buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len]);
        self.buf.advance(FRAME_HEADER_BYTES + len);
        value.map(Some)
    }

    /// The payload length of the frame at the front, once all of it is buffered.
    fn complete_len(&mut self) -> Result<Option<usize>, CodecError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.frame_bytes_max {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            self.buf.reserve(FRAME_HEADER_BYTES + len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests;

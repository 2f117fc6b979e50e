//! What the log files hold: records of a 12-byte header (u32 LE body length, u32 LE CRC-32 of the
//! body, u32 LE CRC-32 of those eight bytes) and the body, the bincode encoding of a [`Record`].
//! The header's own checksum tells a damaged length (corruption) from a record cut short by a
//! crash (a torn write).

use crate::raft::{Entry, GroupId, LogId, Vote};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;

pub const HEADER_BYTES: usize = 12;

/// A body longer than this is corruption, not a record: no Raft entry is bigger than a frame.
pub const BODY_BYTES_MAX: usize = stoa_proto::limits::FRAME_BYTES_MAX + 4096;

/// `E` is `&Entry` when writing and `Entry` when reading, so appending never clones an entry.
#[derive(Debug, Serialize, Deserialize)]
pub enum Record<E> {
    /// Every group's vote, committed and purge point; the first record of every segment, so
    /// older segments hold nothing but entries and can be deleted once those are purged.
    State(Vec<GroupState>),
    /// An entry; it replaces any entry of the group at its index or after.
    Entry {
        group: GroupId,
        entry: E,
    },
    /// Entries from `since` on are gone.
    Truncate {
        group: GroupId,
        since: u64,
    },
    /// Entries up to `upto` are gone, and the log starts after it.
    Purge {
        group: GroupId,
        upto: LogId,
    },
    Vote {
        group: GroupId,
        vote: Vote,
    },
    Committed {
        group: GroupId,
        committed: Option<LogId>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupState {
    pub group: GroupId,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

/// Append one record (header and body) to `out`.
pub fn encode_into(record: &Record<&Entry>, out: &mut Vec<u8>) -> Result<(), String> {
    let body = stoa_proto::encode(record).map_err(|e| e.to_string())?;
    if body.len() > BODY_BYTES_MAX {
        return Err(format!("a record of {} bytes is too large", body.len()));
    }
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    Ok(())
}

/// Why a record could not be read at some offset.
#[derive(Debug)]
pub enum Bad {
    /// The file ends inside the record: a write torn by a crash, if this is the log's end.
    Short,
    /// Length, checksum or body do not hold together.
    Garbled(String),
    /// The header is whole and sound, the body of `len` bytes does not match its checksum.
    Body { len: usize },
}

/// Decode the record at the start of `buf`; answers it and its whole length.
pub fn decode(buf: &[u8]) -> Result<(Record<Entry>, usize), Bad> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Err(Bad::Short);
    };
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..8]) != word(8) {
        return Err(Bad::Garbled("header checksum mismatch".into()));
    }
    let len = word(0) as usize;
    let crc = word(4);
    if len > BODY_BYTES_MAX {
        return Err(Bad::Garbled(format!("record length {len}")));
    }
    let Some(body) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Err(Bad::Short);
    };
    if crc32fast::hash(body) != crc {
        return Err(Bad::Body { len });
    }
    let record = stoa_proto::decode(body).map_err(|e| Bad::Garbled(e.to_string()))?;
    Ok((record, HEADER_BYTES + len))
}

/// Read the record of `len` bytes (header included) at `offset` of `file`.
pub fn read_at(file: &File, offset: u64, len: usize) -> Result<Record<Entry>, String> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| format!("reading {len} bytes at {offset}: {e}"))?;
    match decode(&buf) {
        Ok((record, used)) if used == len => Ok(record),
        Ok((_, used)) => Err(format!(
            "record at {offset} is {used} bytes, expected {len}"
        )),
        Err(Bad::Short) => Err(format!("record at {offset} is cut short")),
        Err(Bad::Garbled(why)) => Err(format!("record at {offset}: {why}")),
        Err(Bad::Body { .. }) => Err(format!("record at {offset}: checksum mismatch")),
    }
}

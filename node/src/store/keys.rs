//! Storage keys. Every key begins with the group id (u32 big-endian) so groups can later be moved or
//! dropped by prefix; integers are big-endian so sled's byte order is numeric order.

use crate::raft::GroupId;

pub fn group_prefix(g: GroupId) -> [u8; 4] {
    g.0.to_be_bytes()
}

/// `sm` tree tags.
pub const APPLIED: u8 = 0;
pub const MESSAGE: u8 = 1;
pub const HEAD: u8 = 2;
pub const DEDUP: u8 = 3;
pub const META_STATE: u8 = 4;
/// A message as it was before moderation changed it (kept for compliance).
pub const ORIGINAL: u8 = 5;
/// A posted file's record, and its chunks.
pub const FILE: u8 = 6;
pub const FILE_CHUNK: u8 = 7;
/// The meta index of the last directory change that may have revoked rights (shards).
pub const FENCE: u8 = 8;
/// A room's moderation log: for each moderation that changed messages, their seqs.
pub const MODERATION: u8 = 9;

/// `snap` tree: a group's current snapshot is under its prefix alone; a snapshot being installed
/// (whose rows may be half written) under this key.
pub fn install_marker(g: GroupId) -> Vec<u8> {
    let mut k = group_prefix(g).to_vec();
    k.push(b'i');
    k
}

pub fn sm_tag(g: GroupId, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&group_prefix(g));
    k.push(tag);
    k
}

pub fn message(g: GroupId, room: u64, seq: u64) -> Vec<u8> {
    let mut k = sm_tag(g, MESSAGE);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn message_seq(key: &[u8]) -> Option<u64> {
    key.get(13..21)
        .map(|b| u64::from_be_bytes(b.try_into().expect("slice of 8 bytes")))
}

pub fn head(g: GroupId, room: u64) -> Vec<u8> {
    let mut k = sm_tag(g, HEAD);
    k.extend_from_slice(&room.to_be_bytes());
    k
}

pub fn head_room(key: &[u8]) -> Option<u64> {
    key.get(5..13)
        .map(|b| u64::from_be_bytes(b.try_into().expect("slice of 8 bytes")))
}

pub fn original(g: GroupId, room: u64, seq: u64) -> Vec<u8> {
    let mut k = sm_tag(g, ORIGINAL);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The room of a message key (`message`, `original`).
pub fn message_room(key: &[u8]) -> Option<u64> {
    head_room(key)
}

/// Every message of a room, or of the group.
pub fn messages_of(g: GroupId, room: Option<u64>) -> Vec<u8> {
    let mut k = sm_tag(g, MESSAGE);
    if let Some(r) = room {
        k.extend_from_slice(&r.to_be_bytes());
    }
    k
}

pub fn file(g: GroupId, room: u64, file_id: &str) -> Vec<u8> {
    let mut k = sm_tag(g, FILE);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(file_id.as_bytes());
    k
}

/// The chunks of a file, in index order; `index: None` is the prefix of all of them. The file id
/// is length-prefixed so one id cannot be the prefix of another's chunks.
pub fn file_chunk(g: GroupId, room: u64, file_id: &str, index: Option<u32>) -> Vec<u8> {
    let mut k = sm_tag(g, FILE_CHUNK);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(&(file_id.len() as u32).to_be_bytes());
    k.extend_from_slice(file_id.as_bytes());
    if let Some(i) = index {
        k.extend_from_slice(&i.to_be_bytes());
    }
    k
}

/// Moderation `count` of a room (the first is 1); `count: None` is the prefix of them all.
pub fn moderation(g: GroupId, room: u64, count: Option<u64>) -> Vec<u8> {
    let mut k = sm_tag(g, MODERATION);
    k.extend_from_slice(&room.to_be_bytes());
    if let Some(c) = count {
        k.extend_from_slice(&c.to_be_bytes());
    }
    k
}

/// The count of a `moderation` key.
pub fn moderation_count(key: &[u8]) -> Option<u64> {
    message_seq(key)
}

/// The author is length-prefixed so (author, client id) pairs cannot collide.
pub fn dedup(g: GroupId, room: u64, author: &str, client_msg_id: &str) -> Vec<u8> {
    let mut k = sm_tag(g, DEDUP);
    k.extend_from_slice(&room.to_be_bytes());
    k.extend_from_slice(&(author.len() as u32).to_be_bytes());
    k.extend_from_slice(author.as_bytes());
    k.extend_from_slice(client_msg_id.as_bytes());
    k
}

/// A readable name of a key, for error messages.
pub fn describe(key: &[u8]) -> String {
    let group = key
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("slice of 4 bytes")));
    format!("group {:?} key {}", group, hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_group_then_number() {
        assert!(head(GroupId(1), 255) < head(GroupId(1), 256));
        assert!(head(GroupId(1), u64::MAX) < head(GroupId(2), 0));
        assert!(message(GroupId(1), 7, 9) < message(GroupId(1), 7, 10));
        assert!(message(GroupId(1), 7, u64::MAX) < message(GroupId(1), 8, 0));
        assert_eq!(message_seq(&message(GroupId(3), 1, 42)), Some(42));
        assert_eq!(head_room(&head(GroupId(3), 77)), Some(77));
        assert!(
            file_chunk(GroupId(1), 1, "f", Some(255)) < file_chunk(GroupId(1), 1, "f", Some(256))
        );
        assert!(
            !file_chunk(GroupId(1), 1, "fa", None).starts_with(&file_chunk(
                GroupId(1),
                1,
                "f",
                None
            ))
        );
        assert_eq!(message_room(&message(GroupId(3), 9, 1)), Some(9));
        let m = moderation(GroupId(1), 4, Some(300));
        assert!(m.starts_with(&moderation(GroupId(1), 4, None)));
        assert_eq!(moderation_count(&m), Some(300));
        assert!(moderation(GroupId(1), 4, Some(9)) < m);
        assert_ne!(
            dedup(GroupId(1), 1, "ab", "c"),
            dedup(GroupId(1), 1, "a", "bc")
        );
    }
}

//! Rules for room content in a shard group: a gap-free sequence per room and at-most-once posts.

use serde::{Deserialize, Serialize};
use stoa_proto::{ApiError, ErrorCode, FileRef, Message, Moderation, Seq};

/// The apply-time ceiling on a message's text. Nodes refuse longer text earlier with their
/// configured (lower or equal) limit; this one is a constant so every replica decides alike.
pub const TEXT_BYTES_MAX: usize = 1 << 20;

/// A post as it is written into a Raft entry: author and timestamp fixed by the proposing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedPost {
    pub room_id: u64,
    pub room: String,
    pub author: String,
    pub client_msg_id: String,
    pub text: String,
    pub alert: bool,
    pub ts_ms: u64,
    /// A file whose chunks were replicated before this post (see [`FileChunk`]).
    pub file: Option<FileRef>,
}

/// Part of a file's content, replicated ahead of the post that shows the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub room_id: u64,
    pub file_id: String,
    pub index: u32,
    pub data: bytes::Bytes,
}

/// Where a posted file is, stored beside its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub seq: Seq,
    pub file: FileRef,
}

/// What a post was given: its place in the room. A retried post answers the original outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostOutcome {
    pub seq: Seq,
    pub ts_ms: u64,
}

/// A message as stored under (room, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub author: String,
    pub text: String,
    pub ts_ms: u64,
    pub alert: bool,
    pub moderated: Option<Moderation>,
    pub file: Option<FileRef>,
}

impl StoredMessage {
    pub fn into_message(self, room: &str, seq: Seq) -> Message {
        Message {
            room: room.to_string(),
            seq,
            author: self.author,
            text: self.text,
            ts_ms: self.ts_ms,
            alert: self.alert,
            moderated: self.moderated,
            file: self.file,
        }
    }
}

/// The newest state of a room in its shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomHead {
    pub name: String,
    pub last_seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostDecision {
    /// Store `message` at `outcome.seq` and advance the room's head to it.
    Append {
        outcome: PostOutcome,
        message: StoredMessage,
    },
    /// The same (room, author, client message id) was applied before: answer its outcome again.
    Duplicate(PostOutcome),
    Refuse(ApiError),
}

/// Decide one post. `head` is the room's current head (none before its first message);
/// `earlier` is the outcome recorded for the same client message id, if any; `file_bytes` is how
/// many bytes of the post's file (if it has one) the shard holds.
pub fn decide_post(
    head: Option<&RoomHead>,
    earlier: Option<PostOutcome>,
    post: &ProposedPost,
    file_bytes: u64,
) -> PostDecision {
    if let Some(outcome) = earlier {
        return PostDecision::Duplicate(outcome);
    }
    if post.text.len() > TEXT_BYTES_MAX {
        return PostDecision::Refuse(ApiError::new(
            ErrorCode::TooLarge,
            format!("text of {} bytes exceeds {TEXT_BYTES_MAX}", post.text.len()),
        ));
    }
    if post.client_msg_id.is_empty() {
        return PostDecision::Refuse(ApiError::new(
            ErrorCode::Invalid,
            "client message id is empty",
        ));
    }
    if let Some(f) = &post.file {
        if f.size != file_bytes {
            return PostDecision::Refuse(ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "file {:?} has {file_bytes} of its {} bytes stored",
                    f.name, f.size
                ),
            ));
        }
    }
    let last = head.map_or(Seq::ZERO, |h| h.last_seq);
    PostDecision::Append {
        outcome: PostOutcome {
            seq: last.next(),
            ts_ms: post.ts_ms,
        },
        message: StoredMessage {
            author: post.author.clone(),
            text: post.text.clone(),
            ts_ms: post.ts_ms,
            alert: post.alert,
            moderated: None,
            file: post.file.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(cid: &str, text: &str) -> ProposedPost {
        ProposedPost {
            room_id: 1,
            room: "lobby".into(),
            author: "ann".into(),
            client_msg_id: cid.into(),
            text: text.into(),
            alert: false,
            ts_ms: 42,
            file: None,
        }
    }

    #[test]
    fn first_post_gets_seq_one_and_next_follows_head() {
        let d = decide_post(None, None, &post("a", "hi"), 0);
        let PostDecision::Append { outcome, message } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            outcome,
            PostOutcome {
                seq: Seq(1),
                ts_ms: 42
            }
        );
        assert_eq!(message.text, "hi");
        let head = RoomHead {
            name: "lobby".into(),
            last_seq: Seq(41),
        };
        let d = decide_post(Some(&head), None, &post("b", "x"), 0);
        assert!(matches!(
            d,
            PostDecision::Append {
                outcome: PostOutcome { seq: Seq(42), .. },
                ..
            }
        ));
    }

    #[test]
    fn retry_answers_the_first_outcome() {
        let earlier = PostOutcome {
            seq: Seq(7),
            ts_ms: 1,
        };
        let head = RoomHead {
            name: "lobby".into(),
            last_seq: Seq(9),
        };
        assert_eq!(
            decide_post(Some(&head), Some(earlier), &post("a", "hi"), 0),
            PostDecision::Duplicate(earlier)
        );
    }

    #[test]
    fn a_file_post_needs_all_its_bytes_stored() {
        let mut p = post("f", "see attached");
        p.file = Some(FileRef {
            id: "id".into(),
            name: "a.txt".into(),
            size: 10,
            sha256: "00".into(),
        });
        assert!(
            matches!(decide_post(None, None, &p, 9), PostDecision::Refuse(e) if e.code == ErrorCode::Invalid)
        );
        let PostDecision::Append { message, .. } = decide_post(None, None, &p, 10) else {
            panic!("a complete file is posted")
        };
        assert_eq!(message.file, p.file);
    }

    #[test]
    fn oversized_or_anonymous_posts_are_refused() {
        let big = post("a", &"x".repeat(TEXT_BYTES_MAX + 1));
        assert!(
            matches!(decide_post(None, None, &big, 0), PostDecision::Refuse(e) if e.code == ErrorCode::TooLarge)
        );
        assert!(
            matches!(decide_post(None, None, &post("", "x"), 0), PostDecision::Refuse(e) if e.code == ErrorCode::Invalid)
        );
    }
}

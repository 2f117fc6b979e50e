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
    /// The meta log index of the directory the proposing node checked the author's right to post
    /// against (a lower bound). See [`decide_post`].
    pub checked_at: u64,
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

/// What a shard knows when it decides a post, besides the post.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostContext<'a> {
    /// The room's current head (none before its first message).
    pub head: Option<&'a RoomHead>,
    /// The outcome recorded for the same (room, author, client message id), if any.
    pub earlier: Option<PostOutcome>,
    /// Bytes of the post's file (if it has one) the shard holds.
    pub file_bytes: u64,
    /// The meta index of the last directory change that may have revoked a right, as fenced into
    /// this shard's log.
    pub fence: u64,
}

/// Decide one post.
///
/// The right to post is checked by the proposing node against its replica of the directory, at
/// meta index `post.checked_at`. A directory change that may revoke rights is fenced into every
/// shard's log before it is acknowledged, so a post checked before that change and applied after
/// the fence is sent back to be checked again (`Unavailable`, which clients retry with the same
/// client message id); every replica refuses it alike, and no post slips past a revocation.
pub fn decide_post(ctx: PostContext<'_>, post: &ProposedPost) -> PostDecision {
    if let Some(outcome) = ctx.earlier {
        return PostDecision::Duplicate(outcome);
    }
    if post.checked_at < ctx.fence {
        return PostDecision::Refuse(ApiError::new(
            ErrorCode::Unavailable,
            "the directory changed while this post was on its way; send it again",
        ));
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
        if f.size != ctx.file_bytes {
            return PostDecision::Refuse(ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "file {:?} has {} of its {} bytes stored",
                    f.name, ctx.file_bytes, f.size
                ),
            ));
        }
    }
    let last = ctx.head.map_or(Seq::ZERO, |h| h.last_seq);
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
            checked_at: 10,
        }
    }

    fn at(head: Option<&RoomHead>) -> PostContext<'_> {
        PostContext {
            head,
            ..Default::default()
        }
    }

    #[test]
    fn first_post_gets_seq_one_and_next_follows_head() {
        let d = decide_post(at(None), &post("a", "hi"));
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
        let d = decide_post(at(Some(&head)), &post("b", "x"));
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
            decide_post(
                PostContext {
                    earlier: Some(earlier),
                    ..at(Some(&head))
                },
                &post("a", "hi")
            ),
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
            matches!(decide_post(PostContext { file_bytes: 9, ..at(None) }, &p), PostDecision::Refuse(e) if e.code == ErrorCode::Invalid)
        );
        let PostDecision::Append { message, .. } = decide_post(
            PostContext {
                file_bytes: 10,
                ..at(None)
            },
            &p,
        ) else {
            panic!("a complete file is posted")
        };
        assert_eq!(message.file, p.file);
    }

    #[test]
    fn a_post_checked_before_a_fenced_revocation_is_sent_back_but_a_retry_is_answered() {
        let p = post("a", "hi"); // checked at meta index 10
        let fenced = |fence| PostContext { fence, ..at(None) };
        assert!(matches!(
            decide_post(fenced(10), &p),
            PostDecision::Append { .. }
        ));
        let d = decide_post(fenced(11), &p);
        assert!(
            matches!(&d, PostDecision::Refuse(e) if e.code == ErrorCode::Unavailable && e.code.is_retryable()),
            "{d:?}"
        );
        // A post applied before the fence keeps its outcome when sent again.
        let earlier = PostOutcome {
            seq: Seq(3),
            ts_ms: 1,
        };
        assert_eq!(
            decide_post(
                PostContext {
                    earlier: Some(earlier),
                    ..fenced(11)
                },
                &p
            ),
            PostDecision::Duplicate(earlier)
        );
    }

    #[test]
    fn oversized_or_anonymous_posts_are_refused() {
        let big = post("a", &"x".repeat(TEXT_BYTES_MAX + 1));
        assert!(
            matches!(decide_post(at(None), &big), PostDecision::Refuse(e) if e.code == ErrorCode::TooLarge)
        );
        assert!(
            matches!(decide_post(at(None), &post("", "x")), PostDecision::Refuse(e) if e.code == ErrorCode::Invalid)
        );
    }
}

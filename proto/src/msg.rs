//! Frames of the client protocol.
//!
//! A client opens one bidirectional stream per connection. It sends [`ClientFrame::Hello`] first, then
//! any number of [`ClientFrame::Request`]s, each with an id of its choosing; the node answers each with
//! a [`ServerFrame::Response`] carrying that id, in any order, and pushes [`ServerFrame::Event`]s for
//! the rooms the client subscribed to. Many requests may be in flight at once.

use crate::directory::*;
use crate::{ApiError, NodeId, Seq};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    Hello(Hello),
    Request { id: u64, body: Request },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Post to a room. A retry with the same `client_msg_id` is applied once and answers the same seq.
    Post(Post),
    /// Last `default_chat_history` messages, then live delivery from there on.
    Join {
        room: String,
    },
    /// A page of stored messages, oldest first. `before`: the page just before that seq (scroll back);
    /// `after`: the page just after it (catch up); neither: the newest page.
    History {
        room: String,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: u32,
    },
    /// Live delivery of a room. With `after`, the node first sends every stored message after that seq
    /// (at most `subscribe_backlog_max` of them), then live ones, with no gap and no duplicate.
    /// With `after` and `moderated_after` (the room's moderation count the client has seen, from
    /// `Subscribed`, `Joined` or `Replaced`), it also sends, as `Replaced` events, the messages up
    /// to `after` that moderation changed since (at most `subscribe_backlog_max` of them).
    Subscribe {
        room: String,
        after: Option<Seq>,
        moderated_after: Option<u64>,
    },
    Unsubscribe {
        room: String,
    },
    /// Administrators only. Answers the new user's token.
    CreateUser {
        name: String,
        admin: bool,
    },
    CreateRoom {
        name: String,
        description: String,
    },
    ListRooms,
    WhoAmI,
    /// Administrators only. `site` is the user's site for policy resolution.
    CreateUserAt {
        name: String,
        admin: bool,
        site: Option<String>,
    },
    Category(CategoryOp),
    Room(RoomOp),
    Group(GroupOp),
    Policy(PolicyOp),
    Config(ConfigOp),
    AddIn(AddInOp),
    /// Messages matching words, in one room or all rooms the user may read, newest first.
    SearchMessages(MessageQuery),
    /// Rooms the user was newly made a member of since last asked (the list is then cleared).
    Invitations,
    /// Follow or stop following a room; followed rooms are kept on the server.
    Follow {
        room: String,
        follow: bool,
    },
    /// The followed rooms with their unread counts (to join at sign-in).
    Followed,
    /// The user has read `room` up to `seq`.
    MarkRead {
        room: String,
        seq: Seq,
    },
    /// Administrators only: remove or replace messages, or clear a room's history.
    Moderate(ModerateOp),
    /// Announce a file to post in a room. The node answers [`Response::UploadReady`] or refuses
    /// (too large, uploads off in the category, no right to post) before any byte is sent.
    UploadBegin(UploadBegin),
    /// The bytes of an upload at `offset`, sent in order (`offset` is the count sent before, so a
    /// chunk handled out of order is refused); at most the `chunk_bytes_max` the node answered.
    UploadChunk {
        upload: u64,
        offset: u64,
        data: bytes::Bytes,
    },
    /// All bytes are sent: the node checks size and hash, replicates the file, and posts it.
    UploadCommit {
        upload: u64,
    },
    /// Bytes `offset..offset+limit` of a file posted in `room` (see [`Message::file`]).
    Download {
        room: String,
        file_id: String,
        offset: u64,
        limit: u32,
    },
    /// Who is connected to a room now, cluster-wide (same access as reading the room).
    Participants {
        room: String,
    },
}

/// What moderation does to the messages it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModerateOp {
    /// Remove or replace every message matching `filter`.
    Messages {
        filter: MessageFilter,
        action: ModerationAction,
    },
    /// Remove every message of `room` posted at or before `through_ms` (ms since the epoch).
    ClearHistory { room: String, through_ms: u64 },
}

/// Which messages moderation selects: every given criterion must hold. At least one is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFilter {
    /// One room, or every room of the cluster.
    pub room: Option<String>,
    pub author: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub keywords: Vec<String>,
    pub matching: KeywordMatch,
    pub case_sensitive: bool,
}

/// How `keywords` select a message: words are compared whole, ignoring case unless asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeywordMatch {
    /// Every keyword appears in the text.
    #[default]
    All,
    /// At least one keyword appears.
    Any,
    /// The keywords appear together, in this order, as a phrase.
    Exact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModerationAction {
    Remove,
    /// Replace the text; `None` uses [`DEFAULT_REPLACEMENT`].
    Replace {
        text: Option<String>,
    },
}

pub const DEFAULT_REPLACEMENT: &str = "This message was replaced by an administrator.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBegin {
    pub room: String,
    /// The file's name as shown to readers (no path).
    pub name: String,
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// As for posts: a retry with the same id posts the file once.
    pub client_msg_id: String,
    /// Text posted with the file (may be empty).
    pub text: String,
}

/// A file posted in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Identifies the file within its room.
    pub id: String,
    pub name: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex: downloads are checked against it.
    pub sha256: String,
}

/// What moderation did to a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Moderation {
    /// Text (and file) removed; the message keeps its place so the sequence has no gap.
    Removed,
    /// Text replaced by an administrator's text.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedRoom {
    pub room: String,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageQuery {
    /// Words that must all appear (tantivy query syntax: `"exact phrase"`, `a OR b`, `-word`).
    pub text: String,
    pub room: Option<String>,
    pub author: Option<String>,
    /// Posted at or after (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Posted at or before.
    pub to_ms: Option<u64>,
    /// Results to skip (paging).
    pub offset: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub room: String,
    pub client_msg_id: String,
    pub text: String,
    pub alert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    Welcome(Welcome),
    Response {
        id: u64,
        result: Result<Response, ApiError>,
    },
    Event(Event),
    /// The node closes the stream after this (bad hello, protocol error, shutdown).
    Goodbye(ApiError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub node: NodeId,
    pub user: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Posted {
        seq: Seq,
        ts_ms: u64,
    },
    /// `moderation`: the room's moderation count, covered by `messages` and the events after.
    Joined {
        room: String,
        messages: Vec<Message>,
        last_seq: Seq,
        moderation: u64,
    },
    History {
        room: String,
        messages: Vec<Message>,
        last_seq: Seq,
    },
    /// `moderation`: the room's moderation count, to send as `moderated_after` when subscribing
    /// again.
    Subscribed {
        room: String,
        last_seq: Seq,
        moderation: u64,
    },
    Unsubscribed {
        room: String,
    },
    UserCreated {
        name: String,
        token: String,
    },
    RoomCreated(RoomInfo),
    Rooms(Vec<RoomInfo>),
    WhoAmI {
        user: String,
        admin: bool,
        node: NodeId,
    },
    /// A directory change was applied.
    Done,
    Categories(Vec<CategoryInfo>),
    RoomDetail(RoomDetail),
    RoomDetails(Vec<RoomDetail>),
    Groups(Vec<GroupInfo>),
    Policy(PolicyInfo),
    Settings(ClusterSettings),
    AddIns(Vec<AddInInfo>),
    /// Search results, newest first.
    Found(Vec<Message>),
    Invitations(Vec<String>),
    Followed(Vec<FollowedRoom>),
    /// How many messages moderation removed or replaced.
    Moderated {
        messages: u64,
    },
    /// The node accepts the upload: send chunks of at most `chunk_bytes_max` bytes.
    UploadReady {
        upload: u64,
        chunk_bytes_max: u32,
    },
    /// Bytes of the upload received so far.
    UploadReceived {
        bytes: u64,
    },
    FileData {
        file: FileRef,
        offset: u64,
        data: bytes::Bytes,
    },
    /// An upload was committed and posted.
    FilePosted {
        seq: Seq,
        ts_ms: u64,
        file: FileRef,
    },
    /// Who is connected to a room now (see [`Roster`]).
    Participants {
        room: String,
        roster: Roster,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Message(Message),
    /// Live delivery of the room stopped because this connection did not keep up; `after` is the
    /// last seq queued for it. Subscribe again with `after` to resume from history.
    Lagged {
        room: String,
        after: Seq,
    },
    /// The room is no longer available to this connection (disabled, deleted, or access removed);
    /// live delivery of it has ended.
    RoomClosed {
        room: String,
        reason: ApiError,
    },
    /// An administrator removed or replaced these messages (already delivered or stored): show
    /// the new versions in place of the old. `moderation`: the room's moderation count this
    /// change reached (every moderation of a room counts one).
    Replaced {
        room: String,
        messages: Vec<Message>,
        moderation: u64,
    },
    /// A change of the room's roster (its connected participants), sent to connections with live
    /// delivery of the room while it has at most `participant_update_limit` participants.
    Roster {
        room: String,
        change: RosterChange,
    },
}

/// A room's participants: signed-in users with live delivery of it on any node, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Roster {
    /// Every participant, sorted by name (at most `participant_update_limit` of them).
    Names(Vec<String>),
    /// More participants than `participant_update_limit`: only their number is told.
    OverLimit { count: u32, limit: u32 },
}

/// One roster event. A connection first gets `All` (or `OverLimit`) when its live delivery of
/// the room starts, then changes; applying them in order keeps a copy of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RosterChange {
    /// The whole roster, sorted: replaces what the client had. Sent when live delivery starts and
    /// when the room comes back to or below the limit.
    All(Vec<String>),
    Joined(String),
    Left(String),
    /// The room went above the limit (or was above it when live delivery started): no more
    /// join and leave updates until it comes back to or below it, which sends `All`.
    OverLimit {
        count: u32,
        limit: u32,
    },
}

/// A stored message as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub room: String,
    pub seq: Seq,
    pub author: String,
    pub text: String,
    pub ts_ms: u64,
    pub alert: bool,
    /// Set when an administrator removed or replaced the message.
    pub moderated: Option<Moderation>,
    /// The file posted with the message, if any.
    pub file: Option<FileRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub description: String,
    pub shard: u32,
}

//! Raft type configuration shared by every group, and the commands the groups replicate.
//!
//! One `TypeConfig` serves the meta group and every shard group: the group a command belongs to is
//! known from the Raft instance it is proposed to, and every RPC and storage key carries its
//! [`GroupId`].

pub mod network;

use crate::domain::{
    meta::MetaCommand, meta::MetaOutcome, shard::FileChunk, shard::PostOutcome, shard::ProposedPost,
};
use serde::{Deserialize, Serialize};
use stoa_proto::ApiError;

/// Group 0 is the meta group (directory); groups 1..=S are shards (room content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u32);

impl GroupId {
    pub const META: GroupId = GroupId(0);

    pub fn is_meta(self) -> bool {
        self == GroupId::META
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// The application data of a Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A directory change, for the meta group.
    Meta(MetaCommand),
    /// Many posts in one entry (proposal batching), for a shard group.
    Posts(Vec<ProposedPost>),
    /// Remove or replace the messages a filter selects, in one room or every room of the shard.
    Moderate(Moderate),
    /// Part of a file, stored ahead of the post that shows it.
    FileChunk(FileChunk),
    /// A directory change at `meta_index` may have revoked rights: posts checked against an
    /// older directory are sent back (see `shard::decide_post`).
    Fence { meta_index: u64 },
}

/// A moderation as the shard applies it: the room is resolved to its id by the proposing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderate {
    /// `None`: every room of the shard.
    pub room_id: Option<u64>,
    pub filter: stoa_proto::MessageFilter,
    pub action: stoa_proto::ModerationAction,
}

/// What applying a [`Command`] answered, one result per proposed item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    /// Blank and membership entries.
    #[default]
    None,
    Meta(Result<MetaOutcome, ApiError>),
    Posts(Vec<Result<PostOutcome, ApiError>>),
    /// How many messages a moderation changed.
    Moderated(Result<u64, ApiError>),
    FileChunk(Result<(), ApiError>),
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<u64>;

//! The directory replicated by the meta group: users, groups, categories, rooms and their roles,
//! the chat policy, cluster settings and add-ins. Every command is decided here at apply time, so
//! every replica agrees; the acting user is part of the command and checked like any field.
//!
//! Layout: this file holds the state and the dispatch; [`access`] answers who may do what;
//! `users`, `categories`, `rooms`, `groups` and `settings` hold the rules of each kind of change.

pub mod access;
mod categories;
mod groups;
mod personal;
mod rooms;
mod settings;
mod users;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use stoa_proto::{
    AddInOp, ApiError, CategoryOp, ErrorCode, GroupOp, Invitations, PolicyScope, Principal,
    Privacy, RoomInfo, RoomOp, RoomType, SettingsChange,
};

pub use access::RoomAccess;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub admin: bool,
    /// Hex SHA-256 of the user's token; the token itself is never stored.
    pub token_digest: String,
    /// The user's site, for policy resolution.
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryRecord {
    pub name: String,
    pub description: String,
    pub allowed: BTreeSet<Principal>,
    pub denied: BTreeSet<Principal>,
    pub creators: BTreeSet<Principal>,
    pub file_upload: bool,
    pub invitations: bool,
    pub chat_history: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub shard: u32,
    pub category: String,
    pub privacy: Privacy,
    pub room_type: RoomType,
    pub invitations: Invitations,
    pub disabled: bool,
    pub addin: Option<String>,
    pub members: BTreeSet<String>,
    pub managers: BTreeSet<String>,
    pub presenters: BTreeSet<String>,
}

impl RoomRecord {
    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            shard: self.shard,
        }
    }

    /// Holds any role in the room.
    pub fn is_role_holder(&self, user: &str) -> bool {
        self.members.contains(user)
            || self.managers.contains(user)
            || self.presenters.contains(user)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub members: BTreeSet<Principal>,
}

/// Per-user enable policy, resolved user → site → global. Ships disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub global: bool,
    pub sites: BTreeMap<String, bool>,
    pub users: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// `by` is the acting user; `None` only for the node's own bootstrap of the first administrator.
    CreateUser {
        by: Option<String>,
        name: String,
        admin: bool,
        token_digest: String,
    },
    /// An open room in the category `default` (made on first use, open to everyone). The proposing
    /// node picks the shard; apply only checks it is one of the cluster's shards.
    CreateRoom {
        by: String,
        name: String,
        description: String,
        shard: u32,
        shard_count: u32,
    },
    CreateUserAt {
        by: String,
        name: String,
        admin: bool,
        token_digest: String,
        site: Option<String>,
    },
    Category {
        by: String,
        op: CategoryOp,
    },
    /// `shard` and `shard_count` are used by `RoomOp::Create` only.
    Room {
        by: String,
        op: RoomOp,
        shard: u32,
        shard_count: u32,
    },
    Group {
        by: String,
        op: GroupOp,
    },
    Policy {
        by: String,
        scope: PolicyScope,
        enabled: Option<bool>,
    },
    Settings {
        by: String,
        change: SettingsChange,
    },
    AddIn {
        by: String,
        op: AddInOp,
    },
    /// Read and clear the user's list of rooms they were newly made a member of.
    TakeInvitations {
        by: String,
    },
    Follow {
        by: String,
        room: String,
        follow: bool,
    },
    /// The user has read the room up to `seq` (for unread counts of followed rooms).
    MarkRead {
        by: String,
        room: String,
        seq: u64,
    },
}

impl MetaCommand {
    /// Whether applying this command may take a right away from someone (to enter, read, post or
    /// upload in some room). Such a change fences the shards (see `shard::decide_post`), so no
    /// post checked against the directory before it is applied after it. Only changes that can
    /// only grant, or touch nothing but personal lists, are exempt.
    pub fn may_revoke_access(&self) -> bool {
        use stoa_proto::{CategoryOp as C, GroupOp as G, PrincipalList as L, RoomOp as R};
        match self {
            MetaCommand::CreateUser { .. }
            | MetaCommand::CreateUserAt { .. }
            | MetaCommand::CreateRoom { .. }
            | MetaCommand::AddIn { .. }
            | MetaCommand::TakeInvitations { .. }
            | MetaCommand::Follow { .. }
            | MetaCommand::MarkRead { .. } => false,
            MetaCommand::Category { op, .. } => match op {
                C::Create(_) | C::List => false,
                C::AddPrincipal { list, .. } => *list == L::Denied,
                C::RemovePrincipal { list, .. } => *list != L::Denied,
                C::Update { .. } | C::Remove { .. } => true,
            },
            MetaCommand::Room { op, .. } => match op {
                R::Create(_) | R::AddRole { .. } | R::Show { .. } | R::Search(_) => false,
                R::SetDisabled { disabled, .. } => *disabled,
                R::Update { .. } | R::Move { .. } | R::Delete { .. } | R::RemoveRole { .. } => true,
            },
            // Adding a member can revoke too: a category may deny the group.
            MetaCommand::Group { op, .. } => !matches!(op, G::Create { .. }),
            MetaCommand::Policy { .. } | MetaCommand::Settings { .. } => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOutcome {
    UserCreated { name: String },
    RoomCreated(RoomInfo),
    Done,
    Invitations(Vec<String>),
}

/// Room and category descriptions: at most 256 characters (DESIGN §1).
pub const DESCRIPTION_CHARS_MAX: usize = 256;
/// The category legacy `CreateRoom` puts rooms in.
pub const DEFAULT_CATEGORY: &str = "default";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    users: BTreeMap<String, UserRecord>,
    /// token digest → user name
    tokens: BTreeMap<String, String>,
    categories: BTreeMap<String, CategoryRecord>,
    rooms: BTreeMap<String, RoomRecord>,
    groups: BTreeMap<String, GroupRecord>,
    policy: Policy,
    settings: stoa_proto::ClusterSettings,
    addins: BTreeMap<String, String>,
    next_room_id: u64,
    /// user → rooms they were newly made a member of, until they look.
    invitations: BTreeMap<String, BTreeSet<String>>,
    /// user → followed room → seq read up to.
    followed: BTreeMap<String, BTreeMap<String, u64>>,
    /// Log index of the last applied change that may have revoked a right: every shard must be
    /// fenced at least this high (see `shard::decide_post`).
    revoked_at: u64,
}

impl MetaState {
    /// Apply the command at log `index`: [`MetaState::apply`], and remember the index when an
    /// applied change may have revoked a right, so shards can be fenced even if the node that
    /// proposed it fails before fencing them.
    pub fn apply_at(&mut self, index: u64, cmd: &MetaCommand) -> Result<MetaOutcome, ApiError> {
        let r = self.apply(cmd);
        if r.is_ok() && cmd.may_revoke_access() {
            self.revoked_at = self.revoked_at.max(index);
        }
        r
    }

    /// See [`MetaState::apply_at`].
    pub fn revoked_at(&self) -> u64 {
        self.revoked_at
    }

    pub fn user(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    pub fn user_by_token_digest(&self, digest: &str) -> Option<&UserRecord> {
        self.tokens
            .get(digest)
            .and_then(|name| self.users.get(name))
    }

    pub fn room(&self, name: &str) -> Option<&RoomRecord> {
        self.rooms.get(name)
    }

    pub fn rooms(&self) -> impl Iterator<Item = &RoomRecord> {
        self.rooms.values()
    }

    pub fn category(&self, name: &str) -> Option<&CategoryRecord> {
        self.categories.get(name)
    }

    pub fn categories(&self) -> impl Iterator<Item = &CategoryRecord> {
        self.categories.values()
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupRecord> {
        self.groups.values()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn settings(&self) -> stoa_proto::ClusterSettings {
        self.settings
    }

    pub fn addins(&self) -> impl Iterator<Item = (&String, &String)> {
        self.addins.iter()
    }

    /// The rooms `user` follows, with the seq read up to.
    pub fn followed(&self, user: &str) -> impl Iterator<Item = (&String, &u64)> {
        self.followed.get(user).into_iter().flatten()
    }

    pub fn has_admin(&self) -> bool {
        self.users.values().any(|u| u.admin)
    }

    /// Decide a command; on success the state is changed, on refusal it is left as it was.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<MetaOutcome, ApiError> {
        // Work on a copy only for the multi-step changes that can fail half-way; the others check
        // everything before they change anything.
        match cmd {
            MetaCommand::CreateUser {
                by,
                name,
                admin,
                token_digest,
            } => users::create(self, by.as_deref(), name, *admin, token_digest, None),
            MetaCommand::CreateUserAt {
                by,
                name,
                admin,
                token_digest,
                site,
            } => users::create(self, Some(by), name, *admin, token_digest, site.clone()),
            MetaCommand::CreateRoom {
                by,
                name,
                description,
                shard,
                shard_count,
            } => rooms::create_legacy(self, by, name, description, *shard, *shard_count),
            MetaCommand::Category { by, op } => {
                self.require_admin(by)?;
                categories::apply(self, op)
            }
            MetaCommand::Room {
                by,
                op,
                shard,
                shard_count,
            } => rooms::apply(self, by, op, *shard, *shard_count),
            MetaCommand::Group { by, op } => {
                self.require_admin(by)?;
                groups::apply(self, op)
            }
            MetaCommand::Policy { by, scope, enabled } => {
                self.require_admin(by)?;
                settings::set_policy(self, scope, *enabled)
            }
            MetaCommand::Settings { by, change } => {
                self.require_admin(by)?;
                settings::change(self, change)
            }
            MetaCommand::AddIn { by, op } => {
                self.require_admin(by)?;
                settings::addin(self, op)
            }
            MetaCommand::TakeInvitations { by } => personal::take_invitations(self, by),
            MetaCommand::Follow { by, room, follow } => personal::follow(self, by, room, *follow),
            MetaCommand::MarkRead { by, room, seq } => personal::mark_read(self, by, room, *seq),
        }
    }

    fn require_user(&self, name: &str) -> Result<&UserRecord, ApiError> {
        self.users
            .get(name)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, format!("no user {name:?}")))
    }

    fn require_admin(&self, name: &str) -> Result<(), ApiError> {
        if self.require_user(name)?.admin {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} is not an administrator"),
            ))
        }
    }
}

fn check_description(description: &str) -> Result<(), ApiError> {
    let chars = description.chars().count();
    if chars > DESCRIPTION_CHARS_MAX {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("description has {chars} characters, at most {DESCRIPTION_CHARS_MAX}"),
        ));
    }
    Ok(())
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no {what} {name:?}"))
}

/// The shard of a new room: spread by name so rooms land evenly without coordination.
pub fn shard_for_room(name: &str, shard_count: u32) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    1 + (h % u64::from(shard_count.max(1))) as u32
}

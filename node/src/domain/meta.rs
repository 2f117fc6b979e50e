//! The directory replicated by the meta group: users (with token digests) and rooms (with their shard).

use super::names::check_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stoa_proto::{ApiError, ErrorCode, RoomInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub admin: bool,
    /// Hex SHA-256 of the user's token; the token itself is never stored.
    pub token_digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub shard: u32,
}

impl RoomRecord {
    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            shard: self.shard,
        }
    }
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
    /// The proposing node picks the shard; apply only checks it is one of the cluster's shards.
    CreateRoom {
        by: String,
        name: String,
        description: String,
        shard: u32,
        shard_count: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOutcome {
    UserCreated { name: String },
    RoomCreated(RoomInfo),
}

/// Room descriptions are limited like names (DESIGN §1: at most 256 characters).
pub const DESCRIPTION_CHARS_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    users: BTreeMap<String, UserRecord>,
    /// token digest → user name
    tokens: BTreeMap<String, String>,
    rooms: BTreeMap<String, RoomRecord>,
    next_room_id: u64,
}

impl MetaState {
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

    pub fn has_admin(&self) -> bool {
        self.users.values().any(|u| u.admin)
    }

    /// Decide a command; on success the state is changed, on refusal it is left as it was.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<MetaOutcome, ApiError> {
        match cmd {
            MetaCommand::CreateUser {
                by,
                name,
                admin,
                token_digest,
            } => {
                match by {
                    Some(by) => self.require_admin(by)?,
                    // The bootstrap path may only create the very first administrator.
                    None if *admin && !self.has_admin() => {}
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::Forbidden,
                            "only the first administrator may be created without a user",
                        ))
                    }
                }
                check_name("user", name)?;
                if self.users.contains_key(name) {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!("user {name:?} exists already"),
                    ));
                }
                if self.tokens.contains_key(token_digest) {
                    return Err(ApiError::new(
                        ErrorCode::Invalid,
                        "token digest is already in use",
                    ));
                }
                self.tokens.insert(token_digest.clone(), name.clone());
                self.users.insert(
                    name.clone(),
                    UserRecord {
                        name: name.clone(),
                        admin: *admin,
                        token_digest: token_digest.clone(),
                    },
                );
                Ok(MetaOutcome::UserCreated { name: name.clone() })
            }
            MetaCommand::CreateRoom {
                by,
                name,
                description,
                shard,
                shard_count,
            } => {
                self.require_user(by)?;
                check_name("room", name)?;
                let chars = description.chars().count();
                if chars > DESCRIPTION_CHARS_MAX {
                    return Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "description has {chars} characters, at most {DESCRIPTION_CHARS_MAX}"
                        ),
                    ));
                }
                if *shard == 0 || shard > shard_count {
                    return Err(ApiError::new(
                        ErrorCode::Invalid,
                        format!("shard {shard} is not one of 1..={shard_count}"),
                    ));
                }
                if self.rooms.contains_key(name) {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!("room {name:?} exists already"),
                    ));
                }
                self.next_room_id += 1;
                let room = RoomRecord {
                    id: self.next_room_id,
                    name: name.clone(),
                    description: description.clone(),
                    shard: *shard,
                };
                let info = room.info();
                self.rooms.insert(name.clone(), room);
                Ok(MetaOutcome::RoomCreated(info))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin_state() -> MetaState {
        let mut s = MetaState::default();
        s.apply(&MetaCommand::CreateUser {
            by: None,
            name: "root".into(),
            admin: true,
            token_digest: "d0".into(),
        })
        .unwrap();
        s
    }

    fn create_user(by: &str, name: &str, digest: &str) -> MetaCommand {
        MetaCommand::CreateUser {
            by: Some(by.into()),
            name: name.into(),
            admin: false,
            token_digest: digest.into(),
        }
    }

    fn create_room(by: &str, name: &str) -> MetaCommand {
        MetaCommand::CreateRoom {
            by: by.into(),
            name: name.into(),
            description: String::new(),
            shard: 1,
            shard_count: 4,
        }
    }

    #[test]
    fn bootstrap_creates_only_the_first_admin() {
        let mut s = admin_state();
        assert_eq!(s.user_by_token_digest("d0").unwrap().name, "root");
        let again = MetaCommand::CreateUser {
            by: None,
            name: "root2".into(),
            admin: true,
            token_digest: "d9".into(),
        };
        assert_eq!(s.apply(&again).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn only_admins_create_users_and_names_are_unique() {
        let mut s = admin_state();
        s.apply(&create_user("root", "ann", "d1")).unwrap();
        assert_eq!(
            s.apply(&create_user("ann", "bob", "d2")).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            s.apply(&create_user("root", "ann", "d3")).unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            s.apply(&create_user("root", "cy", "d1")).unwrap_err().code,
            ErrorCode::Invalid
        );
        assert_eq!(
            s.apply(&create_user("root", "", "d4")).unwrap_err().code,
            ErrorCode::Invalid
        );
        assert!(s.user("bob").is_none());
    }

    #[test]
    fn rooms_get_increasing_ids_and_unique_names() {
        let mut s = admin_state();
        s.apply(&create_user("root", "ann", "d1")).unwrap();
        s.apply(&create_room("ann", "lobby")).unwrap();
        s.apply(&create_room("root", "ops")).unwrap();
        assert_eq!(s.room("lobby").unwrap().id, 1);
        assert_eq!(s.room("ops").unwrap().id, 2);
        assert_eq!(
            s.apply(&create_room("ann", "lobby")).unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            s.apply(&create_room("ghost", "x")).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let bad_shard = MetaCommand::CreateRoom {
            by: "ann".into(),
            name: "x".into(),
            description: String::new(),
            shard: 5,
            shard_count: 4,
        };
        assert_eq!(s.apply(&bad_shard).unwrap_err().code, ErrorCode::Invalid);
        let long = MetaCommand::CreateRoom {
            by: "ann".into(),
            name: "y".into(),
            description: "d".repeat(257),
            shard: 1,
            shard_count: 4,
        };
        assert_eq!(s.apply(&long).unwrap_err().code, ErrorCode::TooLarge);
        assert_eq!(s.rooms().count(), 2);
    }

    #[test]
    fn shards_spread_and_stay_in_range() {
        let mut seen = [0u32; 5];
        for i in 0..1000 {
            let s = shard_for_room(&format!("room-{i}"), 4);
            assert!((1..=4).contains(&s));
            seen[s as usize] += 1;
        }
        assert!(seen[1..].iter().all(|&n| n > 150), "{seen:?}");
        assert_eq!(shard_for_room("lobby", 4), shard_for_room("lobby", 4));
    }
}

//! Wire types of the directory: categories, rooms and their roles, groups, policy, cluster
//! configuration and add-ins. Enums only grow at the end.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Who a category rule names: a user, a group (with nested groups), or every user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    User(String),
    Group(String),
    Everyone,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(u) => write!(f, "user:{u}"),
            Principal::Group(g) => write!(f, "group:{g}"),
            Principal::Everyone => f.write_str("everyone"),
        }
    }
}

impl FromStr for Principal {
    type Err = String;

    /// `user:NAME`, `group:NAME` or `everyone`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "everyone" {
            return Ok(Principal::Everyone);
        }
        match s.split_once(':') {
            Some(("user", n)) if !n.is_empty() => Ok(Principal::User(n.to_string())),
            Some(("group", n)) if !n.is_empty() => Ok(Principal::Group(n.to_string())),
            _ => Err(format!(
                "{s:?} is not a principal: use user:NAME, group:NAME or everyone"
            )),
        }
    }
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$m])*
        // Lower-case names in text formats (JSON); bincode encodes the variant index, not the name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!("{s:?} is not one of: {}", [$($word),+].join(", "))),
                }
            }
        }
    };
}

word_enum!(
    /// open: anyone in the category scope finds, reads and posts; closed: anyone in scope finds it
    /// and sees its members, only members enter; secret: only members know it exists.
    Privacy { Open = "open", Closed = "closed", Secret = "secret" }
);
word_enum!(
    /// In an auditorium only presenters post; everyone admitted reads.
    RoomType { Normal = "normal", Auditorium = "auditorium" }
);
word_enum!(Invitations { Inherit = "inherit", Off = "off" });
word_enum!(Role { Member = "member", Manager = "manager", Presenter = "presenter" });
word_enum!(
    /// The three principal lists of a category.
    PrincipalList { Allowed = "allowed", Denied = "denied", Creators = "creators" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategorySpec {
    pub name: String,
    pub description: String,
    pub allowed: Vec<Principal>,
    pub denied: Vec<Principal>,
    pub creators: Vec<Principal>,
    pub file_upload: bool,
    pub invitations: bool,
    pub chat_history: bool,
}

/// Changes to a category; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryChange {
    pub description: Option<String>,
    pub file_upload: Option<bool>,
    pub invitations: Option<bool>,
    pub chat_history: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CategoryOp {
    Create(CategorySpec),
    Update {
        name: String,
        change: CategoryChange,
    },
    /// Only when the category holds no room.
    Remove {
        name: String,
    },
    AddPrincipal {
        category: String,
        list: PrincipalList,
        principal: Principal,
    },
    RemovePrincipal {
        category: String,
        list: PrincipalList,
        principal: Principal,
    },
    List,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    pub name: String,
    pub category: String,
    pub description: String,
    pub privacy: Privacy,
    pub room_type: RoomType,
    pub invitations: Invitations,
    pub addin: Option<String>,
}

/// Changes to a room; `None` leaves a field as it is. `addin: Some(None)` detaches the add-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomChange {
    pub description: Option<String>,
    pub privacy: Option<Privacy>,
    pub room_type: Option<RoomType>,
    pub invitations: Option<Invitations>,
    pub addin: Option<Option<String>>,
}

/// Room search filters; every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomFilter {
    /// Words that must all appear in the name or description (case-insensitive).
    pub text: String,
    pub category: Option<String>,
    pub member: Option<String>,
    pub manager: Option<String>,
    pub privacy: Option<Privacy>,
    pub room_type: Option<RoomType>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomOp {
    Create(RoomSpec),
    Update {
        name: String,
        change: RoomChange,
    },
    SetDisabled {
        name: String,
        disabled: bool,
    },
    Move {
        name: String,
        category: String,
    },
    Delete {
        name: String,
    },
    AddRole {
        room: String,
        role: Role,
        user: String,
    },
    RemoveRole {
        room: String,
        role: Role,
        user: String,
    },
    Show {
        name: String,
    },
    Search(RoomFilter),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOp {
    Create {
        name: String,
    },
    Delete {
        name: String,
    },
    /// A user or another group.
    AddMember {
        group: String,
        member: Principal,
    },
    RemoveMember {
        group: String,
        member: Principal,
    },
    List,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyScope {
    User(String),
    Site(String),
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyOp {
    /// `enabled: None` clears the setting, so the next scope decides.
    Set {
        scope: PolicyScope,
        enabled: Option<bool>,
    },
    /// How chat is resolved for a user (user → site → global).
    Show { user: String },
}

/// Cluster-wide settings, replicated and applied without restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Messages sent on join, 1..=500.
    pub default_chat_history: u32,
    /// Largest file upload, KiB.
    pub max_file_size_kb: u32,
    /// Above this many connected participants a room stops sending roster updates.
    pub participant_update_limit: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            default_chat_history: 30,
            max_file_size_kb: 20_000,
            participant_update_limit: 75,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub default_chat_history: Option<u32>,
    pub max_file_size_kb: Option<u32>,
    pub participant_update_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    Show,
    Set(SettingsChange),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddInOp {
    Register { name: String, url: String },
    Update { name: String, url: String },
    Remove { name: String },
    List,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryInfo {
    pub spec: CategorySpec,
    pub rooms: u32,
}

/// A room as a user allowed to see it sees it. Role lists are empty for an open room's
/// non-managers (open rooms have no membership list to show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDetail {
    pub name: String,
    pub category: String,
    pub description: String,
    pub privacy: Privacy,
    pub room_type: RoomType,
    pub invitations: Invitations,
    pub disabled: bool,
    pub addin: Option<String>,
    pub members: Vec<String>,
    pub managers: Vec<String>,
    pub presenters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub members: Vec<Principal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddInInfo {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub user: String,
    pub user_setting: Option<bool>,
    pub site: Option<String>,
    pub site_setting: Option<bool>,
    pub global: bool,
    pub enabled: bool,
}

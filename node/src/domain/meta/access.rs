//! Who may do what, as pure questions on the directory. The permission table in
//! `docs/PERMISSIONS.md` is this file in words.

use super::{CategoryRecord, MetaState, RoomRecord, UserRecord};
use std::collections::BTreeSet;
use stoa_proto::{Principal, Privacy, RoomType};

/// Groups nest at most this deep (a group in a group in a group in a group).
pub const GROUP_DEPTH_MAX: usize = 4;

/// What one user may do with one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomAccess {
    /// Know the room exists: listings, search, error messages.
    pub find: bool,
    /// Join, read history, follow live.
    pub read: bool,
    pub post: bool,
    /// Change settings and roles, disable and enable.
    pub manage: bool,
    /// See the role lists.
    pub see_members: bool,
}

impl MetaState {
    /// Every principal that names `user`: the user, each group that holds it directly or through
    /// nested groups, and `everyone`.
    pub fn principals_of(&self, user: &str) -> BTreeSet<Principal> {
        let mut set = BTreeSet::from([Principal::User(user.to_string()), Principal::Everyone]);
        // Each round adds the groups one level further out; nesting is bounded, so is this.
        for _ in 0..=GROUP_DEPTH_MAX {
            let before = set.len();
            for g in self.groups.values() {
                if g.members.iter().any(|m| set.contains(m)) {
                    set.insert(Principal::Group(g.name.clone()));
                }
            }
            if set.len() == before {
                break;
            }
        }
        set
    }

    /// In the category's allowed set and not in its denied set (denied wins).
    pub fn in_scope(&self, user: &str, category: &CategoryRecord) -> bool {
        let p = self.principals_of(user);
        !category.denied.iter().any(|d| p.contains(d))
            && category.allowed.iter().any(|a| p.contains(a))
    }

    /// May create rooms in the category (and so becomes their manager).
    pub fn may_create_in(&self, user: &UserRecord, category: &CategoryRecord) -> bool {
        if user.admin {
            return true;
        }
        let p = self.principals_of(&user.name);
        self.in_scope(&user.name, category) && category.creators.iter().any(|c| p.contains(c))
    }

    /// The chat policy for a user: the user's own setting, else the site's, else the global one.
    /// Administrators are not subject to it, so a fresh cluster can be set up.
    pub fn chat_enabled(&self, user: &UserRecord) -> bool {
        if user.admin {
            return true;
        }
        if let Some(&e) = self.policy.users.get(&user.name) {
            return e;
        }
        if let Some(e) = user.site.as_ref().and_then(|s| self.policy.sites.get(s)) {
            return *e;
        }
        self.policy.global
    }

    /// What `user` may do with `room`. Administrators manage everything and read and post in
    /// every room that is not disabled.
    pub fn access(&self, user: &UserRecord, room: &RoomRecord) -> RoomAccess {
        if user.admin {
            // Administrators manage everything; a disabled room is closed to them too.
            let open = !room.disabled;
            return RoomAccess {
                find: true,
                read: open,
                post: open,
                manage: true,
                see_members: true,
            };
        }
        let scope = self
            .categories
            .get(&room.category)
            .is_some_and(|c| self.in_scope(&user.name, c));
        let holder = room.is_role_holder(&user.name);
        let manage = scope && room.managers.contains(&user.name);
        let find =
            scope && (!room.disabled || manage) && (room.privacy != Privacy::Secret || holder);
        let read = find
            && !room.disabled
            && self.chat_enabled(user)
            && (room.privacy == Privacy::Open || holder);
        let post =
            read && (room.room_type == RoomType::Normal || room.presenters.contains(&user.name));
        let see_members = match room.privacy {
            Privacy::Open => manage,
            Privacy::Closed => find,
            Privacy::Secret => holder,
        };
        RoomAccess {
            find,
            read,
            post,
            manage,
            see_members,
        }
    }
}

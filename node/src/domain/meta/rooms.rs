//! Rooms: creation in a category, settings, roles, disabling, moving, deleting.

use super::{
    check_description, not_found, CategoryRecord, MetaOutcome, MetaState, RoomRecord,
    DEFAULT_CATEGORY,
};
use crate::domain::names::check_name;
use std::collections::BTreeSet;
use stoa_proto::{
    ApiError, ErrorCode, Invitations, Principal, Privacy, Role, RoomOp, RoomSpec, RoomType,
};

pub(super) fn apply(
    s: &mut MetaState,
    by: &str,
    op: &RoomOp,
    shard: u32,
    shard_count: u32,
) -> Result<MetaOutcome, ApiError> {
    let actor = s.require_user(by)?.clone();
    match op {
        RoomOp::Create(spec) => {
            let category = s
                .categories
                .get(&spec.category)
                .ok_or_else(|| not_found("category", &spec.category))?;
            if !s.may_create_in(&actor, category) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("{by} may not create rooms in category {:?}", spec.category),
                ));
            }
            // The creator manages the room, if the category's scope admits them (role holders
            // must be in scope; an administrator outside it manages through the admin role).
            let creator_in_scope = s.in_scope(by, category);
            let room = create(s, spec, shard, shard_count)?;
            if creator_in_scope {
                let r = s.rooms.get_mut(&room).expect("created just above");
                r.managers.insert(by.to_string());
                r.members.insert(by.to_string());
            }
            Ok(MetaOutcome::RoomCreated(s.rooms[&room].info()))
        }
        RoomOp::Update { name, change } => {
            let room = managed_room(s, &actor, name)?;
            if let Some(d) = &change.description {
                check_description(d)?;
            }
            if let Some(Some(a)) = &change.addin {
                if !s.addins.contains_key(a) {
                    return Err(not_found("add-in", a));
                }
            }
            if change.room_type == Some(RoomType::Normal) && !room.presenters.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!(
                        "room {name:?} has presenters; a normal room has none (remove them first)"
                    ),
                ));
            }
            let r = s.rooms.get_mut(name).expect("looked up above");
            if let Some(d) = &change.description {
                r.description = d.clone();
            }
            if let Some(p) = change.privacy {
                r.privacy = p;
            }
            if let Some(t) = change.room_type {
                r.room_type = t;
            }
            if let Some(i) = change.invitations {
                r.invitations = i;
            }
            if let Some(a) = &change.addin {
                r.addin = a.clone();
            }
            Ok(MetaOutcome::Done)
        }
        RoomOp::SetDisabled { name, disabled } => {
            managed_room(s, &actor, name)?;
            s.rooms.get_mut(name).expect("looked up above").disabled = *disabled;
            Ok(MetaOutcome::Done)
        }
        RoomOp::Move { name, category } => {
            managed_room(s, &actor, name)?;
            let target = s
                .categories
                .get(category)
                .ok_or_else(|| not_found("category", category))?;
            if !s.may_create_in(&actor, target) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("{by} may not place rooms in category {category:?}"),
                ));
            }
            let keep =
                |s: &MetaState, set: &BTreeSet<String>, c: &CategoryRecord| -> BTreeSet<String> {
                    set.iter().filter(|u| s.in_scope(u, c)).cloned().collect()
                };
            let r = &s.rooms[name];
            let (members, managers, presenters) = (
                keep(s, &r.members, target),
                keep(s, &r.managers, target),
                keep(s, &r.presenters, target),
            );
            let r = s.rooms.get_mut(name).expect("looked up above");
            r.category = category.clone();
            (r.members, r.managers, r.presenters) = (members, managers, presenters);
            Ok(MetaOutcome::Done)
        }
        RoomOp::Delete { name } => {
            if !actor.admin {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only administrators delete rooms",
                ));
            }
            s.rooms
                .remove(name)
                .ok_or_else(|| not_found("room", name))?;
            Ok(MetaOutcome::Done)
        }
        RoomOp::AddRole { room, role, user } => {
            let r = managed_room(s, &actor, room)?;
            if s.user(user).is_none() {
                return Err(not_found("user", user));
            }
            let category = &s.categories[&r.category];
            if !s.in_scope(user, category) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "{user} is not allowed in category {:?} (allowed minus denied)",
                        category.name
                    ),
                ));
            }
            if *role == Role::Presenter && r.room_type == RoomType::Normal {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!("room {room:?} is normal; only an auditorium has presenters"),
                ));
            }
            let invitations_on = r.invitations == Invitations::Inherit && category.invitations;
            let r = s.rooms.get_mut(room).expect("looked up above");
            let newly = role_set(r, *role).insert(user.clone());
            if newly && *role == Role::Member && invitations_on {
                s.invitations
                    .entry(user.clone())
                    .or_default()
                    .insert(room.clone());
            }
            Ok(MetaOutcome::Done)
        }
        RoomOp::RemoveRole { room, role, user } => {
            managed_room(s, &actor, room)?;
            let r = s.rooms.get_mut(room).expect("looked up above");
            if !role_set(r, *role).remove(user) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{user} is not a {role} of {room:?}"),
                ));
            }
            Ok(MetaOutcome::Done)
        }
        RoomOp::Show { .. } | RoomOp::Search(_) => {
            Err(ApiError::new(ErrorCode::Invalid, "a read, not a change"))
        }
    }
}

/// The legacy `CreateRoom`: an open, normal room in the `default` category, which is made (open to
/// everyone, everyone may create) the first time it is needed.
pub(super) fn create_legacy(
    s: &mut MetaState,
    by: &str,
    name: &str,
    description: &str,
    shard: u32,
    shard_count: u32,
) -> Result<MetaOutcome, ApiError> {
    s.require_user(by)?;
    let spec = RoomSpec {
        name: name.to_string(),
        category: DEFAULT_CATEGORY.to_string(),
        description: description.to_string(),
        privacy: Privacy::Open,
        room_type: RoomType::Normal,
        invitations: Invitations::Inherit,
        addin: None,
    };
    // Check the room before making the category, so a refusal changes nothing.
    check_new_room(s, &spec, shard, shard_count)?;
    s.categories
        .entry(DEFAULT_CATEGORY.to_string())
        .or_insert_with(|| CategoryRecord {
            name: DEFAULT_CATEGORY.to_string(),
            description: "Rooms made without a category".to_string(),
            allowed: BTreeSet::from([Principal::Everyone]),
            denied: BTreeSet::new(),
            creators: BTreeSet::from([Principal::Everyone]),
            file_upload: false,
            invitations: true,
            chat_history: true,
        });
    let room = create(s, &spec, shard, shard_count)?;
    Ok(MetaOutcome::RoomCreated(s.rooms[&room].info()))
}

fn check_new_room(
    s: &MetaState,
    spec: &RoomSpec,
    shard: u32,
    shard_count: u32,
) -> Result<(), ApiError> {
    check_name("room", &spec.name)?;
    check_description(&spec.description)?;
    if shard == 0 || shard > shard_count {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("shard {shard} is not one of 1..={shard_count}"),
        ));
    }
    if let Some(a) = &spec.addin {
        if !s.addins.contains_key(a) {
            return Err(not_found("add-in", a));
        }
    }
    if s.rooms.contains_key(&spec.name) {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("room {:?} exists already", spec.name),
        ));
    }
    Ok(())
}

fn create(
    s: &mut MetaState,
    spec: &RoomSpec,
    shard: u32,
    shard_count: u32,
) -> Result<String, ApiError> {
    check_new_room(s, spec, shard, shard_count)?;
    s.next_room_id += 1;
    s.rooms.insert(
        spec.name.clone(),
        RoomRecord {
            id: s.next_room_id,
            name: spec.name.clone(),
            description: spec.description.clone(),
            shard,
            category: spec.category.clone(),
            privacy: spec.privacy,
            room_type: spec.room_type,
            invitations: spec.invitations,
            disabled: false,
            addin: spec.addin.clone(),
            members: BTreeSet::new(),
            managers: BTreeSet::new(),
            presenters: BTreeSet::new(),
        },
    );
    Ok(spec.name.clone())
}

/// The room, if `actor` manages it. A room the actor may not even find is "not found", so that a
/// secret room's existence does not leak.
fn managed_room(
    s: &MetaState,
    actor: &super::UserRecord,
    name: &str,
) -> Result<RoomRecord, ApiError> {
    let room = s.rooms.get(name).ok_or_else(|| not_found("room", name))?;
    let access = s.access(actor, room);
    if !access.find {
        return Err(not_found("room", name));
    }
    if !access.manage {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{} does not manage room {name:?}", actor.name),
        ));
    }
    Ok(room.clone())
}

fn role_set(r: &mut RoomRecord, role: Role) -> &mut BTreeSet<String> {
    match role {
        Role::Member => &mut r.members,
        Role::Manager => &mut r.managers,
        Role::Presenter => &mut r.presenters,
    }
}

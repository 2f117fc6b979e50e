//! Categories: scope (allowed minus denied), creators and switches.

use super::{check_description, not_found, CategoryRecord, MetaOutcome, MetaState};
use crate::domain::names::check_name;
use std::collections::BTreeSet;
use stoa_proto::{ApiError, CategoryOp, ErrorCode, Principal, PrincipalList};

pub(super) fn apply(s: &mut MetaState, op: &CategoryOp) -> Result<MetaOutcome, ApiError> {
    match op {
        CategoryOp::Create(spec) => {
            check_name("category", &spec.name)?;
            check_description(&spec.description)?;
            if s.categories.contains_key(&spec.name) {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("category {:?} exists already", spec.name),
                ));
            }
            for p in spec
                .allowed
                .iter()
                .chain(&spec.denied)
                .chain(&spec.creators)
            {
                check_principal(s, p)?;
            }
            s.categories.insert(
                spec.name.clone(),
                CategoryRecord {
                    name: spec.name.clone(),
                    description: spec.description.clone(),
                    allowed: spec.allowed.iter().cloned().collect(),
                    denied: spec.denied.iter().cloned().collect(),
                    creators: spec.creators.iter().cloned().collect(),
                    file_upload: spec.file_upload,
                    invitations: spec.invitations,
                    chat_history: spec.chat_history,
                },
            );
        }
        CategoryOp::Update { name, change } => {
            if let Some(d) = &change.description {
                check_description(d)?;
            }
            let c = s
                .categories
                .get_mut(name)
                .ok_or_else(|| not_found("category", name))?;
            if let Some(d) = &change.description {
                c.description = d.clone();
            }
            if let Some(v) = change.file_upload {
                c.file_upload = v;
            }
            if let Some(v) = change.invitations {
                c.invitations = v;
            }
            if let Some(v) = change.chat_history {
                c.chat_history = v;
            }
        }
        CategoryOp::Remove { name } => {
            if !s.categories.contains_key(name) {
                return Err(not_found("category", name));
            }
            let rooms = s.rooms.values().filter(|r| &r.category == name).count();
            if rooms > 0 {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!(
                        "category {name:?} still holds {rooms} room(s); move or delete them first"
                    ),
                ));
            }
            s.categories.remove(name);
        }
        CategoryOp::AddPrincipal {
            category,
            list,
            principal,
        } => {
            check_principal(s, principal)?;
            let c = s
                .categories
                .get_mut(category)
                .ok_or_else(|| not_found("category", category))?;
            list_mut(c, *list).insert(principal.clone());
        }
        CategoryOp::RemovePrincipal {
            category,
            list,
            principal,
        } => {
            let c = s
                .categories
                .get_mut(category)
                .ok_or_else(|| not_found("category", category))?;
            if !list_mut(c, *list).remove(principal) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{principal} is not in {category}'s {list} list"),
                ));
            }
        }
        CategoryOp::List => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "listing is a read, not a change",
            ))
        }
    }
    Ok(MetaOutcome::Done)
}

fn list_mut(c: &mut CategoryRecord, list: PrincipalList) -> &mut BTreeSet<Principal> {
    match list {
        PrincipalList::Allowed => &mut c.allowed,
        PrincipalList::Denied => &mut c.denied,
        PrincipalList::Creators => &mut c.creators,
    }
}

/// A principal must name an existing user or group.
pub(super) fn check_principal(s: &MetaState, p: &Principal) -> Result<(), ApiError> {
    match p {
        Principal::User(u) if !s.users.contains_key(u) => Err(not_found("user", u)),
        Principal::Group(g) if !s.groups.contains_key(g) => Err(not_found("group", g)),
        _ => Ok(()),
    }
}

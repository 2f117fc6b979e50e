//! User groups: members are users or other groups, nested at most `GROUP_DEPTH_MAX` deep.

use super::access::GROUP_DEPTH_MAX;
use super::categories::check_principal;
use super::{not_found, GroupRecord, MetaOutcome, MetaState};
use crate::domain::names::check_name;
use std::collections::{BTreeMap, BTreeSet};
use stoa_proto::{ApiError, ErrorCode, GroupOp, Principal};

pub(super) fn apply(s: &mut MetaState, op: &GroupOp) -> Result<MetaOutcome, ApiError> {
    match op {
        GroupOp::Create { name } => {
            check_name("group", name)?;
            if s.groups.contains_key(name) {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("group {name:?} exists already"),
                ));
            }
            s.groups.insert(
                name.clone(),
                GroupRecord {
                    name: name.clone(),
                    members: BTreeSet::new(),
                },
            );
        }
        GroupOp::Delete { name } => {
            if !s.groups.contains_key(name) {
                return Err(not_found("group", name));
            }
            let p = Principal::Group(name.clone());
            if let Some(c) = s.categories.values().find(|c| {
                c.allowed.contains(&p) || c.denied.contains(&p) || c.creators.contains(&p)
            }) {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!("group {name:?} is still named by category {:?}", c.name),
                ));
            }
            s.groups.remove(name);
            for g in s.groups.values_mut() {
                g.members.remove(&p);
            }
        }
        GroupOp::AddMember { group, member } => {
            if !s.groups.contains_key(group) {
                return Err(not_found("group", group));
            }
            if *member == Principal::Everyone {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    "everyone cannot be a group member; name everyone directly",
                ));
            }
            check_principal(s, member)?;
            let mut groups = s.groups.clone();
            groups
                .get_mut(group)
                .expect("checked above")
                .members
                .insert(member.clone());
            if let Principal::Group(_) = member {
                check_nesting(&groups)?;
            }
            s.groups = groups;
        }
        GroupOp::RemoveMember { group, member } => {
            let g = s
                .groups
                .get_mut(group)
                .ok_or_else(|| not_found("group", group))?;
            if !g.members.remove(member) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{member} is not in group {group:?}"),
                ));
            }
        }
        GroupOp::List => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "listing is a read, not a change",
            ))
        }
    }
    Ok(MetaOutcome::Done)
}

/// No group may contain itself through nesting, and no chain may be deeper than allowed.
fn check_nesting(groups: &BTreeMap<String, GroupRecord>) -> Result<(), ApiError> {
    fn depth(
        groups: &BTreeMap<String, GroupRecord>,
        name: &str,
        path: &mut Vec<String>,
    ) -> Result<usize, ApiError> {
        if path.iter().any(|p| p == name) {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!("group {name:?} would contain itself"),
            ));
        }
        if path.len() >= GROUP_DEPTH_MAX {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "groups nest at most {GROUP_DEPTH_MAX} deep: {} → {name}",
                    path.join(" → ")
                ),
            ));
        }
        path.push(name.to_string());
        let mut d = 1;
        for m in groups.get(name).map(|g| &g.members).into_iter().flatten() {
            if let Principal::Group(inner) = m {
                d = d.max(1 + depth(groups, inner, path)?);
            }
        }
        path.pop();
        Ok(d)
    }
    for name in groups.keys() {
        depth(groups, name, &mut Vec::new())?;
    }
    Ok(())
}

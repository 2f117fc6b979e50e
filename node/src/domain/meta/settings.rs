//! The chat policy, cluster settings and add-ins.

use super::{not_found, MetaOutcome, MetaState};
use crate::domain::names::check_name;
use stoa_proto::{AddInOp, ApiError, ErrorCode, PolicyScope, SettingsChange};

pub(super) fn set_policy(
    s: &mut MetaState,
    scope: &PolicyScope,
    enabled: Option<bool>,
) -> Result<MetaOutcome, ApiError> {
    match (scope, enabled) {
        (PolicyScope::Global, Some(e)) => s.policy.global = e,
        (PolicyScope::Global, None) => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "the global policy cannot be cleared, only enabled or disabled",
            ))
        }
        (PolicyScope::Site(site), e) => {
            check_name("site", site)?;
            match e {
                Some(e) => s.policy.sites.insert(site.clone(), e),
                None => s.policy.sites.remove(site),
            };
        }
        (PolicyScope::User(user), e) => {
            if !s.users.contains_key(user) {
                return Err(not_found("user", user));
            }
            match e {
                Some(e) => s.policy.users.insert(user.clone(), e),
                None => s.policy.users.remove(user),
            };
        }
    }
    Ok(MetaOutcome::Done)
}

pub const CHAT_HISTORY_RANGE: std::ops::RangeInclusive<u32> = 1..=500;
pub const FILE_SIZE_KB_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
pub const PARTICIPANT_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;

pub(super) fn change(s: &mut MetaState, c: &SettingsChange) -> Result<MetaOutcome, ApiError> {
    let check = |field: &str, v: Option<u32>, range: std::ops::RangeInclusive<u32>| match v {
        Some(v) if !range.contains(&v) => Err(ApiError::new(
            ErrorCode::Invalid,
            format!("{field} {v} is not in {}..={}", range.start(), range.end()),
        )),
        _ => Ok(()),
    };
    check(
        "default_chat_history",
        c.default_chat_history,
        CHAT_HISTORY_RANGE,
    )?;
    check("max_file_size_kb", c.max_file_size_kb, FILE_SIZE_KB_RANGE)?;
    check(
        "participant_update_limit",
        c.participant_update_limit,
        PARTICIPANT_LIMIT_RANGE,
    )?;
    let st = &mut s.settings;
    st.default_chat_history = c.default_chat_history.unwrap_or(st.default_chat_history);
    st.max_file_size_kb = c.max_file_size_kb.unwrap_or(st.max_file_size_kb);
    st.participant_update_limit = c
        .participant_update_limit
        .unwrap_or(st.participant_update_limit);
    Ok(MetaOutcome::Done)
}

/// Add-in URLs: http or https, at most this long.
pub const ADDIN_URL_BYTES_MAX: usize = 2048;

fn check_url(url: &str) -> Result<(), ApiError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if !scheme_ok || host.is_empty() || host.starts_with('/') {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("add-in URL {url:?} must be http:// or https:// with a host"),
        ));
    }
    if url.len() > ADDIN_URL_BYTES_MAX || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            "add-in URL is too long or holds blanks or control characters",
        ));
    }
    Ok(())
}

pub(super) fn addin(s: &mut MetaState, op: &AddInOp) -> Result<MetaOutcome, ApiError> {
    match op {
        AddInOp::Register { name, url } => {
            check_name("add-in", name)?;
            check_url(url)?;
            if s.addins.contains_key(name) {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("add-in {name:?} exists already"),
                ));
            }
            s.addins.insert(name.clone(), url.clone());
        }
        AddInOp::Update { name, url } => {
            check_url(url)?;
            let u = s
                .addins
                .get_mut(name)
                .ok_or_else(|| not_found("add-in", name))?;
            *u = url.clone();
        }
        AddInOp::Remove { name } => {
            if let Some(r) = s.rooms.values().find(|r| r.addin.as_deref() == Some(name)) {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!("add-in {name:?} is attached to room {:?}", r.name),
                ));
            }
            s.addins
                .remove(name)
                .ok_or_else(|| not_found("add-in", name))?;
        }
        AddInOp::List => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "listing is a read, not a change",
            ))
        }
    }
    Ok(MetaOutcome::Done)
}

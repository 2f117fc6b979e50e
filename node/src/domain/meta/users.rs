//! Creating users.

use super::{MetaOutcome, MetaState, UserRecord};
use crate::domain::names::check_name;
use stoa_proto::{ApiError, ErrorCode};

/// `by: None` is the node's bootstrap, which may only create the very first administrator.
pub(super) fn create(
    s: &mut MetaState,
    by: Option<&str>,
    name: &str,
    admin: bool,
    token_digest: &str,
    site: Option<String>,
) -> Result<MetaOutcome, ApiError> {
    match by {
        Some(by) => s.require_admin(by)?,
        None if admin && !s.has_admin() => {}
        None => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the first administrator may be created without a user",
            ))
        }
    }
    check_name("user", name)?;
    if let Some(site) = &site {
        check_name("site", site)?;
    }
    if s.users.contains_key(name) {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("user {name:?} exists already"),
        ));
    }
    if s.tokens.contains_key(token_digest) {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            "token digest is already in use",
        ));
    }
    s.tokens.insert(token_digest.to_string(), name.to_string());
    s.users.insert(
        name.to_string(),
        UserRecord {
            name: name.to_string(),
            admin,
            token_digest: token_digest.to_string(),
            site,
        },
    );
    Ok(MetaOutcome::UserCreated {
        name: name.to_string(),
    })
}

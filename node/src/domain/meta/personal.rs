//! What each user keeps for themselves: invitations, followed rooms and how far they read them.

use super::{not_found, MetaOutcome, MetaState};
use stoa_proto::{ApiError, ErrorCode};

/// Rooms followed per user, at most.
pub const FOLLOWED_ROOMS_MAX: usize = 1000;

/// The rooms `by` was newly made a member of and may still find; the list is cleared.
pub(super) fn take_invitations(s: &mut MetaState, by: &str) -> Result<MetaOutcome, ApiError> {
    let user = s.require_user(by)?.clone();
    let rooms = s.invitations.remove(by).unwrap_or_default();
    let visible = rooms
        .into_iter()
        .filter(|r| {
            s.rooms
                .get(r)
                .is_some_and(|room| s.access(&user, room).find)
        })
        .collect();
    Ok(MetaOutcome::Invitations(visible))
}

pub(super) fn follow(
    s: &mut MetaState,
    by: &str,
    room: &str,
    follow: bool,
) -> Result<MetaOutcome, ApiError> {
    let user = s.require_user(by)?.clone();
    if !follow {
        let removed = s.followed.get_mut(by).and_then(|f| f.remove(room));
        return removed
            .map(|_| MetaOutcome::Done)
            .ok_or_else(|| not_found("followed room", room));
    }
    let r = s
        .rooms
        .get(room)
        .filter(|r| s.access(&user, r).find)
        .ok_or_else(|| not_found("room", room))?;
    if !s.access(&user, r).read {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{by} may not read {room:?}, so cannot follow it"),
        ));
    }
    let followed = s.followed.entry(by.to_string()).or_default();
    if followed.len() >= FOLLOWED_ROOMS_MAX && !followed.contains_key(room) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("at most {FOLLOWED_ROOMS_MAX} followed rooms"),
        ));
    }
    followed.entry(room.to_string()).or_insert(0);
    Ok(MetaOutcome::Done)
}

/// Read markers only move forward, and only for followed rooms.
pub(super) fn mark_read(
    s: &mut MetaState,
    by: &str,
    room: &str,
    seq: u64,
) -> Result<MetaOutcome, ApiError> {
    s.require_user(by)?;
    let marker = s
        .followed
        .get_mut(by)
        .and_then(|f| f.get_mut(room))
        .ok_or_else(|| not_found("followed room", room))?;
    *marker = (*marker).max(seq);
    Ok(MetaOutcome::Done)
}

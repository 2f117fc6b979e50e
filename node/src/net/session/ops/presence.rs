//! Reading a room's roster: who is connected to it, cluster-wide.

use super::{room_for, Need, Session};
use stoa_proto::{ApiError, Response};

/// The room's participants (or their count above `participant_update_limit`), for users who
/// may read the room; others get the same answer as for any room they may not read.
pub(super) async fn participants(s: &Session, name: &str) -> Result<Response, ApiError> {
    let (room, _) = room_for(s, name, Need::Read).await?;
    let limit = s.ctx.meta.read(|m| m.settings().participant_update_limit);
    Ok(Response::Participants {
        roster: s.ctx.fanout.presence().roster(room.id, limit),
        room: room.name,
    })
}

//! Moderation by administrators: the node checks the filter and resolves the room, and each shard
//! decides at apply time which of its stored messages the filter selects.

use super::directory::require_admin;
use super::Session;
use crate::domain::moderation;
use crate::raft::{Command, CommandResult, GroupId, Moderate};
use crate::store::sm::MODERATED_PER_ENTRY_MAX;
use stoa_proto::{ApiError, ErrorCode, MessageFilter, ModerateOp, ModerationAction, Response};

pub(super) async fn moderate(s: &Session, op: ModerateOp) -> Result<Response, ApiError> {
    require_admin(s, "moderate messages")?;
    let (filter, action) = match op {
        ModerateOp::Messages { filter, action } => (filter, action),
        ModerateOp::ClearHistory { room, through_ms } => (
            MessageFilter {
                room: Some(room),
                to_ms: Some(through_ms),
                ..Default::default()
            },
            ModerationAction::Remove,
        ),
    };
    moderation::validate(&filter, &action)?;
    // One room lives in one shard; without a room, every shard moderates its own rooms.
    let targets: Vec<(u32, Option<u64>)> = match &filter.room {
        Some(name) => {
            let room = s
                .ctx
                .meta
                .read(|m| m.room(name).map(|r| (r.shard, r.id)))
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {name:?}")))?;
            vec![(room.0, Some(room.1))]
        }
        None => (1..=s.ctx.shards.len() as u32).map(|g| (g, None)).collect(),
    };
    let mut messages = 0;
    for (shard, room_id) in targets {
        // A shard changes at most MODERATED_PER_ENTRY_MAX messages per entry, and never one the
        // action would leave as it is: send the command again until a round changes fewer.
        loop {
            let cmd = Command::Moderate(Moderate {
                room_id,
                filter: filter.clone(),
                action: action.clone(),
            });
            // Answer once this node shows the change, so the administrator's next read sees it.
            let n = match s.ctx.proposals.propose_and_see(GroupId(shard), cmd).await? {
                CommandResult::Moderated(r) => r?,
                other => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        format!("unexpected answer {other:?}"),
                    ))
                }
            };
            messages += n;
            if n < MODERATED_PER_ENTRY_MAX {
                break;
            }
        }
    }
    Ok(Response::Moderated { messages })
}

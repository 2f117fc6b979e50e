//! A user's own lists: invitations, followed rooms and read markers (kept in the directory).

use super::{meta, Session};
use crate::domain::meta::{MetaCommand, MetaOutcome};
use stoa_proto::{ApiError, ErrorCode, FollowedRoom, Response, Seq};

pub(super) async fn invitations(s: &Session) -> Result<Response, ApiError> {
    match meta(
        s,
        MetaCommand::TakeInvitations {
            by: s.user.name.clone(),
        },
    )
    .await?
    {
        MetaOutcome::Invitations(rooms) => Ok(Response::Invitations(rooms)),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected answer {other:?}"),
        )),
    }
}

pub(super) async fn follow(s: &Session, room: String, follow: bool) -> Result<Response, ApiError> {
    meta(
        s,
        MetaCommand::Follow {
            by: s.user.name.clone(),
            room,
            follow,
        },
    )
    .await
    .map(|_| Response::Done)
}

pub(super) async fn mark_read(s: &Session, room: String, seq: Seq) -> Result<Response, ApiError> {
    meta(
        s,
        MetaCommand::MarkRead {
            by: s.user.name.clone(),
            room,
            seq: seq.0,
        },
    )
    .await
    .map(|_| Response::Done)
}

/// Followed rooms the user may still read, with unread counts from this node's shard heads.
pub(super) fn followed(s: &Session) -> Result<Response, ApiError> {
    let user = s.user_record()?;
    let rooms = s.ctx.meta.read(|m| {
        m.followed(&user.name)
            .filter_map(|(name, read)| {
                let r = m.room(name).filter(|r| m.access(&user, r).read)?;
                Some((r.id, r.shard, name.clone(), *read))
            })
            .collect::<Vec<_>>()
    });
    let list = rooms
        .into_iter()
        .filter_map(|(id, shard, room, read)| {
            let last = s.ctx.shards.get(shard as usize - 1)?.last_seq(id);
            Some(FollowedRoom {
                room,
                last_seq: last,
                read_seq: Seq(read),
                unread: last.0.saturating_sub(read),
            })
        })
        .collect();
    Ok(Response::Followed(list))
}

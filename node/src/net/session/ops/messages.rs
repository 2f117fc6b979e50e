//! Posting and reading messages.

use super::{room_for, Need, RoomRef, Session};
use crate::domain::shard::ProposedPost;
use crate::store::sm::ShardView;
use std::time::Instant;
use stoa_proto::limits::CLIENT_MSG_ID_BYTES_MAX;
use stoa_proto::{ApiError, ErrorCode, Post, Response, Seq};

pub(super) async fn post(s: &Session, p: Post) -> Result<Response, ApiError> {
    let limits = &s.ctx.config.limits;
    if p.text.len() > limits.message_text_bytes_max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "text of {} bytes exceeds message_text_bytes_max ({})",
                p.text.len(),
                limits.message_text_bytes_max
            ),
        ));
    }
    if p.client_msg_id.is_empty() || p.client_msg_id.len() > CLIENT_MSG_ID_BYTES_MAX {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("client message id must be 1..={CLIENT_MSG_ID_BYTES_MAX} bytes"),
        ));
    }
    if !s
        .rate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(Instant::now())
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} posts/s on this connection",
                limits.posts_per_s_per_connection_max
            ),
        ));
    }
    // Read before the check: a lower bound of the directory version the check sees.
    let checked_at = s.ctx.meta.applied_index();
    let (room, _) = room_for(s, &p.room, Need::Post).await?;
    let proposer = &s.ctx.proposers[room.shard as usize - 1];
    let outcome = proposer
        .post(ProposedPost {
            room_id: room.id,
            room: room.name,
            author: s.user.name.clone(),
            client_msg_id: p.client_msg_id,
            text: p.text,
            alert: p.alert,
            ts_ms: now_ms(),
            file: None,
            checked_at,
        })
        .await?;
    Ok(Response::Posted {
        seq: outcome.seq,
        ts_ms: outcome.ts_ms,
    })
}

pub(super) async fn join(s: &Session, name: &str) -> Result<Response, ApiError> {
    let (room, view) = room_for(s, name, Need::Read).await?;
    // Counted before the read: a moderation after it is sent with the subscription.
    let moderated = view.moderation(room.id);
    let n = if room.history_kept {
        s.ctx.meta.read(|m| m.settings().default_chat_history) as usize
    } else {
        0
    };
    let messages = view
        .read(
            room.id,
            room.name.clone(),
            Seq::ZERO,
            Seq(u64::MAX),
            n,
            true,
        )
        .await
        .map_err(storage)?;
    // Live delivery resumes right after the last message returned, so nothing falls between.
    // With no history to show (not kept, or none asked for), it starts from now: a backlog
    // from seq 0 would be refused once the room is longer than `subscribe_backlog_max`.
    let after = match n {
        0 => None,
        _ => Some(messages.last().map_or(Seq::ZERO, |m| m.seq)),
    };
    let (last_seq, moderation) = subscribe_room(s, &room, &view, after, Some(moderated)).await?;
    Ok(Response::Joined {
        room: room.name,
        messages,
        last_seq,
        moderation,
    })
}

pub(super) async fn history(
    s: &Session,
    name: &str,
    before: Option<Seq>,
    after: Option<Seq>,
    limit: u32,
) -> Result<Response, ApiError> {
    let max = s.ctx.config.limits.history_page_max;
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("page limit {limit} is not in 1..={max} (history_page_max)"),
        ));
    }
    let (room, view) = room_for(s, name, Need::Read).await?;
    let last_seq = view.last_seq(room.id);
    let newest = after.is_none();
    if !room.history_kept {
        return Ok(Response::History {
            room: room.name,
            messages: Vec::new(),
            last_seq,
        });
    }
    let messages = view
        .read(
            room.id,
            room.name.clone(),
            after.unwrap_or(Seq::ZERO),
            before.unwrap_or(Seq(u64::MAX)),
            limit as usize,
            newest,
        )
        .await
        .map_err(storage)?;
    Ok(Response::History {
        room: room.name,
        messages,
        last_seq,
    })
}

pub(super) async fn subscribe(
    s: &Session,
    name: &str,
    after: Option<Seq>,
    moderated_after: Option<u64>,
) -> Result<Response, ApiError> {
    let (room, view) = room_for(s, name, Need::Read).await?;
    let (last_seq, moderation) = subscribe_room(s, &room, &view, after, moderated_after).await?;
    Ok(Response::Subscribed {
        room: name.to_string(),
        last_seq,
        moderation,
    })
}

/// Answers the room's last seq and moderation count.
async fn subscribe_room(
    s: &Session,
    room: &RoomRef,
    view: &ShardView,
    after: Option<Seq>,
    moderated_after: Option<u64>,
) -> Result<(Seq, u64), ApiError> {
    // A new subscription to the same room replaces the old one (the actor keys by subscriber id).
    s.rooms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(room.name.clone(), room.id);
    s.ctx
        .fanout
        .subscribe(
            room.id,
            &room.name,
            view,
            s.subscriber.clone(),
            after,
            moderated_after,
        )
        .await
}

/// Search the rooms the user may read (or the one named, if readable), newest first.
pub(super) async fn search(s: &Session, q: stoa_proto::MessageQuery) -> Result<Response, ApiError> {
    let user = s.user_record()?;
    let rooms = match &q.room {
        Some(name) => {
            let (room, view) = room_for(s, name, Need::Read).await?;
            if !room.history_kept {
                return Ok(Response::Found(Vec::new()));
            }
            std::collections::HashMap::from([(room.id, (room.name, view))])
        }
        None => s.ctx.meta.read(|m| {
            m.rooms()
                .filter(|r| m.access(&user, r).read)
                .filter(|r| m.category(&r.category).is_none_or(|c| c.chat_history))
                .filter_map(|r| {
                    let view = s.ctx.shards.get(r.shard as usize - 1)?.clone();
                    Some((r.id, (r.name.clone(), view)))
                })
                .collect()
        }),
    };
    let query = crate::search::MessageQuery {
        text: q.text,
        rooms,
        author: q.author,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        offset: q.offset,
        limit: q.limit,
    };
    s.ctx.search.search(query).await.map(Response::Found)
}

fn storage(e: crate::raft::StorageError) -> ApiError {
    tracing::error!(error = %e, "storage read failed");
    ApiError::new(ErrorCode::Internal, "storage read failed")
}

/// A new random token: 32 bytes from the OS, hex.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

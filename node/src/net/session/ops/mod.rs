//! The client requests: check what the node can check early (limits, access against this node's
//! directory), then read locally or propose to the group that decides.
//!
//! - `messages`: post, join, history, subscribe.
//! - `directory`: users, categories, rooms and roles, groups, policy, settings, add-ins.
//! - `personal`: invitations, followed rooms, read markers.
//! - `moderation`: removing and replacing messages, clearing history (administrators).
//! - `files`: upload and download.
//! - `presence`: a room's roster.

mod directory;
mod files;
mod messages;
mod moderation;
mod personal;
mod presence;

pub(super) use files::Upload;
pub use files::STORED_CHUNK_BYTES;
pub use messages::{new_token, now_ms};

use super::{Session, DIRECTORY_LAG_WAIT};
use crate::domain::meta::{
    MetaCommand, MetaOutcome, MetaState, RoomAccess, RoomRecord, UserRecord,
};
use crate::raft::{Command, CommandResult, GroupId};
use crate::store::sm::ShardView;
use stoa_proto::{ApiError, ErrorCode, Privacy, Request, Response, RoomType};

pub(super) async fn handle(s: &Session, req: Request) -> Result<Response, ApiError> {
    match req {
        Request::Post(p) => messages::post(s, p).await,
        Request::Join { room } => messages::join(s, &room).await,
        Request::History {
            room,
            before,
            after,
            limit,
        } => messages::history(s, &room, before, after, limit).await,
        Request::Subscribe {
            room,
            after,
            moderated_after,
        } => messages::subscribe(s, &room, after, moderated_after).await,
        Request::Unsubscribe { room } => {
            let id = s
                .rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&room);
            if let Some(id) = id {
                s.ctx.fanout.unsubscribe(id, s.subscriber.id);
            }
            Ok(Response::Unsubscribed { room })
        }
        Request::CreateUser { name, admin } => directory::create_user(s, name, admin, None).await,
        Request::CreateUserAt { name, admin, site } => {
            directory::create_user(s, name, admin, site).await
        }
        Request::CreateRoom { name, description } => {
            directory::create_room_legacy(s, name, description).await
        }
        Request::ListRooms => {
            let user = s.user_record()?;
            Ok(Response::Rooms(s.ctx.meta.read(|m| {
                m.rooms()
                    .filter(|r| m.access(&user, r).find)
                    .map(RoomRecord::info)
                    .collect()
            })))
        }
        Request::WhoAmI => Ok(Response::WhoAmI {
            user: s.user.name.clone(),
            admin: s.user.admin,
            node: s.ctx.node,
        }),
        Request::Category(op) => directory::category(s, op).await,
        Request::Room(op) => directory::room(s, op).await,
        Request::Group(op) => directory::group(s, op).await,
        Request::Policy(op) => directory::policy(s, op).await,
        Request::Config(op) => directory::config(s, op).await,
        Request::AddIn(op) => directory::addin(s, op).await,
        Request::SearchMessages(q) => messages::search(s, q).await,
        Request::Invitations => personal::invitations(s).await,
        Request::Follow { room, follow } => personal::follow(s, room, follow).await,
        Request::Followed => personal::followed(s),
        Request::MarkRead { room, seq } => personal::mark_read(s, room, seq).await,
        Request::Moderate(op) => moderation::moderate(s, op).await,
        Request::UploadBegin(b) => files::begin(s, b).await,
        Request::UploadChunk {
            upload,
            offset,
            data,
        } => files::chunk(s, upload, offset, data).await,
        Request::UploadCommit { upload } => files::commit(s, upload).await,
        Request::Download {
            room,
            file_id,
            offset,
            limit,
        } => files::download(s, &room, file_id, offset, limit).await,
        Request::Participants { room } => presence::participants(s, &room).await,
    }
}

/// What a request needs to be allowed to do with a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Read,
    Post,
}

impl Session {
    /// The signed-in user's current record (it may have changed since the hello).
    pub(super) fn user_record(&self) -> Result<UserRecord, ApiError> {
        self.ctx
            .meta
            .read(|m| m.user(&self.user.name).cloned())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    format!("user {} no longer exists", self.user.name),
                )
            })
    }
}

/// What a message request needs to know of a room: cheap to copy, unlike the record with its
/// role lists (cloned per post, those would cost O(members)).
#[derive(Debug, Clone)]
pub(super) struct RoomRef {
    pub id: u64,
    pub name: String,
    pub shard: u32,
    /// The category keeps history for users (`chat_history`); when off, messages are delivered
    /// live and stored (for compliance) but not shown again by join, history or search.
    pub history_kept: bool,
}

/// The room and its shard's view if the user may `need` it. A room the user may not find answers
/// "not found", exactly like a room that does not exist, so secret rooms do not leak. Waits briefly
/// for a room created on another node a moment ago.
pub(super) async fn room_for(
    s: &Session,
    name: &str,
    need: Need,
) -> Result<(RoomRef, ShardView), ApiError> {
    let user = s.user_record()?;
    let found = s
        .ctx
        .meta
        .wait_for(DIRECTORY_LAG_WAIT, |m| {
            let room = m.room(name)?;
            let access = m.access(&user, room);
            let history_kept = m.category(&room.category).is_none_or(|c| c.chat_history);
            let room_ref = RoomRef {
                id: room.id,
                name: room.name.clone(),
                shard: room.shard,
                history_kept,
            };
            access
                .find
                .then(|| (room_ref, refusal(m, &user, room, access, need)))
        })
        .await;
    let (room, refused) =
        found.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {name:?}")))?;
    if let Some(e) = refused {
        return Err(e);
    }
    let view = s
        .ctx
        .shards
        .get(room.shard as usize - 1)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!(
                    "room {name:?} is in shard {} which this node lacks",
                    room.shard
                ),
            )
        })?;
    Ok((room, view))
}

/// Why `need` is refused, or `None` when it is allowed.
fn refusal(
    m: &MetaState,
    user: &UserRecord,
    room: &RoomRecord,
    access: RoomAccess,
    need: Need,
) -> Option<ApiError> {
    let allowed = match need {
        Need::Read => access.read,
        Need::Post => access.post,
    };
    if allowed {
        return None;
    }
    let why = if room.disabled {
        format!("room {:?} is disabled", room.name)
    } else if !m.chat_enabled(user) {
        format!("chat is disabled for {} by policy", user.name)
    } else if !access.read {
        format!(
            "room {:?} is {}: only its members enter",
            room.name, room.privacy
        )
    } else if room.room_type == RoomType::Auditorium {
        format!("only presenters post in auditorium {:?}", room.name)
    } else {
        format!("{} may not post in {:?}", user.name, room.name)
    };
    debug_assert!(room.privacy != Privacy::Secret || access.find);
    Some(ApiError::new(ErrorCode::Forbidden, why))
}

/// Propose a directory change to the meta group and return what applying it answered.
pub(super) async fn meta(s: &Session, cmd: MetaCommand) -> Result<MetaOutcome, ApiError> {
    // Every change is an entry of the one directory group all nodes share: one user must not
    // be able to flood it. Administrators' bulk changes are not limited.
    // The directory as it is now, not as at sign-in: a demoted administrator is limited.
    let admin = s.user_record()?.admin;
    if !admin
        && !s
            .ctx
            .directory_rates
            .take(&s.user.name, std::time::Instant::now())
    {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} directory changes/s by {}; retry shortly",
                s.ctx.config.limits.directory_writes_per_s_per_user_max, s.user.name
            ),
        ));
    }
    let revokes = cmd.may_revoke_access();
    // Answer only once this node's directory shows the change: the client's next request, read
    // here, must see it (the leader may have applied it before this node).
    let (result, index) = s
        .ctx
        .proposals
        .propose_and_see_at(GroupId::META, Command::Meta(cmd))
        .await?;
    let outcome = match result {
        CommandResult::Meta(r) => r?,
        other => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!("unexpected answer {other:?}"),
            ))
        }
    };
    if revokes {
        fence_shards(s, index).await?;
    }
    Ok(outcome)
}

/// Fence every shard at meta index `index`, so no post checked against an older directory is
/// applied from now on (see `shard::decide_post`). Done before the change is acknowledged.
async fn fence_shards(s: &Session, index: u64) -> Result<(), ApiError> {
    let fences = (1..=s.ctx.shards.len() as u32).map(|g| {
        s.ctx
            .proposals
            .propose(GroupId(g), Command::Fence { meta_index: index })
    });
    for (g, r) in (1..).zip(futures::future::join_all(fences).await) {
        if let Err(e) = r {
            return Err(ApiError::new(
                e.code,
                format!(
                    "the change is applied; shard g{g} could not be fenced yet (its leader will do \
                     it when it can), so posts checked before the change may still be accepted \
                     there meanwhile: {}",
                    e.message
                ),
            ));
        }
    }
    Ok(())
}

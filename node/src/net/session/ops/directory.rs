//! Directory requests: reads answer from this node's replica of the meta group; changes are
//! proposed to it and decided at apply time.

use super::{meta, Session};
use crate::domain::meta::{
    shard_for_room, MetaCommand, MetaOutcome, MetaState, RoomRecord, UserRecord,
};
use crate::net::session::token_digest;
use stoa_proto::{
    AddInInfo, AddInOp, ApiError, CategoryInfo, CategoryOp, CategorySpec, ConfigOp, ErrorCode,
    GroupInfo, GroupOp, PolicyInfo, PolicyOp, Response, RoomDetail, RoomFilter, RoomOp,
};

fn done(o: MetaOutcome) -> Response {
    match o {
        MetaOutcome::RoomCreated(info) => Response::RoomCreated(info),
        MetaOutcome::UserCreated { name } => Response::UserCreated {
            name,
            token: String::new(),
        },
        MetaOutcome::Done => Response::Done,
        MetaOutcome::Invitations(rooms) => Response::Invitations(rooms),
    }
}

pub(super) fn require_admin(s: &Session, what: &str) -> Result<(), ApiError> {
    if s.user_record()?.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("only administrators {what}"),
        ))
    }
}

pub(super) async fn create_user(
    s: &Session,
    name: String,
    admin: bool,
    site: Option<String>,
) -> Result<Response, ApiError> {
    require_admin(s, "create users")?;
    let token = super::new_token();
    let cmd = MetaCommand::CreateUserAt {
        by: s.user.name.clone(),
        name,
        admin,
        token_digest: token_digest(&token),
        site,
    };
    match meta(s, cmd).await? {
        MetaOutcome::UserCreated { name } => Ok(Response::UserCreated { name, token }),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected answer {other:?}"),
        )),
    }
}

pub(super) async fn create_room_legacy(
    s: &Session,
    name: String,
    description: String,
) -> Result<Response, ApiError> {
    let shard_count = s.ctx.config.cluster.shards;
    let shard = shard_for_room(&name, shard_count);
    let cmd = MetaCommand::CreateRoom {
        by: s.user.name.clone(),
        name,
        description,
        shard,
        shard_count,
    };
    meta(s, cmd).await.map(done)
}

pub(super) async fn category(s: &Session, op: CategoryOp) -> Result<Response, ApiError> {
    if op == CategoryOp::List {
        let user = s.user_record()?;
        return Ok(Response::Categories(s.ctx.meta.read(|m| {
            m.categories()
                .filter(|c| user.admin || m.in_scope(&user.name, c))
                .map(|c| CategoryInfo {
                    spec: CategorySpec {
                        name: c.name.clone(),
                        description: c.description.clone(),
                        allowed: c.allowed.iter().cloned().collect(),
                        denied: c.denied.iter().cloned().collect(),
                        creators: c.creators.iter().cloned().collect(),
                        file_upload: c.file_upload,
                        invitations: c.invitations,
                        chat_history: c.chat_history,
                    },
                    rooms: m
                        .rooms()
                        .filter(|r| r.category == c.name && m.access(&user, r).find)
                        .count() as u32,
                })
                .collect()
        })));
    }
    meta(
        s,
        MetaCommand::Category {
            by: s.user.name.clone(),
            op,
        },
    )
    .await
    .map(done)
}

pub(super) async fn room(s: &Session, op: RoomOp) -> Result<Response, ApiError> {
    let user = s.user_record()?;
    match op {
        RoomOp::Show { name } => s.ctx.meta.read(|m| {
            m.room(&name)
                .filter(|r| m.access(&user, r).find)
                .map(|r| Response::RoomDetail(detail(m, &user, r)))
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {name:?}")))
        }),
        RoomOp::Search(filter) => Ok(Response::RoomDetails(s.ctx.meta.read(|m| {
            m.rooms()
                .filter(|r| m.access(&user, r).find && matches(r, &filter))
                .map(|r| detail(m, &user, r))
                .collect()
        }))),
        op => {
            let shard_count = s.ctx.config.cluster.shards;
            let shard = match &op {
                RoomOp::Create(spec) => shard_for_room(&spec.name, shard_count),
                _ => 0,
            };
            meta(
                s,
                MetaCommand::Room {
                    by: s.user.name.clone(),
                    op,
                    shard,
                    shard_count,
                },
            )
            .await
            .map(done)
        }
    }
}

/// A room as `user` may see it: role lists only when they may see members.
fn detail(m: &MetaState, user: &UserRecord, r: &RoomRecord) -> RoomDetail {
    let see = m.access(user, r).see_members;
    let list = |set: &std::collections::BTreeSet<String>| {
        if see {
            set.iter().cloned().collect()
        } else {
            Vec::new()
        }
    };
    RoomDetail {
        name: r.name.clone(),
        category: r.category.clone(),
        description: r.description.clone(),
        privacy: r.privacy,
        room_type: r.room_type,
        invitations: r.invitations,
        disabled: r.disabled,
        addin: r.addin.clone(),
        members: list(&r.members),
        managers: list(&r.managers),
        presenters: list(&r.presenters),
    }
}

/// Every given filter matches; text words must all appear in the name or description.
pub(crate) fn matches(r: &RoomRecord, f: &RoomFilter) -> bool {
    let hay = format!("{} {}", r.name, r.description).to_lowercase();
    f.text
        .split_whitespace()
        .all(|w| hay.contains(&w.to_lowercase()))
        && f.category.as_ref().is_none_or(|c| &r.category == c)
        && f.member.as_ref().is_none_or(|u| r.members.contains(u))
        && f.manager.as_ref().is_none_or(|u| r.managers.contains(u))
        && f.privacy.is_none_or(|p| r.privacy == p)
        && f.room_type.is_none_or(|t| r.room_type == t)
        && f.disabled.is_none_or(|d| r.disabled == d)
}

pub(super) async fn group(s: &Session, op: GroupOp) -> Result<Response, ApiError> {
    if op == GroupOp::List {
        require_admin(s, "list groups")?;
        return Ok(Response::Groups(s.ctx.meta.read(|m| {
            m.groups()
                .map(|g| GroupInfo {
                    name: g.name.clone(),
                    members: g.members.iter().cloned().collect(),
                })
                .collect()
        })));
    }
    meta(
        s,
        MetaCommand::Group {
            by: s.user.name.clone(),
            op,
        },
    )
    .await
    .map(done)
}

pub(super) async fn policy(s: &Session, op: PolicyOp) -> Result<Response, ApiError> {
    match op {
        PolicyOp::Show { user } => {
            let me = s.user_record()?;
            if !me.admin && me.name != user {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only administrators see another user's policy",
                ));
            }
            s.ctx.meta.read(|m| {
                let u = m.user(&user).ok_or_else(|| {
                    ApiError::new(ErrorCode::NotFound, format!("no user {user:?}"))
                })?;
                let p = m.policy();
                Ok(Response::Policy(PolicyInfo {
                    user: user.clone(),
                    user_setting: p.users.get(&user).copied(),
                    site: u.site.clone(),
                    site_setting: u.site.as_ref().and_then(|site| p.sites.get(site).copied()),
                    global: p.global,
                    enabled: m.chat_enabled(u),
                }))
            })
        }
        PolicyOp::Set { scope, enabled } => meta(
            s,
            MetaCommand::Policy {
                by: s.user.name.clone(),
                scope,
                enabled,
            },
        )
        .await
        .map(done),
    }
}

pub(super) async fn config(s: &Session, op: ConfigOp) -> Result<Response, ApiError> {
    match op {
        ConfigOp::Show => Ok(Response::Settings(s.ctx.meta.read(|m| m.settings()))),
        ConfigOp::Set(change) => {
            meta(
                s,
                MetaCommand::Settings {
                    by: s.user.name.clone(),
                    change,
                },
            )
            .await?;
            Ok(Response::Settings(s.ctx.meta.read(|m| m.settings())))
        }
    }
}

pub(super) async fn addin(s: &Session, op: AddInOp) -> Result<Response, ApiError> {
    if op == AddInOp::List {
        return Ok(Response::AddIns(s.ctx.meta.read(|m| {
            m.addins()
                .map(|(name, url)| AddInInfo {
                    name: name.clone(),
                    url: url.clone(),
                })
                .collect()
        })));
    }
    meta(
        s,
        MetaCommand::AddIn {
            by: s.user.name.clone(),
            op,
        },
    )
    .await
    .map(done)
}

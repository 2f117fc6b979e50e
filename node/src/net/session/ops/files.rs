//! File upload and download.
//!
//! An upload is announced first ([`UploadBegin`]): size, hash, room and rights are checked, and
//! buffer space is reserved, before any byte is sent. The bytes then arrive in order over the
//! client's stream and are buffered on the receiving node; on commit the node checks size and
//! hash, replicates the file in chunks through the room's shard (one Raft entry per chunk), then
//! posts the message that shows it. Abandoned uploads therefore never reach Raft. Retries are safe:
//! the file id derives from (room, author, client message id), so chunks land on the same keys and
//! the post is applied once.

use super::{room_for, Need, RoomRef, Session};
use crate::domain::shard::{FileChunk, ProposedPost};
use crate::raft::{Command, CommandResult, GroupId};
use bytes::Bytes;
use ring::digest;
use stoa_proto::limits::{CLIENT_MSG_ID_BYTES_MAX, FILE_CHUNK_BYTES_MAX, NAME_CHARS_MAX};
use stoa_proto::{ApiError, ErrorCode, FileRef, Response, UploadBegin};
use tokio::sync::OwnedSemaphorePermit;

/// Uploads one connection may have open at once.
pub(in crate::net::session) const UPLOADS_PER_CONNECTION_MAX: usize = 2;

/// An upload in progress on one connection.
pub(in crate::net::session) struct Upload {
    begin: UploadBegin,
    data: Vec<u8>,
    /// Holds this upload's share of `limits.upload_bytes_in_flight_max` until it ends.
    _reserved: OwnedSemaphorePermit,
}

/// Bytes of one replicated chunk (`FileChunk` entry). Fixed, never derived from a node's
/// configuration: chunks are keyed by index, so every try of an upload, through any node, must cut
/// the file the same way (and `ShardView::read_file` seeks by it).
pub const STORED_CHUNK_BYTES: usize = FILE_CHUNK_BYTES_MAX;

/// Bytes of one upload chunk or download page on the wire: small enough for this node's frame
/// limit.
pub(in crate::net::session) fn chunk_bytes_max(s: &Session) -> usize {
    FILE_CHUNK_BYTES_MAX.min(s.ctx.config.limits.frame_bytes_max / 2)
}

fn invalid(m: String) -> ApiError {
    ApiError::new(ErrorCode::Invalid, m)
}

/// Whether the user may post `size` bytes named `name` in `room` now.
async fn check_upload(s: &Session, b: &UploadBegin) -> Result<RoomRef, ApiError> {
    let (room, _) = room_for(s, &b.room, Need::Post).await?;
    let (uploads_on, max_kb) = s.ctx.meta.read(|m| {
        let on = m
            .room(&room.name)
            .and_then(|r| m.category(&r.category))
            .is_some_and(|c| c.file_upload);
        (on, m.settings().max_file_size_kb)
    });
    if !uploads_on {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the category of {:?} does not allow file uploads",
                room.name
            ),
        ));
    }
    let max = u64::from(max_kb) * 1024;
    if b.size > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "file of {} bytes exceeds max_file_size_kb ({max_kb} KiB)",
                b.size
            ),
        ));
    }
    Ok(room)
}

pub(super) async fn begin(s: &Session, b: UploadBegin) -> Result<Response, ApiError> {
    let name_ok = !b.name.trim().is_empty()
        && b.name.chars().count() <= NAME_CHARS_MAX
        && !b.name.contains(['/', '\\', '\0']);
    if !name_ok {
        return Err(invalid(format!(
            "file name must be 1..={NAME_CHARS_MAX} characters, without path separators"
        )));
    }
    if b.sha256.len() != 64
        || !b
            .sha256
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(invalid("sha256 must be 64 lowercase hex digits".into()));
    }
    if b.client_msg_id.is_empty() || b.client_msg_id.len() > CLIENT_MSG_ID_BYTES_MAX {
        return Err(invalid(format!(
            "client message id must be 1..={CLIENT_MSG_ID_BYTES_MAX} bytes"
        )));
    }
    if b.text.len() > s.ctx.config.limits.message_text_bytes_max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "text exceeds message_text_bytes_max",
        ));
    }
    check_upload(s, &b).await?;
    let kib = u32::try_from(b.size.div_ceil(1024)).unwrap_or(u32::MAX);
    let budget_kib = s.ctx.config.limits.upload_bytes_in_flight_max / 1024;
    if kib as usize > budget_kib {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "file of {} bytes exceeds this node's upload_bytes_in_flight_max ({} bytes)",
                b.size, s.ctx.config.limits.upload_bytes_in_flight_max
            ),
        ));
    }
    let reserved = s
        .ctx
        .upload_budget
        .clone()
        .try_acquire_many_owned(kib)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "this node is buffering as many uploads as it may (upload_bytes_in_flight_max); retry later",
            )
        })?;
    let mut uploads = s.uploads.lock().unwrap_or_else(|e| e.into_inner());
    if uploads.len() >= UPLOADS_PER_CONNECTION_MAX {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("at most {UPLOADS_PER_CONNECTION_MAX} uploads at once per connection"),
        ));
    }
    // Random, so a chunk meant for an upload of a lost connection, resent on a new one, finds no
    // upload rather than someone else's.
    let id = rand::random::<u64>();
    uploads.insert(
        id,
        Upload {
            // Grows as bytes arrive: the reservation bounds it, nothing is allocated up front.
            data: Vec::new(),
            begin: b,
            _reserved: reserved,
        },
    );
    Ok(Response::UploadReady {
        upload: id,
        chunk_bytes_max: chunk_bytes_max(s) as u32,
    })
}

pub(super) async fn chunk(
    s: &Session,
    upload: u64,
    offset: u64,
    data: Bytes,
) -> Result<Response, ApiError> {
    let mut uploads = s.uploads.lock().unwrap_or_else(|e| e.into_inner());
    let Some(u) = uploads.get_mut(&upload) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no upload {upload} on this connection"),
        ));
    };
    let received = u.data.len() as u64;
    let refused = if offset != received {
        Some(invalid(format!(
            "chunk at offset {offset}, expected {received}: send chunks in order, one at a time"
        )))
    } else if data.len() > chunk_bytes_max(s) {
        Some(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "chunk of {} bytes exceeds {}",
                data.len(),
                chunk_bytes_max(s)
            ),
        ))
    } else if received + data.len() as u64 > u.begin.size {
        Some(invalid(format!(
            "more bytes than the {} announced",
            u.begin.size
        )))
    } else {
        None
    };
    if let Some(e) = refused {
        // The upload cannot succeed any more; free its buffer at once.
        uploads.remove(&upload);
        return Err(e);
    }
    if u.data.is_empty() {
        // Exactly the announced size, once bytes come: no doubling beyond the reservation.
        u.data.reserve_exact(u.begin.size as usize);
    }
    u.data.extend_from_slice(&data);
    Ok(Response::UploadReceived {
        bytes: u.data.len() as u64,
    })
}

pub(super) async fn commit(s: &Session, upload: u64) -> Result<Response, ApiError> {
    let u = s
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&upload)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no upload {upload} on this connection"),
            )
        })?;
    let b = &u.begin;
    if u.data.len() as u64 != b.size {
        return Err(invalid(format!(
            "{} of {} bytes received",
            u.data.len(),
            b.size
        )));
    }
    let data = Bytes::from(u.data);
    let hashed = data.clone();
    let sha256 =
        tokio::task::spawn_blocking(move || hex::encode(digest::digest(&digest::SHA256, &hashed)))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("hashing: {e}")))?;
    if sha256 != b.sha256 {
        return Err(invalid(format!(
            "content hash {sha256} differs from the announced {}",
            b.sha256
        )));
    }
    // Rights and settings may have changed while the bytes arrived. Read the directory's
    // version first: a lower bound of what the check sees (see `shard::decide_post`).
    let checked_at = s.ctx.meta.applied_index();
    let room = check_upload(s, b).await?;
    let file = FileRef {
        id: file_id(room.id, &s.user.name, &b.client_msg_id),
        name: b.name.clone(),
        size: b.size,
        sha256,
    };
    let group = GroupId(room.shard);
    for (index, part) in (0u32..).zip(data.chunks(STORED_CHUNK_BYTES)) {
        let cmd = Command::FileChunk(FileChunk {
            room_id: room.id,
            file_id: file.id.clone(),
            index,
            data: data.slice_ref(part),
        });
        match s.ctx.proposals.propose(group, cmd).await? {
            CommandResult::FileChunk(Ok(())) => {}
            // Posted by an earlier try of the same upload: the post below answers its seq.
            CommandResult::FileChunk(Err(e)) if e.code == ErrorCode::AlreadyExists => break,
            CommandResult::FileChunk(Err(e)) => return Err(e),
            other => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("unexpected answer {other:?}"),
                ))
            }
        }
    }
    let proposer = &s.ctx.proposers[room.shard as usize - 1];
    let outcome = proposer
        .post(ProposedPost {
            room_id: room.id,
            room: room.name,
            author: s.user.name.clone(),
            client_msg_id: b.client_msg_id.clone(),
            text: b.text.clone(),
            alert: false,
            ts_ms: super::now_ms(),
            file: Some(file.clone()),
            checked_at,
        })
        .await?;
    Ok(Response::FilePosted {
        seq: outcome.seq,
        ts_ms: outcome.ts_ms,
        file,
    })
}

/// Stable across retries of one upload, distinct across rooms, authors and client message ids.
fn file_id(room_id: u64, author: &str, client_msg_id: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&room_id.to_be_bytes());
    ctx.update(&(author.len() as u32).to_be_bytes());
    ctx.update(author.as_bytes());
    ctx.update(client_msg_id.as_bytes());
    hex::encode(&ctx.finish().as_ref()[..16])
}

pub(super) async fn download(
    s: &Session,
    room: &str,
    file_id: String,
    offset: u64,
    limit: u32,
) -> Result<Response, ApiError> {
    if limit == 0 {
        return Err(invalid("download page of 0 bytes".into()));
    }
    // At most what fits in a frame here; the client asks again from where this page ends.
    let limit = (limit as usize).min(chunk_bytes_max(s));
    let (room, view) = room_for(s, room, Need::Read).await?;
    let storage =
        |e: crate::raft::StorageError| ApiError::new(ErrorCode::Internal, format!("storage: {e}"));
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no file {file_id:?} in {:?}", room.name),
        )
    };
    let (record, message) = view
        .file(room.id, room.name.clone(), file_id.clone())
        .await
        .map_err(storage)?
        .ok_or_else(not_found)?;
    if message.moderated.is_some() || !room.history_kept {
        return Err(not_found());
    }
    if offset > record.file.size {
        return Err(invalid(format!(
            "offset {offset} is beyond the file's {} bytes",
            record.file.size
        )));
    }
    let data = view
        .read_file(room.id, file_id, offset, limit)
        .await
        .map_err(storage)?;
    Ok(Response::FileData {
        file: record.file,
        offset,
        data: Bytes::from(data),
    })
}

//! File upload and download, and moderation.

use crate::session::unexpected;
use crate::{new_client_msg_id, Client, ClientError, Posted, Result};
use bytes::Bytes;
use ring::digest;
use std::time::Instant;
use stoa_proto::limits::FILE_CHUNK_BYTES_MAX;
use stoa_proto::{ApiError, ErrorCode, FileRef, ModerateOp, Request, Response, UploadBegin};

/// SHA-256 of `data`, lowercase hex, as files are identified on the wire.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

impl Client {
    /// Posts a file to `room` with `text`. The node refuses a file that is too large or not
    /// allowed before any byte is sent. On connection loss (an upload lives on one connection), a
    /// timeout or a retryable error, the whole upload is sent again with the same client message
    /// id (so it is posted once) until `retry_deadline`.
    pub async fn upload(
        &self,
        room: &str,
        name: &str,
        data: Bytes,
        text: &str,
    ) -> Result<(Posted, FileRef)> {
        let begin = UploadBegin {
            room: room.to_string(),
            name: name.to_string(),
            size: data.len() as u64,
            sha256: sha256_hex(&data),
            client_msg_id: new_client_msg_id(),
            text: text.to_string(),
        };
        let deadline = Instant::now() + self.shared().cfg.retry_deadline;
        let mut attempt = 0;
        loop {
            let err = match self.upload_once(&begin, &data).await {
                Ok(p) => return Ok(p),
                Err(e) => e,
            };
            let retry = match &err {
                ClientError::ConnectionLost(_) | ClientError::Timeout(_) => true,
                ClientError::Api(e) => e.code.is_retryable(),
                _ => false,
            };
            let now = Instant::now();
            if !retry || now >= deadline {
                return Err(err);
            }
            tracing::debug!(room, name, error = %err, "upload sent again");
            tokio::time::sleep(crate::session::backoff(attempt).min(deadline - now)).await;
            attempt += 1;
        }
    }

    async fn upload_once(&self, begin: &UploadBegin, data: &Bytes) -> Result<(Posted, FileRef)> {
        let (upload, chunk) = match self
            .shared()
            .call(Request::UploadBegin(begin.clone()), None)
            .await?
        {
            Response::UploadReady {
                upload,
                chunk_bytes_max,
            } => (
                upload,
                (chunk_bytes_max as usize).clamp(1, FILE_CHUNK_BYTES_MAX),
            ),
            other => return Err(ClientError::Protocol(unexpected("UploadReady", &other))),
        };
        // One chunk at a time: the node takes them in order, and each answer paces the next.
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + chunk).min(data.len());
            let request = Request::UploadChunk {
                upload,
                offset: offset as u64,
                data: data.slice(offset..end),
            };
            match self.shared().call(request, None).await.map_err(lost)? {
                Response::UploadReceived { .. } => offset = end,
                other => return Err(ClientError::Protocol(unexpected("UploadReceived", &other))),
            }
        }
        match self
            .shared()
            .call(Request::UploadCommit { upload }, None)
            .await
            .map_err(lost)?
        {
            Response::FilePosted { seq, ts_ms, file } => Ok((Posted { seq, ts_ms }, file)),
            other => Err(ClientError::Protocol(unexpected("FilePosted", &other))),
        }
    }

    /// Downloads a file posted in `room` and checks it against its SHA-256; a mismatch is an
    /// error, never returned data.
    pub async fn download(&self, room: &str, file_id: &str) -> Result<(FileRef, Vec<u8>)> {
        let mut data = Vec::new();
        let mut file: Option<FileRef> = None;
        loop {
            let request = Request::Download {
                room: room.to_string(),
                file_id: file_id.to_string(),
                offset: data.len() as u64,
                limit: FILE_CHUNK_BYTES_MAX as u32,
            };
            // The node answers at most its own page size; ask again from where it stopped.
            let (f, page) = match self.shared().call(request, None).await? {
                Response::FileData { file, data, .. } => (file, data),
                other => return Err(ClientError::Protocol(unexpected("FileData", &other))),
            };
            if file.as_ref().is_some_and(|known| *known != f) {
                return Err(ClientError::Protocol(
                    "the file changed during download".into(),
                ));
            }
            let size = f.size;
            file = Some(f);
            data.extend_from_slice(&page);
            if data.len() as u64 >= size || page.is_empty() {
                break;
            }
        }
        let file = file.expect("set by the first page");
        check(&file, data)
    }

    /// Administrators: remove or replace messages, or clear a room's history. Answers how many
    /// messages changed.
    pub async fn moderate(&self, op: ModerateOp) -> Result<u64> {
        match self.shared().call(Request::Moderate(op), None).await? {
            Response::Moderated { messages } => Ok(messages),
            other => Err(ClientError::Protocol(unexpected("Moderated", &other))),
        }
    }
}

/// An upload lives on the connection that began it: when a chunk or the commit went out on a new
/// connection (the SDK resends requests after a reconnect), the node no longer knows the upload.
/// That is a lost connection for [`Client::upload`], which starts again.
fn lost(e: ClientError) -> ClientError {
    match e {
        ClientError::Api(api) if api.code == ErrorCode::NotFound => {
            ClientError::ConnectionLost(format!("upload lost with its connection: {}", api.message))
        }
        other => other,
    }
}

fn check(file: &FileRef, data: Vec<u8>) -> Result<(FileRef, Vec<u8>)> {
    let got = sha256_hex(&data);
    if data.len() as u64 != file.size || got != file.sha256 {
        return Err(ClientError::Api(ApiError::new(
            ErrorCode::Invalid,
            format!(
                "downloaded {} bytes with SHA-256 {got}; the file has {} bytes with SHA-256 {}",
                data.len(),
                file.size,
                file.sha256
            ),
        )));
    }
    Ok((file.clone(), data))
}

//! Durable storage of every Raft group of a node in one sled database.
//!
//! Layout: four trees shared by all groups, every key starting with the group id (see [`keys`]):
//! `log` (entries), `raft` (vote, committed, last purged), `sm` (state machines: applied state,
//! messages, room heads, dedup records, the meta directory) and `snap` (the current snapshot).
//! Log appends are acknowledged to openraft only after a flush; a single [`flusher`] thread serves
//! every group, so concurrent appends share one fsync (group commit). Every sled call runs on the
//! blocking pool, never on an async worker thread.

pub mod flusher;
pub mod keys;
pub mod log;
pub mod sm;

#[cfg(test)]
mod content_tests;
#[cfg(test)]
mod tests;

use crate::raft::StorageError;
use flusher::Flusher;
use openraft::{AnyError, StorageIOError};
use std::path::Path;
use std::sync::Arc;

/// The node's sled database and its trees.
pub struct Store {
    pub(crate) log: sled::Tree,
    pub(crate) raft: sled::Tree,
    pub(crate) sm: sled::Tree,
    pub(crate) snap: sled::Tree,
    pub(crate) flusher: Flusher,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled database at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("storage failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the data directory {path} holds storage format {found}, this build reads format {FORMAT}; start with an empty data directory")]
    Format { path: String, found: u32 },
}

/// The layout of stored values. Bump it when a stored type changes shape: bincode values carry no
/// field names, so an old value would decode into garbage or fail deep inside Raft.
/// Format 2: messages carry moderation and files.
pub const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"stoa-storage-format";

impl Store {
    /// Open with sled's page cache bounded at 64 MiB (tests, tools).
    pub fn open(dir: &Path) -> Result<Arc<Store>, StoreError> {
        Self::open_with_cache(dir, 64 << 20)
    }

    /// Open with sled's page cache bounded at `cache_bytes` (sled's own default is 1 GiB, which
    /// a busy node fills with recently written log entries and messages).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Arc<Store>, StoreError> {
        let path = dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            // Durability comes from explicit flushes; sled's periodic flush only adds latency jitter.
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Store {
            log: db.open_tree("log")?,
            raft: db.open_tree("raft")?,
            sm: db.open_tree("sm")?,
            snap: db.open_tree("snap")?,
            flusher: Flusher::start(db.clone()),
        };
        let found = match db.get(FORMAT_KEY)? {
            Some(v) => v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0),
            // Format 1 did not record itself.
            None if !store.log.is_empty() || !store.raft.is_empty() => 1,
            None => {
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
                FORMAT
            }
        };
        if found != FORMAT {
            return Err(StoreError::Format {
                path: path.display().to_string(),
                found,
            });
        }
        Ok(Arc::new(store))
    }

    /// Flush everything written so far; returns when it is on disk.
    pub async fn flush(&self) -> std::io::Result<()> {
        self.flusher.flush().await
    }
}

/// Run a blocking storage call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StorageIOError::write(AnyError::new(&e)).into()),
    }
}

pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(AnyError::new(&e)).into()
}

pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// Decode a stored value, turning corruption into a storage error that names the key.
pub(crate) fn decode_stored<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
) -> Result<T, StorageError> {
    stoa_proto::decode(value).map_err(|e| {
        read_err(StoreError::Corrupt {
            key: keys::describe(key),
            reason: e.to_string(),
        })
    })
}

pub(crate) fn encode_stored<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    stoa_proto::encode(value).map_err(write_err)
}

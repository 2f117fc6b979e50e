//! Durable storage of every Raft group of a node.
//!
//! - The Raft logs and votes of all groups: one write-ahead log ([`wal`], under `raft-log/`). An
//!   append counts once the WAL's writer has synced it; all groups share its syncs.
//! - The state machines: one sled database (under `db/`), two trees shared by all groups, every
//!   key starting with the group id (see [`keys`]): `sm` (applied state, messages, room heads,
//!   dedup records, the meta directory, files) and `snap` (which file holds the group's current
//!   snapshot). Snapshot data: files under `snapshots/` ([`snapfile`]).
//!   sled is not synced per write: what it loses in a crash is re-applied from the log, and it is
//!   synced before the log forgets anything (purge). Every sled call runs on the blocking pool,
//!   never on an async worker thread.

pub mod keys;
pub mod log;
pub mod sm;
mod snapfile;
pub mod wal;

#[cfg(test)]
mod content_tests;
#[cfg(test)]
mod tests;

use crate::raft::{GroupId, StorageError};
use openraft::{AnyError, StorageIOError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wal::{Wal, WalError, WalOptions};

/// The node's write-ahead log, sled database and trees.
pub struct Store {
    // Declared first so it is dropped first: the log is closed (pending records written, the
    // writer joined) before sled's lock is released and the store can be opened again.
    pub(crate) wal: Wal,
    db: sled::Db,
    pub(crate) sm: sled::Tree,
    pub(crate) snap: sled::Tree,
    /// Snapshot data files (`snapfile`); `snap` names each group's current one.
    pub(crate) snapshots: PathBuf,
    /// How far each group's state machine is in sled, which a purge of the group's log waits for.
    progress: watch::Sender<Progress>,
    /// How long a purge waits for that; zero: not at all (openraft's storage suite purges
    /// entries it never applies).
    purge_waits: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled database at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("storage failed: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("stored value under {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("snapshot files in {path}: {source}")]
    Files {
        path: String,
        source: std::io::Error,
    },
    #[error("the data directory {path} holds storage format {found}, this build reads format {FORMAT}; start with an empty data directory")]
    Format { path: String, found: u32 },
}

/// The layout of stored values. Bump it when a stored type changes shape: bincode values carry no
/// field names, so an old value would decode into garbage or fail deep inside Raft.
/// Format 2: messages carry moderation and files. Format 3: the Raft log left sled for the WAL.
/// Format 4: snapshot data left sled for files of their own.
pub const FORMAT: u32 = 4;
const FORMAT_KEY: &[u8] = b"stoa-storage-format";

/// How long a purge waits for the state machine to hold what it purges (a snapshot being
/// installed); past it the purge fails and the group stops rather than lose entries.
const PURGE_WAITS_MAX: Duration = Duration::from_secs(600);

impl Store {
    /// Open with sled's page cache bounded at 64 MiB (tests, tools).
    pub fn open(dir: &Path) -> Result<Arc<Store>, StoreError> {
        Self::open_with(dir, 64 << 20, WalOptions::default())
    }

    /// Open with sled's page cache bounded at `cache_bytes` (sled's own default is 1 GiB, which
    /// a busy node fills with recently written messages).
    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        wal: WalOptions,
    ) -> Result<Arc<Store>, StoreError> {
        let path = dir.join("db");
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_bytes)
            // sled is synced when the log needs it to be (see the module's notes), not by a timer.
            .flush_every_ms(None);
        let db = open_sled(&config).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let found = match db.get(FORMAT_KEY)? {
            Some(v) => v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0),
            // Format 1 did not record itself.
            None if !db.open_tree("log")?.is_empty() => 1,
            None => {
                db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
                db.flush()?;
                FORMAT
            }
        };
        if found != FORMAT {
            return Err(StoreError::Format {
                path: path.display().to_string(),
                found,
            });
        }
        let snap = db.open_tree("snap")?;
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(|e| snapfile::files_err(&snapshots, e))?;
        snapfile::sweep(&snapshots, &snap)?;
        Ok(Arc::new(Store {
            sm: db.open_tree("sm")?,
            snap,
            snapshots,
            wal: Wal::open(&dir.join("raft-log"), wal)?,
            db,
            progress: watch::Sender::new(Progress::default()),
            purge_waits: PURGE_WAITS_MAX,
        }))
    }

    /// Like [`Store::open`], for openraft's storage suite: purges do not wait for the state
    /// machine, since the suite purges entries it never applies.
    #[cfg(test)]
    pub fn open_for_suite(dir: &Path) -> Result<Arc<Store>, StoreError> {
        let store = Self::open(dir)?;
        let mut store = Arc::into_inner(store).expect("just opened");
        store.purge_waits = Duration::ZERO;
        Ok(Arc::new(store))
    }

    /// Sync sled: returns when everything written to it so far is on disk.
    pub async fn flush(&self) -> std::io::Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(r) => r.map(|_| ()).map_err(std::io::Error::other),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// A group's state machine now holds everything up to `applied` in sled.
    pub(crate) fn note_applied(&self, group: GroupId, applied: Option<u64>) {
        // Counted from 1 so that "nothing applied" is below "entry 0 applied".
        let count = applied.map_or(0, |i| i + 1);
        self.progress.send_if_modified(|p| {
            let at = p.applied.entry(group).or_insert(0);
            let moved = *at < count;
            *at = (*at).max(count);
            moved
        });
    }

    /// A group's state machine failed (it stops): nothing is to be waited for from it.
    pub(crate) fn note_failed(&self, group: GroupId) {
        self.progress.send_modify(|p| {
            p.failed.insert(group);
        });
    }

    /// The node is stopping: purges stop waiting.
    pub fn closing(&self) {
        self.progress.send_modify(|p| p.closing = true);
    }

    /// Wait until a group's state machine holds everything up to `index` in sled.
    pub(crate) async fn state_machine_reached(
        &self,
        group: GroupId,
        index: u64,
    ) -> std::io::Result<()> {
        if self.purge_waits.is_zero() {
            return Ok(());
        }
        let mut rx = self.progress.subscribe();
        let settled = rx.wait_for(|p| {
            p.closing
                || p.failed.contains(&group)
                || p.applied.get(&group).is_some_and(|&n| n > index)
        });
        let outcome = match tokio::time::timeout(self.purge_waits, settled).await {
            Ok(Ok(p)) if p.applied.get(&group).is_some_and(|&n| n > index) => return Ok(()),
            Ok(Ok(p)) if p.closing => "the node is stopping".to_string(),
            Ok(_) => "its state machine failed".to_string(),
            Err(_) => format!(
                "its state machine did not get there within {:?}",
                self.purge_waits
            ),
        };
        Err(std::io::Error::other(format!(
            "{group}: the log keeps entries up to {index}: {outcome}"
        )))
    }
}

/// See [`Store::state_machine_reached`].
#[derive(Debug, Default)]
struct Progress {
    /// Per group: how many entries (indexes 0..n) its state machine holds in sled.
    applied: BTreeMap<GroupId, u64>,
    failed: std::collections::BTreeSet<GroupId>,
    closing: bool,
}

/// How long opening waits for the database's lock. sled frees a closed database's files only
/// once its deferred cleanups run, which other sled work in the process drives: a store closed
/// and opened again in one process (tests, `stoa-node dev` restarts) can find the lock still held
/// for a moment. Another process holding it is refused after this wait.
const LOCK_WAIT: Duration = Duration::from_secs(10);

fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Drop for Store {
    /// Sync sled when the store closes, so a clean stop re-applies nothing, and sled's I/O threads
    /// are done with the files (and the database's lock) by the time the store is gone.
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "could not sync the state machines at close");
        }
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

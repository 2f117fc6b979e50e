//! The Raft log and vote of one group (openraft storage-v2 `RaftLogStorage`).

use super::{blocking, decode_stored, encode_stored, flusher::FlushWaiter, keys, write_err, Store};
use crate::raft::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Cheap to clone; the reader openraft asks for is a clone.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    group: GroupId,
}

impl LogStore {
    pub fn new(store: Arc<Store>, group: GroupId) -> Self {
        LogStore { store, group }
    }

    fn read_raft<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        tag: u8,
    ) -> impl std::future::Future<Output = Result<Option<T>, StorageError>> + Send + 'static {
        let store = self.store.clone();
        let key = keys::raft(self.group, tag);
        blocking(
            move || match store.raft.get(key).map_err(super::read_err)? {
                Some(v) => decode_stored(&key, &v).map(Some),
                None => Ok(None),
            },
        )
    }

    /// Write a value of the `raft` tree and wait until it is flushed.
    async fn write_raft_durably<T: serde::Serialize>(
        &self,
        tag: u8,
        value: &T,
    ) -> Result<(), StorageError> {
        let store = self.store.clone();
        let key = keys::raft(self.group, tag);
        let bytes = encode_stored(value)?;
        blocking(move || store.raft.insert(key, bytes).map(|_| ()).map_err(write_err)).await?;
        self.store.flush().await.map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(keys::log(self.group, *i)),
            Bound::Excluded(i) => Bound::Excluded(keys::log(self.group, *i)),
            Bound::Unbounded => Bound::Included(keys::log(self.group, u64::MAX)),
        };
        let store = self.store.clone();
        let start = Bound::Included(keys::log(self.group, start));
        blocking(move || {
            let mut out = Vec::new();
            for kv in store.log.range::<[u8; 12], _>((start, end)) {
                let (k, v) = kv.map_err(super::read_err)?;
                let entry: Entry = decode_stored(&k, &v)?;
                // Invariant: the key and the entry it holds name the same index.
                if keys::log_index(&k) != Some(entry.log_id.index) {
                    return Err(super::read_err(super::StoreError::Corrupt {
                        key: keys::describe(&k),
                        reason: format!("holds entry {}", entry.log_id),
                    }));
                }
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_raft(keys::LAST_PURGED).await?;
        let store = self.store.clone();
        let group = self.group;
        let last: Option<LogId> = blocking(move || {
            let range = keys::log(group, 0)..=keys::log(group, u64::MAX);
            match store.log.range(range).next_back() {
                Some(kv) => {
                    let (k, v) = kv.map_err(super::read_err)?;
                    let entry: Entry = decode_stored(&k, &v)?;
                    Ok(Some(entry.log_id))
                }
                None => Ok(None),
            }
        })
        .await?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_raft_durably(keys::VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_raft(keys::VOTE).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: a lost committed index is re-learned from the leader; it only speeds restarts.
        let store = self.store.clone();
        let key = keys::raft(self.group, keys::COMMITTED);
        let bytes = encode_stored(&committed)?;
        blocking(move || store.raft.insert(key, bytes).map(|_| ()).map_err(write_err)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_raft::<Option<LogId>>(keys::COMMITTED)
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(
                &keys::log(self.group, entry.get_log_id().index),
                encode_stored(&entry)?,
            );
        }
        let store = self.store.clone();
        blocking(move || {
            store.log.apply_batch(batch).map_err(write_err)?;
            // openraft is told the entries are durable only once the flusher has flushed them.
            store.flusher.after_next_flush(FlushWaiter::Log(callback));
            Ok(())
        })
        .await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let store = self.store.clone();
        let group = self.group;
        blocking(move || {
            remove_range(
                &store.log,
                keys::log(group, log_id.index),
                keys::log(group, u64::MAX),
            )
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first, so a crash in between never leaves a hole before the log.
        self.write_raft_durably(keys::LAST_PURGED, &log_id).await?;
        let store = self.store.clone();
        let group = self.group;
        blocking(move || {
            remove_range(
                &store.log,
                keys::log(group, 0),
                keys::log(group, log_id.index),
            )
        })
        .await
    }
}

/// Remove every key in `from..=to`.
fn remove_range(tree: &sled::Tree, from: [u8; 12], to: [u8; 12]) -> Result<(), StorageError> {
    let mut batch = sled::Batch::default();
    for kv in tree.range(from..=to) {
        let (k, _) = kv.map_err(super::read_err)?;
        batch.remove(k);
    }
    tree.apply_batch(batch).map_err(write_err)
}

//! The Raft log and vote of one group (openraft storage-v2 `RaftLogStorage`), kept in the node's
//! write-ahead log ([`super::wal`]).

use super::wal::{Piece, Waiter, Wal};
use super::{blocking, write_err, Store};
use crate::raft::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
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

    fn wal(&self) -> &Wal {
        &self.store.wal
    }
}

async fn durable(
    rx: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
) -> Result<(), StorageError> {
    match rx.await {
        Ok(r) => r.map_err(write_err),
        Err(_) => Err(write_err(std::io::Error::other("the raft log stopped"))),
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
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let pieces = self.wal().plan_read(self.group, start, end);
        if pieces.iter().all(Piece::is_ready) {
            // Recent entries, the usual case: in memory, no file read.
            return self.wal().load(pieces).map_err(super::read_err);
        }
        let store = self.store.clone();
        blocking(move || store.wal.load(pieces).map_err(super::read_err)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self.wal().log_state(self.group);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        durable(self.wal().save_vote(self.group, *vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal().vote(self.group))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not waited for: a lost committed index is learned again from the leader; it only lets a
        // restart re-apply what the state machine had not yet made durable without waiting.
        self.wal()
            .save_committed(self.group, committed)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal().committed(self.group))
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
        // In memory only: the writer thread writes and syncs, then calls back.
        self.wal()
            .append(
                self.group,
                entries.into_iter().collect(),
                Waiter::Log(callback),
            )
            .map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal()
            .truncate(self.group, log_id.index)
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The state machine is written to sled without syncing (the log can replay it), so before
        // the log forgets entries, sled must hold everything applied from them. After a snapshot
        // install openraft asks for the purge without waiting for the install, so first wait
        // until this group's state machine has applied or installed up to the purge point.
        self.store
            .state_machine_reached(self.group, log_id.index)
            .await
            .map_err(write_err)?;
        self.store.flush().await.map_err(write_err)?;
        durable(self.wal().purge(self.group, log_id)).await?;
        let store = self.store.clone();
        blocking(move || {
            store.wal.delete_dead_segments();
            Ok(())
        })
        .await
    }
}

//! The Raft log of every group of a node: one append-only file set, a write-ahead log.
//!
//! Why not sled: every Raft append must be on disk before it counts, and sled made each of those
//! flushes a trip through its page cache and I/O thread pool (whose every job woke all its
//! threads). Here an append encodes its records into memory and returns; one writer thread takes
//! whatever every group appended since its last turn, writes it with one `write` and makes it
//! durable with one `fdatasync` (group commit), then tells openraft.
//!
//! Files: `NNNNNNNN.wal` segments of [`record`]s. Every segment begins with a `State` record (every
//! group's vote, committed and purge point), so a segment can be deleted once every entry in it
//! is purged. Opening replays the segments in order. At the end of the last one, a record cut
//! short, zeros, or a sound header over a body with a zero sector is a write torn by a crash
//! (never synced, so never acknowledged) and is cut off; anything else that does not read back
//! is corruption and refuses the open.
//!
//! Memory: the position of every live entry, and the recent entries themselves (up to
//! `cache_bytes_per_group`, and always the ones not yet written), so replication reads of fresh
//! entries never touch the files.

mod group;
pub mod record;
mod replay;
#[cfg(test)]
mod tests;
mod writer;

use crate::raft::{Entry, GroupId, LogId, TypeConfig, Vote};
use group::{GroupLog, Loc};
use openraft::storage::LogFlushed;
use record::Record;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// See [`Wal::groups_pinning_segments`]: how many segments' worth of bytes a group must hold on
/// disk before it counts as pinning them.
pub const PINNING_SEGMENTS_MIN: u64 = 2;

#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// A segment is closed and a new one begun once it would grow past this.
    pub segment_bytes: u64,
    pub cache_bytes_per_group: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            cache_bytes_per_group: 8 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("raft log {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("raft log {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
    #[error("{group}: entry {index} would leave a hole in the log (next is {expected})")]
    Hole {
        group: GroupId,
        index: u64,
        expected: u64,
    },
    #[error("cannot encode a log record: {0}")]
    Encode(String),
    #[error("the raft log failed earlier and takes no more writes: {0}")]
    Failed(String),
}

/// Who waits for the next write to be durable.
pub enum Waiter {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

impl Waiter {
    fn complete(self, r: io::Result<()>) {
        match self {
            Waiter::Log(cb) => cb.log_io_completed(r),
            Waiter::Notify(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

pub struct Wal {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
}

struct State {
    groups: BTreeMap<GroupId, GroupLog>,
    /// Every segment that exists, open for reading (and, for the last, appending).
    files: BTreeMap<u32, Arc<File>>,
    /// The segment appends go to, and its length counting bytes not yet written.
    head: u32,
    head_len: u64,
    /// Bytes appended and not yet taken by the writer, by segment, in order.
    pending: Vec<(u32, Vec<u8>)>,
    waiters: Vec<Waiter>,
    /// Everything before this position is written (and synced).
    written: (u32, u64),
    /// Bytes written to each segment that exists.
    sizes: BTreeMap<u32, u64>,
    /// The lowest segment a live entry lies in, as far as the written records say: purges and
    /// truncations still pending do not count, since a crash would bring their entries back.
    durable_live_from: u32,
    /// Set when a write or sync failed: what is on disk is unknown, so no more writes are taken.
    failed: Option<String>,
    stopping: bool,
}

impl Wal {
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal, WalError> {
        let state = replay::open(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(state),
            work: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stoa-wal".into())
                .spawn(move || writer::run(&shared))
                .map_err(|source| WalError::Io {
                    path: dir.display().to_string(),
                    source,
                })?
        };
        Ok(Wal {
            shared,
            writer: Some(writer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Queue `entries` for writing; they are readable at once and `waiter` is completed once they
    /// are durable.
    pub fn append(
        &self,
        group: GroupId,
        entries: Vec<Entry>,
        waiter: Waiter,
    ) -> Result<(), WalError> {
        // Encode outside the lock; positions are given under it.
        let mut bytes = Vec::new();
        let mut lens = Vec::with_capacity(entries.len());
        for entry in &entries {
            let before = bytes.len();
            record::encode_into(&Record::Entry { group, entry }, &mut bytes)
                .map_err(WalError::Encode)?;
            lens.push(bytes.len() - before);
        }
        let mut st = self.lock();
        st.check_writable()?;
        let options = self.shared.options;
        // Entries the purge point already covers are part of the state machine: nothing to keep.
        let purged = st.group(group).purged.map(|p| p.index);
        let skip = entries
            .iter()
            .take_while(|e| purged.is_some_and(|p| e.log_id.index <= p))
            .count();
        // Check the whole batch first, so a refused batch changes nothing.
        let hole = |index: u64, expected: u64| WalError::Hole {
            group,
            index,
            expected,
        };
        if let Some(first) = entries.get(skip) {
            st.group(group)
                .check_push(first.log_id.index)
                .map_err(|h| hole(h.index, h.expected))?;
        }
        for pair in entries.windows(2) {
            let expected = pair[0].log_id.index + 1;
            if pair[1].log_id.index != expected {
                return Err(hole(pair[1].log_id.index, expected));
            }
        }
        let mut at = lens[..skip].iter().sum();
        for (entry, len) in entries.into_iter().zip(lens).skip(skip) {
            let loc = st.reserve(&bytes[at..at + len], &options)?;
            at += len;
            st.group(group).push(entry.log_id, loc, Some(entry));
        }
        st.waiters.push(waiter);
        drop(st);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Record `vote`; the answer comes once it is durable.
    pub fn save_vote(&self, group: GroupId, vote: Vote) -> oneshot::Receiver<io::Result<()>> {
        self.record_then(|st| {
            st.group(group).vote = Some(vote);
            Record::Vote { group, vote }
        })
    }

    /// Record the committed index; not waited for (a lost one is learned again from the leader).
    pub fn save_committed(&self, group: GroupId, committed: Option<LogId>) -> Result<(), WalError> {
        let mut st = self.lock();
        st.check_writable()?;
        st.group(group).committed = committed;
        st.append_record(
            &Record::Committed { group, committed },
            &self.shared.options,
        )?;
        Ok(())
    }

    pub fn truncate(&self, group: GroupId, since: u64) -> Result<(), WalError> {
        let mut st = self.lock();
        st.check_writable()?;
        st.group(group).truncate(since);
        st.append_record(&Record::Truncate { group, since }, &self.shared.options)?;
        Ok(())
    }

    /// Record the purge; the answer comes once it is durable. See [`Wal::delete_dead_segments`].
    pub fn purge(&self, group: GroupId, upto: LogId) -> oneshot::Receiver<io::Result<()>> {
        self.record_then(|st| {
            st.group(group).purge(upto);
            Record::Purge { group, upto }
        })
    }

    /// Change the state, append the record that says so and answer once it is durable.
    fn record_then(
        &self,
        change: impl FnOnce(&mut State) -> Record<&'static Entry>,
    ) -> oneshot::Receiver<io::Result<()>> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if let Err(e) = st.check_writable() {
            let _ = tx.send(Err(io::Error::other(e)));
            return rx;
        }
        let record = change(&mut st);
        match st.append_record(&record, &self.shared.options) {
            Ok(()) => st.waiters.push(Waiter::Notify(tx)),
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e)));
            }
        }
        drop(st);
        self.shared.work.notify_one();
        rx
    }

    /// Delete the segments that hold no live entry and lie before the last written segment
    /// (whose first record, the `State`, is then durable). Blocking: file removal.
    pub fn delete_dead_segments(&self) -> usize {
        let dead: Vec<u32> = {
            let mut st = self.lock();
            let live_from = st.live_from().min(st.durable_live_from);
            let (written_seg, written_off) = st.written;
            let durable_from = if written_off > 0 {
                written_seg
            } else {
                written_seg.saturating_sub(1)
            };
            let bound = live_from.min(durable_from).min(st.head);
            let dead: Vec<u32> = st.files.range(..bound).map(|(id, _)| *id).collect();
            for id in &dead {
                st.files.remove(id);
                st.sizes.remove(id);
            }
            dead
        };
        for id in &dead {
            let path = replay::segment_path(&self.shared.dir, *id);
            // A segment left behind is only disk space: the next open replays it harmlessly.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a dead log segment");
            }
        }
        dead.len()
    }

    pub fn vote(&self, group: GroupId) -> Option<Vote> {
        self.lock().groups.get(&group).and_then(|g| g.vote)
    }

    pub fn committed(&self, group: GroupId) -> Option<LogId> {
        self.lock().groups.get(&group).and_then(|g| g.committed)
    }

    /// (last purged, last) log ids of a group.
    pub fn log_state(&self, group: GroupId) -> (Option<LogId>, Option<LogId>) {
        match self.lock().groups.get(&group) {
            Some(g) => (g.purged, g.last_log_id()),
            None => (None, None),
        }
    }

    /// The entries of `start..end` the log holds: the cached ones at once, the others as places
    /// to read with [`Wal::load`].
    pub fn plan_read(&self, group: GroupId, start: u64, end: u64) -> Vec<Piece> {
        let st = self.lock();
        let Some(g) = st.groups.get(&group) else {
            return Vec::new();
        };
        g.range(start, end)
            .map(|slot| match &slot.entry {
                Some(e) => Piece::Ready(e.clone()),
                None => Piece::OnDisk {
                    file: st.files.get(&slot.loc.seg).cloned(),
                    loc: slot.loc,
                    log_id: slot.log_id,
                    group,
                },
            })
            .collect()
    }

    /// Read what [`Wal::plan_read`] left on disk. Blocking.
    pub fn load(&self, pieces: Vec<Piece>) -> Result<Vec<Entry>, WalError> {
        pieces
            .into_iter()
            .map(|p| p.load(&self.shared.dir))
            .collect()
    }

    /// Groups that keep old segments on disk although they hold little of them: a quiet group's
    /// few live entries pin every segment written since, full of other groups' purged entries.
    /// Compacting such a group (snapshot, then purge) lets those segments go. A group pins when
    /// the segments from its first live entry on hold [`PINNING_SEGMENTS_MIN`] segments' worth
    /// of bytes or more (real bytes: a restart begins a new, small segment) and it holds less
    /// than its share (bytes pinned / groups / 2) of them; busy groups, which wrote most of what
    /// they pin, are left to their own snapshot schedule.
    pub fn groups_pinning_segments(&self) -> Vec<GroupId> {
        let st = self.lock();
        let groups = st.groups.len() as u64;
        let floor = PINNING_SEGMENTS_MIN * self.shared.options.segment_bytes;
        st.groups
            .values()
            .filter(|g| {
                let Some(first) = g.first_segment() else {
                    return false;
                };
                let pinned: u64 = st.sizes.range(first..).map(|(_, n)| n).sum();
                pinned >= floor && g.live_bytes() * groups * 2 < pinned
            })
            .map(|g| g.group)
            .collect()
    }

    /// Bytes of entries held in memory, all groups.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().groups.values().map(|g| g.cached_bytes()).sum()
    }
}

impl Drop for Wal {
    /// Write what is pending, then stop the writer.
    fn drop(&mut self) {
        self.lock().stopping = true;
        self.shared.work.notify_one();
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

/// One entry of a read: in memory, or where to read it.
pub enum Piece {
    Ready(Arc<Entry>),
    OnDisk {
        file: Option<Arc<File>>,
        loc: Loc,
        log_id: LogId,
        group: GroupId,
    },
}

impl Piece {
    pub fn is_ready(&self) -> bool {
        matches!(self, Piece::Ready(_))
    }

    fn load(self, dir: &Path) -> Result<Entry, WalError> {
        let (file, loc, log_id, group) = match self {
            // Copied here, outside the log's lock; usually the log still holds it too.
            Piece::Ready(e) => return Ok(Arc::unwrap_or_clone(e)),
            Piece::OnDisk {
                file,
                loc,
                log_id,
                group,
            } => (file, loc, log_id, group),
        };
        let corrupt = |reason: String| WalError::Corrupt {
            path: replay::segment_path(dir, loc.seg).display().to_string(),
            offset: loc.offset,
            reason,
        };
        let file = file.ok_or_else(|| corrupt("the segment is gone".into()))?;
        match record::read_at(&file, loc.offset, loc.len as usize).map_err(corrupt)? {
            Record::Entry { group: g, entry } if g == group && entry.log_id == log_id => Ok(entry),
            other => Err(corrupt(format!(
                "expected entry {log_id} of {group}, found {other:?}"
            ))),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves no half-done change behind (each change is checked
        // before it is made), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The lowest segment a live entry lies in (`u32::MAX` if none).
    fn live_from(&self) -> u32 {
        self.groups
            .values()
            .filter_map(|g| g.first_segment())
            .min()
            .unwrap_or(u32::MAX)
    }

    fn group(&mut self, group: GroupId) -> &mut GroupLog {
        self.groups
            .entry(group)
            .or_insert_with(|| GroupLog::new(group))
    }

    fn check_writable(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(why) => Err(WalError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn append_record(
        &mut self,
        record: &Record<&Entry>,
        options: &WalOptions,
    ) -> Result<(), WalError> {
        let mut bytes = Vec::new();
        record::encode_into(record, &mut bytes).map_err(WalError::Encode)?;
        self.reserve(&bytes, options)?;
        Ok(())
    }

    /// Give `record` (encoded, header included) its place, beginning a new segment first if this
    /// one is full.
    fn reserve(&mut self, record: &[u8], options: &WalOptions) -> Result<Loc, WalError> {
        if self.head_len > 0 && self.head_len + record.len() as u64 > options.segment_bytes {
            self.begin_segment(self.head + 1)?;
        }
        let loc = Loc {
            seg: self.head,
            offset: self.head_len,
            len: record.len() as u32,
        };
        self.head_len += record.len() as u64;
        match self.pending.last_mut() {
            Some((seg, buf)) if *seg == self.head => buf.extend_from_slice(record),
            _ => self.pending.push((self.head, record.to_vec())),
        }
        Ok(loc)
    }

    /// Begin segment `id` with the `State` record.
    fn begin_segment(&mut self, id: u32) -> Result<(), WalError> {
        let states = self.groups.values().map(|g| g.state()).collect();
        let mut bytes = Vec::new();
        record::encode_into(&Record::State(states), &mut bytes).map_err(WalError::Encode)?;
        self.head = id;
        self.head_len = bytes.len() as u64;
        self.pending.push((id, bytes));
        Ok(())
    }
}

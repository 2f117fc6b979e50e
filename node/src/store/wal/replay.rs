//! Opening the log: read every segment in order and rebuild each group's log, then begin a new
//! segment for this run's appends.

use super::group::{GroupLog, Loc};
use super::record::{self, Bad, Record, HEADER_BYTES};
use super::{State, WalError};
use crate::raft::{Entry, GroupId};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Segment names have eight digits.
const MAX_SEGMENT_ID: u32 = 99_999_999;

pub fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.wal"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The segment ids in `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<u32>, WalError> {
    let mut ids = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let name = item.map_err(io_err(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Rebuild the log from `dir` (created if missing).
pub(super) fn open(dir: &Path) -> Result<State, WalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ids = segments(dir)?;
    let mut replay = Replay::default();
    let mut files = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    let mut written = (0, 0);
    for (n, &id) in ids.iter().enumerate() {
        let path = segment_path(dir, id);
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        let end = replay.segment(id, &data, n + 1 == ids.len(), &path)?;
        if end < data.len() {
            // A write torn by a crash: it was never synced, so never acknowledged. Cut it off so
            // the segment reads back whole next time.
            tracing::warn!(
                path = %path.display(),
                kept = end,
                dropped = data.len() - end,
                "cutting a torn write off the end of the raft log"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(end as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        let file = File::open(&path).map_err(io_err(&path))?;
        files.insert(id, Arc::new(file));
        sizes.insert(id, end as u64);
        written = (id, end as u64);
    }
    let groups = replay.finish(dir)?;
    let mut state = State {
        groups,
        files,
        head: 0,
        head_len: 0,
        pending: Vec::new(),
        waiters: Vec::new(),
        written,
        sizes,
        durable_live_from: 0,
        failed: None,
        stopping: false,
    };
    // Everything replayed is on disk.
    state.durable_live_from = state.live_from();
    // Every run appends to a segment of its own, which begins with the state just rebuilt.
    let next = match ids.last() {
        None => 1,
        Some(&id) if id < MAX_SEGMENT_ID => id + 1,
        Some(_) => {
            return Err(WalError::Corrupt {
                path: dir.display().to_string(),
                offset: 0,
                reason: "segment numbers are used up".into(),
            })
        }
    };
    state.begin_segment(next)?;
    Ok(state)
}

#[derive(Default)]
struct Replay {
    groups: BTreeMap<GroupId, GroupLog>,
}

impl Replay {
    /// Replay one segment; answers where its readable records end.
    fn segment(
        &mut self,
        id: u32,
        data: &[u8],
        last: bool,
        path: &Path,
    ) -> Result<usize, WalError> {
        let corrupt = |offset: usize, reason: String| WalError::Corrupt {
            path: path.display().to_string(),
            offset: offset as u64,
            reason,
        };
        let mut at = 0;
        while at < data.len() {
            match record::decode(&data[at..]) {
                Ok((rec, len)) => {
                    let loc = Loc {
                        seg: id,
                        offset: at as u64,
                        len: len as u32,
                    };
                    self.apply(rec, loc);
                    at += len;
                }
                // Only the end of the last segment can hold a write that was cut short (or,
                // on some file systems, zeros where it should have been).
                Err(Bad::Short) if last => return Ok(at),
                Err(Bad::Garbled(_)) if last && data[at..].iter().all(|b| *b == 0) => {
                    return Ok(at)
                }
                // A write torn by a crash can also leave a sound header over a body some of whose
                // sectors never reached the disk (zeros).
                Err(Bad::Body { len }) if last && has_zero_sector(data, at, HEADER_BYTES + len) => {
                    return Ok(at)
                }
                Err(Bad::Short) => return Err(corrupt(at, "a record is cut short".into())),
                Err(Bad::Garbled(why)) => return Err(corrupt(at, why)),
                Err(Bad::Body { .. }) => return Err(corrupt(at, "checksum mismatch".into())),
            }
        }
        Ok(at)
    }

    fn group(&mut self, g: GroupId) -> &mut GroupLog {
        self.groups.entry(g).or_insert_with(|| GroupLog::new(g))
    }

    fn apply(&mut self, rec: Record<Entry>, loc: Loc) {
        match rec {
            Record::State(states) => {
                for s in states {
                    self.group(s.group).set_state(&s);
                }
            }
            Record::Entry { group, entry } => {
                let index = entry.log_id.index;
                let log = self.group(group);
                if log.purged.is_some_and(|p| index <= p.index) {
                    return; // purged since; its segment just has not been deleted yet
                }
                if log.check_push(index).is_err() {
                    // Entries before it lay in deleted segments: they were dead then, and a later
                    // purge record says so. `finish` checks that one did.
                    log.truncate(0);
                }
                log.push(entry.log_id, loc, None);
            }
            Record::Truncate { group, since } => self.group(group).truncate(since),
            Record::Purge { group, upto } => self.group(group).purge(upto),
            Record::Vote { group, vote } => self.group(group).vote = Some(vote),
            Record::Committed { group, committed } => self.group(group).committed = committed,
        }
    }

    /// Every group's log must begin right after its purge point, or, never purged, at index 0
    /// (where openraft begins every log).
    fn finish(self, dir: &Path) -> Result<BTreeMap<GroupId, GroupLog>, WalError> {
        for (g, log) in &self.groups {
            let Some(first) = log.first_index() else {
                continue;
            };
            let expected = log.purged.map_or(0, |p| p.index + 1);
            if first != expected {
                return Err(WalError::Corrupt {
                    path: dir.display().to_string(),
                    offset: 0,
                    reason: format!(
                        "{g}: the log begins at {first}, entries from {expected} are missing"
                    ),
                });
            }
        }
        Ok(self.groups)
    }
}

/// Whether the bytes `at..at + len` (as far as the file goes), cut at 512-byte boundaries of the
/// file, hold a piece that is all zeros: a sector that was never written.
fn has_zero_sector(data: &[u8], at: usize, len: usize) -> bool {
    const SECTOR: usize = 512;
    let end = (at + len).min(data.len());
    let mut from = at;
    while from < end {
        let to = ((from / SECTOR + 1) * SECTOR).min(end);
        if data[from..to].iter().all(|b| *b == 0) {
            return true;
        }
        from = to;
    }
    false
}

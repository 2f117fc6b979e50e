//! One group's log in memory: where each live entry lies in the files, the most recent entries
//! themselves, and the group's vote, committed and purge point. Pure: replay and live appends
//! go through the same rules.

use super::record::GroupState;
use crate::raft::{Entry, GroupId, LogId, Vote};
use std::collections::VecDeque;
use std::sync::Arc;

/// Where a record lies: segment, offset, length (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub seg: u32,
    pub offset: u64,
    pub len: u32,
}

impl Loc {
    /// The position just after the record.
    pub fn end(&self) -> (u32, u64) {
        (self.seg, self.offset + self.len as u64)
    }
}

#[derive(Debug)]
pub struct Slot {
    pub log_id: LogId,
    pub loc: Loc,
    /// Kept while the entry is recent (and always until it is written), so replication reads
    /// of fresh entries never touch the files. Shared, so a read takes it out from under the
    /// log's lock without copying it there.
    pub entry: Option<Arc<Entry>>,
}

#[derive(Debug)]
pub struct GroupLog {
    pub group: GroupId,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    /// Live entries, consecutive by index.
    pub slots: VecDeque<Slot>,
    /// `slots[cached_from..]` hold their entry; bytes of those entries (as stored).
    cached_from: usize,
    cached_bytes: u64,
    /// Bytes of all live entries (as stored).
    live_bytes: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Hole {
    pub index: u64,
    pub expected: u64,
}

impl GroupLog {
    pub fn new(group: GroupId) -> Self {
        GroupLog {
            group,
            vote: None,
            committed: None,
            purged: None,
            slots: VecDeque::new(),
            cached_from: 0,
            cached_bytes: 0,
            live_bytes: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        GroupState {
            group: self.group,
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
        }
    }

    pub fn set_state(&mut self, s: &GroupState) {
        self.vote = s.vote;
        self.committed = s.committed;
        if let Some(purged) = s.purged {
            self.purge(purged);
        }
    }

    pub fn first_index(&self) -> Option<u64> {
        self.slots.front().map(|s| s.log_id.index)
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.slots.back().map(|s| s.log_id).or(self.purged)
    }

    /// The index the next entry must have, if the log constrains it.
    fn expected_next(&self) -> Option<u64> {
        match (self.slots.back(), self.purged) {
            (Some(last), _) => Some(last.log_id.index + 1),
            (None, Some(p)) => Some(p.index + 1),
            (None, None) => None,
        }
    }

    /// Whether an entry at `index` may be pushed: it continues the log or replaces a suffix.
    pub fn check_push(&self, index: u64) -> Result<(), Hole> {
        let below_purge = self.purged.is_some_and(|p| index <= p.index);
        match self.expected_next() {
            Some(expected) if index > expected || below_purge => Err(Hole { index, expected }),
            _ => Ok(()),
        }
    }

    /// Push an entry (checked with [`GroupLog::check_push`]); one at an index the log already
    /// holds replaces that entry and every later one.
    pub fn push(&mut self, log_id: LogId, loc: Loc, entry: Option<Entry>) {
        let entry = entry.map(Arc::new);
        self.truncate(log_id.index);
        if entry.is_some() {
            self.cached_bytes += loc.len as u64;
        } else {
            // Replay pushes without the entry: the cache must stay a suffix of the log.
            for s in self.slots.iter_mut().skip(self.cached_from) {
                s.entry = None;
            }
            self.cached_bytes = 0;
            self.cached_from = self.slots.len() + 1;
        }
        self.live_bytes += loc.len as u64;
        self.slots.push_back(Slot { log_id, loc, entry });
    }

    /// Remove entries from `since` on.
    pub fn truncate(&mut self, since: u64) {
        while let Some(last) = self.slots.back() {
            if last.log_id.index < since {
                break;
            }
            let slot = self.slots.pop_back().expect("just looked");
            self.live_bytes -= slot.loc.len as u64;
            if slot.entry.is_some() {
                self.cached_bytes -= slot.loc.len as u64;
            }
        }
        self.cached_from = self.cached_from.min(self.slots.len());
    }

    /// Remove entries up to `upto` and start the log after it.
    pub fn purge(&mut self, upto: LogId) {
        if self.purged >= Some(upto) {
            return;
        }
        self.purged = Some(upto);
        while let Some(first) = self.slots.front() {
            if first.log_id.index > upto.index {
                break;
            }
            let slot = self.slots.pop_front().expect("just looked");
            self.live_bytes -= slot.loc.len as u64;
            if slot.entry.is_some() {
                self.cached_bytes -= slot.loc.len as u64;
            }
            self.cached_from = self.cached_from.saturating_sub(1);
        }
    }

    /// Drop cached entries, oldest first, while the cache is over `budget` bytes; only entries
    /// written before `written` may go.
    pub fn evict(&mut self, budget: u64, written: (u32, u64)) {
        while self.cached_bytes > budget && self.cached_from < self.slots.len() {
            let slot = &mut self.slots[self.cached_from];
            if slot.loc.end() > written {
                break;
            }
            slot.entry = None;
            self.cached_bytes -= slot.loc.len as u64;
            self.cached_from += 1;
        }
    }

    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The slots of indexes in `start..end` that the log holds.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = &Slot> {
        let first = self.first_index().unwrap_or(0);
        let skip = start.saturating_sub(first) as usize;
        let take = end.saturating_sub(first.max(start)) as usize;
        self.slots.iter().skip(skip).take(take)
    }

    /// The lowest segment a live entry lies in.
    pub fn first_segment(&self) -> Option<u32> {
        self.slots.front().map(|s| s.loc.seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn loc(n: u64) -> Loc {
        Loc {
            seg: 1,
            offset: n * 100,
            len: 100,
        }
    }

    fn push(g: &mut GroupLog, term: u64, index: u64, cached: bool) {
        g.check_push(index).unwrap();
        g.push(
            id(term, index),
            loc(index),
            cached.then(|| entry(term, index)),
        );
    }

    fn indexes(g: &GroupLog) -> Vec<u64> {
        g.slots.iter().map(|s| s.log_id.index).collect()
    }

    #[test]
    fn entries_continue_or_replace_a_suffix_never_leave_a_hole() {
        let mut g = GroupLog::new(GroupId(1));
        for i in 3..=6 {
            push(&mut g, 1, i, true);
        }
        assert_eq!(
            g.check_push(8),
            Err(Hole {
                index: 8,
                expected: 7
            })
        );
        push(&mut g, 2, 5, true);
        assert_eq!(indexes(&g), vec![3, 4, 5]);
        assert_eq!(g.last_log_id(), Some(id(2, 5)));
        assert_eq!(g.cached_bytes(), 300);
        assert_eq!(g.live_bytes(), 300);
        g.purge(id(1, 4));
        assert_eq!(g.live_bytes(), 100);
        assert_eq!(indexes(&g), vec![5]);
        assert_eq!(
            g.check_push(4),
            Err(Hole {
                index: 4,
                expected: 6
            })
        );
        g.purge(id(2, 9));
        assert!(g.slots.is_empty());
        assert_eq!(g.last_log_id(), Some(id(2, 9)));
        assert_eq!(
            g.check_push(11),
            Err(Hole {
                index: 11,
                expected: 10
            })
        );
        push(&mut g, 2, 10, true);
        assert_eq!(g.cached_bytes(), 100);
    }

    #[test]
    fn eviction_keeps_unwritten_and_recent_entries() {
        let mut g = GroupLog::new(GroupId(1));
        for i in 1..=10 {
            push(&mut g, 1, i, true);
        }
        // Written up to the end of entry 4 (offset 500); budget of three entries.
        g.evict(300, (1, 500));
        assert_eq!(g.cached_bytes(), 600);
        assert!(g.slots[3].entry.is_none() && g.slots[4].entry.is_some());
        g.evict(300, (1, 1100));
        assert_eq!(g.cached_bytes(), 300);
        let cached: Vec<u64> = g
            .slots
            .iter()
            .filter(|s| s.entry.is_some())
            .map(|s| s.log_id.index)
            .collect();
        assert_eq!(cached, vec![8, 9, 10]);
        assert_eq!(
            g.range(7, 9).map(|s| s.log_id.index).collect::<Vec<_>>(),
            vec![7, 8]
        );
        assert_eq!(g.range(0, 100).count(), 10);
        assert_eq!(g.range(11, 100).count(), 0);
        g.truncate(9);
        assert_eq!(g.cached_bytes(), 100);
        g.purge(id(1, 8));
        assert_eq!(g.cached_bytes(), 0);
        assert!(g.slots.is_empty());
    }

    #[test]
    fn replayed_entries_are_not_cached_and_new_ones_after_them_are() {
        let mut g = GroupLog::new(GroupId(1));
        push(&mut g, 1, 1, false);
        push(&mut g, 1, 2, true);
        assert!(g.slots[1].entry.is_some());
        assert_eq!(g.cached_bytes(), 100);
    }
}

//! Presence rules, free of I/O: who is connected to which room, cluster-wide, and what a room's live
//! connections are told about it.
//!
//! Each node knows its own participants (users with live delivery of a room on it) and tells its
//! peers: a [`Report`] is either the node's whole roster at a version (`Full`) or the changes after
//! a version the peer already has (`Delta`; an empty one is the periodic heartbeat). A receiver
//! applies a delta only on top of exactly the version it extends, from the same incarnation (run)
//! of the sender; otherwise it answers [`Ack::NeedFull`] and the sender sends its whole roster. A
//! peer not heard from for `expiry_ms` is dropped with its participants ([`Presence::expire`]), so a
//! stopped or partitioned node leaves no ghosts; a restarted node has a new incarnation, and its
//! first full roster replaces whatever its previous run had reported.
//!
//! Peer input is untrusted: names are checked like user names, and a peer's roster is bounded in
//! entries; a report over the bounds is refused whole and the peer's roster dropped.
//!
//! [`changes`] and [`first_event`] decide what a room's live connections see as the roster moves:
//! join and leave updates while the room has at most `participant_update_limit` participants, one
//! notice when it goes above, the full roster again when it comes back.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use stoa_proto::limits::NAME_CHARS_MAX;
use stoa_proto::{Roster, RosterChange};

pub type RoomId = u64;

/// Bounds of the presence state. `entries_per_node_max` and `report_bytes_max` bound what one
/// peer may make this node hold; `journal_max` bounds the changes kept for deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceLimits {
    /// (room, user) entries accepted from one peer, and sent in one full report.
    pub entries_per_node_max: usize,
    /// Bytes of names in one report this node sends (a full report beyond it is cut).
    pub report_bytes_max: usize,
    /// A peer not heard from for this long is dropped with its participants, in milliseconds.
    pub expiry_ms: u64,
    /// Local changes kept to send as deltas; a peer further behind gets a full report.
    pub journal_max: usize,
}

/// One change of a node's participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub room: RoomId,
    pub user: String,
    /// Joined (true) or left (false).
    pub present: bool,
}

/// What one node tells another about its participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The sender's run: it changes when the node restarts, so a new run starts over.
    pub incarnation: u64,
    pub body: ReportBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportBody {
    /// Every participant of the sender at `version`, by room.
    Full {
        version: u64,
        rooms: Vec<(RoomId, Vec<String>)>,
    },
    /// The sender's changes after `after`, in order: version `after + 1` onwards. Empty: a
    /// heartbeat.
    Delta { after: u64, changes: Vec<Change> },
}

/// How a receiver took a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    Applied,
    /// The delta does not extend what the receiver has: send a full report.
    NeedFull,
    /// The report breaks a bound; the receiver dropped the sender's roster.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("node {0} reports presence to itself")]
    FromSelf(u64),
    #[error("{entries} presence entries exceed entries_per_node_max ({max})")]
    TooManyEntries { entries: usize, max: usize },
    #[error("user name of {chars} characters in a presence report is not in 1..={max}")]
    BadName { chars: usize, max: usize },
    #[error("incarnation {got} is older than {have}, the one already known")]
    StaleIncarnation { got: u64, have: u64 },
}

/// A peer's participants as last reported.
#[derive(Debug)]
struct PeerRoster {
    incarnation: u64,
    version: u64,
    heard_ms: u64,
    rooms: HashMap<RoomId, HashSet<String>>,
    entries: usize,
}

/// This node's view of every node's participants.
#[derive(Debug)]
pub struct Presence {
    me: u64,
    incarnation: u64,
    limits: PresenceLimits,
    local: HashMap<RoomId, HashSet<String>>,
    local_entries: usize,
    /// Version of `local`: one more per change.
    version: u64,
    /// The last changes of `local`, with the version each one made.
    journal: VecDeque<(u64, Change)>,
    peers: HashMap<u64, PeerRoster>,
    /// Cluster-wide: room → user → number of nodes (this one included) reporting them.
    merged: HashMap<RoomId, HashMap<String, u32>>,
}

impl Presence {
    pub fn new(me: u64, incarnation: u64, limits: PresenceLimits) -> Presence {
        Presence {
            me,
            incarnation,
            limits,
            local: HashMap::new(),
            local_entries: 0,
            version: 0,
            journal: VecDeque::new(),
            peers: HashMap::new(),
            merged: HashMap::new(),
        }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// `user` has live delivery of `room` on this node. Returns whether the room's roster changed
    /// (the user was not connected to it on any node).
    pub fn local_join(&mut self, room: RoomId, user: &str) -> bool {
        if !self.local.entry(room).or_default().insert(user.to_string()) {
            return false;
        }
        self.local_entries += 1;
        self.record(room, user, true);
        add(&mut self.merged, room, user)
    }

    /// `user` no longer has live delivery of `room` on this node. Returns whether the room's
    /// roster changed (the user is not connected to it on another node).
    pub fn local_leave(&mut self, room: RoomId, user: &str) -> bool {
        let Some(users) = self.local.get_mut(&room) else {
            return false;
        };
        if !users.remove(user) {
            return false;
        }
        if users.is_empty() {
            self.local.remove(&room);
        }
        self.local_entries -= 1;
        self.record(room, user, false);
        remove(&mut self.merged, room, user)
    }

    fn record(&mut self, room: RoomId, user: &str, present: bool) {
        self.version += 1;
        self.journal.push_back((
            self.version,
            Change {
                room,
                user: user.to_string(),
                present,
            },
        ));
        while self.journal.len() > self.limits.journal_max {
            self.journal.pop_front();
        }
    }

    /// What to send a peer that has this node's roster at `acked` (`None`: nothing known): the
    /// changes since then, or the whole roster if they are no longer kept.
    pub fn report_for(&self, acked: Option<u64>) -> Report {
        let body = match acked {
            Some(v) if v == self.version => ReportBody::Delta {
                after: v,
                changes: Vec::new(),
            },
            Some(v)
                if v < self.version && self.journal.front().is_some_and(|(f, _)| *f <= v + 1) =>
            {
                let changes: Vec<Change> = self
                    .journal
                    .iter()
                    .filter(|(n, _)| *n > v)
                    .map(|(_, c)| c.clone())
                    .collect();
                if self.fits(changes.iter().map(|c| c.user.len())) {
                    ReportBody::Delta { after: v, changes }
                } else {
                    self.full()
                }
            }
            _ => self.full(),
        };
        Report {
            incarnation: self.incarnation,
            body,
        }
    }

    fn fits(&self, names: impl Iterator<Item = usize>) -> bool {
        let mut bytes = 0usize;
        for (i, len) in names.enumerate() {
            bytes = bytes.saturating_add(len + ENTRY_OVERHEAD_BYTES);
            if i >= self.limits.entries_per_node_max || bytes > self.limits.report_bytes_max {
                return false;
            }
        }
        true
    }

    /// The whole local roster, cut (rooms in id order, names in order) at the report bounds: a
    /// node with more participants than a peer accepts shows them only in part.
    fn full(&self) -> ReportBody {
        let mut room_ids: Vec<RoomId> = self.local.keys().copied().collect();
        room_ids.sort_unstable();
        let (mut entries, mut bytes) = (0usize, 0usize);
        let mut rooms = Vec::new();
        'rooms: for id in room_ids {
            let mut names: Vec<&String> = self.local[&id].iter().collect();
            names.sort_unstable();
            let mut kept = Vec::new();
            for n in names {
                bytes += n.len() + ENTRY_OVERHEAD_BYTES;
                if entries >= self.limits.entries_per_node_max
                    || bytes > self.limits.report_bytes_max
                {
                    if !kept.is_empty() {
                        rooms.push((id, kept));
                    }
                    break 'rooms;
                }
                entries += 1;
                kept.push(n.clone());
            }
            rooms.push((id, kept));
        }
        ReportBody::Full {
            version: self.version,
            rooms,
        }
    }

    /// Take a report from peer `from` at time `now_ms`. Answers how it was taken and the rooms
    /// whose roster changed.
    pub fn receive(&mut self, from: u64, report: Report, now_ms: u64) -> (Ack, Vec<RoomId>) {
        match self.try_receive(from, report, now_ms) {
            Ok(r) => r,
            Err(e) => {
                let changed = self.drop_peer(from);
                (Ack::Refused(e.to_string()), changed)
            }
        }
    }

    fn try_receive(
        &mut self,
        from: u64,
        report: Report,
        now_ms: u64,
    ) -> Result<(Ack, Vec<RoomId>), PresenceError> {
        if from == self.me {
            return Err(PresenceError::FromSelf(from));
        }
        let known = self.peers.get(&from);
        match report.body {
            ReportBody::Full { version, rooms } => {
                if let Some(p) = known {
                    if report.incarnation < p.incarnation {
                        return Err(PresenceError::StaleIncarnation {
                            got: report.incarnation,
                            have: p.incarnation,
                        });
                    }
                }
                let max = self.limits.entries_per_node_max;
                let mut new: HashMap<RoomId, HashSet<String>> = HashMap::new();
                let mut entries = 0usize;
                for (room, names) in rooms {
                    for name in names {
                        check_name(&name)?;
                        if new.entry(room).or_default().insert(name) {
                            entries += 1;
                            if entries > max {
                                return Err(PresenceError::TooManyEntries { entries, max });
                            }
                        }
                    }
                }
                new.retain(|_, users| !users.is_empty());
                let mut changed = self.drop_peer(from);
                for (room, users) in &new {
                    for user in users {
                        if add(&mut self.merged, *room, user) {
                            changed.push(*room);
                        }
                    }
                }
                self.peers.insert(
                    from,
                    PeerRoster {
                        incarnation: report.incarnation,
                        version,
                        heard_ms: now_ms,
                        rooms: new,
                        entries,
                    },
                );
                Ok((Ack::Applied, dedup(changed)))
            }
            ReportBody::Delta { after, changes } => {
                let Some(p) = self.peers.get_mut(&from) else {
                    return Ok((Ack::NeedFull, Vec::new()));
                };
                if p.incarnation != report.incarnation || p.version != after {
                    return Ok((Ack::NeedFull, Vec::new()));
                }
                for c in &changes {
                    check_name(&c.user)?;
                }
                let max = self.limits.entries_per_node_max;
                let mut changed = Vec::new();
                for c in changes {
                    p.version += 1;
                    if c.present {
                        let users = p.rooms.entry(c.room).or_default();
                        if users.contains(&c.user) {
                            continue;
                        }
                        if p.entries >= max {
                            // Checked before inserting: dropping the peer then undoes exactly
                            // what was merged.
                            return Err(PresenceError::TooManyEntries {
                                entries: p.entries + 1,
                                max,
                            });
                        }
                        users.insert(c.user.clone());
                        p.entries += 1;
                        if add(&mut self.merged, c.room, &c.user) {
                            changed.push(c.room);
                        }
                    } else {
                        let Some(users) = p.rooms.get_mut(&c.room) else {
                            continue;
                        };
                        if !users.remove(&c.user) {
                            continue;
                        }
                        if users.is_empty() {
                            p.rooms.remove(&c.room);
                        }
                        p.entries -= 1;
                        if remove(&mut self.merged, c.room, &c.user) {
                            changed.push(c.room);
                        }
                    }
                }
                p.heard_ms = now_ms;
                Ok((Ack::Applied, dedup(changed)))
            }
        }
    }

    /// Forget every participant reported by `node`; answers the rooms whose roster changed.
    fn drop_peer(&mut self, node: u64) -> Vec<RoomId> {
        let Some(p) = self.peers.remove(&node) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (room, users) in p.rooms {
            for user in users {
                if remove(&mut self.merged, room, &user) {
                    changed.push(room);
                }
            }
        }
        dedup(changed)
    }

    /// Drop the peers not heard from within `expiry_ms` before `now_ms`, with their participants.
    /// Answers the dropped peers and the rooms whose roster changed.
    pub fn expire(&mut self, now_ms: u64) -> (Vec<u64>, Vec<RoomId>) {
        let expiry = self.limits.expiry_ms;
        let mut silent: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.heard_ms) > expiry)
            .map(|(id, _)| *id)
            .collect();
        silent.sort_unstable();
        let mut changed = Vec::new();
        for node in &silent {
            changed.extend(self.drop_peer(*node));
        }
        (silent, dedup(changed))
    }

    /// Participants of `room` cluster-wide.
    pub fn count(&self, room: RoomId) -> usize {
        self.merged.get(&room).map_or(0, HashMap::len)
    }

    /// The roster of `room` as clients are told it: names up to `limit`, the count above it.
    pub fn roster(&self, room: RoomId, limit: u32) -> Roster {
        let count = self.count(room);
        if count > limit as usize {
            return Roster::OverLimit {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                limit,
            };
        }
        let mut names: Vec<String> = self
            .merged
            .get(&room)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort_unstable();
        Roster::Names(names)
    }

    /// Nodes (this one included) reporting `user` in `room`.
    pub fn nodes_reporting(&self, room: RoomId, user: &str) -> u32 {
        self.merged
            .get(&room)
            .and_then(|m| m.get(user))
            .copied()
            .unwrap_or(0)
    }

    /// Peers whose participants are held, for metrics and tests.
    pub fn peers(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This node's own participant entries.
    pub fn local_entries(&self) -> usize {
        self.local_entries
    }
}

/// Bytes a report spends on one entry besides the name (varint lengths and room ids, roughly).
const ENTRY_OVERHEAD_BYTES: usize = 12;

fn check_name(name: &str) -> Result<(), PresenceError> {
    // Bytes bound the character count from above: no need to count characters of a huge string.
    if name.is_empty() || name.len() > NAME_CHARS_MAX * 4 {
        return Err(PresenceError::BadName {
            chars: name.len(),
            max: NAME_CHARS_MAX,
        });
    }
    let chars = name.chars().count();
    if chars > NAME_CHARS_MAX {
        return Err(PresenceError::BadName {
            chars,
            max: NAME_CHARS_MAX,
        });
    }
    Ok(())
}

/// One more node reports `user` in `room`; true if the user was not a participant before.
fn add(merged: &mut HashMap<RoomId, HashMap<String, u32>>, room: RoomId, user: &str) -> bool {
    let users = merged.entry(room).or_default();
    match users.get_mut(user) {
        Some(n) => {
            *n += 1;
            false
        }
        None => {
            users.insert(user.to_string(), 1);
            true
        }
    }
}

/// One node fewer reports `user` in `room`; true if no node does any more.
fn remove(merged: &mut HashMap<RoomId, HashMap<String, u32>>, room: RoomId, user: &str) -> bool {
    let Some(users) = merged.get_mut(&room) else {
        return false;
    };
    let Some(n) = users.get_mut(user) else {
        return false;
    };
    *n -= 1;
    if *n > 0 {
        return false;
    }
    users.remove(user);
    if users.is_empty() {
        merged.remove(&room);
    }
    true
}

fn dedup(mut rooms: Vec<RoomId>) -> Vec<RoomId> {
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// The first roster event of a connection whose live delivery of the room starts.
pub fn first_event(now: &Roster) -> RosterChange {
    match now {
        Roster::Names(names) => RosterChange::All(names.clone()),
        Roster::OverLimit { count, limit } => RosterChange::OverLimit {
            count: *count,
            limit: *limit,
        },
    }
}

/// What connections that were shown `shown` are told when the roster becomes `now`: joins and
/// leaves while at or below the limit, one notice on going above it, nothing while above it, and
/// the whole roster on coming back.
pub fn changes(shown: &Roster, now: &Roster) -> Vec<RosterChange> {
    match (shown, now) {
        (Roster::Names(before), Roster::Names(after)) => {
            let before: BTreeSet<&String> = before.iter().collect();
            let after: BTreeSet<&String> = after.iter().collect();
            let left = before
                .difference(&after)
                .map(|u| RosterChange::Left((*u).clone()));
            let joined = after
                .difference(&before)
                .map(|u| RosterChange::Joined((*u).clone()));
            left.chain(joined).collect()
        }
        (Roster::Names(_), Roster::OverLimit { count, limit }) => {
            vec![RosterChange::OverLimit {
                count: *count,
                limit: *limit,
            }]
        }
        (Roster::OverLimit { .. }, Roster::OverLimit { .. }) => Vec::new(),
        (Roster::OverLimit { .. }, Roster::Names(names)) => vec![RosterChange::All(names.clone())],
    }
}

#[cfg(test)]
mod tests;

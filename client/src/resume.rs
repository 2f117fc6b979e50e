//! Per-room delivery bookkeeping, without I/O: what to hand to the application, what to drop, and
//! when to ask the node again.
//!
//! For every subscribed room the SDK keeps the last seq handed to the application. A message with
//! a seq at or below it is a duplicate (dropped); the next seq is delivered; a higher one is a gap,
//! answered by subscribing again with `after = last`, upon which the node sends the stored backlog
//! first. Every Subscribe or Join request for a room carries a [`Token`]; while one is in flight
//! the room does not start another on a gap (the node's backlog will cover it), and answers to a
//! request that is no longer the room's current one are ignored.
//!
//! The connection code calls:
//! - [`Resume::begin`] before sending a Subscribe or Join, [`Resume::completed`] when it is answered
//!   (from the reader, before any later frame is looked at), [`Resume::failed`] when it is not;
//! - [`Resume::on_message`] and [`Resume::on_lagged`] for pushed events;
//! - [`Resume::paged`] for messages fetched with History during a catch-up;
//! - [`Resume::reconnected`] after a new connection is up.
//!
//! Each returns what to do: deliver, drop, or a [`Resync`] (a Subscribe to send).

use std::collections::HashMap;
use stoa_proto::{Message, Seq};

/// Identifies one Subscribe or Join request for a room.
pub type Token = u64;

/// A Subscribe the connection code must send: `Subscribe { room, after: Some(after) }`, tracked
/// with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub room: String,
    pub token: Token,
    pub after: Seq,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the application; the room's cursor now points at it.
    Deliver,
    /// Already handed over (seq at or below the cursor).
    Duplicate,
    /// Not for the application now: the room is not subscribed, its starting point is not known
    /// yet, or it is beyond a gap that a request in flight will fill.
    Ignore,
    /// A gap: drop the message and send this Subscribe.
    Resync(Resync),
}

/// Which request [`Resume::begin`] prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// `Subscribe { after }`: the node sends stored messages after `after`, then live ones.
    Subscribe,
    /// `Join`: the node answers the last messages and then sends live ones after its `last_seq`.
    Join,
}

/// The state of one subscribed room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    /// Last seq handed to the application; `None` until the first answer says where we start.
    last: Option<Seq>,
    /// The room's moderation count the messages handed over reflect (sent as `moderated_after`
    /// on a resume, so the node sends what moderation changed meanwhile); `None` when unknown.
    moderation: Option<u64>,
    /// A Subscribe from the application's own seq is in flight: `Replaced` events still queued
    /// from before it describe the old cursor's messages, so they do not raise `moderation`.
    restarting: bool,
    /// The Subscribe or Join in flight for this room, if any.
    inflight: Option<Token>,
    /// Highest seq ignored while a request was in flight or the start was unknown.
    ignored_max: Option<Seq>,
    /// The node said Lagged while a request was in flight: subscribe once more after it.
    lagged_again: bool,
    /// Some Subscribe or Join for this room succeeded; only such rooms are resumed on reconnect.
    confirmed: bool,
    /// The request that created this entry; if it fails before any success, the entry goes.
    created_by: Token,
}

impl RoomCursor {
    /// Last seq handed to the application, if known.
    pub fn last(&self) -> Option<Seq> {
        self.last
    }

    /// Whether a Subscribe or Join for the room is in flight.
    pub fn is_resyncing(&self) -> bool {
        self.inflight.is_some()
    }

    /// The client has received every moderation up to `count`; the count never goes back.
    fn note_moderation(&mut self, count: u64) {
        self.moderation = Some(self.moderation.map_or(count, |m| m.max(count)));
    }

    fn note_ignored(&mut self, seq: Seq) {
        self.ignored_max = Some(self.ignored_max.map_or(seq, |m| m.max(seq)));
    }
}

/// The cursors of every subscribed room of one client.
#[derive(Debug, Default)]
pub struct Resume {
    rooms: HashMap<String, RoomCursor>,
    next_token: Token,
}

impl Resume {
    pub fn new() -> Self {
        Resume::default()
    }

    pub fn room(&self, room: &str) -> Option<&RoomCursor> {
        self.rooms.get(room)
    }

    /// Names of the tracked rooms, in no particular order.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// Before sending a Subscribe or Join for `room` on the application's behalf. Returns the
    /// request's token and, for a Subscribe, the `after` to send: the given one (which resets the
    /// cursor), else the cursor of an already tracked room (so a second subscribe cannot open a
    /// gap), else `None` (live from now on; the answer's `last_seq` becomes the cursor).
    pub fn begin(&mut self, room: &str, after: Option<Seq>, kind: Begin) -> (Token, Option<Seq>) {
        let token = self.token();
        let cursor = self.rooms.entry(room.to_string()).or_insert(RoomCursor {
            last: None,
            moderation: None,
            restarting: false,
            inflight: None,
            ignored_max: None,
            lagged_again: false,
            confirmed: false,
            created_by: token,
        });
        cursor.inflight = Some(token);
        cursor.lagged_again = false;
        cursor.ignored_max = None;
        match kind {
            Begin::Subscribe => {
                if after.is_some() {
                    // The application's own starting point: it may hold messages moderated at
                    // any time, so the node sends every moderation of them.
                    cursor.last = after;
                    cursor.moderation = Some(0);
                    cursor.restarting = true;
                }
                (token, cursor.last)
            }
            Begin::Join => (token, None),
        }
    }

    /// The Subscribe or Join `token` was answered with the room's `last_seq` and moderation
    /// count. Called in stream order, before any later frame. Returns a Subscribe to send if
    /// messages may have been missed while it was in flight.
    pub fn completed(
        &mut self,
        room: &str,
        token: Token,
        kind: Begin,
        last_seq: Seq,
        moderation: u64,
    ) -> Option<Resync> {
        let cursor = self.rooms.get_mut(room)?;
        if cursor.inflight != Some(token) {
            return None;
        }
        cursor.inflight = None;
        cursor.confirmed = true;
        cursor.restarting = false;
        // The node sends, before later frames, what moderations up to this count changed in the
        // messages we hold (or there are none to change).
        cursor.note_moderation(moderation);
        // Without a cursor (first subscribe without `after`) the node starts live delivery after
        // `last_seq`. A join hands the messages up to `last_seq` to its caller and goes live after
        // it. After `Subscribe { after }` the backlog covers everything up to `last_seq`, whether
        // it arrives before or after this answer, so the cursor stays.
        let last = match (kind, cursor.last) {
            (_, None) => last_seq,
            (Begin::Join, Some(l)) => l.max(last_seq),
            (Begin::Subscribe, Some(l)) => l,
        };
        cursor.last = Some(last);
        let missed = cursor.ignored_max.is_some_and(|m| m > last_seq);
        let again = missed || cursor.lagged_again;
        cursor.ignored_max = None;
        cursor.lagged_again = false;
        if !again {
            return None;
        }
        let token = self.token();
        let cursor = self.rooms.get_mut(room)?;
        cursor.inflight = Some(token);
        Some(Resync {
            room: room.to_string(),
            token,
            after: last,
        })
    }

    /// The Subscribe or Join `token` failed or was abandoned. The room stays tracked (with no
    /// request in flight) unless this request created it and none ever succeeded. Returns whether
    /// the room was removed.
    pub fn failed(&mut self, room: &str, token: Token) -> bool {
        let Some(cursor) = self.rooms.get_mut(room) else {
            return false;
        };
        if cursor.inflight != Some(token) {
            return false;
        }
        cursor.inflight = None;
        cursor.ignored_max = None;
        cursor.lagged_again = false;
        if !cursor.confirmed && cursor.created_by == token {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Stop tracking `room` if `token` is its current request (the node refused it for good:
    /// room gone, access withdrawn). Returns whether it was removed.
    pub fn abandon(&mut self, room: &str, token: Token) -> bool {
        if self
            .rooms
            .get(room)
            .is_some_and(|c| c.inflight == Some(token))
        {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Stop tracking `room` (the application unsubscribed).
    pub fn remove(&mut self, room: &str) -> bool {
        self.rooms.remove(room).is_some()
    }

    /// The cursor to resume from and the moderation count seen, if `token` is still the room's
    /// current request.
    pub fn resync_after(&self, room: &str, token: Token) -> Option<(Seq, Option<u64>)> {
        let cursor = self.rooms.get(room)?;
        if cursor.inflight == Some(token) {
            cursor.last.map(|last| (last, cursor.moderation))
        } else {
            None
        }
    }

    /// The moderation count to send with a Subscribe for `room`.
    pub fn moderated_after(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(|c| c.moderation)
    }

    /// The node sent `Replaced` for `room`, reaching moderation count `moderation`.
    pub fn on_replaced(&mut self, room: &str, moderation: u64) {
        if let Some(c) = self.rooms.get_mut(room).filter(|c| !c.restarting) {
            c.note_moderation(moderation);
        }
    }

    /// A message pushed by the node.
    pub fn on_message(&mut self, msg: &Message) -> Verdict {
        let Some(cursor) = self.rooms.get_mut(&msg.room) else {
            return Verdict::Ignore;
        };
        let Some(last) = cursor.last else {
            cursor.note_ignored(msg.seq);
            return Verdict::Ignore;
        };
        if msg.seq <= last {
            return Verdict::Duplicate;
        }
        if msg.seq == last.next() {
            cursor.last = Some(msg.seq);
            return Verdict::Deliver;
        }
        if cursor.inflight.is_some() {
            cursor.note_ignored(msg.seq);
            return Verdict::Ignore;
        }
        let token = self.token();
        let cursor = self
            .rooms
            .get_mut(&msg.room)
            .expect("room looked up just above");
        cursor.inflight = Some(token);
        Verdict::Resync(Resync {
            room: msg.room.clone(),
            token,
            after: last,
        })
    }

    /// The node stopped live delivery of `room` to this connection.
    pub fn on_lagged(&mut self, room: &str) -> Option<Resync> {
        let cursor = self.rooms.get_mut(room)?;
        let last = match (cursor.last, cursor.inflight) {
            (Some(last), None) => last,
            _ => {
                cursor.lagged_again = true;
                return None;
            }
        };
        let token = self.token();
        let cursor = self.rooms.get_mut(room)?;
        cursor.inflight = Some(token);
        Some(Resync {
            room: room.to_string(),
            token,
            after: last,
        })
    }

    /// A message fetched with History to catch up for the Subscribe `token` (the node refused
    /// the backlog as too large). Never starts a resync: the caller subscribes after paging.
    pub fn paged(&mut self, token: Token, msg: &Message) -> Verdict {
        let Some(cursor) = self.rooms.get_mut(&msg.room) else {
            return Verdict::Ignore;
        };
        let (Some(last), Some(current)) = (cursor.last, cursor.inflight) else {
            return Verdict::Ignore;
        };
        if current != token {
            return Verdict::Ignore;
        }
        if msg.seq <= last {
            Verdict::Duplicate
        } else if msg.seq == last.next() {
            cursor.last = Some(msg.seq);
            Verdict::Deliver
        } else {
            Verdict::Ignore
        }
    }

    /// A new connection is up: every room that was subscribed is subscribed again after its
    /// cursor. Rooms whose first request has not succeeded are left to that request.
    pub fn reconnected(&mut self) -> Vec<Resync> {
        let mut out = Vec::new();
        let mut names: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, c)| c.confirmed && c.last.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        for room in names {
            let token = self.token();
            let cursor = self
                .rooms
                .get_mut(&room)
                .expect("name collected from the map just above");
            cursor.inflight = Some(token);
            cursor.ignored_max = None;
            cursor.lagged_again = false;
            let after = cursor.last.expect("filtered on last.is_some() just above");
            out.push(Resync { room, token, after });
        }
        out
    }
}

#[cfg(test)]
mod tests;

//! Live delivery: one actix actor per room with local subscribers, on a dedicated actix system
//! thread. Shard state machines hand applied messages to the [`Fanout`] dispatcher, which encodes
//! each message into a frame once and passes the shared bytes to the room's actor; the actor copies
//! only the `Bytes` handle into each subscriber's bounded send queue. A subscriber whose queue is full
//! is cut from live delivery and told so (it resumes from history); it never grows memory.
//!
//! Presence: a room actor knows which users have live delivery of its room here; it reports each
//! user's first and last subscription to the [`PresenceHub`], and tells its subscribers how the
//! room's cluster-wide roster changes (see [`crate::domain::presence::changes`]). Roster frames are
//! encoded once per change and queued like messages; a full queue cuts the subscriber the same way.
//!
//! Ordering: a room actor is created with the room's applied head read under the registry lock, and
//! ignores committed messages at or below what it has seen, so a subscriber gets every message once,
//! in order, whatever the race between apply, dispatch and actor creation.

use crate::domain::presence::{self as rules, RoomId};
use crate::metrics::Counters;
use crate::presence::PresenceHub;
use crate::raft::GroupId;
use crate::search::IndexOp;
use crate::store::sm::{Applied, MetaView, ModeratedPage, ShardView};
use actix::prelude::*;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stoa_proto::{
    encode_frame, ApiError, ErrorCode, Event, Message as ChatMessage, Roster, RosterChange, Seq,
    ServerFrame,
};
use tokio::sync::{mpsc, oneshot, Notify};

/// Where a session receives frames, and how it learns it was cut from a room's live delivery.
#[derive(Clone)]
pub struct Subscriber {
    pub id: u64,
    /// The signed-in user, whose access is checked again whenever the directory changes.
    pub user: String,
    pub tx: mpsc::Sender<Bytes>,
    pub lagged: Arc<Lagged>,
}

/// Rooms whose live delivery stopped for a session, with the last seq queued for it.
#[derive(Default)]
pub struct Lagged {
    rooms: Mutex<HashMap<String, Seq>>,
    pub notify: Notify,
}

impl Lagged {
    fn mark(&self, room: &str, after: Seq) {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_string(), after);
        self.notify.notify_one();
    }

    pub fn take(&self) -> Vec<(String, Seq)> {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }
}

static NEXT_SUBSCRIBER: AtomicU64 = AtomicU64::new(1);

pub fn next_subscriber_id() -> u64 {
    NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy)]
pub struct FanoutLimits {
    pub frame_bytes_max: usize,
    pub subscribe_backlog_max: u32,
    pub room_mailbox_max: usize,
}

/// The node's handle on live delivery. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    rooms: Arc<Mutex<HashMap<u64, Addr<RoomActor>>>>,
    arbiter: ArbiterHandle,
    system: actix::System,
    limits: FanoutLimits,
    meta: MetaView,
    /// Applied messages also go to the search index (never blocking delivery; see `search`).
    index: Option<mpsc::Sender<Vec<IndexOp>>>,
    presence: PresenceHub,
    /// Rooms whose roster changed while their actor's mailbox was full; woken again by the
    /// presence task's next tick.
    missed_wakes: Arc<Mutex<HashSet<RoomId>>>,
    counters: Counters,
}

impl Fanout {
    /// Start the actix system thread, the dispatcher task fed by `applied`, and the task that has
    /// room actors check their subscribers' access after every directory change.
    pub fn start(
        limits: FanoutLimits,
        applied: mpsc::Receiver<Vec<Applied>>,
        meta: MetaView,
        index: Option<mpsc::Sender<Vec<IndexOp>>>,
        presence: PresenceHub,
        counters: Counters,
    ) -> Fanout {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("stoa-rooms".into())
            .spawn(move || {
                let sys = actix::System::new();
                let handles =
                    sys.block_on(async { (actix::System::current(), actix::Arbiter::current()) });
                let _ = tx.send(handles);
                let _ = sys.run();
            })
            .expect("spawning the room actor thread at startup");
        let (system, arbiter) = rx
            .recv()
            .expect("the room actor thread reports its handles at startup");
        let fanout = Fanout {
            rooms: Default::default(),
            arbiter,
            system,
            limits,
            meta,
            index,
            presence,
            missed_wakes: Default::default(),
            counters,
        };
        tokio::spawn(fanout.clone().dispatch(applied));
        tokio::spawn(fanout.clone().recheck_on_changes());
        fanout
    }

    pub fn stop(&self) {
        self.system.stop();
    }

    pub fn presence(&self) -> &PresenceHub {
        &self.presence
    }

    /// Take a peer's presence report and wake the actors of the rooms it changed.
    pub fn receive_presence(&self, from: u64, report: rules::Report) -> rules::Ack {
        let (ack, changed) = self.presence.receive(from, report);
        self.wake_rosters(&changed);
        ack
    }

    /// Tell the actors of `rooms` (those that have one here) that their roster changed. A full
    /// mailbox is noted and woken again later ([`Fanout::retry_roster_wakes`]).
    pub fn wake_rosters(&self, rooms: &[RoomId]) {
        if rooms.is_empty() {
            return;
        }
        let addrs: Vec<(RoomId, Addr<RoomActor>)> = {
            let registry = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            rooms
                .iter()
                .filter_map(|r| registry.get(r).map(|a| (*r, a.clone())))
                .collect()
        };
        for (room, addr) in addrs {
            if let Err(SendError::Full(_)) = addr.try_send(RoomMsg::Roster) {
                self.missed_wakes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(room);
            }
        }
    }

    /// Wake again the rooms whose wake did not fit their mailbox.
    pub fn retry_roster_wakes(&self) {
        let rooms: Vec<RoomId> = self
            .missed_wakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        self.wake_rosters(&rooms);
    }

    async fn dispatch(self, mut applied: mpsc::Receiver<Vec<Applied>>) {
        while let Some(batch) = applied.recv().await {
            let posted = batch
                .iter()
                .filter(|a| matches!(a, Applied::Posted(..)))
                .count();
            self.counters.posts_applied.inc_by(posted as u64);
            if let Some(index) = &self.index {
                // An install leaves a gap in seqs, which sends the index back to storage.
                let items = batch
                    .iter()
                    .filter_map(|a| match a {
                        Applied::Posted(room_id, message) => Some(IndexOp::Add {
                            room_id: *room_id,
                            message: message.clone(),
                        }),
                        Applied::Replaced { room, messages, .. } => Some(IndexOp::Remove {
                            room_id: *room,
                            seqs: messages.iter().map(|m| m.seq).collect(),
                        }),
                        Applied::Installed(_) => None,
                    })
                    .collect();
                // A full indexer queue drops the batch; the index notices a gap and re-reads it,
                // and results are always re-read from storage, so a missed removal never shows.
                let _ = index.try_send(items);
            }
            // Group by room, keeping log order within each room.
            let mut by_room: Vec<(u64, Vec<Delivery>)> = Vec::new();
            for item in batch {
                if let Applied::Installed(group) = item {
                    self.reload_rooms(group).await;
                    continue;
                }
                let (room, delivery) = match self.encode(item) {
                    Some(d) => d,
                    None => continue,
                };
                match by_room.iter_mut().find(|(r, _)| *r == room) {
                    Some((_, v)) => v.push(delivery),
                    None => by_room.push((room, vec![delivery])),
                }
            }
            for (room, deliveries) in by_room {
                let addr = self
                    .rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&room)
                    .cloned();
                if let Some(addr) = addr {
                    match addr.try_send(RoomMsg::Committed(deliveries)) {
                        Ok(()) => {}
                        Err(SendError::Full(msg)) => {
                            let _ = addr.send(msg).await;
                        }
                        Err(SendError::Closed(_)) => {}
                    }
                }
            }
        }
    }

    fn room_actors(&self) -> Vec<Addr<RoomActor>> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.values().cloned().collect()
    }

    /// Every room actor of `group` starts over from the state a snapshot installed. Sent after
    /// the deliveries before it, so each actor has seen every event it will ever get for it.
    async fn reload_rooms(&self, group: GroupId) {
        let rooms = self.room_actors();
        for addr in rooms {
            let _ = addr.send(RoomMsg::Reload(group)).await;
        }
    }

    /// Encode an applied change once, as the frame every subscriber of its room gets.
    fn encode(&self, item: Applied) -> Option<(u64, Delivery)> {
        let max = self.limits.frame_bytes_max;
        match item {
            Applied::Posted(room, msg) => {
                let seq = msg.seq;
                match encode_frame(&ServerFrame::Event(Event::Message(msg)), max) {
                    Ok(f) => Some((room, Delivery::Message(seq, f))),
                    Err(e) => {
                        tracing::error!(room, seq = %seq, error = %e, "cannot encode a committed message");
                        None
                    }
                }
            }
            Applied::Installed(_) => None,
            Applied::Replaced {
                room,
                moderation,
                messages,
            } => {
                let name = messages.first().map(|m| m.room.clone())?;
                let frames = moderation_frames(&name, moderation, &messages, max);
                Some((room, Delivery::Replaced { moderation, frames }))
            }
        }
    }

    async fn recheck_on_changes(self) {
        let mut changes = self.meta.subscribe();
        while changes.changed().await.is_ok() {
            let rooms = self.room_actors();
            for addr in rooms {
                // A full mailbox is busy delivering; its next recheck comes with the next change.
                let _ = addr.try_send(RoomMsg::Recheck);
            }
        }
    }

    /// Start live delivery of a room to a subscriber, after sending it every stored message after
    /// `after` (when given) and, with `moderated_after` too, the messages up to `after` that
    /// moderations since that count changed. Answers the room's last seq and moderation count at
    /// the time of subscription.
    pub async fn subscribe(
        &self,
        room_id: u64,
        room: &str,
        view: &ShardView,
        sub: Subscriber,
        after: Option<Seq>,
        moderated_after: Option<u64>,
    ) -> Result<(Seq, u64), ApiError> {
        let addr = self.room(room_id, room, view);
        let (reply, rx) = oneshot::channel();
        let msg = RoomMsg::Subscribe {
            sub,
            after,
            moderated_after,
            reply,
        };
        addr.send(msg)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "room delivery is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "room delivery is shutting down"))?
    }

    pub fn unsubscribe(&self, room_id: u64, subscriber: u64) {
        let addr = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&room_id)
            .cloned();
        if let Some(addr) = addr {
            addr.do_send(RoomMsg::Unsubscribe { subscriber });
        }
    }

    fn room(&self, room_id: u64, room: &str, view: &ShardView) -> Addr<RoomActor> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = rooms.get(&room_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        // Read the head under the registry lock: see the module doc on ordering.
        let actor = RoomActor {
            room_id,
            room: room.to_string(),
            view: view.clone(),
            last: view.last_seq(room_id),
            moderation: view.moderation(room_id),
            subs: HashMap::new(),
            limits: self.limits,
            delivered: self.counters.deliveries.clone(),
            meta: self.meta.clone(),
            presence: self.presence.clone(),
            users: HashMap::new(),
            shown: Roster::Names(Vec::new()),
            roster_dirty: false,
        };
        let addr = RoomActor::start_in_arbiter(&self.arbiter, move |_| actor);
        rooms.insert(room_id, addr.clone());
        addr
    }
}

/// Messages of a moderation event per frame, at most; fewer when they do not fit the frame limit.
const REPLACED_PER_FRAME: usize = 64;

/// The `Replaced` frames of moderation `count`: every frame but the last carries the count
/// before it, so a client cut off part-way (a lag cut, a dropped connection) has not counted this
/// moderation and asks for it again when it resumes.
fn moderation_frames(room: &str, count: u64, messages: &[ChatMessage], max: usize) -> Vec<Bytes> {
    let Some((last, head)) = messages.split_last() else {
        return replaced_frames(room, count, messages, max);
    };
    let mut frames = match head {
        [] => Vec::new(),
        _ => replaced_frames(room, count.saturating_sub(1), head, max),
    };
    frames.extend(replaced_frames(
        room,
        count,
        std::slice::from_ref(last),
        max,
    ));
    frames
}

/// Encode `messages` as `Event::Replaced` frames of at most [`REPLACED_PER_FRAME`] messages and
/// `max` bytes each.
fn replaced_frames(
    room: &str,
    moderation: u64,
    messages: &[ChatMessage],
    max: usize,
) -> Vec<Bytes> {
    let mut frames = Vec::new();
    if messages.is_empty() {
        // Only the count: the client has every moderation up to it.
        replaced_part(room, moderation, messages, max, &mut frames);
    }
    for part in messages.chunks(REPLACED_PER_FRAME) {
        replaced_part(room, moderation, part, max, &mut frames);
    }
    frames
}

/// Halves a part that does not fit: moderation may change many messages with texts up to the
/// replacement limit.
fn replaced_part(
    room: &str,
    moderation: u64,
    messages: &[ChatMessage],
    max: usize,
    out: &mut Vec<Bytes>,
) {
    let event = Event::Replaced {
        room: room.to_string(),
        messages: messages.to_vec(),
        moderation,
    };
    match encode_frame(&ServerFrame::Event(event), max) {
        Ok(f) => out.push(f),
        Err(_) if messages.len() > 1 => {
            let (a, b) = messages.split_at(messages.len() / 2);
            replaced_part(room, moderation, a, max, out);
            replaced_part(room, moderation, b, max, out);
        }
        Err(e) => {
            let seq = messages.first().map(|m| m.seq);
            tracing::error!(room, ?seq, error = %e, "a moderated message does not fit a frame")
        }
    }
}

/// A change applied in a room's shard, encoded as the frames its subscribers get.
pub enum Delivery {
    /// A new message.
    Message(Seq, Bytes),
    /// Moderation changed stored messages: `Event::Replaced` frames, and the room's moderation
    /// count reached. They do not advance the room's seq; they reach subscribers in log order
    /// with the messages around them.
    Replaced { moderation: u64, frames: Vec<Bytes> },
}

#[derive(Message)]
#[rtype(result = "()")]
pub enum RoomMsg {
    /// Changes applied in the room's shard, in log order.
    Committed(Vec<Delivery>),
    /// Answers the room's last seq and moderation count.
    Subscribe {
        sub: Subscriber,
        after: Option<Seq>,
        moderated_after: Option<u64>,
        reply: oneshot::Sender<Result<(Seq, u64), ApiError>>,
    },
    Unsubscribe {
        subscriber: u64,
    },
    /// The directory changed: end delivery to subscribers who may no longer read the room (and
    /// apply a changed `participant_update_limit`).
    Recheck,
    /// The room's roster changed elsewhere (a peer's report, an expiry).
    Roster,
    /// A snapshot was installed in this shard group (others ignore it): see `reload`.
    Reload(GroupId),
}

enum SubState {
    Live,
    /// Waiting for the stored backlog; live frames after `upto` are held meanwhile.
    CatchingUp {
        upto: Seq,
        held: Vec<Held>,
        generation: u64,
    },
}

/// A frame held for a subscriber still reading its backlog: a message (with its seq) or an event
/// that does not advance the seq.
type Held = (Option<Seq>, Bytes);

struct Sub {
    sub: Subscriber,
    state: SubState,
    /// Last seq queued for this subscriber.
    sent: Seq,
}

impl Sub {
    /// Queue a frame (a message's, when `seq` is given) without waiting; `false` when the queue
    /// is full and the subscriber must be cut from live delivery.
    fn offer(&mut self, seq: Option<Seq>, frame: Bytes, delivered: &Counter) -> bool {
        if self.sub.tx.try_send(frame).is_err() {
            return false;
        }
        if let Some(seq) = seq {
            self.sent = seq;
            delivered.inc();
        }
        true
    }
}

pub struct RoomActor {
    room_id: u64,
    room: String,
    view: ShardView,
    last: Seq,
    /// The room's moderation count as far as this actor has delivered.
    moderation: u64,
    subs: HashMap<u64, Sub>,
    limits: FanoutLimits,
    /// Message frames queued (the node's `stoa_deliveries` counter).
    delivered: Counter,
    meta: MetaView,
    presence: PresenceHub,
    /// Subscriptions per user: a user is a participant here while above zero.
    users: HashMap<String, u32>,
    /// The roster as last told to the subscribers.
    shown: Roster,
    /// The roster may have changed since `shown`; set by subscription changes and wakes,
    /// handled at the end of each message.
    roster_dirty: bool,
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.limits.room_mailbox_max);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for user in std::mem::take(&mut self.users).into_keys() {
            self.presence.local_leave(self.room_id, &user);
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl RoomActor {
    /// Add (or replace) a subscription, counting its user in.
    fn insert_sub(&mut self, id: u64, sub: Sub) {
        let user = sub.sub.user.clone();
        if let Some(old) = self.subs.insert(id, sub) {
            self.user_left(&old.sub.user);
        }
        let n = self.users.entry(user.clone()).or_insert(0);
        *n += 1;
        if *n == 1 && self.presence.local_join(self.room_id, &user) {
            self.roster_dirty = true;
        }
    }

    /// Remove a subscription, counting its user out.
    fn remove_sub(&mut self, id: u64) -> Option<Sub> {
        let s = self.subs.remove(&id)?;
        self.user_left(&s.sub.user);
        Some(s)
    }

    fn user_left(&mut self, user: &str) {
        let Some(n) = self.users.get_mut(user) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.users.remove(user);
            if self.presence.local_leave(self.room_id, user) {
                self.roster_dirty = true;
            }
        }
    }

    /// Tell every subscriber how the roster changed since it was last told, until it stops
    /// changing (cutting a slow subscriber can change it again).
    fn refresh_roster(&mut self) {
        while self.roster_dirty {
            self.roster_dirty = false;
            let limit = self.meta.read(|m| m.settings().participant_update_limit);
            let now = self.presence.roster(self.room_id, limit);
            let changes = rules::changes(&self.shown, &now);
            self.shown = now;
            for change in changes {
                let Some(frame) = self.roster_frame(change) else {
                    continue;
                };
                let ids: Vec<u64> = self.subs.keys().copied().collect();
                for id in ids {
                    self.push(id, None, frame.clone());
                }
            }
        }
    }

    fn roster_frame(&self, change: RosterChange) -> Option<Bytes> {
        let event = ServerFrame::Event(Event::Roster {
            room: self.room.clone(),
            change,
        });
        match encode_frame(&event, self.limits.frame_bytes_max) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "roster event does not fit a frame");
                None
            }
        }
    }

    /// Queue a frame (a message's, when `seq` is given); a full queue cuts the subscriber from
    /// live delivery.
    fn push(&mut self, id: u64, seq: Option<Seq>, frame: Bytes) -> bool {
        let Some(s) = self.subs.get_mut(&id) else {
            return false;
        };
        if s.offer(seq, frame, &self.delivered) {
            return true;
        }
        self.cut_lagged(id);
        false
    }

    /// Cut a subscriber from live delivery and tell its session where it stopped: it resumes
    /// from storage.
    fn cut_lagged(&mut self, id: u64) {
        if let Some(s) = self.remove_sub(id) {
            tracing::debug!(room = %self.room, subscriber = id, after = %s.sent, "subscriber cut from live delivery");
            s.sub.lagged.mark(&self.room, s.sent);
        }
    }

    /// Cut every subscriber: what this actor delivers no longer follows from what they had.
    fn cut_all(&mut self) {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for id in ids {
            self.cut_lagged(id);
        }
    }

    fn committed(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            match delivery {
                Delivery::Message(seq, frame) => {
                    if seq <= self.last {
                        continue; // already covered by the head this actor started from
                    }
                    if seq != self.last.next() {
                        // Cannot happen by construction; if it does, everyone resumes from storage.
                        tracing::error!(room = %self.room, expected = %self.last.next(), got = %seq, "gap in committed messages");
                        self.cut_all();
                    }
                    self.last = seq;
                    self.deliver(Some(seq), frame);
                }
                // Replacing is idempotent, so a subscriber that read the new version from storage
                // may get the event too; one that read the old version always gets it after.
                Delivery::Replaced { moderation, frames } => {
                    if moderation > self.moderation + 1 {
                        // Cannot happen by construction (an install reloads the actor first);
                        // if it does, everyone resumes and is sent the missed ones from storage.
                        tracing::error!(room = %self.room, expected = self.moderation + 1, got = moderation, "gap in moderation counts");
                        self.cut_all();
                    }
                    self.moderation = self.moderation.max(moderation);
                    for frame in frames {
                        self.deliver(None, frame);
                    }
                }
            }
        }
    }

    /// Queue a frame for every live subscriber; hold it for those still reading their backlog.
    /// Runs for every message: walks the subscribers in place, and allocates only for the
    /// subscribers it cuts (a full queue, or too much held while catching up).
    fn deliver(&mut self, seq: Option<Seq>, frame: Bytes) {
        let held_max = self.limits.subscribe_backlog_max as usize;
        let mut cut = Vec::new();
        for (&id, s) in &mut self.subs {
            match &mut s.state {
                SubState::Live => {
                    if !s.offer(seq, frame.clone(), &self.delivered) {
                        cut.push(id);
                    }
                }
                SubState::CatchingUp { held, .. } => {
                    if held.len() >= held_max {
                        cut.push(id);
                    } else {
                        held.push((seq, frame.clone()));
                    }
                }
            }
        }
        for id in cut {
            self.cut_lagged(id);
        }
    }

    fn subscribe(
        &mut self,
        sub: Subscriber,
        after: Option<Seq>,
        moderated_after: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<(Seq, u64), ApiError> {
        let id = sub.id;
        if !self.view.usable() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "this node's copy of the room is being repaired; try another node",
            ));
        }
        // Only moderations whose events this actor has seen: one whose frames are still on
        // their way reaches the subscriber live, after what it is answered now.
        let moderation = self.moderation;
        // Moderations a client with messages up to `after` has not seen (only a client that
        // holds messages can have missed one).
        let moderated = match (after, moderated_after) {
            (Some(_), Some(count)) if count < moderation => Some(count),
            _ => None,
        };
        let after = after.unwrap_or(self.last).min(self.last);
        let behind = self.last.0 - after.0;
        if behind > u64::from(self.limits.subscribe_backlog_max) {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "{behind} messages to catch up in {}, more than subscribe_backlog_max ({}): page with history first",
                    self.room, self.limits.subscribe_backlog_max
                ),
            ));
        }
        if behind == 0 && moderated.is_none() {
            self.insert_sub(
                id,
                Sub {
                    sub,
                    state: SubState::Live,
                    sent: after,
                },
            );
            self.show_roster(id);
            return Ok((self.last, moderation));
        }
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let upto = self.last;
        self.insert_sub(
            id,
            Sub {
                sub,
                state: SubState::CatchingUp {
                    upto,
                    held: Vec::new(),
                    generation,
                },
                sent: after,
            },
        );
        self.show_roster(id);
        let catch_up = CatchUp {
            id,
            generation,
            after,
            moderated: moderated.map(|count| (count, moderation)),
        };
        let view = self.view.clone();
        let (room_id, room) = (self.room_id, self.room.clone());
        let read = async move {
            match behind {
                0 => Ok(Vec::new()),
                n => {
                    view.read(room_id, room, after, upto.next(), n as usize, false)
                        .await
                }
            }
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
            act.backlog_loaded(catch_up, res, ctx);
            act.refresh_roster();
        }));
        // With moderations to catch up, answer the client's own count: the catch-up's last
        // frame carries the new one, so a client cut off before it asks again.
        Ok((self.last, moderated.unwrap_or(moderation)))
    }

    /// Tell a new subscriber the roster as the others were last told it; changes since then
    /// follow with everyone's.
    fn show_roster(&mut self, id: u64) {
        if let Some(frame) = self.roster_frame(rules::first_event(&self.shown)) {
            self.push(id, None, frame);
        }
    }

    fn recheck(&mut self) {
        let (room_id, room) = (self.room_id, self.room.clone());
        let refused: Vec<(u64, ApiError)> = self.meta.read(|m| {
            let record = m.room(&room).filter(|r| r.id == room_id);
            self.subs
                .iter()
                .filter_map(|(&id, s)| {
                    let why = match (record, m.user(&s.sub.user)) {
                        (None, _) => Some(format!("room {room:?} was deleted")),
                        (Some(_), None) => Some(format!("user {} no longer exists", s.sub.user)),
                        (Some(r), _) if r.disabled => Some(format!("room {room:?} was disabled")),
                        (Some(r), Some(u)) if !m.access(u, r).read => {
                            Some(format!("{} may no longer read {room:?}", u.name))
                        }
                        _ => None,
                    };
                    why.map(|w| (id, ApiError::new(ErrorCode::Forbidden, w)))
                })
                .collect()
        });
        for (id, reason) in refused {
            let Some(s) = self.remove_sub(id) else {
                continue;
            };
            tracing::debug!(room = %self.room, user = %s.sub.user, %reason, "live delivery ended");
            let event = ServerFrame::Event(Event::RoomClosed {
                room: self.room.clone(),
                reason,
            });
            if let Ok(frame) = encode_frame(&event, self.limits.frame_bytes_max) {
                // Best effort: a full queue means the session is being cut anyway.
                let _ = s.sub.tx.try_send(frame);
            }
        }
    }

    /// The backlog's last seq, if subscriber `c.id` is still catching up in the subscription
    /// `c` started (not gone, nor replaced by a newer one).
    fn catching_up(&self, c: &CatchUp) -> Option<Seq> {
        match self.subs.get(&c.id).map(|s| &s.state) {
            Some(SubState::CatchingUp {
                upto, generation, ..
            }) if *generation == c.generation => Some(*upto),
            _ => None,
        }
    }

    /// Fail a catch-up: the subscriber resumes from storage later.
    fn catch_up_failed(&mut self, id: u64, e: crate::raft::StorageError) {
        tracing::error!(room = %self.room, error = %e, "cannot read a subscriber's catch-up");
        self.cut_lagged(id);
    }

    fn backlog_loaded(
        &mut self,
        c: CatchUp,
        res: Result<Vec<ChatMessage>, crate::raft::StorageError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(upto) = self.catching_up(&c) else {
            return;
        };
        let backlog = match res {
            Ok(b) => b,
            Err(e) => return self.catch_up_failed(c.id, e),
        };
        for m in backlog {
            let seq = m.seq;
            if seq > upto {
                break;
            }
            match encode_frame(
                &ServerFrame::Event(Event::Message(m)),
                self.limits.frame_bytes_max,
            ) {
                Ok(frame) => {
                    if !self.push(c.id, Some(seq), frame) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(room = %self.room, seq = %seq, error = %e, "cannot encode a stored message")
                }
            }
        }
        self.read_moderated(c, ctx);
    }

    /// Read the next page of the moderations a catching-up subscriber misses: after the count it
    /// has, up to the actor's count at subscribe (later ones come live). Without any, go live.
    fn read_moderated(&mut self, c: CatchUp, ctx: &mut Context<Self>) {
        let Some((from, through)) = c.moderated else {
            return self.go_live(c.id);
        };
        let view = self.view.clone();
        let (room_id, room) = (self.room_id, self.room.clone());
        let limit = self.limits.subscribe_backlog_max as usize;
        let after = c.after;
        let read = async move {
            view.moderated_since(room_id, room, from, through, after, limit)
                .await
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
            act.moderated_loaded(c, res, ctx);
            act.refresh_roster();
        }));
    }

    /// Send a page of moderations: every `Replaced` frame carries the count the client has
    /// fully received with it. Then read the next page, or end the catch-up with the actor's count
    /// at subscribe.
    fn moderated_loaded(
        &mut self,
        c: CatchUp,
        res: Result<ModeratedPage, crate::raft::StorageError>,
        ctx: &mut Context<Self>,
    ) {
        if self.catching_up(&c).is_none() {
            return;
        }
        let page = match res {
            Ok(p) => p,
            Err(e) => return self.catch_up_failed(c.id, e),
        };
        let Some((mut reached, target)) = c.moderated else {
            return self.go_live(c.id);
        };
        let max = self.limits.frame_bytes_max;
        let mut told = reached;
        for (count, messages) in page.moderations {
            reached = count;
            if messages.is_empty() {
                continue; // it changed none of the client's messages
            }
            for frame in moderation_frames(&self.room, count, &messages, max) {
                if !self.push(c.id, None, frame) {
                    return;
                }
            }
            told = count;
        }
        if page.more {
            let next = CatchUp {
                moderated: Some((reached, target)),
                ..c
            };
            return self.read_moderated(next, ctx);
        }
        if told < target {
            // Nothing more of the client's changed: say how far that holds, so it does not ask
            // again.
            for frame in replaced_frames(&self.room, target, &[], max) {
                if !self.push(c.id, None, frame) {
                    return;
                }
            }
        }
        self.go_live(c.id);
    }

    /// Start over from the shard's state after a snapshot install: the events of what it
    /// brought never come, so every subscriber resumes from storage.
    fn reload(&mut self) {
        self.last = self.view.last_seq(self.room_id);
        self.moderation = self.view.moderation(self.room_id);
        tracing::info!(room = %self.room, last = %self.last, moderation = self.moderation, "a snapshot was installed: subscribers resume");
        self.cut_all();
    }

    /// End a catch-up: the frames held meanwhile go out, then live delivery.
    fn go_live(&mut self, id: u64) {
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        let SubState::CatchingUp { held, .. } = &mut s.state else {
            return;
        };
        let held = std::mem::take(held);
        s.state = SubState::Live;
        for (seq, frame) in held {
            if !self.push(id, seq, frame) {
                return;
            }
        }
    }
}

/// A subscriber's catch-up in progress: which subscription, its cursor, and for moderations
/// the count the client has received so far and the actor's count at subscribe.
#[derive(Clone, Copy)]
struct CatchUp {
    id: u64,
    generation: u64,
    after: Seq,
    moderated: Option<(u64, u64)>,
}

impl Handler<RoomMsg> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: RoomMsg, ctx: &mut Context<Self>) {
        match msg {
            RoomMsg::Committed(frames) => self.committed(frames),
            RoomMsg::Subscribe {
                sub,
                after,
                moderated_after,
                reply,
            } => {
                let r = self.subscribe(sub, after, moderated_after, ctx);
                let _ = reply.send(r);
            }
            RoomMsg::Unsubscribe { subscriber } => {
                self.remove_sub(subscriber);
            }
            RoomMsg::Recheck => {
                self.recheck();
                // The limit may have changed.
                self.roster_dirty = true;
            }
            RoomMsg::Roster => self.roster_dirty = true,
            RoomMsg::Reload(group) => {
                if group == self.view.group() {
                    self.reload();
                }
            }
        }
        self.refresh_roster();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_events_are_split_to_fit_the_frame_limit() {
        let m = |seq| ChatMessage {
            room: "r".into(),
            seq: Seq(seq),
            author: "a".into(),
            text: "x".repeat(4000),
            ts_ms: 1,
            alert: false,
            moderated: Some(stoa_proto::Moderation::Replaced),
            file: None,
        };
        let messages: Vec<ChatMessage> = (1..=20).map(m).collect();
        let frames = replaced_frames("r", 7, &messages, 16 << 10);
        assert!(frames.len() >= 5, "{} frames", frames.len());
        let mut seqs = Vec::new();
        for f in &frames {
            assert!(f.len() <= (16 << 10) + stoa_proto::FRAME_HEADER_BYTES);
            let ev: ServerFrame = stoa_proto::decode(&f[stoa_proto::FRAME_HEADER_BYTES..]).unwrap();
            let ServerFrame::Event(Event::Replaced { messages, .. }) = ev else {
                panic!("{ev:?}")
            };
            seqs.extend(messages.iter().map(|m| m.seq.0));
        }
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "all of them, in order");
    }

    #[test]
    fn only_the_last_frame_of_a_moderation_carries_its_count() {
        let m = |seq| ChatMessage {
            room: "r".into(),
            seq: Seq(seq),
            author: "a".into(),
            text: String::new(),
            ts_ms: 1,
            alert: false,
            moderated: Some(stoa_proto::Moderation::Removed),
            file: None,
        };
        let messages: Vec<ChatMessage> = (1..=130).map(m).collect();
        let mut seen = Vec::new();
        for f in moderation_frames("r", 7, &messages, 1 << 20) {
            let ev: ServerFrame = stoa_proto::decode(&f[stoa_proto::FRAME_HEADER_BYTES..]).unwrap();
            let ServerFrame::Event(Event::Replaced {
                messages,
                moderation,
                ..
            }) = ev
            else {
                panic!("{ev:?}")
            };
            seen.push((moderation, messages.len()));
        }
        assert_eq!(seen, [(6, 64), (6, 64), (6, 1), (7, 1)]);
        // A moderation that changed nothing the client holds: the count alone.
        let only = moderation_frames("r", 7, &[], 1 << 20);
        assert_eq!(only.len(), 1);
    }
}

//! The state machine of one group (openraft storage-v2 `RaftStateMachine`): the meta directory for
//! group 0, room content for shards. The rules come from [`crate::domain`]; this file only loads,
//! applies and persists them. The applied log id is written in the same sled batch as the state it
//! describes, so after a crash the two always agree and openraft re-applies exactly what is missing.

use super::snapfile::{self, SnapshotWriter, StoredSnapshot};
use super::{blocking, decode_stored, encode_stored, keys, read_err, write_err, Store, StoreError};
use crate::domain::meta::MetaState;
use crate::domain::moderation;
use crate::domain::shard::{
    decide_post, FileChunk, FileRecord, PostContext, PostDecision, PostOutcome, ProposedPost,
    RoomHead, StoredMessage,
};
use crate::raft::{
    Command, CommandResult, Entry, GroupId, LogId, Moderate, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use stoa_proto::{ApiError, ErrorCode, Message, Seq};
use tokio::sync::{mpsc, watch};

/// Messages one `Moderate` entry changes at most, so one apply holds a bounded batch and event
/// list; a command that reaches it is proposed again until it changes fewer. Deterministic: every
/// replica stops at the same message.
pub const MODERATED_PER_ENTRY_MAX: u64 = 10_000;
/// Rows one sled batch of a snapshot install removes, and bytes of rows it writes, at most: an
/// install of any size holds about one batch in memory.
const INSTALL_BATCH_ROWS: usize = 10_000;
const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// A page of [`ShardView::moderated_since`]: moderations by count, each with the messages it
/// changed (in their current form).
#[derive(Debug, Default)]
pub struct ModeratedPage {
    pub moderations: Vec<(u64, Vec<Message>)>,
    pub more: bool,
}

/// Refuses reads of a shard whose snapshot install failed part-way (its rows may be half
/// replaced; the install is finished when the node restarts).
fn check_usable(unusable: &AtomicBool, group: GroupId) -> Result<(), StorageError> {
    if unusable.load(Ordering::Acquire) {
        return Err(read_err(StoreError::Corrupt {
            key: format!("{group}"),
            reason: "a snapshot install failed part-way; restart the node to finish it".into(),
        }));
    }
    Ok(())
}

/// The count of a moderation-log key.
fn moderation_count(key: &[u8]) -> Result<u64, StorageError> {
    keys::moderation_count(key).ok_or_else(|| {
        read_err(StoreError::Corrupt {
            key: keys::describe(key),
            reason: "short moderation key".into(),
        })
    })
}

/// What a shard applied, in log order, for live fan-out and the search index.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A new message in a room (by room id).
    Posted(u64, Message),
    /// Messages of a room (by id) that moderation removed or replaced, in their new form;
    /// `moderation` is the room's moderation count this change reached.
    Replaced {
        room: u64,
        moderation: u64,
        messages: Vec<Message>,
    },
    /// A snapshot replaced the shard's state: what it brought has no events of its own.
    Installed(GroupId),
}

/// Changes of consecutive entries, written to sled together.
#[derive(Default)]
struct Segment {
    /// Rows written, in order (a later write of a key wins).
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The directory as changed by this segment (meta group; copied at its first command).
    meta: Option<MetaState>,
    /// Heads and dedup records changed in this segment, seen before it is written.
    heads: HashMap<u64, RoomHead>,
    dedup: HashMap<Vec<u8>, PostOutcome>,
    chunks: usize,
    moderated: bool,
    /// Moderation counts of rooms reached in this segment, not yet published.
    moderations: HashMap<u64, u64>,
    /// A fence raised in this segment, not yet published.
    fence: Option<u64>,
    events: Vec<Applied>,
}

impl Segment {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, value));
    }

    /// Whether the segment holds writes a stored-content read must see first.
    fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.chunks == 0 && !self.moderated && self.fence.is_none()
    }
}

/// Entries whose decision reads stored messages or chunks rather than heads and dedup records.
fn reads_stored_content(payload: &EntryPayload<TypeConfig>) -> bool {
    match payload {
        EntryPayload::Normal(Command::Moderate(_)) => true,
        EntryPayload::Normal(Command::Posts(posts)) => posts.iter().any(|p| p.file.is_some()),
        EntryPayload::Normal(Command::FileChunk(_)) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Read access to the meta directory for sessions; `changes` ticks after every applied batch.
#[derive(Clone)]
pub struct MetaView {
    state: Arc<RwLock<MetaState>>,
    changes: watch::Sender<u64>,
    /// The log index the published state includes, stored after the state is published: read
    /// before a check, it is a lower bound of the directory version the check saw.
    index: Arc<AtomicU64>,
}

impl MetaView {
    /// The meta log index this replica's directory has reached (a lower bound for any read
    /// that follows).
    pub fn applied_index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    pub fn read<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ticks after every applied batch of directory changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wait (up to `timeout`) until `f` answers `Some`, re-checking after each applied batch. Lets a
    /// node that lags the meta leader by a few entries still find a user or room just created.
    pub async fn wait_for<T>(
        &self,
        timeout: std::time::Duration,
        f: impl Fn(&MetaState) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.read(&f) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.read(&f),
            }
        }
    }
}

/// Read access to a shard's rooms for sessions and room actors.
#[derive(Clone)]
pub struct ShardView {
    store: Arc<Store>,
    group: GroupId,
    heads: Arc<RwLock<HashMap<u64, RoomHead>>>,
    /// See `Command::Fence`.
    fence: Arc<AtomicU64>,
    /// Held for writing while a snapshot install replaces the shard's rows; readers of rows hold
    /// it for reading, so none sees a half-replaced shard.
    installing: Arc<RwLock<()>>,
    /// Each room's moderation count (rooms never moderated are absent: 0).
    moderations: Arc<RwLock<HashMap<u64, u64>>>,
    /// Set when an install failed part-way: see [`check_usable`].
    unusable: Arc<AtomicBool>,
}

impl ShardView {
    /// Run `f` on the blocking pool with the shard's rows readable: not while a snapshot
    /// install replaces them, nor after one failed part-way.
    async fn with_rows<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let store = self.store.clone();
        let (installing, unusable, group) =
            (self.installing.clone(), self.unusable.clone(), self.group);
        blocking(move || {
            let _rows = installing.read().unwrap_or_else(|e| e.into_inner());
            check_usable(&unusable, group)?;
            f(&store)
        })
        .await
    }

    /// Every room of the shard with its head.
    pub fn heads(&self) -> Vec<(u64, RoomHead)> {
        let heads = self.heads.read().unwrap_or_else(|e| e.into_inner());
        heads.iter().map(|(r, h)| (*r, h.clone())).collect()
    }

    /// The meta index this shard is fenced at (see `Command::Fence`).
    pub fn fence(&self) -> u64 {
        self.fence.load(Ordering::Acquire)
    }

    pub fn last_seq(&self, room: u64) -> Seq {
        let heads = self.heads.read().unwrap_or_else(|e| e.into_inner());
        heads.get(&room).map_or(Seq::ZERO, |h| h.last_seq)
    }

    /// The shard's group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// False once a snapshot install failed part-way (see [`check_usable`]).
    pub fn usable(&self) -> bool {
        !self.unusable.load(Ordering::Acquire)
    }

    /// How many moderations changed messages of `room` so far (as applied on this replica).
    pub fn moderation(&self, room: u64) -> u64 {
        let counts = self.moderations.read().unwrap_or_else(|e| e.into_inner());
        counts.get(&room).copied().unwrap_or(0)
    }

    /// The moderations of `room` after `count` and up to `through`, in order, each with the
    /// current form of the messages up to `upto` it changed (none, if it changed only later
    /// ones). Stops after the moderation that brings the messages to `limit` or more, or after
    /// `limit` moderations: `more` says whether later ones remain.
    pub async fn moderated_since(
        &self,
        room_id: u64,
        room: String,
        count: u64,
        through: u64,
        upto: Seq,
        limit: usize,
    ) -> Result<ModeratedPage, StorageError> {
        let group = self.group;
        self.with_rows(move |store| {
            let start = keys::moderation(group, room_id, Some(count.saturating_add(1)));
            let end = keys::moderation(group, room_id, Some(through.saturating_add(1)));
            let mut page = ModeratedPage::default();
            let mut messages = 0;
            for kv in store.sm.range(start..end) {
                let (k, v) = kv.map_err(read_err)?;
                if messages >= limit || page.moderations.len() >= limit {
                    page.more = true;
                    break;
                }
                let counted = moderation_count(&k)?;
                let changed: Vec<u64> = decode_stored(&k, &v)?;
                let mut now = Vec::new();
                for seq in changed.into_iter().filter(|s| *s <= upto.0) {
                    let key = keys::message(group, room_id, seq);
                    if let Some(v) = store.sm.get(&key).map_err(read_err)? {
                        let m: StoredMessage = decode_stored(&key, &v)?;
                        now.push(m.into_message(&room, Seq(seq)));
                    }
                }
                messages += now.len();
                page.moderations.push((counted, now));
            }
            Ok(page)
        })
        .await
    }

    /// Messages of `room` with `after < seq < before`, oldest first; at most `limit`, taken from the
    /// newest end when `newest` is set (scroll back) and from the oldest end otherwise (catch up).
    pub async fn read(
        &self,
        room_id: u64,
        room: String,
        after: Seq,
        before: Seq,
        limit: usize,
        newest: bool,
    ) -> Result<Vec<Message>, StorageError> {
        let group = self.group;
        self.with_rows(move |store| {
            if before.0 <= after.0.saturating_add(1) {
                return Ok(Vec::new());
            }
            let range =
                keys::message(group, room_id, after.0 + 1)..keys::message(group, room_id, before.0);
            let iter = store.sm.range(range);
            let mut out = Vec::with_capacity(limit.min(1024));
            let mut push =
                |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Result<(), StorageError> {
                    let (k, v) = kv.map_err(read_err)?;
                    let seq = keys::message_seq(&k).unwrap_or(0);
                    let m: StoredMessage = decode_stored(&k, &v)?;
                    out.push(m.into_message(&room, Seq(seq)));
                    Ok(())
                };
            if newest {
                for kv in iter.rev().take(limit) {
                    push(kv)?;
                }
                out.reverse();
            } else {
                for kv in iter.take(limit) {
                    push(kv)?;
                }
            }
            Ok(out)
        })
        .await
    }
}

impl ShardView {
    /// A file posted in `room_id`, with the message that shows it (none if no such file).
    pub async fn file(
        &self,
        room_id: u64,
        room: String,
        file_id: String,
    ) -> Result<Option<(FileRecord, Message)>, StorageError> {
        let group = self.group;
        self.with_rows(move |store| {
            let key = keys::file(group, room_id, &file_id);
            let Some(v) = store.sm.get(&key).map_err(read_err)? else {
                return Ok(None);
            };
            let record: FileRecord = decode_stored(&key, &v)?;
            let mkey = keys::message(group, room_id, record.seq.0);
            let Some(m) = store.sm.get(&mkey).map_err(read_err)? else {
                return Ok(None);
            };
            let m: StoredMessage = decode_stored(&mkey, &m)?;
            let message = m.into_message(&room, record.seq);
            Ok(Some((record, message)))
        })
        .await
    }

    /// Bytes `offset..offset + limit` of a stored file (fewer at its end).
    pub async fn read_file(
        &self,
        room_id: u64,
        file_id: String,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let group = self.group;
        self.with_rows(move |store| {
            let mut out = Vec::with_capacity(limit.min(1 << 20));
            // Chunks have a fixed size, so the page starts in chunk offset / size.
            let chunk = crate::net::session::STORED_CHUNK_BYTES as u64;
            let first = u32::try_from(offset / chunk).unwrap_or(u32::MAX);
            let mut at = u64::from(first) * chunk;
            let prefix = keys::file_chunk(group, room_id, &file_id, None);
            let start = keys::file_chunk(group, room_id, &file_id, Some(first));
            for kv in store
                .sm
                .range(start..)
                .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            {
                let (_, chunk) = kv.map_err(read_err)?;
                let end = at + chunk.len() as u64;
                if end > offset {
                    let from = offset.saturating_sub(at) as usize;
                    let take = (limit - out.len()).min(chunk.len() - from);
                    out.extend_from_slice(&chunk[from..from + take]);
                    if out.len() == limit {
                        break;
                    }
                }
                at = end;
            }
            Ok(out)
        })
        .await
    }
}

enum Kind {
    Meta(MetaView),
    Shard {
        view: ShardView,
        applied_tx: Option<mpsc::Sender<Vec<Applied>>>,
    },
}

/// The values at a snapshot's cut of the keys written since. A build scans the group's rows
/// without holding up applies: before an apply changes a key for the first time after the cut,
/// it records the key's value at the cut here (`None`: absent), and the scan writes that value
/// instead of the current one. Holds the keys written while a build scans (two per post).
type CutValues = HashMap<Vec<u8>, Option<sled::IVec>>;

struct Inner {
    store: Arc<Store>,
    group: GroupId,
    kind: Kind,
    applied: Mutex<AppliedState>,
    /// Held while applying, and by a snapshot build while it takes its cut.
    write_lock: Mutex<()>,
    /// Held by a snapshot build from its cut to its end, and by an install: one at a time, so
    /// no row is deleted while a build scans.
    build_lock: Mutex<()>,
    /// While a build scans: see [`CutValues`].
    cut: Mutex<Option<CutValues>>,
    /// Held while the current snapshot's record changes, and while it is read and its file
    /// opened, so a reader never finds a file that was just deleted.
    snap_lock: Mutex<()>,
    snapshot_seq: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl StateMachine {
    pub async fn open_meta(store: Arc<Store>) -> Result<(StateMachine, MetaView), StorageError> {
        let view = MetaView {
            state: Default::default(),
            changes: watch::channel(0).0,
            index: Default::default(),
        };
        let sm = Self::open(store, GroupId::META, Kind::Meta(view.clone())).await?;
        Ok((sm, view))
    }

    pub async fn open_shard(
        store: Arc<Store>,
        group: GroupId,
        applied_tx: Option<mpsc::Sender<Vec<Applied>>>,
    ) -> Result<(StateMachine, ShardView), StorageError> {
        let view = ShardView {
            store: store.clone(),
            group,
            heads: Default::default(),
            fence: Default::default(),
            installing: Default::default(),
            moderations: Default::default(),
            unusable: Default::default(),
        };
        let sm = Self::open(
            store,
            group,
            Kind::Shard {
                view: view.clone(),
                applied_tx,
            },
        )
        .await?;
        Ok((sm, view))
    }

    async fn open(
        store: Arc<Store>,
        group: GroupId,
        kind: Kind,
    ) -> Result<StateMachine, StorageError> {
        let inner = Arc::new(Inner {
            store,
            group,
            kind,
            applied: Default::default(),
            write_lock: Mutex::new(()),
            build_lock: Mutex::new(()),
            cut: Mutex::new(None),
            snap_lock: Mutex::new(()),
            snapshot_seq: Default::default(),
        });
        let i = inner.clone();
        blocking(move || i.resume_install_or_load()).await?;
        Ok(StateMachine { inner })
    }
}

impl Inner {
    /// Finish an install a crash interrupted (its rows may be half replaced), or just load.
    fn resume_install_or_load(&self) -> Result<(), StorageError> {
        let marker = keys::install_marker(self.group);
        match self.store.snap.get(&marker).map_err(read_err)? {
            Some(v) => {
                let install: StoredSnapshot = decode_stored(&marker, &v)?;
                tracing::warn!(group = %self.group, snapshot = %install.meta.snapshot_id,
                    "finishing a snapshot install that was interrupted");
                self.finish_install(install)
            }
            None => self.load(),
        }
    }

    /// Load the in-memory parts (applied state, directory, room heads) from sled.
    fn load(&self) -> Result<(), StorageError> {
        let applied_key = keys::sm_tag(self.group, keys::APPLIED);
        let applied = match self.store.sm.get(&applied_key).map_err(read_err)? {
            Some(v) => decode_stored(&applied_key, &v)?,
            None => AppliedState::default(),
        };
        let applied_index = applied.last_applied.map_or(0, |l| l.index);
        self.store
            .note_applied(self.group, applied.last_applied.map(|l| l.index));
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = applied;
        match &self.kind {
            Kind::Meta(view) => {
                let key = keys::sm_tag(self.group, keys::META_STATE);
                let state = match self.store.sm.get(&key).map_err(read_err)? {
                    Some(v) => decode_stored(&key, &v)?,
                    None => MetaState::default(),
                };
                *view.state.write().unwrap_or_else(|e| e.into_inner()) = state;
                view.index.store(applied_index, Ordering::Release);
                view.changes.send_modify(|v| *v += 1);
            }
            Kind::Shard { view, .. } => {
                let mut heads = HashMap::new();
                for kv in self
                    .store
                    .sm
                    .scan_prefix(keys::sm_tag(self.group, keys::HEAD))
                {
                    let (k, v) = kv.map_err(read_err)?;
                    let room = keys::head_room(&k).ok_or_else(|| {
                        read_err(StoreError::Corrupt {
                            key: keys::describe(&k),
                            reason: "short head key".into(),
                        })
                    })?;
                    heads.insert(room, decode_stored(&k, &v)?);
                }
                let mut moderations = HashMap::new();
                for room in heads.keys() {
                    let prefix = keys::moderation(self.group, *room, None);
                    if let Some(kv) = self.store.sm.scan_prefix(&prefix).next_back() {
                        let (k, _) = kv.map_err(read_err)?;
                        moderations.insert(*room, moderation_count(&k)?);
                    }
                }
                *view.moderations.write().unwrap_or_else(|e| e.into_inner()) = moderations;
                *view.heads.write().unwrap_or_else(|e| e.into_inner()) = heads;
                let key = keys::sm_tag(self.group, keys::FENCE);
                let fence: u64 = match self.store.sm.get(&key).map_err(read_err)? {
                    Some(v) => decode_stored(&key, &v)?,
                    None => 0,
                };
                view.fence.store(fence, Ordering::Release);
            }
        }
        Ok(())
    }

    fn apply_blocking(
        &self,
        entries: Vec<Entry>,
    ) -> Result<(Vec<CommandResult>, Vec<Applied>), StorageError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut results = Vec::with_capacity(entries.len());
        let mut seg = Segment::default();

        for entry in entries {
            // Commands that read stored messages or chunks see everything applied before them.
            if reads_stored_content(&entry.payload) && !seg.is_empty() {
                self.write_segment(&mut seg, &applied)?;
            }
            applied.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::None,
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::None
                }
                EntryPayload::Normal(Command::Meta(cmd)) => match &self.kind {
                    // One copy of the directory per segment, changed in place, moved to readers.
                    Kind::Meta(view) => {
                        let state = seg.meta.get_or_insert_with(|| view.read(|s| s.clone()));
                        CommandResult::Meta(state.apply_at(entry.log_id.index, &cmd))
                    }
                    Kind::Shard { .. } => CommandResult::Meta(Err(wrong_group(self.group))),
                },
                EntryPayload::Normal(Command::Posts(posts)) => match self.shard_view() {
                    Some(view) => CommandResult::Posts(self.apply_posts(view, &mut seg, posts)?),
                    None => CommandResult::Posts(vec![Err(wrong_group(self.group)); posts.len()]),
                },
                EntryPayload::Normal(Command::Moderate(m)) => match self.shard_view() {
                    Some(view) => CommandResult::Moderated(Ok(self.moderate(view, &mut seg, &m)?)),
                    None => CommandResult::Moderated(Err(wrong_group(self.group))),
                },
                EntryPayload::Normal(Command::FileChunk(c)) => match self.shard_view() {
                    Some(_) => CommandResult::FileChunk(self.store_chunk(&mut seg, c)?),
                    None => CommandResult::FileChunk(Err(wrong_group(self.group))),
                },
                EntryPayload::Normal(Command::Fence { meta_index }) => {
                    if let Some(view) = self.shard_view() {
                        let current = seg.fence.unwrap_or_else(|| view.fence());
                        let fence = current.max(meta_index);
                        seg.put(
                            keys::sm_tag(self.group, keys::FENCE),
                            encode_stored(&fence)?,
                        );
                        seg.fence = Some(fence);
                    }
                    CommandResult::None
                }
            };
            results.push(result);
        }
        self.write_segment(&mut seg, &applied)?;
        Ok((results, seg.events))
    }

    fn shard_view(&self) -> Option<&ShardView> {
        match &self.kind {
            Kind::Shard { view, .. } => Some(view),
            Kind::Meta(_) => None,
        }
    }

    fn apply_posts(
        &self,
        view: &ShardView,
        seg: &mut Segment,
        posts: Vec<ProposedPost>,
    ) -> Result<Vec<Result<PostOutcome, ApiError>>, StorageError> {
        let mut out = Vec::with_capacity(posts.len());
        for post in posts {
            let dkey = keys::dedup(self.group, post.room_id, &post.author, &post.client_msg_id);
            let earlier = match seg.dedup.get(&dkey) {
                Some(o) => Some(*o),
                None => match self.store.sm.get(&dkey).map_err(read_err)? {
                    Some(v) => Some(decode_stored(&dkey, &v)?),
                    None => None,
                },
            };
            let head = match seg.heads.get(&post.room_id) {
                Some(h) => Some(h.clone()),
                None => view
                    .heads
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&post.room_id)
                    .cloned(),
            };
            let file_bytes = match &post.file {
                // The segment was written before this entry (see `reads_stored_content`).
                Some(f) => self.stored_file_bytes(post.room_id, &f.id)?,
                None => 0,
            };
            let ctx = PostContext {
                head: head.as_ref(),
                earlier,
                file_bytes,
                fence: seg.fence.unwrap_or_else(|| view.fence()),
            };
            match decide_post(ctx, &post) {
                PostDecision::Append { outcome, message } => {
                    let key = keys::message(self.group, post.room_id, outcome.seq.0);
                    if let Some(f) = &message.file {
                        let record = FileRecord {
                            seq: outcome.seq,
                            file: f.clone(),
                        };
                        seg.put(
                            keys::file(self.group, post.room_id, &f.id),
                            encode_stored(&record)?,
                        );
                    }
                    seg.put(key, encode_stored(&message)?);
                    seg.put(dkey.clone(), encode_stored(&outcome)?);
                    seg.dedup.insert(dkey, outcome);
                    seg.heads.insert(
                        post.room_id,
                        RoomHead {
                            name: post.room.clone(),
                            last_seq: outcome.seq,
                        },
                    );
                    seg.events.push(Applied::Posted(
                        post.room_id,
                        message.into_message(&post.room, outcome.seq),
                    ));
                    out.push(Ok(outcome));
                }
                PostDecision::Duplicate(outcome) => out.push(Ok(outcome)),
                PostDecision::Refuse(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }

    fn stored_file_bytes(&self, room_id: u64, file_id: &str) -> Result<u64, StorageError> {
        let mut total = 0u64;
        for kv in self
            .store
            .sm
            .scan_prefix(keys::file_chunk(self.group, room_id, file_id, None))
        {
            let (_, v) = kv.map_err(read_err)?;
            total += v.len() as u64;
        }
        Ok(total)
    }

    /// Store a chunk, unless its file was posted already (a late retry must not change the bytes
    /// a posted hash describes).
    fn store_chunk(
        &self,
        seg: &mut Segment,
        c: FileChunk,
    ) -> Result<Result<(), ApiError>, StorageError> {
        let record = keys::file(self.group, c.room_id, &c.file_id);
        if self.store.sm.contains_key(&record).map_err(read_err)? {
            return Ok(Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("file {} is posted already", c.file_id),
            )));
        }
        seg.put(
            keys::file_chunk(self.group, c.room_id, &c.file_id, Some(c.index)),
            c.data.to_vec(),
        );
        seg.chunks += 1;
        Ok(Ok(()))
    }

    /// Remove or replace every stored message the filter selects. Runs on a written segment, so
    /// it sees every message applied before it; keeps each message's first original.
    fn moderate(
        &self,
        view: &ShardView,
        seg: &mut Segment,
        m: &Moderate,
    ) -> Result<u64, StorageError> {
        let names: HashMap<u64, String> = view
            .heads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, h)| (*id, h.name.clone()))
            .collect();
        // Per room, in key order: the new form of the messages changed.
        let mut changed: Vec<(u64, Vec<Message>)> = Vec::new();
        let mut count = 0u64;
        for kv in self
            .store
            .sm
            .scan_prefix(keys::messages_of(self.group, m.room_id))
        {
            if count >= MODERATED_PER_ENTRY_MAX {
                break; // the proposer sends the command again for the rest
            }
            let (k, v) = kv.map_err(read_err)?;
            let stored: StoredMessage = decode_stored(&k, &v)?;
            if !moderation::selects(&m.filter, &stored) {
                continue;
            }
            let new = moderation::moderate(&stored, &m.action);
            if new == stored {
                continue; // replaced with this very text already: nothing to change or count
            }
            let (Some(room_id), Some(seq)) = (keys::message_room(&k), keys::message_seq(&k)) else {
                continue;
            };
            let original = keys::original(self.group, room_id, seq);
            if !self.store.sm.contains_key(&original).map_err(read_err)? {
                seg.put(original, v.to_vec());
            }
            seg.put(k.to_vec(), encode_stored(&new)?);
            count += 1;
            let name = names.get(&room_id).map_or("", String::as_str);
            let message = new.into_message(name, Seq(seq));
            match changed.last_mut() {
                Some((r, ms)) if *r == room_id => ms.push(message),
                _ => changed.push((room_id, vec![message])),
            }
        }
        for (room, messages) in changed {
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq.0).collect();
            // Each room counts its moderations and logs what each changed, so a client that
            // was away can be sent it (`ShardView::moderated_since`).
            let counted = match seg.moderations.get(&room) {
                Some(c) => *c,
                None => view.moderation(room),
            } + 1;
            seg.put(
                keys::moderation(self.group, room, Some(counted)),
                encode_stored(&seqs)?,
            );
            seg.moderations.insert(room, counted);
            seg.events.push(Applied::Replaced {
                room,
                moderation: counted,
                messages,
            });
        }
        seg.moderated = true;
        Ok(count)
    }

    /// Write what a segment changed in one sled batch, with the applied state it reaches, then
    /// publish it to readers.
    fn write_segment(&self, seg: &mut Segment, applied: &AppliedState) -> Result<(), StorageError> {
        let mut writes = std::mem::take(&mut seg.writes);
        let heads = std::mem::take(&mut seg.heads);
        seg.dedup.clear();
        seg.chunks = 0;
        seg.moderated = false;
        let fence = seg.fence.take();
        let meta = seg.meta.take();
        let moderations = std::mem::take(&mut seg.moderations);
        for (room, head) in &heads {
            writes.push((keys::head(self.group, *room), encode_stored(head)?));
        }
        if let Some(state) = &meta {
            writes.push((
                keys::sm_tag(self.group, keys::META_STATE),
                encode_stored(state)?,
            ));
        }
        writes.push((
            keys::sm_tag(self.group, keys::APPLIED),
            encode_stored(applied)?,
        ));
        self.keep_cut_values(&writes)?;
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            batch.insert(k, v);
        }
        self.store.sm.apply_batch(batch).map_err(write_err)?;
        self.store
            .note_applied(self.group, applied.last_applied.map(|l| l.index));

        // Publish to readers only after the batch is in sled, so a reader never sees a head whose
        // messages it cannot read.
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = applied.clone();
        match &self.kind {
            Kind::Meta(view) => {
                if let Some(state) = meta {
                    *view.state.write().unwrap_or_else(|e| e.into_inner()) = state;
                    let index = applied.last_applied.map_or(0, |l| l.index);
                    view.index.store(index, Ordering::Release);
                    view.changes.send_modify(|v| *v += 1);
                }
            }
            Kind::Shard { view, .. } => {
                view.heads
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(heads);
                view.moderations
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(moderations);
                if let Some(f) = fence {
                    view.fence.store(f, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Stream the group's rows, as they were at one cut, into a new snapshot file; the rows are
    /// never all in memory, and applies go on while the rows are scanned.
    fn build_snapshot_blocking(&self) -> Result<Snapshot, StorageError> {
        let _one = self.build_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cut = self.take_cut();
        self.build_from_cut(cut)
    }

    /// The applied state the snapshot will describe; from here on applies keep the values they
    /// change (see [`CutValues`]).
    fn take_cut(&self) -> AppliedState {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        *self.cut.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Before `writes` are applied: if a build is scanning, keep the value at its cut of each
    /// key written for the first time since.
    fn keep_cut_values(&self, writes: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StorageError> {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        let Some(values) = cut.as_mut() else {
            return Ok(());
        };
        for (k, _) in writes {
            if !values.contains_key(k) {
                let at_cut = self.store.sm.get(k).map_err(read_err)?;
                values.insert(k.clone(), at_cut);
            }
        }
        Ok(())
    }

    fn build_from_cut(&self, applied: AppliedState) -> Result<Snapshot, StorageError> {
        let file = {
            // Applies stop keeping values when the scan ends, however it ends.
            let _end = EndCut(&self.cut);
            self.scan_cut()?
        };
        let name = file.finish()?;
        let n = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}-{n}", self.group, id.leader_id, id.index),
            None => format!("{}-none-{n}", self.group),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let data = self.open_snapshot_file(&name)?;
        self.record_snapshot(&meta, name, None)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }

    /// The group's rows as they were at the cut: a key written since is taken from the cut's
    /// values (skipped if it did not exist then). No row is deleted meanwhile (installs wait
    /// for the build), so the scan meets every row of the cut.
    fn scan_cut(&self) -> Result<SnapshotWriter, StorageError> {
        let mut file = SnapshotWriter::create(&self.store.snapshots, self.group)?;
        for kv in self.store.sm.scan_prefix(keys::group_prefix(self.group)) {
            let (k, v) = kv.map_err(read_err)?;
            let at_cut = self
                .cut
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|c| c.get(&k[..]).cloned());
            match at_cut {
                None => file.row(&k, &v)?,
                Some(Some(old)) => file.row(&k, &old)?,
                Some(None) => {}
            }
        }
        Ok(file)
    }

    fn open_snapshot_file(&self, name: &str) -> Result<tokio::fs::File, StorageError> {
        let file = std::fs::File::open(self.store.snapshots.join(name)).map_err(read_err)?;
        Ok(tokio::fs::File::from_std(file))
    }

    /// Make `file` the group's current snapshot and delete the file it replaces. With `state`
    /// (the end of an install: the applied state), `state` and the end of the install are
    /// written in the same sled transaction as the record. A build never
    /// replaces a snapshot as new as its own: an install may have finished while it wrote its
    /// file, and recording the older build would make this node serve a snapshot older than
    /// the log it purged. sled is synced before the old file goes, so after a crash sled never
    /// names a deleted file.
    fn record_snapshot(
        &self,
        meta: &SnapshotMeta,
        file: String,
        state: Option<sled::Batch>,
    ) -> Result<(), StorageError> {
        let _snap = self.snap_lock.lock().unwrap_or_else(|e| e.into_inner());
        let key = keys::group_prefix(self.group);
        let marker = keys::install_marker(self.group);
        let current: Option<StoredSnapshot> = match self.store.snap.get(key).map_err(read_err)? {
            Some(v) => Some(decode_stored(&key, &v)?),
            None => None,
        };
        if let (None, Some(c)) = (&state, &current) {
            if c.meta.last_log_id >= meta.last_log_id {
                std::fs::remove_file(self.store.snapshots.join(&file)).map_err(write_err)?;
                return Ok(());
            }
        }
        let stored = encode_stored(&StoredSnapshot {
            meta: meta.clone(),
            file: file.clone(),
        })?;
        match state {
            None => {
                self.store.snap.insert(key, stored).map_err(write_err)?;
            }
            Some(batch) => {
                use sled::Transactional;
                (&self.store.sm, &self.store.snap)
                    .transaction(|(sm, snap)| {
                        sm.apply_batch(&batch)?;
                        snap.insert(&key[..], stored.as_slice())?;
                        snap.remove(marker.as_slice())?;
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| write_err(std::io::Error::other(format!("{e:?}"))))?;
            }
        }
        self.store.snap.flush().map_err(write_err)?;
        if let Some(c) = current.filter(|c| c.file != file) {
            // A reader may still have it open (a transfer to a follower): unlinking leaves its
            // data readable until closed.
            std::fs::remove_file(self.store.snapshots.join(&c.file)).map_err(write_err)?;
        }
        Ok(())
    }

    /// Replace this group's state with a received snapshot's rows, never holding them all in
    /// memory. The rows come from a peer: every record is checked, while copying them into a
    /// file of our own, before anything changes. Then sled records an install in progress
    /// (synced), and [`Inner::finish_install`] replaces the rows; a crash in between is redone
    /// when the group opens.
    fn install_blocking(
        &self,
        meta: &SnapshotMeta,
        received: std::fs::File,
    ) -> Result<(), StorageError> {
        let mut rows = snapfile::Rows::new(std::io::BufReader::new(received), self.group);
        let mut file = SnapshotWriter::create(&self.store.snapshots, self.group)?;
        while let Some((k, v)) = rows.next_row()? {
            file.row(&k, &v)?;
        }
        let install = StoredSnapshot {
            meta: meta.clone(),
            file: file.finish()?,
        };
        let marker = keys::install_marker(self.group);
        self.store
            .snap
            .insert(&marker, encode_stored(&install)?)
            .map_err(write_err)?;
        self.store.snap.flush().map_err(write_err)?;
        self.finish_install(install)
    }

    /// Replace the group's rows with those of `install`'s file, in sled batches of bounded size,
    /// then record the snapshot, the applied state and the end of the install in one
    /// transaction. Idempotent, so an install a crash interrupted is simply run again. Readers
    /// of the group's rows wait meanwhile: they would see a mix of old and new.
    fn finish_install(&self, install: StoredSnapshot) -> Result<(), StorageError> {
        // The build lock first: readers queued behind a waiting writer would otherwise wait for
        // a running build's whole scan too.
        let _no_build = self.build_lock.lock().unwrap_or_else(|e| e.into_inner());
        let _readers = self
            .shard_view()
            .map(|v| v.installing.write().unwrap_or_else(|e| e.into_inner()));
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let replaced = self.replace_rows(install);
        if replaced.is_err() {
            if let Some(v) = self.shard_view() {
                v.unusable.store(true, Ordering::Release);
            }
        }
        replaced
    }

    /// [`Inner::finish_install`]'s work, under its locks.
    fn replace_rows(&self, install: StoredSnapshot) -> Result<(), StorageError> {
        let prefix = keys::group_prefix(self.group);
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.store.sm.scan_prefix(prefix).take(INSTALL_BATCH_ROWS) {
                let (k, _) = kv.map_err(read_err)?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.store.sm.apply_batch(batch).map_err(write_err)?;
        }
        let path = self.store.snapshots.join(&install.file);
        let file = std::fs::File::open(&path).map_err(read_err)?;
        let mut rows = snapfile::Rows::new(std::io::BufReader::new(file), self.group);
        let (mut batch, mut bytes) = (sled::Batch::default(), 0);
        while let Some((k, v)) = rows.next_row()? {
            bytes += k.len() + v.len();
            batch.insert(k, v);
            if bytes >= INSTALL_BATCH_BYTES {
                let full = std::mem::take(&mut batch);
                self.store.sm.apply_batch(full).map_err(write_err)?;
                bytes = 0;
            }
        }
        let applied = AppliedState {
            last_applied: install.meta.last_log_id,
            membership: install.meta.last_membership.clone(),
        };
        batch.insert(
            keys::sm_tag(self.group, keys::APPLIED),
            encode_stored(&applied)?,
        );
        self.record_snapshot(&install.meta, install.file, Some(batch))?;
        // Still under the write lock: a snapshot build waiting for it must see the new rows
        // together with the new applied state.
        self.load()
    }
}

/// Ends a build's cut when dropped.
struct EndCut<'a>(&'a Mutex<Option<CutValues>>);

impl Drop for EndCut<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A snapshot build stopped at its cut, for tests that apply entries before the scan.
#[cfg(test)]
pub(crate) struct PendingBuild(AppliedState);

#[cfg(test)]
impl StateMachine {
    pub(crate) fn take_cut_for_test(&self) -> PendingBuild {
        PendingBuild(self.inner.take_cut())
    }

    pub(crate) fn build_from_cut_for_test(&self, cut: PendingBuild) -> Snapshot {
        self.inner.build_from_cut(cut.0).expect("snapshot built")
    }
}

fn wrong_group(g: GroupId) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("command sent to the wrong kind of group ({g})"),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let inner = self.inner.clone();
        blocking(move || inner.build_snapshot_blocking()).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self
            .inner
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let inner = self.inner.clone();
        let applied = blocking(move || inner.apply_blocking(entries)).await;
        let (results, fanout) =
            applied.inspect_err(|_| self.inner.store.note_failed(self.inner.group))?;
        if let Kind::Shard {
            applied_tx: Some(tx),
            ..
        } = &self.inner.kind
        {
            if !fanout.is_empty() {
                // Bounded: if fan-out falls behind, apply waits rather than grow memory. A closed
                // channel means the node is shutting down; the data is stored regardless.
                let _ = tx.send(fanout).await;
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// An unnamed file in the snapshots directory: openraft writes the chunks it receives into
    /// it, so a big snapshot arrives on disk, not in memory; it disappears when dropped.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let dir = self.inner.store.snapshots.clone();
        let file = blocking(move || tempfile::tempfile_in(&dir).map_err(write_err)).await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let rewind = async {
            snapshot.flush().await?;
            snapshot.seek(std::io::SeekFrom::Start(0)).await?;
            std::io::Result::Ok(())
        };
        rewind.await.map_err(read_err)?;
        let received = snapshot.into_std().await;
        let inner = self.inner.clone();
        let meta = meta.clone();
        let installed = blocking(move || inner.install_blocking(&meta, received)).await;
        if installed.is_err() {
            self.inner.store.note_failed(self.inner.group);
        }
        if let (
            Ok(()),
            Kind::Shard {
                applied_tx: Some(tx),
                ..
            },
        ) = (&installed, &self.inner.kind)
        {
            // In order with the applied events: room actors start over from the new state.
            let _ = tx.send(vec![Applied::Installed(self.inner.group)]).await;
        }
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let inner = self.inner.clone();
        blocking(move || {
            let key = keys::group_prefix(inner.group);
            let _snap = inner.snap_lock.lock().unwrap_or_else(|e| e.into_inner());
            match inner.store.snap.get(key).map_err(read_err)? {
                Some(v) => {
                    let s: StoredSnapshot = decode_stored(&key, &v)?;
                    Ok(Some(Snapshot {
                        snapshot: Box::new(inner.open_snapshot_file(&s.file)?),
                        meta: s.meta,
                    }))
                }
                None => Ok(None),
            }
        })
        .await
    }
}

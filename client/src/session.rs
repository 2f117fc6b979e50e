//! The state one `Client` shares with its tasks: the current connection, requests, event delivery
//! through the resume bookkeeping, background resubscribes, and the supervisor that reconnects.

use crate::{
    connection::{open_link, quic_client_config, Hook, Link, LinkEnd, CLOSE_NORMAL},
    resume::{Begin, Resume, Resync, Token, Verdict},
    ClientConfig, ClientError, Result, RosterEvent,
};
use bytes::Bytes;
use rand::Rng;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};
use stoa_proto::{
    encode_frame, ClientFrame, CodecError, ErrorCode, Hello, Message, Request, Response, Seq,
    PROTOCOL_VERSION,
};
use tokio::{
    sync::{mpsc, watch, Semaphore},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

/// Messages per History request when catching up a room whose backlog the node refused.
pub(crate) const CATCH_UP_PAGE_MESSAGES: u32 = 500;

/// Locks a std mutex. Nothing panics while holding these locks (they guard plain maps and the
/// pure [`Resume`] state), so a poisoned lock still holds consistent data and is used as is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The connection as callers see it.
#[derive(Clone)]
pub(crate) enum State {
    Connecting,
    Up(Arc<Link>),
    /// Reconnecting failed for `retry_deadline`, or the node refused us for good.
    Failed(ClientError),
    Closed,
}

impl State {
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Failed(_) | State::Closed)
    }
}

const CLOSED_NOTICES_MAX: usize = 1024;
/// Moderated messages kept for an application that has not asked for them yet.
const REPLACED_KEPT_MAX: usize = 10_000;

pub(crate) struct Shared {
    pub cfg: ClientConfig,
    pub endpoint: quinn::Endpoint,
    pub endpoint_v6: bool,
    pub owns_endpoint: bool,
    pub quic: quinn::ClientConfig,
    /// The encoded hello, sent first on every connection.
    pub hello: Bytes,
    pub state: watch::Sender<State>,
    shutdown: watch::Sender<bool>,
    pub resume: Mutex<Resume>,
    /// Rooms the node closed for this client, with why; taken by `Client::closed_rooms`.
    pub closed: Mutex<Vec<(String, stoa_proto::ApiError)>>,
    /// New versions of moderated messages; taken by `Client::replaced`.
    pub replaced: Mutex<std::collections::VecDeque<Message>>,
    events_tx: mpsc::Sender<Message>,
    pub events_rx: Mutex<Option<mpsc::Receiver<Message>>>,
    pub events_taken: AtomicBool,
    roster_tx: mpsc::Sender<RosterEvent>,
    pub roster_rx: Mutex<Option<mpsc::Receiver<RosterEvent>>>,
    pub roster_taken: AtomicBool,
    next_id: AtomicU64,
    in_flight: Semaphore,
}

impl Shared {
    pub fn new(cfg: ClientConfig, endpoint: quinn::Endpoint, owns_endpoint: bool) -> Result<Self> {
        cfg.validate()?;
        let quic = quic_client_config(&cfg)?;
        let hello = ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: cfg.token.clone(),
        });
        let hello = encode_frame(&hello, cfg.frame_bytes_max).map_err(encode_error)?;
        let endpoint_v6 = endpoint
            .local_addr()
            .map_err(|e| ClientError::io("cannot read the endpoint's address", e))?
            .is_ipv6();
        let (events_tx, events_rx) = mpsc::channel(cfg.events_buffer);
        let (roster_tx, roster_rx) = mpsc::channel(cfg.events_buffer);
        Ok(Shared {
            in_flight: Semaphore::new(cfg.requests_in_flight_max),
            cfg,
            endpoint,
            endpoint_v6,
            owns_endpoint,
            quic,
            hello,
            state: watch::Sender::new(State::Connecting),
            shutdown: watch::Sender::new(false),
            resume: Mutex::new(Resume::new()),
            closed: Mutex::new(Vec::new()),
            replaced: Mutex::default(),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            events_taken: AtomicBool::new(false),
            roster_tx,
            roster_rx: Mutex::new(Some(roster_rx)),
            roster_taken: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        })
    }

    /// First connection: each server once, in list order. Starts the supervisor on success.
    pub async fn connect_first(self: &Arc<Self>) -> Result<()> {
        let mut last = None;
        for index in 0..self.cfg.servers.len() {
            match open_link(self, index).await {
                Ok((link, reader)) => {
                    self.set_state(State::Up(link.clone()));
                    tokio::spawn(self.clone().supervise(link, reader));
                    return Ok(());
                }
                Err(e) if e.is_fatal_for_connect() => return Err(e),
                Err(e) => {
                    debug!(server = %self.cfg.servers[index], error = %e, "cannot connect");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::config("servers", "no server given")))
    }

    /// Sets the state unless the client is closed; returns whether it did.
    fn set_state(&self, new: State) -> bool {
        self.state.send_if_modified(|s| {
            if matches!(s, State::Closed) {
                false
            } else {
                *s = new;
                true
            }
        })
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        if let State::Up(link) = self.state.send_replace(State::Closed) {
            link.close(CLOSE_NORMAL, "client closed");
        }
    }

    async fn shut_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which cannot outlive `self`: treat as shut down.
        let _ = rx.wait_for(|down| *down).await;
    }

    /// The live connection, waiting while one is being made.
    pub async fn link(&self) -> Result<Arc<Link>> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Up(link) if !link.is_dead() => return Ok(link.clone()),
                State::Failed(e) => return Err(e.clone()),
                State::Closed => return Err(ClientError::Closed),
                State::Up(_) | State::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Sends one request and waits for its answer, at most `request_timeout` once queued. While
    /// the client reconnects, waits for the new connection first; a request not yet queued when
    /// its connection died goes on the next one.
    pub async fn call(&self, body: Request, hook: Option<Hook>) -> Result<Response> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&ClientFrame::Request { id, body }, self.cfg.frame_bytes_max)
            .map_err(encode_error)?;
        let timeout = self.cfg.request_timeout;
        loop {
            let link = self.link().await?;
            let Ok(answer) = link.register(id, hook.clone()) else {
                continue;
            };
            // If the caller gives up (drops this future), its waiter must not stay behind.
            let mut waiting = Unregister {
                link: &link,
                id,
                armed: true,
            };
            let outcome = tokio::time::timeout(timeout, async {
                // A send fails only once the writer has marked the link dead.
                link.send(frame.clone()).await.ok()?;
                Some(answer.await)
            })
            .await;
            waiting.armed = false;
            return match outcome {
                Ok(None) => continue,
                Ok(Some(Ok(Ok(response)))) => Ok(response),
                Ok(Some(Ok(Err(api)))) => Err(ClientError::Api(api)),
                Ok(Some(Err(_))) if *self.shutdown.borrow() => Err(ClientError::Closed),
                Ok(Some(Err(_))) => Err(ClientError::ConnectionLost(link.end_reason())),
                Err(_) => {
                    link.unregister(id);
                    Err(ClientError::Timeout(timeout))
                }
            };
        }
    }

    /// A slot in the event channel. When the application has taken the stream and it is full,
    /// waits for room (back-pressure on the connection). When nobody has taken the stream, or
    /// it was dropped, there is nobody to wait for: `None`, and the message goes nowhere.
    async fn event_slot(&self) -> Option<mpsc::Permit<'_, Message>> {
        match self.events_tx.try_reserve() {
            Ok(permit) => return Some(permit),
            Err(mpsc::error::TrySendError::Closed(())) => return None,
            Err(mpsc::error::TrySendError::Full(())) => {
                if !self.events_taken.load(Ordering::Acquire) {
                    return None;
                }
            }
        }
        tokio::select! {
            permit = self.events_tx.reserve() => permit.ok(),
            _ = self.shut_down() => None,
        }
    }

    /// A message pushed by the node (called by the reader, in stream order).
    pub async fn deliver(self: &Arc<Self>, msg: Message) {
        let slot = self.event_slot().await;
        let verdict = {
            let mut resume = lock(&self.resume);
            let verdict = resume.on_message(&msg);
            // Sent under the lock, so the channel holds each room's messages in seq order even
            // when a catch-up task delivers at the same time.
            if let (Verdict::Deliver, Some(slot)) = (&verdict, slot) {
                slot.send(msg);
            }
            verdict
        };
        if let Verdict::Resync(rs) = verdict {
            debug!(room = %rs.room, after = %rs.after, "gap: subscribing again");
            self.spawn_resync(rs);
        }
    }

    /// A roster event pushed by the node (called by the reader, in stream order). Events of rooms
    /// no longer followed are dropped; otherwise like messages: the reader waits while a taken
    /// stream is full, and events go nowhere while nobody took it and it is full.
    pub async fn roster_event(&self, room: String, change: stoa_proto::RosterChange) {
        if lock(&self.resume).room(&room).is_none() {
            return;
        }
        let permit = match self.roster_tx.try_reserve() {
            Ok(p) => Some(p),
            Err(mpsc::error::TrySendError::Closed(())) => None,
            Err(mpsc::error::TrySendError::Full(())) => {
                if self.roster_taken.load(Ordering::Acquire) {
                    tokio::select! {
                        p = self.roster_tx.reserve() => p.ok(),
                        _ = self.shut_down() => None,
                    }
                } else {
                    None
                }
            }
        };
        if let Some(p) = permit {
            p.send(RosterEvent { room, change });
        }
    }

    /// A message fetched during a catch-up; returns whether it was new.
    async fn deliver_paged(&self, token: Token, msg: Message) -> bool {
        let slot = self.event_slot().await;
        let mut resume = lock(&self.resume);
        let verdict = resume.paged(token, &msg);
        let new = verdict == Verdict::Deliver;
        if let (true, Some(slot)) = (new, slot) {
            slot.send(msg);
        }
        new
    }

    /// The node ended the room's live delivery for good (disabled, deleted, access removed):
    /// stop following it, so no reconnect tries to resubscribe.
    pub fn room_closed(&self, room: &str, reason: &stoa_proto::ApiError) {
        tracing::warn!(%room, %reason, "room closed by the node");
        lock(&self.resume).remove(room);
        let mut closed = lock(&self.closed);
        // Bounded: only the newest notices are kept for an application that never asks.
        if closed.len() >= CLOSED_NOTICES_MAX {
            closed.remove(0);
        }
        closed.push((room.to_string(), reason.clone()));
    }

    /// An administrator removed or replaced messages of a followed room.
    pub fn replaced(&self, room: &str, moderation: u64, messages: Vec<Message>) {
        lock(&self.resume).on_replaced(room, moderation);
        let mut kept = lock(&self.replaced);
        for m in messages {
            if kept.len() >= REPLACED_KEPT_MAX {
                kept.pop_front();
            }
            kept.push_back(m);
        }
    }

    pub fn lagged(self: &Arc<Self>, room: &str) {
        let resync = lock(&self.resume).on_lagged(room);
        if let Some(rs) = resync {
            self.spawn_resync(rs);
        }
    }

    /// A Subscribe or Join was answered (called by the reader before the next frame).
    pub fn completed(self: &Arc<Self>, hook: &Hook, kind: Begin, last_seq: Seq, moderation: u64) {
        let resync =
            lock(&self.resume).completed(&hook.room, hook.token, kind, last_seq, moderation);
        if let Some(rs) = resync {
            debug!(room = %rs.room, after = %rs.after, "messages passed during subscribe");
            self.spawn_resync(rs);
        }
    }

    pub fn spawn_resync(self: &Arc<Self>, rs: Resync) {
        tokio::spawn(self.clone().resync(rs));
    }

    /// Subscribes `rs.room` again after its cursor, for as long as `rs.token` is the room's
    /// current request. The reader updates the cursor when the answer comes. If the node refuses
    /// the backlog as too large, pages forward with History first.
    async fn resync(self: Arc<Self>, rs: Resync) {
        let Resync { room, token, .. } = rs;
        let deadline = Instant::now() + self.cfg.retry_deadline;
        let mut attempt = 0;
        loop {
            let Some((after, moderated_after)) = lock(&self.resume).resync_after(&room, token)
            else {
                return;
            };
            let request = Request::Subscribe {
                room: room.clone(),
                after: Some(after),
                moderated_after,
            };
            let hook = Hook {
                room: room.clone(),
                token,
            };
            let (err, paging) = match self.call(request, Some(hook)).await {
                Ok(Response::Subscribed { .. }) => return,
                Ok(other) => (
                    ClientError::Protocol(unexpected("Subscribed", &other)),
                    false,
                ),
                Err(ClientError::Api(e)) if e.code == ErrorCode::TooLarge => {
                    match self.catch_up(&room, token).await {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(e) => (e, true),
                    }
                }
                Err(e) => (e, false),
            };
            match err {
                // The supervisor subscribes every room again once it has reconnected.
                ClientError::ConnectionLost(_) | ClientError::Closed => return,
                // The node refuses the subscription itself for good (room gone, access withdrawn).
                ClientError::Api(ref e) if !paging && !e.code.is_retryable() => {
                    if lock(&self.resume).abandon(&room, token) {
                        warn!(%room, error = %err, "room dropped from live delivery");
                    }
                    return;
                }
                _ if Instant::now() < deadline && is_transient(&err) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                _ => {
                    // The next gap or Lagged of the room tries again.
                    lock(&self.resume).failed(&room, token);
                    warn!(%room, error = %err, "cannot resume the room's live delivery");
                    return;
                }
            }
        }
    }

    /// Pages forward from the room's cursor until it reaches the room's last seq. Returns
    /// `false` if `token` stopped being the room's current request.
    async fn catch_up(&self, room: &str, token: Token) -> Result<bool> {
        loop {
            let Some((after, _)) = lock(&self.resume).resync_after(room, token) else {
                return Ok(false);
            };
            let request = Request::History {
                room: room.to_string(),
                before: None,
                after: Some(after),
                limit: CATCH_UP_PAGE_MESSAGES,
            };
            let (messages, last_seq) = match self.call(request, None).await? {
                Response::History {
                    messages, last_seq, ..
                } => (messages, last_seq),
                other => return Err(ClientError::Protocol(unexpected("History", &other))),
            };
            let mut progressed = false;
            for msg in messages {
                progressed |= self.deliver_paged(token, msg).await;
            }
            match lock(&self.resume).resync_after(room, token) {
                None => return Ok(false),
                Some((now, _)) if now >= last_seq => return Ok(true),
                Some(_) if progressed => {}
                Some((now, _)) => {
                    return Err(ClientError::Protocol(format!(
                        "history of {room} after {now} returned nothing new below {last_seq}"
                    )))
                }
            }
        }
    }

    /// Watches the connection; when it ends, reconnects and resubscribes, until the client is
    /// closed or reconnecting fails.
    async fn supervise(self: Arc<Self>, mut link: Arc<Link>, mut reader: JoinHandle<LinkEnd>) {
        loop {
            let end = tokio::select! {
                end = &mut reader => end.unwrap_or_else(|e| LinkEnd::Lost(format!("reader task: {e}"))),
                _ = self.shut_down() => {
                    link.close(CLOSE_NORMAL, "client closed");
                    return;
                }
            };
            info!(server = %link.server, node = %link.welcome.node, reason = %end, "connection ended");
            if let Some(err) = end.fatal() {
                warn!(error = %err, "giving up the connection");
                self.set_state(State::Failed(err));
                return;
            }
            if !self.set_state(State::Connecting) {
                return;
            }
            match self.reconnect(link.index).await {
                Ok((new_link, new_reader)) => {
                    // Tokens first, so requests on the new connection never race the resume.
                    let resyncs = lock(&self.resume).reconnected();
                    if !self.set_state(State::Up(new_link.clone())) {
                        new_link.close(CLOSE_NORMAL, "client closed");
                        return;
                    }
                    info!(server = %new_link.server, node = %new_link.welcome.node, rooms = resyncs.len(), "reconnected");
                    for rs in resyncs {
                        self.spawn_resync(rs);
                    }
                    link = new_link;
                    reader = new_reader;
                }
                Err(e) => {
                    warn!(error = %e, "cannot reconnect");
                    self.set_state(State::Failed(e));
                    return;
                }
            }
        }
    }

    /// Tries the servers in list order, starting from a random one other than `lost`, with a
    /// jittered backoff, until one answers or `retry_deadline` has passed.
    async fn reconnect(self: &Arc<Self>, lost: usize) -> Result<(Arc<Link>, JoinHandle<LinkEnd>)> {
        let n = self.cfg.servers.len();
        let start = if n > 1 {
            (lost + 1 + rand::thread_rng().gen_range(0..n - 1)) % n
        } else {
            0
        };
        let deadline = Instant::now() + self.cfg.retry_deadline;
        let mut attempt: u32 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff(attempt)) => {}
                _ = self.shut_down() => return Err(ClientError::Closed),
            }
            let index = (start + attempt as usize) % n;
            let err = match open_link(self, index).await {
                Ok(opened) => return Ok(opened),
                Err(e) => e,
            };
            debug!(server = %self.cfg.servers[index], error = %err, "reconnect attempt failed");
            if err.is_fatal_for_connect() || Instant::now() >= deadline {
                return Err(err);
            }
            attempt = attempt.saturating_add(1);
        }
    }
}

/// Removes the waiter of a request whose caller stopped waiting before the end.
struct Unregister<'a> {
    link: &'a Link,
    id: u64,
    armed: bool,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.link.unregister(self.id);
        }
    }
}

/// Pause before attempt `attempt` (0-based): up to 50 ms at first, then doubling to at most 1 s,
/// each drawn uniformly from its upper half so many clients do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let mut rng = rand::thread_rng();
    if attempt == 0 {
        return Duration::from_millis(rng.gen_range(0..=50));
    }
    let top_ms: u64 = (50u64 << attempt.min(10)).min(1000);
    Duration::from_millis(rng.gen_range(top_ms / 2..=top_ms))
}

/// Errors worth the same request again on the same connection.
pub(crate) fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::Api(e) => e.code.is_retryable(),
        ClientError::Timeout(_) => true,
        _ => false,
    }
}

pub(crate) fn encode_error(e: CodecError) -> ClientError {
    match e {
        CodecError::FrameTooLarge { len, max } => ClientError::FrameTooLarge { len, max },
        other => ClientError::Protocol(other.to_string()),
    }
}

pub(crate) fn unexpected(wanted: &str, got: &Response) -> String {
    let got = match got {
        Response::Posted { .. } => "Posted",
        Response::Joined { .. } => "Joined",
        Response::History { .. } => "History",
        Response::Subscribed { .. } => "Subscribed",
        Response::Unsubscribed { .. } => "Unsubscribed",
        Response::UserCreated { .. } => "UserCreated",
        Response::RoomCreated(_) => "RoomCreated",
        Response::Rooms(_) => "Rooms",
        Response::WhoAmI { .. } => "WhoAmI",
        Response::Done => "Done",
        Response::Categories(_) => "Categories",
        Response::RoomDetail(_) => "RoomDetail",
        Response::RoomDetails(_) => "RoomDetails",
        Response::Groups(_) => "Groups",
        Response::Policy(_) => "Policy",
        Response::Settings(_) => "Settings",
        Response::AddIns(_) => "AddIns",
        Response::Found(_) => "Found",
        Response::Invitations(_) => "Invitations",
        Response::Followed(_) => "Followed",
        Response::Moderated { .. } => "Moderated",
        Response::UploadReady { .. } => "UploadReady",
        Response::UploadReceived { .. } => "UploadReceived",
        Response::FileData { .. } => "FileData",
        Response::FilePosted { .. } => "FilePosted",
        Response::Participants { .. } => "Participants",
    };
    format!("expected a {wanted} answer, got {got}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        for _ in 0..100 {
            assert!(backoff(0) <= Duration::from_millis(50));
            let b1 = backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b = backoff(30);
            assert!(b >= Duration::from_millis(500) && b <= Duration::from_secs(1));
        }
    }

    #[test]
    fn encode_errors_keep_the_sizes() {
        let e = encode_error(CodecError::FrameTooLarge { len: 10, max: 5 });
        assert!(matches!(e, ClientError::FrameTooLarge { len: 10, max: 5 }));
    }
}

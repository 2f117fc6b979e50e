//! Stoa client SDK: connect to a Stoa cluster over QUIC, post, read history and follow rooms live,
//! with reconnect and resume built in. The `stoa` command-line tool (`src/bin/stoa.rs`) is built
//! on it.
//!
//! Layout:
//! - [`config`]: [`ClientConfig`], its defaults and `validate()`.
//! - [`error`]: [`ClientError`], one enum for every failure, API errors keep their code.
//! - `connection.rs`: TLS/QUIC setup, hello/welcome, and the per-connection writer task (coalesces
//!   queued frames into one write) and reader task (answers waiters, passes events on).
//! - `session.rs`: state shared by a client and its tasks: requests, event delivery, background
//!   resubscribes, the supervisor that reconnects.
//! - [`resume`]: the pure per-room bookkeeping (no I/O) that makes live delivery gap-free and
//!   duplicate-free across gaps, lag and reconnects; unit-tested on its own.
//! - `presence.rs`: a room's roster ([`Client::participants`]) and the roster events of followed
//!   rooms ([`Client::roster_events`]).
//! - `directory.rs`: the directory requests of [`Client`] (categories, rooms and roles, groups,
//!   policy, settings, add-ins).
//! - `lib.rs` (here): [`Client`], its messaging methods, and [`EventStream`].
//!
//! # Delivery and resume
//! For every room subscribed through [`Client::subscribe`] or [`Client::join`] the client keeps the
//! last seq it handed to the application. The [`EventStream`] yields each room's messages in seq
//! order, each once:
//! - a message at or below that seq is a duplicate and is dropped;
//! - a gap (a seq above the next one) or a `Lagged` event from the node makes the client
//!   subscribe again with `after = last`; the node sends the stored backlog, then live messages;
//! - if the node refuses that backlog as too large, the client pages forward with
//!   `history(room, None, Some(last), 500)`, delivering those messages in order, then subscribes.
//!
//! # Reconnect and retries
//! When the connection or its stream dies, or the node says goodbye with `unavailable`, the client
//! reconnects to the next server: it starts from a random one other than the node just lost, goes
//! through the list in order with a jittered backoff (50 ms doubling to 1 s), sends its hello again
//! and resubscribes every room with `after = last seq handed over`. If no node accepts it within
//! `retry_deadline`, or a node refuses the token, the client fails for good: requests return the
//! error and the event stream ends ([`Client::status`] says why).
//!
//! Requests in flight when a connection dies:
//! - [`Client::post`] and [`Client::post_with_id`] are sent again with the same client message id
//!   (the node applies a retried post once and answers the same seq), on connection loss and on
//!   the retryable codes (`unavailable`, `rate_limited`, `internal`), until `retry_deadline` has
//!   passed since the first attempt; then the last error is returned.
//! - every other request fails with [`ClientError::ConnectionLost`] (it may or may not have taken
//!   effect). A request made while the client is reconnecting waits for the new connection.
//! - subscriptions are not requests of the application: they survive reconnects as described.
//!
//! # Limits
//! Every queue is bounded: requests in flight by `requests_in_flight_max` (callers wait for a
//! slot), events by `events_buffer`, frames by `frame_bytes_max`.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> stoa_client::Result<()> {
//! use stoa_client::{Client, ClientConfig};
//! let cfg = ClientConfig::from_files(vec!["127.0.0.1:7400".into()], "token", "ca.pem")?;
//! let client = Client::connect(cfg).await?;
//! let mut events = client.events().expect("a new client's stream is not taken yet");
//! client.subscribe("lobby", None).await?;
//! client.post("lobby", "hello").await?;
//! while let Some(msg) = events.next().await {
//!     println!("#{} {}: {}", msg.seq, msg.author, msg.text);
//! }
//! # Ok(()) }
//! ```

pub mod config;
mod connection;
mod directory;
pub mod error;
mod files;
mod personal;
mod presence;
pub mod resume;
mod session;

pub use config::ClientConfig;
pub use connection::{new_endpoint, TransportStats};
pub use error::{ClientError, Result};
pub use presence::{apply_roster_change, RosterEvent, RosterStream};
/// The QUIC endpoint type [`Client::connect_with_endpoint`] takes, so callers need no quinn dependency.
pub use quinn::Endpoint;
/// The directory's types, as the SDK's directory methods take and answer them.
pub use stoa_proto::{
    AddInInfo, CategoryChange, CategoryInfo, CategorySpec, ClusterSettings, GroupInfo, Invitations,
    PolicyInfo, PolicyScope, Principal, PrincipalList, Privacy, Role, RoomChange, RoomDetail,
    RoomFilter, RoomSpec, RoomType, SettingsChange,
};
pub use stoa_proto::{ApiError, ErrorCode, Message, NodeId, RoomInfo, Roster, RosterChange, Seq};

use resume::Begin;
use session::{lock, unexpected, Shared, State};
use std::sync::{atomic::Ordering, Arc};
use stoa_proto::{Post, Request, Response};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

/// A handle to one connection (and its reconnects) to a Stoa cluster. Cheap to clone; every clone
/// drives the same connection and may be used from many tasks at once. Dropping the last clone
/// closes the connection (like [`Client::close`], without waiting).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

/// Closes the session when the last `Client` clone goes; the tasks hold `Shared`, not this.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// An acknowledged post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub seq: Seq,
    pub ts_ms: u64,
}

/// Who the client is signed in as, and on which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub user: String,
    pub admin: bool,
    pub node: NodeId,
}

/// Where the client's connection stands.
#[derive(Debug, Clone)]
pub enum Status {
    /// (Re)connecting; requests wait.
    Connecting,
    /// Connected to `server`, which is node `node`.
    Connected { server: String, node: NodeId },
    /// Gave up; every request returns this error.
    Failed(ClientError),
    /// Closed by the application.
    Closed,
}

impl Client {
    /// Connects with an endpoint of its own (IPv4 unless a server resolves only to IPv6). Tries
    /// each server once, in list order, and returns the last error if none accepts; a refused
    /// token is returned at once. Needs a Tokio runtime.
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        cfg.validate()?;
        let v6 = connection::servers_need_v6(&cfg.servers).await;
        let endpoint = new_endpoint(v6)?;
        Client::start(cfg, endpoint, true).await
    }

    /// Connects through `endpoint`, which many clients may share (see [`new_endpoint`]). An IPv4
    /// endpoint reaches IPv4 addresses only. [`Client::close`] leaves the endpoint open.
    pub async fn connect_with_endpoint(cfg: ClientConfig, endpoint: Endpoint) -> Result<Client> {
        Client::start(cfg, endpoint, false).await
    }

    async fn start(cfg: ClientConfig, endpoint: quinn::Endpoint, owns: bool) -> Result<Client> {
        let shared = Arc::new(Shared::new(cfg, endpoint, owns)?);
        let client = Client {
            inner: Arc::new(Handle {
                shared: shared.clone(),
            }),
        };
        // On failure `client` drops here and shuts the half-made session down.
        shared.connect_first().await?;
        Ok(client)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Posts `text` to `room` with a fresh random client message id and no alert. Retried as
    /// described in the crate docs.
    pub async fn post(&self, room: &str, text: &str) -> Result<Posted> {
        self.post_with_id(room, text, &new_client_msg_id(), false)
            .await
    }

    /// Posts with the caller's client message id (at most 128 bytes): the node applies all posts
    /// with the same id once and answers each with the same seq. On connection loss and on a
    /// retryable error code the post is sent again, with the same id, until `retry_deadline` has
    /// passed since the first attempt; after that, or on any other error, the error is returned.
    pub async fn post_with_id(
        &self,
        room: &str,
        text: &str,
        client_msg_id: &str,
        alert: bool,
    ) -> Result<Posted> {
        let post = Post {
            room: room.to_string(),
            client_msg_id: client_msg_id.to_string(),
            text: text.to_string(),
            alert,
        };
        let deadline = Instant::now() + self.shared().cfg.retry_deadline;
        let mut attempt = 0;
        loop {
            let err = match self.shared().call(Request::Post(post.clone()), None).await {
                Ok(Response::Posted { seq, ts_ms }) => return Ok(Posted { seq, ts_ms }),
                Ok(other) => return Err(ClientError::Protocol(unexpected("Posted", &other))),
                Err(e) => e,
            };
            let retry = match &err {
                ClientError::ConnectionLost(_) => true,
                ClientError::Api(e) => e.code.is_retryable(),
                _ => false,
            };
            let now = Instant::now();
            if !retry || now >= deadline {
                return Err(err);
            }
            tracing::debug!(room, client_msg_id, error = %err, "post sent again");
            if matches!(err, ClientError::Api(_)) {
                // A lost connection is waited for in `call`; a busy node gets a pause.
                tokio::time::sleep(session::backoff(attempt).min(deadline - now)).await;
                attempt += 1;
            }
        }
    }

    /// Joins `room`: answers its last messages (the node's `default_chat_history`, oldest first)
    /// and the room's last seq, and subscribes the room: the event stream continues after that
    /// seq. Not retried on connection loss.
    pub async fn join(&self, room: &str) -> Result<(Vec<Message>, Seq)> {
        let (token, _) = lock(&self.shared().resume).begin(room, None, Begin::Join);
        let _settle = Settle {
            shared: self.shared(),
            room,
            token,
        };
        let hook = connection::Hook {
            room: room.to_string(),
            token,
        };
        match self
            .shared()
            .call(
                Request::Join {
                    room: room.to_string(),
                },
                Some(hook),
            )
            .await?
        {
            Response::Joined {
                messages, last_seq, ..
            } => Ok((messages, last_seq)),
            other => Err(ClientError::Protocol(unexpected("Joined", &other))),
        }
    }

    /// A page of `room`'s stored messages, oldest first, and the room's last seq. `before`: the
    /// page just before that seq; `after`: the page just after it; neither: the newest page.
    pub async fn history(
        &self,
        room: &str,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: u32,
    ) -> Result<(Vec<Message>, Seq)> {
        let request = Request::History {
            room: room.to_string(),
            before,
            after,
            limit,
        };
        match self.shared().call(request, None).await? {
            Response::History {
                messages, last_seq, ..
            } => Ok((messages, last_seq)),
            other => Err(ClientError::Protocol(unexpected("History", &other))),
        }
    }

    /// Follows `room` live on the event stream. With `after`, the stream starts with the stored
    /// messages after that seq (and [`Client::replaced`] gets the messages up to it that moderation
    /// changed); without it, a room already followed resumes after the last
    /// message handed over, and a new one starts with the next message posted. Answers the
    /// room's last seq. On error the room is not followed (unless it already was).
    pub async fn subscribe(&self, room: &str, after: Option<Seq>) -> Result<Seq> {
        let (token, send_after, moderated_after) = {
            let mut resume = lock(&self.shared().resume);
            let (token, send_after) = resume.begin(room, after, Begin::Subscribe);
            (token, send_after, resume.moderated_after(room))
        };
        let _settle = Settle {
            shared: self.shared(),
            room,
            token,
        };
        let hook = connection::Hook {
            room: room.to_string(),
            token,
        };
        let request = Request::Subscribe {
            room: room.to_string(),
            after: send_after,
            moderated_after,
        };
        match self.shared().call(request, Some(hook)).await? {
            Response::Subscribed { last_seq, .. } => Ok(last_seq),
            other => Err(ClientError::Protocol(unexpected("Subscribed", &other))),
        }
    }

    /// Stops following `room`; messages of it still in flight are dropped.
    pub async fn unsubscribe(&self, room: &str) -> Result<()> {
        lock(&self.shared().resume).remove(room);
        match self
            .shared()
            .call(
                Request::Unsubscribe {
                    room: room.to_string(),
                },
                None,
            )
            .await?
        {
            Response::Unsubscribed { .. } => Ok(()),
            other => Err(ClientError::Protocol(unexpected("Unsubscribed", &other))),
        }
    }

    /// Creates a user (administrators only); answers the new user's token.
    pub async fn create_user(&self, name: &str, admin: bool) -> Result<String> {
        let request = Request::CreateUser {
            name: name.to_string(),
            admin,
        };
        match self.shared().call(request, None).await? {
            Response::UserCreated { token, .. } => Ok(token),
            other => Err(ClientError::Protocol(unexpected("UserCreated", &other))),
        }
    }

    pub async fn create_room(&self, name: &str, description: &str) -> Result<RoomInfo> {
        let request = Request::CreateRoom {
            name: name.to_string(),
            description: description.to_string(),
        };
        match self.shared().call(request, None).await? {
            Response::RoomCreated(info) => Ok(info),
            other => Err(ClientError::Protocol(unexpected("RoomCreated", &other))),
        }
    }

    /// The rooms this user may see.
    pub async fn list_rooms(&self) -> Result<Vec<RoomInfo>> {
        match self.shared().call(Request::ListRooms, None).await? {
            Response::Rooms(rooms) => Ok(rooms),
            other => Err(ClientError::Protocol(unexpected("Rooms", &other))),
        }
    }

    pub async fn whoami(&self) -> Result<WhoAmI> {
        match self.shared().call(Request::WhoAmI, None).await? {
            Response::WhoAmI { user, admin, node } => Ok(WhoAmI { user, admin, node }),
            other => Err(ClientError::Protocol(unexpected("WhoAmI", &other))),
        }
    }

    /// The live messages of every followed room; `None` if already taken (it can be taken once).
    ///
    /// Take it before subscribing and keep reading it. While it is full (`events_buffer`), the
    /// connection's reader waits for the application, and answers to requests wait behind the
    /// events; if that lasts, the node stops live delivery (Lagged) and the client resumes from
    /// history once there is room again. Messages that arrive before the stream is taken are kept
    /// up to `events_buffer`; beyond that, and after the stream is dropped, they are discarded.
    pub fn events(&self) -> Option<EventStream> {
        let rx = lock(&self.shared().events_rx).take()?;
        self.shared().events_taken.store(true, Ordering::Release);
        Some(EventStream {
            rx,
            state: self.shared().state.subscribe(),
        })
    }

    /// Rooms whose live delivery the node ended for good since the last call (room disabled or
    /// deleted, or this user's access removed), with the node's reason. Such rooms are no longer
    /// followed; subscribe again once the cause is gone.
    pub fn closed_rooms(&self) -> Vec<(String, ApiError)> {
        std::mem::take(
            &mut *self
                .shared()
                .closed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Messages of followed rooms that an administrator removed or replaced since the last call,
    /// in their new form (`moderated` set; same room and seq as the message they replace). Show
    /// them in place of the old ones. The newest 10,000 are kept for an application that never
    /// asks; a room resumed after a lag or reconnect may have missed some, so re-read its history.
    pub fn replaced(&self) -> Vec<Message> {
        lock(&self.shared().replaced).drain(..).collect()
    }

    /// The last seq of `room` handed to the event stream, if the room is followed and its
    /// starting point known.
    pub fn last_seq(&self, room: &str) -> Option<Seq> {
        lock(&self.shared().resume).room(room)?.last()
    }

    pub fn status(&self) -> Status {
        match &*self.shared().state.borrow() {
            State::Connecting => Status::Connecting,
            State::Up(link) if link.is_dead() => Status::Connecting,
            State::Up(link) => Status::Connected {
                server: link.server.clone(),
                node: link.welcome.node,
            },
            State::Failed(e) => Status::Failed(e.clone()),
            State::Closed => Status::Closed,
        }
    }

    /// The current connection's QUIC counters (datagrams, bytes, ACKs, losses), `None` while not
    /// connected. They restart from zero when the client reconnects.
    pub fn transport_stats(&self) -> Option<TransportStats> {
        match &*self.shared().state.borrow() {
            State::Up(link) if !link.is_dead() => Some(link.transport_stats()),
            _ => None,
        }
    }

    /// Drops the current connection as if the network had failed; the client reconnects to
    /// another server and resumes. For tests and the reconnect-storm workload.
    pub fn force_reconnect(&self) {
        if let State::Up(link) = &*self.shared().state.borrow() {
            link.close(connection::CLOSE_NORMAL, "reconnect requested");
        }
    }

    /// Closes the connection, for every clone: requests in flight fail with [`ClientError::Closed`], the event
    /// stream ends after the messages already buffered. With its own endpoint, waits (at most one
    /// second) until the node has been told.
    pub async fn close(&self) {
        self.shared().shutdown();
        if self.shared().owns_endpoint {
            let endpoint = &self.shared().endpoint;
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Settles a Subscribe or Join request when its call ends, however it ends (error, timeout,
/// cancellation). After a success the reader has already settled it and this does nothing.
struct Settle<'a> {
    shared: &'a Shared,
    room: &'a str,
    token: resume::Token,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        lock(&self.shared.resume).failed(self.room, self.token);
    }
}

/// Messages of the followed rooms, each room in seq order without gap or duplicate.
pub struct EventStream {
    rx: mpsc::Receiver<Message>,
    state: watch::Receiver<State>,
}

impl EventStream {
    /// The next message; `None` once the client is closed or has failed and the buffered
    /// messages are drained.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            msg = self.rx.recv() => msg,
            _ = self.state.wait_for(State::is_terminal) => self.rx.try_recv().ok(),
        }
    }

    /// A message if one is buffered, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

/// A fresh client message id: 128 random bits as 32 hex digits.
pub fn new_client_msg_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

//! A small in-memory stand-in for Stoa nodes, speaking the real wire protocol over real QUIC, so
//! the SDK's connection, retry and resume code can be tested without the node crate. Several
//! "nodes" share one state (one cluster). Fault hooks: lose live deliveries, lag subscribers,
//! refuse posts, drop connections, take a node down, stay mute.

// Each test crate uses a different part of the helper.
#![allow(dead_code)]

use bytes::Bytes;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use stoa_proto::{
    encode_frame, limits::FRAME_BYTES_MAX, ApiError, ClientFrame, ErrorCode, Event, FrameDecoder,
    Message, NodeId, Post, Request, Response, RoomInfo, Seq, ServerFrame, Welcome, ALPN_CLIENT,
    CLUSTER_SERVER_NAME,
};
use tokio::sync::mpsc;

pub const GOOD_TOKEN: &str = "good-token";

#[derive(Default)]
pub struct Faults {
    /// Live deliveries to skip (each lost one makes a gap for its receiver).
    pub lose_live: usize,
    /// Posts to answer with `unavailable` before applying any.
    pub refuse_posts: usize,
    /// Posts to apply and then drop the connection without answering.
    pub drop_after_post: usize,
    /// Requests are read and never answered.
    pub mute: bool,
    /// Largest backlog a Subscribe with `after` may ask for.
    pub backlog_max: u64,
}

struct Session {
    node: usize,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<ServerFrame>,
    subs: HashSet<String>,
}

#[derive(Default)]
pub struct State {
    rooms: HashMap<String, Vec<Message>>,
    posts: HashMap<(String, String), (Seq, u64)>,
    pub post_attempts: usize,
    pub subscribes: usize,
    pub histories: usize,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    pub faults: Faults,
}

pub struct Cluster {
    pub state: Arc<Mutex<State>>,
    pub addrs: Vec<SocketAddr>,
    pub ca_pem: Vec<u8>,
    down: Vec<Arc<std::sync::atomic::AtomicBool>>,
    _endpoints: Vec<quinn::Endpoint>,
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        let cert = rcgen::generate_simple_self_signed(vec![CLUSTER_SERVER_NAME.to_string()])
            .expect("test certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
        let quic = Arc::new(QuicServerConfig::try_from(tls).unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        state.lock().unwrap().faults.backlog_max = 1000;
        state
            .lock()
            .unwrap()
            .rooms
            .insert("lobby".into(), Vec::new());
        let mut addrs = Vec::new();
        let mut down = Vec::new();
        let mut endpoints = Vec::new();
        for node in 0..nodes {
            let config = quinn::ServerConfig::with_crypto(quic.clone());
            let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
            addrs.push(endpoint.local_addr().unwrap());
            let is_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(accept_loop(
                endpoint.clone(),
                node,
                state.clone(),
                is_down.clone(),
            ));
            down.push(is_down);
            endpoints.push(endpoint);
        }
        Cluster {
            state,
            addrs,
            ca_pem: cert.cert.pem().into_bytes(),
            down,
            _endpoints: endpoints,
        }
    }

    pub fn servers(&self) -> Vec<String> {
        self.addrs.iter().map(|a| a.to_string()).collect()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Closes every client connection of `node`; with `down`, refuses new ones too.
    pub fn kill(&self, node: usize, down: bool) {
        self.down[node].store(down, std::sync::atomic::Ordering::SeqCst);
        let mut st = self.state.lock().unwrap();
        st.sessions.retain(|_, s| {
            if s.node == node {
                s.conn.close(0u32.into(), b"killed");
                false
            } else {
                true
            }
        });
    }

    /// Stops live delivery of `room` to every subscriber, telling them with Lagged.
    pub fn lag(&self, room: &str) {
        let mut st = self.state.lock().unwrap();
        let last = Seq(st.rooms.get(room).map_or(0, |m| m.len() as u64));
        for s in st.sessions.values_mut() {
            if s.subs.remove(room) {
                let _ = s.tx.send(ServerFrame::Event(Event::Lagged {
                    room: room.into(),
                    after: last,
                }));
            }
        }
    }

    /// Ends live delivery of `room` to every subscriber for good, telling them with RoomClosed.
    pub fn close(&self, room: &str, reason: &str) {
        let mut st = self.state.lock().unwrap();
        for s in st.sessions.values_mut() {
            if s.subs.remove(room) {
                let _ = s.tx.send(ServerFrame::Event(Event::RoomClosed {
                    room: room.into(),
                    reason: ApiError::new(ErrorCode::Forbidden, reason),
                }));
            }
        }
    }

    /// Sessions connected to `node`.
    pub fn sessions_on(&self, node: usize) -> usize {
        self.state
            .lock()
            .unwrap()
            .sessions
            .values()
            .filter(|s| s.node == node)
            .count()
    }

    pub fn stored(&self, room: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .rooms
            .get(room)
            .map_or(0, Vec::len)
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    node: usize,
    state: Arc<Mutex<State>>,
    down: Arc<std::sync::atomic::AtomicBool>,
) {
    while let Some(incoming) = endpoint.accept().await {
        if down.load(std::sync::atomic::Ordering::SeqCst) {
            incoming.refuse();
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                let _ = serve(conn, node, state).await;
            }
        });
    }
}

async fn serve(
    conn: quinn::Connection,
    node: usize,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let bytes: Bytes = encode_frame(&frame, FRAME_BYTES_MAX).unwrap();
            if send.write_chunk(bytes).await.is_err() {
                return;
            }
            if matches!(frame, ServerFrame::Goodbye(_)) {
                // Closing the connection at once would discard the goodbye: wait until the
                // client has it (or a grace period passes).
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                return;
            }
        }
    });
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut id = None;
    loop {
        while let Some(frame) = decoder.next_frame::<ClientFrame>()? {
            match frame {
                ClientFrame::Hello(hello) if id.is_none() => {
                    if hello.token != GOOD_TOKEN {
                        let _ = tx.send(ServerFrame::Goodbye(ApiError::new(
                            ErrorCode::Unauthenticated,
                            "unknown token",
                        )));
                        return Ok(());
                    }
                    let mut st = state.lock().unwrap();
                    st.next_session += 1;
                    let sid = st.next_session;
                    st.sessions.insert(
                        sid,
                        Session {
                            node,
                            conn: conn.clone(),
                            tx: tx.clone(),
                            subs: HashSet::new(),
                        },
                    );
                    id = Some(sid);
                    let _ = tx.send(ServerFrame::Welcome(Welcome {
                        version: stoa_proto::PROTOCOL_VERSION,
                        node: NodeId(node as u64 + 1),
                        user: "ann".into(),
                        admin: true,
                    }));
                }
                ClientFrame::Request { id: rid, body } => {
                    let sid = id.ok_or_else(|| anyhow::anyhow!("request before hello"))?;
                    let mut st = state.lock().unwrap();
                    if st.faults.mute {
                        continue;
                    }
                    let drop_conn =
                        matches!(body, Request::Post(_)) && st.faults.drop_after_post > 0;
                    let result = handle(&mut st, sid, body);
                    if drop_conn && result.is_ok() {
                        st.faults.drop_after_post -= 1;
                        st.sessions.remove(&sid);
                        conn.close(0u32.into(), b"dropped after post");
                        return Ok(());
                    }
                    let _ = tx.send(ServerFrame::Response { id: rid, result });
                }
                ClientFrame::Hello(_) => anyhow::bail!("second hello"),
            }
        }
        match recv.read_chunk(64 << 10, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            _ => break,
        }
    }
    if let Some(sid) = id {
        state.lock().unwrap().sessions.remove(&sid);
    }
    Ok(())
}

fn not_found(room: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no room {room}"))
}

fn handle(st: &mut State, sid: u64, body: Request) -> Result<Response, ApiError> {
    match body {
        Request::Post(Post {
            room,
            client_msg_id,
            text,
            alert,
        }) => {
            st.post_attempts += 1;
            if st.faults.refuse_posts > 0 {
                st.faults.refuse_posts -= 1;
                return Err(ApiError::new(ErrorCode::Unavailable, "no leader"));
            }
            if let Some(&(seq, ts_ms)) = st.posts.get(&(room.clone(), client_msg_id.clone())) {
                return Ok(Response::Posted { seq, ts_ms });
            }
            let log = st.rooms.get_mut(&room).ok_or_else(|| not_found(&room))?;
            let seq = Seq(log.len() as u64 + 1);
            let ts_ms = 1_700_000_000_000 + seq.0;
            let msg = Message {
                room: room.clone(),
                seq,
                author: "ann".into(),
                text,
                ts_ms,
                alert,
                moderated: None,
                file: None,
            };
            log.push(msg.clone());
            st.posts.insert((room.clone(), client_msg_id), (seq, ts_ms));
            for s in st.sessions.values() {
                if s.subs.contains(&room) {
                    if st.faults.lose_live > 0 {
                        st.faults.lose_live -= 1;
                        continue;
                    }
                    let _ = s.tx.send(ServerFrame::Event(Event::Message(msg.clone())));
                }
            }
            Ok(Response::Posted { seq, ts_ms })
        }
        // Moderation is not modelled here (the cluster tests cover it): its count stays 0.
        Request::Subscribe { room, after, .. } => {
            st.subscribes += 1;
            let log = st.rooms.get(&room).ok_or_else(|| not_found(&room))?;
            let last = log.len() as u64;
            let backlog: Vec<Message> = match after {
                Some(a) if last.saturating_sub(a.0) > st.faults.backlog_max => {
                    return Err(ApiError::new(ErrorCode::TooLarge, "backlog over the limit"));
                }
                Some(a) => log.iter().filter(|m| m.seq > a).cloned().collect(),
                None => Vec::new(),
            };
            let s = st
                .sessions
                .get_mut(&sid)
                .expect("session registered at hello");
            for m in backlog {
                let _ = s.tx.send(ServerFrame::Event(Event::Message(m)));
            }
            s.subs.insert(room.clone());
            Ok(Response::Subscribed {
                room,
                last_seq: Seq(last),
                moderation: 0,
            })
        }
        Request::Join { room } => {
            let log = st.rooms.get(&room).ok_or_else(|| not_found(&room))?;
            let messages = log[log.len().saturating_sub(30)..].to_vec();
            let last_seq = Seq(log.len() as u64);
            st.sessions
                .get_mut(&sid)
                .expect("session registered at hello")
                .subs
                .insert(room.clone());
            Ok(Response::Joined {
                room,
                messages,
                last_seq,
                moderation: 0,
            })
        }
        Request::History {
            room,
            before,
            after,
            limit,
        } => {
            st.histories += 1;
            let log = st.rooms.get(&room).ok_or_else(|| not_found(&room))?;
            let limit = limit as usize;
            let messages: Vec<Message> = match (before, after) {
                (_, Some(a)) => log
                    .iter()
                    .filter(|m| m.seq > a)
                    .take(limit)
                    .cloned()
                    .collect(),
                (Some(b), None) => {
                    let older: Vec<&Message> = log.iter().filter(|m| m.seq < b).collect();
                    older[older.len().saturating_sub(limit)..]
                        .iter()
                        .map(|m| (*m).clone())
                        .collect()
                }
                (None, None) => log[log.len().saturating_sub(limit)..].to_vec(),
            };
            Ok(Response::History {
                room,
                messages,
                last_seq: Seq(log.len() as u64),
            })
        }
        Request::Unsubscribe { room } => {
            st.sessions
                .get_mut(&sid)
                .expect("session registered at hello")
                .subs
                .remove(&room);
            Ok(Response::Unsubscribed { room })
        }
        Request::CreateUser { name, .. } => Ok(Response::UserCreated {
            token: format!("tok-{name}"),
            name,
        }),
        Request::CreateRoom { name, description } => {
            if st.rooms.contains_key(&name) {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("room {name} exists"),
                ));
            }
            st.rooms.insert(name.clone(), Vec::new());
            Ok(Response::RoomCreated(RoomInfo {
                name,
                description,
                shard: 1,
            }))
        }
        Request::ListRooms => {
            let mut rooms: Vec<RoomInfo> = st
                .rooms
                .keys()
                .map(|name| RoomInfo {
                    name: name.clone(),
                    description: String::new(),
                    shard: 1,
                })
                .collect();
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Response::Rooms(rooms))
        }
        Request::WhoAmI => {
            let node = st.sessions.get(&sid).map_or(0, |s| s.node as u64 + 1);
            Ok(Response::WhoAmI {
                user: "ann".into(),
                admin: true,
                node: NodeId(node),
            })
        }
        // The directory is the real node's business; the fake only speaks messaging.
        _ => Err(ApiError::new(
            ErrorCode::Invalid,
            "the fake node has no directory",
        )),
    }
}

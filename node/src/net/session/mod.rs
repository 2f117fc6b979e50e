//! One client connection: the hello and token check, then requests (many in flight, each answered
//! by id) and pushed room events, over one bidirectional stream.
//!
//! Bounded everywhere: a hello deadline; frames over `frame_bytes_max` close the stream; at most
//! `requests_in_flight_max` requests are worked on at once (reading pauses beyond that, and QUIC
//! flow control pushes back on the client); the send queue holds `send_queue_frames_max` frames,
//! and a room whose events do not fit is cut from live delivery (see [`crate::fanout`]).

mod ops;

pub use ops::{new_token, now_ms, STORED_CHUNK_BYTES};

use crate::fanout::{next_subscriber_id, Lagged, Subscriber};
use crate::node::NodeCtx;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stoa_proto::{
    encode_frame, ApiError, ClientFrame, ErrorCode, Event, FrameDecoder, ServerFrame, Welcome,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, Semaphore};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing session waits for the client to acknowledge its last frames.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);
/// How long a hello waits for this node to learn of a user created elsewhere a moment ago.
/// (A change made through this node is visible here at once; this covers changes made elsewhere.)
const DIRECTORY_LAG_WAIT: Duration = Duration::from_millis(500);
/// Frames the writer sends in one write.
const WRITE_BATCH_FRAMES: usize = 256;

/// The signed-in user of a session.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

pub(crate) struct Session {
    ctx: Arc<NodeCtx>,
    user: User,
    out: mpsc::Sender<Bytes>,
    subscriber: Subscriber,
    /// Subscribed rooms: name → room id.
    rooms: Mutex<HashMap<String, u64>>,
    rate: Mutex<RateLimit>,
    /// File uploads in progress, by the id this session gave them.
    uploads: Mutex<HashMap<u64, ops::Upload>>,
}

/// Serve a client connection until it closes.
pub async fn run(conn: quinn::Connection, ctx: Arc<NodeCtx>) {
    let Ok(_permit) = ctx.connections.clone().try_acquire_owned() else {
        conn.close(1u32.into(), b"too many connections");
        return;
    };
    let _link = ctx.links.track(&conn);
    let remote = conn.remote_address();
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => {
            conn.close(2u32.into(), b"no stream opened");
            return;
        }
    };
    let limits = &ctx.config.limits;
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, &mut decoder)).await
    {
        Ok(Ok(Some(ClientFrame::Hello(h)))) => h,
        Ok(Ok(Some(_))) => {
            return goodbye(
                send,
                ErrorCode::Unauthenticated,
                "the first frame must be a hello",
            )
            .await
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return goodbye(send, e.code, &e.message).await,
        Err(_) => return goodbye(send, ErrorCode::Unauthenticated, "no hello within 10 s").await,
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this node speaks {PROTOCOL_VERSION}",
            hello.version
        );
        return goodbye(send, ErrorCode::Invalid, &msg).await;
    }
    let digest = token_digest(&hello.token);
    let found = ctx
        .meta
        .wait_for(DIRECTORY_LAG_WAIT, |m| {
            m.user_by_token_digest(&digest).map(|u| User {
                name: u.name.clone(),
                admin: u.admin,
            })
        })
        .await;
    let Some(user) = found else {
        return goodbye(send, ErrorCode::Unauthenticated, "unknown token").await;
    };
    tracing::debug!(node = %ctx.node, user = %user.name, %remote, "signed in");

    let (out, out_rx) = mpsc::channel::<Bytes>(limits.send_queue_frames_max);
    let lagged = Arc::new(Lagged::default());
    let welcome = ServerFrame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        node: ctx.node,
        user: user.name.clone(),
        admin: user.admin,
    });
    match encode_frame(&welcome, limits.frame_bytes_max) {
        Ok(f) => {
            if send.write_all(&f).await.is_err() {
                return;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode welcome");
            return;
        }
    }
    let writer = tokio::spawn(write_loop(
        send,
        out_rx,
        lagged.clone(),
        limits.frame_bytes_max,
        ctx.counters.live_cuts.clone(),
    ));
    let session = Arc::new(Session {
        subscriber: Subscriber {
            id: next_subscriber_id(),
            user: user.name.clone(),
            tx: out.clone(),
            lagged,
        },
        rate: Mutex::new(RateLimit::new(limits.posts_per_s_per_connection_max)),
        ctx: ctx.clone(),
        user,
        out,
        rooms: Mutex::default(),
        uploads: Mutex::default(),
    });
    let in_flight = Arc::new(Semaphore::new(limits.requests_in_flight_max));
    // No timeout on reading frames: a client that only listens sends nothing for as long as it
    // likes. A dead client is noticed by QUIC's idle timeout (its keep-alives keep it alive).
    loop {
        let frame = match read_frame(&mut recv, &mut decoder).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                session.send(ServerFrame::Goodbye(e)).await;
                break;
            }
        };
        match frame {
            ClientFrame::Request { id, body } => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let session = session.clone();
                tokio::spawn(async move {
                    let result = ops::handle(&session, body).await;
                    session.send(ServerFrame::Response { id, result }).await;
                    drop(permit);
                });
            }
            ClientFrame::Hello(_) => {
                session
                    .send(ServerFrame::Goodbye(ApiError::new(
                        ErrorCode::Invalid,
                        "hello sent twice",
                    )))
                    .await;
                break;
            }
        }
    }
    session.unsubscribe_all();
    drop(session);
    // The writer ends when every sender is gone: the session and requests still running.
    let _ = writer.await;
    tracing::debug!(node = %ctx.node, %remote, "signed out");
}

impl Session {
    /// Queue a frame, waiting for room in the send queue (responses are never dropped).
    async fn send(&self, frame: ServerFrame) {
        match encode_frame(&frame, self.ctx.config.limits.frame_bytes_max) {
            Ok(bytes) => {
                let _ = self.out.send(bytes).await;
            }
            Err(e) => {
                // Only a response over the frame limit gets here; say so instead of going silent.
                if let ServerFrame::Response { id, .. } = frame {
                    let err = ApiError::new(
                        ErrorCode::TooLarge,
                        format!("response does not fit in a frame: {e}"),
                    );
                    if let Ok(bytes) = encode_frame(
                        &ServerFrame::Response {
                            id,
                            result: Err(err),
                        },
                        usize::MAX,
                    ) {
                        let _ = self.out.send(bytes).await;
                    }
                }
            }
        }
    }

    fn unsubscribe_all(&self) {
        let rooms = std::mem::take(&mut *self.rooms.lock().unwrap_or_else(|e| e.into_inner()));
        for room_id in rooms.into_values() {
            self.ctx.fanout.unsubscribe(room_id, self.subscriber.id);
        }
    }
}

/// Read until one whole frame is decoded; `None` at a clean end of stream.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<ClientFrame>, ApiError> {
    loop {
        match decoder.next_frame::<ClientFrame>() {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(stoa_proto::CodecError::FrameTooLarge { len, max }) => {
                return Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!("frame of {len} bytes exceeds {max}"),
                ))
            }
            Err(e) => return Err(ApiError::new(ErrorCode::Invalid, e.to_string())),
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(_) => return Ok(None),
        }
    }
}

async fn goodbye(mut send: quinn::SendStream, code: ErrorCode, message: &str) {
    if let Ok(f) = encode_frame(
        &ServerFrame::Goodbye(ApiError::new(code, message)),
        usize::MAX,
    ) {
        let _ = send.write_all(&f).await;
    }
    let _ = send.finish();
    // Give the frame a moment to leave before the connection is dropped.
    let _ = tokio::time::timeout(GOODBYE_GRACE, send.stopped()).await;
}

/// Drain the send queue into large writes; also announce rooms cut from live delivery.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Bytes>,
    lagged: Arc<Lagged>,
    frame_bytes_max: usize,
    live_cuts: prometheus_client::metrics::counter::Counter,
) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH_FRAMES);
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, WRITE_BATCH_FRAMES) => {
                if n == 0 {
                    break;
                }
            }
            _ = lagged.notify.notified() => {}
        }
        for (room, after) in lagged.take() {
            live_cuts.inc();
            if let Ok(f) = encode_frame(
                &ServerFrame::Event(Event::Lagged { room, after }),
                frame_bytes_max,
            ) {
                batch.push(f);
            }
        }
        if send.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
    // Dropping the connection discards data not yet acknowledged, such as a goodbye: wait (a
    // little) for the client to have it all.
    let _ = tokio::time::timeout(GOODBYE_GRACE, send.stopped()).await;
}

/// Hex SHA-256 of a token: the directory stores only this.
pub fn token_digest(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Users tracked by [`UserRates`] before those at rest are forgotten.
const USER_BUCKETS_MAX: usize = 10_000;

/// A token bucket per user, for a limit that must hold across the user's connections.
pub struct UserRates {
    per_s: u32,
    buckets: Mutex<HashMap<String, RateLimit>>,
}

impl UserRates {
    /// `per_s` tokens a second per user; 0: unlimited.
    pub fn new(per_s: u32) -> Self {
        UserRates {
            per_s,
            buckets: Mutex::default(),
        }
    }

    /// Takes one of `user`'s tokens, if there is one.
    pub fn take(&self, user: &str, now: Instant) -> bool {
        if self.per_s == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= USER_BUCKETS_MAX && !buckets.contains_key(user) {
            // A full bucket is the same as a new one: forgetting it changes nothing.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(user.to_string())
            .or_insert_with(|| RateLimit::new(self.per_s))
            .take(now)
    }
}

/// A token bucket of posts per second (0 = unlimited), refilled continuously, one second deep.
struct RateLimit {
    per_s: u32,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_s: u32) -> Self {
        RateLimit {
            per_s,
            tokens: f64::from(per_s),
            at: Instant::now(),
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(self.per_s);
        self.tokens + refill >= f64::from(self.per_s)
    }

    fn take(&mut self, now: Instant) -> bool {
        if self.per_s == 0 {
            return true;
        }
        let rate = f64::from(self.per_s);
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10);
        assert!((0..10).all(|_| r.take(t0)));
        assert!(!r.take(t0));
        assert!(r.take(t0 + Duration::from_millis(100)));
        assert!(!r.take(t0 + Duration::from_millis(100)));
        let mut unlimited = RateLimit::new(0);
        assert!((0..10_000).all(|_| unlimited.take(t0)));
    }

    #[test]
    fn user_rates_are_per_user_and_forget_users_at_rest() {
        let t0 = Instant::now();
        let rates = UserRates::new(2);
        assert!(rates.take("ann", t0) && rates.take("ann", t0));
        assert!(!rates.take("ann", t0), "ann's bucket is empty");
        assert!(rates.take("bob", t0), "bob has his own");
        assert!(UserRates::new(0).take("ann", t0), "0 is unlimited");

        let rates = UserRates::new(1);
        for i in 0..USER_BUCKETS_MAX {
            assert!(rates.take(&format!("u{i}"), t0));
        }
        assert!(!rates.take("u0", t0));
        // A second later every bucket has refilled: a new user makes the node forget them.
        let later = t0 + Duration::from_secs(1);
        assert!(rates.take("new", later));
        assert_eq!(rates.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn token_digest_is_stable_hex() {
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

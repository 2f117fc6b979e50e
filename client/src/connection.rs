//! One connection to one node: TLS and QUIC setup, the hello/welcome exchange, and the two tasks
//! that own the stream — a writer that coalesces queued frames into one write, and a reader that
//! hands answers to their waiters and events to the session (see `session.rs`).

use crate::{
    resume::{Begin, Token},
    session::Shared,
    ClientConfig, ClientError, Result,
};
use bytes::{Bytes, BytesMut};
use quinn::{crypto::rustls::QuicClientConfig, Connection, RecvStream, SendStream, VarInt};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use std::{
    collections::HashMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};
use stoa_proto::{
    ApiError, FrameDecoder, Response, ServerFrame, Welcome, ALPN_CLIENT, CLUSTER_SERVER_NAME,
    PROTOCOL_VERSION,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, Instrument};

/// Largest piece read from the stream at once.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Most queued frames the writer coalesces into one write.
const WRITE_BATCH_FRAMES_MAX: usize = 512;
/// QUIC application close codes sent by the client.
pub(crate) const CLOSE_NORMAL: u32 = 0;
pub(crate) const CLOSE_PROTOCOL_ERROR: u32 = 1;

/// A QUIC client endpoint: one UDP socket on an OS-chosen port, `0.0.0.0:0` or, with `v6`,
/// `[::]:0` (dual-stack where the OS allows, so it reaches IPv4 nodes too). Many clients may share
/// one endpoint through [`crate::Client::connect_with_endpoint`]. Needs a Tokio runtime.
pub fn new_endpoint(v6: bool) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(bind).map_err(|e| ClientError::io(format!("cannot bind {bind}"), e))
}

/// QUIC client settings: TLS 1.3 with the ring provider, node certificates verified against the
/// cluster CA, ALPN `stoa/1`, no client certificate; the node may not open streams to us.
pub(crate) fn quic_client_config(cfg: &ClientConfig) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("cluster CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("cluster CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(
            "the cluster CA PEM holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| ClientError::Tls(e.to_string()))?;

    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|_| ClientError::config("idle_timeout", "too large for QUIC"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(cfg.idle_timeout / 3))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// What the reader does with the answer to a Subscribe or Join: update the room's cursor before
/// looking at the next frame.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub room: String,
    pub token: Token,
}

struct Waiter {
    tx: oneshot::Sender<Result<Response, ApiError>>,
    hook: Option<Hook>,
}

/// One live connection and its stream.
pub(crate) struct Link {
    /// Position of the node in `ClientConfig::servers`.
    pub index: usize,
    pub server: String,
    pub welcome: Welcome,
    conn: Connection,
    /// Frames for the writer task; its capacity is `requests_in_flight_max`.
    queue: mpsc::Sender<Bytes>,
    /// Requests waiting for an answer; `None` once the connection is dead.
    pending: Mutex<Option<HashMap<u64, Waiter>>>,
    /// Why the connection ended, for the errors of requests that were in flight.
    end: Mutex<Option<String>>,
}

impl Link {
    pub fn is_dead(&self) -> bool {
        crate::session::lock(&self.pending).is_none()
    }

    /// Registers a waiter for the answer to request `id`.
    pub fn register(
        &self,
        id: u64,
        hook: Option<Hook>,
    ) -> Result<oneshot::Receiver<Result<Response, ApiError>>> {
        let (tx, rx) = oneshot::channel();
        match crate::session::lock(&self.pending).as_mut() {
            Some(map) => {
                map.insert(id, Waiter { tx, hook });
                Ok(rx)
            }
            None => Err(ClientError::ConnectionLost(self.end_reason())),
        }
    }

    pub fn unregister(&self, id: u64) {
        if let Some(map) = crate::session::lock(&self.pending).as_mut() {
            map.remove(&id);
        }
    }

    fn take_waiter(&self, id: u64) -> Option<Waiter> {
        crate::session::lock(&self.pending).as_mut()?.remove(&id)
    }

    /// Marks the link dead: every waiter is dropped, so its caller sees the connection lost.
    fn fail_pending(&self, reason: String) {
        *crate::session::lock(&self.end) = Some(reason);
        crate::session::lock(&self.pending).take();
    }

    pub fn end_reason(&self) -> String {
        crate::session::lock(&self.end)
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Queues one encoded frame for the writer.
    pub async fn send(&self, frame: Bytes) -> Result<()> {
        self.queue
            .send(frame)
            .await
            .map_err(|_| ClientError::ConnectionLost(self.end_reason()))
    }

    pub fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    pub fn transport_stats(&self) -> TransportStats {
        let s = self.conn.stats();
        TransportStats {
            datagrams_sent: s.udp_tx.datagrams,
            datagrams_received: s.udp_rx.datagrams,
            bytes_sent: s.udp_tx.bytes,
            bytes_received: s.udp_rx.bytes,
            send_calls: s.udp_tx.ios,
            acks_sent: s.frame_tx.acks,
            packets_lost: s.path.lost_packets,
            rtt: s.path.rtt,
        }
    }
}

/// Counters of the current connection's QUIC transport, for diagnostics and load tests. They
/// start from zero on every (re)connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `sendmsg` calls; fewer than `datagrams_sent` when segmentation offload packs several.
    pub send_calls: u64,
    /// ACK frames sent (most of them in packets of their own when the client only listens).
    pub acks_sent: u64,
    pub packets_lost: u64,
    /// The current round-trip estimate.
    pub rtt: std::time::Duration,
}

impl TransportStats {
    /// Counter sums (the round trip is the larger of the two).
    pub fn add(&self, o: &TransportStats) -> TransportStats {
        TransportStats {
            datagrams_sent: self.datagrams_sent + o.datagrams_sent,
            datagrams_received: self.datagrams_received + o.datagrams_received,
            bytes_sent: self.bytes_sent + o.bytes_sent,
            bytes_received: self.bytes_received + o.bytes_received,
            send_calls: self.send_calls + o.send_calls,
            acks_sent: self.acks_sent + o.acks_sent,
            packets_lost: self.packets_lost + o.packets_lost,
            rtt: self.rtt.max(o.rtt),
        }
    }

    /// Counter differences since `earlier` (saturating: a reconnection restarts the counters).
    pub fn since(&self, earlier: &TransportStats) -> TransportStats {
        TransportStats {
            datagrams_sent: self.datagrams_sent.saturating_sub(earlier.datagrams_sent),
            datagrams_received: self
                .datagrams_received
                .saturating_sub(earlier.datagrams_received),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            send_calls: self.send_calls.saturating_sub(earlier.send_calls),
            acks_sent: self.acks_sent.saturating_sub(earlier.acks_sent),
            packets_lost: self.packets_lost.saturating_sub(earlier.packets_lost),
            rtt: self.rtt,
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum LinkEnd {
    /// The connection or stream died (node gone, network, idle timeout, closed by us).
    Lost(String),
    /// The node said goodbye.
    Goodbye(ApiError),
    /// The node broke the protocol.
    Protocol(String),
}

impl LinkEnd {
    /// What the client is left with when it cannot or must not reconnect, `None` if it reconnects.
    /// A goodbye for a bad token, a refusal or an invalid request is final; so is a protocol
    /// violation (the peer is incompatible). Anything else (lost, unavailable) reconnects.
    pub fn fatal(&self) -> Option<ClientError> {
        match self {
            LinkEnd::Lost(_) => None,
            LinkEnd::Goodbye(e) => {
                let err = ClientError::Api(e.clone());
                err.is_fatal_for_connect().then_some(err)
            }
            LinkEnd::Protocol(p) => Some(ClientError::Protocol(p.clone())),
        }
    }
}

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEnd::Lost(r) => write!(f, "{r}"),
            LinkEnd::Goodbye(e) => write!(f, "the node said goodbye: {e}"),
            LinkEnd::Protocol(p) => write!(f, "protocol error: {p}"),
        }
    }
}

/// Connects to `cfg.servers[index]` within `connect_timeout`: QUIC handshake, hello, welcome.
/// Then starts the writer and reader; the reader's result says how the connection ended.
pub(crate) async fn open_link(
    shared: &Arc<Shared>,
    index: usize,
) -> Result<(Arc<Link>, JoinHandle<LinkEnd>)> {
    let server = shared.cfg.servers[index].clone();
    let timeout = shared.cfg.connect_timeout;
    let (conn, send, recv, decoder, welcome) =
        match tokio::time::timeout(timeout, handshake(shared, &server)).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: server,
                    reason: format!("no welcome within {timeout:?}"),
                })
            }
        };
    debug!(%server, node = %welcome.node, user = %welcome.user, "connected");
    let (queue, queue_rx) = mpsc::channel(shared.cfg.requests_in_flight_max);
    let link = Arc::new(Link {
        index,
        server: server.clone(),
        welcome,
        conn: conn.clone(),
        queue,
        pending: Mutex::new(Some(HashMap::new())),
        end: Mutex::new(None),
    });
    let span = tracing::info_span!("conn", %server, node = %link.welcome.node);
    tokio::spawn(write_loop(send, queue_rx, link.clone(), conn).instrument(span.clone()));
    let reader =
        tokio::spawn(read_loop(shared.clone(), link.clone(), recv, decoder).instrument(span));
    Ok((link, reader))
}

type Handshake = (Connection, SendStream, RecvStream, FrameDecoder, Welcome);

async fn handshake(shared: &Shared, server: &str) -> Result<Handshake> {
    let fail = |reason: String| ClientError::Connect {
        addr: server.to_string(),
        reason,
    };
    let addr = resolve(server, shared.endpoint_v6).await?;
    let conn = shared
        .endpoint
        .connect_with(shared.quic.clone(), addr, CLUSTER_SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
    send.write_chunk(shared.hello.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut decoder = FrameDecoder::new(shared.cfg.frame_bytes_max);
    loop {
        match decoder.next_frame::<ServerFrame>() {
            Ok(Some(ServerFrame::Welcome(w))) if w.version == PROTOCOL_VERSION => {
                return Ok((conn, send, recv, decoder, w));
            }
            Ok(Some(ServerFrame::Welcome(w))) => {
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"protocol version");
                return Err(ClientError::Protocol(format!(
                    "node {server} speaks protocol version {}, this client {PROTOCOL_VERSION}",
                    w.version
                )));
            }
            Ok(Some(ServerFrame::Goodbye(e))) => return Err(ClientError::Api(e)),
            Ok(Some(other)) => {
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"expected welcome");
                return Err(ClientError::Protocol(format!(
                    "node {server} sent {} before its welcome",
                    frame_kind(&other)
                )));
            }
            Ok(None) => {}
            Err(e) => {
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"bad frame");
                return Err(ClientError::Protocol(format!("node {server}: {e}")));
            }
        }
        match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Err(fail("the node closed the stream before its welcome".into())),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
}

/// The first address of `server` the endpoint can reach (an IPv4 endpoint only reaches IPv4).
async fn resolve(server: &str, endpoint_v6: bool) -> Result<SocketAddr> {
    let fail = |reason: String| ClientError::Connect {
        addr: server.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| fail(format!("cannot resolve (expected host:port): {e}")))?;
    addrs
        .find(|a| endpoint_v6 || a.is_ipv4())
        .ok_or_else(|| fail("no IPv4 address, and the client endpoint is IPv4".into()))
}

/// Whether `Client::connect` should bind an IPv6 (dual-stack) endpoint: only when some server
/// resolves to IPv6 addresses alone.
pub(crate) async fn servers_need_v6(servers: &[String]) -> bool {
    for server in servers {
        if let Ok(addrs) = tokio::net::lookup_host(server.as_str()).await {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(SocketAddr::is_ipv6) {
                return true;
            }
        }
    }
    false
}

fn frame_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "Welcome",
        ServerFrame::Response { .. } => "a Response",
        ServerFrame::Event(_) => "an Event",
        ServerFrame::Goodbye(_) => "Goodbye",
    }
}

/// Owns the send half. Takes every frame queued so far (up to a batch), concatenates them and
/// writes them in one call, so many small requests become few large writes. Ends when the
/// connection closes; a failed write marks the link dead first, so no caller queues behind it.
async fn write_loop(
    mut send: SendStream,
    mut queue: mpsc::Receiver<Bytes>,
    link: Arc<Link>,
    conn: Connection,
) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH_FRAMES_MAX);
    loop {
        let n = tokio::select! {
            n = queue.recv_many(&mut batch, WRITE_BATCH_FRAMES_MAX) => n,
            _ = conn.closed() => return,
        };
        if n == 0 {
            // Unreachable while `link` (which holds the sender) is alive; stop cleanly anyway.
            let _ = send.finish();
            return;
        }
        let data = if batch.len() == 1 {
            batch
                .pop()
                .expect("batch holds exactly one frame, checked just above")
        } else {
            let mut buf = BytesMut::with_capacity(batch.iter().map(Bytes::len).sum());
            for frame in batch.drain(..) {
                buf.extend_from_slice(&frame);
            }
            buf.freeze()
        };
        // `write_chunk` hands the buffer to quinn without another copy.
        if let Err(e) = send.write_chunk(data).await {
            debug!(error = %e, "write failed");
            link.fail_pending(format!("write failed: {e}"));
            link.close(CLOSE_NORMAL, "write failed");
            return;
        }
    }
}

/// Owns the receive half: splits it into frames, answers waiters, passes events to the session.
/// Returns how the connection ended, after failing every waiter and closing the connection.
async fn read_loop(
    shared: Arc<Shared>,
    link: Arc<Link>,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
) -> LinkEnd {
    let end = 'read: loop {
        loop {
            let frame = match decoder.next_frame::<ServerFrame>() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => break 'read LinkEnd::Protocol(format!("undecodable frame: {e}")),
            };
            if let Some(end) = on_frame(&shared, &link, frame).await {
                break 'read end;
            }
        }
        match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => break LinkEnd::Lost("the node finished the stream".into()),
            Err(e) => break LinkEnd::Lost(e.to_string()),
        }
    };
    link.fail_pending(end.to_string());
    let code = if matches!(end, LinkEnd::Protocol(_)) {
        CLOSE_PROTOCOL_ERROR
    } else {
        CLOSE_NORMAL
    };
    link.close(code, "connection ended");
    end
}

async fn on_frame(shared: &Arc<Shared>, link: &Link, frame: ServerFrame) -> Option<LinkEnd> {
    match frame {
        ServerFrame::Response { id, result } => {
            let Some(waiter) = link.take_waiter(id) else {
                debug!(id, "answer to a request nobody waits for (timed out)");
                return None;
            };
            if let (Some(hook), Ok(response)) = (&waiter.hook, &result) {
                match response {
                    Response::Subscribed {
                        last_seq,
                        moderation,
                        ..
                    } => shared.completed(hook, Begin::Subscribe, *last_seq, *moderation),
                    Response::Joined {
                        last_seq,
                        moderation,
                        ..
                    } => shared.completed(hook, Begin::Join, *last_seq, *moderation),
                    _ => {}
                }
            }
            // The caller may have given up (cancelled); nothing to do then.
            let _ = waiter.tx.send(result);
        }
        ServerFrame::Event(stoa_proto::Event::Message(msg)) => shared.deliver(msg).await,
        ServerFrame::Event(stoa_proto::Event::Lagged { room, after }) => {
            debug!(%room, %after, "node stopped live delivery");
            shared.lagged(&room);
        }
        ServerFrame::Event(stoa_proto::Event::RoomClosed { room, reason }) => {
            shared.room_closed(&room, &reason);
        }
        ServerFrame::Event(stoa_proto::Event::Replaced {
            room,
            messages,
            moderation,
        }) => {
            shared.replaced(&room, moderation, messages);
        }
        ServerFrame::Event(stoa_proto::Event::Roster { room, change }) => {
            shared.roster_event(room, change).await;
        }
        ServerFrame::Goodbye(e) => return Some(LinkEnd::Goodbye(e)),
        ServerFrame::Welcome(_) => return Some(LinkEnd::Protocol("a second Welcome".into())),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::TransportStats;
    use std::time::Duration;

    #[test]
    fn transport_stats_sum_and_differ_without_underflow() {
        let a = TransportStats {
            datagrams_received: 10,
            acks_sent: 4,
            rtt: Duration::from_millis(2),
            ..Default::default()
        };
        let b = TransportStats {
            datagrams_received: 5,
            acks_sent: 1,
            rtt: Duration::from_millis(7),
            ..Default::default()
        };
        let sum = a.add(&b);
        assert_eq!((sum.datagrams_received, sum.acks_sent), (15, 5));
        assert_eq!(sum.rtt, Duration::from_millis(7));
        let d = sum.since(&a);
        assert_eq!((d.datagrams_received, d.acks_sent), (5, 1));
        // A reconnection restarted the counters: the difference is clamped, not wrapped.
        assert_eq!(a.since(&sum).datagrams_received, 0);
    }
}

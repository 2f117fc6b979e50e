//! A client that speaks Stoa's wire protocol over quinn and rustls directly, without the SDK, so
//! hostile-input tests can send what no well-behaved client sends: no hello, garbage, oversized
//! frames, floods, and never reading. Also a raw peer dialer for certificate tests.

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use stoa_proto::limits::FRAME_BYTES_MAX;
use stoa_proto::{
    encode_frame, ClientFrame, FrameDecoder, Hello, Request, ServerFrame, Welcome, ALPN_CLIENT,
    CLUSTER_SERVER_NAME, PROTOCOL_VERSION,
};

/// A client endpoint on an OS-chosen loopback port; many connections may share it.
pub fn endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().expect("a literal address"))
        .expect("bind a client endpoint")
}

/// Transport knobs of a raw client.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// QUIC keep-alives, so the connection is not cut by the idle timeout.
    pub keep_alive: Option<Duration>,
    /// Receive window of the stream and of the connection, in bytes (`None`: quinn's default).
    pub receive_window: Option<u32>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            keep_alive: Some(Duration::from_secs(1)),
            receive_window: None,
        }
    }
}

/// Client TLS as the SDK sets it up: TLS 1.3, the node verified against the cluster CA under
/// [`CLUSTER_SERVER_NAME`], ALPN `stoa/1`, no client certificate.
pub fn client_config(ca_pem: &Path, transport: Transport) -> quinn::ClientConfig {
    let pem = std::fs::read(ca_pem).expect("read the cluster CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).expect("QUIC TLS config"),
    ));
    cfg.transport_config(Arc::new(transport_config(transport)));
    cfg
}

pub fn transport_config(t: Transport) -> quinn::TransportConfig {
    let mut tc = quinn::TransportConfig::default();
    tc.keep_alive_interval(t.keep_alive);
    tc.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s fits"),
    ));
    if let Some(w) = t.receive_window {
        tc.stream_receive_window(VarInt::from_u32(w));
        tc.receive_window(VarInt::from_u32(w));
    }
    tc
}

/// Dial `addr` as a client (server name [`CLUSTER_SERVER_NAME`]).
pub async fn dial(
    endpoint: &Endpoint,
    cfg: &quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<Connection, String> {
    dial_as(endpoint, cfg, addr, CLUSTER_SERVER_NAME).await
}

/// Dial `addr` checking the server certificate for `server_name`.
pub async fn dial_as(
    endpoint: &Endpoint,
    cfg: &quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, String> {
    endpoint
        .connect_with(cfg.clone(), addr, server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// What came next on a raw stream.
#[derive(Debug)]
pub enum Next {
    Frame(ServerFrame),
    /// The node finished the stream, reset it or closed the connection.
    End(String),
    /// Nothing within the wait.
    Silent,
    /// Bytes that are not a frame.
    Undecodable(String),
}

/// One client connection and its single bidirectional stream.
pub struct RawConn {
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    decoder: FrameDecoder,
}

impl RawConn {
    /// Connect and open the stream (the node sees it once something is written on it).
    pub async fn open(endpoint: &Endpoint, cfg: &quinn::ClientConfig, addr: SocketAddr) -> RawConn {
        let conn = dial(endpoint, cfg, addr).await.expect("QUIC handshake");
        let (send, recv) = conn.open_bi().await.expect("open a stream");
        RawConn {
            conn,
            send,
            recv,
            decoder: FrameDecoder::new(FRAME_BYTES_MAX),
        }
    }

    /// Connect, send a hello with `token` and wait for the welcome.
    pub async fn signed_in(
        endpoint: &Endpoint,
        cfg: &quinn::ClientConfig,
        addr: SocketAddr,
        token: &str,
    ) -> (RawConn, Welcome) {
        let mut c = RawConn::open(endpoint, cfg, addr).await;
        c.send_frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: token.to_string(),
        }))
        .await;
        match c.next(Duration::from_secs(10)).await {
            Next::Frame(ServerFrame::Welcome(w)) => (c, w),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    pub async fn send_frame<T: Serialize>(&mut self, frame: &T) {
        let bytes = encode_frame(frame, FRAME_BYTES_MAX).expect("encode a frame");
        self.send_bytes(&bytes).await.expect("write a frame");
    }

    pub async fn send_request(&mut self, id: u64, body: Request) {
        self.send_frame(&ClientFrame::Request { id, body }).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.send
            .write_chunk(Bytes::copy_from_slice(bytes))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next frame, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.decoder.next_frame::<ServerFrame>() {
                Ok(Some(f)) => return Next::Frame(f),
                Ok(None) => {}
                Err(e) => return Next::Undecodable(e.to_string()),
            }
            match tokio::time::timeout_at(deadline, self.recv.read_chunk(64 * 1024, true)).await {
                Err(_) => return Next::Silent,
                Ok(Ok(Some(chunk))) => self.decoder.extend(&chunk.bytes),
                Ok(Ok(None)) => return Next::End("stream finished".into()),
                Ok(Err(e)) => return Next::End(e.to_string()),
            }
        }
    }

    /// Every frame until the stream ends (or `wait` passes without one, which panics).
    pub async fn rest(&mut self, wait: Duration) -> (Vec<ServerFrame>, String) {
        let mut frames = Vec::new();
        loop {
            match self.next(wait).await {
                Next::Frame(f) => frames.push(f),
                Next::End(why) => return (frames, why),
                Next::Silent => panic!("no frame and no end within {wait:?}; got {frames:?}"),
                Next::Undecodable(e) => panic!("undecodable bytes from the node: {e}"),
            }
        }
    }
}

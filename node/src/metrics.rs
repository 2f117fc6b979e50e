//! Prometheus metrics over HTTP: `GET /metrics` on `node.metrics_listen` answers the OpenMetrics
//! text of this node (off when the setting is empty).
//!
//! Counters on the message path are plain atomics bumped where the work happens ([`Counters`]);
//! everything else is read when scraped ([`Snapshot`]): Raft progress per group, client
//! connections and the QUIC counters of client connections, so a scrape costs the node nothing
//! between scrapes.

use crate::raft::Raft;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use openraft::BasicNode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapes answered at once; a connection beyond them is closed unanswered.
const SCRAPES_AT_ONCE: usize = 4;
/// How long a scraper may take to send its request, and to be answered in all.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Counters bumped on the message path. Cheap to clone (shared atomics).
#[derive(Clone, Default, Debug)]
pub struct Counters {
    /// Messages applied by this node's shard state machines (every replica counts its own).
    pub posts_applied: Counter,
    /// Message frames queued to this node's subscribers (live, and the catch-up after a
    /// subscribe).
    pub deliveries: Counter,
    /// Room subscriptions cut from live delivery because the client read too slowly.
    pub live_cuts: Counter,
    /// Raft entries of posts this node proposed as a shard leader, and the posts in them.
    pub proposal_batches: Counter,
    pub proposal_posts: Counter,
}

/// The live client connections, for their QUIC counters; closed ones are summed as they go.
#[derive(Default, Debug)]
pub struct ClientLinks {
    next: AtomicU64,
    live: Mutex<HashMap<u64, quinn::Connection>>,
    closed: Mutex<Quic>,
}

/// QUIC counters summed over client connections.
#[derive(Default, Debug, Clone, Copy)]
struct Quic {
    datagrams_sent: u64,
    datagrams_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    send_calls: u64,
    packets_lost: u64,
}

impl Quic {
    fn add(&mut self, conn: &quinn::Connection) {
        let s = conn.stats();
        self.datagrams_sent += s.udp_tx.datagrams;
        self.datagrams_received += s.udp_rx.datagrams;
        self.bytes_sent += s.udp_tx.bytes;
        self.bytes_received += s.udp_rx.bytes;
        self.send_calls += s.udp_tx.ios;
        self.packets_lost += s.path.lost_packets;
    }
}

/// Keeps a client connection counted until dropped.
pub struct LinkGuard {
    links: Arc<ClientLinks>,
    id: u64,
}

impl ClientLinks {
    pub fn track(self: &Arc<Self>, conn: &quinn::Connection) -> LinkGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(id, conn.clone());
        LinkGuard {
            links: self.clone(),
            id,
        }
    }

    /// Closed and live connections at one cut: `closed` is read under the `live` lock, which a
    /// closing connection holds while it moves over, so each is counted exactly once and the sums
    /// never go back. The live ones' stats are read after the lock is released.
    fn totals(&self) -> Quic {
        let (mut sum, live) = {
            let live = lock(&self.live);
            let closed = *lock(&self.closed);
            (closed, live.values().cloned().collect::<Vec<_>>())
        };
        for conn in &live {
            sum.add(conn);
        }
        sum
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if let Some(conn) = lock(&self.links.live).remove(&self.id) {
            lock(&self.links.closed).add(&conn);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a scrape reads besides the counters.
pub struct Snapshot {
    pub rafts: Arc<Vec<Raft>>,
    pub connections: Arc<Semaphore>,
    pub connections_max: usize,
    pub links: Arc<ClientLinks>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("groups", &self.rafts.len())
            .finish_non_exhaustive()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = self
            .connections_max
            .saturating_sub(self.connections.available_permits());
        gauge(
            &mut enc,
            "stoa_client_connections",
            "Client connections open",
            open as i64,
        )?;
        let q = self.links.totals();
        let quic: [(&str, &str, u64); 6] = [
            (
                "stoa_client_quic_datagrams_sent",
                "UDP datagrams sent on client connections",
                q.datagrams_sent,
            ),
            (
                "stoa_client_quic_datagrams_received",
                "UDP datagrams received on client connections",
                q.datagrams_received,
            ),
            (
                "stoa_client_quic_bytes_sent",
                "UDP payload bytes sent on client connections",
                q.bytes_sent,
            ),
            (
                "stoa_client_quic_bytes_received",
                "UDP payload bytes received on client connections",
                q.bytes_received,
            ),
            (
                "stoa_client_quic_send_calls",
                "sendmsg calls for client connections (segmentation offload packs several datagrams)",
                q.send_calls,
            ),
            (
                "stoa_client_quic_packets_lost",
                "Packets QUIC declared lost on client connections",
                q.packets_lost,
            ),
        ];
        for (name, help, v) in quic {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }

        let groups: Vec<_> = self
            .rafts
            .iter()
            .map(|r| r.metrics().borrow().clone())
            .enumerate()
            .collect();
        let per_group: [(&str, &str, GroupValue); 4] = [
            ("stoa_raft_term", "Current Raft term of the group", |m| {
                saturating(m.current_term)
            }),
            (
                "stoa_raft_leader",
                "1 when this node leads the group, else 0",
                |m| i64::from(m.current_leader == Some(m.id)),
            ),
            (
                "stoa_raft_last_log_index",
                "Index of the last entry in this node's log of the group",
                |m| m.last_log_index.map_or(0, saturating),
            ),
            (
                "stoa_raft_applied_index",
                "Index of the last entry this node applied to the group's state machine",
                |m| m.last_applied.map_or(0, |l| saturating(l.index)),
            ),
        ];
        for (name, help, value) in per_group {
            let g = ConstGauge::new(0i64);
            let mut family = enc.encode_descriptor(name, help, None, g.metric_type())?;
            for (group, m) in &groups {
                let labels = [("group", group.to_string())];
                ConstGauge::new(value(m)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn saturating(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One figure of a group's Raft metrics.
type GroupValue = fn(&openraft::RaftMetrics<u64, BasicNode>) -> i64;

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The registry of one node: its counters and a snapshot collector.
pub fn registry(counters: &Counters, snapshot: Snapshot) -> Registry {
    let mut r = Registry::default();
    let c = counters.clone();
    r.register(
        "stoa_posts_applied",
        "Messages applied by this node's shard state machines",
        c.posts_applied,
    );
    r.register(
        "stoa_deliveries",
        "Message frames queued to this node's subscribers (live and catch-up)",
        c.deliveries,
    );
    r.register(
        "stoa_live_cuts",
        "Room subscriptions cut from live delivery because the client read too slowly",
        c.live_cuts,
    );
    r.register(
        "stoa_proposal_batches",
        "Raft entries of posts this node proposed as shard leader",
        c.proposal_batches,
    );
    r.register(
        "stoa_proposal_posts",
        "Posts in the Raft entries this node proposed as shard leader",
        c.proposal_posts,
    );
    r.register_collector(Box::new(snapshot));
    r
}

/// Answers scrapes until `stop` turns true.
pub async fn serve(listener: TcpListener, registry: Registry, mut stop: watch::Receiver<bool>) {
    let registry = Arc::new(registry);
    let slots = Arc::new(Semaphore::new(SCRAPES_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the listener stays ready, so do not spin.
                tracing::warn!(error = %e, "metrics endpoint cannot accept");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Busy with slow scrapers: drop this one rather than queue behind them.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scraper that stalls is cut off instead of holding a slot.
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics is served here\n".into(),
        );
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "cannot encode the metrics\n".into(),
        ),
    }
}

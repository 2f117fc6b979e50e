//! Fixtures for Stoa's multi-node tests: an in-process cluster on free loopback ports with fast
//! Raft timeouts, clients bound to chosen nodes, and checks over room histories.
//!
//! Layout: `tests/<topic>/main.rs` gathers `tNN_name.rs` files by band (t10 basic, t20 lifecycle,
//! t50 faults); each test opens its phases with `tracing::info!("--- what and why")`.

use std::time::Duration;
use stoa_client::{Client, ClientConfig};
use stoa_node::dev::LocalCluster;
use stoa_node::raft::GroupId;
use stoa_proto::{Message, Seq};
use tempfile::TempDir;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOA_LOG")
                .unwrap_or_else(|_| "info,openraft=off,sled=warn,quinn=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub use stoa_node::dev::free_addrs;
pub use stoa_node::dev::processes as process;

pub struct TestCluster {
    pub cluster: LocalCluster,
    pub admin_token: String,
    _dir: TempDir,
}

impl TestCluster {
    /// `n` nodes, 2 shards, timeouts short enough for quick elections.
    pub async fn start(n: usize) -> TestCluster {
        let dir = TempDir::new().expect("temp dir");
        let addrs = free_addrs(n);
        let mut configs = LocalCluster::configs(dir.path(), &addrs, 2);
        for c in &mut configs {
            c.raft.heartbeat_interval_ms = 50;
            c.raft.election_timeout_min_ms = 300;
            c.raft.election_timeout_max_ms = 600;
            c.raft.rpc_timeout_ms = 1000;
            // A short QUIC idle timeout also bounds how long a restarted node waits for its port.
            c.limits.client_idle_timeout_ms = 5000;
        }
        let cluster = LocalCluster::start(dir.path(), configs)
            .await
            .expect("cluster starts");
        let admin_token = cluster
            .ready(Duration::from_secs(30))
            .await
            .expect("cluster ready");
        TestCluster {
            cluster,
            admin_token,
            _dir: dir,
        }
    }

    pub fn addr(&self, i: usize) -> String {
        self.cluster.addrs()[i].to_string()
    }

    /// A client of node `i` only (no failover), as the admin.
    pub async fn client(&self, i: usize) -> Client {
        self.client_of(vec![self.addr(i)]).await
    }

    /// A client that knows every node and fails over between them.
    pub async fn client_all(&self) -> Client {
        let servers = (0..self.cluster.addrs().len())
            .map(|i| self.addr(i))
            .collect();
        self.client_of(servers).await
    }

    pub async fn client_of(&self, servers: Vec<String>) -> Client {
        let cfg = ClientConfig::from_files(
            servers,
            self.admin_token.clone(),
            self.cluster.ca_pem_path(),
        )
        .expect("CA readable");
        Client::connect(cfg).await.expect("client connects")
    }

    /// 0-based index of the node leading the shard that holds `room`, from a running node's view.
    pub fn shard_leader(&self, room: &str) -> Option<usize> {
        let node = self.cluster.nodes.iter().flatten().next()?;
        let shard = node.ctx.meta.read(|m| m.room(room).map(|r| r.shard))?;
        let leader = node.rafts[GroupId(shard).0 as usize]
            .metrics()
            .borrow()
            .current_leader?;
        Some(leader as usize - 1)
    }

    pub async fn shutdown(self) {
        self.cluster.shutdown().await;
    }
}

/// The whole stored history of a room as one client sees it, paging forward.
pub async fn full_history(client: &Client, room: &str) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    loop {
        let after = out.last().map(|m| m.seq);
        let (page, _) = client
            .history(room, None, Some(after.unwrap_or(Seq(0))), 500)
            .await
            .expect("history page");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The sequence of a room is 1, 2, 3... with no gap or repeat.
pub fn assert_gap_free(room: &str, messages: &[Message]) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            m.seq,
            Seq(i as u64 + 1),
            "room {room}: message {i} has seq {}",
            m.seq
        );
    }
}

/// Wait until `f` is true, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

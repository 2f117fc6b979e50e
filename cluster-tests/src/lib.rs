//! Fixtures for Stoa's multi-node tests: an in-process cluster on free loopback ports with fast
//! Raft timeouts, a fault-injecting network between its nodes, clients bound to chosen nodes,
//! a recorded client workload and a history checker.
//!
//! Layout:
//! - here: [`TestCluster`] (start, stop/restart on the data directory, faults: one-way blocks,
//!   isolation, partitions, delay, message loss, heal), [`full_history`], [`eventually`],
//!   [`next_delivered`], [`words_in`].
//! - [`history`]: the history recorder and checker.
//! - [`arbitrary`]: arbitrary values of any wire type from bytes, for property tests and fuzzing.
//! - [`workload`]: recorded clients and a seeded posting workload feeding a [`history::History`].
//! - [`raw`]: a client speaking the wire protocol over quinn directly, for hostile-input tests.
//! - [`netns`]: real `stoa-node run` processes in network namespaces (root only).
//!
//! Tests live in `tests/<topic>/main.rs`, which gathers `tNN_name.rs` files by band (t10 basic,
//! t20 lifecycle, t50 faults, t60 randomized); each test opens its phases with
//! `tracing::info!("--- what and why")`. `docs/TESTING.md` says what each tier proves.

pub mod arbitrary;
pub mod history;
pub mod netns;
pub mod raw;
pub mod workload;

use history::History;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use stoa_client::{Client, ClientConfig, ClientError};
use stoa_config::NodeConfig;
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
    /// Faults in force, re-applied to a node when it restarts (a restarted node has a new pool).
    plan: Mutex<FaultPlan>,
    /// Shutdowns still finishing in the background, by node (see [`TestCluster::stop`]).
    stopping: Vec<Option<tokio::task::JoinHandle<()>>>,
    _dir: TempDir,
}

/// The network faults a test has set, by 0-based node index.
#[derive(Debug, Default, Clone)]
struct FaultPlan {
    /// Calls from `.0` to `.1` are dropped.
    blocked: BTreeSet<(usize, usize)>,
    delay: HashMap<usize, Duration>,
    /// (probability, seed) of losing each outgoing call.
    lossy: HashMap<usize, (f64, u64)>,
}

impl TestCluster {
    /// `n` nodes, 2 shards, timeouts short enough for quick elections.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, |_| {}).await
    }

    /// Like [`TestCluster::start`], with `tweak` applied to every node's configuration last.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut NodeConfig)) -> TestCluster {
        let dir = TempDir::new().expect("temp dir");
        Self::start_in(dir, n, tweak).await
    }

    /// Like [`TestCluster::start_with`] in a directory the caller prepared (certificates made
    /// there beforehand are reused, see [`LocalCluster::start`]).
    pub async fn start_in(dir: TempDir, n: usize, tweak: impl Fn(&mut NodeConfig)) -> TestCluster {
        let addrs = free_addrs(n);
        let mut configs = LocalCluster::configs(dir.path(), &addrs, 2);
        for c in &mut configs {
            c.raft.heartbeat_interval_ms = 50;
            c.raft.election_timeout_min_ms = 300;
            c.raft.election_timeout_max_ms = 600;
            c.raft.rpc_timeout_ms = 1000;
            // A short QUIC idle timeout also bounds how long a restarted node waits for its port.
            c.limits.client_idle_timeout_ms = 5000;
            // Tests search right after posting; the default (5 s) suits load, not tests.
            c.chat.search_commit_interval_ms = 200;
            tweak(c);
        }
        let cluster = LocalCluster::start(dir.path(), configs)
            .await
            .expect("cluster starts");
        let admin_token = cluster
            .ready(Duration::from_secs(30))
            .await
            .expect("cluster ready");
        TestCluster {
            stopping: (0..cluster.nodes.len()).map(|_| None).collect(),
            cluster,
            admin_token,
            plan: Mutex::default(),
            _dir: dir,
        }
    }

    /// Number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.cluster.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cluster.nodes.is_empty()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.cluster.nodes[i].is_some()
    }

    /// 0-based indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i)).collect()
    }

    /// Stop node `i`; its data directory stays. The node stops serving at once (its endpoint
    /// closes first); the rest of its shutdown, which can take seconds while proposals in
    /// flight run out their deadline, finishes in the background and is waited for by
    /// [`TestCluster::restart`].
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.cluster.nodes[i].take() {
            let t = std::time::Instant::now();
            let mut shutdown = Box::pin(node.shutdown());
            // Run the shutdown up to its first await point, by which the endpoint is closed.
            let finished = tokio::select! {
                biased;
                _ = &mut shutdown => true,
                _ = std::future::ready(()) => false,
            };
            if !finished {
                self.stopping[i] = Some(tokio::spawn(async move {
                    shutdown.await;
                    let ms = t.elapsed().as_millis() as u64;
                    tracing::info!(node = i + 1, ms, "node shut down");
                }));
            }
            tracing::info!(node = i + 1, "node stopped");
        }
    }

    /// Waits until a stopped node's shutdown has finished.
    async fn stopped(&mut self, i: usize) {
        if let Some(h) = self.stopping[i].take() {
            h.await.expect("node shutdown task");
        }
    }

    /// Start node `i` again on its data directory, with the faults in force re-applied.
    pub async fn restart(&mut self, i: usize) {
        self.stopped(i).await;
        let t = std::time::Instant::now();
        if let Err(e) = self.cluster.restart(i).await {
            panic!("node {} does not restart: {e}", i + 1);
        }
        self.apply_plan(i);
        tracing::info!(
            node = i + 1,
            ms = t.elapsed().as_millis() as u64,
            "node restarted"
        );
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the faults in force that concern node `i` to its peer pool.
    fn apply_plan(&self, i: usize) {
        let Some(node) = self.cluster.nodes[i].as_ref() else {
            return;
        };
        let plan = self.plan().clone();
        node.pool.heal();
        for &(from, to) in &plan.blocked {
            if from == i {
                node.pool.block_outgoing(to as u64 + 1, true);
            }
            if to == i {
                node.pool.block_incoming(from as u64 + 1, true);
            }
        }
        node.pool.set_delay(plan.delay.get(&i).copied());
        if let Some(&(p, seed)) = plan.lossy.get(&i) {
            node.pool.set_drop(p, seed);
        }
    }

    fn apply_plan_all(&self) {
        for i in self.running() {
            self.apply_plan(i);
        }
    }

    /// One-way fault: calls from node `from` to node `to` (0-based) are dropped; calls the other
    /// way, and their answers, still pass.
    pub fn block(&self, from: usize, to: usize) {
        self.plan().blocked.insert((from, to));
        self.apply_plan_all();
    }

    /// Cut node `i` off from every other node, both ways. Clients still reach it.
    pub fn isolate(&self, i: usize) {
        self.partition(&[i]);
    }

    /// Symmetric partition: no call passes between a node of `side` and a node outside it.
    pub fn partition(&self, side: &[usize]) {
        {
            let mut plan = self.plan();
            for &a in side {
                for b in (0..self.len()).filter(|b| !side.contains(b)) {
                    plan.blocked.insert((a, b));
                    plan.blocked.insert((b, a));
                }
            }
        }
        self.apply_plan_all();
    }

    /// Delay every outgoing peer call of node `i` by `delay` (`None`: no delay).
    pub fn set_delay(&self, i: usize, delay: Option<Duration>) {
        match delay {
            Some(d) => self.plan().delay.insert(i, d),
            None => self.plan().delay.remove(&i),
        };
        self.apply_plan_all();
    }

    /// Lose each outgoing peer call of node `i` with probability `p`, seeded.
    pub fn set_drop(&self, i: usize, p: f64, seed: u64) {
        self.plan().lossy.insert(i, (p, seed));
        self.apply_plan_all();
    }

    /// Remove every network fault.
    pub fn heal(&self) {
        *self.plan() = FaultPlan::default();
        self.apply_plan_all();
    }

    /// Creates rooms (as the admin) and returns their names, with `lobby` first.
    pub async fn rooms(&self, extra: &[&str]) -> Vec<String> {
        let admin = self.client_all().await;
        for name in extra {
            admin.create_room(name, "").await.expect("create room");
        }
        admin.close().await;
        std::iter::once("lobby")
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    }

    /// A recorded admin client of `servers` (see [`workload::fault_tolerant`]).
    pub async fn recorded(
        &self,
        history: &History,
        name: &str,
        servers: Vec<String>,
    ) -> std::sync::Arc<workload::Recorded> {
        self.recorded_with(history, name, servers, |_| {}).await
    }

    /// Like [`TestCluster::recorded`], with `tweak` applied after the fault-tolerant settings.
    pub async fn recorded_with(
        &self,
        history: &History,
        name: &str,
        servers: Vec<String>,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> std::sync::Arc<workload::Recorded> {
        let client = self
            .client_with(servers, |cfg| {
                workload::fault_tolerant(cfg);
                tweak(cfg);
            })
            .await;
        workload::Recorded::new(name, client, "admin", history)
    }

    /// The end of a history test: stop the workload, wait for the followers to catch up, close
    /// them, take final reads of every room from every running node once they agree, and check
    /// the history (see [`finish_with`]).
    pub async fn finish(
        &self,
        history: &History,
        workload: Option<workload::Workload>,
        clients: &[std::sync::Arc<workload::Recorded>],
        rooms: &[String],
    ) -> history::Summary {
        let mut nodes = Vec::new();
        for i in self.running() {
            nodes.push((i, self.client(i).await));
        }
        finish_with(&nodes, history, workload, clients, rooms).await
    }

    /// 0-based index of the leader of `room`'s shard as node `i` sees it (an isolated old
    /// leader still sees itself).
    pub fn shard_leader_seen_by(&self, i: usize, room: &str) -> Option<usize> {
        let node = self.cluster.nodes[i].as_ref()?;
        let shard = node.ctx.meta.read(|m| m.room(room).map(|r| r.shard))?;
        let leader = node.rafts[GroupId(shard).0 as usize]
            .metrics()
            .borrow()
            .current_leader?;
        Some(leader as usize - 1)
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
        self.client_of(self.servers()).await
    }

    pub async fn client_of(&self, servers: Vec<String>) -> Client {
        self.client_with(servers, |_| {}).await
    }

    /// All node addresses, for a client that fails over between them.
    pub fn servers(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.addr(i)).collect()
    }

    /// All node addresses starting with node `k % n`, so clients connect to different nodes
    /// first and fail over to the rest.
    pub fn servers_from(&self, k: usize) -> Vec<String> {
        let n = self.len();
        (0..n).map(|j| self.addr((k + j) % n)).collect()
    }

    /// A client of `servers` as the admin, with `tweak` applied to its configuration.
    pub async fn client_with(
        &self,
        servers: Vec<String>,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Client {
        let mut cfg = ClientConfig::from_files(
            servers,
            self.admin_token.clone(),
            self.cluster.ca_pem_path(),
        )
        .expect("CA readable");
        tweak(&mut cfg);
        Client::connect(cfg).await.expect("client connects")
    }

    /// 0-based index of the node leading the shard that holds `room`, from a running node's view.
    pub fn shard_leader(&self, room: &str) -> Option<usize> {
        let running = self.cluster.nodes.iter().position(Option::is_some)?;
        self.shard_leader_seen_by(running, room)
    }

    /// A client of node `i` only, signed in with `token`. A user just created through another
    /// node may take a moment to reach node `i`'s directory: "unknown token" is tried again for
    /// up to 20 s.
    pub async fn user_client(&self, i: usize, token: &str) -> Client {
        let cfg = ClientConfig::from_files(vec![self.addr(i)], token, self.cluster.ca_pem_path())
            .expect("CA readable");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match Client::connect(cfg.clone()).await {
                Ok(c) => return c,
                Err(e)
                    if e.code() == Some(stoa_proto::ErrorCode::Unauthenticated)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node {} refuses the user: {e}", i + 1),
            }
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.len() {
            self.stopped(i).await;
        }
        self.cluster.shutdown().await;
    }
}

/// The end of a history test, given one client per running node (index, client): stop the
/// workload, check that every following client catches up ([`followers_caught_up`]), close the
/// recorded clients, take the final reads ([`final_reads`]) and check the history.
pub async fn finish_with(
    nodes: &[(usize, Client)],
    history: &History,
    workload: Option<workload::Workload>,
    clients: &[std::sync::Arc<workload::Recorded>],
    rooms: &[String],
) -> history::Summary {
    tracing::info!("--- stop the workload, read every node, check the history");
    if let Some(w) = workload {
        w.stop().await;
    }
    let t = std::time::Instant::now();
    followers_caught_up(nodes, clients, Duration::from_secs(30)).await;
    let caught_up_ms = t.elapsed().as_millis() as u64;
    for c in clients {
        c.close().await;
    }
    let t = std::time::Instant::now();
    final_reads(nodes, history, rooms, Duration::from_secs(30)).await;
    let reads_ms = t.elapsed().as_millis() as u64;
    tracing::info!(
        caught_up_ms,
        reads_ms,
        "followers caught up, final reads taken"
    );
    for (_, c) in nodes {
        c.close().await;
    }
    history.assert_ok()
}

/// Liveness of delivery: once faults are healed and posting stopped, every following client
/// gets every room it follows up to the room's last seq on the most advanced node, within
/// `timeout`.
pub async fn followers_caught_up(
    nodes: &[(usize, Client)],
    clients: &[std::sync::Arc<workload::Recorded>],
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    for c in clients {
        for room in c.followed() {
            loop {
                let mut head = Seq::ZERO;
                for (_, r) in nodes {
                    if let Ok((_, last)) = r.history(&room, None, None, 1).await {
                        head = head.max(last);
                    }
                }
                let got = c.client.last_seq(&room).unwrap_or(Seq::ZERO);
                if got >= head {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} got {room} up to seq {got} only, the room is at {head} ({:?})",
                    c.name,
                    c.client.status()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Final reads of `rooms` from every node of `nodes`, recorded in `history` once all hold the
/// same history (polled up to `timeout`; past it the reads are recorded as they are, and the
/// checker reports the difference).
pub async fn final_reads(
    nodes: &[(usize, Client)],
    history: &History,
    rooms: &[String],
    timeout: Duration,
) {
    for room in rooms {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut reads = Vec::new();
            for (_, c) in nodes {
                reads.push(try_full_history(c, room).await);
            }
            let agree = reads.iter().all(|r| r.is_ok())
                && reads.windows(2).all(|w| match w {
                    [Ok(a), Ok(b)] => a == b,
                    _ => false,
                });
            if !agree {
                let lens: Vec<String> = reads
                    .iter()
                    .map(|r| match r {
                        Ok(m) => m.len().to_string(),
                        Err(e) => e.to_string(),
                    })
                    .collect();
                tracing::debug!(room, ?lens, "nodes do not agree yet");
            }
            if agree || tokio::time::Instant::now() >= deadline {
                for ((i, _), r) in nodes.iter().zip(reads) {
                    match r {
                        Ok(messages) => history.final_read(*i, room, messages),
                        Err(e) => panic!("node {} cannot read {room}: {e}", i + 1),
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The whole stored history of a room as one client sees it, paging forward.
pub async fn full_history(client: &Client, room: &str) -> Vec<Message> {
    try_full_history(client, room).await.expect("history page")
}

/// Like [`full_history`], returning the first error.
pub async fn try_full_history(client: &Client, room: &str) -> Result<Vec<Message>, ClientError> {
    let mut out: Vec<Message> = Vec::new();
    loop {
        let after = out.last().map(|m| m.seq);
        let (page, _) = client
            .history(room, None, Some(after.unwrap_or(Seq(0))), 500)
            .await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// The next message of a client's event stream, within 10 s; panics if none comes or the
/// client closes.
pub async fn next_delivered(events: &mut stoa_client::EventStream) -> Message {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("delivered within 10 s")
        .expect("client open")
}

/// A moderation filter: the messages of `room` with any of `words`.
pub fn words_in(room: &str, words: &[&str]) -> stoa_proto::MessageFilter {
    stoa_proto::MessageFilter {
        room: Some(room.into()),
        keywords: words.iter().map(|w| w.to_string()).collect(),
        matching: stoa_proto::KeywordMatch::Any,
        ..Default::default()
    }
}

/// Builds the `stoa-node` binary next to the running test (a no-op when it is up to date) and
/// returns its path. `stoa_node::dev::processes::node_binary` only builds it when it is missing,
/// so without this a real-process test would run whatever binary an earlier build left there.
/// `STOA_NODE_BIN`, when set, is used as is.
pub fn fresh_node_binary() -> std::path::PathBuf {
    if std::env::var_os("STOA_NODE_BIN").is_none() {
        let exe = std::env::current_exe().expect("path of the running test");
        let release = exe
            .ancestors()
            .any(|p| p.file_name().is_some_and(|n| n == "release"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", "stoa-node", "--bin", "stoa-node"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for stoa-node");
        assert!(status.success(), "building stoa-node failed");
    }
    process::node_binary()
}

/// The seed of a randomized test: `STOA_SEED` if set, else a fresh one. Logged with the command
/// that replays it.
pub fn seed(test: &str, command: &str) -> u64 {
    let seed: u64 = std::env::var("STOA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    tracing::info!(seed, "--- {test}: replay with STOA_SEED={seed} {command}");
    eprintln!("{test}: seed {seed}; replay with: STOA_SEED={seed} {command}");
    seed
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

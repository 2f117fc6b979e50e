//! Assembling a node: storage, one QUIC endpoint, the Raft groups, proposers, fan-out, and the
//! accept loop that routes each connection by ALPN to the peer RPC server or a client session.

use crate::domain::meta::MetaCommand;
use crate::fanout::{Fanout, FanoutLimits};
use crate::metrics::{self, ClientLinks, Counters};
use crate::net::peer::{self, PeerPool};
use crate::net::session::{self, token_digest};
use crate::net::tls::{self, NodeTls};
use crate::presence::PresenceHub;
use crate::propose::{Proposals, Proposer, ProposerLimits};
use crate::raft::network::NetworkFactory;
use crate::raft::{Command, CommandResult, GroupId, Raft};
use crate::search::SearchIndex;
use crate::store::log::LogStore;
use crate::store::sm::{MetaView, ShardView, StateMachine};
use crate::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stoa_config::NodeConfig;
use stoa_proto::{ErrorCode, NodeId, ALPN_CLIENT, ALPN_PEER};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

/// Everything a client session needs from its node.
pub struct NodeCtx {
    pub node: NodeId,
    pub config: NodeConfig,
    pub meta: MetaView,
    /// Index `i` is shard group `i + 1`.
    pub shards: Vec<ShardView>,
    pub proposers: Vec<Proposer>,
    pub proposals: Proposals,
    pub fanout: Fanout,
    pub connections: Arc<Semaphore>,
    pub search: Arc<SearchIndex>,
    /// Upload buffer space left on this node, in KiB (`limits.upload_bytes_in_flight_max`).
    pub upload_budget: Arc<Semaphore>,
    pub counters: Counters,
    /// Directory changes per user (`limits.directory_writes_per_s_per_user_max`).
    pub directory_rates: session::UserRates,
    /// Client connections, for the metrics' QUIC counters.
    pub links: Arc<ClientLinks>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("storage: {0}")]
    Storage(#[from] crate::raft::StorageError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error(transparent)]
    Config(#[from] stoa_config::ConfigError),
}

/// A running node. Dropping it without [`NodeHandle::shutdown`] leaves tasks running.
pub struct NodeHandle {
    pub ctx: Arc<NodeCtx>,
    pub rafts: Arc<Vec<Raft>>,
    pub pool: Arc<PeerPool>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<Store>,
    /// Set once at shutdown; every connection task watches it.
    stopping: watch::Sender<bool>,
}

/// File in the data directory where a bootstrapping node leaves the first administrator's token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const ADMIN_USER: &str = "admin";

pub async fn start(config: NodeConfig, tls: NodeTls) -> Result<NodeHandle, NodeError> {
    let me = config.node.id;
    let data_dir = config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| NodeError::Raft(format!("cannot create {}: {e}", data_dir.display())))?;
    // Opening replays the log and may wait for sled's lock: not on an async worker.
    let store = {
        let data_dir = data_dir.clone();
        let cache = config.limits.storage_cache_bytes;
        let wal = crate::store::wal::WalOptions {
            segment_bytes: config.raft.log_segment_bytes,
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || Store::open_with(&data_dir, cache, wal))
            .await
            .map_err(|e| NodeError::Raft(format!("opening the store: {e}")))??
    };
    let idle = Duration::from_millis(config.limits.client_idle_timeout_ms);
    let mut endpoint = bind_endpoint(config.node.listen, tls.server_config(idle)?)?;
    endpoint.set_default_client_config(tls.peer_client_config()?);
    let addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
        addr: config.node.listen,
        source,
    })?;
    let pool = PeerPool::new(me, endpoint.clone());

    // Bound before anything runs, so a taken port fails the start with a clear error.
    let metrics_listener = match config.node.metrics_addr()? {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let counters = Counters::default();

    let limits = &config.limits;
    let (applied_tx, applied_rx) = mpsc::channel(1024);
    let raft_config = Arc::new(raft_config(&config)?);
    let mut rafts = Vec::new();
    let (meta_sm, meta) = StateMachine::open_meta(store.clone()).await?;
    let search = SearchIndex::open(&data_dir.join("search"))?;
    let (index_tx, index_rx) = mpsc::channel(256);
    let presence = PresenceHub::new(me.0, &config.presence);
    let fanout = Fanout::start(
        FanoutLimits {
            frame_bytes_max: limits.frame_bytes_max,
            subscribe_backlog_max: limits.subscribe_backlog_max,
            room_mailbox_max: limits.room_mailbox_max,
        },
        applied_rx,
        meta.clone(),
        Some(index_tx),
        presence,
        counters.clone(),
    );
    rafts.push(new_raft(me, GroupId::META, &raft_config, &pool, &store, meta_sm).await?);
    let mut shards = Vec::new();
    for g in 1..=config.cluster.shards {
        let (sm, view) =
            StateMachine::open_shard(store.clone(), GroupId(g), Some(applied_tx.clone())).await?;
        rafts.push(new_raft(me, GroupId(g), &raft_config, &pool, &store, sm).await?);
        shards.push(view);
    }
    drop(applied_tx);
    let index_task = tokio::spawn(search.clone().run(
        shards.clone(),
        index_rx,
        Duration::from_millis(config.chat.search_commit_interval_ms),
    ));
    let rafts = Arc::new(rafts);
    let rpc_timeout = Duration::from_millis(config.raft.rpc_timeout_ms);
    let proposals = Proposals::new(
        rafts.clone(),
        pool.clone(),
        Duration::from_secs(10),
        rpc_timeout,
        counters.clone(),
    );
    let proposer_limits = ProposerLimits {
        queue_posts_max: limits.proposal_queue_posts_max,
        batch_posts_max: limits.proposal_batch_posts_max,
        batch_bytes_max: (crate::net::peer::PEER_MESSAGE_BYTES_MAX / 8)
            .max(limits.message_text_bytes_max),
        in_flight_max: limits.proposals_in_flight_max,
        linger: Duration::from_millis(limits.proposal_linger_ms),
        linger_after_posts: limits.proposal_linger_after_posts,
    };
    let proposers = (1..=config.cluster.shards)
        .map(|g| Proposer::start(GroupId(g), proposals.clone(), proposer_limits))
        .collect();
    let ctx = Arc::new(NodeCtx {
        node: me,
        counters: counters.clone(),
        directory_rates: session::UserRates::new(limits.directory_writes_per_s_per_user_max),
        links: Arc::default(),
        connections: Arc::new(Semaphore::new(limits.connections_max)),
        upload_budget: Arc::new(Semaphore::new(limits.upload_bytes_in_flight_max / 1024)),
        search,
        config: config.clone(),
        meta,
        shards,
        proposers,
        proposals,
        fanout,
    });

    let (stopping, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(accept_loop(
        endpoint.clone(),
        ctx.clone(),
        pool.clone(),
        rafts.clone(),
        stop_rx,
    ))];
    tasks.push(index_task);
    if let Some(listener) = metrics_listener {
        let registry = metrics::registry(
            &counters,
            metrics::Snapshot {
                rafts: rafts.clone(),
                connections: ctx.connections.clone(),
                connections_max: limits.connections_max,
                links: ctx.links.clone(),
            },
        );
        tasks.push(tokio::spawn(metrics::serve(
            listener,
            registry,
            stopping.subscribe(),
        )));
    }
    tasks.push(tokio::spawn(crate::presence::run(
        ctx.fanout.clone(),
        pool.clone(),
        rafts[GroupId::META.0 as usize].clone(),
        config.presence.clone(),
        rpc_timeout,
    )));
    tasks.push(tokio::spawn(crate::compaction::compact_pinning_groups(
        store.clone(),
        rafts.clone(),
    )));
    tasks.push(tokio::spawn(crate::propose::keep_shards_fenced(
        ctx.meta.clone(),
        ctx.shards.clone(),
        rafts.clone(),
        me.0,
    )));
    if config.cluster.bootstrap {
        let handoffs = crate::formation::bootstrap_groups(&config, &rafts, &pool)
            .await
            .map_err(NodeError::Raft)?;
        tasks.extend(handoffs);
        tasks.push(tokio::spawn(bootstrap_admin(
            ctx.clone(),
            data_dir.join(ADMIN_TOKEN_FILE),
        )));
    }
    tracing::info!(node = %me, %addr, shards = config.cluster.shards, "node started");
    Ok(NodeHandle {
        ctx,
        rafts,
        pool,
        addr,
        metrics_addr,
        endpoint,
        tasks,
        store,
        stopping,
    })
}

/// Receive buffer asked for the node's UDP socket. Every client and peer packet of the node
/// arrives on this one socket; with the kernel default (~208 KiB) bursts of fan-out
/// acknowledgements were dropped under load (measured by the load generator).
const UDP_RECV_BUFFER_BYTES: usize = 4 << 20;

fn bind_endpoint(
    listen: SocketAddr,
    server: quinn::ServerConfig,
) -> Result<quinn::Endpoint, NodeError> {
    use quinn::udp::{UdpSockRef, UdpSocketState};
    let bind_err = |source| NodeError::Bind {
        addr: listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket)).map_err(bind_err)?;
    if let Err(e) = state.set_recv_buffer_size(UdpSockRef::from(&socket), UDP_RECV_BUFFER_BYTES) {
        tracing::warn!(error = %e, bytes = UDP_RECV_BUFFER_BYTES, "cannot enlarge the UDP receive buffer");
    }
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_err(std::io::Error::other("no async runtime for QUIC")))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
    .map_err(bind_err)
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config, NodeError> {
    let r = &config.raft;
    openraft::Config {
        cluster_name: "stoa".into(),
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        max_payload_entries: r.max_payload_entries,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
        install_snapshot_timeout: r.rpc_timeout_ms.max(1000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Raft(e.to_string()))
}

async fn new_raft(
    me: NodeId,
    group: GroupId,
    config: &Arc<openraft::Config>,
    pool: &Arc<PeerPool>,
    store: &Arc<Store>,
    sm: StateMachine,
) -> Result<Raft, NodeError> {
    let log = LogStore::new(store.clone(), group);
    Raft::new(
        me.0,
        config.clone(),
        NetworkFactory::new(group, pool.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| NodeError::Raft(format!("{group}: {e}")))
}

/// Create the first administrator once the meta group commits, and leave its token in the data
/// directory for the operator.
async fn bootstrap_admin(ctx: Arc<NodeCtx>, token_file: PathBuf) {
    if token_file.exists() || ctx.meta.read(|m| m.has_admin()) {
        return;
    }
    let token = crate::net::session::new_token();
    let cmd = MetaCommand::CreateUser {
        by: None,
        name: ADMIN_USER.into(),
        admin: true,
        token_digest: token_digest(&token),
    };
    loop {
        match ctx
            .proposals
            .propose(GroupId::META, Command::Meta(cmd.clone()))
            .await
        {
            Ok(CommandResult::Meta(Ok(_))) => break,
            Ok(CommandResult::Meta(Err(e))) if e.code == ErrorCode::Forbidden => {
                tracing::warn!(error = %e, "an administrator exists already; no token written");
                return;
            }
            Ok(other) => {
                tracing::error!(answer = ?other, "unexpected answer creating the administrator");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "meta group not ready for the administrator yet"),
        }
    }
    // The cluster was just set up: its replicated settings start from this node's configuration.
    let initial = MetaCommand::Settings {
        by: ADMIN_USER.into(),
        change: stoa_proto::SettingsChange {
            default_chat_history: Some(ctx.config.chat.default_chat_history),
            ..Default::default()
        },
    };
    match ctx
        .proposals
        .propose(GroupId::META, Command::Meta(initial))
        .await
    {
        Ok(CommandResult::Meta(Ok(_))) => {}
        other => tracing::error!(answer = ?other, "cannot apply the initial cluster settings"),
    }
    let tmp = token_file.with_extension("tmp");
    let written =
        std::fs::write(&tmp, format!("{token}\n")).and_then(|_| std::fs::rename(&tmp, &token_file));
    match written {
        Ok(()) => tracing::info!(file = %token_file.display(), "administrator token written"),
        Err(e) => {
            tracing::error!(file = %token_file.display(), error = %e, "cannot write the administrator token")
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: Arc<NodeCtx>,
    pool: Arc<PeerPool>,
    rafts: Arc<Vec<Raft>>,
    stop: watch::Receiver<bool>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let (ctx, pool, rafts, mut stop) = (ctx.clone(), pool.clone(), rafts.clone(), stop.clone());
        if *stop.borrow() {
            incoming.refuse();
            continue;
        }
        // A connection task ends at shutdown even mid-handshake: dropping its handles closes it,
        // which lets the endpoint release its UDP port.
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = serve_connection(incoming, ctx, pool, rafts) => {}
            }
        });
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    ctx: Arc<NodeCtx>,
    pool: Arc<PeerPool>,
    rafts: Arc<Vec<Raft>>,
) {
    let conn = match tokio::time::timeout(Duration::from_secs(10), incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => return,
    };
    match tls::alpn(&conn).as_deref() {
        Some(a) if a == ALPN_PEER => {
            let candidates = peer_candidates(&ctx, &rafts);
            match tls::peer_node_id(&conn, candidates) {
                Some(from) => {
                    conn.set_max_concurrent_bi_streams(tls::PEER_STREAMS_MAX.into());
                    peer::serve(
                        conn,
                        from,
                        pool,
                        rafts,
                        ctx.proposers.clone(),
                        ctx.fanout.clone(),
                        Arc::new(crate::formation::initial_members(&ctx.config)),
                    )
                    .await
                }
                None => {
                    tracing::warn!(remote = %conn.remote_address(), "peer certificate names no member; refused");
                    conn.close(3u32.into(), b"not a cluster member");
                }
            }
        }
        Some(a) if a == ALPN_CLIENT => session::run(conn, ctx).await,
        _ => conn.close(4u32.into(), b"unknown protocol"),
    }
}

/// Node ids a peer may be: configured peers and every member the meta group knows of.
fn peer_candidates(ctx: &NodeCtx, rafts: &[Raft]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ctx.config.cluster.peers.iter().map(|p| p.id).collect();
    if let Some(meta) = rafts.first() {
        ids.extend(
            meta.metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| NodeId(*id)),
        );
    }
    ids.sort();
    ids.dedup();
    ids.retain(|&id| id != ctx.node);
    ids
}

impl NodeHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the metrics endpoint listens (`node.metrics_listen`, port resolved), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn id(&self) -> NodeId {
        self.ctx.node
    }

    /// Wait until every group has a leader and this node has applied up to it.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for raft in self.rafts.iter() {
            let ok = raft
                .wait(Some(
                    deadline.saturating_duration_since(tokio::time::Instant::now()),
                ))
                .metrics(
                    |m| m.current_leader.is_some() && m.last_applied.is_some(),
                    "leader known",
                )
                .await
                .is_ok();
            if !ok {
                return false;
            }
        }
        true
    }

    /// Stop serving: Raft groups, endpoint, room actors; flush storage. Returns once the data
    /// directory is released. The UDP port may stay bound a little longer: quinn keeps a
    /// connection whose handshake was in flight at `close` until its idle timeout (a process exit
    /// frees it at once; [`crate::dev::LocalCluster::restart`] waits for it in-process).
    pub async fn shutdown(self) {
        // Close the endpoint first, while the accept loop still runs: connections that arrive
        // during shutdown are then refused instead of waiting unaccepted.
        let _ = self.stopping.send(true);
        self.endpoint.close(0u32.into(), b"shutdown");
        // A purge waiting for its state machine would hold its Raft core, and so the shutdown.
        self.store.closing();
        for raft in self.rafts.iter() {
            let _ = raft.shutdown().await;
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.ctx.fanout.stop();
        let _ = self.ctx.search.refresh().await;
        let _ = self.store.flush().await;
        // The index writer holds a file lock; it must be gone before the node can start again.
        let search = Arc::downgrade(&self.ctx.search);
        let NodeHandle {
            ctx,
            rafts,
            pool,
            store,
            endpoint,
            addr,
            ..
        } = self;
        drop((ctx, rafts, pool, endpoint));
        // Sessions and proposers hold references until they notice the closed endpoint.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while (Arc::strong_count(&store) > 1 || search.strong_count() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Arc::strong_count(&store) > 1 {
            tracing::warn!(%addr, "storage still referenced after shutdown");
        }
        drop(store);
    }
}

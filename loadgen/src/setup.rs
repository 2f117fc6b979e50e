//! Everything before the load: the cluster (started or given), the load user, the rooms, who is a
//! member of what, and the client connections.
//!
//! All connections sign in as one non-administrator user, `loadgen-<seed>`, created here by the
//! administrator, with chat enabled for it by a user policy (the global policy ships disabled).
//! A user may hold many connections; every connection is one member. If that user still may not
//! read, the administrator token is used instead and the run says so.

use crate::args::TargetArgs;
use anyhow::{anyhow, bail, Context, Result};
use futures::{stream, StreamExt, TryStreamExt};
use rand::{rngs::StdRng, SeedableRng};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stoa_client::{Client, ClientConfig, ClientError, Endpoint, ErrorCode, PolicyScope};
use stoa_node::dev::processes::ProcCluster;

/// Nodes and shards of `--embedded`.
pub const EMBEDDED_NODES: usize = 3;
pub const EMBEDDED_SHARDS: u32 = 2;
/// How long the embedded cluster may take to write its administrator token.
const EMBEDDED_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new user, or the cluster itself, may take to be usable on every node.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to connect one load connection.
const CONNECT_ATTEMPTS: u32 = 3;
/// Directory requests in flight at once during setup.
const SETUP_CONCURRENCY: usize = 16;
/// Lines of node logs kept for the report.
const LOG_LINES_KEPT: usize = 5;

/// The cluster under load.
pub struct Target {
    pub servers: Vec<String>,
    pub admin_token: String,
    pub ca_pem: Vec<u8>,
    /// The embedded cluster; its processes die with it (SIGKILL on drop).
    cluster: Option<Arc<Mutex<ProcCluster>>>,
}

/// What the node logs of an embedded cluster held.
#[derive(Debug, Clone, Default)]
pub struct NodeLogs {
    pub errors: Vec<u64>,
    pub warnings: Vec<u64>,
    /// The first error lines of all nodes, prefixed by the node.
    pub first_errors: Vec<String>,
}

impl Target {
    pub async fn open(args: &TargetArgs) -> Result<Target> {
        if args.embedded {
            return Target::embedded().await;
        }
        let admin_token = match (&args.token, &args.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_string(),
            (None, None) => {
                bail!("give an administrator token: --token, STOA_TOKEN or --token-file")
            }
        };
        let ca = args
            .ca
            .as_ref()
            .ok_or_else(|| anyhow!("give the cluster CA: --ca or STOA_CA"))?;
        let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        Ok(Target {
            servers: args.servers.clone(),
            admin_token,
            ca_pem,
            cluster: None,
        })
    }

    async fn embedded() -> Result<Target> {
        // Blocking: writes certificates, spawns processes, polls for the token file. A panic
        // in there drops (and so kills) whatever it had started.
        let (cluster, admin_token) = tokio::task::spawn_blocking(|| {
            let cluster = ProcCluster::start_with(EMBEDDED_NODES, EMBEDDED_SHARDS, "");
            let token = cluster.admin_token(EMBEDDED_START_TIMEOUT);
            (cluster, token)
        })
        .await
        .map_err(|e| anyhow!("the embedded cluster did not start: {e}"))?;
        let ca_pem = std::fs::read(cluster.ca_pem()).context("cannot read the embedded CA")?;
        Ok(Target {
            servers: cluster.servers(),
            admin_token,
            ca_pem,
            cluster: Some(Arc::new(Mutex::new(cluster))),
        })
    }

    pub fn embedded_cluster(&self) -> Option<MutexGuard<'_, ProcCluster>> {
        self.cluster
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The embedded cluster, for tasks that follow its processes.
    pub fn cluster_handle(&self) -> Option<Arc<Mutex<ProcCluster>>> {
        self.cluster.clone()
    }

    /// Process ids of the embedded nodes (`None`: stopped); empty for a given cluster.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.embedded_cluster()
            .map(|c| c.pids())
            .unwrap_or_default()
    }

    /// A client configuration for `servers` (all nodes if `None`).
    pub fn config(&self, token: &str, servers: Option<Vec<String>>) -> ClientConfig {
        ClientConfig::new(
            servers.unwrap_or_else(|| self.servers.clone()),
            token,
            self.ca_pem.clone(),
        )
    }

    /// Stops every embedded node (SIGKILL), copies the logs to `copy_to` if given and counts
    /// their errors and warnings. Does nothing for a given cluster.
    pub fn stop(&self, copy_to: Option<&Path>) -> Result<NodeLogs> {
        let Some(mut cluster) = self.embedded_cluster() else {
            return Ok(NodeLogs::default());
        };
        for i in 0..cluster.addrs.len() {
            cluster.kill9(i);
        }
        let mut logs = NodeLogs::default();
        if let Some(dir) = copy_to {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for id in 1..=cluster.addrs.len() {
            let name = format!("node-{id}.log");
            let path = cluster.dir.path().join(&name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
            logs.errors.push(errors.len() as u64);
            logs.warnings
                .push(text.lines().filter(|l| l.contains("WARN")).count() as u64);
            for l in errors.iter().take(LOG_LINES_KEPT) {
                if logs.first_errors.len() < LOG_LINES_KEPT {
                    logs.first_errors.push(format!("node {id}: {l}"));
                }
            }
            if let Some(dir) = copy_to {
                std::fs::copy(&path, dir.join(&name))
                    .with_context(|| format!("cannot copy {}", path.display()))?;
            }
        }
        Ok(logs)
    }
}

/// Connects with retries until `timeout`: the cluster may still be electing or replicating.
pub async fn connect_patiently(cfg: ClientConfig, timeout: Duration) -> Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        match Client::connect(cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "setup connection refused, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context(format!("cannot connect to {:?}", cfg.servers)),
        }
    }
}

/// A short name for a failed call, for counting errors by kind.
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Api(a) => a.code.as_str().to_string(),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::ConnectionLost(_) => "connection_lost".into(),
        ClientError::Closed => "closed".into(),
        ClientError::Connect { .. } => "connect".into(),
        other => format!("{other}"),
    }
}

/// The name of room `i`.
pub fn room_name(i: usize) -> String {
    format!("loadgen-{i}")
}

/// The load's identity and rooms, ready for connections.
pub struct Prepared {
    /// Name of the user all load connections sign in as: the author of every post.
    pub author: String,
    pub token: String,
    pub room_names: Vec<String>,
    /// Each room's last seq before the load.
    pub room_heads: Vec<u64>,
    /// Things the report should say (fallbacks taken).
    pub notes: Vec<String>,
}

/// Makes the load user and the rooms, and checks the user can use them on every node.
pub async fn prepare(target: &Target, seed: u64, rooms: usize, run_id: &str) -> Result<Prepared> {
    let admin = connect_patiently(target.config(&target.admin_token, None), READY_TIMEOUT)
        .await
        .context("administrator connection")?;
    let mut notes = Vec::new();
    let mut author = format!("loadgen-{seed}");
    let token = match admin.create_user(&author, false).await {
        Ok(t) => t,
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
            // Its token is not retrievable: a fresh user for this run.
            let again = format!("loadgen-{seed}-{run_id}");
            notes.push(format!(
                "user {author} exists already (its token is unknown): using {again}"
            ));
            author = again;
            admin
                .create_user(&author, false)
                .await
                .with_context(|| format!("cannot create user {author}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create user {author}")),
    };
    // Chat ships disabled by the global policy: enable it for the load user alone.
    if let Err(e) = admin
        .policy_set(PolicyScope::User(author.clone()), Some(true))
        .await
    {
        notes.push(format!("cannot enable chat for {author}: {e}"));
    }
    let room_names: Vec<String> = (0..rooms).map(room_name).collect();
    stream::iter(room_names.iter())
        .map(|name| {
            let admin = admin.clone();
            async move {
                match admin.create_room(name, "stoa-loadgen").await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("cannot create room {name}")),
                }
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    let (author, token) = match probe_every_node(target, &token, &room_names[0]).await? {
        Probe::Ok => (author, token),
        Probe::Forbidden(why) => {
            let admin_name = admin.whoami().await.context("whoami")?.user;
            notes.push(format!(
                "user {author} may not read ({why}); the load runs as administrator \
                 {admin_name}"
            ));
            (admin_name, target.admin_token.clone())
        }
    };

    let room_heads = stream::iter(room_names.iter())
        .map(|name| {
            let admin = admin.clone();
            async move {
                let (_, last) = admin
                    .history(name, None, None, 1)
                    .await
                    .with_context(|| format!("cannot read the head of {name}"))?;
                anyhow::Ok(last.0)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect::<Vec<u64>>()
        .await?;
    admin.close().await;
    Ok(Prepared {
        author,
        token,
        room_names,
        room_heads,
        notes,
    })
}

enum Probe {
    Ok,
    Forbidden(String),
}

/// Reads `room` as the load user on every node, waiting for the user and the room to reach each
/// node's directory.
async fn probe_every_node(target: &Target, token: &str, room: &str) -> Result<Probe> {
    for server in &target.servers {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let attempt = async {
                let c = Client::connect(target.config(token, Some(vec![server.clone()]))).await?;
                let r = c.history(room, None, None, 1).await;
                c.close().await;
                r
            };
            match attempt.await {
                Ok(_) => break,
                Err(e) if e.code() == Some(ErrorCode::Forbidden) => {
                    return Ok(Probe::Forbidden(e.to_string()))
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%server, error = %e, "load user not usable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("the load user cannot read {room} on {server}"))
                }
            }
        }
    }
    Ok(Probe::Ok)
}

/// The rooms of each user: `per_user` distinct rooms out of `rooms`, drawn with `seed`.
pub fn memberships(users: usize, rooms: usize, per_user: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..users)
        .map(|_| {
            let mut r = rand::seq::index::sample(&mut rng, rooms, per_user).into_vec();
            r.sort_unstable();
            r
        })
        .collect()
}

/// `servers` rotated by `i`: user `i` first tries node `i mod n`, so connections spread evenly.
pub fn rotated(servers: &[String], i: usize) -> Vec<String> {
    let mut s = servers.to_vec();
    if !s.is_empty() {
        s.rotate_left(i % servers.len());
    }
    s
}

/// A client endpoint like [`stoa_client::new_endpoint`] (IPv4, a port of the OS's choice) whose
/// socket asks for a `recv_buffer_bytes` receive buffer: a few sockets carry every load
/// connection, and at 100k deliveries/s the usual default (`net.core.rmem_default`, often
/// 208 KiB) overflows and drops datagrams, which QUIC then recovers slowly. The kernel caps the
/// size at `net.core.rmem_max`; answers the endpoint and the size granted (bytes).
pub fn endpoint(recv_buffer_bytes: usize) -> Result<(Endpoint, usize)> {
    use quinn::udp::{UdpSockRef, UdpSocketState};
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .context("cannot bind a client UDP socket")?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket)).context("UDP socket setup")?;
    if let Err(e) = state.set_recv_buffer_size(UdpSockRef::from(&socket), recv_buffer_bytes) {
        tracing::warn!(error = %e, recv_buffer_bytes, "cannot size the receive buffer");
    }
    let granted = state
        .recv_buffer_size(UdpSockRef::from(&socket))
        .unwrap_or(0);
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no Tokio runtime for QUIC"))?;
    let endpoint = Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .context("cannot open a client endpoint")?;
    Ok((endpoint, granted))
}

/// Opens one connection per user, `concurrency` at a time, user `i` on endpoint `i mod n`.
pub async fn connect_users(
    target: &Target,
    token: &str,
    users: usize,
    endpoints: &[Endpoint],
    concurrency: usize,
) -> Result<Vec<Client>> {
    stream::iter(0..users)
        .map(|i| {
            let cfg = target.config(token, Some(rotated(&target.servers, i)));
            let endpoint = endpoints[i % endpoints.len()].clone();
            async move {
                let mut attempt = 1;
                loop {
                    match Client::connect_with_endpoint(cfg.clone(), endpoint.clone()).await {
                        Ok(c) => return Ok(c),
                        Err(e) if attempt < CONNECT_ATTEMPTS => {
                            tracing::debug!(user = i, error = %e, "connect failed, retrying");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("user connection {i} failed {CONNECT_ATTEMPTS} times")
                            })
                        }
                    }
                }
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_distinct_seeded_and_spread() {
        let m = memberships(1000, 100, 5, 7);
        assert_eq!(m, memberships(1000, 100, 5, 7), "same seed, same rooms");
        assert_ne!(m, memberships(1000, 100, 5, 8));
        let mut per_room = vec![0; 100];
        for rooms in &m {
            assert_eq!(rooms.len(), 5);
            assert!(rooms.windows(2).all(|w| w[0] < w[1]), "distinct");
            for &r in rooms {
                per_room[r] += 1;
            }
        }
        assert!(
            per_room.iter().all(|&n| (20..=80).contains(&n)),
            "{per_room:?}"
        );
    }

    #[test]
    fn servers_rotate_per_user() {
        let s: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(rotated(&s, 0), s);
        assert_eq!(rotated(&s, 4), ["b", "c", "a"]);
    }
}

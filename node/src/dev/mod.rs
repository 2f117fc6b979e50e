//! A local cluster of nodes in one process: `stoa-node dev`, and the in-process cluster of the tests.
//!
//! Layout of its directory: `ca.pem` / `ca.key` (the cluster CA), `certs/node-N.{pem,key}`,
//! `node-N/` (each node's data), and `admin.token`. Started again on the same directory it reuses
//! all of it and comes back with its history.

pub mod processes;

use crate::domain::meta::{shard_for_room, MetaCommand};
use crate::net::tls::{self, NodeTls};
use crate::node::{NodeError, NodeHandle, ADMIN_TOKEN_FILE, ADMIN_USER};
use crate::raft::{Command, CommandResult, GroupId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stoa_config::{NodeConfig, PeerConfig};
use stoa_proto::{
    CategoryOp, CategorySpec, ErrorCode, Invitations, NodeId, PolicyScope, Principal, Privacy,
    RoomOp, RoomSpec, RoomType,
};

pub const DEMO_ROOM: &str = "lobby";
pub const DEMO_CATEGORY: &str = "demo";

/// Free UDP ports on 127.0.0.1 (taken and released; a later bind may race, which is unlikely).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("a bound socket has an address"))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Setup(String),
}

pub struct LocalCluster {
    pub dir: PathBuf,
    configs: Vec<NodeConfig>,
    tls: Vec<NodeTls>,
    /// `None` while a node is stopped.
    pub nodes: Vec<Option<NodeHandle>>,
}

impl LocalCluster {
    /// Configurations for `n` nodes on the given addresses, data under `dir`, node 1 bootstrapping.
    pub fn configs(dir: &Path, addrs: &[SocketAddr], shards: u32) -> Vec<NodeConfig> {
        let peers: Vec<PeerConfig> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| PeerConfig {
                id: NodeId(i as u64 + 1),
                addr: *a,
            })
            .collect();
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut c = NodeConfig::default();
                c.node.id = NodeId(i as u64 + 1);
                c.node.listen = *a;
                c.node.data_dir = dir.join(format!("node-{}", i + 1));
                c.cluster.shards = shards;
                c.cluster.peers = peers.clone();
                c.cluster.bootstrap = i == 0;
                // Someone trying the demo searches for what they just posted.
                c.chat.search_commit_interval_ms = 1000;
                c
            })
            .collect()
    }

    /// Start a cluster from configurations (see [`LocalCluster::configs`]), making or reusing the
    /// CA and node certificates in `dir`.
    pub async fn start(dir: &Path, configs: Vec<NodeConfig>) -> Result<LocalCluster, DevError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DevError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let ids: Vec<NodeId> = configs.iter().map(|c| c.node.id).collect();
        let tls = load_or_make_certs(dir, &ids)?;
        let mut cluster = LocalCluster {
            dir: dir.to_path_buf(),
            configs,
            tls,
            nodes: Vec::new(),
        };
        // Start the bootstrapping node last, so its first elections find its peers listening.
        let mut order: Vec<usize> = (0..cluster.configs.len()).collect();
        order.sort_by_key(|&i| cluster.configs[i].cluster.bootstrap);
        cluster.nodes = (0..cluster.configs.len()).map(|_| None).collect();
        for i in order {
            let node =
                crate::node::start(cluster.configs[i].clone(), cluster.tls[i].clone()).await?;
            cluster.nodes[i] = Some(node);
        }
        Ok(cluster)
    }

    /// Wait for leaders in every group, the administrator's token, and the demo room.
    pub async fn ready(&self, timeout: Duration) -> Result<String, DevError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for node in self.nodes.iter().flatten() {
            if !node
                .wait_ready(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                return Err(DevError::Setup(format!(
                    "node {} found no leaders within {timeout:?}",
                    node.id()
                )));
            }
        }
        let token_file = self.configs[0].node.data_dir.join(ADMIN_TOKEN_FILE);
        let token = loop {
            if let Ok(t) = std::fs::read_to_string(&token_file) {
                break t.trim().to_string();
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DevError::Setup(format!(
                    "no administrator token in {}",
                    token_file.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        std::fs::write(self.dir.join(ADMIN_TOKEN_FILE), format!("{token}\n"))
            .map_err(|e| DevError::Setup(format!("cannot write the admin token: {e}")))?;
        self.demo_setup().await?;
        Ok(token)
    }

    /// The demo of `stoa-node dev`: a category open to everyone, the room `lobby` in it, and chat
    /// enabled for everyone (the global policy ships disabled). Repeating it changes nothing.
    async fn demo_setup(&self) -> Result<(), DevError> {
        let by = ADMIN_USER.to_string();
        self.admin_command(MetaCommand::Category {
            by: by.clone(),
            op: CategoryOp::Create(CategorySpec {
                name: DEMO_CATEGORY.into(),
                description: "Made by stoa-node dev".into(),
                allowed: vec![Principal::Everyone],
                denied: vec![],
                creators: vec![Principal::Everyone],
                file_upload: true,
                invitations: true,
                chat_history: true,
            }),
        })
        .await?;
        self.ensure_room(DEMO_ROOM, "Say hello").await?;
        self.admin_command(MetaCommand::Policy {
            by,
            scope: PolicyScope::Global,
            enabled: Some(true),
        })
        .await
    }

    /// An open room in the demo category (made if missing).
    pub async fn ensure_room(&self, name: &str, description: &str) -> Result<(), DevError> {
        let node = self.any_node()?;
        let shard_count = node.ctx.config.cluster.shards;
        let spec = RoomSpec {
            name: name.into(),
            category: DEMO_CATEGORY.into(),
            description: description.into(),
            privacy: Privacy::Open,
            room_type: RoomType::Normal,
            invitations: Invitations::Inherit,
            addin: None,
        };
        let shard = shard_for_room(name, shard_count);
        self.admin_command(MetaCommand::Room {
            by: ADMIN_USER.into(),
            op: RoomOp::Create(spec),
            shard,
            shard_count,
        })
        .await
    }

    fn any_node(&self) -> Result<&NodeHandle, DevError> {
        self.nodes
            .iter()
            .flatten()
            .next()
            .ok_or_else(|| DevError::Setup("no node running".into()))
    }

    /// Apply a directory command as the administrator; "already exists" counts as done.
    async fn admin_command(&self, cmd: MetaCommand) -> Result<(), DevError> {
        let node = self.any_node()?;
        match node
            .ctx
            .proposals
            .propose(GroupId::META, Command::Meta(cmd.clone()))
            .await
        {
            Ok(CommandResult::Meta(Ok(_))) => Ok(()),
            Ok(CommandResult::Meta(Err(e))) if e.code == ErrorCode::AlreadyExists => Ok(()),
            other => Err(DevError::Setup(format!("{cmd:?} failed: {other:?}"))),
        }
    }

    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.configs.iter().map(|c| c.node.listen).collect()
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Stop node `i` (0-based); its data directory stays.
    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    /// Start node `i` again on its data directory and address. In one process the old
    /// endpoint's port can stay bound until a stray connection times out (see
    /// [`NodeHandle::shutdown`]), so binding is retried for a while.
    pub async fn restart(&mut self, i: usize) -> Result<(), DevError> {
        self.stop(i).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match crate::node::start(self.configs[i].clone(), self.tls[i].clone()).await {
                Ok(node) => {
                    self.nodes[i] = Some(node);
                    return Ok(());
                }
                Err(NodeError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stop every node, all at once.
    pub async fn shutdown(self) {
        futures::future::join_all(self.nodes.into_iter().flatten().map(NodeHandle::shutdown)).await;
    }
}

fn load_or_make_certs(dir: &Path, ids: &[NodeId]) -> Result<Vec<NodeTls>, DevError> {
    let certs = dir.join("certs");
    let paths = |id: NodeId| {
        (
            certs.join(tls::node_cert_file(id)),
            certs.join(tls::node_key_file(id)),
        )
    };
    let complete = dir.join("ca.pem").exists()
        && ids
            .iter()
            .all(|&id| paths(id).0.exists() && paths(id).1.exists());
    if !complete {
        let generated = tls::generate(ids)?;
        tls::write_generated(&certs, &generated)?;
        std::fs::copy(certs.join("ca.pem"), dir.join("ca.pem")).map_err(|e| {
            DevError::Setup(format!(
                "cannot write {}: {e}",
                dir.join("ca.pem").display()
            ))
        })?;
    }
    ids.iter()
        .map(|&id| {
            let (cert, key) = paths(id);
            NodeTls::load(&dir.join("ca.pem"), &cert, &key).map_err(DevError::from)
        })
        .collect()
}

//! Node-to-node RPC over QUIC (ALPN `stoa-peer/1`): one bidirectional stream per call, carrying one
//! bincode request and one bincode response, each read with a hard size limit. Every Raft request
//! names its Raft group; presence reports belong to no group. The pool keeps one connection per
//! peer and has fault hooks for tests.

use crate::domain::presence::{Ack, Report};
use crate::domain::shard::{PostOutcome, ProposedPost};
use crate::fanout::Fanout;
use crate::propose::Proposer;
use crate::raft::{Command, CommandResult, GroupId, Raft, TypeConfig};
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use stoa_proto::ApiError;
use stoa_proto::{node_server_name, NodeId};

/// Upper bound of one peer request or response. Raft appends are split below it (see
/// `raft::network`), snapshots are sent in chunks well under it.
pub const PEER_MESSAGE_BYTES_MAX: usize = stoa_proto::limits::FRAME_BYTES_MAX;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append {
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        group: GroupId,
        rpc: VoteRequest<u64>,
    },
    Snapshot {
        group: GroupId,
        rpc: InstallSnapshotRequest<TypeConfig>,
    },
    /// A command forwarded by a follower to the group's leader.
    Propose { group: GroupId, cmd: Command },
    /// Posts forwarded to the group's leader, to join its proposer's next batch.
    ForwardPosts {
        group: GroupId,
        posts: Vec<ProposedPost>,
    },
    /// The sender's participants: its whole roster or the changes since the last report
    /// (see [`crate::domain::presence`]). The sender is the authenticated peer, never a field.
    Presence(Report),
    /// Initialize a group of a forming cluster here, with these members, so that this node is
    /// its first leader (see [`crate::formation`]).
    Initialize {
        group: GroupId,
        members: Vec<(u64, String)>,
    },
}

impl PeerRequest {
    /// The Raft group the request is for; `None` for requests of no group.
    fn group(&self) -> Option<GroupId> {
        match self {
            PeerRequest::Append { group, .. }
            | PeerRequest::Vote { group, .. }
            | PeerRequest::Snapshot { group, .. }
            | PeerRequest::Propose { group, .. }
            | PeerRequest::ForwardPosts { group, .. }
            | PeerRequest::Initialize { group, .. } => Some(*group),
            PeerRequest::Presence(_) => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// What applying answered, and the log index the command was committed at.
    Proposed(Result<(CommandResult, u64), ProposeError>),
    /// The request could not be served at all (unknown group).
    Refused(String),
    /// One outcome per forwarded post.
    Posted(Result<Vec<Result<PostOutcome, ApiError>>, ProposeError>),
    /// How a presence report was taken.
    Presence(Ack),
    /// Whether the group is initialized here now.
    Initialized(Result<(), String>),
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader of the group; leader is {leader:?}")]
    NotLeader { leader: Option<u64> },
    #[error("the group cannot accept the command now: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("node {0} is unreachable: {1}")]
    Unreachable(u64, String),
    #[error("call to node {0} failed: {1}")]
    Network(u64, String),
    #[error("call to node {0} timed out after {1:?}")]
    Timeout(u64, Duration),
}

/// Test hooks: drop traffic to or from given nodes, delay every call, or lose a fraction of calls.
#[derive(Default)]
struct Faults {
    blocked_out: HashSet<u64>,
    blocked_in: HashSet<u64>,
    delay: Option<Duration>,
    lossy: Option<Lossy>,
}

/// Loses each outgoing call with probability `p`, drawn from a seeded generator so a run can be
/// replayed (as far as the order of calls repeats). Half of the lost calls lose the request (the
/// peer never sees it), half the response (the peer acted on it, the caller cannot know).
struct Lossy {
    p: f64,
    rng: Mutex<rand::rngs::StdRng>,
}

/// Which half of a call a [`Lossy`] fault loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Request,
    Response,
}

impl Faults {
    fn set_blocked(set: &mut HashSet<u64>, peer: u64, blocked: bool) {
        if blocked {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    fn set_lossy(&mut self, p: f64, seed: u64) {
        use rand::SeedableRng;
        self.lossy = (p > 0.0).then(|| Lossy {
            p: p.min(1.0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        });
    }

    /// Whether the next call is lost, and which half of it.
    fn roll(&self) -> Option<Lost> {
        use rand::Rng;
        let lossy = self.lossy.as_ref()?;
        let mut rng = lossy.rng.lock().unwrap_or_else(|e| e.into_inner());
        if !rng.gen_bool(lossy.p) {
            return None;
        }
        Some(if rng.gen_bool(0.5) {
            Lost::Request
        } else {
            Lost::Response
        })
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

pub struct PeerPool {
    me: NodeId,
    endpoint: quinn::Endpoint,
    conns: Mutex<HashMap<u64, Slot>>,
    faults: RwLock<Faults>,
}

impl PeerPool {
    pub fn new(me: NodeId, endpoint: quinn::Endpoint) -> Arc<PeerPool> {
        Arc::new(PeerPool {
            me,
            endpoint,
            conns: Mutex::default(),
            faults: RwLock::default(),
        })
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Drop calls from this node to `peer` (one way). Tests build partitions from this.
    pub fn block_outgoing(&self, peer: u64, blocked: bool) {
        let mut f = self.faults.write().unwrap_or_else(|e| e.into_inner());
        Faults::set_blocked(&mut f.blocked_out, peer, blocked);
    }

    /// Refuse calls from `peer` to this node (one way).
    pub fn block_incoming(&self, peer: u64, blocked: bool) {
        let mut f = self.faults.write().unwrap_or_else(|e| e.into_inner());
        Faults::set_blocked(&mut f.blocked_in, peer, blocked);
    }

    pub fn set_delay(&self, delay: Option<Duration>) {
        self.faults.write().unwrap_or_else(|e| e.into_inner()).delay = delay;
    }

    /// Lose each outgoing call with probability `p` (0 turns it off), seeded by `seed`: half of
    /// the lost calls never reach the peer, half reach it and lose their response.
    pub fn set_drop(&self, p: f64, seed: u64) {
        self.faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_lossy(p, seed);
    }

    pub fn heal(&self) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Faults::default();
    }

    fn incoming_blocked(&self, peer: u64) -> bool {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocked_in
            .contains(&peer)
    }

    pub async fn call(
        &self,
        target: u64,
        addr: &str,
        req: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let payload =
            stoa_proto::encode(req).map_err(|e| PeerError::Network(target, e.to_string()))?;
        self.call_encoded(target, addr, payload, ttl).await
    }

    /// Call with a request already encoded by [`stoa_proto::encode`].
    pub async fn call_encoded(
        &self,
        target: u64,
        addr: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let (blocked, delay, lost) = {
            let f = self.faults.read().unwrap_or_else(|e| e.into_inner());
            (f.blocked_out.contains(&target), f.delay, f.roll())
        };
        if blocked {
            tokio::time::sleep(ttl.min(Duration::from_millis(50))).await;
            return Err(PeerError::Unreachable(
                target,
                "blocked by a test fault".into(),
            ));
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if lost == Some(Lost::Request) {
            tokio::time::sleep(ttl.min(Duration::from_millis(200))).await;
            return Err(PeerError::Timeout(target, ttl));
        }
        let deadline = tokio::time::Instant::now() + ttl;
        let conn = match tokio::time::timeout_at(deadline, self.connection(target, addr)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(PeerError::Timeout(target, ttl)),
        };
        // A call that fails or times out drops the cached connection: the peer may be dead, or
        // back on the same address after a restart, and a stale connection would otherwise be
        // used until its idle timeout.
        match tokio::time::timeout_at(deadline, exchange(&conn, &payload)).await {
            // A lost response: the peer acted on the call, the caller cannot know.
            Ok(Ok(_)) if lost == Some(Lost::Response) => Err(PeerError::Timeout(target, ttl)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.forget(target, &conn);
                Err(PeerError::Network(target, e))
            }
            Err(_) => {
                self.forget(target, &conn);
                Err(PeerError::Timeout(target, ttl))
            }
        }
    }

    async fn connection(&self, target: u64, addr: &str) -> Result<quinn::Connection, PeerError> {
        let slot = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.entry(target).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let sock = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| PeerError::Unreachable(target, format!("{addr}: {e}")))?
            .next()
            .ok_or_else(|| PeerError::Unreachable(target, format!("{addr} resolves to nothing")))?;
        let conn = self
            .endpoint
            .connect(sock, &node_server_name(NodeId(target)))
            .map_err(|e| PeerError::Unreachable(target, e.to_string()))?
            .await
            .map_err(|e| PeerError::Unreachable(target, e.to_string()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn forget(&self, target: u64, conn: &quinn::Connection) {
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target)
            .cloned();
        if let Some(slot) = slot {
            if let Ok(mut s) = slot.try_lock() {
                if s.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
                    *s = None;
                }
            }
        }
    }
}

/// One call on its own stream: the request, then the whole response, read with a size limit.
async fn exchange(conn: &quinn::Connection, payload: &[u8]) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(payload).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let bytes = recv
        .read_to_end(PEER_MESSAGE_BYTES_MAX)
        .await
        .map_err(|e| e.to_string())?;
    stoa_proto::decode::<PeerResponse>(&bytes).map_err(|e| e.to_string())
}

/// Serve the calls of one authenticated peer connection until it closes.
pub async fn serve(
    conn: quinn::Connection,
    from: NodeId,
    pool: Arc<PeerPool>,
    rafts: Arc<Vec<Raft>>,
    proposers: Vec<Proposer>,
    fanout: Fanout,
    initial_members: Arc<BTreeMap<u64, BasicNode>>,
) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "peer connection ended");
                return;
            }
        };
        let rafts = rafts.clone();
        let proposers = proposers.clone();
        let pool = pool.clone();
        let fanout = fanout.clone();
        let initial_members = initial_members.clone();
        tokio::spawn(async move {
            let bytes = match recv.read_to_end(PEER_MESSAGE_BYTES_MAX).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "unreadable peer request");
                    return;
                }
            };
            if pool.incoming_blocked(from.0) {
                return; // dropped by a test fault: the caller times out
            }
            let response = match stoa_proto::decode::<PeerRequest>(&bytes) {
                Ok(PeerRequest::Presence(report)) => {
                    PeerResponse::Presence(fanout.receive_presence(from.0, report))
                }
                Ok(req) => handle(req, &rafts, &proposers, &initial_members).await,
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "malformed peer request");
                    PeerResponse::Refused(format!("malformed request: {e}"))
                }
            };
            match stoa_proto::encode(&response) {
                Ok(out) => {
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                }
                Err(e) => tracing::error!(peer = %from, error = %e, "cannot encode peer response"),
            }
        });
    }
}

async fn handle(
    req: PeerRequest,
    rafts: &[Raft],
    proposers: &[Proposer],
    initial_members: &BTreeMap<u64, BasicNode>,
) -> PeerResponse {
    let Some(group) = req.group() else {
        return PeerResponse::Refused("not a request of a group".into());
    };
    let Some(raft) = rafts.get(group.0 as usize) else {
        return PeerResponse::Refused(format!("no group {group}"));
    };
    match req {
        PeerRequest::Append { rpc, .. } => PeerResponse::Append(raft.append_entries(rpc).await),
        PeerRequest::Vote { rpc, .. } => PeerResponse::Vote(raft.vote(rpc).await),
        PeerRequest::Snapshot { rpc, .. } => {
            PeerResponse::Snapshot(raft.install_snapshot(rpc).await)
        }
        PeerRequest::Propose { cmd, .. } => PeerResponse::Proposed(propose_local(raft, cmd).await),
        PeerRequest::Presence(_) => PeerResponse::Refused("presence is served by serve".into()),
        PeerRequest::Initialize { members, .. } => PeerResponse::Initialized(
            crate::formation::initialize_for_peer(raft, members, initial_members).await,
        ),
        PeerRequest::ForwardPosts { group, posts } => {
            // Only the leader batches forwarded posts; a stale sender is told who leads now.
            let leader = raft.metrics().borrow().current_leader;
            let me = raft.metrics().borrow().id;
            match (
                leader,
                group
                    .0
                    .checked_sub(1)
                    .and_then(|i| proposers.get(i as usize)),
            ) {
                (Some(l), Some(proposer)) if l == me => {
                    PeerResponse::Posted(Ok(proposer.post_many(posts).await))
                }
                (_, None) => PeerResponse::Refused(format!("{group} is not a shard")),
                (leader, _) => PeerResponse::Posted(Err(ProposeError::NotLeader { leader })),
            }
        }
    }
}

/// Propose on this node's Raft; answers what applying said and the entry's log index.
pub async fn propose_local(
    raft: &Raft,
    cmd: Command,
) -> Result<(CommandResult, u64), ProposeError> {
    match raft.client_write(cmd).await {
        Ok(resp) => Ok((resp.data, resp.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(e) => Err(ProposeError::Unavailable(e.to_string())),
    }
}

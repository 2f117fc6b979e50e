//! openraft's network for one group, carried by the node's shared [`PeerPool`].

use super::{GroupId, TypeConfig};
use crate::net::peer::{PeerError, PeerPool, PeerRequest, PeerResponse, PEER_MESSAGE_BYTES_MAX};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use std::sync::Arc;

pub struct NetworkFactory {
    group: GroupId,
    pool: Arc<PeerPool>,
}

impl NetworkFactory {
    pub fn new(group: GroupId, pool: Arc<PeerPool>) -> Self {
        NetworkFactory { group, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            group: self.group,
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

pub struct PeerClient {
    group: GroupId,
    target: u64,
    addr: String,
    pool: Arc<PeerPool>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        option: &RPCOption,
        action: RPCTypes,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let payload =
            stoa_proto::encode(&req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_encoded(payload, option, action).await
    }

    async fn call_encoded<E: std::error::Error>(
        &self,
        payload: Vec<u8>,
        option: &RPCOption,
        action: RPCTypes,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let ttl = option.hard_ttl();
        match self
            .pool
            .call_encoded(self.target, &self.addr, payload, ttl)
            .await
        {
            Ok(PeerResponse::Refused(reason)) => Err(RPCError::Network(NetworkError::new(
                &PeerError::Network(self.target, reason),
            ))),
            Ok(r) => Ok(r),
            Err(e @ PeerError::Unreachable(..)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(PeerError::Timeout(..)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.pool.me().0,
                target: self.target,
                timeout: ttl,
            })),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, r: PeerResponse) -> RpcErr<E> {
        let e = PeerError::Network(self.target, format!("unexpected response {r:?}"));
        RPCError::Network(NetworkError::new(&e))
    }
}

/// An append must fit in one peer message; a larger one is cut to a prefix of its entries, which
/// Raft allows: the follower acknowledges what it got and the leader sends the rest next.
const APPEND_BYTES_SOFT_MAX: usize = PEER_MESSAGE_BYTES_MAX / 2;

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        // Encode once; only an oversized request (rare: huge batches while catching up) is cut.
        let mut cut = false;
        let (payload, last_sent) = loop {
            let last_sent = rpc.entries.last().map(|e| e.log_id);
            let n = rpc.entries.len();
            let req = PeerRequest::Append {
                group: self.group,
                rpc,
            };
            let payload =
                stoa_proto::encode(&req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let PeerRequest::Append { rpc: back, .. } = req else {
                unreachable!("built just above")
            };
            rpc = back;
            if payload.len() <= APPEND_BYTES_SOFT_MAX || n <= 1 {
                break (payload, last_sent);
            }
            rpc.entries.truncate(n / 2);
            cut = true;
        };
        match self
            .call_encoded(payload, &option, RPCTypes::AppendEntries)
            .await?
        {
            PeerResponse::Append(Ok(AppendEntriesResponse::Success)) if cut => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            PeerResponse::Append(Ok(r)) => Ok(r),
            PeerResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        let req = PeerRequest::Snapshot {
            group: self.group,
            rpc,
        };
        match self.call(req, &option, RPCTypes::InstallSnapshot).await? {
            PeerResponse::Snapshot(Ok(r)) => Ok(r),
            PeerResponse::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        let req = PeerRequest::Vote {
            group: self.group,
            rpc,
        };
        match self.call(req, &option, RPCTypes::Vote).await? {
            PeerResponse::Vote(Ok(r)) => Ok(r),
            PeerResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}

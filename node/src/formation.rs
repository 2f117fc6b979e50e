//! Forming a new cluster: every group starts with the configured members. With
//! `cluster.spread_leaders`, each group's first leader is a different node, so a fresh cluster does
//! not put every leader on the bootstrapping node (openraft 0.9 cannot move a leader later).
//!
//! The bootstrapping node initializes the groups it is the preferred leader of itself (all of
//! them without `spread_leaders`), and asks
//! the preferred node of every other group to initialize it (`PeerRequest::Initialize`); a node
//! that initializes a group stands for election at once and, the others being empty, wins. If the
//! preferred node does not answer in time, the bootstrapping node initializes the group itself.
//! Both may then have initialized it, which openraft allows with identical memberships; a node
//! initializes a group for a peer only with the very membership its own configuration gives.

use crate::net::peer::{PeerPool, PeerRequest, PeerResponse};
use crate::raft::{GroupId, Raft};
use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use stoa_config::NodeConfig;
use tokio::task::JoinHandle;

/// How long the bootstrapping node keeps asking a group's preferred node before initializing
/// the group itself.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);
const HANDOFF_RETRY: Duration = Duration::from_millis(200);
const HANDOFF_CALL_TTL: Duration = Duration::from_secs(1);

/// The members every group starts with: the configured peers, or this node alone.
pub fn initial_members(config: &NodeConfig) -> BTreeMap<u64, BasicNode> {
    if config.cluster.peers.is_empty() {
        BTreeMap::from([(
            config.node.id.0,
            BasicNode::new(config.node.listen.to_string()),
        )])
    } else {
        config
            .cluster
            .peers
            .iter()
            .map(|p| (p.id.0, BasicNode::new(p.addr.to_string())))
            .collect()
    }
}

/// The node meant to lead `group` first: the members in id order, taken in turn (group `g` to
/// the `g mod n`-th, counting from 0).
pub fn preferred_leader(group: GroupId, members: &BTreeMap<u64, BasicNode>) -> Option<u64> {
    if members.is_empty() {
        return None;
    }
    members
        .keys()
        .nth(group.0 as usize % members.len())
        .copied()
}

/// The membership as it travels in a peer request.
pub fn wire_members(members: &BTreeMap<u64, BasicNode>) -> Vec<(u64, String)> {
    members
        .iter()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

/// Initialize every group this node has not initialized: its own preferred groups now, the
/// others through their preferred nodes in the background (the returned tasks); without
/// `spread_leaders` every group here.
pub async fn bootstrap_groups(
    config: &NodeConfig,
    rafts: &[Raft],
    pool: &Arc<PeerPool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let me = config.node.id.0;
    let members = initial_members(config);
    let mut handoffs = Vec::new();
    for (g, raft) in rafts.iter().enumerate() {
        let group = GroupId(g as u32);
        if raft.is_initialized().await.map_err(|e| e.to_string())? {
            continue;
        }
        match preferred_leader(group, &members) {
            Some(p) if config.cluster.spread_leaders && p != me => handoffs.push(tokio::spawn(
                hand_off(raft.clone(), group, p, members.clone(), pool.clone()),
            )),
            _ => {
                if let Err(e) = initialize(raft, members.clone()).await {
                    for h in &handoffs {
                        h.abort();
                    }
                    return Err(format!("initializing {group}: {e}"));
                }
            }
        }
    }
    Ok(handoffs)
}

/// Ask `target` to initialize `group`; initialize it here if it cannot in time.
async fn hand_off(
    raft: Raft,
    group: GroupId,
    target: u64,
    members: BTreeMap<u64, BasicNode>,
    pool: Arc<PeerPool>,
) {
    let Some(addr) = members.get(&target).map(|n| n.addr.clone()) else {
        return;
    };
    let req = PeerRequest::Initialize {
        group,
        members: wire_members(&members),
    };
    let deadline = tokio::time::Instant::now() + HANDOFF_WAIT;
    loop {
        // Replicated to already: the group has formed.
        if raft.is_initialized().await.unwrap_or(false) {
            return;
        }
        match pool.call(target, &addr, &req, HANDOFF_CALL_TTL).await {
            Ok(PeerResponse::Initialized(Ok(()))) => {
                tracing::info!(%group, node = target, "group initialized by its first leader");
                return;
            }
            Ok(PeerResponse::Initialized(Err(e))) => {
                tracing::warn!(%group, node = target, error = %e, "node refused to initialize the group");
                break;
            }
            Ok(other) => {
                tracing::debug!(%group, node = target, answer = ?other, "no initialization")
            }
            Err(e) => tracing::debug!(%group, node = target, error = %e, "node not reachable yet"),
        }
        if tokio::time::Instant::now() + HANDOFF_RETRY >= deadline {
            break;
        }
        tokio::time::sleep(HANDOFF_RETRY).await;
    }
    tracing::info!(%group, node = target, "initializing the group here instead of on its preferred node");
    if let Err(e) = initialize(&raft, members).await {
        tracing::error!(%group, error = %e, "cannot initialize the group");
    }
}

/// Initialize `group` here for a peer, if `members` is the membership this node's configuration
/// gives (`expected`); a group already initialized is fine.
pub async fn initialize_for_peer(
    raft: &Raft,
    members: Vec<(u64, String)>,
    expected: &BTreeMap<u64, BasicNode>,
) -> Result<(), String> {
    if members != wire_members(expected) {
        return Err("the membership differs from this node's configured peers".into());
    }
    initialize(raft, expected.clone())
        .await
        .map_err(|e| e.to_string())
}

/// `Raft::initialize`, where finding the group initialized already is success (asked first:
/// openraft logs a refused initialization as an error).
async fn initialize(
    raft: &Raft,
    members: BTreeMap<u64, BasicNode>,
) -> Result<(), RaftError<u64, InitializeError<u64, BasicNode>>> {
    if raft.is_initialized().await.unwrap_or(false) {
        return Ok(());
    }
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> BTreeMap<u64, BasicNode> {
        ids.iter()
            .map(|i| (*i, BasicNode::new(format!("127.0.0.1:{}", 7400 + i))))
            .collect()
    }

    #[test]
    fn first_leaders_go_round_the_members_in_id_order() {
        let m = members(&[3, 1, 2]);
        let leaders: Vec<Option<u64>> = (0..5).map(|g| preferred_leader(GroupId(g), &m)).collect();
        assert_eq!(leaders, [Some(1), Some(2), Some(3), Some(1), Some(2)]);
        assert_eq!(preferred_leader(GroupId(4), &members(&[9])), Some(9));
        assert_eq!(preferred_leader(GroupId(0), &BTreeMap::new()), None);
    }

    #[test]
    fn wire_members_keep_ids_and_addresses_in_order() {
        assert_eq!(
            wire_members(&members(&[2, 1])),
            [
                (1, "127.0.0.1:7401".to_string()),
                (2, "127.0.0.1:7402".to_string())
            ]
        );
    }
}

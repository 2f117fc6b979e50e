//! [`NodeConfig::validate`]: ranges and relations between fields. Each refusal names the field.

use crate::{ConfigError, NodeConfig};
use std::collections::{BTreeMap, BTreeSet};

/// `cluster.shards` range.
const SHARDS_MIN: u64 = 1;
const SHARDS_MAX: u64 = 64;
/// `chat.default_chat_history` range, in messages.
const DEFAULT_CHAT_HISTORY_MIN: u64 = 1;
const DEFAULT_CHAT_HISTORY_MAX: u64 = 500;
/// `limits.frame_bytes_max` range, in bytes; the top is the protocol's hard bound.
const FRAME_BYTES_MAX_MIN: u64 = 1024;
const FRAME_BYTES_MAX_MAX: u64 = stoa_proto::limits::FRAME_BYTES_MAX as u64;

impl NodeConfig {
    /// Checks ranges and relations between fields; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let NodeConfig {
            node,
            cluster,
            tls: _,
            raft,
            limits,
            chat,
            presence,
        } = self;
        node.metrics_addr()?;

        in_range(
            "cluster.shards",
            cluster.shards.into(),
            SHARDS_MIN,
            SHARDS_MAX,
        )?;
        in_range(
            "chat.default_chat_history",
            chat.default_chat_history.into(),
            DEFAULT_CHAT_HISTORY_MIN,
            DEFAULT_CHAT_HISTORY_MAX,
        )?;
        in_range(
            "raft.log_segment_bytes",
            raft.log_segment_bytes,
            64 << 10,
            1 << 30,
        )?;
        in_range(
            "limits.proposal_linger_ms",
            limits.proposal_linger_ms,
            0,
            1000,
        )?;
        in_range(
            "chat.search_commit_interval_ms",
            chat.search_commit_interval_ms,
            100,
            60_000,
        )?;

        // `as u64` below widens usize, which is at most 64 bits on every supported target.
        let must_be_positive = [
            ("raft.heartbeat_interval_ms", raft.heartbeat_interval_ms),
            ("raft.election_timeout_min_ms", raft.election_timeout_min_ms),
            ("raft.election_timeout_max_ms", raft.election_timeout_max_ms),
            ("raft.rpc_timeout_ms", raft.rpc_timeout_ms),
            (
                "raft.snapshot_logs_since_last",
                raft.snapshot_logs_since_last,
            ),
            ("raft.max_payload_entries", raft.max_payload_entries),
            (
                "raft.logs_kept_after_snapshot",
                raft.logs_kept_after_snapshot,
            ),
            ("limits.frame_bytes_max", limits.frame_bytes_max as u64),
            (
                "limits.message_text_bytes_max",
                limits.message_text_bytes_max as u64,
            ),
            ("limits.history_page_max", limits.history_page_max.into()),
            (
                "limits.subscribe_backlog_max",
                limits.subscribe_backlog_max.into(),
            ),
            (
                "limits.send_queue_frames_max",
                limits.send_queue_frames_max as u64,
            ),
            ("limits.connections_max", limits.connections_max as u64),
            (
                "limits.requests_in_flight_max",
                limits.requests_in_flight_max as u64,
            ),
            (
                "limits.proposal_batch_posts_max",
                limits.proposal_batch_posts_max as u64,
            ),
            (
                "limits.proposal_queue_posts_max",
                limits.proposal_queue_posts_max as u64,
            ),
            (
                "limits.proposals_in_flight_max",
                limits.proposals_in_flight_max as u64,
            ),
            (
                "limits.proposal_linger_after_posts",
                limits.proposal_linger_after_posts as u64,
            ),
            ("limits.room_mailbox_max", limits.room_mailbox_max as u64),
            (
                "limits.client_idle_timeout_ms",
                limits.client_idle_timeout_ms,
            ),
            (
                "limits.upload_bytes_in_flight_max",
                limits.upload_bytes_in_flight_max as u64,
            ),
            ("limits.storage_cache_bytes", limits.storage_cache_bytes),
            // limits.posts_per_s_per_connection_max and
            // limits.directory_writes_per_s_per_user_max: 0 means unlimited.
            ("presence.report_interval_ms", presence.report_interval_ms),
            ("presence.expiry_ms", presence.expiry_ms),
            (
                "presence.entries_per_node_max",
                presence.entries_per_node_max as u64,
            ),
            (
                "presence.journal_changes_max",
                presence.journal_changes_max as u64,
            ),
        ];
        for (field, value) in must_be_positive {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }

        below(
            "raft.election_timeout_min_ms",
            raft.election_timeout_min_ms,
            "raft.election_timeout_max_ms",
            raft.election_timeout_max_ms,
        )?;
        below(
            "raft.heartbeat_interval_ms",
            raft.heartbeat_interval_ms,
            "raft.election_timeout_min_ms",
            raft.election_timeout_min_ms,
        )?;

        in_range(
            "limits.frame_bytes_max",
            limits.frame_bytes_max as u64,
            FRAME_BYTES_MAX_MIN,
            FRAME_BYTES_MAX_MAX,
        )?;
        below(
            "limits.message_text_bytes_max",
            limits.message_text_bytes_max as u64,
            "limits.frame_bytes_max",
            limits.frame_bytes_max as u64,
        )?;
        not_above(
            "limits.proposal_batch_posts_max",
            limits.proposal_batch_posts_max as u64,
            "limits.proposal_queue_posts_max",
            limits.proposal_queue_posts_max as u64,
        )?;
        below(
            "presence.report_interval_ms",
            presence.report_interval_ms,
            "presence.expiry_ms",
            presence.expiry_ms,
        )?;
        not_above(
            "chat.default_chat_history",
            chat.default_chat_history.into(),
            "limits.history_page_max",
            limits.history_page_max.into(),
        )?;

        self.validate_peers()
    }

    /// Peers: ids and addresses unique; when not empty, this node is listed on its listen port.
    fn validate_peers(&self) -> Result<(), ConfigError> {
        let peers = &self.cluster.peers;
        if peers.is_empty() {
            return Ok(());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeMap::new();
        for peer in peers {
            if !ids.insert(peer.id) {
                return Err(ConfigError::DuplicatePeerId { id: peer.id });
            }
            if let Some(first) = addrs.insert(peer.addr, peer.id) {
                return Err(ConfigError::DuplicatePeerAddr {
                    addr: peer.addr,
                    first,
                    second: peer.id,
                });
            }
        }
        let me = self.node.id;
        let Some(mine) = peers.iter().find(|p| p.id == me) else {
            return Err(ConfigError::SelfNotInPeers { id: me });
        };
        if mine.addr.port() != self.node.listen.port() {
            return Err(ConfigError::SelfPortMismatch {
                id: me,
                peer_addr: mine.addr,
                listen: self.node.listen,
            });
        }
        Ok(())
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

fn below(
    field: &'static str,
    value: u64,
    other: &'static str,
    other_value: u64,
) -> Result<(), ConfigError> {
    if value < other_value {
        Ok(())
    } else {
        Err(ConfigError::NotBelow {
            field,
            value,
            other,
            other_value,
        })
    }
}

fn not_above(
    field: &'static str,
    value: u64,
    other: &'static str,
    other_value: u64,
) -> Result<(), ConfigError> {
    if value <= other_value {
        Ok(())
    } else {
        Err(ConfigError::Exceeds {
            field,
            value,
            other,
            other_value,
        })
    }
}

//! The defaults table: every section, every field, its type, its default and its documentation, in one
//! place. The [`sections!`] macro turns it into the section structs, their `Default` impls and
//! [`SECTION_DOCS`] (which [`crate::documented_defaults`] renders), so the three cannot drift apart.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use stoa_proto::NodeId;

/// Documentation of one section, as written in the defaults table.
pub(crate) struct SectionDoc {
    /// The section's key in the TOML file, e.g. `limits`.
    pub(crate) key: &'static str,
    /// Doc comment lines of the section struct.
    pub(crate) doc: &'static [&'static str],
    /// `(field, doc comment lines)` in declaration order.
    pub(crate) fields: &'static [(&'static str, &'static [&'static str])],
}

/// Declares config sections: `[key] pub struct Name { /// doc \n pub field: Type = default, ... }`.
macro_rules! sections {
    ($(
        $(#[doc = $section_doc:literal])*
        [$key:ident] pub struct $name:ident {
            $(
                $(#[doc = $field_doc:literal])*
                pub $field:ident: $ty:ty = $default:expr,
            )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $name {
                $(
                    $(#[doc = $field_doc])*
                    pub $field: $ty,
                )*
            }

            impl Default for $name {
                fn default() -> Self {
                    $name { $($field: $default,)* }
                }
            }
        )*

        /// Every section's documentation, in file order.
        pub(crate) const SECTION_DOCS: &[SectionDoc] = &[$(
            SectionDoc {
                key: stringify!($key),
                doc: &[$($section_doc),*],
                fields: &[$((stringify!($field), &[$($field_doc),*])),*],
            },
        )*];
    };
}

sections! {
    /// This node: its identity, where it listens and where it keeps its data.
    [node] pub struct NodeSection {
        /// Id of this node in the cluster and in every Raft group; must be listed in cluster.peers
        /// when peers is not empty.
        pub id: NodeId = NodeId(1),
        /// UDP address (QUIC) for clients and peers, as ip:port.
        pub listen: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400),
        /// Directory of the Raft logs, snapshots and state machines. A relative path is relative to
        /// the working directory the node is started in.
        pub data_dir: PathBuf = PathBuf::from("stoa-data"),
        /// TCP address (ip:port) of the Prometheus metrics endpoint, `GET /metrics`; empty: none.
        pub metrics_listen: String = String::new(),
    }

    /// Cluster membership and sharding.
    [cluster] pub struct ClusterSection {
        /// Number of Raft groups (shards) rooms are spread over, 1..=64. Fixed for the lifetime of
        /// the cluster. While every node replicates every shard, more shards spread leadership but
        /// add per-entry work (W1 on 3 nodes: 2 shards cut the fixed-load p99 from 141 to 100 ms).
        pub shards: u32 = 2,
        /// Every voting member including this node, as [[cluster.peers]] tables with id and addr
        /// (ip:port). Empty means a single-node cluster. Not settable from the environment.
        pub peers: Vec<PeerConfig> = Vec::new(),
        /// When true, this node initializes the Raft groups with peers as members (or itself alone
        /// when peers is empty) if they are not initialized yet. Set it on one node only.
        pub bootstrap: bool = false,
        /// On the bootstrapping node: when true, each group's first leader is another peer, in
        /// turn by id, rather than this node, so no node leads every group. Worth it when nodes
        /// have machines of their own; on one shared 2-core machine W1 measured worse with it
        /// (fixed-load p99 about 10 ms higher). Leadership drifts after failovers: openraft 0.9
        /// cannot move a leader.
        pub spread_leaders: bool = false,
    }

    /// TLS files (PEM). When the config is loaded from a file, relative paths are relative to the
    /// config file's directory.
    [tls] pub struct TlsSection {
        /// Certificate of the cluster CA, which signs every node certificate.
        pub ca_cert: PathBuf = PathBuf::from("ca.pem"),
        /// This node's certificate chain, signed by the CA.
        pub node_cert: PathBuf = PathBuf::from("node.pem"),
        /// This node's private key.
        pub node_key: PathBuf = PathBuf::from("node.key"),
    }

    /// Raft timing and log compaction, shared by every group on this node.
    [raft] pub struct RaftSection {
        /// Interval between leader heartbeats, in milliseconds; below election_timeout_min_ms.
        pub heartbeat_interval_ms: u64 = 100,
        /// Lower bound of the randomized election timeout, in milliseconds.
        pub election_timeout_min_ms: u64 = 500,
        /// Upper bound of the randomized election timeout, in milliseconds; above
        /// election_timeout_min_ms.
        pub election_timeout_max_ms: u64 = 1000,
        /// Timeout of one Raft RPC to a peer, in milliseconds.
        pub rpc_timeout_ms: u64 = 2000,
        /// Log entries applied since the last snapshot that trigger a new snapshot, in entries.
        pub snapshot_logs_since_last: u64 = 50_000,
        /// Log entries sent in one append-entries RPC, in entries.
        pub max_payload_entries: u64 = 256,
        /// Log entries kept after a snapshot, so a follower a little behind catches up from the
        /// log rather than by a whole snapshot, in entries.
        pub logs_kept_after_snapshot: u64 = 1000,
        /// Size at which the Raft log begins a new segment file, in bytes; 65536..=1073741824.
        /// A segment is deleted once every entry in it is compacted into a snapshot.
        pub log_segment_bytes: u64 = 64 << 20,
    }

    /// Limits on everything a client or the cluster can make this node hold. Every limit is above 0
    /// except the rates (posts per connection, directory changes per user), where 0 means
    /// unlimited, and proposal_linger_ms.
    [limits] pub struct LimitsSection {
        /// Largest frame payload accepted or sent, in bytes; 1024..=16777216 (the protocol's hard
        /// bound).
        pub frame_bytes_max: usize = 1 << 20,
        /// Largest message text, in bytes (UTF-8); below frame_bytes_max.
        pub message_text_bytes_max: usize = 16_384,
        /// Most messages returned by one history request, in messages.
        pub history_page_max: u32 = 500,
        /// Most past messages replayed when subscribing to a room, in messages.
        pub subscribe_backlog_max: u32 = 1000,
        /// Frames queued for sending to one connection before it is dropped as too slow, in frames.
        pub send_queue_frames_max: usize = 4096,
        /// Concurrent client connections on this node, in connections.
        pub connections_max: usize = 20_000,
        /// Requests one connection may have in flight at once, in requests.
        pub requests_in_flight_max: usize = 64,
        /// Posts batched into one Raft proposal, in posts; at most proposal_queue_posts_max.
        pub proposal_batch_posts_max: usize = 512,
        /// Posts waiting for a proposal on one shard before new posts are refused, in posts.
        pub proposal_queue_posts_max: usize = 16_384,
        /// Raft proposals one shard may have in flight at once, in proposals. While one is being
        /// committed the next one fills with every post that arrives, so more in flight only
        /// splits the waiting posts into smaller entries, each with its own per-entry costs.
        pub proposals_in_flight_max: usize = 1,
        /// When posts queue up for a shard's next proposal while the previous one commits (the
        /// shard is busy), its leader waits for more before proposing: not at all below
        /// proposal_linger_after_posts waiting posts, up to this long from four times that, in
        /// proportion between; in ms, 0: never. Fuller entries spread each entry's fixed costs
        /// (log sync on every replica, replication calls, state-machine batch, one packet per
        /// subscriber connection) over more posts, which is what lets a saturated cluster take
        /// more.
        pub proposal_linger_ms: u64 = 50,
        /// Posts waiting for a shard's next proposal from which its leader lingers (see
        /// proposal_linger_ms), in posts. Below it, as under moderate load, posts go out at once.
        pub proposal_linger_after_posts: usize = 16,
        /// Messages queued in one room actor's mailbox before senders are refused, in messages.
        pub room_mailbox_max: usize = 4096,
        /// Time a client connection may stay silent before it is closed, in milliseconds.
        pub client_idle_timeout_ms: u64 = 30_000,
        /// Posts one connection may send per second, in posts per second; 0 means unlimited.
        pub posts_per_s_per_connection_max: u32 = 2000,
        /// Directory changes (follow, mark read, rooms, roles, groups...) a user who is not an
        /// administrator may make through this node per second, over all of the user's
        /// connections, in changes per second; 0 means unlimited. Each is an entry of the one
        /// directory Raft group every node shares.
        pub directory_writes_per_s_per_user_max: u32 = 20,
        /// File bytes this node buffers for uploads in progress (all connections), in bytes; an
        /// upload that would go beyond is refused before its bytes are sent.
        pub upload_bytes_in_flight_max: usize = 256 << 20,
        /// Memory for storage's page cache (sled), in bytes. Reads of recent history come from
        /// it; older pages are read from disk.
        pub storage_cache_bytes: u64 = 64 << 20,
    }

    /// Chat behaviour.
    [chat] pub struct ChatSection {
        /// Messages sent on join, in messages; 1..=500 and at most limits.history_page_max.
        /// The cluster's initial value, applied once by the bootstrapping node when it sets the
        /// cluster up; afterwards the replicated setting rules (`stoa config set`).
        pub default_chat_history: u32 = 30,
        /// How often the message search index commits, in milliseconds; 100..=60000. A new
        /// message becomes searchable within about this time. Each commit writes and syncs index
        /// files, which delays Raft's log flushes on the same disk: at 1 s, W1's fixed-load p99
        /// was 141 ms; at 5 s, 83 ms.
        pub search_commit_interval_ms: u64 = 5000,
    }

    /// Presence: how nodes tell each other who is connected to which room. Each node sends every
    /// peer its changes at once and a heartbeat every report_interval_ms; a peer not heard from
    /// for expiry_ms is taken as gone with its participants.
    [presence] pub struct PresenceSection {
        /// Interval between a node's presence heartbeats to each peer, in milliseconds.
        pub report_interval_ms: u64 = 1000,
        /// Time after which a silent peer's participants are dropped, in milliseconds; above
        /// report_interval_ms (a few intervals, so one lost heartbeat is not an expiry).
        pub expiry_ms: u64 = 5000,
        /// (room, user) entries accepted from one peer, in entries; a peer reporting more is
        /// refused, and a node with more participants reports only this many.
        pub entries_per_node_max: usize = 100_000,
        /// This node's latest participant changes kept to send as deltas, in changes; a peer
        /// further behind is sent the whole roster.
        pub journal_changes_max: usize = 4096,
    }
}

/// One voting member of the cluster. Both fields are required: a peer has no sensible default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id.
    pub id: NodeId,
    /// The peer's UDP address (QUIC), as ip:port.
    pub addr: SocketAddr,
}

impl NodeSection {
    /// The metrics endpoint's address, `None` when `metrics_listen` is empty.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, crate::ConfigError> {
        let text = self.metrics_listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| crate::ConfigError::NotAnAddress {
                field: "node.metrics_listen",
                value: self.metrics_listen.clone(),
            })
    }
}

//! Why a configuration was refused. Every variant names the field (or file, or variable) and why.

use std::net::SocketAddr;
use std::path::PathBuf;
use stoa_proto::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The TOML text is malformed, has an unknown field or a value of the wrong type. `file` is
    /// `<string>` when parsed by [`crate::NodeConfig::from_toml_str`].
    #[error("cannot parse config file {}: {source}", file.display())]
    Parse {
        file: PathBuf,
        #[source]
        source: toml::de::Error,
    },

    /// A `STOA_<SECTION>_<FIELD>` variable names a known field but its value does not fit.
    #[error("environment variable {var}={value:?} cannot set {field}: {reason}")]
    Env {
        var: String,
        value: String,
        /// `section.field`.
        field: String,
        reason: String,
    },

    #[error("{field} ({value}) must be in {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },

    #[error("{field} must be greater than 0")]
    Zero { field: &'static str },

    #[error("{field} ({value}) must be below {other} ({other_value})")]
    NotBelow {
        field: &'static str,
        value: u64,
        other: &'static str,
        other_value: u64,
    },

    #[error("{field} ({value}) must not exceed {other} ({other_value})")]
    Exceeds {
        field: &'static str,
        value: u64,
        other: &'static str,
        other_value: u64,
    },

    #[error("{field} ({value:?}) must be empty or an address ip:port")]
    NotAnAddress { field: &'static str, value: String },

    #[error("cluster.peers lists node id {id} more than once")]
    DuplicatePeerId { id: NodeId },

    #[error("cluster.peers lists address {addr} more than once (nodes {first} and {second})")]
    DuplicatePeerAddr {
        addr: SocketAddr,
        first: NodeId,
        second: NodeId,
    },

    #[error(
        "cluster.peers does not list node.id ({id}); it must list every voting member including \
         this node (or be empty for a single-node cluster)"
    )]
    SelfNotInPeers { id: NodeId },

    #[error(
        "cluster.peers gives this node ({id}) the address {peer_addr}, whose port differs from \
         node.listen ({listen})"
    )]
    SelfPortMismatch {
        id: NodeId,
        peer_addr: SocketAddr,
        listen: SocketAddr,
    },
}

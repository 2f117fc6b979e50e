//! Stoa wire protocol: the types that cross a QUIC stream between a client and a node, and the frame
//! codec. No I/O lives here, so the client SDK, the node and the fuzz targets share one definition.
//!
//! Layout:
//! - [`ids`]: newtypes for identifiers that travel on the wire.
//! - [`msg`]: client → node requests, node → client responses and events.
//! - [`directory`]: categories, rooms and roles, groups, policy, settings, add-ins.
//! - [`error`]: the typed error codes a client can show.
//! - [`codec`]: length-prefixed frames (u32 big-endian length, bincode 2 payload) with hard limits.
//!
//! Compatibility rule: enums only grow at the end (bincode encodes the variant index), and every
//! change that alters the golden bytes in `codec::tests` bumps [`PROTOCOL_VERSION`].

pub mod codec;
pub mod directory;
pub mod error;
pub mod ids;
pub mod msg;

pub use codec::{decode, encode, encode_frame, CodecError, FrameDecoder, FRAME_HEADER_BYTES};
pub use directory::*;
pub use error::{ApiError, ErrorCode};
pub use ids::{NodeId, Seq};
pub use msg::*;

/// Version of the client protocol, sent in [`Hello`] and checked by the node.
pub const PROTOCOL_VERSION: u32 = 3;
/// ALPN of client connections.
pub const ALPN_CLIENT: &[u8] = b"stoa/1";
/// ALPN of node-to-node connections.
pub const ALPN_PEER: &[u8] = b"stoa-peer/1";
/// TLS server name every node certificate carries, used by clients (which do not know node ids).
pub const CLUSTER_SERVER_NAME: &str = "stoa.cluster";

/// TLS server name of one node, checked by peers so a node cannot impersonate another.
pub fn node_server_name(node: NodeId) -> String {
    format!("node-{}.stoa.cluster", node.0)
}

/// Field limits enforced by both sides. The node's configurable limits may only be lower.
pub mod limits {
    /// Hard upper bound of one frame's payload; no configuration can raise it.
    pub const FRAME_BYTES_MAX: usize = 16 << 20;
    /// Room and user names, in characters.
    pub const NAME_CHARS_MAX: usize = 256;
    /// Client message ids, in bytes.
    pub const CLIENT_MSG_ID_BYTES_MAX: usize = 128;
    /// Tokens, in bytes.
    pub const TOKEN_BYTES_MAX: usize = 256;
    /// Bytes of one upload chunk or download page.
    pub const FILE_CHUNK_BYTES_MAX: usize = 256 << 10;
    /// Keywords in one moderation filter, and characters of each.
    pub const KEYWORDS_MAX: usize = 32;
    pub const KEYWORD_CHARS_MAX: usize = 256;
    /// Characters of a moderation replacement text.
    pub const REPLACEMENT_CHARS_MAX: usize = 4096;
}

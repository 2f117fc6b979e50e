//! The Stoa node.
//!
//! Layout:
//! - [`domain`]: chat rules as pure functions (meta directory, room sequence and dedup).
//! - [`raft`]: the openraft type configuration, replicated commands, and the peer network.
//! - [`store`]: sled storage of every group: log, vote, state machines, snapshots, the flusher.

pub mod domain;
pub mod raft;
pub mod store;

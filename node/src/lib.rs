//! The Stoa node.
//!
//! Layout:
//! - [`domain`]: chat rules as pure functions (meta directory, room sequence and dedup).
//! - [`raft`]: the openraft type configuration, replicated commands, and the peer network.
//! - [`store`]: storage of every group: the Raft logs in one write-ahead log, state machines in
//!   sled, snapshots in files; [`compaction`] keeps the log's disk use bounded.
//! - [`net`]: QUIC: TLS and certificates, node-to-node RPC, client sessions.
//! - [`propose`]: committing commands (leader forwarding, retries) and per-shard post batching.
//! - [`fanout`]: actix room actors delivering committed messages to local sessions.
//! - [`presence`]: who is connected to which room, exchanged between nodes (rules in
//!   [`domain::presence`]).
//! - [`search`]: the tantivy index of messages, fed by applied messages, rebuilt from sled.
//! - [`formation`]: forming a new cluster, with each group's first leader on another node.
//! - [`node`]: assembling and running one node; [`dev`]: a local cluster in one process.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it at every
// call would only move the cost. Errors are the cold path here.
#![allow(clippy::result_large_err)]

pub mod compaction;
pub mod dev;
pub mod domain;
pub mod fanout;
pub mod formation;
pub mod metrics;
pub mod net;
pub mod node;
pub mod presence;
pub mod propose;
pub mod raft;
pub mod search;
pub mod store;

pub use node::{start, NodeCtx, NodeError, NodeHandle};

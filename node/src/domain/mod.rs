//! Chat rules, free of I/O: each function takes a command and the current state and returns the new
//! state and what to answer. Raft, sled, actors and QUIC only carry these decisions out, so every rule
//! is unit-tested without a runtime, and every replica decides the same at apply time.

pub mod meta;
pub mod moderation;
pub mod names;
pub mod presence;
pub mod shard;

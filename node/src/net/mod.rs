//! QUIC: TLS setup, the node-to-node RPC, and client sessions.

pub mod peer;
pub mod session;
pub mod tls;

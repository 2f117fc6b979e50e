//! Hostile input: clients and peers that break the protocol, flood, idle or never read. Each gets
//! a bounded, clear outcome (an error and a closed stream, a cut from live delivery, a refused
//! connection) while well-behaved clients on the same node keep working. The decoders themselves
//! are covered by property tests here and in `proto`, and by the cargo-fuzz targets in `fuzz/`.

mod t30_decode;
mod t30_limits;
mod t30_peers;
mod t30_unauthenticated;
mod t30_uploads;

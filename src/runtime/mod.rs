//! The IO side: drivers that run calls in real time against the engine
//! pool, and the outcome shipper. Protocol and conversation logic stay in
//! the sans-IO layers; this layer only moves bytes, frames and results.
//!
//! Tokio adapters live here too: sockets, tasks, and [`shipper`], the
//! outcome shipper (spool to NATS JetStream, exactly once in the stream).
//! Nothing here blocks a runtime worker on disk or inference: spool calls
//! go through `spawn_blocking`, models run on the engine's own threads.

pub mod cluster;
pub mod daemon;
pub mod live_call;
pub mod node_metrics;
pub mod outcome_sink;
pub mod http;
pub mod scripted_call;
pub mod sip;
pub mod talk;
pub mod shipper;
pub mod webrtc;

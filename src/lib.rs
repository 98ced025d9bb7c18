//! voice-edge: a real-time AI voice agent at the edge of a telephone and web
//! network. See `ARCHITECTURE.md` for the map of this crate.
//!
//! Layers (inner ones never depend on outer ones, and the sans-IO layers
//! `proto`, `media`, `flow`, `call` and `outcome` never touch sockets,
//! threads, the async runtime or clocks):
//! - [`proto`]: protocol cores (SIP messages, RFC 3261), sans-IO.
//! - [`media`]: audio frames, WAV files, resampling, voice activity detection.
//! - [`flow`]: conversation flows and the per-call dialogue state.
//! - [`call`]: one call's real-time conversation state machine (endpointing,
//!   speculation, barge-in, paced playout), sans-IO.
//! - [`outcome`]: outcome events (CloudEvents) and the durable spool.
//! - [`runtime`]: the IO side: drivers that feed calls with audio and engine
//!   results on real time, the outcome shipper.
//! - [`engine`]: whisper, llama and espeak-ng, and the turn pipeline.
//! - [`models`]: the model manifest, fetching, checksums, weight conversion.
//! - [`ops`]: configuration and logging.
//! - [`cli`]: the `voice-edge` command line.

pub mod call;
pub mod cli;
pub mod engine;
pub mod flow;
pub mod media;
pub mod models;
pub mod ops;
pub mod outcome;
pub mod proto;
pub mod runtime;

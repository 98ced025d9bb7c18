//! voice-edge: a real-time AI voice agent at the edge of a telephone and web
//! network. See `ARCHITECTURE.md` for the map of this crate.
//!
//! Layers (inner ones never depend on outer ones, and the sans-IO layers
//! `media` and `flow` never touch sockets, threads or clocks):
//! - [`media`]: audio frames, WAV files, resampling, voice activity detection.
//! - [`flow`]: conversation flows and the per-call dialogue state.
//! - [`engine`]: whisper, llama and espeak-ng, and the turn pipeline.
//! - [`models`]: the model manifest, fetching, checksums, weight conversion.
//! - [`ops`]: configuration and logging.
//! - [`cli`]: the `voice-edge` command line.

pub mod cli;
pub mod engine;
pub mod flow;
pub mod media;
pub mod models;
pub mod ops;

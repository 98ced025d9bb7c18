//! Sans-IO media layer: audio frame conventions, WAV file IO for the offline
//! harness, sample-rate conversion, voice activity detection, and the
//! telephone codecs of a call leg: G.711 μ-law/A-law ([`g711`]), Opus through
//! libopus at a 16 kHz API rate ([`opus`]), and [`codec::AudioCodec`], which
//! turns RTP payloads into engine frames and back (with a streaming half-band
//! 8 <-> 16 kHz converter for G.711).
//!
//! Everything here is pure computation over sample buffers. This module does
//! no network IO, spawns no threads, reads no clocks and does not use tokio;
//! the only file IO lives in [`wav`]. Callers own time and transport: they
//! push samples in and get samples, probabilities and events out.
//!
//! The engine works on mono `f32` samples in `[-1, 1]` at [`ENGINE_RATE`]
//! (16 kHz), in frames of [`FRAME_MS`] (20 ms) = [`FRAME_SAMPLES`] (320)
//! samples.

pub mod codec;
pub mod g711;
pub mod opus;
pub mod resample;
pub mod vad;
pub mod wav;

/// Sample rate of the engine's internal audio, in Hz.
pub const ENGINE_RATE: u32 = 16_000;

/// Duration of one engine frame, in milliseconds.
pub const FRAME_MS: u32 = 20;

/// Samples in one engine frame (`ENGINE_RATE * FRAME_MS / 1000`).
pub const FRAME_SAMPLES: usize = 320;

const _: () = assert!(FRAME_SAMPLES == (ENGINE_RATE * FRAME_MS / 1000) as usize);

pub use resample::{resample, ResampleError, StreamResampler};
pub use vad::{speech_bounds, SpeechSpan, Vad, VadConfig, VadDecision, VadError, VadEvent};
pub use wav::{read_wav, read_wav_engine, write_wav, Audio, WavError};

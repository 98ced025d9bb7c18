//! Telephone codecs behind one type: [`AudioCodec`] turns RTP payloads into
//! 16 kHz mono `f32` engine audio and back, for PCMU/PCMA (G.711, RFC 3551
//! §4.5.14, 8 kHz) and Opus (RFC 7587, 16 kHz API rate, 48 kHz RTP clock).
//!
//! Owns:
//! - [`CodecKind`], the codecs the node negotiates, with their RTP clock,
//!   SDP encoding name and static payload types (RFC 3551 §6);
//! - the 8 kHz <-> 16 kHz conversion for G.711: [`Upsampler2x`] and
//!   [`Decimator2x`], streaming polyphase half-band FIR filters (31 taps,
//!   Kaiser window, 8 multiply pairs per output, about 1 ms of delay each
//!   way, passband flat to ~3.4 kHz, >60 dB stopband beyond ~4.6 kHz);
//! - G.711 packet loss concealment: pitch-period repetition with a fade (in
//!   the spirit of G.711 Appendix I), silence after 60 ms of loss.
//!
//! Pure computation: no IO, no clocks, no threads.

use super::g711::G711Law;
use super::opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusError, OPUS_RTP_CLOCK};
use crate::media::FRAME_SAMPLES;

/// Errors from the codec layer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The Opus library failed.
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// Encoder input was not a whole number of 20 ms engine frames.
    #[error("encoder input has {got} samples; expected a non-empty multiple of 320 (20 ms at 16 kHz)")]
    FrameLength { got: usize },
    /// An empty payload where audio was expected.
    #[error("empty audio payload")]
    EmptyPayload,
}

/// A codec the node can negotiate for a telephone leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus.
    Opus,
}

impl CodecKind {
    /// The SDP `a=rtpmap` encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::Opus => "opus",
        }
    }

    /// The RTP clock rate in Hz.
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8_000,
            CodecKind::Opus => OPUS_RTP_CLOCK,
        }
    }

    /// Channels as written in `a=rtpmap` (Opus is always `/2`, RFC 7587 §7).
    pub fn rtpmap_channels(self) -> u8 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 1,
            CodecKind::Opus => 2,
        }
    }

    /// The static payload type (RFC 3551 §6), if any.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::Opus => None,
        }
    }

    /// RTP timestamp units per 20 ms engine frame.
    pub fn rtp_samples_per_frame(self) -> u32 {
        self.rtp_clock_rate() / 50
    }
}

/// Half-band taps at odd offsets 1, 3, ..., 15 from the centre (the centre
/// tap is 0.5, even offsets are zero). Windowed sinc, Kaiser beta 7.
fn half_band_taps() -> [f32; HALF_BAND_PAIRS] {
    let half_len = (2 * HALF_BAND_PAIRS) as f64; // window reaches zero-ish at +-16
    let beta = 7.0f64;
    let bessel_i0 = |x: f64| {
        let mut sum = 1.0;
        let mut term = 1.0;
        for k in 1..30 {
            term *= (x / 2.0) / k as f64;
            sum += term * term;
        }
        sum
    };
    let mut taps = [0.0f32; HALF_BAND_PAIRS];
    let mut raw = [0.0f64; HALF_BAND_PAIRS];
    for (j, tap) in raw.iter_mut().enumerate() {
        let n = (2 * j + 1) as f64;
        let sinc = (std::f64::consts::FRAC_PI_2 * n).sin() / (std::f64::consts::PI * n);
        let r = n / half_len;
        let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta);
        *tap = sinc * window;
    }
    // Normalise so the odd taps on both sides sum to exactly 0.5 (with the
    // 0.5 centre tap: unity DC gain).
    let both_sides: f64 = raw.iter().sum::<f64>() * 2.0;
    for (tap, value) in taps.iter_mut().zip(raw) {
        *tap = (value * 0.5 / both_sides) as f32;
    }
    taps
}

/// Multiply pairs per output of the half-band filter (31 taps).
const HALF_BAND_PAIRS: usize = 8;

/// Streaming 2x upsampler (8 kHz -> 16 kHz): every input sample is kept and
/// a half-band FIR interpolates the sample halfway to the next one.
#[derive(Debug, Clone)]
pub struct Upsampler2x {
    taps: [f32; HALF_BAND_PAIRS],
    /// The last `2 * PAIRS - 1` input samples, then the new block.
    work: Vec<f32>,
}

impl Default for Upsampler2x {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler2x {
    /// A fresh upsampler with zeroed history.
    pub fn new() -> Self {
        let taps = half_band_taps();
        Upsampler2x { taps, work: vec![0.0; 2 * HALF_BAND_PAIRS - 1] }
    }

    /// Converts `input` (8 kHz), appending `2 * input.len()` samples (16 kHz)
    /// to `out`. Delay: `HALF_BAND_PAIRS` input samples (1 ms).
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let history = 2 * HALF_BAND_PAIRS - 1;
        self.work.extend_from_slice(input);
        out.reserve(2 * input.len());
        for i in 0..input.len() {
            let centre = HALF_BAND_PAIRS - 1 + i;
            let mut mid = 0.0f32;
            for (j, &tap) in self.taps.iter().enumerate() {
                mid += tap * (self.work[centre - j] + self.work[centre + 1 + j]);
            }
            out.push(self.work[centre]);
            out.push(2.0 * mid);
        }
        let keep_from = self.work.len() - history;
        self.work.copy_within(keep_from.., 0);
        self.work.truncate(history);
    }

    /// Forgets the history (new stream).
    pub fn reset(&mut self) {
        self.work.clear();
        self.work.resize(2 * HALF_BAND_PAIRS - 1, 0.0);
    }
}

/// Streaming 2x decimator (16 kHz -> 8 kHz) with a half-band anti-alias
/// filter. Input blocks must have even length (engine frames do).
#[derive(Debug, Clone)]
pub struct Decimator2x {
    taps: [f32; HALF_BAND_PAIRS],
    work: Vec<f32>,
}

impl Default for Decimator2x {
    fn default() -> Self {
        Self::new()
    }
}

impl Decimator2x {
    /// A fresh decimator with zeroed history.
    pub fn new() -> Self {
        let taps = half_band_taps();
        Decimator2x { taps, work: vec![0.0; 4 * HALF_BAND_PAIRS - 2] }
    }

    /// Converts `input` (16 kHz, even length), appending `input.len() / 2`
    /// samples (8 kHz) to `out`. An odd trailing sample is ignored.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let history = 4 * HALF_BAND_PAIRS - 2;
        let even = input.len() & !1;
        self.work.extend_from_slice(&input[..even]);
        out.reserve(even / 2);
        for i in 0..even / 2 {
            let centre = 2 * HALF_BAND_PAIRS - 1 + 2 * i;
            let mut acc = 0.5 * self.work[centre];
            for (j, &tap) in self.taps.iter().enumerate() {
                let offset = 2 * j + 1;
                acc += tap * (self.work[centre - offset] + self.work[centre + offset]);
            }
            out.push(acc);
        }
        let keep_from = self.work.len() - history;
        self.work.copy_within(keep_from.., 0);
        self.work.truncate(history);
    }

    /// Forgets the history (new stream).
    pub fn reset(&mut self) {
        self.work.clear();
        self.work.resize(4 * HALF_BAND_PAIRS - 2, 0.0);
    }
}

/// 8 kHz samples of decoded history kept for G.711 concealment (30 ms).
const PLC_HISTORY: usize = 240;
/// Pitch search range at 8 kHz: 2.5 ms (400 Hz) to 15 ms (66 Hz).
const PITCH_MIN: usize = 20;
const PITCH_MAX: usize = 120;
/// Concealment stops (silence) after this many 8 kHz samples (60 ms).
const PLC_MAX_SAMPLES: usize = 480;

/// Pitch-repetition concealment for 8 kHz G.711 audio.
#[derive(Debug, Clone)]
struct G711Concealer {
    history: Vec<f32>,
    pitch: usize,
    position: usize,
    concealed: usize,
}

impl G711Concealer {
    fn new() -> Self {
        G711Concealer { history: Vec::with_capacity(PLC_HISTORY * 2), pitch: 0, position: 0, concealed: 0 }
    }

    /// Remembers good audio (and ends any concealment run).
    fn observe(&mut self, samples: &[f32]) {
        self.history.extend_from_slice(samples);
        if self.history.len() > PLC_HISTORY {
            let drop = self.history.len() - PLC_HISTORY;
            self.history.drain(..drop);
        }
        self.concealed = 0;
    }

    fn find_pitch(&self) -> usize {
        let h = &self.history;
        if h.len() < PITCH_MAX + PITCH_MIN {
            return PITCH_MIN.max(h.len() / 2).max(1);
        }
        let window = h.len() - PITCH_MAX;
        let tail = &h[h.len() - window..];
        let mut best = (PITCH_MIN, f32::MIN);
        for lag in PITCH_MIN..=PITCH_MAX {
            let earlier = &h[h.len() - window - lag..h.len() - lag];
            let score: f32 = tail.iter().zip(earlier).map(|(a, b)| a * b).sum();
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }

    /// Appends `count` concealed 8 kHz samples.
    fn conceal(&mut self, count: usize, out: &mut Vec<f32>) {
        if self.history.is_empty() {
            out.extend(std::iter::repeat_n(0.0, count));
            return;
        }
        if self.concealed == 0 {
            self.pitch = self.find_pitch().min(self.history.len());
            self.position = 0;
        }
        let start = self.history.len() - self.pitch;
        for _ in 0..count {
            // Full level for the first 10 ms, then -20% per 10 ms, silence at 60 ms.
            let gain = if self.concealed < 80 { 1.0 } else { (1.0 - (self.concealed - 80) as f32 / 400.0).max(0.0) };
            let sample =
                if self.concealed >= PLC_MAX_SAMPLES { 0.0 } else { self.history[start + self.position] * gain };
            out.push(sample);
            self.position = (self.position + 1) % self.pitch;
            self.concealed += 1;
        }
    }
}

/// G.711 state: law, rate converters, concealment, scratch buffers.
#[derive(Debug, Clone)]
pub struct G711Codec {
    law: G711Law,
    up: Upsampler2x,
    down: Decimator2x,
    concealer: G711Concealer,
    narrow: Vec<f32>,
}

impl G711Codec {
    fn new(law: G711Law) -> Self {
        G711Codec {
            law,
            up: Upsampler2x::new(),
            down: Decimator2x::new(),
            concealer: G711Concealer::new(),
            narrow: Vec::with_capacity(PLC_HISTORY),
        }
    }
}

/// Opus state: encoder and decoder.
#[derive(Debug)]
pub struct OpusCodec {
    encoder: OpusEncoder,
    decoder: OpusDecoder,
}

/// One call leg's codec: RTP payloads <-> 16 kHz mono `f32`.
#[derive(Debug)]
pub enum AudioCodec {
    /// PCMU or PCMA with 2x rate conversion.
    G711(G711Codec),
    /// Opus at a 16 kHz API rate.
    Opus(Box<OpusCodec>),
}

impl AudioCodec {
    /// Builds the codec for `kind` (Opus with default settings).
    pub fn new(kind: CodecKind) -> Result<Self, CodecError> {
        Self::with_opus_config(kind, &OpusConfig::default())
    }

    /// Builds the codec for `kind`, using `opus` when it is Opus.
    pub fn with_opus_config(kind: CodecKind, opus: &OpusConfig) -> Result<Self, CodecError> {
        Ok(match kind {
            CodecKind::Pcmu => AudioCodec::G711(G711Codec::new(G711Law::Ulaw)),
            CodecKind::Pcma => AudioCodec::G711(G711Codec::new(G711Law::Alaw)),
            CodecKind::Opus => {
                AudioCodec::Opus(Box::new(OpusCodec { encoder: OpusEncoder::new(opus)?, decoder: OpusDecoder::new()? }))
            }
        })
    }

    /// Which codec this is.
    pub fn kind(&self) -> CodecKind {
        match self {
            AudioCodec::G711(g) if g.law == G711Law::Ulaw => CodecKind::Pcmu,
            AudioCodec::G711(_) => CodecKind::Pcma,
            AudioCodec::Opus(_) => CodecKind::Opus,
        }
    }

    /// RTP timestamp units per 20 ms engine frame (160 for G.711, 960 for Opus).
    pub fn rtp_samples_per_frame(&self) -> u32 {
        self.kind().rtp_samples_per_frame()
    }

    /// Decodes one RTP payload, appending 16 kHz samples to `out`; returns
    /// how many were appended.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        match self {
            AudioCodec::G711(g) => {
                g.narrow.clear();
                g.law.decode_f32(payload, &mut g.narrow);
                g.concealer.observe(&g.narrow);
                g.up.process(&g.narrow, out);
                Ok(2 * payload.len())
            }
            AudioCodec::Opus(o) => Ok(o.decoder.decode(payload, out)?),
        }
    }

    /// Appends `samples` (16 kHz; a multiple of 80, i.e. 5 ms, and at most
    /// 120 ms) of concealment for a lost packet. `next_payload`, the packet
    /// after the gap if it is already buffered, lets Opus use in-band FEC.
    pub fn conceal(
        &mut self,
        samples: usize,
        next_payload: Option<&[u8]>,
        out: &mut Vec<f32>,
    ) -> Result<(), CodecError> {
        match self {
            AudioCodec::G711(g) => {
                g.narrow.clear();
                g.concealer.conceal(samples / 2, &mut g.narrow);
                g.up.process(&g.narrow, out);
                Ok(())
            }
            AudioCodec::Opus(o) => Ok(o.decoder.conceal(samples, next_payload, out)?),
        }
    }

    /// Encodes whole 20 ms engine frames (one packet's worth: 1 to 3 frames
    /// for Opus, any number for G.711), appending the payload to `out`.
    pub fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if samples.is_empty() || !samples.len().is_multiple_of(FRAME_SAMPLES) {
            return Err(CodecError::FrameLength { got: samples.len() });
        }
        match self {
            AudioCodec::G711(g) => {
                g.narrow.clear();
                g.down.process(samples, &mut g.narrow);
                g.law.encode_f32(&g.narrow, out);
                Ok(())
            }
            AudioCodec::Opus(o) => {
                o.encoder.encode(samples, out)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: f32, hz: f32, len: usize) -> Vec<f32> {
        (0..len).map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate).sin()).collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    #[test]
    fn half_band_taps_are_normalised() {
        let taps = half_band_taps();
        // One side of the odd taps sums to 0.25 (both sides 0.5, plus the 0.5 centre).
        let sum: f32 = taps.iter().sum();
        assert!((sum - 0.25).abs() < 1e-6, "{sum}");
        assert!(taps[0] > 0.3 && taps[1] < 0.0, "{taps:?}");
    }

    #[test]
    fn upsampler_passes_speech_band_and_is_block_size_independent() {
        let input = sine(8_000.0, 1_000.0, 1_600);
        let mut whole = Vec::new();
        Upsampler2x::new().process(&input, &mut whole);
        assert_eq!(whole.len(), 3_200);
        let mut pieces = Vec::new();
        let mut up = Upsampler2x::new();
        for chunk in input.chunks(37) {
            up.process(chunk, &mut pieces);
        }
        assert_eq!(whole, pieces);
        // Compare against the ideal 16 kHz sine, delayed by 8 input samples.
        let ideal = sine(16_000.0, 1_000.0, 3_200);
        let delay = 2 * HALF_BAND_PAIRS;
        let err: Vec<f32> = (200..3_000).map(|i| whole[i] - ideal[i - delay]).collect();
        assert!(rms(&err) < 0.005, "interpolation error {}", rms(&err));
    }

    #[test]
    fn decimator_keeps_passband_and_rejects_aliases() {
        let mut down = Decimator2x::new();
        let mut out = Vec::new();
        down.process(&sine(16_000.0, 1_000.0, 3_200), &mut out);
        assert_eq!(out.len(), 1_600);
        let level = rms(&out[100..]);
        assert!((level - 0.5 / 2f32.sqrt()).abs() < 0.01, "1 kHz level {level}");
        // 6 kHz would alias to 2 kHz: must be at least 50 dB down.
        let mut down = Decimator2x::new();
        let mut alias = Vec::new();
        down.process(&sine(16_000.0, 6_000.0, 3_200), &mut alias);
        let ratio = rms(&alias[100..]) / (0.5 / 2f32.sqrt());
        assert!(ratio < 0.003, "6 kHz leaks at {ratio}");
    }

    #[test]
    fn pcmu_round_trip_preserves_a_tone() {
        let mut codec = AudioCodec::new(CodecKind::Pcmu).unwrap();
        assert_eq!(codec.rtp_samples_per_frame(), 160);
        let input = sine(16_000.0, 700.0, 320 * 20);
        let mut decoded = Vec::new();
        for frame in input.chunks(320) {
            let mut payload = Vec::new();
            codec.encode(frame, &mut payload).unwrap();
            assert_eq!(payload.len(), 160);
            assert_eq!(codec.decode(&payload, &mut decoded).unwrap(), 320);
        }
        // Total delay: decimator 15 + upsampler 16 samples at 16 kHz.
        let delay = (2 * HALF_BAND_PAIRS - 1) + 2 * HALF_BAND_PAIRS;
        let err: Vec<f32> = (400..6_000).map(|i| decoded[i] - input[i - delay]).collect();
        let snr = 20.0 * (rms(&input) / rms(&err)).log10();
        assert!(snr > 30.0, "PCMU round-trip SNR {snr} dB");
    }

    #[test]
    fn g711_concealment_repeats_pitch_then_fades_to_silence() {
        let mut codec = AudioCodec::new(CodecKind::Pcma).unwrap();
        let mut sink = Vec::new();
        let tone = sine(16_000.0, 200.0, 320 * 5);
        for frame in tone.chunks(320) {
            let mut payload = Vec::new();
            codec.encode(frame, &mut payload).unwrap();
            codec.decode(&payload, &mut sink).unwrap();
        }
        let mut concealed = Vec::new();
        for _ in 0..4 {
            codec.conceal(320, None, &mut concealed).unwrap();
        }
        assert_eq!(concealed.len(), 1_280);
        assert!(rms(&concealed[..320]) > 0.25, "first concealed frame {}", rms(&concealed[..320]));
        assert!(rms(&concealed[960 + 40..]) < 0.01, "fourth frame should be silent");
    }

    #[test]
    fn codec_errors_are_reported_not_panicked() {
        let mut codec = AudioCodec::new(CodecKind::Pcmu).unwrap();
        let mut out = Vec::new();
        assert!(matches!(codec.decode(&[], &mut out), Err(CodecError::EmptyPayload)));
        assert!(matches!(codec.encode(&[0.0; 100], &mut Vec::new()), Err(CodecError::FrameLength { got: 100 })));
        let mut opus = AudioCodec::new(CodecKind::Opus).unwrap();
        assert_eq!(opus.kind(), CodecKind::Opus);
        assert_eq!(opus.rtp_samples_per_frame(), 960);
        assert!(opus.decode(&[0xFF, 0xFF, 0xFF], &mut out).is_err() || !out.is_empty());
        let mut payload = Vec::new();
        opus.encode(&[0.0; 320], &mut payload).unwrap();
        assert!(!payload.is_empty());
    }
}

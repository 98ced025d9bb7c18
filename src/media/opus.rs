//! Opus (RFC 6716) for telephone legs, through libopus (the `opus` crate),
//! with the RTP conventions of RFC 7587.
//!
//! Owns an [`OpusEncoder`] and an [`OpusDecoder`] that run at the engine's
//! 16 kHz mono directly: libopus accepts 16 kHz as its API rate, so no
//! resampling is needed, while the RTP clock stays 48 kHz (RFC 7587 §4.1:
//! a 20 ms packet advances the timestamp by 960 whatever the API rate). The
//! decoder accepts stereo packets (the SDP always says `opus/48000/2`) and
//! downmixes them inside libopus because it is opened with one channel.
//!
//! Loss handling: [`OpusDecoder::conceal`] runs libopus packet loss
//! concealment, or, when the next packet is already buffered, decodes its
//! in-band FEC copy of the lost frame (RFC 7587 §3.1 `useinbandfec`); the
//! encoder emits FEC when [`OpusConfig::inband_fec`] is on and the SILK layer
//! is active.
//!
//! Pure computation: no IO, no clocks, no threads.

use crate::media::{ENGINE_RATE, FRAME_SAMPLES};

/// RTP clock rate of Opus (RFC 7587 §4.1), whatever the codec's sample rate.
pub const OPUS_RTP_CLOCK: u32 = 48_000;

/// Longest Opus packet duration (120 ms) in 16 kHz samples.
pub const MAX_PACKET_SAMPLES: usize = (ENGINE_RATE as usize) * 120 / 1000;

/// Upper bound on an encoded packet we produce (RFC 6716 allows 1275 bytes
/// per frame; at our bitrates a 60 ms packet is a few hundred bytes).
const MAX_ENCODED_BYTES: usize = 1500;

/// Errors from the Opus codec.
#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    /// libopus refused an operation (bad packet, bad argument, allocation).
    #[error("opus {function} failed: {description}")]
    Codec { function: &'static str, description: &'static str },
    /// Input to the encoder was not a whole number of 20 ms frames, or longer
    /// than 60 ms.
    #[error("opus encoder input has {got} samples; expected 320, 640 or 960 (20, 40 or 60 ms at 16 kHz)")]
    FrameLength { got: usize },
    /// A concealment length that is not a positive multiple of 2.5 ms up to
    /// 120 ms.
    #[error("cannot conceal {got} samples; expected a multiple of 40 up to {max} (2.5 ms steps at 16 kHz)", max = MAX_PACKET_SAMPLES)]
    ConcealLength { got: usize },
}

impl From<opus::Error> for OpusError {
    fn from(error: opus::Error) -> Self {
        OpusError::Codec { function: error.function(), description: error.description() }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate in bits per second (wideband speech is good at 20-32k).
    pub bitrate: i32,
    /// libopus complexity 0..=10: CPU against quality.
    pub complexity: i32,
    /// Emit in-band FEC (RFC 7587 `useinbandfec=1`).
    pub inband_fec: bool,
    /// Expected loss in percent; tunes how much FEC the encoder spends.
    pub expected_loss_percent: i32,
    /// Discontinuous transmission (we always send, so off by default).
    pub dtx: bool,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig { bitrate: 24_000, complexity: 5, inband_fec: true, expected_loss_percent: 5, dtx: false }
    }
}

/// A 16 kHz mono Opus encoder tuned for speech (`OPUS_APPLICATION_VOIP`).
pub struct OpusEncoder {
    inner: opus::Encoder,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Opens an encoder with `config`.
    pub fn new(config: &OpusConfig) -> Result<Self, OpusError> {
        let mut inner = opus::Encoder::new(ENGINE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(config.bitrate))?;
        inner.set_complexity(config.complexity.clamp(0, 10))?;
        inner.set_inband_fec(config.inband_fec)?;
        inner.set_packet_loss_perc(config.expected_loss_percent.clamp(0, 100))?;
        inner.set_dtx(config.dtx)?;
        inner.set_signal(opus::Signal::Voice)?;
        Ok(OpusEncoder { inner, scratch: vec![0; MAX_ENCODED_BYTES] })
    }

    /// Encodes 20, 40 or 60 ms of 16 kHz samples into one packet, appended
    /// to `out`. Returns the packet length.
    pub fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<usize, OpusError> {
        if samples.is_empty() || !samples.len().is_multiple_of(FRAME_SAMPLES) || samples.len() > 3 * FRAME_SAMPLES {
            return Err(OpusError::FrameLength { got: samples.len() });
        }
        let len = self.inner.encode_float(samples, &mut self.scratch)?;
        out.extend_from_slice(&self.scratch[..len]);
        Ok(len)
    }
}

/// A 16 kHz mono Opus decoder with loss concealment and FEC recovery.
pub struct OpusDecoder {
    inner: opus::Decoder,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Opens a decoder.
    pub fn new() -> Result<Self, OpusError> {
        let inner = opus::Decoder::new(ENGINE_RATE, opus::Channels::Mono)?;
        Ok(OpusDecoder { inner, scratch: vec![0.0; MAX_PACKET_SAMPLES] })
    }

    /// Decodes one packet, appending its 16 kHz samples to `out`; returns how
    /// many. Corrupt packets are an error and append nothing.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        if packet.is_empty() {
            // An empty payload would mean "lost" to libopus; reject it here so
            // a hostile zero-length packet is not silently turned into PLC.
            return Err(OpusError::Codec { function: "opus_decode_float", description: "empty packet" });
        }
        let n = self.inner.decode_float(packet, &mut self.scratch, false)?;
        out.extend_from_slice(&self.scratch[..n]);
        Ok(n)
    }

    /// Produces `samples` (a multiple of 2.5 ms, up to 120 ms) of audio for a
    /// lost packet, appended to `out`. With `next_packet` (the packet after
    /// the loss, already received) its in-band FEC is used when present;
    /// otherwise libopus extrapolates (PLC).
    pub fn conceal(&mut self, samples: usize, next_packet: Option<&[u8]>, out: &mut Vec<f32>) -> Result<(), OpusError> {
        if samples == 0 || !samples.is_multiple_of(40) || samples > MAX_PACKET_SAMPLES {
            return Err(OpusError::ConcealLength { got: samples });
        }
        let buffer = &mut self.scratch[..samples];
        let n = match next_packet {
            Some(packet) if !packet.is_empty() => match self.inner.decode_float(packet, buffer, true) {
                Ok(n) => n,
                Err(_) => self.inner.decode_float(&[], buffer, false)?,
            },
            _ => self.inner.decode_float(&[], buffer, false)?,
        };
        out.extend_from_slice(&self.scratch[..n]);
        // libopus fills exactly the requested length for PLC/FEC; pad
        // defensively so the caller's timing never drifts.
        out.extend(std::iter::repeat_n(0.0, samples.saturating_sub(n)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize, hz: f32) -> Vec<f32> {
        (0..frames * FRAME_SAMPLES)
            .map(|i| 0.4 * (2.0 * std::f32::consts::PI * hz * i as f32 / ENGINE_RATE as f32).sin())
            .collect()
    }

    fn correlation(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb).max(1e-9)
    }

    #[test]
    fn encodes_and_decodes_a_tone_at_16k() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let input = tone(50, 440.0);
        let mut decoded = Vec::new();
        for frame in input.chunks(FRAME_SAMPLES) {
            let mut packet = Vec::new();
            let len = encoder.encode(frame, &mut packet).unwrap();
            assert!(len > 0 && len < 200, "packet of {len} bytes");
            assert_eq!(decoder.decode(&packet, &mut decoded).unwrap(), FRAME_SAMPLES);
        }
        assert_eq!(decoded.len(), input.len());
        // Opus has a small algorithmic delay; find the best lag.
        let best = (0..200)
            .map(|lag| correlation(&input[..input.len() - 400], &decoded[lag..input.len() - 400 + lag]))
            .fold(f32::MIN, f32::max);
        assert!(best > 0.95, "decoded tone correlates only {best}");
    }

    #[test]
    fn forty_ms_packets_decode_to_640_samples() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let mut packet = Vec::new();
        encoder.encode(&tone(2, 300.0), &mut packet).unwrap();
        let mut out = Vec::new();
        assert_eq!(decoder.decode(&packet, &mut out).unwrap(), 640);
    }

    #[test]
    fn rejects_bad_frame_lengths_and_garbage() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut out = Vec::new();
        assert!(matches!(encoder.encode(&[0.0; 100], &mut out), Err(OpusError::FrameLength { got: 100 })));
        assert!(matches!(encoder.encode(&[0.0; 1280], &mut out), Err(OpusError::FrameLength { .. })));
        let mut decoder = OpusDecoder::new().unwrap();
        let mut samples = Vec::new();
        assert!(decoder.decode(&[], &mut samples).is_err());
        // TOC byte announcing code 3 with a frame count of zero is invalid.
        assert!(decoder.decode(&[0x03, 0x00], &mut samples).is_err());
        assert!(samples.is_empty());
        assert!(matches!(decoder.conceal(7, None, &mut samples), Err(OpusError::ConcealLength { got: 7 })));
    }

    #[test]
    fn concealment_continues_the_signal_and_fec_recovers_a_loss() {
        let config = OpusConfig { expected_loss_percent: 20, bitrate: 20_000, ..OpusConfig::default() };
        let mut encoder = OpusEncoder::new(&config).unwrap();
        let input = tone(30, 220.0);
        let packets: Vec<Vec<u8>> = input
            .chunks(FRAME_SAMPLES)
            .map(|frame| {
                let mut p = Vec::new();
                encoder.encode(frame, &mut p).unwrap();
                p
            })
            .collect();
        let lost = 20;
        let mut reference = OpusDecoder::new().unwrap();
        let mut plc = OpusDecoder::new().unwrap();
        let mut fec = OpusDecoder::new().unwrap();
        let (mut ref_out, mut plc_out, mut fec_out) = (Vec::new(), Vec::new(), Vec::new());
        for (i, packet) in packets.iter().enumerate() {
            reference.decode(packet, &mut ref_out).unwrap();
            if i == lost {
                plc.conceal(FRAME_SAMPLES, None, &mut plc_out).unwrap();
                fec.conceal(FRAME_SAMPLES, Some(&packets[i + 1]), &mut fec_out).unwrap();
            } else {
                plc.decode(packet, &mut plc_out).unwrap();
                fec.decode(packet, &mut fec_out).unwrap();
            }
        }
        let span = lost * FRAME_SAMPLES..(lost + 1) * FRAME_SAMPLES;
        let energy: f32 = plc_out[span.clone()].iter().map(|x| x * x).sum();
        assert!(energy > 1.0, "PLC produced near silence ({energy})");
        let fec_match = correlation(&ref_out[span.clone()], &fec_out[span.clone()]);
        assert!(fec_match > 0.8, "FEC frame correlates only {fec_match}");
    }
}

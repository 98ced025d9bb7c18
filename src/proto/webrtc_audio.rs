//! The audio of a browser leg between SRTP and the engine (sans-IO): Opus
//! RTP payloads in (RFC 7587, 48 kHz RTP clock) to one 20 ms, 16 kHz engine
//! frame per tick, and engine frames out to Opus payloads.
//!
//! The WebRTC stack (`runtime::webrtc`) does ICE, DTLS-SRTP and RTCP and
//! hands over decrypted packets; this module owns what is left:
//! reordering and playout timing ([`JitterBuffer`] at 48 kHz), Opus decode
//! at 16 kHz directly ([`AudioCodec`]), loss concealment (PLC, or in-band
//! FEC when the next packet is already here), and a short bridge of an
//! underrun after speech. Browsers send 20 ms packets by default; longer
//! ones (40, 60 ms) are split across ticks.
//!
//! No IO, no clocks (time is an argument), no threads.

use std::time::Instant;

use super::rtp::jitter::{JitterBuffer, JitterConfig, Playout};
use super::rtp::packet::RtpPacket;
use crate::media::codec::{AudioCodec, CodecError, CodecKind};
use crate::media::opus::{OpusConfig, OPUS_RTP_CLOCK};
use crate::media::FRAME_SAMPLES;

/// Empty ticks after speech that are concealed rather than silenced.
const UNDERRUN_CONCEAL_FRAMES: u32 = 3;

/// Counters since the leg started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioStats {
    pub packets_in: u64,
    pub decoded_frames: u64,
    pub concealed_frames: u64,
    pub silent_frames: u64,
    pub decode_errors: u64,
    pub frames_out: u64,
}

/// Receive and send paths of one browser's audio.
pub struct WebrtcAudio {
    jitter: JitterBuffer,
    codec: AudioCodec,
    decoded: Vec<f32>,
    had_audio: bool,
    empty_ticks: u32,
    stats: AudioStats,
}

impl std::fmt::Debug for WebrtcAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcAudio").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl WebrtcAudio {
    pub fn new() -> Result<WebrtcAudio, CodecError> {
        let jitter = JitterBuffer::new(JitterConfig { clock_rate: OPUS_RTP_CLOCK, ..JitterConfig::default() });
        // Speech to a browser over the internet: FEC on, a little more bitrate
        // than for a phone line.
        let opus = OpusConfig { bitrate: 32_000, ..OpusConfig::default() };
        let codec = AudioCodec::with_opus_config(CodecKind::Opus, &opus)?;
        Ok(WebrtcAudio { jitter, codec, decoded: Vec::with_capacity(4 * FRAME_SAMPLES), had_audio: false, empty_ticks: 0, stats: AudioStats::default() })
    }

    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// A decrypted RTP packet from the browser.
    pub fn push(&mut self, now: Instant, sequence: u16, timestamp: u32, ssrc: u32, marker: bool, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        self.stats.packets_in += 1;
        let packet = RtpPacket::new(0, sequence, timestamp, ssrc, marker, payload);
        self.jitter.push(now, &packet);
    }

    /// The caller's next 20 ms (call once per tick): decoded, concealed or
    /// silence.
    pub fn poll_frame(&mut self, now: Instant) -> [f32; FRAME_SAMPLES] {
        let mut concealed = false;
        let mut decoded_any = false;
        while self.decoded.len() < FRAME_SAMPLES {
            match self.jitter.pop(now) {
                Playout::Packet(packet) => match self.codec.decode(&packet.payload, &mut self.decoded) {
                    Ok(_) => {
                        decoded_any = true;
                        self.had_audio = true;
                        self.empty_ticks = 0;
                    }
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        self.conceal(None);
                        concealed = true;
                    }
                },
                Playout::Conceal => {
                    let next = self.jitter.peek_next_payload().map(<[u8]>::to_vec);
                    self.conceal(next.as_deref());
                    concealed = true;
                }
                Playout::Empty => {
                    let missing = FRAME_SAMPLES - self.decoded.len();
                    if self.had_audio && self.empty_ticks < UNDERRUN_CONCEAL_FRAMES {
                        let samples = missing.div_ceil(80) * 80;
                        if self.codec.conceal(samples, None, &mut self.decoded).is_err() {
                            self.decoded.resize(self.decoded.len() + missing, 0.0);
                        }
                        concealed = true;
                    } else {
                        self.decoded.resize(self.decoded.len() + missing, 0.0);
                        self.had_audio = false;
                    }
                    self.empty_ticks += 1;
                    break;
                }
            }
        }
        let mut frame = [0.0f32; FRAME_SAMPLES];
        frame.copy_from_slice(&self.decoded[..FRAME_SAMPLES]);
        self.decoded.drain(..FRAME_SAMPLES);
        if concealed {
            self.stats.concealed_frames += 1;
        } else if decoded_any {
            self.stats.decoded_frames += 1;
        } else {
            self.stats.silent_frames += 1;
        }
        frame
    }

    /// One agent frame (exactly 320 samples) as an Opus payload.
    pub fn encode(&mut self, frame: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.codec.encode(frame, out)?;
        self.stats.frames_out += 1;
        Ok(())
    }

    fn conceal(&mut self, next: Option<&[u8]>) {
        if self.codec.conceal(FRAME_SAMPLES, next, &mut self.decoded).is_err() {
            self.decoded.resize(self.decoded.len() + FRAME_SAMPLES, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tone(frames: usize) -> Vec<f32> {
        (0..frames * FRAME_SAMPLES).map(|i| 0.3 * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / 16_000.0).sin()).collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    #[test]
    fn packets_in_frames_out_with_loss_and_reorder() {
        let mut sender = WebrtcAudio::new().unwrap();
        let mut receiver = WebrtcAudio::new().unwrap();
        let input = tone(50);
        let packets: Vec<Vec<u8>> = input
            .chunks(FRAME_SAMPLES)
            .map(|f| {
                let mut p = Vec::new();
                sender.encode(f, &mut p).unwrap();
                p
            })
            .collect();
        assert_eq!(sender.stats().frames_out, 50);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let order: Vec<usize> = (0..50).filter(|i| *i != 20).map(|i| if i == 30 { 31 } else if i == 31 { 30 } else { i }).collect();
        for (tick, &i) in order.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * tick as u64);
            receiver.push(now, 1000 + i as u16, 960 * i as u32, 7, i == 0, &packets[i]);
            out.extend_from_slice(&receiver.poll_frame(now));
        }
        for tick in order.len()..order.len() + 5 {
            out.extend_from_slice(&receiver.poll_frame(t0 + Duration::from_millis(20 * tick as u64)));
        }
        let s = receiver.stats();
        assert_eq!(s.packets_in, 49);
        assert!(s.decoded_frames >= 45, "{s:?}");
        assert!(s.concealed_frames >= 1, "the lost packet was concealed: {s:?}");
        assert!(rms(&out) > 0.1, "audio came through: rms {}", rms(&out));
    }

    #[test]
    fn silence_before_any_packet_and_garbage_is_concealed() {
        let mut rx = WebrtcAudio::new().unwrap();
        let now = Instant::now();
        assert!(rx.poll_frame(now).iter().all(|v| *v == 0.0));
        assert_eq!(rx.stats().silent_frames, 1);
        rx.push(now, 1, 0, 9, true, &[0x03, 0x00]);
        rx.push(now, 2, 960, 9, false, &[]);
        for k in 1..6 {
            rx.poll_frame(now + Duration::from_millis(20 * k));
        }
        assert_eq!(rx.stats().decode_errors, 1);
        let mut out = Vec::new();
        assert!(rx.encode(&[0.0; 100], &mut out).is_err());
    }
}

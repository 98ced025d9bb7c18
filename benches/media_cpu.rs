//! Per-call media CPU: 60 s of audio through one call leg's media plane,
//! both directions, for PCMU and Opus.
//!
//! Each 20 ms step: the sending `RtpSession` encodes and packetizes an engine
//! frame; its datagram goes to a receiving `RtpSession` (RTP parse, receiver
//! statistics, jitter buffer), which decodes it to a 16 kHz frame. Time is
//! virtual (no sleeping): the clock advances 20 ms per step. Reports the
//! median of several runs as ns per 20 ms frame (send + receive) and as a
//! percentage of one core per call (`ns / 20 ms`).
//!
//! Run: `cargo bench --bench media_cpu`. The Opus encoder settings can be
//! varied with `MEDIA_CPU_OPUS_COMPLEXITY` (0-10, default 5) and
//! `MEDIA_CPU_OPUS_FEC` (`0` turns in-band FEC off).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voice_edge::media::codec::CodecKind;
use voice_edge::media::opus::OpusConfig;
use voice_edge::media::FRAME_SAMPLES;
use voice_edge::proto::rtp::{JitterConfig, RtpOutput, RtpSession, RtpSessionConfig};
use voice_edge::proto::sdp::{Direction, NegotiatedCodec};

const SECONDS: usize = 60;
const FRAMES: usize = SECONDS * 50;
const RUNS: usize = 7;

fn config(kind: CodecKind, seed: u64, remote: SocketAddr) -> RtpSessionConfig {
    let payload_type = kind.static_payload_type().unwrap_or(111);
    RtpSessionConfig {
        codec: NegotiatedCodec {
            kind,
            payload_type,
            clock_rate: kind.rtp_clock_rate(),
            channels: kind.rtpmap_channels(),
        },
        dtmf_payload_type: Some(101),
        remote_rtp: Some(remote),
        remote_rtcp: None,
        rtcp_mux: false,
        direction: Direction::SendRecv,
        ptime_ms: 20,
        symmetric_latching: true,
        inactivity_timeout: Duration::from_secs(30),
        jitter: JitterConfig::default(),
        rtcp_interval: Duration::from_secs(5),
        seed,
        cname: "bench@voice-edge".into(),
        ntp_at_start: 0,
        opus: opus_config(),
        send_queue_frames: 50,
    }
}

fn opus_config() -> OpusConfig {
    let mut config = OpusConfig::default();
    if let Some(c) = std::env::var("MEDIA_CPU_OPUS_COMPLEXITY").ok().and_then(|v| v.parse().ok()) {
        config.complexity = c;
    }
    if std::env::var("MEDIA_CPU_OPUS_FEC").is_ok_and(|v| v == "0") {
        config.inband_fec = false;
    }
    config
}

/// Speech-like test signal: a gliding 120-220 Hz voice with harmonics,
/// syllable-rate amplitude modulation and a little noise.
fn signal() -> Vec<f32> {
    let mut noise = 0x1234_5678u32;
    let mut phase = 0.0f32;
    (0..FRAMES * FRAME_SAMPLES)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let f0 = 170.0 + 50.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f32::consts::PI * f0 / 16_000.0;
            let voice: f32 = (1..=8).map(|h| (phase * h as f32).sin() / h as f32).sum();
            let envelope = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            0.15 * voice * envelope + 0.005 * ((noise as f32 / u32::MAX as f32) - 0.5)
        })
        .collect()
}

struct Run {
    total: Duration,
    send: Duration,
    receive: Duration,
    decoded: usize,
}

fn run(kind: CodecKind, audio: &[f32]) -> Run {
    let t0 = Instant::now();
    let a: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:30000".parse().unwrap();
    let mut tx = RtpSession::new(config(kind, 1, b), t0).unwrap();
    let mut rx = RtpSession::new(config(kind, 2, a), t0).unwrap();
    let mut send = Duration::ZERO;
    let mut receive = Duration::ZERO;
    let mut decoded = 0;
    let started = Instant::now();
    for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        let s0 = Instant::now();
        tx.send_frame(now, frame).unwrap();
        tx.handle_timeout(now).unwrap();
        let mut datagrams = Vec::with_capacity(2);
        while let Some(out) = tx.poll_output() {
            if let RtpOutput::Transmit { data, rtcp: false, .. } = out {
                datagrams.push(data);
            }
        }
        let s1 = Instant::now();
        for data in &datagrams {
            rx.handle_rtp(now, a, data).unwrap();
        }
        rx.handle_timeout(now).unwrap();
        while rx.poll_output().is_some() {}
        if let Some(frame) = rx.poll_frame(now) {
            std::hint::black_box(&frame.samples);
            decoded += 1;
        }
        let s2 = Instant::now();
        send += s1 - s0;
        receive += s2 - s1;
    }
    Run { total: started.elapsed(), send, receive, decoded }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    let audio = signal();
    let opus = opus_config();
    println!("media_cpu: {SECONDS} s of audio per call ({FRAMES} frames of 20 ms), median of {RUNS} runs");
    println!("opus: complexity {}, {} bit/s, in-band FEC {}", opus.complexity, opus.bitrate, opus.inband_fec);
    println!(
        "{:<6} {:>14} {:>14} {:>14} {:>12}",
        "codec", "send ns/frame", "recv ns/frame", "total ns/frm", "% of a core"
    );
    for kind in [CodecKind::Pcmu, CodecKind::Opus] {
        let _ = run(kind, &audio[..FRAME_SAMPLES * 200]); // warm-up
        let runs: Vec<Run> = (0..RUNS).map(|_| run(kind, &audio)).collect();
        assert!(runs.iter().all(|r| r.decoded == FRAMES), "every step must yield a frame");
        let per_frame = |d: Duration| d.as_nanos() as f64 / FRAMES as f64;
        let total = median(runs.iter().map(|r| per_frame(r.total)).collect());
        let send = median(runs.iter().map(|r| per_frame(r.send)).collect());
        let receive = median(runs.iter().map(|r| per_frame(r.receive)).collect());
        let core_percent = total / 20_000_000.0 * 100.0;
        println!(
            "{:<6} {:>14.0} {:>14.0} {:>14.0} {:>11.4}%",
            kind.encoding_name(),
            send,
            receive,
            total,
            core_percent
        );
    }
}

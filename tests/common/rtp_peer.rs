//! The caller's media side for SIP tests: a loopback UDP socket that the
//! caller's SDP advertises. It learns the node's RTP address from the first
//! packet the node sends (the greeting), streams recorded speech to it as
//! PCMU in paced 20 ms packets, sends RFC 4733 digits, and keeps everything
//! the node sends, decoded, so a test can check that the reply is speech.
//!
//! RTP headers are written and read here by hand (RFC 3550 §5.1), not with
//! the node's own RTP code, so the node is checked against an independent
//! implementation.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use voice_edge::media::g711::G711Law;

pub struct RtpPeer {
    sock: UdpSocket,
    pub port: u16,
    node: Option<SocketAddr>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// Everything received, decoded PCMU at 8 kHz, placed by arrival time.
    pub heard: Vec<f32>,
    pub packets_in: usize,
    pub payload_types_in: Vec<u8>,
    start: Instant,
}

/// What a stretch of the node's audio was like.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    pub rms: f32,
    /// Fraction of 20 ms frames above -40 dBFS.
    pub voiced_fraction: f32,
}

impl RtpPeer {
    pub fn bind() -> RtpPeer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the caller's RTP socket");
        sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let port = sock.local_addr().unwrap().port();
        RtpPeer {
            sock,
            port,
            node: None,
            seq: 1000,
            ts: 160_000,
            ssrc: 0x5eed_0001 ^ u32::from(port),
            heard: Vec::new(),
            packets_in: 0,
            payload_types_in: Vec::new(),
            start: Instant::now(),
        }
    }

    pub fn node_addr(&self) -> Option<SocketAddr> {
        self.node
    }

    /// Receives for `dur` (sending silence packets so the node's RTP
    /// inactivity timer and latching see a live caller once it is known).
    pub fn listen(&mut self, dur: Duration) {
        let until = Instant::now() + dur;
        let mut next_send = Instant::now();
        while Instant::now() < until {
            self.receive_pending();
            if self.node.is_some() && Instant::now() >= next_send {
                self.send_pcmu(&[0.0; 160], false);
                next_send += Duration::from_millis(20);
            }
        }
    }

    /// Waits until the node has sent something (its greeting), at most `timeout`.
    pub fn wait_for_node(&mut self, timeout: Duration) -> SocketAddr {
        let until = Instant::now() + timeout;
        while self.node.is_none() {
            assert!(Instant::now() < until, "the node sent no RTP within {timeout:?}");
            self.receive_pending();
        }
        self.node.unwrap()
    }

    /// Streams 8 kHz speech in real time, receiving meanwhile.
    pub fn say(&mut self, speech_8k: &[f32]) {
        assert!(self.node.is_some(), "say() before the node's address is known");
        let mut next = Instant::now();
        let mut first = true;
        for chunk in speech_8k.chunks(160) {
            let mut frame = chunk.to_vec();
            frame.resize(160, 0.0);
            while Instant::now() < next {
                self.receive_pending();
            }
            self.send_pcmu(&frame, first);
            first = false;
            next += Duration::from_millis(20);
        }
    }

    /// Sends one RFC 4733 digit (event, 3 end packets) with payload type `pt`.
    pub fn send_digit(&mut self, digit: char, pt: u8) {
        let event: u8 = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("not a DTMF digit: {digit}"),
        };
        let to = self.node.expect("node address known");
        let ts = self.ts;
        let send = |this: &mut Self, marker: bool, end: bool, duration: u16| {
            let mut p = header(pt, marker, this.seq, ts, this.ssrc);
            p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&duration.to_be_bytes());
            this.sock.send_to(&p, to).unwrap();
            this.seq = this.seq.wrapping_add(1);
        };
        for i in 0..8u16 {
            send(self, i == 0, false, (i + 1) * 160);
            let t = Instant::now() + Duration::from_millis(20);
            while Instant::now() < t {
                self.receive_pending();
            }
        }
        for _ in 0..3 {
            send(self, false, true, 8 * 160);
        }
        self.ts = self.ts.wrapping_add(8 * 160);
        let t = Instant::now() + Duration::from_millis(80);
        while Instant::now() < t {
            self.receive_pending();
        }
    }

    fn send_pcmu(&mut self, frame: &[f32], marker: bool) {
        let Some(to) = self.node else { return };
        let mut p = header(0, marker, self.seq, self.ts, self.ssrc);
        G711Law::Ulaw.encode_f32(frame, &mut p);
        self.sock.send_to(&p, to).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }

    fn receive_pending(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if n < 12 || buf[0] >> 6 != 2 {
                continue;
            }
            self.node.get_or_insert(from);
            self.packets_in += 1;
            let pt = buf[1] & 0x7f;
            if !self.payload_types_in.contains(&pt) {
                self.payload_types_in.push(pt);
            }
            if pt == 0 {
                let cc = usize::from(buf[0] & 0x0f);
                let start = 12 + 4 * cc;
                if start <= n {
                    let at = (self.start.elapsed().as_secs_f64() * 8000.0) as usize;
                    if self.heard.len() < at.saturating_sub(160) {
                        self.heard.resize(at.saturating_sub(160), 0.0);
                    }
                    G711Law::Ulaw.decode_f32(&buf[start..n], &mut self.heard);
                }
            }
        }
    }

    /// Level of what was heard from `from_s` seconds on.
    pub fn level_since(&self, from_s: f64) -> Level {
        let start = ((from_s * 8000.0) as usize).min(self.heard.len());
        level(&self.heard[start..])
    }
}

pub fn level(audio: &[f32]) -> Level {
    if audio.is_empty() {
        return Level { rms: 0.0, voiced_fraction: 0.0 };
    }
    let rms = (audio.iter().map(|s| s * s).sum::<f32>() / audio.len() as f32).sqrt();
    let frames: Vec<f32> = audio.chunks(160).map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt()).collect();
    let voiced = frames.iter().filter(|&&r| r > 0.01).count();
    Level { rms, voiced_fraction: voiced as f32 / frames.len() as f32 }
}

fn header(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + 160);
    p.push(0x80);
    p.push(if marker { 0x80 | pt } else { pt });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// 16 kHz engine audio to 8 kHz (2:1 with a short low-pass), for PCMU.
pub fn to_8k(audio_16k: &[f32]) -> Vec<f32> {
    audio_16k
        .chunks(2)
        .enumerate()
        .map(|(i, c)| {
            let prev = if i > 0 { audio_16k[2 * i - 1] } else { 0.0 };
            0.25 * prev + 0.5 * c[0] + 0.25 * c.get(1).copied().unwrap_or(0.0)
        })
        .collect()
}

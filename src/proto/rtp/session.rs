//! [`RtpSession`]: the RTP/RTCP state machine of one call leg (sans-IO).
//!
//! Owns, for one negotiated audio stream:
//! - **Receiving** (RFC 3550 §5, §6.4): validation, payload-type dispatch
//!   (audio codec, RFC 4733 telephone-event, comfort noise), SSRC change
//!   detection, receiver statistics (Appendix A), the adaptive jitter
//!   buffer, decoding to 16 kHz, and [`RtpSession::poll_frame`], which
//!   yields exactly one 20 ms engine frame per 20 ms: decoded, concealed
//!   (loss, or up to 60 ms of underrun after audio) or silence.
//! - **Symmetric RTP latching** (the "comedia" practice for NAT'd carriers,
//!   cf. RFC 4961): the first packet carrying one of our negotiated payload
//!   types from an address other than the SDP one moves our send address
//!   there; after the first packet the source is locked and packets from
//!   elsewhere are dropped and counted. RTCP latches the same way.
//! - **Sending** (RFC 3550 §5.1, RFC 3551 §4.1): engine frames are queued and
//!   released one packet per packet interval (`ptime`), with sequence
//!   numbers +1 per packet and timestamps derived from the send clock's tick
//!   index, so they keep advancing across silence; the first packet after a
//!   gap (or a DTMF event) carries the marker bit. Nothing is sent while the
//!   direction does not send (hold) or no remote address is known.
//! - **DTMF sending** (RFC 4733 §2.5.1): queued digits replace audio for
//!   their duration; received events surface once per digit.
//! - **RTCP** (§6): an SR (if we sent since the last report) or RR with a
//!   report block, plus SDES CNAME, at the §6.3 randomised interval (5 s
//!   minimum, first report after half of it; times 0.5-1.5 from the seeded
//!   generator, divided by e - 3/2); BYE on [`RtpSession::close`]; RTT from
//!   report blocks about our SSRC; remote BYE surfaces as an event.
//! - **Inactivity**: no RTP for [`RtpSessionConfig::inactivity_timeout`]
//!   while sending and receiving both ways raises one
//!   [`RtpEvent::Inactive`]; on hold (any other direction) it is disarmed.
//!
//! Randomness (SSRC, first sequence number, first timestamp, RTCP jitter)
//! comes from [`RtpSessionConfig::seed`]; time only from `now` arguments.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dtmf::{DtmfError, DtmfReceiver, DtmfSender};
use super::jitter::{JitterBuffer, JitterConfig, Playout};
use super::packet::{is_rtcp, RtpError, RtpPacket};
use super::rtcp::{self, Bye, ReceiverReport, ReceiverStats, RtcpError, RtcpPacket, SdesChunk, SenderReport};
use crate::media::codec::{AudioCodec, CodecError};
use crate::media::opus::OpusConfig;
use crate::media::{ENGINE_RATE, FRAME_MS, FRAME_SAMPLES};
use crate::proto::sdp::{Direction, Negotiated, NegotiatedCodec};

/// RFC 3389 comfort noise, static payload type 13.
const COMFORT_NOISE_PT: u8 = 13;
/// Underrun after audio is concealed for this many frames, then silence.
const UNDERRUN_CONCEAL_FRAMES: u32 = 3;
/// Packet intervals of pause between two sent DTMF digits.
const DTMF_GAP_TICKS: u64 = 3;
/// If the frame clock falls this far behind, it is realigned to `now`.
const FRAME_CLOCK_SLACK: Duration = Duration::from_millis(200);

/// Errors from the session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A datagram that is not valid RTP (counted as malformed).
    #[error(transparent)]
    Rtp(#[from] RtpError),
    /// A datagram that is not valid RTCP (counted as malformed).
    #[error(transparent)]
    Rtcp(#[from] RtcpError),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A telephone-event problem (bad digit, truncated payload).
    #[error(transparent)]
    Dtmf(#[from] DtmfError),
    /// Audio handed to [`RtpSession::send_frame`] was not whole 20 ms frames.
    #[error("send_frame needs a non-empty multiple of {FRAME_SAMPLES} samples, got {got}")]
    FrameLength { got: usize },
    /// DTMF requested but no telephone-event payload type was negotiated.
    #[error("no telephone-event payload type was negotiated")]
    NoDtmfPayloadType,
}

/// Session settings, normally built with [`RtpSessionConfig::from_negotiated`].
#[derive(Debug, Clone)]
pub struct RtpSessionConfig {
    /// Codec and payload type.
    pub codec: NegotiatedCodec,
    /// telephone-event payload type.
    pub dtmf_payload_type: Option<u8>,
    /// RTP destination from SDP (`None` on hold).
    pub remote_rtp: Option<SocketAddr>,
    /// RTCP destination from `a=rtcp`; default RTP port + 1 (or the RTP
    /// address when muxed).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// What we do.
    pub direction: Direction,
    /// Send packet interval, a multiple of 20 ms.
    pub ptime_ms: u32,
    /// Learn the send address from the first valid packets.
    pub symmetric_latching: bool,
    /// Silence (no RTP) after which [`RtpEvent::Inactive`] is raised.
    pub inactivity_timeout: Duration,
    /// Jitter buffer settings (the clock rate is taken from the codec).
    pub jitter: JitterConfig,
    /// Minimum RTCP interval (RFC 3550 §6.2: 5 s).
    pub rtcp_interval: Duration,
    /// Seed for SSRC, initial sequence number/timestamp and RTCP jitter.
    pub seed: u64,
    /// SDES CNAME.
    pub cname: String,
    /// NTP time (32.32) at the `now` passed to [`RtpSession::new`], from the
    /// driver's wall clock; only used for SR timestamps and RTT.
    pub ntp_at_start: u64,
    /// Opus encoder settings.
    pub opus: OpusConfig,
    /// Most 20 ms frames queued for sending (older ones are dropped).
    pub send_queue_frames: usize,
}

impl RtpSessionConfig {
    /// Settings from an SDP negotiation, with defaults for the rest: 30 s
    /// inactivity, latching on, 5 s RTCP.
    pub fn from_negotiated(negotiated: &Negotiated, seed: u64, cname: impl Into<String>) -> Self {
        RtpSessionConfig {
            codec: negotiated.codec,
            dtmf_payload_type: negotiated.dtmf_payload_type,
            remote_rtp: negotiated.remote_rtp,
            remote_rtcp: negotiated.remote_rtcp,
            rtcp_mux: negotiated.rtcp_mux,
            direction: negotiated.direction,
            ptime_ms: negotiated.ptime_ms,
            symmetric_latching: true,
            inactivity_timeout: Duration::from_secs(30),
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(5),
            seed,
            cname: cname.into(),
            ntp_at_start: 0,
            opus: OpusConfig::default(),
            send_queue_frames: 50,
        }
    }
}

/// Where a frame's audio came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// Decoded from received packets.
    Decoded,
    /// Loss concealment (in part or whole).
    Concealed,
    /// Nothing received.
    Silence,
}

/// One 20 ms engine frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame16k {
    /// 320 samples at 16 kHz.
    pub samples: [f32; FRAME_SAMPLES],
    /// Where they came from.
    pub source: FrameSource,
}

/// Something the session wants the driver to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpEvent {
    /// A DTMF digit (once per event).
    Dtmf {
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// Duration reported by the sender.
        duration_ms: u32,
    },
    /// The send address moved to where media actually comes from.
    Latched {
        /// The new RTP destination.
        from: SocketAddr,
    },
    /// No RTP for the inactivity timeout.
    Inactive {
        /// How long since the last packet (or since the session began).
        silent_for: Duration,
    },
    /// The remote's SSRC changed.
    SsrcChanged {
        /// Previous SSRC.
        old: u32,
        /// New SSRC.
        new: u32,
    },
    /// The remote sent RTCP BYE.
    RemoteBye {
        /// Its reason text, if any.
        reason: Option<String>,
    },
}

/// Output for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpOutput {
    /// Send a datagram.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// Bytes.
        data: Vec<u8>,
        /// RTCP (send from the RTCP socket unless muxed).
        rtcp: bool,
    },
    /// An event.
    Event(RtpEvent),
}

/// Counters and current state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RtpStats {
    /// RTP packets accepted.
    pub packets_in: u64,
    /// RTP bytes accepted (whole datagrams).
    pub bytes_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// RTP bytes sent (whole datagrams).
    pub bytes_out: u64,
    /// Cumulative loss (RFC 3550 A.3).
    pub lost: i64,
    /// Packets that arrived after their playout slot.
    pub late: u64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Packets discarded by the jitter buffer (overflow, too deep).
    pub discarded: u64,
    /// Frames that contained concealment.
    pub concealed_frames: u64,
    /// Frames of silence (nothing to play).
    pub silence_frames: u64,
    /// Payloads that failed to decode.
    pub decode_errors: u64,
    /// Datagrams that were not valid RTP/RTCP.
    pub malformed: u64,
    /// Packets from a source other than the latched one.
    pub foreign_dropped: u64,
    /// Packets with a payload type we did not negotiate.
    pub unknown_payload_type: u64,
    /// Frames dropped because the send queue was full.
    pub send_queue_dropped: u64,
    /// DTMF digits received.
    pub dtmf_received: u64,
    /// Interarrival jitter (RFC 3550 A.8), ms.
    pub jitter_ms: f64,
    /// Jitter buffer target delay, ms.
    pub playout_delay_ms: f64,
    /// Round-trip time from the last report about us.
    pub round_trip: Option<Duration>,
    /// Address latched for RTP.
    pub latched: Option<SocketAddr>,
    /// The remote's SSRC.
    pub remote_ssrc: Option<u32>,
    /// Our SSRC.
    pub local_ssrc: u32,
}

/// SplitMix64: small, seedable, good enough for SSRCs and timer jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The RTP/RTCP state machine of one call leg.
#[derive(Debug)]
pub struct RtpSession {
    config: RtpSessionConfig,
    codec: AudioCodec,
    rng: SplitMix64,
    start: Instant,
    // Local stream.
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    // Addresses.
    remote_rtp: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    rtp_source: Option<SocketAddr>,
    rtcp_latched: bool,
    direction: Direction,
    // Receiving.
    jitter: JitterBuffer,
    dtmf_in: DtmfReceiver,
    receiver: Option<ReceiverStats>,
    decoded: Vec<f32>,
    next_frame_at: Option<Instant>,
    empty_frames: u32,
    had_audio: bool,
    /// The newest accepted packet was audio (not an event or comfort noise).
    last_packet_audio: bool,
    last_rtp_at: Instant,
    inactive_reported: bool,
    // Sending.
    samples_per_packet: usize,
    rtp_units_per_packet: u32,
    packet_interval: Duration,
    send_queue: Vec<f32>,
    send_epoch: Option<Instant>,
    next_tick: u64,
    last_sent_tick: Option<u64>,
    force_marker: bool,
    dtmf_pending: VecDeque<(char, Duration)>,
    dtmf_active: Option<(DtmfSender, u32)>,
    dtmf_not_before: u64,
    scratch_samples: Vec<f32>,
    scratch_payload: Vec<u8>,
    // RTCP.
    next_rtcp_at: Instant,
    sent_since_report: bool,
    octets_out: u64,
    bye_sent: bool,
    // Output.
    outputs: VecDeque<RtpOutput>,
    stats: RtpStats,
}

impl RtpSession {
    /// Starts a session at `now`.
    pub fn new(config: RtpSessionConfig, now: Instant) -> Result<Self, SessionError> {
        let codec = AudioCodec::with_opus_config(config.codec.kind, &config.opus)?;
        let mut rng = SplitMix64(config.seed);
        let ssrc = rng.next_u64() as u32;
        let sequence = rng.next_u64() as u16;
        let timestamp_base = rng.next_u64() as u32;
        let frames_per_packet = (config.ptime_ms / FRAME_MS).clamp(1, 3) as usize;
        let packet_interval = Duration::from_millis(u64::from(FRAME_MS) * frames_per_packet as u64);
        let rtp_units_per_packet = config.codec.kind.rtp_samples_per_frame() * frames_per_packet as u32;
        let mut jitter_config = config.jitter.clone();
        jitter_config.clock_rate = config.codec.clock_rate.max(1);
        let mut session = RtpSession {
            codec,
            start: now,
            ssrc,
            sequence,
            timestamp_base,
            remote_rtp: config.remote_rtp,
            remote_rtcp: config.remote_rtcp,
            rtp_source: None,
            rtcp_latched: false,
            direction: config.direction,
            jitter: JitterBuffer::new(jitter_config),
            dtmf_in: DtmfReceiver::new(config.codec.clock_rate),
            receiver: None,
            decoded: Vec::with_capacity(4 * FRAME_SAMPLES),
            next_frame_at: None,
            empty_frames: 0,
            had_audio: false,
            last_packet_audio: false,
            last_rtp_at: now,
            inactive_reported: false,
            samples_per_packet: FRAME_SAMPLES * frames_per_packet,
            rtp_units_per_packet,
            packet_interval,
            send_queue: Vec::with_capacity(FRAME_SAMPLES * config.send_queue_frames.max(1)),
            send_epoch: None,
            next_tick: 0,
            last_sent_tick: None,
            force_marker: false,
            dtmf_pending: VecDeque::new(),
            dtmf_active: None,
            dtmf_not_before: 0,
            scratch_samples: Vec::with_capacity(3 * FRAME_SAMPLES),
            scratch_payload: Vec::with_capacity(512),
            next_rtcp_at: now,
            sent_since_report: false,
            octets_out: 0,
            bye_sent: false,
            outputs: VecDeque::new(),
            stats: RtpStats { local_ssrc: ssrc, ..RtpStats::default() },
            rng,
            config,
        };
        // §6.2: the first report may go after half the minimum interval.
        session.next_rtcp_at = now + session.rtcp_delay() / 2;
        Ok(session)
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The current direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Where RTP is sent now (latched address first).
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.remote_rtp
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.config.rtcp_mux {
            return self.remote_rtp;
        }
        if self.rtcp_latched || self.remote_rtcp.is_some() {
            return self.remote_rtcp;
        }
        let rtp = self.remote_rtp?;
        Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
    }

    /// RFC 3550 §6.3.1 interval for a two-party session at the minimum:
    /// T * U(0.5, 1.5) / (e - 3/2).
    fn rtcp_delay(&mut self) -> Duration {
        const COMPENSATION: f64 = std::f64::consts::E - 1.5;
        let factor = 0.5 + self.rng.next_f64();
        self.config.rtcp_interval.mul_f64(factor / COMPENSATION)
    }

    fn ntp_now(&self, now: Instant) -> u64 {
        rtcp::ntp_add(self.config.ntp_at_start, now.saturating_duration_since(self.start))
    }

    fn event(&mut self, event: RtpEvent) {
        self.outputs.push_back(RtpOutput::Event(event));
    }

    /// Changes the remote addresses after a re-INVITE; latching starts over.
    pub fn set_remote(&mut self, now: Instant, remote_rtp: Option<SocketAddr>, remote_rtcp: Option<SocketAddr>) {
        self.remote_rtp = remote_rtp;
        self.remote_rtcp = remote_rtcp;
        self.rtp_source = None;
        self.rtcp_latched = false;
        self.last_rtp_at = now;
        self.inactive_reported = false;
    }

    /// Changes direction (hold/resume). Leaving a sending direction drops
    /// queued audio and DTMF; entering sendrecv re-arms inactivity from now.
    pub fn set_direction(&mut self, now: Instant, direction: Direction) {
        if !direction.sends() {
            self.send_queue.clear();
            self.dtmf_pending.clear();
            self.dtmf_active = None;
        }
        if direction == Direction::SendRecv && self.direction != Direction::SendRecv {
            self.last_rtp_at = now;
            self.inactive_reported = false;
        }
        self.direction = direction;
    }

    /// Handles a datagram from the RTP socket (RTCP too when muxed).
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), SessionError> {
        if self.config.rtcp_mux && is_rtcp(bytes) {
            return self.handle_rtcp(now, from, bytes);
        }
        let packet = match RtpPacket::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        let pt = packet.payload_type;
        let is_audio = pt == self.config.codec.payload_type;
        let is_dtmf = self.config.dtmf_payload_type == Some(pt);
        if !is_audio && !is_dtmf && pt != COMFORT_NOISE_PT {
            self.stats.unknown_payload_type += 1;
            return Ok(());
        }
        match self.rtp_source {
            Some(source) if source != from => {
                self.stats.foreign_dropped += 1;
                return Ok(());
            }
            Some(_) => {}
            None => {
                if self.config.symmetric_latching {
                    self.rtp_source = Some(from);
                    if self.remote_rtp != Some(from) {
                        self.remote_rtp = Some(from);
                        self.stats.latched = Some(from);
                        self.event(RtpEvent::Latched { from });
                    }
                }
            }
        }
        self.stats.packets_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        self.last_rtp_at = now;
        self.inactive_reported = false;

        match &mut self.receiver {
            Some(r) if r.ssrc() == packet.ssrc => {}
            Some(r) => {
                let old = r.ssrc();
                self.receiver =
                    Some(ReceiverStats::new(packet.ssrc, packet.sequence, self.config.codec.clock_rate, now));
                self.dtmf_in = DtmfReceiver::new(self.config.codec.clock_rate);
                self.event(RtpEvent::SsrcChanged { old, new: packet.ssrc });
            }
            None => {
                self.receiver =
                    Some(ReceiverStats::new(packet.ssrc, packet.sequence, self.config.codec.clock_rate, now));
            }
        }
        if let Some(r) = &mut self.receiver {
            r.on_packet(now, packet.sequence, packet.timestamp, is_audio);
        }
        self.stats.remote_ssrc = Some(packet.ssrc);

        self.last_packet_audio = is_audio;
        if is_audio {
            self.jitter.push(now, &packet);
        } else {
            self.jitter.push_placeholder(now, &packet);
            if is_dtmf {
                let digits = self.dtmf_in.on_packet(now, packet.timestamp, packet.payload)?;
                for d in digits {
                    self.stats.dtmf_received += 1;
                    self.event(RtpEvent::Dtmf { digit: d.digit, duration_ms: d.duration.as_millis() as u32 });
                }
            }
        }
        Ok(())
    }

    /// Handles a datagram from the RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), SessionError> {
        let packets = match rtcp::parse_compound(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        if self.config.symmetric_latching && !self.rtcp_latched && !self.config.rtcp_mux {
            self.rtcp_latched = true;
            self.remote_rtcp = Some(from);
        }
        let remote_ssrc = self.receiver.as_ref().map(ReceiverStats::ssrc);
        let ntp_now = self.ntp_now(now);
        for packet in packets {
            let blocks = match packet {
                RtcpPacket::SenderReport(sr) => {
                    if let Some(r) = self.receiver.as_mut().filter(|r| r.ssrc() == sr.ssrc) {
                        r.on_sender_report(now, sr.ntp_timestamp);
                    }
                    sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => rr.reports,
                RtcpPacket::Bye(bye) => {
                    if remote_ssrc.is_none_or(|s| bye.ssrcs.contains(&s)) {
                        let reason = bye.reason.map(|r| String::from_utf8_lossy(&r).into_owned());
                        self.event(RtpEvent::RemoteBye { reason });
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                if let Some(rtt) = rtcp::round_trip_time(block, ntp_now) {
                    self.stats.round_trip = Some(rtt);
                }
            }
        }
        Ok(())
    }

    /// The next 20 ms frame, once per 20 ms (`None` until it is due). The
    /// first call starts the frame clock.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame16k> {
        let frame = Duration::from_millis(u64::from(FRAME_MS));
        let due = *self.next_frame_at.get_or_insert(now);
        if now < due {
            return None;
        }
        self.next_frame_at =
            Some(if now.saturating_duration_since(due) > FRAME_CLOCK_SLACK { now + frame } else { due + frame });
        let mut source = FrameSource::Silence;
        while self.decoded.len() < FRAME_SAMPLES {
            match self.jitter.pop(now) {
                Playout::Packet(packet) => match self.codec.decode(&packet.payload, &mut self.decoded) {
                    Ok(_) => {
                        self.had_audio = true;
                        self.empty_frames = 0;
                        if source != FrameSource::Concealed {
                            source = FrameSource::Decoded;
                        }
                    }
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        self.conceal_packet();
                        source = FrameSource::Concealed;
                    }
                },
                Playout::Conceal => {
                    self.conceal_packet();
                    source = FrameSource::Concealed;
                }
                Playout::Empty => {
                    let missing = FRAME_SAMPLES - self.decoded.len();
                    // Bridge a short underrun after audio; after an event or
                    // comfort noise the sender paused on purpose: silence.
                    if self.had_audio && self.last_packet_audio && self.empty_frames < UNDERRUN_CONCEAL_FRAMES {
                        let samples = missing.div_ceil(80) * 80;
                        if self.codec.conceal(samples, None, &mut self.decoded).is_err() {
                            self.decoded.resize(self.decoded.len() + missing, 0.0);
                        }
                        source = FrameSource::Concealed;
                    } else {
                        self.decoded.resize(self.decoded.len() + missing, 0.0);
                        if source == FrameSource::Silence {
                            self.had_audio = false;
                        }
                    }
                    self.empty_frames += 1;
                    break;
                }
            }
        }
        let mut samples = [0.0f32; FRAME_SAMPLES];
        samples.copy_from_slice(&self.decoded[..FRAME_SAMPLES]);
        self.decoded.drain(..FRAME_SAMPLES);
        match source {
            FrameSource::Concealed => self.stats.concealed_frames += 1,
            FrameSource::Silence => self.stats.silence_frames += 1,
            FrameSource::Decoded => {}
        }
        Some(Frame16k { samples, source })
    }

    /// Conceals one packet interval (as measured by the jitter buffer).
    fn conceal_packet(&mut self) {
        let duration = self.jitter.packet_duration();
        let samples = ((duration.as_secs_f64() * f64::from(ENGINE_RATE) / 80.0).round() as usize).clamp(1, 24) * 80;
        let next = self.jitter.peek_next_payload().map(<[u8]>::to_vec);
        if self.codec.conceal(samples, next.as_deref(), &mut self.decoded).is_err() {
            self.decoded.resize(self.decoded.len() + samples, 0.0);
        }
    }

    fn current_tick(&self, now: Instant, epoch: Instant) -> u64 {
        (now.saturating_duration_since(epoch).as_nanos() / self.packet_interval.as_nanos().max(1)) as u64
    }

    fn tick_time(&self, epoch: Instant, tick: u64) -> Instant {
        epoch + Duration::from_nanos((self.packet_interval.as_nanos() as u64).saturating_mul(tick))
    }

    fn can_send(&self) -> bool {
        self.direction.sends() && self.remote_rtp.is_some()
    }

    /// Queues 16 kHz audio (whole 20 ms frames) for sending; packets leave
    /// at the packet interval (see [`RtpSession::poll_output`]). Dropped
    /// silently while on hold or without a remote address.
    pub fn send_frame(&mut self, now: Instant, samples: &[f32]) -> Result<(), SessionError> {
        if samples.is_empty() || !samples.len().is_multiple_of(FRAME_SAMPLES) {
            return Err(SessionError::FrameLength { got: samples.len() });
        }
        if !self.can_send() {
            return Ok(());
        }
        let epoch = *self.send_epoch.get_or_insert(now);
        if self.send_queue.is_empty() {
            // Idle until now: start at the current tick (timestamps jump
            // over the silence, marker set because the tick is not adjacent).
            self.next_tick = self.next_tick.max(self.current_tick(now, epoch));
        }
        self.send_queue.extend_from_slice(samples);
        let cap = FRAME_SAMPLES * self.config.send_queue_frames.max(1);
        if self.send_queue.len() > cap {
            let excess = self.send_queue.len() - cap;
            let excess = excess.div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
            self.send_queue.drain(..excess.min(self.send_queue.len()));
            self.stats.send_queue_dropped += (excess / FRAME_SAMPLES) as u64;
        }
        self.pump_send(now)
    }

    /// Queues a DTMF digit (RFC 4733) to replace audio for `duration`.
    pub fn send_dtmf(&mut self, now: Instant, digit: char, duration: Duration) -> Result<(), SessionError> {
        if self.config.dtmf_payload_type.is_none() {
            return Err(SessionError::NoDtmfPayloadType);
        }
        super::dtmf::digit_to_event(digit)?;
        if !self.can_send() {
            return Ok(());
        }
        let epoch = *self.send_epoch.get_or_insert(now);
        if self.send_queue.is_empty() && self.dtmf_active.is_none() && self.dtmf_pending.is_empty() {
            self.next_tick = self.next_tick.max(self.current_tick(now, epoch));
        }
        self.dtmf_pending.push_back((digit, duration));
        self.pump_send(now)
    }

    fn pump_send(&mut self, now: Instant) -> Result<(), SessionError> {
        let Some(epoch) = self.send_epoch else { return Ok(()) };
        if !self.can_send() {
            return Ok(());
        }
        loop {
            let tick_at = self.tick_time(epoch, self.next_tick);
            if tick_at > now {
                break;
            }
            let dtmf_ready =
                self.dtmf_active.is_some() || (!self.dtmf_pending.is_empty() && self.next_tick >= self.dtmf_not_before);
            let full = self.send_queue.len() >= self.samples_per_packet;
            // A partial packet whose interval has passed is padded and sent.
            let stale_partial = !self.send_queue.is_empty() && tick_at + self.packet_interval <= now;
            if dtmf_ready {
                self.send_dtmf_tick()?;
                let used = self.samples_per_packet.min(self.send_queue.len());
                self.send_queue.drain(..used);
            } else if full || stale_partial {
                self.send_audio_tick()?;
            } else if self.send_queue.is_empty()
                && !self.dtmf_pending.is_empty()
                && self.next_tick < self.dtmf_not_before
            {
                // Idle pause between digits: skip to when the next may start.
                self.next_tick = self.dtmf_not_before;
                continue;
            } else {
                break;
            }
            self.next_tick += 1;
        }
        Ok(())
    }

    fn timestamp_at_tick(&self, tick: u64) -> u32 {
        self.timestamp_base.wrapping_add((tick as u32).wrapping_mul(self.rtp_units_per_packet))
    }

    fn transmit_rtp(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        payload_len: usize,
    ) -> Result<(), SessionError> {
        let Some(to) = self.remote_rtp else { return Ok(()) };
        let packet = RtpPacket::new(
            payload_type,
            self.sequence,
            timestamp,
            self.ssrc,
            marker,
            &self.scratch_payload[..payload_len],
        );
        let mut data = Vec::with_capacity(packet.len());
        packet.write(&mut data)?;
        self.sequence = self.sequence.wrapping_add(1);
        self.stats.packets_out += 1;
        self.stats.bytes_out += data.len() as u64;
        self.octets_out += payload_len as u64;
        self.sent_since_report = true;
        self.outputs.push_back(RtpOutput::Transmit { to, data, rtcp: false });
        Ok(())
    }

    fn send_audio_tick(&mut self) -> Result<(), SessionError> {
        let take = self.samples_per_packet.min(self.send_queue.len());
        self.scratch_samples.clear();
        self.scratch_samples.extend(self.send_queue.drain(..take));
        self.scratch_samples.resize(self.samples_per_packet, 0.0);
        self.scratch_payload.clear();
        self.codec.encode(&self.scratch_samples, &mut self.scratch_payload)?;
        let tick = self.next_tick;
        let marker = self.force_marker || self.last_sent_tick.is_none_or(|last| last + 1 != tick);
        self.force_marker = false;
        self.last_sent_tick = Some(tick);
        let len = self.scratch_payload.len();
        self.transmit_rtp(self.config.codec.payload_type, self.timestamp_at_tick(tick), marker, len)
    }

    fn send_dtmf_tick(&mut self) -> Result<(), SessionError> {
        let Some(pt) = self.config.dtmf_payload_type else { return Ok(()) };
        if self.dtmf_active.is_none() {
            let Some((digit, duration)) = self.dtmf_pending.pop_front() else { return Ok(()) };
            let sender = DtmfSender::new(digit, duration, self.config.codec.clock_rate, self.rtp_units_per_packet)?;
            self.dtmf_active = Some((sender, self.timestamp_at_tick(self.next_tick)));
        }
        let Some((sender, event_timestamp)) = &mut self.dtmf_active else { return Ok(()) };
        let event_timestamp = *event_timestamp;
        let packets = sender.next_interval();
        let done = sender.is_done();
        for p in packets {
            self.scratch_payload.clear();
            self.scratch_payload.extend_from_slice(&p.payload);
            self.transmit_rtp(pt, event_timestamp, p.marker, 4)?;
        }
        self.last_sent_tick = Some(self.next_tick);
        if done {
            self.dtmf_active = None;
            self.dtmf_not_before = self.next_tick + 1 + DTMF_GAP_TICKS;
            self.force_marker = true;
        }
        Ok(())
    }

    fn report_packets(&mut self, now: Instant) -> Vec<RtcpPacket> {
        let reports: Vec<_> = self.receiver.as_mut().map(|r| r.report_block(now)).into_iter().collect();
        let first = if self.sent_since_report {
            let elapsed = self.send_epoch.map_or(Duration::ZERO, |e| now.saturating_duration_since(e));
            let units = (elapsed.as_secs_f64() * f64::from(self.config.codec.clock_rate)) as u64;
            RtcpPacket::SenderReport(SenderReport {
                ssrc: self.ssrc,
                ntp_timestamp: self.ntp_now(now),
                rtp_timestamp: self.timestamp_base.wrapping_add(units as u32),
                packet_count: self.stats.packets_out as u32,
                octet_count: self.octets_out as u32,
                reports,
            })
        } else {
            RtcpPacket::ReceiverReport(ReceiverReport { ssrc: self.ssrc, reports })
        };
        self.sent_since_report = false;
        let sdes = RtcpPacket::SourceDescription(vec![SdesChunk {
            ssrc: self.ssrc,
            items: vec![(rtcp::SDES_CNAME, self.config.cname.as_bytes().iter().copied().take(255).collect())],
        }]);
        vec![first, sdes]
    }

    fn transmit_rtcp(&mut self, packets: &[RtcpPacket]) -> Result<(), SessionError> {
        let Some(to) = self.rtcp_destination() else { return Ok(()) };
        let mut data = Vec::with_capacity(128);
        rtcp::write_compound(packets, &mut data)?;
        self.outputs.push_back(RtpOutput::Transmit { to, data, rtcp: true });
        Ok(())
    }

    /// Runs timers: paced sending, RTCP, DTMF end timeouts, inactivity.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        self.pump_send(now)?;
        if let Some(d) = self.dtmf_in.handle_timeout(now) {
            self.stats.dtmf_received += 1;
            self.event(RtpEvent::Dtmf { digit: d.digit, duration_ms: d.duration.as_millis() as u32 });
        }
        if let Some(deadline) = self.inactivity_deadline() {
            if now >= deadline {
                self.inactive_reported = true;
                self.event(RtpEvent::Inactive { silent_for: now.saturating_duration_since(self.last_rtp_at) });
            }
        }
        if now >= self.next_rtcp_at && !self.bye_sent {
            let packets = self.report_packets(now);
            self.transmit_rtcp(&packets)?;
            self.next_rtcp_at = now + self.rtcp_delay();
        }
        Ok(())
    }

    fn inactivity_deadline(&self) -> Option<Instant> {
        (self.direction == Direction::SendRecv && !self.inactive_reported && !self.bye_sent)
            .then(|| self.last_rtp_at + self.config.inactivity_timeout)
    }

    /// The earliest time [`RtpSession::handle_timeout`] (or
    /// [`RtpSession::poll_frame`]) has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest = (!self.bye_sent).then_some(self.next_rtcp_at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e: Instant| e.min(t)));
            }
        };
        consider(self.inactivity_deadline());
        consider(self.dtmf_in.poll_timeout());
        consider(self.next_frame_at);
        if let Some(epoch) = self.send_epoch {
            let pending = !self.send_queue.is_empty() || self.dtmf_active.is_some() || !self.dtmf_pending.is_empty();
            if pending && self.can_send() {
                let tick = if self.dtmf_active.is_none() && self.send_queue.is_empty() {
                    self.next_tick.max(self.dtmf_not_before)
                } else {
                    self.next_tick
                };
                consider(Some(self.tick_time(epoch, tick)));
            }
        }
        earliest
    }

    /// Next datagram or event.
    pub fn poll_output(&mut self) -> Option<RtpOutput> {
        self.outputs.pop_front()
    }

    /// Ends the session: a final report with BYE (RFC 3550 §6.6). Timers
    /// stop; further calls are harmless.
    pub fn close(&mut self, now: Instant, reason: Option<&str>) -> Result<(), SessionError> {
        if self.bye_sent {
            return Ok(());
        }
        let mut packets = self.report_packets(now);
        packets.push(RtcpPacket::Bye(Bye {
            ssrcs: vec![self.ssrc],
            reason: reason.map(|r| r.as_bytes().iter().copied().take(255).collect()),
        }));
        self.bye_sent = true;
        self.send_queue.clear();
        self.dtmf_pending.clear();
        self.dtmf_active = None;
        self.transmit_rtcp(&packets)
    }

    /// Counters and state.
    pub fn stats(&self) -> RtpStats {
        let mut stats = self.stats.clone();
        let jb = self.jitter.stats();
        stats.late = jb.late;
        stats.duplicates = jb.duplicates;
        stats.discarded = jb.discarded;
        stats.playout_delay_ms = self.jitter.target_delay().as_secs_f64() * 1_000.0;
        if let Some(r) = &self.receiver {
            stats.lost = r.cumulative_lost();
            stats.jitter_ms = r.jitter().as_secs_f64() * 1_000.0;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::CodecKind;
    use crate::proto::rtp::dtmf::TelephoneEvent;

    const CARRIER: &str = "203.0.113.5:30000";
    const NAT: &str = "198.51.100.1:4000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn config(kind: CodecKind, seed: u64) -> RtpSessionConfig {
        let payload_type = kind.static_payload_type().unwrap_or(111);
        RtpSessionConfig {
            codec: NegotiatedCodec {
                kind,
                payload_type,
                clock_rate: kind.rtp_clock_rate(),
                channels: kind.rtpmap_channels(),
            },
            dtmf_payload_type: Some(101),
            remote_rtp: Some(addr(CARRIER)),
            remote_rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            ptime_ms: 20,
            symmetric_latching: true,
            inactivity_timeout: Duration::from_secs(10),
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(5),
            seed,
            cname: "edge@test".into(),
            ntp_at_start: 0x0000_1000_0000_0000,
            opus: OpusConfig::default(),
            send_queue_frames: 50,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn tone(frame: usize) -> Vec<f32> {
        (0..FRAME_SAMPLES)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (frame * FRAME_SAMPLES + i) as f32 / 16_000.0).sin())
            .collect()
    }

    type Sent = Vec<(SocketAddr, Vec<u8>, bool)>;

    fn drain(session: &mut RtpSession) -> (Sent, Vec<RtpEvent>) {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        while let Some(out) = session.poll_output() {
            match out {
                RtpOutput::Transmit { to, data, rtcp } => sent.push((to, data, rtcp)),
                RtpOutput::Event(e) => events.push(e),
            }
        }
        (sent, events)
    }

    fn rtp_only(sent: &[(SocketAddr, Vec<u8>, bool)]) -> Vec<RtpPacket<'_>> {
        sent.iter().filter(|(_, _, rtcp)| !rtcp).map(|(_, d, _)| RtpPacket::parse(d).unwrap()).collect()
    }

    #[test]
    fn seeded_identity_is_deterministic() {
        let t0 = Instant::now();
        let a = RtpSession::new(config(CodecKind::Pcmu, 7), t0).unwrap();
        let b = RtpSession::new(config(CodecKind::Pcmu, 7), t0).unwrap();
        let c = RtpSession::new(config(CodecKind::Pcmu, 8), t0).unwrap();
        assert_eq!((a.ssrc(), a.sequence, a.timestamp_base), (b.ssrc(), b.sequence, b.timestamp_base));
        assert_ne!(a.ssrc(), c.ssrc());
        assert_eq!(a.poll_timeout(), b.poll_timeout());
    }

    #[test]
    fn loopback_pcmu_sends_paced_packets_and_decodes_frames() {
        let t0 = Instant::now();
        let mut tx = RtpSession::new(config(CodecKind::Pcmu, 1), t0).unwrap();
        let mut rx = RtpSession::new(config(CodecKind::Pcmu, 2), t0).unwrap();
        let mut frames = Vec::new();
        let mut all_sent = Vec::new();
        for i in 0..60u64 {
            let now = ms(t0, i * 20);
            if i < 50 {
                tx.send_frame(now, &tone(i as usize)).unwrap();
            }
            tx.handle_timeout(now).unwrap();
            let (sent, _) = drain(&mut tx);
            for (to, data, rtcp) in &sent {
                if !rtcp {
                    assert_eq!(*to, addr(CARRIER));
                    rx.handle_rtp(now, addr(CARRIER), data).unwrap();
                }
            }
            all_sent.extend(sent);
            if let Some(f) = rx.poll_frame(now) {
                frames.push(f);
            }
            assert!(rx.poll_frame(now).is_none(), "at most one frame per 20 ms");
        }
        let packets = rtp_only(&all_sent);
        assert_eq!(packets.len(), 50);
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        for pair in packets.windows(2) {
            assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
            assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(160));
            assert_eq!(pair[1].payload.len(), 160);
        }
        assert_eq!(frames.len(), 60);
        assert_eq!(frames[0].source, FrameSource::Silence, "jitter buffer still priming");
        let decoded = frames.iter().filter(|f| f.source == FrameSource::Decoded).count();
        assert!(decoded >= 45, "only {decoded} decoded frames");
        let energy: f32 =
            frames.iter().filter(|f| f.source == FrameSource::Decoded).flat_map(|f| f.samples).map(|x| x * x).sum();
        assert!(energy > 100.0, "decoded audio is silent");
        let stats = rx.stats();
        assert_eq!(stats.packets_in, 50);
        assert_eq!(stats.lost, 0);
        assert!(stats.jitter_ms < 1.0);
    }

    #[test]
    fn timestamps_continue_across_silence_with_a_marker() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 3), t0).unwrap();
        for i in 0..3u64 {
            s.send_frame(ms(t0, i * 20), &tone(0)).unwrap();
        }
        // 200 ms of nothing, then more audio.
        s.send_frame(ms(t0, 260), &tone(0)).unwrap();
        s.send_frame(ms(t0, 280), &tone(0)).unwrap();
        let (sent, _) = drain(&mut s);
        let p = rtp_only(&sent);
        assert_eq!(p.len(), 5);
        assert_eq!(p[3].sequence, p[2].sequence.wrapping_add(1), "sequence has no gap");
        assert_eq!(p[3].timestamp.wrapping_sub(p[0].timestamp), 13 * 160, "timestamp tracks time");
        assert_eq!(p.iter().map(|p| p.marker).collect::<Vec<_>>(), vec![true, false, false, true, false]);
    }

    #[test]
    fn frames_handed_over_early_are_paced_at_the_packet_interval() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 3), t0).unwrap();
        for i in 0..5 {
            s.send_frame(t0, &tone(i)).unwrap();
        }
        assert_eq!(rtp_only(&drain(&mut s).0).len(), 1, "only the first leaves at once");
        assert_eq!(s.poll_timeout(), Some(ms(t0, 20)));
        s.handle_timeout(ms(t0, 45)).unwrap();
        assert_eq!(rtp_only(&drain(&mut s).0).len(), 2);
        s.handle_timeout(ms(t0, 80)).unwrap();
        let rest = drain(&mut s).0;
        let rest = rtp_only(&rest);
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().all(|p| !p.marker));
    }

    #[test]
    fn forty_ms_ptime_packs_two_frames_per_packet() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(RtpSessionConfig { ptime_ms: 40, ..config(CodecKind::Pcma, 4) }, t0).unwrap();
        s.send_frame(t0, &tone(0)).unwrap();
        assert!(drain(&mut s).0.is_empty(), "half a packet waits");
        s.send_frame(ms(t0, 20), &tone(1)).unwrap();
        s.send_frame(ms(t0, 40), &tone(2)).unwrap();
        s.send_frame(ms(t0, 60), &tone(3)).unwrap();
        s.handle_timeout(ms(t0, 60)).unwrap();
        let sent = drain(&mut s).0;
        let p = rtp_only(&sent);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].payload.len(), 320);
        assert_eq!(p[1].timestamp.wrapping_sub(p[0].timestamp), 320);
    }

    #[test]
    fn latches_to_the_real_source_and_drops_others() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 5), t0).unwrap();
        let wrong_pt = {
            let mut v = Vec::new();
            RtpPacket::new(96, 1, 0, 9, false, &[0; 160]).write(&mut v).unwrap();
            v
        };
        s.handle_rtp(t0, addr("192.0.2.66:5000"), &wrong_pt).unwrap();
        assert_eq!(s.rtp_destination(), Some(addr(CARRIER)), "unexpected payload type must not latch");
        let mut good = Vec::new();
        RtpPacket::new(0, 1, 0, 9, true, &[0xFF; 160]).write(&mut good).unwrap();
        s.handle_rtp(t0, addr(NAT), &good).unwrap();
        let (_, events) = drain(&mut s);
        assert_eq!(events, vec![RtpEvent::Latched { from: addr(NAT) }]);
        assert_eq!(s.stats().latched, Some(addr(NAT)));
        s.handle_rtp(t0, addr("192.0.2.99:7000"), &good).unwrap();
        assert_eq!(s.stats().foreign_dropped, 1);
        assert_eq!(s.stats().unknown_payload_type, 1);
        s.send_frame(ms(t0, 20), &tone(0)).unwrap();
        let (sent, _) = drain(&mut s);
        assert_eq!(sent[0].0, addr(NAT), "media goes where it comes from");
        // RTCP latches to its own source.
        let mut rr = Vec::new();
        RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 9, reports: vec![] }).write(&mut rr).unwrap();
        s.handle_rtcp(t0, addr("198.51.100.1:4001"), &rr).unwrap();
        s.handle_timeout(ms(t0, 10_000)).unwrap();
        let (sent, _) = drain(&mut s);
        assert!(sent.iter().any(|(to, _, rtcp)| *rtcp && *to == addr("198.51.100.1:4001")));
    }

    #[test]
    fn inactivity_fires_once_and_not_on_hold() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 6), t0).unwrap();
        s.handle_timeout(ms(t0, 9_000)).unwrap();
        assert!(!drain(&mut s).1.iter().any(|e| matches!(e, RtpEvent::Inactive { .. })));
        s.handle_timeout(ms(t0, 10_000)).unwrap();
        let events = drain(&mut s).1;
        assert!(events.contains(&RtpEvent::Inactive { silent_for: Duration::from_secs(10) }), "{events:?}");
        s.handle_timeout(ms(t0, 20_000)).unwrap();
        assert!(!drain(&mut s).1.iter().any(|e| matches!(e, RtpEvent::Inactive { .. })), "reported twice");

        let mut held = RtpSession::new(config(CodecKind::Pcmu, 6), t0).unwrap();
        held.set_direction(t0, Direction::RecvOnly);
        held.send_frame(t0, &tone(0)).unwrap();
        held.handle_timeout(ms(t0, 60_000)).unwrap();
        let (sent, events) = drain(&mut held);
        assert!(rtp_only(&sent).is_empty(), "sent audio while on hold");
        assert!(!events.iter().any(|e| matches!(e, RtpEvent::Inactive { .. })));
        // Resume re-arms the timer from the resume time.
        held.set_direction(ms(t0, 60_000), Direction::SendRecv);
        held.handle_timeout(ms(t0, 65_000)).unwrap();
        assert!(!drain(&mut held).1.iter().any(|e| matches!(e, RtpEvent::Inactive { .. })));
        held.send_frame(ms(t0, 65_000), &tone(0)).unwrap();
        assert_eq!(rtp_only(&drain(&mut held).0).len(), 1);
        held.handle_timeout(ms(t0, 70_000)).unwrap();
        assert!(drain(&mut held).1.iter().any(|e| matches!(e, RtpEvent::Inactive { .. })));
    }

    #[test]
    fn no_remote_address_means_nothing_is_sent() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(RtpSessionConfig { remote_rtp: None, ..config(CodecKind::Pcmu, 6) }, t0).unwrap();
        s.send_frame(t0, &tone(0)).unwrap();
        s.handle_timeout(ms(t0, 5_000)).unwrap();
        assert!(drain(&mut s).0.is_empty());
        s.set_remote(ms(t0, 5_000), Some(addr(CARRIER)), None);
        s.send_frame(ms(t0, 5_000), &tone(0)).unwrap();
        assert_eq!(drain(&mut s).0.len(), 1);
    }

    #[test]
    fn rtcp_reports_follow_the_randomised_schedule() {
        let t0 = Instant::now();
        let quiet = RtpSessionConfig { inactivity_timeout: Duration::from_secs(3_600), ..config(CodecKind::Pcmu, 11) };
        let mut s = RtpSession::new(quiet, t0).unwrap();
        let first = s.poll_timeout().unwrap().duration_since(t0).as_secs_f64();
        // Half of 5 s * U(0.5, 1.5) / 1.218.
        assert!((1.02..=3.08).contains(&first), "first report after {first} s");
        let mut times = Vec::new();
        let mut now = t0;
        for _ in 0..20 {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now).unwrap();
            let (sent, _) = drain(&mut s);
            let rtcp: Vec<_> = sent.iter().filter(|(_, _, r)| *r).collect();
            assert_eq!(rtcp.len(), 1);
            assert_eq!(rtcp[0].0, addr("203.0.113.5:30001"), "RTCP on port + 1");
            let packets = rtcp::parse_compound(&rtcp[0].1).unwrap();
            assert!(matches!(packets[0], RtcpPacket::ReceiverReport(_)), "nothing sent: RR");
            let RtcpPacket::SourceDescription(chunks) = &packets[1] else { panic!("no SDES") };
            assert_eq!(chunks[0].cname(), Some("edge@test"));
            times.push(now);
        }
        let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.iter().all(|g| (2.05..=6.16).contains(g)), "{gaps:?}");
        let spread = gaps.iter().cloned().fold(f64::MIN, f64::max) - gaps.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.5, "intervals are not randomised: {gaps:?}");
        // After sending audio the report is an SR with our counts.
        s.send_frame(now, &tone(0)).unwrap();
        let next = s.poll_timeout().unwrap();
        s.handle_timeout(next).unwrap();
        let (sent, _) = drain(&mut s);
        let (_, data, _) = sent.iter().find(|(_, _, r)| *r).unwrap();
        let RtcpPacket::SenderReport(sr) = &rtcp::parse_compound(data).unwrap()[0] else { panic!("expected SR") };
        assert_eq!((sr.packet_count, sr.octet_count, sr.ssrc), (1, 160, s.ssrc()));
    }

    #[test]
    fn rtcp_exchange_gives_lsr_rtt_and_remote_bye() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 12), t0).unwrap();
        let mut media = Vec::new();
        RtpPacket::new(0, 500, 0, 77, true, &[0xFF; 160]).write(&mut media).unwrap();
        s.handle_rtp(t0, addr(CARRIER), &media).unwrap();
        // The remote's SR: our next RR must echo its NTP middle bits.
        let sr = RtcpPacket::SenderReport(SenderReport {
            ssrc: 77,
            ntp_timestamp: 0xAAAA_BBBB_CCCC_DDDD,
            rtp_timestamp: 0,
            packet_count: 1,
            octet_count: 160,
            reports: vec![],
        });
        let mut bytes = Vec::new();
        sr.write(&mut bytes).unwrap();
        s.handle_rtcp(ms(t0, 100), addr("203.0.113.5:30001"), &bytes).unwrap();
        let at = s.poll_timeout().unwrap();
        s.handle_timeout(at).unwrap();
        let (sent, _) = drain(&mut s);
        let (_, data, _) = sent.iter().find(|(_, _, r)| *r).unwrap();
        let RtcpPacket::ReceiverReport(rr) = &rtcp::parse_compound(data).unwrap()[0] else { panic!() };
        assert_eq!(rr.reports[0].ssrc, 77);
        assert_eq!(rr.reports[0].last_sr, 0xBBBB_CCCC);
        let dlsr = rtcp::from_compact(rr.reports[0].delay_since_last_sr);
        assert!((dlsr.as_secs_f64() - (at - ms(t0, 100)).as_secs_f64()).abs() < 0.001);
        // A report about us: LSR = our NTP at 1 s, DLSR 200 ms, arriving at 1.5 s -> RTT 300 ms.
        let our_ntp_at_1s = rtcp::ntp_add(0x0000_1000_0000_0000, Duration::from_secs(1));
        let block = rtcp::ReportBlock {
            ssrc: s.ssrc(),
            last_sr: rtcp::ntp_middle(our_ntp_at_1s),
            delay_since_last_sr: rtcp::to_compact(Duration::from_millis(200)),
            ..rtcp::ReportBlock::default()
        };
        let mut bytes = Vec::new();
        RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 77, reports: vec![block] }).write(&mut bytes).unwrap();
        s.handle_rtcp(ms(t0, 1_500), addr("203.0.113.5:30001"), &bytes).unwrap();
        let rtt = s.stats().round_trip.unwrap();
        assert!((rtt.as_secs_f64() - 0.3).abs() < 0.001, "{rtt:?}");
        let mut bye = Vec::new();
        RtcpPacket::Bye(Bye { ssrcs: vec![77], reason: Some(b"hangup".to_vec()) }).write(&mut bye).unwrap();
        s.handle_rtcp(ms(t0, 2_000), addr("203.0.113.5:30001"), &bye).unwrap();
        assert_eq!(drain(&mut s).1, vec![RtpEvent::RemoteBye { reason: Some("hangup".into()) }]);
    }

    #[test]
    fn received_dtmf_is_reported_once_and_does_not_cause_concealment() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 13), t0).unwrap();
        // (arrival ms, payload type, timestamp, marker, payload): 5 audio
        // packets, a digit (3 updates, 3 end packets), 5 more audio packets;
        // audio is suppressed during the event as senders usually do.
        let mut schedule: Vec<(u64, u8, u32, bool, Vec<u8>)> = Vec::new();
        for i in 0..5u32 {
            schedule.push((u64::from(i) * 20, 0, i * 160, i == 0, vec![0xFF; 160]));
        }
        let digit_ts = 5 * 160;
        for (i, d) in [160u16, 320, 480].iter().enumerate() {
            let e = TelephoneEvent { event: 9, end: false, volume: 10, duration: *d };
            schedule.push((100 + i as u64 * 20, 101, digit_ts, i == 0, e.to_bytes().to_vec()));
        }
        let end = TelephoneEvent { event: 9, end: true, volume: 10, duration: 640 };
        for _ in 0..3 {
            schedule.push((160, 101, digit_ts, false, end.to_bytes().to_vec()));
        }
        for i in 0..5u32 {
            schedule.push((180 + u64::from(i) * 20, 0, 9 * 160 + i * 160, i == 0, vec![0xFF; 160]));
        }
        let mut seq = 100u16;
        let mut pending = schedule.into_iter().peekable();
        let mut sources = Vec::new();
        for step in 0..=14u64 {
            let now = ms(t0, step * 20);
            while let Some((_, pt, ts, marker, payload)) = pending.next_if(|p| p.0 <= step * 20) {
                let mut v = Vec::new();
                RtpPacket::new(pt, seq, ts, 55, marker, &payload).write(&mut v).unwrap();
                seq = seq.wrapping_add(1);
                s.handle_rtp(now, addr(CARRIER), &v).unwrap();
            }
            sources.extend(s.poll_frame(now).map(|f| f.source));
        }
        let events = drain(&mut s).1;
        assert_eq!(events, vec![RtpEvent::Dtmf { digit: '9', duration_ms: 80 }]);
        assert!(!sources.contains(&FrameSource::Concealed), "{sources:?}");
        assert!(sources.iter().filter(|s| **s == FrameSource::Decoded).count() >= 8, "{sources:?}");
        assert_eq!(s.stats().dtmf_received, 1);
    }

    #[test]
    fn sent_dtmf_replaces_audio_then_audio_resumes_with_a_marker() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 14), t0).unwrap();
        assert!(matches!(s.send_dtmf(t0, 'x', Duration::from_millis(100)), Err(SessionError::Dtmf(_))));
        s.send_frame(t0, &tone(0)).unwrap();
        s.send_dtmf(ms(t0, 20), '5', Duration::from_millis(60)).unwrap();
        let mut all = Vec::new();
        for i in 1..12u64 {
            let now = ms(t0, i * 20);
            s.send_frame(now, &tone(i as usize)).unwrap();
            s.handle_timeout(now).unwrap();
            all.extend(drain(&mut s).0);
        }
        let p = rtp_only(&all);
        let kinds: Vec<u8> = p.iter().map(|p| p.payload_type).collect();
        // Audio at t=0, then 3 intervals of event (the last with 3 end packets), then audio.
        assert_eq!(&kinds[..7], &[0, 101, 101, 101, 101, 101, 0], "{kinds:?}");
        let events: Vec<_> = p.iter().filter(|p| p.payload_type == 101).collect();
        assert!(events[0].marker);
        assert!(events.iter().all(|e| e.timestamp == events[0].timestamp));
        assert_eq!(events[0].timestamp.wrapping_sub(p[0].timestamp), 160);
        assert!(TelephoneEvent::parse(events[4].payload).unwrap().end);
        assert!(p[6].marker, "audio after an event starts a talkspurt");
        assert_eq!(p[6].timestamp.wrapping_sub(p[0].timestamp), 4 * 160);
        for pair in p.windows(2) {
            assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        }
        let mut no_dtmf =
            RtpSession::new(RtpSessionConfig { dtmf_payload_type: None, ..config(CodecKind::Pcmu, 1) }, t0).unwrap();
        assert!(matches!(no_dtmf.send_dtmf(t0, '1', Duration::from_millis(100)), Err(SessionError::NoDtmfPayloadType)));
    }

    #[test]
    fn queued_digits_are_separate_events_with_a_pause() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 16), t0).unwrap();
        s.send_dtmf(t0, '1', Duration::from_millis(40)).unwrap();
        s.send_dtmf(t0, '2', Duration::from_millis(40)).unwrap();
        let mut all = Vec::new();
        let mut now = t0;
        while let Some(next) = s.poll_timeout().filter(|t| *t < ms(t0, 400)) {
            now = next.max(now);
            s.handle_timeout(now).unwrap();
            all.extend(drain(&mut s).0);
        }
        let p = rtp_only(&all);
        assert!(p.iter().all(|p| p.payload_type == 101));
        let digits: Vec<u8> = p.iter().map(|p| p.payload[0]).collect();
        assert_eq!(digits, vec![1, 1, 1, 1, 2, 2, 2, 2], "one update and three ends each");
        assert_ne!(p[0].timestamp, p[4].timestamp);
        // Event 1 starts at tick 0 and ends at tick 1; event 2 waits 3 idle ticks.
        assert_eq!(p[4].timestamp.wrapping_sub(p[0].timestamp), 5 * 160);
        assert!(p[0].marker && p[4].marker);
    }

    #[test]
    fn ssrc_change_is_reported_and_loss_is_concealed() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(config(CodecKind::Pcmu, 15), t0).unwrap();
        for seq in [1u16, 2, 4, 5, 6] {
            let mut v = Vec::new();
            RtpPacket::new(0, seq, u32::from(seq) * 160, 1, false, &[0x80; 160]).write(&mut v).unwrap();
            s.handle_rtp(ms(t0, u64::from(seq) * 20), addr(CARRIER), &v).unwrap();
        }
        let sources: Vec<_> = (0..6).filter_map(|i| s.poll_frame(ms(t0, 140 + i * 20))).map(|f| f.source).collect();
        assert!(sources.contains(&FrameSource::Concealed), "{sources:?}");
        assert_eq!(s.stats().lost, 1);
        let mut v = Vec::new();
        RtpPacket::new(0, 9_000, 0, 2, true, &[0x80; 160]).write(&mut v).unwrap();
        s.handle_rtp(ms(t0, 300), addr(CARRIER), &v).unwrap();
        assert!(drain(&mut s).1.contains(&RtpEvent::SsrcChanged { old: 1, new: 2 }));
    }

    #[test]
    fn opus_loopback_decodes_at_16k_with_48k_timestamps() {
        let t0 = Instant::now();
        let mut tx = RtpSession::new(config(CodecKind::Opus, 21), t0).unwrap();
        let mut rx = RtpSession::new(config(CodecKind::Opus, 22), t0).unwrap();
        let mut decoded = 0;
        let mut timestamps = Vec::new();
        for i in 0..30u64 {
            let now = ms(t0, i * 20);
            tx.send_frame(now, &tone(i as usize)).unwrap();
            for (_, data, rtcp) in drain(&mut tx).0 {
                if !rtcp {
                    timestamps.push(RtpPacket::parse(&data).unwrap().timestamp);
                    rx.handle_rtp(now, addr(CARRIER), &data).unwrap();
                }
            }
            if rx.poll_frame(now).is_some_and(|f| f.source == FrameSource::Decoded) {
                decoded += 1;
            }
        }
        assert!(timestamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960));
        assert!(decoded >= 25, "{decoded} decoded frames");
    }

    #[test]
    fn hostile_datagrams_are_counted_not_panicked() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(RtpSessionConfig { rtcp_mux: true, ..config(CodecKind::Opus, 23) }, t0).unwrap();
        let mut seed = 99u64;
        let mut errors = 0;
        for i in 0..3_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = (seed >> 56) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|j| (seed >> (j % 8 * 8)) as u8 ^ j as u8).collect();
            if i % 2 == 0 && bytes.len() > 2 {
                bytes[0] = 0x80;
                bytes[1] = if i % 4 == 0 { 111 } else { 200 };
            }
            if s.handle_rtp(ms(t0, i), addr(CARRIER), &bytes).is_err() {
                errors += 1;
            }
            let _ = s.handle_rtcp(ms(t0, i), addr(CARRIER), &bytes);
            let _ = s.poll_frame(ms(t0, i * 20));
        }
        assert!(errors > 0);
        assert!(s.stats().malformed >= errors);
    }
}

//! RTCP (RFC 3550 §6): compound packet parsing and building, and the
//! receiver-side statistics that fill a report block.
//!
//! Owns:
//! - [`RtcpPacket`] with SR (§6.4.1), RR (§6.4.2), SDES (§6.5, CNAME and
//!   other items) and BYE (§6.6); other packet types (APP, RTPFB, PSFB, XR)
//!   are skipped as [`RtcpPacket::Other`]. [`parse_compound`] applies the
//!   header validity checks of §A.2 (version 2, lengths adding up exactly,
//!   padding only where announced) but accepts a compound that does not
//!   start with SR/RR, as RFC 5506 reduced-size RTCP allows.
//! - [`ReceiverStats`]: the per-source bookkeeping of Appendix A.1 (sequence
//!   validation, probation, wrap-around cycles), A.3 (expected, cumulative
//!   and fractional loss) and A.8 (interarrival jitter), plus LSR/DLSR
//!   (§6.4.1) for the sender's round-trip estimate.
//! - NTP timestamp helpers (§4): the node supplies the NTP time at a known
//!   `Instant`; nothing here reads a clock.

use std::time::{Duration, Instant};

/// RTCP packet types (RFC 3550 §12.1).
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;

/// SDES item type CNAME (§6.5.1).
pub const SDES_CNAME: u8 = 1;

/// Most packets accepted in one compound.
pub const MAX_PACKETS_PER_COMPOUND: usize = 32;

/// Errors from RTCP parsing and building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Empty datagram.
    #[error("empty RTCP datagram")]
    Empty,
    /// A packet is shorter than its header or its length field says.
    #[error("RTCP packet at offset {offset} truncated")]
    Truncated { offset: usize },
    /// Version is not 2.
    #[error("RTCP version {0} (expected 2)")]
    BadVersion(u8),
    /// A length or count that cannot be right (padding larger than the
    /// packet, report blocks not fitting, SDES items overrunning a chunk).
    #[error("malformed RTCP {packet_type} packet: {reason}")]
    Malformed { packet_type: u8, reason: &'static str },
    /// More packets than [`MAX_PACKETS_PER_COMPOUND`].
    #[error("more than {max} packets in one RTCP compound", max = MAX_PACKETS_PER_COMPOUND)]
    TooManyPackets,
    /// Building: more than 31 report blocks/sources, or text over 255 bytes.
    #[error("cannot build RTCP packet: {0}")]
    Unbuildable(&'static str),
}

/// A reception report block (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed: duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Cycles << 16 | highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (0 = none yet).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// Sender report (§6.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    /// Sender's SSRC.
    pub ssrc: u32,
    /// 64-bit NTP timestamp (32.32 fixed point).
    pub ntp_timestamp: u64,
    /// RTP timestamp for the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
    /// Reception reports.
    pub reports: Vec<ReportBlock>,
}

/// Receiver report (§6.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverReport {
    /// Reporter's SSRC.
    pub ssrc: u32,
    /// Reception reports.
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk (§6.5): a source and its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    /// The described source.
    pub ssrc: u32,
    /// `(item type, value)` pairs, CNAME first when we build them.
    pub items: Vec<(u8, Vec<u8>)>,
}

impl SdesChunk {
    /// The CNAME item as text, if present and UTF-8.
    pub fn cname(&self) -> Option<&str> {
        self.items.iter().find(|(t, _)| *t == SDES_CNAME).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Goodbye (§6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// Sources leaving.
    pub ssrcs: Vec<u32>,
    /// Optional reason text (raw bytes, normally UTF-8).
    pub reason: Option<Vec<u8>>,
}

/// One packet of a compound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR.
    SenderReport(SenderReport),
    /// RR.
    ReceiverReport(ReceiverReport),
    /// SDES.
    SourceDescription(Vec<SdesChunk>),
    /// BYE.
    Bye(Bye),
    /// Any other type, skipped.
    Other {
        /// Packet type byte.
        packet_type: u8,
        /// The 5-bit count/format field.
        count: u8,
    },
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_report_blocks(body: &[u8], count: usize, packet_type: u8) -> Result<Vec<ReportBlock>, RtcpError> {
    if body.len() < 24 * count {
        return Err(RtcpError::Malformed { packet_type, reason: "report blocks overrun the packet" });
    }
    Ok((0..count)
        .map(|i| {
            let b = &body[24 * i..24 * i + 24];
            let lost_raw = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            // Sign-extend the 24-bit field.
            let cumulative_lost = ((lost_raw << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                cumulative_lost,
                extended_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect())
}

fn parse_sdes(body: &[u8], count: usize) -> Result<Vec<SdesChunk>, RtcpError> {
    let malformed = |reason| RtcpError::Malformed { packet_type: PT_SDES, reason };
    let mut chunks = Vec::with_capacity(count.min(31));
    let mut at = 0;
    for _ in 0..count {
        if body.len() < at + 4 {
            return Err(malformed("chunk overruns the packet"));
        }
        let ssrc = be32(body, at);
        at += 4;
        let mut items = Vec::new();
        loop {
            let Some(&item_type) = body.get(at) else {
                return Err(malformed("item list not terminated"));
            };
            if item_type == 0 {
                // End of list: skip to the next 32-bit boundary.
                at = (at + 4) & !3;
                break;
            }
            let Some(&len) = body.get(at + 1) else {
                return Err(malformed("item header truncated"));
            };
            let end = at + 2 + usize::from(len);
            if body.len() < end {
                return Err(malformed("item overruns the packet"));
            }
            if items.len() < 16 {
                items.push((item_type, body[at + 2..end].to_vec()));
            }
            at = end;
        }
        chunks.push(SdesChunk { ssrc, items });
    }
    Ok(chunks)
}

fn parse_bye(body: &[u8], count: usize) -> Result<Bye, RtcpError> {
    if body.len() < 4 * count {
        return Err(RtcpError::Malformed { packet_type: PT_BYE, reason: "SSRC list overruns the packet" });
    }
    let ssrcs = (0..count).map(|i| be32(body, 4 * i)).collect();
    let rest = &body[4 * count..];
    let reason = match rest.first() {
        Some(&len) if len > 0 => {
            let end = 1 + usize::from(len);
            if rest.len() < end {
                return Err(RtcpError::Malformed { packet_type: PT_BYE, reason: "reason overruns the packet" });
            }
            Some(rest[1..end].to_vec())
        }
        _ => None,
    };
    Ok(Bye { ssrcs, reason })
}

/// Parses a compound RTCP datagram into its packets.
pub fn parse_compound(bytes: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if bytes.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        if packets.len() == MAX_PACKETS_PER_COMPOUND {
            return Err(RtcpError::TooManyPackets);
        }
        let rest = &bytes[offset..];
        if rest.len() < 4 {
            return Err(RtcpError::Truncated { offset });
        }
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion(version));
        }
        let has_padding = rest[0] & 0x20 != 0;
        let count = usize::from(rest[0] & 0x1F);
        let packet_type = rest[1];
        let length = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        if rest.len() < length {
            return Err(RtcpError::Truncated { offset });
        }
        let mut body = &rest[4..length];
        if has_padding {
            let pad = usize::from(*body.last().unwrap_or(&0));
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::Malformed { packet_type, reason: "bad padding count" });
            }
            body = &body[..body.len() - pad];
        }
        let packet = match packet_type {
            PT_SR => {
                if body.len() < 24 {
                    return Err(RtcpError::Malformed { packet_type, reason: "sender info truncated" });
                }
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: be32(body, 0),
                    ntp_timestamp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                    reports: parse_report_blocks(&body[24..], count, packet_type)?,
                })
            }
            PT_RR => {
                if body.len() < 4 {
                    return Err(RtcpError::Malformed { packet_type, reason: "SSRC missing" });
                }
                RtcpPacket::ReceiverReport(ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: parse_report_blocks(&body[4..], count, packet_type)?,
                })
            }
            PT_SDES => RtcpPacket::SourceDescription(parse_sdes(body, count)?),
            PT_BYE => RtcpPacket::Bye(parse_bye(body, count)?),
            other => RtcpPacket::Other { packet_type: other, count: count as u8 },
        };
        packets.push(packet);
        offset += length;
    }
    Ok(packets)
}

fn write_header(out: &mut Vec<u8>, count: usize, packet_type: u8, start: usize) {
    // Called after the body is written: pad to 32 bits, then fill the length.
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = (out.len() - start) / 4 - 1;
    out[start] = 0x80 | count as u8;
    out[start + 1] = packet_type;
    out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
}

fn write_report_blocks(out: &mut Vec<u8>, reports: &[ReportBlock]) {
    for r in reports {
        out.extend_from_slice(&r.ssrc.to_be_bytes());
        out.push(r.fraction_lost);
        let lost = r.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&r.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&r.jitter.to_be_bytes());
        out.extend_from_slice(&r.last_sr.to_be_bytes());
        out.extend_from_slice(&r.delay_since_last_sr.to_be_bytes());
    }
}

impl RtcpPacket {
    /// Appends the wire form of this packet to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            RtcpPacket::SenderReport(sr) => {
                if sr.reports.len() > 31 {
                    return Err(RtcpError::Unbuildable("more than 31 report blocks"));
                }
                out.extend_from_slice(&sr.ssrc.to_be_bytes());
                out.extend_from_slice(&sr.ntp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.rtp_timestamp.to_be_bytes());
                out.extend_from_slice(&sr.packet_count.to_be_bytes());
                out.extend_from_slice(&sr.octet_count.to_be_bytes());
                write_report_blocks(out, &sr.reports);
                write_header(out, sr.reports.len(), PT_SR, start);
            }
            RtcpPacket::ReceiverReport(rr) => {
                if rr.reports.len() > 31 {
                    return Err(RtcpError::Unbuildable("more than 31 report blocks"));
                }
                out.extend_from_slice(&rr.ssrc.to_be_bytes());
                write_report_blocks(out, &rr.reports);
                write_header(out, rr.reports.len(), PT_RR, start);
            }
            RtcpPacket::SourceDescription(chunks) => {
                if chunks.len() > 31 {
                    return Err(RtcpError::Unbuildable("more than 31 SDES chunks"));
                }
                for chunk in chunks {
                    out.extend_from_slice(&chunk.ssrc.to_be_bytes());
                    for (item_type, value) in &chunk.items {
                        if value.len() > 255 || *item_type == 0 {
                            return Err(RtcpError::Unbuildable("SDES item over 255 bytes or of type 0"));
                        }
                        out.push(*item_type);
                        out.push(value.len() as u8);
                        out.extend_from_slice(value);
                    }
                    // Null terminator, then pad the chunk to 32 bits.
                    out.push(0);
                    while !(out.len() - start).is_multiple_of(4) {
                        out.push(0);
                    }
                }
                write_header(out, chunks.len(), PT_SDES, start);
            }
            RtcpPacket::Bye(bye) => {
                if bye.ssrcs.len() > 31 {
                    return Err(RtcpError::Unbuildable("more than 31 sources in BYE"));
                }
                for ssrc in &bye.ssrcs {
                    out.extend_from_slice(&ssrc.to_be_bytes());
                }
                if let Some(reason) = &bye.reason {
                    if reason.len() > 255 {
                        return Err(RtcpError::Unbuildable("BYE reason over 255 bytes"));
                    }
                    out.push(reason.len() as u8);
                    out.extend_from_slice(reason);
                }
                write_header(out, bye.ssrcs.len(), PT_BYE, start);
            }
            RtcpPacket::Other { .. } => {
                out.truncate(start);
                return Err(RtcpError::Unbuildable("unknown packet types are only parsed"));
            }
        }
        Ok(())
    }
}

/// Serializes packets into one compound datagram.
pub fn write_compound(packets: &[RtcpPacket], out: &mut Vec<u8>) -> Result<(), RtcpError> {
    for packet in packets {
        packet.write(out)?;
    }
    Ok(())
}

/// NTP time (32.32 fixed point seconds since 1900) `elapsed` after a base.
pub fn ntp_add(base: u64, elapsed: Duration) -> u64 {
    let fraction = (u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000;
    base.wrapping_add(elapsed.as_secs() << 32).wrapping_add(fraction)
}

/// The middle 32 bits of an NTP timestamp (the "compact" form of LSR).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s units (DLSR), saturating.
pub fn to_compact(duration: Duration) -> u32 {
    let units = duration.as_secs_f64() * 65_536.0;
    units.min(f64::from(u32::MAX)) as u32
}

/// A compact (1/65536 s) value as a duration.
pub fn from_compact(units: u32) -> Duration {
    Duration::from_secs_f64(f64::from(units) / 65_536.0)
}

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// Reception statistics for one remote source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    epoch: Instant,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    transit: Option<i32>,
    jitter: f64,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    /// Starts tracking `ssrc` from its first packet `seq` (A.1: the source is
    /// on probation until `MIN_SEQUENTIAL` packets arrive in sequence).
    pub fn new(ssrc: u32, seq: u16, clock_rate: u32, now: Instant) -> Self {
        let mut stats = ReceiverStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            epoch: now,
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            last_sr: None,
        };
        stats.init_seq(seq);
        stats.max_seq = seq.wrapping_sub(1);
        stats
    }

    /// The tracked source.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq`: returns whether the packet counts as valid.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the source restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // else: duplicate or reordered packet, counted.
        self.received = self.received.wrapping_add(1);
        true
    }

    /// Records one packet's arrival. `audio` packets also update jitter
    /// (A.8); events that reuse a timestamp (RFC 4733) should pass `false`.
    /// Returns whether the sequence number was accepted as valid (A.1).
    pub fn on_packet(&mut self, now: Instant, seq: u16, timestamp: u32, audio: bool) -> bool {
        let valid = self.update_seq(seq);
        if valid && audio {
            let elapsed = now.saturating_duration_since(self.epoch).as_secs_f64();
            let arrival = (elapsed * f64::from(self.clock_rate)) as u64 as u32;
            let transit = arrival.wrapping_sub(timestamp) as i32;
            if let Some(previous) = self.transit {
                let d = f64::from(transit.wrapping_sub(previous)).abs();
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.transit = Some(transit);
        }
        valid
    }

    /// Records a sender report from this source (for LSR/DLSR).
    pub fn on_sender_report(&mut self, now: Instant, ntp_timestamp: u64) {
        self.last_sr = Some((ntp_middle(ntp_timestamp), now));
    }

    /// Extended highest sequence number received (A.3).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected so far.
    pub fn expected(&self) -> u32 {
        if self.probation > 0 {
            return 0;
        }
        self.extended_max().wrapping_sub(self.base_seq).wrapping_add(1)
    }

    /// Valid packets received (duplicates included, as A.1 counts them).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Cumulative loss (can be negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received)
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter_units(&self) -> f64 {
        self.jitter
    }

    /// Interarrival jitter as a duration.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / f64::from(self.clock_rate))
    }

    /// Builds the report block for this source and starts a new interval
    /// for the fraction-lost computation (A.3).
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_compact(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: self.extended_max(),
            jitter: self.jitter as u32,
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// Round-trip time from a report block about our stream (§6.4.1): arrival
/// time minus LSR minus DLSR, with `now_ntp` our NTP time when the report
/// arrived. `None` when the block carries no LSR or the arithmetic goes
/// negative (clock skew).
pub fn round_trip_time(block: &ReportBlock, now_ntp: u64) -> Option<Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let arrival = ntp_middle(now_ntp);
    let rtt = arrival.wrapping_sub(block.last_sr).wrapping_sub(block.delay_since_last_sr);
    // More than ~18 hours means it went negative.
    if rtt > 0x1000_0000 {
        return None;
    }
    Some(from_compact(rtt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0005,
            jitter: 80,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65_536,
        }
    }

    fn compound() -> Vec<RtcpPacket> {
        vec![
            RtcpPacket::SenderReport(SenderReport {
                ssrc: 1,
                ntp_timestamp: 0xE000_0000_8000_0000,
                rtp_timestamp: 160,
                packet_count: 50,
                octet_count: 8000,
                reports: vec![block(2)],
            }),
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: 1,
                items: vec![(SDES_CNAME, b"edge@node1".to_vec())],
            }]),
            RtcpPacket::Bye(Bye { ssrcs: vec![1], reason: Some(b"call ended".to_vec()) }),
        ]
    }

    #[test]
    fn compound_round_trips_with_negative_cumulative_loss() {
        let packets = compound();
        let mut bytes = Vec::new();
        write_compound(&packets, &mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(bytes[1], PT_SR);
        let parsed = parse_compound(&bytes).unwrap();
        assert_eq!(parsed, packets);
        let RtcpPacket::SourceDescription(chunks) = &parsed[1] else { panic!() };
        assert_eq!(chunks[0].cname(), Some("edge@node1"));
        let rr = RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 9, reports: vec![] });
        let mut rr_bytes = Vec::new();
        rr.write(&mut rr_bytes).unwrap();
        assert_eq!(rr_bytes, [0x80, PT_RR, 0, 1, 0, 0, 0, 9]);
        assert_eq!(parse_compound(&rr_bytes).unwrap(), vec![rr]);
    }

    #[test]
    fn skips_unknown_packet_types_and_honours_padding() {
        // APP packet (204) with padding: 4 header + 8 body, last 2 bytes padding.
        let mut bytes = vec![0xA0, 204, 0, 2, 1, 2, 3, 4, 5, 6, 0, 2];
        bytes.extend_from_slice(&[0x80, PT_RR, 0, 1, 0, 0, 0, 7]);
        let parsed = parse_compound(&bytes).unwrap();
        assert_eq!(parsed[0], RtcpPacket::Other { packet_type: 204, count: 0 });
        assert!(matches!(&parsed[1], RtcpPacket::ReceiverReport(rr) if rr.ssrc == 7));
    }

    #[test]
    fn rejects_hostile_compounds() {
        assert_eq!(parse_compound(&[]), Err(RtcpError::Empty));
        assert_eq!(parse_compound(&[0x80, 200, 0]), Err(RtcpError::Truncated { offset: 0 }));
        assert_eq!(parse_compound(&[0x40, 200, 0, 0]), Err(RtcpError::BadVersion(1)));
        // Length says 7 words, only 1 present.
        assert!(matches!(parse_compound(&[0x80, 200, 0, 6, 0, 0, 0, 1]), Err(RtcpError::Truncated { .. })));
        // RR announcing 3 report blocks with none present.
        assert!(matches!(parse_compound(&[0x83, PT_RR, 0, 1, 0, 0, 0, 1]), Err(RtcpError::Malformed { .. })));
        // SDES item length running past the packet.
        assert!(matches!(
            parse_compound(&[0x81, PT_SDES, 0, 2, 0, 0, 0, 1, 1, 200, b'a', 0]),
            Err(RtcpError::Malformed { .. })
        ));
        // Padding count larger than the body.
        assert!(matches!(parse_compound(&[0xA0, PT_RR, 0, 1, 0, 0, 0, 9]), Err(RtcpError::Malformed { .. })));
        // Too many packets.
        let many: Vec<u8> = std::iter::repeat_n([0x80u8, PT_RR, 0, 1, 0, 0, 0, 1], 33).flatten().collect();
        assert_eq!(parse_compound(&many), Err(RtcpError::TooManyPackets));
    }

    #[test]
    fn mutation_fuzz_never_panics() {
        let mut base = Vec::new();
        write_compound(&compound(), &mut base).unwrap();
        let mut seed = 0xDEAD_BEEF_CAFE_F00Du64;
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize >> 3) % bytes.len().max(1);
                match seed % 3 {
                    0 if !bytes.is_empty() => bytes[i] = (seed >> 32) as u8,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i.min(bytes.len()), (seed >> 24) as u8),
                }
            }
            if let Ok(packets) = parse_compound(&bytes) {
                ok += 1;
                let mut out = Vec::new();
                let _ = write_compound(&packets, &mut out);
            }
        }
        assert!(ok > 100, "accept path barely exercised ({ok})");
    }

    #[test]
    fn receiver_stats_follow_appendix_a() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // 8 kHz, 20 ms packets; start near the wrap so cycles are exercised.
        let mut stats = ReceiverStats::new(42, 65_530, 8_000, t0);
        let mut seq = 65_530u16;
        let mut ts = 1_000u32;
        let mut sent = 0;
        for i in 0..20u64 {
            // Lose packets 10 and 11; arrival jitter of +-2 ms alternating.
            if i != 10 && i != 11 {
                let skew = if i % 2 == 0 { 0 } else { 4 };
                stats.on_packet(ms(i * 20 + skew), seq, ts, true);
                sent += 1;
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
        }
        assert_eq!(sent, 18);
        // Probation swallows the first packet (A.1): base is the second one.
        assert_eq!(stats.expected(), 19);
        assert_eq!(stats.received(), 17);
        assert_eq!(stats.cumulative_lost(), 2);
        assert_eq!(stats.extended_max(), (1 << 16) + u32::from(seq.wrapping_sub(1)));
        // Jitter converges towards |D| = 32 units (4 ms at 8 kHz) alternating.
        assert!(stats.jitter_units() > 10.0 && stats.jitter_units() < 33.0, "{}", stats.jitter_units());
        stats.on_sender_report(ms(300), 0x0001_2345_6789_0000);
        let report = stats.report_block(ms(800));
        assert_eq!(report.cumulative_lost, 2);
        assert_eq!(report.fraction_lost, (2 * 256 / 19) as u8);
        assert_eq!(report.last_sr, 0x2345_6789);
        assert_eq!(report.delay_since_last_sr, 32_768);
        // A new interval with no loss reports fraction 0.
        stats.on_packet(ms(400), seq, ts, true);
        assert_eq!(stats.report_block(ms(900)).fraction_lost, 0);
    }

    #[test]
    fn receiver_stats_resync_after_a_restart_jump() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(1, 100, 8_000, t0);
        for seq in 100..110 {
            stats.on_packet(t0, seq, 0, false);
        }
        assert!(!stats.on_packet(t0, 40_000, 0, false), "single jump is held back");
        assert!(stats.on_packet(t0, 40_001, 0, false), "second sequential packet resyncs");
        assert_eq!(stats.expected(), 1);
        assert_eq!(stats.received(), 1);
    }

    #[test]
    fn ntp_and_round_trip_arithmetic() {
        let base = 0x0000_0010_0000_0000u64; // 16 s
        let later = ntp_add(base, Duration::from_millis(1_500));
        assert_eq!(later, 0x0000_0011_8000_0000);
        let block = ReportBlock {
            last_sr: ntp_middle(base),
            delay_since_last_sr: to_compact(Duration::from_millis(1_000)),
            ..ReportBlock::default()
        };
        let rtt = round_trip_time(&block, later).unwrap();
        assert!((rtt.as_secs_f64() - 0.5).abs() < 0.001, "{rtt:?}");
        assert_eq!(round_trip_time(&ReportBlock::default(), later), None);
    }
}

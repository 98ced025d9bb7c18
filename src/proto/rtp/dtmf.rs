//! RFC 4733 telephone-events (DTMF over RTP): payload format (§2.3),
//! receiving (§2.5.2) and sending (§2.5.1).
//!
//! Owns:
//! - [`TelephoneEvent`]: the 4-byte payload (event, E bit, volume,
//!   duration) and the digit mapping of §3.2 (0-9, `*`, `#`, A-D, flash).
//! - [`DtmfReceiver`]: turns a stream of event packets into one
//!   [`DtmfDigit`] per event. An event is identified by its RTP timestamp
//!   (§2.5.2.1): retransmitted starts, updates and the three redundant end
//!   packets of §2.5.1.4 all carry the same timestamp and produce one
//!   report, at the first end packet (with the final duration). An event
//!   whose end packets were all lost is reported when the next event starts
//!   or when [`DtmfReceiver::poll_timeout`] passes.
//! - [`DtmfSender`]: the packets for one outgoing digit: the first with the
//!   marker bit (§2.5.1.2), updates every packet interval with a growing
//!   duration (§2.5.1.3), and three end packets with the final duration
//!   (§2.5.1.4), all with the event's start timestamp.

use std::time::{Duration, Instant};

/// Errors from the telephone-event layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// Payload shorter than 4 bytes.
    #[error("telephone-event payload of {0} bytes (need 4)")]
    Truncated(usize),
    /// A character that is not a DTMF digit.
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
}

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 DTMF, 16 flash).
    pub event: u8,
    /// E bit: this is an end packet.
    pub end: bool,
    /// Volume, 0 to -63 dBm0 as 0..=63.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four bytes of a payload (further redundant blocks,
    /// if any, are ignored).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        if payload.len() < 4 {
            return Err(DtmfError::Truncated(payload.len()));
        }
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// The wire form.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.event, (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F), d[0], d[1]]
    }
}

/// The DTMF character for an event code (RFC 4733 §3.2), `None` for
/// non-DTMF events.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The event code for a DTMF character (case-insensitive letters).
pub fn digit_to_event(digit: char) -> Result<u8, DtmfError> {
    match digit {
        '0'..='9' => Ok(digit as u8 - b'0'),
        '*' => Ok(10),
        '#' => Ok(11),
        'A'..='D' => Ok(digit as u8 - b'A' + 12),
        'a'..='d' => Ok(digit as u8 - b'a' + 12),
        other => Err(DtmfError::NotADigit(other)),
    }
}

/// A received digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// How long it was pressed (from the final duration field).
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

/// How long an event may go without packets before it is reported anyway
/// (its end packets lost).
const EVENT_TIMEOUT: Duration = Duration::from_millis(300);
/// Recently finished event timestamps remembered to drop late retransmits.
const FINISHED_MEMORY: usize = 8;

/// Receiving side: one report per event.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    current: Option<Current>,
    finished: [Option<u32>; FINISHED_MEMORY],
    finished_next: usize,
}

impl DtmfReceiver {
    /// A receiver for events at `clock_rate` Hz (the audio codec's rate).
    pub fn new(clock_rate: u32) -> Self {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            current: None,
            finished: [None; FINISHED_MEMORY],
            finished_next: 0,
        }
    }

    fn to_duration(&self, units: u16) -> Duration {
        Duration::from_micros(u64::from(units) * 1_000_000 / u64::from(self.clock_rate))
    }

    fn finish(&mut self, current: Current) -> Option<DtmfDigit> {
        self.finished[self.finished_next] = Some(current.timestamp);
        self.finished_next = (self.finished_next + 1) % FINISHED_MEMORY;
        event_to_digit(current.event).map(|digit| DtmfDigit { digit, duration: self.to_duration(current.duration) })
    }

    /// Feeds one telephone-event RTP packet (its timestamp and payload).
    /// Returns at most two digits: a previous event cut short, then this one
    /// if it just ended.
    pub fn on_packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Result<Vec<DtmfDigit>, DtmfError> {
        let event = TelephoneEvent::parse(payload)?;
        let mut digits = Vec::new();
        if self.finished.contains(&Some(timestamp)) {
            return Ok(digits); // retransmitted end or start of a reported event
        }
        match self.current {
            Some(c) if c.timestamp == timestamp => {}
            Some(c) => {
                // A new event while the previous never ended: report it now.
                self.current = None;
                digits.extend(self.finish(c));
            }
            None => {}
        }
        let current =
            self.current.get_or_insert(Current { timestamp, event: event.event, duration: 0, last_seen: now });
        current.duration = current.duration.max(event.duration);
        current.last_seen = now;
        if event.end {
            let c = *current;
            self.current = None;
            digits.extend(self.finish(c));
        }
        Ok(digits)
    }

    /// When [`DtmfReceiver::handle_timeout`] should be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + EVENT_TIMEOUT)
    }

    /// Reports an event whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<DtmfDigit> {
        let c = self.current?;
        if now >= c.last_seen + EVENT_TIMEOUT {
            self.current = None;
            return self.finish(c);
        }
        None
    }
}

/// One packet to send for an outgoing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// Marker bit (first packet of the event only).
    pub marker: bool,
    /// The event payload.
    pub payload: [u8; 4],
}

/// Sending side: the packets of one digit, one packet interval at a time.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    event: u8,
    volume: u8,
    total: u16,
    step: u16,
    elapsed: u16,
    sent_first: bool,
    done: bool,
}

impl DtmfSender {
    /// A digit lasting `duration` (at least one packet interval), sent in
    /// packets of `packet_units` timestamp units (e.g. 160 for 20 ms at
    /// 8 kHz), at volume -10 dBm0.
    pub fn new(digit: char, duration: Duration, clock_rate: u32, packet_units: u32) -> Result<Self, DtmfError> {
        let event = digit_to_event(digit)?;
        let step = packet_units.clamp(1, u32::from(u16::MAX)) as u16;
        let units = (duration.as_secs_f64() * f64::from(clock_rate)).round();
        // Longer than one duration field (8 s at 8 kHz) is not needed for DTMF.
        let total = units.clamp(f64::from(step), f64::from(u16::MAX)) as u16;
        Ok(DtmfSender { event, volume: 10, total, step, elapsed: 0, sent_first: false, done: false })
    }

    /// Whether every packet has been produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The packets for the next packet interval: one start/update packet, or
    /// the three end packets together at the end; empty when done.
    pub fn next_interval(&mut self) -> Vec<DtmfPacket> {
        if self.done {
            return Vec::new();
        }
        self.elapsed = self.elapsed.saturating_add(self.step).min(self.total);
        let marker = !self.sent_first;
        self.sent_first = true;
        let ended = self.elapsed >= self.total;
        let event = TelephoneEvent { event: self.event, end: ended, volume: self.volume, duration: self.elapsed };
        if ended {
            self.done = true;
            // §2.5.1.4: the final packet is sent three times.
            return (0..3).map(|i| DtmfPacket { marker: marker && i == 0, payload: event.to_bytes() }).collect();
        }
        vec![DtmfPacket { marker, payload: event.to_bytes() }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_mapping_covers_rfc_4733_section_3_2() {
        let all = "0123456789*#ABCD";
        for (code, digit) in all.chars().enumerate() {
            assert_eq!(digit_to_event(digit).unwrap(), code as u8);
            assert_eq!(event_to_digit(code as u8), Some(digit));
        }
        assert_eq!(digit_to_event('b').unwrap(), 13);
        assert_eq!(event_to_digit(16), None);
        assert_eq!(digit_to_event('x'), Err(DtmfError::NotADigit('x')));
    }

    #[test]
    fn payload_round_trips_and_truncation_is_an_error() {
        let e = TelephoneEvent { event: 11, end: true, volume: 10, duration: 800 };
        assert_eq!(e.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()).unwrap(), e);
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(DtmfError::Truncated(3)));
    }

    #[test]
    fn one_report_per_event_despite_retransmits_and_redundant_ends() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8_000);
        let ts = 4_000;
        let mut reported = Vec::new();
        let start = TelephoneEvent { event: 5, end: false, volume: 10, duration: 160 };
        for _ in 0..3 {
            reported.extend(rx.on_packet(t0, ts, &start.to_bytes()).unwrap());
        }
        for d in [320u16, 480, 640] {
            let update = TelephoneEvent { duration: d, ..start };
            reported.extend(rx.on_packet(t0, ts, &update.to_bytes()).unwrap());
        }
        assert!(reported.is_empty(), "reported before the end");
        let end = TelephoneEvent { end: true, duration: 800, ..start };
        for _ in 0..3 {
            reported.extend(rx.on_packet(t0, ts, &end.to_bytes()).unwrap());
        }
        // A late retransmitted start after the end is ignored too.
        reported.extend(rx.on_packet(t0, ts, &start.to_bytes()).unwrap());
        assert_eq!(reported, vec![DtmfDigit { digit: '5', duration: Duration::from_millis(100) }]);
        // The same digit pressed again is a new event (new timestamp).
        let again = rx.on_packet(t0, ts + 2_000, &end.to_bytes()).unwrap();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn lost_end_packets_are_reported_by_the_next_event_or_a_timeout() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8_000);
        let one = TelephoneEvent { event: 1, end: false, volume: 10, duration: 400 };
        assert!(rx.on_packet(t0, 100, &one.to_bytes()).unwrap().is_empty());
        let two = TelephoneEvent { event: 2, ..one };
        let digits = rx.on_packet(t0, 2_000, &two.to_bytes()).unwrap();
        assert_eq!(digits, vec![DtmfDigit { digit: '1', duration: Duration::from_millis(50) }]);
        assert_eq!(rx.poll_timeout(), Some(t0 + EVENT_TIMEOUT));
        assert_eq!(rx.handle_timeout(t0 + Duration::from_millis(100)), None);
        let late = rx.handle_timeout(t0 + EVENT_TIMEOUT).unwrap();
        assert_eq!(late.digit, '2');
        assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn sender_produces_marker_updates_and_three_ends() {
        let mut tx = DtmfSender::new('#', Duration::from_millis(100), 8_000, 160).unwrap();
        let mut intervals = Vec::new();
        while !tx.is_done() {
            intervals.push(tx.next_interval());
        }
        assert_eq!(intervals.len(), 5);
        assert!(intervals[0][0].marker);
        assert!(intervals[1..].iter().flatten().all(|p| !p.marker));
        let durations: Vec<u16> =
            intervals[..4].iter().map(|i| TelephoneEvent::parse(&i[0].payload).unwrap().duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640]);
        let ends = &intervals[4];
        assert_eq!(ends.len(), 3);
        for p in ends {
            let e = TelephoneEvent::parse(&p.payload).unwrap();
            assert!(e.end);
            assert_eq!((e.event, e.duration), (11, 800));
        }
        assert!(tx.next_interval().is_empty());
        // What we send, our receiver decodes as one digit.
        let mut rx = DtmfReceiver::new(8_000);
        let t0 = Instant::now();
        let got: Vec<_> = intervals.iter().flatten().flat_map(|p| rx.on_packet(t0, 9, &p.payload).unwrap()).collect();
        assert_eq!(got, vec![DtmfDigit { digit: '#', duration: Duration::from_millis(100) }]);
    }
}

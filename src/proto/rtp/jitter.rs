//! Adaptive jitter buffer for one RTP audio stream (sans-IO).
//!
//! Owns reordering, loss detection and playout timing between the network
//! and a consumer that pulls one packet's worth of audio per packet interval
//! (every 20 ms for the engine). Packets are keyed by an extended sequence
//! number (RFC 3550 §A.1 style unwrapping), so wrap-around at 65 535 is
//! seamless.
//!
//! Behaviour:
//! - **Target delay** adapts to the network: the spread (max - min) of
//!   relative transit times (arrival time minus media timestamp) over the
//!   last [`JitterConfig::window`] packets, plus a small margin, clamped to
//!   `[min_delay, max_delay]`.
//! - **Start and rebuffering**: playout starts once the oldest buffered
//!   packet has waited the target delay. After an underrun (nothing to play)
//!   or at a new talkspurt (marker bit after an empty buffer) the buffer
//!   re-primes the same way, which is where the delay grows.
//! - **Shrinking**: when more than the target plus two packets are buffered,
//!   one packet is discarded per pop until the depth is back in range.
//! - **Late, duplicate, overflow** packets are dropped and counted; a
//!   missing packet with later ones buffered becomes [`Playout::Conceal`].
//! - **Resync**: an SSRC change, or a jump of more than
//!   [`JitterConfig::max_jump`] confirmed by a second sequential packet (the
//!   A.1 rule), flushes the buffer and starts over.
//! - **Placeholders**: packets that occupy a sequence number but carry no
//!   audio for the codec (RFC 4733 events, comfort noise) are pushed with
//!   [`JitterBuffer::push_placeholder`] so they do not look like loss.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::packet::RtpPacket;

/// Jitter buffer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay.
    pub max_delay: Duration,
    /// Target delay before anything has been measured.
    pub initial_delay: Duration,
    /// Most packets held; beyond this the oldest is dropped.
    pub capacity: usize,
    /// Sequence jump (either way) treated as a possible restart.
    pub max_jump: u16,
    /// Packets over which the transit spread is measured.
    pub window: usize,
    /// RTP clock rate of the stream, Hz.
    pub clock_rate: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(40),
            capacity: 64,
            max_jump: 256,
            window: 100,
            clock_rate: 8_000,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered.
    Accepted,
    /// Its playout time has passed; dropped.
    Late,
    /// Already buffered; dropped.
    Duplicate,
    /// A big sequence jump, held back until a second packet confirms it.
    Held,
    /// The buffer was flushed and restarted with this packet.
    Resynced {
        /// Whether the reason was a new SSRC (otherwise a confirmed jump).
        ssrc_changed: bool,
    },
}

/// A packet handed to the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedPacket {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// What to play for the current interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next packet in sequence.
    Packet(BufferedPacket),
    /// The next packet is missing but later ones are here: conceal one
    /// packet interval.
    Conceal,
    /// Nothing to play (not started, underrun, or the stream paused).
    Empty,
}

/// Counters since creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Packets accepted into the buffer (placeholders included).
    pub accepted: u64,
    /// Packets dropped because their turn had passed.
    pub late: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Packets dropped because the buffer was full or too deep.
    pub discarded: u64,
    /// Conceal requests returned.
    pub concealed: u64,
    /// Pops that found nothing while playing.
    pub underruns: u64,
    /// Flushes for an SSRC change or a confirmed jump.
    pub resyncs: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    /// `None` for placeholders.
    payload: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the oldest packet to age by the target delay.
    Priming,
    Playing,
}

/// An adaptive jitter buffer for one stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    entries: BTreeMap<u64, Entry>,
    /// Arrival time of the oldest entry (for priming).
    first_arrival: Option<Instant>,
    ssrc: Option<u32>,
    highest: Option<u64>,
    next: Option<u64>,
    held_jump: Option<u16>,
    state: State,
    /// Unwrapped timestamp of the highest packet, and its raw value.
    timestamp_base: Option<(i64, u32)>,
    epoch: Option<Instant>,
    transits_ms: VecDeque<f64>,
    target: Duration,
    packet_duration: Duration,
    stats: JitterStats,
}

/// Extended sequence numbers start here so early reorders stay positive.
const EXTENDED_ORIGIN: u64 = 1 << 32;

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let target = config.initial_delay.clamp(config.min_delay, config.max_delay.max(config.min_delay));
        JitterBuffer {
            entries: BTreeMap::new(),
            first_arrival: None,
            ssrc: None,
            highest: None,
            next: None,
            held_jump: None,
            state: State::Priming,
            timestamp_base: None,
            epoch: None,
            transits_ms: VecDeque::with_capacity(config.window),
            target,
            packet_duration: Duration::from_millis(20),
            stats: JitterStats::default(),
            config,
        }
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        self.target
    }

    /// Packet interval measured from consecutive timestamps (20 ms until
    /// measured).
    pub fn packet_duration(&self) -> Duration {
        self.packet_duration
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets (and placeholders) buffered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The SSRC being buffered.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Forgets everything except counters and the target delay.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.first_arrival = None;
        self.ssrc = None;
        self.highest = None;
        self.next = None;
        self.held_jump = None;
        self.state = State::Priming;
        self.timestamp_base = None;
        self.transits_ms.clear();
    }

    /// Buffers an audio packet.
    pub fn push(&mut self, now: Instant, packet: &RtpPacket<'_>) -> PushOutcome {
        self.insert(now, packet, Some(packet.payload))
    }

    /// Buffers a packet that occupies a sequence number but has no audio for
    /// the codec (telephone-event, comfort noise): skipped silently on pop.
    pub fn push_placeholder(&mut self, now: Instant, packet: &RtpPacket<'_>) -> PushOutcome {
        self.insert(now, packet, None)
    }

    fn insert(&mut self, now: Instant, packet: &RtpPacket<'_>, payload: Option<&[u8]>) -> PushOutcome {
        let mut outcome = PushOutcome::Accepted;
        if self.ssrc.is_some_and(|s| s != packet.ssrc) {
            self.reset();
            self.stats.resyncs += 1;
            outcome = PushOutcome::Resynced { ssrc_changed: true };
        }
        self.ssrc = Some(packet.ssrc);
        let extended = match self.highest {
            None => EXTENDED_ORIGIN + u64::from(packet.sequence),
            Some(highest) => {
                let delta = i64::from(packet.sequence.wrapping_sub(highest as u16) as i16);
                if delta.unsigned_abs() > u64::from(self.config.max_jump) {
                    if self.held_jump == Some(packet.sequence) {
                        self.reset();
                        self.ssrc = Some(packet.ssrc);
                        self.stats.resyncs += 1;
                        outcome = PushOutcome::Resynced { ssrc_changed: false };
                        EXTENDED_ORIGIN + u64::from(packet.sequence)
                    } else {
                        self.held_jump = Some(packet.sequence.wrapping_add(1));
                        return PushOutcome::Held;
                    }
                } else {
                    (highest as i64 + delta) as u64
                }
            }
        };
        self.held_jump = None;
        if self.next.is_some_and(|next| extended < next) {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if self.entries.contains_key(&extended) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let was_empty = self.entries.is_empty();
        if self.entries.len() >= self.config.capacity.max(1) {
            if let Some((oldest, _)) = self.entries.pop_first() {
                self.stats.discarded += 1;
                self.next = Some(self.next.map_or(oldest + 1, |n| n.max(oldest + 1)));
            }
        }
        self.measure(now, extended, packet.timestamp);
        // A new talkspurt after the buffer ran dry re-primes the delay.
        if was_empty && packet.marker && self.state == State::Playing {
            self.state = State::Priming;
        }
        if self.entries.is_empty() || self.first_arrival.is_none() {
            self.first_arrival = Some(now);
        }
        self.entries.insert(
            extended,
            Entry {
                sequence: packet.sequence,
                timestamp: packet.timestamp,
                marker: packet.marker,
                payload: payload.map(<[u8]>::to_vec),
            },
        );
        self.stats.accepted += 1;
        outcome
    }

    /// Updates the highest sequence, the packet interval and the transit
    /// window, and recomputes the target delay.
    fn measure(&mut self, now: Instant, extended: u64, timestamp: u32) {
        let rate = f64::from(self.config.clock_rate.max(1));
        let epoch = *self.epoch.get_or_insert(now);
        let unwrapped = match (self.timestamp_base, self.highest) {
            (Some((base, raw)), Some(highest)) => {
                let unwrapped = base + i64::from(timestamp.wrapping_sub(raw) as i32);
                if extended == highest + 1 {
                    let step = timestamp.wrapping_sub(raw);
                    if step > 0 && f64::from(step) <= rate * 0.12 {
                        self.packet_duration = Duration::from_secs_f64(f64::from(step) / rate);
                    }
                }
                unwrapped
            }
            _ => i64::from(timestamp),
        };
        if self.highest.is_none_or(|h| extended > h) {
            self.highest = Some(extended);
            self.timestamp_base = Some((unwrapped, timestamp));
        }
        let arrival_ms = now.saturating_duration_since(epoch).as_secs_f64() * 1_000.0;
        let transit = arrival_ms - unwrapped as f64 * 1_000.0 / rate;
        if self.transits_ms.len() == self.config.window.max(1) {
            self.transits_ms.pop_front();
        }
        self.transits_ms.push_back(transit);
        if self.transits_ms.len() >= 2 {
            let (lo, hi) = self.transits_ms.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            let spread = Duration::from_secs_f64(((hi - lo) + 5.0).max(0.0) / 1_000.0);
            self.target = spread.clamp(self.config.min_delay, self.config.max_delay.max(self.config.min_delay));
        }
    }

    /// The payload of the next packet to play, if buffered (for FEC after
    /// a [`Playout::Conceal`]).
    pub fn peek_next_payload(&self) -> Option<&[u8]> {
        let next = self.next?;
        self.entries.get(&next)?.payload.as_deref()
    }

    /// Buffered depth as time (from the next packet to the newest).
    fn depth(&self) -> Duration {
        match (self.next, self.highest) {
            (Some(next), Some(highest)) if highest >= next => self.packet_duration * (highest - next + 1) as u32,
            _ => Duration::ZERO,
        }
    }

    /// What to play now; call once per packet interval.
    pub fn pop(&mut self, now: Instant) -> Playout {
        if self.state == State::Priming {
            let Some((&first, _)) = self.entries.first_key_value() else {
                return Playout::Empty;
            };
            let arrived = self.first_arrival.unwrap_or(now);
            if now.saturating_duration_since(arrived) < self.target {
                return Playout::Empty;
            }
            self.state = State::Playing;
            // Time already covered by Empty answers: do not conceal it again.
            self.next = Some(first);
        }
        // Too deep: drop one packet to bring the delay back down.
        if self.depth() > self.target + 2 * self.packet_duration {
            if let Some((key, _)) = self.entries.pop_first() {
                self.stats.discarded += 1;
                self.next = Some(key + 1);
            }
        }
        loop {
            let Some(next) = self.next else {
                return Playout::Empty;
            };
            let Some((&first, _)) = self.entries.first_key_value() else {
                self.stats.underruns += 1;
                self.state = State::Priming;
                self.first_arrival = None;
                return Playout::Empty;
            };
            if first < next {
                self.entries.pop_first();
                continue;
            }
            if first > next {
                self.next = Some(next + 1);
                self.stats.concealed += 1;
                return Playout::Conceal;
            }
            let (_, entry) = self.entries.pop_first().expect("first entry exists");
            self.next = Some(next + 1);
            if let Some(payload) = entry.payload {
                return Playout::Packet(BufferedPacket {
                    sequence: entry.sequence,
                    timestamp: entry.timestamp,
                    marker: entry.marker,
                    payload,
                });
            }
            // Placeholder: consumes its sequence number and no time.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that fill the buffer ahead of playout use a high floor so the
    /// depth control does not trim what they pre-filled.
    fn config() -> JitterConfig {
        JitterConfig {
            min_delay: Duration::from_millis(100),
            initial_delay: Duration::from_millis(100),
            ..JitterConfig::default()
        }
    }

    fn packet(seq: u16, payload: &[u8]) -> RtpPacket<'_> {
        RtpPacket::new(0, seq, u32::from(seq).wrapping_mul(160), 77, false, payload)
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn seq_of(p: &Playout) -> Option<u16> {
        match p {
            Playout::Packet(b) => Some(b.sequence),
            _ => None,
        }
    }

    #[test]
    fn primes_then_plays_in_order_across_wrap_with_reorder() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        // Sequence numbers 65534, 65535, 0, 1 (timestamps 0, 160, 320, 480)
        // arriving as 65535, 65534, 1, 0.
        let order = [(65535u16, 1u32), (65534, 0), (1, 3), (0, 2)];
        for (i, &(seq, index)) in order.iter().enumerate() {
            let p = RtpPacket::new(0, seq, index * 160, 77, false, &[1]);
            assert_eq!(jb.push(ms(t0, i as u64 * 20), &p), PushOutcome::Accepted);
        }
        assert_eq!(jb.pop(ms(t0, 90)), Playout::Empty, "still priming");
        let played: Vec<_> = (0..4).map(|i| seq_of(&jb.pop(ms(t0, 200 + i * 20)))).collect();
        assert_eq!(played, vec![Some(65534), Some(65535), Some(0), Some(1)]);
        assert_eq!(jb.stats().concealed, 0);
        assert_eq!(jb.pop(ms(t0, 280)), Playout::Empty);
    }

    #[test]
    fn gap_becomes_concealment_late_and_duplicates_are_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        for seq in [10u16, 11, 13, 14] {
            jb.push(ms(t0, u64::from(seq - 10) * 20), &packet(seq, &[seq as u8]));
        }
        assert_eq!(jb.push(ms(t0, 70), &packet(11, &[0])), PushOutcome::Duplicate);
        let start = ms(t0, 200);
        assert_eq!(seq_of(&jb.pop(start)), Some(10));
        assert_eq!(seq_of(&jb.pop(start)), Some(11));
        assert_eq!(jb.pop(start), Playout::Conceal);
        assert_eq!(jb.peek_next_payload(), Some(&[13u8][..]));
        // 12 arrives after its slot was concealed: late.
        assert_eq!(jb.push(start, &packet(12, &[12])), PushOutcome::Late);
        assert_eq!(seq_of(&jb.pop(start)), Some(13));
        let stats = jb.stats();
        assert_eq!((stats.late, stats.duplicates, stats.concealed), (1, 1, 1));
    }

    #[test]
    fn target_delay_adapts_to_jitter_within_bounds() {
        let t0 = Instant::now();
        let adaptive = JitterConfig { initial_delay: Duration::from_millis(40), ..JitterConfig::default() };
        let mut calm = JitterBuffer::new(adaptive.clone());
        let mut rough = JitterBuffer::new(adaptive.clone());
        for i in 0..100u16 {
            let sent = u64::from(i) * 20;
            calm.push(ms(t0, sent + 1), &packet(i, &[0]));
            // Every fifth packet is 80 ms late.
            let delay = if i % 5 == 0 { 80 } else { 0 };
            rough.push(ms(t0, sent + delay), &packet(i, &[0]));
        }
        assert_eq!(calm.target_delay(), Duration::from_millis(20), "clamped to the minimum");
        let rough_target = rough.target_delay().as_millis();
        assert!((80..=90).contains(&rough_target), "target {rough_target} ms");
        let mut wild = JitterBuffer::new(adaptive);
        for i in 0..50u16 {
            wild.push(ms(t0, u64::from(i) * 20 + if i == 7 { 900 } else { 0 }), &packet(i, &[0]));
        }
        assert_eq!(wild.target_delay(), Duration::from_millis(200), "clamped to the maximum");
    }

    #[test]
    fn underrun_reprimes_and_too_deep_shrinks() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        jb.push(t0, &packet(1, &[1]));
        assert_eq!(jb.pop(ms(t0, 60)), Playout::Empty, "priming");
        assert_eq!(seq_of(&jb.pop(ms(t0, 120))), Some(1));
        assert_eq!(jb.pop(ms(t0, 140)), Playout::Empty);
        assert_eq!(jb.stats().underruns, 1);
        // Packet 2 arrives late (at 160 ms): it waits the target again.
        jb.push(ms(t0, 160), &packet(2, &[2]));
        assert_eq!(jb.pop(ms(t0, 161)), Playout::Empty);
        assert_eq!(seq_of(&jb.pop(ms(t0, 400))), Some(2));
        // A burst of 20 packets makes the buffer far deeper than the target.
        for seq in 3..23u16 {
            jb.push(ms(t0, 410), &packet(seq, &[0]));
        }
        assert_eq!(jb.target_delay(), Duration::from_millis(200));
        let before = jb.stats().discarded;
        for i in 0..10 {
            assert!(matches!(jb.pop(ms(t0, 420 + i * 20)), Playout::Packet(_)));
        }
        assert!(jb.stats().discarded >= before + 3, "depth was not reduced");
        // Depth settles at target + 2 packets (12 packets) minus what was played.
        assert_eq!(jb.len(), 6);
    }

    #[test]
    fn resyncs_on_ssrc_change_and_confirmed_jump() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        for seq in 0..3u16 {
            jb.push(t0, &packet(seq, &[0]));
        }
        let other = RtpPacket::new(0, 5_000, 0, 78, false, &[9]);
        assert_eq!(jb.push(t0, &other), PushOutcome::Resynced { ssrc_changed: true });
        assert_eq!(jb.len(), 1);
        let mut jump = RtpPacket::new(0, 30_000, 0, 78, false, &[1]);
        assert_eq!(jb.push(t0, &jump), PushOutcome::Held);
        jump.sequence = 30_001;
        assert_eq!(jb.push(t0, &jump), PushOutcome::Resynced { ssrc_changed: false });
        assert_eq!(jb.stats().resyncs, 2);
        assert_eq!(seq_of(&jb.pop(ms(t0, 500))), Some(30_001));
    }

    #[test]
    fn placeholders_fill_sequence_gaps_without_concealment() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        jb.push(t0, &packet(1, &[1]));
        jb.push_placeholder(ms(t0, 20), &packet(2, &[]));
        jb.push_placeholder(ms(t0, 40), &packet(3, &[]));
        jb.push(ms(t0, 60), &packet(4, &[4]));
        assert_eq!(seq_of(&jb.pop(ms(t0, 100))), Some(1));
        assert_eq!(seq_of(&jb.pop(ms(t0, 120))), Some(4));
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig { capacity: 4, ..config() });
        for seq in 0..6u16 {
            jb.push(t0, &packet(seq, &[0]));
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.stats().discarded, 2);
        assert_eq!(jb.push(t0, &packet(0, &[0])), PushOutcome::Late);
    }

    #[test]
    fn random_arrival_order_never_panics_and_never_plays_twice() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(config());
        let mut seed = 12345u64;
        let mut played = std::collections::HashSet::new();
        for step in 0..5_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let seq = ((step as u16).wrapping_add((seed >> 33) as u16 % 9)).wrapping_sub(4);
            let ssrc = if seed.is_multiple_of(997) { 5 } else { 77 };
            let p = RtpPacket::new(0, seq, u32::from(seq) * 160, ssrc, seed.is_multiple_of(31), &[1]);
            jb.push(ms(t0, step * 20 + (seed >> 40) % 50), &p);
            if let Playout::Packet(b) = jb.pop(ms(t0, step * 20)) {
                if jb.stats().resyncs == 0 {
                    assert!(played.insert(b.sequence), "sequence {} played twice", b.sequence);
                } else {
                    played.clear();
                }
            }
        }
    }
}

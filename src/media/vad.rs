//! Voice activity detection over 20 ms engine frames.
//!
//! Owns the per-frame speech probability (from the `earshot` neural VAD), the
//! debounced speaking / not-speaking state with onset and offset events
//! ([`Vad`]), and whole-utterance speech bounds ([`speech_bounds`]).
//!
//! earshot works on 16 ms hops (256 samples at 16 kHz) over a 48 ms window,
//! so [`Vad`] re-blocks each 320-sample engine frame into 256-sample hops and
//! reports the highest hop score that completed inside the frame (every
//! 20 ms frame completes one or two hops).
//!
//! Debouncing: a speech run starts once `min_speech_ms` of consecutive
//! frames score at or above `threshold`, and ends once `hangover_ms` of
//! consecutive frames score below it. Events carry the frame index where the
//! run really began or ended, not the (later) frame in which they were
//! decided.
//!
//! Pure computation: no IO, no threads, no clocks.

use serde::{Deserialize, Serialize};

use super::{ENGINE_RATE, FRAME_MS, FRAME_SAMPLES};

/// earshot's hop: 256 samples = 16 ms at 16 kHz.
const HOP: usize = 256;

/// Errors from the voice activity detector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VadError {
    /// A frame that is not exactly [`FRAME_SAMPLES`] long.
    #[error("VAD frame has {got} samples, expected {expected} (20 ms at 16 kHz)")]
    FrameSize { expected: usize, got: usize },
    /// A NaN or infinite sample; the frame was not consumed.
    #[error("VAD frame sample {index} is not a finite number")]
    NonFinite { index: usize },
}

/// Voice activity detector settings (the `[vad]` table of the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadConfig {
    /// Frame probability at or above which a frame counts as speech, `0..=1`.
    pub threshold: f32,
    /// Consecutive speech needed before a [`VadEvent::SpeechStart`], in ms.
    pub min_speech_ms: u32,
    /// Consecutive non-speech needed before a [`VadEvent::SpeechEnd`], in ms.
    pub hangover_ms: u32,
    /// Padding added on each side by [`speech_bounds`], in ms.
    pub pad_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self { threshold: 0.5, min_speech_ms: 100, hangover_ms: 300, pad_ms: 200 }
    }
}

impl VadConfig {
    /// Checks the values, like the other config sections: `Err` is a
    /// message naming the key (`vad.threshold: ...`). `threshold` must be a
    /// number in `0..=1` and the durations at most one minute.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("vad.threshold: {} must be a number in 0..=1", self.threshold));
        }
        const MAX_MS: u32 = 60_000;
        for (key, v) in
            [("min_speech_ms", self.min_speech_ms), ("hangover_ms", self.hangover_ms), ("pad_ms", self.pad_ms)]
        {
            if v > MAX_MS {
                return Err(format!("vad.{key}: {v} must be at most {MAX_MS} ms"));
            }
        }
        Ok(())
    }

    /// Frames of speech needed for an onset (at least 1).
    fn onset_frames(&self) -> u32 {
        self.min_speech_ms.div_ceil(FRAME_MS).max(1)
    }

    /// Frames of non-speech needed for an offset (at least 1).
    fn offset_frames(&self) -> u32 {
        self.hangover_ms.div_ceil(FRAME_MS).max(1)
    }
}

/// A debounced change of the speaking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at frame `frame` (the first frame of the run; the event
    /// is reported `min_speech_ms` later).
    SpeechStart { frame: u64 },
    /// Speech ended at frame `frame` (the first non-speech frame after it;
    /// the event is reported `hangover_ms` later, or by [`Vad::finish`]).
    SpeechEnd { frame: u64 },
}

/// The detector's verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadDecision {
    /// Index of this frame since creation or the last reset (0-based).
    pub frame: u64,
    /// Speech probability of this frame, `0..=1`.
    pub probability: f32,
    /// Raw verdict: `probability >= threshold`.
    pub is_speech: bool,
    /// Debounced state after this frame.
    pub speaking: bool,
    /// Onset or offset decided at this frame, if any.
    pub event: Option<VadEvent>,
}

/// A span of speech in samples at 16 kHz: `start..end`, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechSpan {
    /// First sample of the (padded) speech.
    pub start: usize,
    /// One past the last sample of the (padded) speech.
    pub end: usize,
}

impl SpeechSpan {
    /// Length in samples.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Start time in seconds.
    pub fn start_secs(&self) -> f64 {
        self.start as f64 / f64::from(ENGINE_RATE)
    }

    /// End time in seconds.
    pub fn end_secs(&self) -> f64 {
        self.end as f64 / f64::from(ENGINE_RATE)
    }
}

/// Streaming voice activity detector for one audio stream.
pub struct Vad {
    cfg: VadConfig,
    detector: Box<earshot::Detector>,
    /// Samples carried over to the next 256-sample hop.
    hop_buf: [f32; HOP],
    hop_len: usize,
    /// Score of the last completed hop (reused if a frame completes none,
    /// which cannot happen with 320-sample frames).
    last_score: f32,
    /// Index of the next frame.
    frame: u64,
    speaking: bool,
    /// Consecutive speech frames while not speaking, and where they began.
    run: u32,
    run_start: u64,
    /// Consecutive non-speech frames while speaking, and where they began.
    gap: u32,
    gap_start: u64,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("cfg", &self.cfg)
            .field("frame", &self.frame)
            .field("speaking", &self.speaking)
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// Creates a detector. A `threshold` outside `0..=1` is clamped into it
    /// (NaN becomes the default 0.5); use [`VadConfig::validate`] to reject
    /// bad configs up front.
    pub fn new(cfg: VadConfig) -> Self {
        let mut cfg = cfg;
        cfg.threshold =
            if cfg.threshold.is_nan() { VadConfig::default().threshold } else { cfg.threshold.clamp(0.0, 1.0) };
        Self {
            cfg,
            detector: earshot::Detector::default_boxed(),
            hop_buf: [0.0; HOP],
            hop_len: 0,
            last_score: 0.0,
            frame: 0,
            speaking: false,
            run: 0,
            run_start: 0,
            gap: 0,
            gap_start: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// Whether the debounced state is currently "speaking".
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Index of the next frame to be processed.
    pub fn frames_processed(&self) -> u64 {
        self.frame
    }

    /// Processes one 20 ms frame of 16 kHz mono audio ([`FRAME_SAMPLES`]
    /// samples, nominally in `[-1, 1]`; louder samples are clipped).
    pub fn process_frame(&mut self, frame: &[f32]) -> Result<VadDecision, VadError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(VadError::FrameSize { expected: FRAME_SAMPLES, got: frame.len() });
        }
        if let Some(index) = frame.iter().position(|s| !s.is_finite()) {
            return Err(VadError::NonFinite { index });
        }

        let mut best: Option<f32> = None;
        let mut rest = frame;
        while !rest.is_empty() {
            let take = (HOP - self.hop_len).min(rest.len());
            for (dst, &src) in self.hop_buf[self.hop_len..self.hop_len + take].iter_mut().zip(&rest[..take]) {
                // earshot debug-asserts that samples are within [-1, 1].
                *dst = src.clamp(-1.0, 1.0);
            }
            self.hop_len += take;
            rest = &rest[take..];
            if self.hop_len == HOP {
                let score = self.detector.predict_f32(&self.hop_buf);
                let score = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
                best = Some(best.map_or(score, |b: f32| b.max(score)));
                self.hop_len = 0;
            }
        }
        let probability = best.unwrap_or(self.last_score);
        self.last_score = probability;
        Ok(self.decide(probability))
    }

    fn decide(&mut self, probability: f32) -> VadDecision {
        let index = self.frame;
        self.frame += 1;
        let is_speech = probability >= self.cfg.threshold;
        let mut event = None;
        if self.speaking {
            if is_speech {
                self.gap = 0;
            } else {
                if self.gap == 0 {
                    self.gap_start = index;
                }
                self.gap += 1;
                if self.gap >= self.cfg.offset_frames() {
                    self.speaking = false;
                    self.gap = 0;
                    event = Some(VadEvent::SpeechEnd { frame: self.gap_start });
                }
            }
        } else if is_speech {
            if self.run == 0 {
                self.run_start = index;
            }
            self.run += 1;
            if self.run >= self.cfg.onset_frames() {
                self.speaking = true;
                self.run = 0;
                self.gap = 0;
                event = Some(VadEvent::SpeechStart { frame: self.run_start });
            }
        } else {
            self.run = 0;
        }
        VadDecision { frame: index, probability, is_speech, speaking: self.speaking, event }
    }

    /// Ends the stream: if speech is still open, closes it and returns the
    /// [`VadEvent::SpeechEnd`] (at the start of the pending silence, or at
    /// the end of the input). The detector is then reset.
    pub fn finish(&mut self) -> Option<VadEvent> {
        let event = if self.speaking {
            let frame = if self.gap > 0 { self.gap_start } else { self.frame };
            Some(VadEvent::SpeechEnd { frame })
        } else {
            None
        };
        self.reset();
        event
    }

    /// Forgets all state (neural network memory, debouncing, frame count);
    /// the next frame is frame 0 of a new stream.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.hop_buf = [0.0; HOP];
        self.hop_len = 0;
        self.last_score = 0.0;
        self.frame = 0;
        self.speaking = false;
        self.run = 0;
        self.run_start = 0;
        self.gap = 0;
        self.gap_start = 0;
    }
}

/// Finds the speech in a whole 16 kHz utterance: from the first onset to the
/// last offset, widened by `pad_ms` on each side and clipped to the buffer.
/// Returns `None` when there is no speech. Non-finite samples are treated as
/// silence and a trailing partial frame is zero-padded.
pub fn speech_bounds(samples: &[f32], cfg: &VadConfig) -> Option<SpeechSpan> {
    let mut vad = Vad::new(cfg.clone());
    let mut first: Option<u64> = None;
    let mut last: Option<u64> = None;
    let mut note = |event: Option<VadEvent>| match event {
        Some(VadEvent::SpeechStart { frame }) => {
            first.get_or_insert(frame);
        }
        Some(VadEvent::SpeechEnd { frame }) => last = Some(frame),
        None => {}
    };
    let mut buf = [0.0f32; FRAME_SAMPLES];
    for chunk in samples.chunks(FRAME_SAMPLES) {
        buf.fill(0.0);
        for (d, &s) in buf.iter_mut().zip(chunk) {
            *d = if s.is_finite() { s } else { 0.0 };
        }
        // Cannot fail: the frame has the right length and finite samples.
        if let Ok(d) = vad.process_frame(&buf) {
            note(d.event);
        }
    }
    note(vad.finish());
    let (first, last) = (first?, last?);
    let pad = (u64::from(cfg.pad_ms) * u64::from(ENGINE_RATE) / 1000) as usize;
    let start = (first as usize * FRAME_SAMPLES).saturating_sub(pad).min(samples.len());
    let end = (last as usize * FRAME_SAMPLES).saturating_add(pad).min(samples.len());
    (end > start).then_some(SpeechSpan { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic white noise in `[-amp, amp]` (xorshift32).
    fn noise(n: usize, amp: f32, seed: u32) -> Vec<f32> {
        let mut x = seed.max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    fn fixture() -> Vec<f32> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/where_is_my_order_16k.wav");
        let audio = crate::media::wav::read_wav(&path).expect("fixture");
        assert_eq!(audio.rate, ENGINE_RATE);
        audio.samples
    }

    /// Ground truth independent of the VAD: first and last 10 ms window
    /// whose RMS is within 35 dB of the loudest window.
    fn energy_edges(x: &[f32]) -> (usize, usize) {
        let win = 160;
        let rms: Vec<f32> =
            x.chunks(win).map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt()).collect();
        let peak = rms.iter().cloned().fold(0.0, f32::max);
        let gate = peak * 10f32.powf(-35.0 / 20.0);
        let first = rms.iter().position(|&r| r > gate).unwrap();
        let last = rms.iter().rposition(|&r| r > gate).unwrap();
        (first * win, ((last + 1) * win).min(x.len()))
    }

    fn run_frames(vad: &mut Vad, x: &[f32]) -> Vec<VadDecision> {
        x.chunks_exact(FRAME_SAMPLES).map(|f| vad.process_frame(f).unwrap()).collect()
    }

    #[test]
    fn silence_is_not_speech() {
        let x = vec![0.0f32; ENGINE_RATE as usize * 3];
        let mut vad = Vad::new(VadConfig::default());
        let d = run_frames(&mut vad, &x);
        assert!(d.iter().all(|d| !d.speaking && d.event.is_none()));
        assert!(
            d.iter().all(|d| d.probability < 0.5),
            "max p = {}",
            d.iter().map(|d| d.probability).fold(0.0, f32::max)
        );
        assert_eq!(speech_bounds(&x, &VadConfig::default()), None);
        assert_eq!(speech_bounds(&[], &VadConfig::default()), None);
    }

    #[test]
    fn low_white_noise_is_not_speech() {
        // Uniform noise of RMS about -65, -55 and -45 dBFS (line noise is
        // typically -50..-60 dBFS).
        for amp in [0.001f32, 0.003, 0.01] {
            let x = noise(ENGINE_RATE as usize * 3, amp, 12345);
            assert_eq!(speech_bounds(&x, &VadConfig::default()), None, "noise amplitude {amp}");
            let mut vad = Vad::new(VadConfig::default());
            assert!(run_frames(&mut vad, &x).iter().all(|d| !d.is_speech), "noise amplitude {amp}");
        }
    }

    #[test]
    fn moderate_noise_only_trips_while_earshot_adapts() {
        // Known earshot behaviour: broadband noise that starts abruptly
        // (here at -35 dBFS) scores above 0.5 for up to ~250 ms while the
        // model adapts, then settles around 0.25.
        let x = noise(ENGINE_RATE as usize * 3, 0.03, 12345);
        let mut vad = Vad::new(VadConfig::default());
        let d = run_frames(&mut vad, &x);
        assert!(d[15..].iter().all(|d| !d.is_speech), "noise still scored as speech after 300 ms");
    }

    #[test]
    fn espeak_fixture_bounds_are_close_to_true_edges() {
        let speech = fixture();
        let sil = ENGINE_RATE as usize;
        let mut x = vec![0.0f32; sil];
        x.extend_from_slice(&speech);
        x.extend(vec![0.0f32; sil]);
        let (e0, e1) = energy_edges(&speech);
        let (true_start, true_end) = (sil + e0, sil + e1);

        for cfg in [VadConfig::default(), VadConfig { pad_ms: 0, ..VadConfig::default() }] {
            let span = speech_bounds(&x, &cfg).expect("speech found");
            let pad = cfg.pad_ms as f64 / 1000.0;
            let ds = (span.start as f64 - true_start as f64) / f64::from(ENGINE_RATE) + pad;
            let de = (span.end as f64 - true_end as f64) / f64::from(ENGINE_RATE) - pad;
            eprintln!("pad {pad}: start err {:.0} ms, end err {:.0} ms", ds * 1000.0, de * 1000.0);
            assert!(ds.abs() <= 0.150, "start off by {:.0} ms", ds * 1000.0);
            assert!(de.abs() <= 0.150, "end off by {:.0} ms", de * 1000.0);
        }
    }

    #[test]
    fn espeak_fixture_in_noise_still_found() {
        let speech = fixture();
        let sil = ENGINE_RATE as usize;
        let mut x = vec![0.0f32; sil];
        x.extend_from_slice(&speech);
        x.extend(vec![0.0f32; sil]);
        let hiss = noise(x.len(), 0.005, 7);
        for (v, n) in x.iter_mut().zip(hiss) {
            *v += n;
        }
        let span = speech_bounds(&x, &VadConfig { pad_ms: 0, ..VadConfig::default() }).expect("speech found");
        let s = span.start as f64 / 16_000.0;
        let e = span.end as f64 / 16_000.0;
        assert!((0.8..1.2).contains(&s) && (1.6..2.0).contains(&e), "span {s:.3}..{e:.3}");
    }

    #[test]
    fn events_fire_once_per_utterance_with_true_frame_indices() {
        let speech = fixture();
        let mut x = vec![0.0f32; 16_000];
        x.extend_from_slice(&speech);
        x.extend(vec![0.0f32; 16_000]);
        x.extend_from_slice(&speech);
        x.extend(vec![0.0f32; 16_000]);
        let cfg = VadConfig::default();
        let mut vad = Vad::new(cfg.clone());
        let d = run_frames(&mut vad, &x);
        let events: Vec<(u64, VadEvent)> = d.iter().filter_map(|d| d.event.map(|e| (d.frame, e))).collect();
        assert_eq!(events.len(), 4, "{events:?}");
        for pair in events.chunks(2) {
            let (at0, VadEvent::SpeechStart { frame: s }) = pair[0] else { panic!("{events:?}") };
            let (at1, VadEvent::SpeechEnd { frame: e }) = pair[1] else { panic!("{events:?}") };
            // Reported onset/offset lie before the frame where they were decided.
            assert!(s <= at0 && at0 - s < u64::from(cfg.onset_frames()), "{events:?}");
            assert!(e <= at1 && at1 - e < u64::from(cfg.offset_frames()), "{events:?}");
            assert!(s < e);
        }
        // `speaking` is consistent with the events.
        assert!(!d.last().unwrap().speaking);
        assert!(vad.finish().is_none());
    }

    #[test]
    fn debounce_state_machine() {
        // Drive decide() directly with synthetic probabilities.
        let cfg = VadConfig { threshold: 0.5, min_speech_ms: 60, hangover_ms: 100, pad_ms: 0 };
        let mut vad = Vad::new(cfg.clone());
        let probs = [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
        let ev: Vec<_> = probs.iter().map(|&p| vad.decide(p)).collect();
        // Blip of 2 frames (< 3) ignored; run starting at 3 confirmed at 5.
        assert_eq!(ev[5].event, Some(VadEvent::SpeechStart { frame: 3 }));
        // Gap of 2 frames (< 5) bridged; final silence from frame 10 confirmed at 14.
        assert_eq!(ev[14].event, Some(VadEvent::SpeechEnd { frame: 10 }));
        assert_eq!(ev.iter().filter(|d| d.event.is_some()).count(), 2);
        assert!(ev[5..14].iter().all(|d| d.speaking));
        assert!(!ev[15].speaking);

        // Speech still open at the end: finish() closes it.
        let mut vad = Vad::new(cfg.clone());
        for p in [0.9, 0.9, 0.9, 0.9, 0.2] {
            vad.decide(p);
        }
        assert_eq!(vad.finish(), Some(VadEvent::SpeechEnd { frame: 4 }));
        let mut vad = Vad::new(cfg.clone());
        for p in [0.1, 0.9, 0.9, 0.9] {
            vad.decide(p);
        }
        assert_eq!(vad.finish(), Some(VadEvent::SpeechEnd { frame: 4 }));
        assert_eq!(vad.frames_processed(), 0);

        // Zero durations still need one frame.
        let mut vad = Vad::new(VadConfig { min_speech_ms: 0, hangover_ms: 0, ..cfg });
        assert_eq!(vad.decide(0.6).event, Some(VadEvent::SpeechStart { frame: 0 }));
        assert_eq!(vad.decide(0.4).event, Some(VadEvent::SpeechEnd { frame: 1 }));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut vad = Vad::new(VadConfig::default());
        assert_eq!(vad.process_frame(&[0.0; 256]), Err(VadError::FrameSize { expected: 320, got: 256 }));
        assert_eq!(vad.process_frame(&[]), Err(VadError::FrameSize { expected: 320, got: 0 }));
        let mut f = [0.0f32; FRAME_SAMPLES];
        f[7] = f32::NAN;
        assert_eq!(vad.process_frame(&f), Err(VadError::NonFinite { index: 7 }));
        assert_eq!(vad.frames_processed(), 0);
        // Out-of-range samples are clipped, not a panic (earshot debug-asserts).
        let loud: Vec<f32> = (0..FRAME_SAMPLES).map(|i| if i % 2 == 0 { 3.0 } else { -3.0 }).collect();
        let d = vad.process_frame(&loud).unwrap();
        assert!((0.0..=1.0).contains(&d.probability));
        // speech_bounds tolerates NaN and odd lengths.
        let mut x = vec![0.0f32; 1234];
        x[5] = f32::INFINITY;
        assert_eq!(speech_bounds(&x, &VadConfig::default()), None);
        // Bad thresholds are clamped.
        assert_eq!(Vad::new(VadConfig { threshold: f32::NAN, ..VadConfig::default() }).config().threshold, 0.5);
        assert_eq!(Vad::new(VadConfig { threshold: 7.0, ..VadConfig::default() }).config().threshold, 1.0);
    }

    #[test]
    fn reset_gives_identical_results() {
        let speech = fixture();
        let mut x = vec![0.0f32; 8000];
        x.extend_from_slice(&speech);
        x.extend(vec![0.0f32; 8000]);
        let mut vad = Vad::new(VadConfig::default());
        let a = run_frames(&mut vad, &x);
        vad.reset();
        let b = run_frames(&mut vad, &x);
        assert_eq!(a, b);
    }

    #[test]
    fn config_from_toml() {
        let cfg: VadConfig = toml::from_str("threshold = 0.6\nhangover_ms = 500").unwrap();
        assert_eq!(cfg, VadConfig { threshold: 0.6, hangover_ms: 500, ..VadConfig::default() });
        assert!(toml::from_str::<VadConfig>("threshold = 0.6\nhangover = 500").is_err());
        assert_eq!(toml::from_str::<VadConfig>("").unwrap(), VadConfig::default());
        assert!(VadConfig::default().validate().is_ok());
        assert!(VadConfig { threshold: 1.5, ..VadConfig::default() }.validate().is_err());
        assert!(VadConfig { threshold: f32::NAN, ..VadConfig::default() }.validate().is_err());
        assert!(VadConfig { hangover_ms: u32::MAX, ..VadConfig::default() }.validate().is_err());
    }
}

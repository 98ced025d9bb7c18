//! Adaptive endpointing: how much trailing silence ends the caller's turn.
//!
//! A fixed silence threshold either cuts callers off mid-sentence (too short)
//! or adds dead air to every turn (too long). The threshold here starts at
//! `base_silence_ms` and adapts:
//!
//! * to the caller: pauses the caller made *inside* turns (they went quiet
//!   and then carried on) are tracked as an exponentially weighted average
//!   that starts from a prior (the pause `base_silence_ms` already covers),
//!   so one long pause moves it part of the way and a habit moves it all
//!   the way; a slow, pausing speaker gets more room (1.5x their typical
//!   pause). A pause after words that looked unfinished ("Hi," / "my
//!   order number is") is explained by what was said, which the rule below
//!   covers, and says nothing about the caller's pace: it is not counted;
//! * to what was said: when the latest partial transcript looks unfinished
//!   (it ends in a connective such as "and" / "my" / "um", or holds fewer
//!   digits than the pending slot needs, e.g. half an order number), the
//!   threshold grows by `incomplete_extra_ms`.
//!
//! The result is clamped to `[min_silence_ms, max_silence_ms]`. Pure maths,
//! no clock: durations in, durations out.

use serde::Deserialize;

/// `[call.endpointing]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointingConfig {
    pub min_silence_ms: u32,
    pub base_silence_ms: u32,
    pub max_silence_ms: u32,
    /// Added when the words so far look unfinished.
    pub incomplete_extra_ms: u32,
    /// Trailing silence after which the final transcript and intent are
    /// computed speculatively (before the endpoint fires).
    pub speculate_after_ms: u32,
    /// Weight of a new in-turn pause in the caller's pause average (0..=1).
    pub pause_adapt_rate: f32,
}

impl Default for EndpointingConfig {
    fn default() -> Self {
        EndpointingConfig {
            min_silence_ms: 200,
            base_silence_ms: 300,
            max_silence_ms: 1200,
            incomplete_extra_ms: 500,
            speculate_after_ms: 120,
            pause_adapt_rate: 0.3,
        }
    }
}

impl EndpointingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.min_silence_ms <= self.base_silence_ms && self.base_silence_ms <= self.max_silence_ms) {
            return Err("call.endpointing: need min_silence_ms <= base_silence_ms <= max_silence_ms".into());
        }
        if self.min_silence_ms < 60 {
            return Err("call.endpointing.min_silence_ms: below 60 ms cuts words in half".into());
        }
        if self.speculate_after_ms > self.min_silence_ms {
            return Err("call.endpointing.speculate_after_ms: must not exceed min_silence_ms".into());
        }
        if !(0.0..=1.0).contains(&self.pause_adapt_rate) {
            return Err("call.endpointing.pause_adapt_rate: must be within 0..=1".into());
        }
        Ok(())
    }
}

/// Words after which a sentence rarely ends.
const CONNECTIVES: &[&str] = &[
    "and", "or", "but", "so", "because", "the", "a", "an", "my", "your", "to", "for", "of", "is", "was", "um", "uh", "er",
    "erm", "with", "from", "about", "it's", "its",
];

/// Room given beyond a caller's typical in-turn pause.
const PAUSE_ROOM: f32 = 1.5;

#[derive(Debug, Clone)]
pub struct Endpointer {
    cfg: EndpointingConfig,
    /// Average in-turn pause of this caller, ms (None until one is counted).
    typical_pause_ms: Option<f32>,
}

impl Endpointer {
    pub fn new(cfg: EndpointingConfig) -> Self {
        Endpointer { cfg, typical_pause_ms: None }
    }

    pub fn config(&self) -> &EndpointingConfig {
        &self.cfg
    }

    /// The caller paused for `pause_ms` after saying `words_before` (the
    /// latest transcript of the turn so far) and then kept talking.
    /// Returns whether the pause was counted in the caller's pace.
    pub fn observe_in_turn_pause(&mut self, pause_ms: u32, words_before: &str, pending_slot_min_digits: usize) -> bool {
        if looks_unfinished(words_before, pending_slot_min_digits) {
            return false;
        }
        // The prior: the longest pause the base threshold already leaves room for.
        let prior = self.cfg.base_silence_ms as f32 / PAUSE_ROOM;
        let avg = self.typical_pause_ms.unwrap_or(prior);
        self.typical_pause_ms = Some(avg + self.cfg.pause_adapt_rate * (pause_ms as f32 - avg));
        true
    }

    pub fn typical_pause_ms(&self) -> Option<f32> {
        self.typical_pause_ms
    }

    /// Silence that ends the turn, given the latest partial transcript and
    /// the digits a pending slot still needs (0 when none is pending).
    pub fn silence_needed_ms(&self, partial: &str, pending_slot_min_digits: usize) -> u32 {
        let mut needed = self.cfg.base_silence_ms as f32;
        if let Some(pause) = self.typical_pause_ms {
            needed = needed.max(pause * PAUSE_ROOM);
        }
        if looks_unfinished(partial, pending_slot_min_digits) {
            needed += self.cfg.incomplete_extra_ms as f32;
        }
        (needed.round() as u32).clamp(self.cfg.min_silence_ms, self.cfg.max_silence_ms)
    }
}

/// Whether the words so far look like the caller has more to say. The
/// recogniser's punctuation counts: a trailing comma or ellipsis is
/// unfinished, and a full stop, question or exclamation mark overrules a
/// final connective ("... where my order is.").
pub fn looks_unfinished(partial: &str, pending_slot_min_digits: usize) -> bool {
    let lower = partial.trim().to_lowercase();
    let trailing_off = lower.ends_with(',') || lower.ends_with("...") || lower.ends_with('…');
    let sentence_ended = !trailing_off && lower.ends_with(['.', '?', '!']);
    let last_word = lower.split_whitespace().last().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\''));
    if trailing_off || (!sentence_ended && last_word.is_some_and(|w| CONNECTIVES.contains(&w))) {
        return true;
    }
    if pending_slot_min_digits > 0 {
        let digits = crate::flow::slots::digits_in(&lower).map(|d| d.len()).unwrap_or(0);
        // Digits started but not enough yet: half an order number.
        if digits > 0 && digits < pending_slot_min_digits {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_threshold_for_a_finished_sentence() {
        let e = Endpointer::new(EndpointingConfig::default());
        assert_eq!(e.silence_needed_ms("Where is my order?", 0), 300);
    }

    #[test]
    fn unfinished_words_wait_longer() {
        let e = Endpointer::new(EndpointingConfig::default());
        assert_eq!(e.silence_needed_ms("I want to return the shoes and", 0), 800);
        assert_eq!(e.silence_needed_ms("my order number is", 0), 800);
        assert_eq!(e.silence_needed_ms("My order number is...", 0), 800);
        assert_eq!(e.silence_needed_ms("Hi, and", 0), 800);
        // the recogniser ended the sentence
        assert_eq!(e.silence_needed_ms("I'm calling to find out where my order is.", 0), 300);
        // half an order number while a slot waits for six digits
        assert_eq!(e.silence_needed_ms("it's four five six", 6), 800);
        assert_eq!(e.silence_needed_ms("it's four five six seven eight nine", 6), 300);
    }

    #[test]
    fn slow_callers_get_more_room_within_bounds() {
        let mut e = Endpointer::new(EndpointingConfig::default());
        // One 600 ms pause moves the 200 ms prior 30% of the way: 320 ms.
        assert!(e.observe_in_turn_pause(600, "I need help", 0));
        assert_eq!(e.silence_needed_ms("hello", 0), 480);
        // A habit moves it all the way: 1.5 x 600 ms.
        for _ in 0..20 {
            e.observe_in_turn_pause(600, "I need help", 0);
        }
        assert_eq!(e.silence_needed_ms("hello", 0), 900);
        for _ in 0..20 {
            e.observe_in_turn_pause(2000, "I need help", 0);
        }
        assert_eq!(e.silence_needed_ms("hello", 0), 1200, "clamped to max");
    }

    #[test]
    fn short_pauses_shorten_nothing_below_base() {
        let mut e = Endpointer::new(EndpointingConfig::default());
        for _ in 0..20 {
            e.observe_in_turn_pause(60, "well I", 0);
        }
        assert_eq!(e.silence_needed_ms("hello", 0), 300);
    }

    #[test]
    fn pauses_explained_by_unfinished_words_do_not_set_the_pace() {
        let mut e = Endpointer::new(EndpointingConfig::default());
        assert!(!e.observe_in_turn_pause(700, "Hi,", 0));
        assert!(!e.observe_in_turn_pause(900, "my order number is", 0));
        assert!(!e.observe_in_turn_pause(900, "it's four five six", 6));
        assert_eq!(e.typical_pause_ms(), None);
        assert_eq!(e.silence_needed_ms("Where is my order?", 0), 300);
    }

    #[test]
    fn config_is_checked() {
        let bad = EndpointingConfig { min_silence_ms: 500, base_silence_ms: 300, ..Default::default() };
        assert!(bad.validate().is_err());
        assert!(EndpointingConfig::default().validate().is_ok());
    }
}

//! The smart router: decides, per caller turn, which tier answers it (the
//! edge's own flow, the central reasoning cluster, or a person) from the
//! features the edge already has, and says why.
//!
//! Sans-IO and allocation-light: [`Router::decide`] is a pure function of the
//! [`TurnFeatures`] and the [`RouterConfig`]; every phrase list is compiled
//! once, in [`Router::new`], into a single Aho-Corasick automaton over
//! normalised words (lowercase, punctuation removed, whole words only).
//!
//! # Precedence (first rule that fires wins)
//!
//! 1. **The caller asks for a person**: the intent is one of
//!    `human_intents` (reason `human_intent`) or the transcript contains one
//!    of `human_phrases` (reason `caller_asked_for_human`) -> [`Tier::Human`].
//! 2. **The conversation is stuck**: `failed_attempts >= human_after_failures`
//!    (`too_many_failures`) or `repeats >= human_after_repeats`
//!    (`too_many_repeats`) -> [`Tier::Human`].
//! 3. **Edge-owned states**: in a flow state listed in `edge_states` (slot
//!    filling, where the deterministic digit parser answers) nothing below
//!    applies -> [`Tier::Edge`] (`edge_state`).
//! 4. **The turn needs the big model**, checked in this order:
//!    compliance phrases (`compliance`), complaint phrases (`complaint`),
//!    negotiation phrases (`negotiation`), `failed_attempts >=
//!    cluster_after_failures` (`repeated_failures`), `repeats >=
//!    cluster_after_repeats` (`repeated_intent`), low ASR confidence
//!    (`low_asr_confidence`), no intent or low intent confidence
//!    (`low_intent_confidence`), a small margin over the runner-up
//!    (`small_intent_margin`), many words (`long_utterance`), and last the
//!    combined difficulty score reaching `escalate_score`
//!    (`combined_signals`) -> [`Tier::Cluster`] — if the cluster is
//!    available. If it is not: [`Tier::Edge`] (or [`Tier::Human`] when
//!    `when_cluster_unavailable = "human"`) with reason
//!    `cluster_unavailable`; the rule that wanted the cluster is kept in
//!    [`RouteDecision::wanted_cluster_for`].
//! 5. Otherwise [`Tier::Edge`] (`confident`).
//!
//! # Score and difficulty
//!
//! Every decision carries the same continuous estimate, whatever rule fired:
//! `score` is a weighted sum of signals, each in 0..1 (intent confidence
//! shortfall, margin shortfall, ASR confidence shortfall, length, repeats,
//! failures, a sensitive topic, a long call); `difficulty` is `score` clamped
//! to 0..1, for outcome records.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

/// What the edge knows about one caller turn when it must choose a tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnFeatures<'a> {
    /// The intent label the edge classifier chose (None: no intent).
    pub intent: Option<&'a str>,
    /// The classifier's confidence in `intent`, 0..1.
    pub intent_confidence: f32,
    /// `intent_confidence` minus the runner-up's, 0..1.
    pub intent_margin: f32,
    /// The recogniser's confidence in the transcript, when it reports one.
    pub asr_confidence: Option<f32>,
    pub transcript: &'a str,
    /// Words in `transcript`.
    pub words: usize,
    /// The flow session's current state (e.g. its pending task or slot).
    pub flow_state: &'a str,
    /// How many times in a row the caller has given the same intent again.
    pub repeats: u32,
    /// Fallbacks and no-matches in this call so far.
    pub failed_attempts: u32,
    /// The turn number, from 1.
    pub turn: u32,
    /// At least one cluster endpoint can take a request now.
    pub cluster_available: bool,
}

/// Who answers the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The edge's own flow reply.
    Edge,
    /// The central reasoning cluster (a big model, streamed back).
    Cluster,
    /// A person: the call is transferred.
    Human,
}

/// Why the router chose its tier; stable snake_case names for logs and
/// outcome records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The classifier's intent is one of `human_intents`.
    HumanIntent,
    /// The transcript contains one of `human_phrases`.
    CallerAskedForHuman,
    /// `failed_attempts` reached `human_after_failures`.
    TooManyFailures,
    /// `repeats` reached `human_after_repeats`.
    TooManyRepeats,
    /// The flow state is one the edge always answers.
    EdgeState,
    /// A compliance phrase ("cancel my contract", "lawyer").
    Compliance,
    /// A complaint phrase.
    Complaint,
    /// A negotiation phrase.
    Negotiation,
    /// `failed_attempts` reached `cluster_after_failures`.
    RepeatedFailures,
    /// `repeats` reached `cluster_after_repeats`.
    RepeatedIntent,
    /// The recogniser's confidence is under `min_asr_confidence`.
    LowAsrConfidence,
    /// No intent, or its confidence is under `min_intent_confidence`.
    LowIntentConfidence,
    /// The margin over the runner-up is under `min_intent_margin`.
    SmallIntentMargin,
    /// At least `long_utterance_words` words.
    LongUtterance,
    /// No single rule fired but the combined score reached `escalate_score`.
    CombinedSignals,
    /// The turn wanted the cluster and no endpoint can take it.
    ClusterUnavailable,
    /// Nothing calls for escalation: the edge answers.
    Confident,
}

impl RouteReason {
    /// The snake_case name (the same as serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::HumanIntent => "human_intent",
            RouteReason::CallerAskedForHuman => "caller_asked_for_human",
            RouteReason::TooManyFailures => "too_many_failures",
            RouteReason::TooManyRepeats => "too_many_repeats",
            RouteReason::EdgeState => "edge_state",
            RouteReason::Compliance => "compliance",
            RouteReason::Complaint => "complaint",
            RouteReason::Negotiation => "negotiation",
            RouteReason::RepeatedFailures => "repeated_failures",
            RouteReason::RepeatedIntent => "repeated_intent",
            RouteReason::LowAsrConfidence => "low_asr_confidence",
            RouteReason::LowIntentConfidence => "low_intent_confidence",
            RouteReason::SmallIntentMargin => "small_intent_margin",
            RouteReason::LongUtterance => "long_utterance",
            RouteReason::CombinedSignals => "combined_signals",
            RouteReason::ClusterUnavailable => "cluster_unavailable",
            RouteReason::Confident => "confident",
        }
    }
}

impl std::fmt::Display for RouteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The router's answer for one turn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RouteDecision {
    pub tier: Tier,
    pub reason: RouteReason,
    /// Weighted sum of the difficulty signals (may exceed 1).
    pub score: f32,
    /// `score` clamped to 0..1, for outcome records.
    pub difficulty: f32,
    /// When `reason` is `cluster_unavailable`: the rule that wanted the cluster.
    pub wanted_cluster_for: Option<RouteReason>,
}

/// Where a turn goes when it wants the cluster and none is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableFallback {
    Edge,
    Human,
}

/// Weights of the difficulty signals in the score (each signal is 0..1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    pub intent_confidence: f32,
    pub intent_margin: f32,
    pub asr_confidence: f32,
    pub length: f32,
    pub repeats: f32,
    pub failures: f32,
    pub topic: f32,
    pub long_call: f32,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            intent_confidence: 0.30,
            intent_margin: 0.20,
            asr_confidence: 0.15,
            length: 0.10,
            repeats: 0.10,
            failures: 0.15,
            topic: 0.50,
            long_call: 0.05,
        }
    }
}

/// `[router]`: thresholds and phrase lists. Phrases match whole words,
/// case-insensitively, ignoring punctuation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Intent labels that mean "put me through to a person".
    pub human_intents: Vec<String>,
    /// Phrases that mean the same, whatever the classifier said.
    pub human_phrases: Vec<String>,
    pub compliance_phrases: Vec<String>,
    pub complaint_phrases: Vec<String>,
    pub negotiation_phrases: Vec<String>,
    /// Flow states the edge always answers (escalation rules 4.. skipped).
    pub edge_states: Vec<String>,
    /// Under this intent confidence the cluster answers.
    pub min_intent_confidence: f32,
    /// Under this margin over the runner-up the cluster answers.
    pub min_intent_margin: f32,
    /// Under this recogniser confidence the cluster answers.
    pub min_asr_confidence: f32,
    /// At least this many words: the cluster answers.
    pub long_utterance_words: usize,
    pub cluster_after_repeats: u32,
    pub human_after_repeats: u32,
    pub cluster_after_failures: u32,
    pub human_after_failures: u32,
    /// Turns after which the call counts as long (a score signal only).
    pub long_call_turns: u32,
    /// Combined score at which the cluster answers though no rule fired.
    pub escalate_score: f32,
    pub when_cluster_unavailable: UnavailableFallback,
    pub weights: ScoreWeights,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            human_intents: strings(&["human_agent"]),
            human_phrases: strings(&[
                "speak to a human",
                "talk to a human",
                "speak to a person",
                "talk to a person",
                "speak to someone",
                "talk to someone",
                "real person",
                "speak to an agent",
                "talk to an agent",
                "speak to a manager",
                "customer service representative",
                "operator",
            ]),
            compliance_phrases: strings(&[
                "cancel my contract",
                "terminate my contract",
                "lawyer",
                "attorney",
                "legal action",
                "sue",
                "refund dispute",
                "chargeback",
                "data protection",
                "delete my data",
                "gdpr",
            ]),
            complaint_phrases: strings(&[
                "complaint",
                "complain",
                "unacceptable",
                "ridiculous",
                "worst service",
                "not happy",
                "very disappointed",
                "fed up",
            ]),
            negotiation_phrases: strings(&[
                "discount",
                "better price",
                "better deal",
                "price match",
                "match the price",
                "waive the fee",
                "compensation",
                "negotiate",
            ]),
            edge_states: Vec::new(),
            min_intent_confidence: 0.55,
            min_intent_margin: 0.15,
            min_asr_confidence: 0.50,
            long_utterance_words: 40,
            cluster_after_repeats: 2,
            human_after_repeats: 4,
            cluster_after_failures: 2,
            human_after_failures: 4,
            long_call_turns: 12,
            escalate_score: 0.60,
            when_cluster_unavailable: UnavailableFallback::Edge,
            weights: ScoreWeights::default(),
        }
    }
}

fn unit(name: &str, v: f32) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("router.{name}: {v} must be within 0..1"))
    }
}

impl RouterConfig {
    pub fn validate(&self) -> Result<(), String> {
        unit("min_intent_confidence", self.min_intent_confidence)?;
        unit("min_intent_margin", self.min_intent_margin)?;
        unit("min_asr_confidence", self.min_asr_confidence)?;
        if !(self.escalate_score > 0.0 && self.escalate_score.is_finite()) {
            return Err(format!("router.escalate_score: {} must be > 0", self.escalate_score));
        }
        if self.long_utterance_words == 0 {
            return Err("router.long_utterance_words: must be at least 1".into());
        }
        if self.cluster_after_repeats == 0 || self.cluster_after_repeats > self.human_after_repeats {
            return Err("router.cluster_after_repeats: must be >= 1 and <= human_after_repeats".into());
        }
        if self.cluster_after_failures == 0 || self.cluster_after_failures > self.human_after_failures {
            return Err("router.cluster_after_failures: must be >= 1 and <= human_after_failures".into());
        }
        if self.long_call_turns == 0 {
            return Err("router.long_call_turns: must be at least 1".into());
        }
        let w = &self.weights;
        for (name, v) in [
            ("intent_confidence", w.intent_confidence),
            ("intent_margin", w.intent_margin),
            ("asr_confidence", w.asr_confidence),
            ("length", w.length),
            ("repeats", w.repeats),
            ("failures", w.failures),
            ("topic", w.topic),
            ("long_call", w.long_call),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("router.weights.{name}: {v} must be a finite number >= 0"));
            }
        }
        for (name, list) in [
            ("human_phrases", &self.human_phrases),
            ("compliance_phrases", &self.compliance_phrases),
            ("complaint_phrases", &self.complaint_phrases),
            ("negotiation_phrases", &self.negotiation_phrases),
        ] {
            for (i, phrase) in list.iter().enumerate() {
                if normalize(phrase).trim().is_empty() {
                    return Err(format!("router.{name}[{i}]: {phrase:?} has no words"));
                }
            }
        }
        if let Some(label) = self.human_intents.iter().find(|l| l.trim().is_empty()) {
            return Err(format!("router.human_intents: {label:?} is empty"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("invalid router config: {0}")]
    Config(String),
    #[error("cannot compile the router's phrase matcher: {0}")]
    Matcher(#[from] aho_corasick::BuildError),
}

/// Which list a phrase came from (bit positions in a match set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhraseKind {
    Human = 0,
    Compliance = 1,
    Complaint = 2,
    Negotiation = 3,
}

/// Lowercases, turns everything but letters, digits and apostrophes into
/// spaces, collapses runs of spaces and pads with one space at each end, so
/// that a padded phrase matches whole words only.
fn normalize_into(text: &str, out: &mut String) {
    out.clear();
    out.push(' ');
    for c in text.chars() {
        if c.is_alphanumeric() || c == '\'' {
            for lower in c.to_lowercase() {
                out.push(lower);
            }
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
}

/// `value < threshold`, with NaN counted as below (not confident).
fn below(value: f32, threshold: f32) -> bool {
    !matches!(value.partial_cmp(&threshold), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
}

fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    normalize_into(text, &mut out);
    out
}

/// The compiled router: one phrase automaton and the thresholds.
#[derive(Debug, Clone)]
pub struct Router {
    cfg: RouterConfig,
    phrases: AhoCorasick,
    /// Pattern id -> the list it came from.
    kinds: Vec<PhraseKind>,
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Result<Router, RouterError> {
        cfg.validate().map_err(RouterError::Config)?;
        let mut patterns = Vec::new();
        let mut kinds = Vec::new();
        for (kind, list) in [
            (PhraseKind::Human, &cfg.human_phrases),
            (PhraseKind::Compliance, &cfg.compliance_phrases),
            (PhraseKind::Complaint, &cfg.complaint_phrases),
            (PhraseKind::Negotiation, &cfg.negotiation_phrases),
        ] {
            for phrase in list {
                patterns.push(normalize(phrase));
                kinds.push(kind);
            }
        }
        // Standard semantics: overlapping search finds every phrase, also
        // those sharing the padding space with a neighbour.
        let phrases = AhoCorasickBuilder::new().match_kind(MatchKind::Standard).build(&patterns)?;
        Ok(Router { cfg, phrases, kinds })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Bit set of the phrase lists the transcript hits (bit = `PhraseKind`).
    fn phrase_hits(&self, transcript: &str) -> u8 {
        if self.kinds.is_empty() {
            return 0;
        }
        let mut text = String::with_capacity(transcript.len() + 2);
        normalize_into(transcript, &mut text);
        let mut hits = 0u8;
        for m in self.phrases.find_overlapping_iter(&text) {
            hits |= 1 << self.kinds[m.pattern().as_usize()] as u8;
        }
        hits
    }

    /// The weighted difficulty score (see the module docs).
    fn score(&self, f: &TurnFeatures, topic: bool) -> f32 {
        let c = &self.cfg;
        let w = &c.weights;
        let shortfall = |value: f32| (1.0 - value.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        let ratio = |value: f32, limit: f32| (value / limit).clamp(0.0, 1.0);
        let confidence = if f.intent.is_some() { f.intent_confidence } else { 0.0 };
        let mut score = w.intent_confidence * shortfall(confidence)
            + w.intent_margin * shortfall(if f.intent.is_some() { f.intent_margin } else { 0.0 })
            + w.asr_confidence * f.asr_confidence.map_or(0.0, shortfall)
            + w.length * ratio(f.words as f32, c.long_utterance_words as f32)
            + w.repeats * ratio(f.repeats as f32, c.human_after_repeats as f32)
            + w.failures * ratio(f.failed_attempts as f32, c.human_after_failures as f32)
            + w.long_call * ratio(f.turn as f32, c.long_call_turns as f32);
        if topic {
            score += w.topic;
        }
        if score.is_finite() {
            score
        } else {
            0.0
        }
    }

    /// Chooses the tier for one turn (precedence in the module docs).
    pub fn decide(&self, f: &TurnFeatures) -> RouteDecision {
        let c = &self.cfg;
        let hits = self.phrase_hits(f.transcript);
        let hit = |kind: PhraseKind| hits & (1 << kind as u8) != 0;
        let topic = hit(PhraseKind::Compliance) || hit(PhraseKind::Complaint) || hit(PhraseKind::Negotiation);
        let score = self.score(f, topic);
        let decision = |tier, reason| RouteDecision {
            tier,
            reason,
            score,
            difficulty: score.clamp(0.0, 1.0),
            wanted_cluster_for: None,
        };

        // 1. The caller asks for a person.
        if f.intent.is_some_and(|i| c.human_intents.iter().any(|h| h == i)) {
            return decision(Tier::Human, RouteReason::HumanIntent);
        }
        if hit(PhraseKind::Human) {
            return decision(Tier::Human, RouteReason::CallerAskedForHuman);
        }
        // 2. Stuck.
        if f.failed_attempts >= c.human_after_failures {
            return decision(Tier::Human, RouteReason::TooManyFailures);
        }
        if f.repeats >= c.human_after_repeats {
            return decision(Tier::Human, RouteReason::TooManyRepeats);
        }
        // 3. States the edge owns.
        if c.edge_states.iter().any(|s| s == f.flow_state) {
            return decision(Tier::Edge, RouteReason::EdgeState);
        }
        // 4. Needs the big model.
        let wanted = if hit(PhraseKind::Compliance) {
            Some(RouteReason::Compliance)
        } else if hit(PhraseKind::Complaint) {
            Some(RouteReason::Complaint)
        } else if hit(PhraseKind::Negotiation) {
            Some(RouteReason::Negotiation)
        } else if f.failed_attempts >= c.cluster_after_failures {
            Some(RouteReason::RepeatedFailures)
        } else if f.repeats >= c.cluster_after_repeats {
            Some(RouteReason::RepeatedIntent)
        } else if f.asr_confidence.is_some_and(|a| below(a, c.min_asr_confidence)) {
            Some(RouteReason::LowAsrConfidence)
        } else if f.intent.is_none() || below(f.intent_confidence, c.min_intent_confidence) {
            Some(RouteReason::LowIntentConfidence)
        } else if below(f.intent_margin, c.min_intent_margin) {
            Some(RouteReason::SmallIntentMargin)
        } else if f.words >= c.long_utterance_words {
            Some(RouteReason::LongUtterance)
        } else if score >= c.escalate_score {
            Some(RouteReason::CombinedSignals)
        } else {
            None
        };
        match wanted {
            Some(reason) if f.cluster_available => decision(Tier::Cluster, reason),
            Some(reason) => {
                let tier = match c.when_cluster_unavailable {
                    UnavailableFallback::Edge => Tier::Edge,
                    UnavailableFallback::Human => Tier::Human,
                };
                RouteDecision { wanted_cluster_for: Some(reason), ..decision(tier, RouteReason::ClusterUnavailable) }
            }
            // 5. The edge answers.
            None => decision(Tier::Edge, RouteReason::Confident),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confident<'a>(transcript: &'a str) -> TurnFeatures<'a> {
        TurnFeatures {
            intent: Some("order_status"),
            intent_confidence: 0.93,
            intent_margin: 0.80,
            asr_confidence: Some(0.9),
            transcript,
            words: transcript.split_whitespace().count(),
            flow_state: "idle",
            repeats: 0,
            failed_attempts: 0,
            turn: 2,
            cluster_available: true,
        }
    }

    fn router() -> Router {
        Router::new(RouterConfig::default()).unwrap()
    }

    #[test]
    fn confident_turn_stays_on_the_edge() {
        let d = router().decide(&confident("where is my order"));
        assert_eq!((d.tier, d.reason), (Tier::Edge, RouteReason::Confident));
        assert!(d.difficulty < 0.3, "{d:?}");
        assert_eq!(d.wanted_cluster_for, None);
    }

    #[test]
    fn human_intent_goes_to_a_person() {
        let mut f = confident("can I get some help");
        f.intent = Some("human_agent");
        let d = router().decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Human, RouteReason::HumanIntent));
    }

    #[test]
    fn human_phrase_goes_to_a_person_whatever_the_intent() {
        let d = router().decide(&confident("I want to SPEAK to a human, please!"));
        assert_eq!((d.tier, d.reason), (Tier::Human, RouteReason::CallerAskedForHuman));
        // Works without a cluster too.
        let mut f = confident("just get me a real person");
        f.cluster_available = false;
        assert_eq!(router().decide(&f).tier, Tier::Human);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        // "sue" is a compliance phrase; "pursue" and "issue" must not hit it.
        let d = router().decide(&confident("there is an issue I want to pursue with my order"));
        assert_eq!(d.reason, RouteReason::Confident, "{d:?}");
        let d = router().decide(&confident("I will sue you"));
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::Compliance));
    }

    #[test]
    fn adjacent_phrases_are_all_found() {
        // The human phrase shares its padding space with the compliance word.
        let d = router().decide(&confident("lawyer operator"));
        assert_eq!(d.reason, RouteReason::CallerAskedForHuman);
    }

    #[test]
    fn topics_go_to_the_cluster_in_order() {
        let r = router();
        let d = r.decide(&confident("I want to cancel my contract, this is unacceptable"));
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::Compliance));
        let d = r.decide(&confident("this is unacceptable, give me a discount"));
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::Complaint));
        let d = r.decide(&confident("can you waive the fee"));
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::Negotiation));
        assert!(d.score >= r.config().weights.topic);
    }

    #[test]
    fn low_confidence_or_small_margin_goes_to_the_cluster() {
        let r = router();
        let mut f = confident("hmm the thing with the stuff");
        f.intent_confidence = 0.40;
        assert_eq!(r.decide(&f).reason, RouteReason::LowIntentConfidence);
        let mut f = confident("hmm the thing with the stuff");
        f.intent = None;
        assert_eq!(r.decide(&f).reason, RouteReason::LowIntentConfidence);
        let mut f = confident("hmm the thing with the stuff");
        f.intent_margin = 0.05;
        let d = r.decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::SmallIntentMargin));
        let mut f = confident("hmm the thing with the stuff");
        f.intent_confidence = f32::NAN;
        assert_eq!(r.decide(&f).reason, RouteReason::LowIntentConfidence, "NaN is not confident");
    }

    #[test]
    fn low_asr_confidence_goes_to_the_cluster() {
        let mut f = confident("where is my order");
        f.asr_confidence = Some(0.3);
        assert_eq!(router().decide(&f).reason, RouteReason::LowAsrConfidence);
        f.asr_confidence = None;
        assert_eq!(router().decide(&f).reason, RouteReason::Confident, "no ASR confidence is no signal");
    }

    #[test]
    fn long_utterance_goes_to_the_cluster() {
        let text = "so I ordered a thing last week ".repeat(7);
        let f = confident(&text);
        assert!(f.words >= 40);
        let d = router().decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::LongUtterance));
        let mut f = confident(&text);
        f.words = 39;
        assert_eq!(router().decide(&f).reason, RouteReason::Confident);
    }

    #[test]
    fn repeats_and_failures_escalate_to_cluster_then_human() {
        let r = router();
        let mut f = confident("where is my order");
        f.repeats = 1;
        assert_eq!(r.decide(&f).tier, Tier::Edge);
        f.repeats = 2;
        assert_eq!(r.decide(&f).reason, RouteReason::RepeatedIntent);
        assert_eq!(r.decide(&f).tier, Tier::Cluster);
        f.repeats = 4;
        assert_eq!((r.decide(&f).tier, r.decide(&f).reason), (Tier::Human, RouteReason::TooManyRepeats));
        let mut f = confident("where is my order");
        f.failed_attempts = 2;
        assert_eq!(r.decide(&f).reason, RouteReason::RepeatedFailures);
        f.failed_attempts = 5;
        assert_eq!((r.decide(&f).tier, r.decide(&f).reason), (Tier::Human, RouteReason::TooManyFailures));
    }

    #[test]
    fn unavailable_cluster_falls_back_to_edge_or_human() {
        let mut f = confident("this is ridiculous");
        f.cluster_available = false;
        let d = router().decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Edge, RouteReason::ClusterUnavailable));
        assert_eq!(d.wanted_cluster_for, Some(RouteReason::Complaint));
        let cfg = RouterConfig { when_cluster_unavailable: UnavailableFallback::Human, ..RouterConfig::default() };
        let d = Router::new(cfg).unwrap().decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Human, RouteReason::ClusterUnavailable));
        // A confident turn is unaffected by the cluster's absence.
        let mut f = confident("where is my order");
        f.cluster_available = false;
        assert_eq!(router().decide(&f).reason, RouteReason::Confident);
    }

    #[test]
    fn edge_states_skip_escalation_but_not_the_human_rules() {
        let cfg = RouterConfig { edge_states: vec!["order_number".into()], ..RouterConfig::default() };
        let r = Router::new(cfg).unwrap();
        let mut f = confident("four five six seven one two");
        f.flow_state = "order_number";
        f.intent_confidence = 0.2;
        assert_eq!(r.decide(&f).reason, RouteReason::EdgeState);
        f.transcript = "operator";
        assert_eq!(r.decide(&f).tier, Tier::Human);
    }

    #[test]
    fn combined_signals_escalate_when_no_single_rule_fires() {
        // Each signal under its own threshold, together over escalate_score.
        let cfg = RouterConfig { escalate_score: 0.35, ..RouterConfig::default() };
        let r = Router::new(cfg).unwrap();
        let mut f = confident("where is my order then");
        f.intent_confidence = 0.60;
        f.intent_margin = 0.20;
        f.asr_confidence = Some(0.55);
        f.repeats = 1;
        f.failed_attempts = 1;
        let d = r.decide(&f);
        assert_eq!((d.tier, d.reason), (Tier::Cluster, RouteReason::CombinedSignals), "{d:?}");
        assert!(d.score >= 0.35 && d.difficulty <= 1.0);
        assert_eq!(router().decide(&f).reason, RouteReason::Confident, "default threshold is higher");
    }

    #[test]
    fn difficulty_grows_with_the_signals() {
        let r = router();
        let easy = r.decide(&confident("where is my order"));
        let mut f = confident("where is my order");
        f.intent_confidence = 0.3;
        f.intent_margin = 0.05;
        f.failed_attempts = 3;
        let hard = r.decide(&f);
        assert!(hard.difficulty > easy.difficulty + 0.3, "{easy:?} {hard:?}");
        assert!((0.0..=1.0).contains(&hard.difficulty));
    }

    #[test]
    fn reasons_have_stable_names() {
        assert_eq!(RouteReason::ClusterUnavailable.to_string(), "cluster_unavailable");
        assert_eq!(serde_json::to_string(&RouteReason::CallerAskedForHuman).unwrap(), "\"caller_asked_for_human\"");
        for reason in [RouteReason::LowAsrConfidence, RouteReason::CombinedSignals, RouteReason::TooManyRepeats] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("\"{reason}\""));
        }
        assert_eq!(serde_json::to_string(&Tier::Cluster).unwrap(), "\"cluster\"");
    }

    #[test]
    fn config_is_strict_and_validated() {
        let err = serde_json::from_str::<RouterConfig>(r#"{"min_intent_confidenc": 0.5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let cfg: RouterConfig = serde_json::from_str(r#"{"long_utterance_words": 12, "when_cluster_unavailable": "human"}"#).unwrap();
        assert_eq!(cfg.long_utterance_words, 12);
        assert_eq!(cfg.when_cluster_unavailable, UnavailableFallback::Human);
        let bad = RouterConfig { min_intent_confidence: 1.5, ..RouterConfig::default() };
        assert!(bad.validate().unwrap_err().contains("min_intent_confidence"));
        let bad = RouterConfig { cluster_after_repeats: 5, human_after_repeats: 3, ..RouterConfig::default() };
        assert!(matches!(Router::new(bad), Err(RouterError::Config(m)) if m.contains("cluster_after_repeats")));
        let bad = RouterConfig { complaint_phrases: vec!["  ?! ".into()], ..RouterConfig::default() };
        assert!(bad.validate().unwrap_err().contains("complaint_phrases[0]"));
    }
}

//! Outcome events: the facts a call produces, as CloudEvents 1.0 in JSON
//! structured mode (one JSON object holding the context attributes and the
//! `data`). These are the only domain types that go over the wire; the
//! vendor is paid per outcome, so each fact has exactly one event id.
//!
//! Three facts, each its own versioned type (`docs/OUTCOMES.md` documents
//! every field and shows an example of each):
//!
//! | fact | `type` | `dataschema` | `id` |
//! |---|---|---|---|
//! | one caller turn | `voice_edge.outcome.turn.v1` | `urn:voice-edge:outcome:turn:v1` | `{node}:{call_id}:turn:{n}` |
//! | one finished call | `voice_edge.outcome.call.v1` | `urn:voice-edge:outcome:call:v1` | `{node}:{call_id}:call` |
//! | the caller's rating | `voice_edge.outcome.satisfaction.v1` | `urn:voice-edge:outcome:satisfaction:v1` | `{node}:{call_id}:csat` |
//!
//! **Ids are deterministic.** Building the same fact twice (a retry after a
//! crash, a replay of the spool) gives the same id, which the shipper sends
//! as `Nats-Msg-Id` so the collector drops the copy, and which settlement
//! uses as the key of a billed fact. A node id never contains `:`, and the
//! id's last component names the fact, so two different facts never share
//! an id even when a call id contains `:`.
//!
//! **Versioning.** Adding an optional field (`Option`, or with a serde
//! default) keeps the version; consumers ignore fields they do not know.
//! Anything else (removing, renaming or retyping a field, changing a unit
//! or meaning, adding a value to an enum) is a new version: a new `type`
//! (`...v2`), a new `dataschema` and `schema_version: 2` in the data.
//!
//! Times are RFC 3339 strings ([`Timestamp`]) made from a `SystemTime` the
//! caller passes in; nothing here reads a clock. Records are validated when
//! an event is built and when one is parsed: a bad record is an
//! [`EventError`], never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// CloudEvents `specversion`.
pub const SPEC_VERSION: &str = "1.0";
/// CloudEvents `datacontenttype` of every outcome event.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// `schema_version` of the v1 records.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest node id (ASCII letters, digits, `.`, `_`, `-`).
pub const MAX_NODE_ID_LEN: usize = 64;
/// Longest call id (visible ASCII, no spaces).
pub const MAX_CALL_ID_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid node id {0:?}: 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidNodeId(String),
    #[error("invalid call id {0:?}: 1 to 128 visible ASCII characters, no spaces")]
    InvalidCallId(String),
    #[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-03-21T10:15:30.123Z")]
    InvalidTimestamp(String),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("unsupported CloudEvents specversion {0:?} (expected \"1.0\")")]
    SpecVersion(String),
    #[error("unknown outcome event type {0:?}")]
    UnknownType(String),
    #[error("event {attribute} is {found:?}, expected {expected:?}")]
    Mismatch { attribute: &'static str, expected: String, found: String },
    #[error("malformed outcome event JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::InvalidField { field, reason: reason.into() }
}

// ---------------------------------------------------------------------------
// Timestamps

/// An RFC 3339 date-time, kept as the string that goes on the wire.
///
/// [`Timestamp::from_system_time`] writes UTC with millisecond precision
/// (`2026-03-21T10:15:30.123Z`); [`Timestamp::parse`] accepts any RFC 3339
/// date-time (fraction optional, `Z` or a `±HH:MM` offset).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// Formats `t` as UTC, milliseconds, clamped to years 0000..=9999.
    pub fn from_system_time(t: SystemTime) -> Self {
        // Milliseconds since the epoch, floored (also before 1970).
        let ms: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_nanos() / 1_000_000) as i128,
            Err(e) => -((e.duration().as_nanos() as i128 + 999_999) / 1_000_000),
        };
        const MIN_MS: i128 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
        const MAX_MS: i128 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = ms.clamp(MIN_MS, MAX_MS) as i64;
        let secs = ms.div_euclid(1000);
        let milli = ms.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        Timestamp(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, sod % 3600 / 60, sod % 60))
    }

    /// Checks `s` is an RFC 3339 date-time (section 5.6) and keeps it as is.
    pub fn parse(s: &str) -> Result<Self, EventError> {
        if is_rfc3339(s.as_bytes()) {
            Ok(Timestamp(s.to_owned()))
        } else {
            Err(EventError::InvalidTimestamp(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::from_system_time(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_rfc3339(b: &[u8]) -> bool {
    fn num(b: &[u8], at: usize, n: usize) -> Option<u32> {
        let digits = b.get(at..at + n)?;
        digits.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    }
    fn at(b: &[u8], i: usize, c: u8) -> bool {
        b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c))
    }
    let (Some(year), Some(month), Some(day)) = (num(b, 0, 4), num(b, 5, 2), num(b, 8, 2)) else {
        return false;
    };
    let (Some(hour), Some(min), Some(sec)) = (num(b, 11, 2), num(b, 14, 2), num(b, 17, 2)) else {
        return false;
    };
    if !(at(b, 4, b'-') && at(b, 7, b'-') && at(b, 10, b'T') && at(b, 13, b':') && at(b, 16, b':')) {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return false;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return false;
    }
    let mut i = 19;
    if at(b, i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            matches!((num(b, i + 1, 2), num(b, i + 4, 2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
                && at(b, i + 3, b':')
                && i + 6 == b.len()
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Ids

/// Checks a node id: 1 to 64 of `A-Z a-z 0-9 . _ -` (never `:`, which
/// separates the parts of an event id).
pub fn validate_node_id(node: &str) -> Result<(), EventError> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_ID_LEN
        && node.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidNodeId(node.to_owned()))
    }
}

/// Checks a call id: 1 to 128 visible ASCII characters (no spaces or
/// control characters: it goes into message headers).
pub fn validate_call_id(call_id: &str) -> Result<(), EventError> {
    let ok = !call_id.is_empty() && call_id.len() <= MAX_CALL_ID_LEN && call_id.bytes().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(EventError::InvalidCallId(call_id.to_owned()))
    }
}

/// Id of turn `turn` of a call: `{node}:{call_id}:turn:{turn}`.
pub fn turn_event_id(node: &str, call_id: &str, turn: u32) -> String {
    format!("{node}:{call_id}:turn:{turn}")
}

/// Id of a call's record: `{node}:{call_id}:call`.
pub fn call_event_id(node: &str, call_id: &str) -> String {
    format!("{node}:{call_id}:call")
}

/// Id of a call's satisfaction rating: `{node}:{call_id}:csat`.
pub fn satisfaction_event_id(node: &str, call_id: &str) -> String {
    format!("{node}:{call_id}:csat")
}

/// Reads only the `id` of a serialized event (what the shipper needs for
/// `Nats-Msg-Id`) without validating the rest.
pub fn peek_id(payload: &[u8]) -> Result<String, EventError> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    Ok(serde_json::from_slice::<IdOnly>(payload)?.id)
}

/// A caller number as kept in a [`CallRecord`] when it must not be stored
/// in clear: `redacted:sha256:` and the first 16 bytes (32 hex digits) of
/// SHA-256 over the deployment's `salt` and the number. The same number
/// and salt always give the same value, so repeat callers stay countable.
pub fn redact_number(number: &str, salt: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(number.as_bytes());
    format!("redacted:sha256:{}", hex::encode(&h.finalize()[..16]))
}

// ---------------------------------------------------------------------------
// Shared pieces

/// Costs of a turn, or their sum over a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Wall-clock milliseconds of local model inference (ASR, intent, TTS).
    pub local_inference_ms: f64,
    pub cluster_prompt_tokens: u32,
    pub cluster_completion_tokens: u32,
    pub cluster_reasoning_tokens: u32,
}

impl Cost {
    /// Adds `other` into `self` (tokens saturate at `u32::MAX`).
    pub fn add(&mut self, other: &Cost) {
        self.local_inference_ms += other.local_inference_ms;
        self.cluster_prompt_tokens = self.cluster_prompt_tokens.saturating_add(other.cluster_prompt_tokens);
        self.cluster_completion_tokens = self.cluster_completion_tokens.saturating_add(other.cluster_completion_tokens);
        self.cluster_reasoning_tokens = self.cluster_reasoning_tokens.saturating_add(other.cluster_reasoning_tokens);
    }

    fn validate(&self, field: &'static str) -> Result<(), EventError> {
        non_negative(field, Some(self.local_inference_ms))
    }
}

fn non_negative(field: &'static str, v: Option<f64>) -> Result<(), EventError> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => Err(invalid(field, format!("{x} is not a finite number >= 0"))),
        _ => Ok(()),
    }
}

fn unit_interval(field: &'static str, x: f64) -> Result<(), EventError> {
    if x.is_finite() && (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(invalid(field, format!("{x} is not within 0..=1")))
    }
}

fn check_schema_version(v: u32) -> Result<(), EventError> {
    if v == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(invalid("schema_version", format!("{v}, expected {SCHEMA_VERSION}")))
    }
}

// ---------------------------------------------------------------------------
// Turn

/// The intent the classifier picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentDecision {
    pub label: String,
    /// Renormalised probability of `label` among the flow's labels, 0..=1.
    pub confidence: f64,
    /// Confidence of `label` minus that of the runner-up, 0..=1.
    pub margin: f64,
}

/// Where the turn was answered and why (free text until the router lands).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterDecision {
    pub tier: String,
    pub reason: String,
}

/// What the call did after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyAction {
    Continue,
    Transfer,
    EndCall,
}

/// A task's progress during a turn (same JSON shape as the flow's task events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TaskEventRecord {
    Attempted { task: String },
    SlotFilled { task: String, slot: String },
    Completed { task: String },
}

/// Per-turn latency in milliseconds; `None` where the stage did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnLatency {
    /// Caller's last speech to the end-of-utterance decision.
    pub end_of_utterance_ms: Option<f64>,
    /// End of utterance to the final transcript.
    pub asr_ms: Option<f64>,
    /// Final transcript to the intent decision.
    pub intent_ms: Option<f64>,
    /// Reply text to the first synthesized 20 ms frame.
    pub tts_first_frame_ms: Option<f64>,
    /// Caller's last speech to the first reply audio sent.
    pub voice_to_voice_ms: Option<f64>,
}

/// One caller turn: `voice_edge.outcome.turn.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub schema_version: u32,
    pub call_id: String,
    /// 0 for the first caller turn of the call, then 1, 2, ...
    pub turn: u32,
    pub started: Timestamp,
    pub ended: Timestamp,
    pub transcript: String,
    /// Digits the caller keyed for this turn (RFC 4733, SIP INFO, keypad),
    /// ending with `#`; absent for spoken turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
    pub intent: Option<IntentDecision>,
    pub router: Option<RouterDecision>,
    /// The reply spoken (empty when none).
    pub reply: String,
    pub action: ReplyAction,
    pub task: Option<String>,
    pub task_events: Vec<TaskEventRecord>,
    pub latency: TurnLatency,
    pub barge_in: bool,
    pub cost: Cost,
}

impl TurnRecord {
    pub fn validate(&self) -> Result<(), EventError> {
        check_schema_version(self.schema_version)?;
        validate_call_id(&self.call_id)?;
        if let Some(i) = &self.intent {
            unit_interval("intent.confidence", i.confidence)?;
            unit_interval("intent.margin", i.margin)?;
        }
        let l = &self.latency;
        non_negative("latency.end_of_utterance_ms", l.end_of_utterance_ms)?;
        non_negative("latency.asr_ms", l.asr_ms)?;
        non_negative("latency.intent_ms", l.intent_ms)?;
        non_negative("latency.tts_first_frame_ms", l.tts_first_frame_ms)?;
        non_negative("latency.voice_to_voice_ms", l.voice_to_voice_ms)?;
        self.cost.validate("cost.local_inference_ms")
    }
}

// ---------------------------------------------------------------------------
// Call

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sip,
    Webrtc,
    Local,
}

/// How the call ended, from the payer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Every task completed by the node's own models.
    AtEdge,
    /// Completed, with at least one turn answered by the central cluster.
    ByCluster,
    /// Handed to a human or another number.
    Transferred,
    /// The caller hung up before any task completed.
    Abandoned,
    /// The call broke (error, timeout) before any task completed.
    Failed,
}

/// Escalations to higher tiers, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Escalations {
    /// Always `tiers.len()`.
    pub count: u32,
    pub tiers: Vec<String>,
}

/// How hard the call was, 0 (trivial) ..= 1, and the features behind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Difficulty {
    pub score: f64,
    pub features: BTreeMap<String, f64>,
}

/// Voice-to-voice latency over the call's measured turns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub voice_to_voice_p50_ms: Option<f64>,
    pub voice_to_voice_p95_ms: Option<f64>,
    /// How many turns had a voice-to-voice figure.
    pub samples: u32,
}

impl LatencySummary {
    /// Nearest-rank p50 and p95 of `samples_ms` (non-finite values ignored).
    pub fn from_samples(samples_ms: &[f64]) -> Self {
        let mut v: Vec<f64> = samples_ms.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[k - 1])
        };
        LatencySummary {
            voice_to_voice_p50_ms: rank(0.50),
            voice_to_voice_p95_ms: rank(0.95),
            samples: u32::try_from(v.len()).unwrap_or(u32::MAX),
        }
    }
}

/// The flow that ran the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRef {
    pub name: String,
    pub version: u32,
}

/// One finished call: `voice_edge.outcome.call.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub schema_version: u32,
    pub call_id: String,
    pub channel: Channel,
    /// SIP trunk name, or the web site for WebRTC, or `local`.
    pub trunk_or_site: String,
    /// The number (or address) the caller dialled.
    pub number: String,
    /// The caller's number, possibly [`redact_number`]ed; `None` if unknown.
    pub caller: Option<String>,
    pub started: Timestamp,
    pub ended: Timestamp,
    pub duration_ms: u64,
    /// Caller turns taken.
    pub turns: u32,
    /// Intent labels in turn order (repeats kept).
    pub intents: Vec<String>,
    pub tasks_attempted: Vec<String>,
    pub tasks_completed: Vec<String>,
    pub resolution: Resolution,
    /// Call start to the first completed task.
    pub resolution_time_ms: Option<u64>,
    pub escalations: Escalations,
    pub difficulty: Difficulty,
    pub latency: LatencySummary,
    /// Sum of the turns' costs.
    pub cost: Cost,
    pub flow: FlowRef,
}

impl CallRecord {
    pub fn validate(&self) -> Result<(), EventError> {
        check_schema_version(self.schema_version)?;
        validate_call_id(&self.call_id)?;
        if self.escalations.count as usize != self.escalations.tiers.len() {
            return Err(invalid(
                "escalations.count",
                format!("{} but {} tiers listed", self.escalations.count, self.escalations.tiers.len()),
            ));
        }
        unit_interval("difficulty.score", self.difficulty.score)?;
        if let Some((k, v)) = self.difficulty.features.iter().find(|(_, v)| !v.is_finite()) {
            return Err(invalid("difficulty.features", format!("{k} = {v} is not finite")));
        }
        non_negative("latency.voice_to_voice_p50_ms", self.latency.voice_to_voice_p50_ms)?;
        non_negative("latency.voice_to_voice_p95_ms", self.latency.voice_to_voice_p95_ms)?;
        self.cost.validate("cost.local_inference_ms")
    }
}

// ---------------------------------------------------------------------------
// Satisfaction

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurveyMethod {
    /// Keypad answer to a spoken survey at the end of a phone call.
    DtmfSurvey,
    /// Stars in the web widget after a WebRTC call.
    WidgetRating,
}

/// The caller's rating of a call: `voice_edge.outcome.satisfaction.v1`.
/// It may arrive after the call's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SatisfactionRecord {
    pub schema_version: u32,
    pub call_id: String,
    /// 1 (worst) ..= 5 (best).
    pub score: u8,
    pub method: SurveyMethod,
    /// When the caller rated.
    pub time: Timestamp,
}

impl SatisfactionRecord {
    pub fn validate(&self) -> Result<(), EventError> {
        check_schema_version(self.schema_version)?;
        validate_call_id(&self.call_id)?;
        if !(1..=5).contains(&self.score) {
            return Err(invalid("score", format!("{} is not within 1..=5", self.score)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The envelope

/// Which fact an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Turn,
    Call,
    Satisfaction,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Turn, EventKind::Call, EventKind::Satisfaction];

    /// The CloudEvents `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Turn => "voice_edge.outcome.turn.v1",
            EventKind::Call => "voice_edge.outcome.call.v1",
            EventKind::Satisfaction => "voice_edge.outcome.satisfaction.v1",
        }
    }

    /// The CloudEvents `dataschema`.
    pub fn dataschema(self) -> &'static str {
        match self {
            EventKind::Turn => "urn:voice-edge:outcome:turn:v1",
            EventKind::Call => "urn:voice-edge:outcome:call:v1",
            EventKind::Satisfaction => "urn:voice-edge:outcome:satisfaction:v1",
        }
    }

    pub fn from_event_type(t: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.event_type() == t)
    }
}

/// The `data` of an outcome event.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeData {
    Turn(TurnRecord),
    Call(CallRecord),
    Satisfaction(SatisfactionRecord),
}

impl OutcomeData {
    pub fn kind(&self) -> EventKind {
        match self {
            OutcomeData::Turn(_) => EventKind::Turn,
            OutcomeData::Call(_) => EventKind::Call,
            OutcomeData::Satisfaction(_) => EventKind::Satisfaction,
        }
    }

    pub fn call_id(&self) -> &str {
        match self {
            OutcomeData::Turn(r) => &r.call_id,
            OutcomeData::Call(r) => &r.call_id,
            OutcomeData::Satisfaction(r) => &r.call_id,
        }
    }

    /// When the fact happened: a turn's or call's end, the rating's time.
    pub fn time(&self) -> &Timestamp {
        match self {
            OutcomeData::Turn(r) => &r.ended,
            OutcomeData::Call(r) => &r.ended,
            OutcomeData::Satisfaction(r) => &r.time,
        }
    }

    pub fn validate(&self) -> Result<(), EventError> {
        match self {
            OutcomeData::Turn(r) => r.validate(),
            OutcomeData::Call(r) => r.validate(),
            OutcomeData::Satisfaction(r) => r.validate(),
        }
    }

    /// The deterministic event id of this fact recorded by `node`.
    pub fn event_id(&self, node: &str) -> String {
        match self {
            OutcomeData::Turn(r) => turn_event_id(node, &r.call_id, r.turn),
            OutcomeData::Call(r) => call_event_id(node, &r.call_id),
            OutcomeData::Satisfaction(r) => satisfaction_event_id(node, &r.call_id),
        }
    }
}

/// A CloudEvents 1.0 outcome event. Built only through the validating
/// constructors (or parsed with [`OutcomeEvent::from_json`]), so the
/// attributes always agree with the data: `id` follows the id scheme,
/// `subject` is the call id, `time` is the fact's time and `type` and
/// `dataschema` name the data's version.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeEvent {
    id: String,
    source: String,
    data: OutcomeData,
}

impl OutcomeEvent {
    /// An event for `data` recorded by node `node` (the CloudEvents `source`).
    pub fn new(node: &str, data: OutcomeData) -> Result<Self, EventError> {
        validate_node_id(node)?;
        data.validate()?;
        Ok(OutcomeEvent { id: data.event_id(node), source: node.to_owned(), data })
    }

    pub fn turn(node: &str, record: TurnRecord) -> Result<Self, EventError> {
        Self::new(node, OutcomeData::Turn(record))
    }

    pub fn call(node: &str, record: CallRecord) -> Result<Self, EventError> {
        Self::new(node, OutcomeData::Call(record))
    }

    pub fn satisfaction(node: &str, record: SatisfactionRecord) -> Result<Self, EventError> {
        Self::new(node, OutcomeData::Satisfaction(record))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node that recorded the fact.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The call id.
    pub fn subject(&self) -> &str {
        self.data.call_id()
    }

    pub fn time(&self) -> &Timestamp {
        self.data.time()
    }

    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    pub fn event_type(&self) -> &'static str {
        self.kind().event_type()
    }

    pub fn dataschema(&self) -> &'static str {
        self.kind().dataschema()
    }

    pub fn data(&self) -> &OutcomeData {
        &self.data
    }

    pub fn into_data(self) -> OutcomeData {
        self.data
    }

    /// The structured-mode JSON (the spool payload and the message body).
    pub fn to_json(&self) -> Result<Vec<u8>, EventError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses and validates structured-mode JSON. Unknown attributes
    /// (CloudEvents extensions) and unknown data fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let wire: WireIn = serde_json::from_slice(bytes)?;
        wire.into_event()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    Turn(&'a TurnRecord),
    Call(&'a CallRecord),
    Satisfaction(&'a SatisfactionRecord),
}

#[derive(Serialize)]
struct WireOut<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    subject: &'a str,
    time: &'a Timestamp,
    datacontenttype: &'static str,
    dataschema: &'static str,
    data: DataRef<'a>,
}

impl Serialize for OutcomeEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let data = match &self.data {
            OutcomeData::Turn(r) => DataRef::Turn(r),
            OutcomeData::Call(r) => DataRef::Call(r),
            OutcomeData::Satisfaction(r) => DataRef::Satisfaction(r),
        };
        WireOut {
            specversion: SPEC_VERSION,
            id: &self.id,
            source: &self.source,
            ty: self.event_type(),
            subject: self.subject(),
            time: self.time(),
            datacontenttype: DATA_CONTENT_TYPE,
            dataschema: self.dataschema(),
            data,
        }
        .serialize(s)
    }
}

#[derive(Deserialize)]
struct WireIn {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    subject: String,
    time: Timestamp,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: serde_json::Value,
}

impl WireIn {
    fn into_event(self) -> Result<OutcomeEvent, EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::SpecVersion(self.specversion));
        }
        let kind = EventKind::from_event_type(&self.ty).ok_or_else(|| EventError::UnknownType(self.ty.clone()))?;
        let expect = |attribute: &'static str, expected: &str, found: &str| {
            if expected == found {
                Ok(())
            } else {
                Err(EventError::Mismatch { attribute, expected: expected.to_owned(), found: found.to_owned() })
            }
        };
        if let Some(ct) = &self.datacontenttype {
            expect("datacontenttype", DATA_CONTENT_TYPE, ct)?;
        }
        if let Some(ds) = &self.dataschema {
            expect("dataschema", kind.dataschema(), ds)?;
        }
        let data = match kind {
            EventKind::Turn => OutcomeData::Turn(serde_json::from_value(self.data)?),
            EventKind::Call => OutcomeData::Call(serde_json::from_value(self.data)?),
            EventKind::Satisfaction => OutcomeData::Satisfaction(serde_json::from_value(self.data)?),
        };
        let event = OutcomeEvent::new(&self.source, data)?;
        expect("id", &event.id, &self.id)?;
        expect("subject", event.subject(), &self.subject)?;
        expect("time", event.time().as_str(), self.time.as_str())?;
        Ok(event)
    }
}

impl<'de> Deserialize<'de> for OutcomeEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WireIn::deserialize(d)?.into_event().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, ms: u64) -> Timestamp {
        Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms))
    }

    fn turn() -> TurnRecord {
        TurnRecord {
            schema_version: SCHEMA_VERSION,
            call_id: "c-42".into(),
            turn: 3,
            started: at(1_774_088_130, 0),
            ended: at(1_774_088_134, 250),
            transcript: "where is my order".into(),
            dtmf: None,
            intent: Some(IntentDecision { label: "order_status".into(), confidence: 0.93, margin: 0.88 }),
            router: Some(RouterDecision { tier: "edge".into(), reason: "confident".into() }),
            reply: "What is your order number?".into(),
            action: ReplyAction::Continue,
            task: Some("order_status".into()),
            task_events: vec![TaskEventRecord::Attempted { task: "order_status".into() }],
            latency: TurnLatency { voice_to_voice_ms: Some(412.5), ..Default::default() },
            barge_in: false,
            cost: Cost { local_inference_ms: 180.0, ..Default::default() },
        }
    }

    fn call() -> CallRecord {
        CallRecord {
            schema_version: SCHEMA_VERSION,
            call_id: "c-42".into(),
            channel: Channel::Sip,
            trunk_or_site: "trunk-a".into(),
            number: "+15550100".into(),
            caller: Some(redact_number("+15550199", b"salt")),
            started: at(1_774_088_120, 0),
            ended: at(1_774_088_190, 0),
            duration_ms: 70_000,
            turns: 4,
            intents: vec!["order_status".into()],
            tasks_attempted: vec!["order_status".into()],
            tasks_completed: vec!["order_status".into()],
            resolution: Resolution::AtEdge,
            resolution_time_ms: Some(31_000),
            escalations: Escalations::default(),
            difficulty: Difficulty { score: 0.2, features: BTreeMap::from([("turns".into(), 0.1)]) },
            latency: LatencySummary::from_samples(&[400.0, 380.0, 520.0]),
            cost: Cost::default(),
            flow: FlowRef { name: "retail".into(), version: 3 },
        }
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(Timestamp::from_system_time(UNIX_EPOCH).as_str(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5).as_str(), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_774_088_130, 999).as_str(), "2026-03-21T10:15:30.999Z");
        let before = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(Timestamp::from_system_time(before).as_str(), "1969-12-31T23:59:59.998Z");
        // Every formatted time parses back, across leap years and centuries.
        for days in (-800_000i64..800_000).step_by(997) {
            let t = if days >= 0 {
                UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400 + 3_723)
            } else {
                UNIX_EPOCH - Duration::from_secs((-days) as u64 * 86_400 - 3_723)
            };
            let s = Timestamp::from_system_time(t);
            assert!(Timestamp::parse(s.as_str()).is_ok(), "{s}");
        }
    }

    #[test]
    fn rfc3339_parsing() {
        for ok in ["2026-03-21T10:15:30Z", "2026-03-21t10:15:30.1+05:30", "2024-02-29T23:59:60.123456789-00:00"] {
            assert!(Timestamp::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2026-03-21",
            "2026-03-21 10:15:30Z",
            "2026-02-29T10:15:30Z",
            "2026-13-01T10:15:30Z",
            "2026-03-21T24:00:00Z",
            "2026-03-21T10:15:30.Z",
            "2026-03-21T10:15:30+0530",
            "2026-03-21T10:15:30Zjunk",
            "٢٠٢٦-03-21T10:15:30Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_follow_the_scheme() {
        let e = OutcomeEvent::turn("edge-7", turn()).unwrap();
        assert_eq!(e.id(), "edge-7:c-42:turn:3");
        assert_eq!(OutcomeEvent::call("edge-7", call()).unwrap().id(), "edge-7:c-42:call");
        let csat = SatisfactionRecord {
            schema_version: 1,
            call_id: "c-42".into(),
            score: 5,
            method: SurveyMethod::DtmfSurvey,
            time: at(1_774_088_200, 0),
        };
        assert_eq!(OutcomeEvent::satisfaction("edge-7", csat).unwrap().id(), "edge-7:c-42:csat");
        // Deterministic: the same fact twice gives the same id and bytes.
        let a = OutcomeEvent::turn("edge-7", turn()).unwrap().to_json().unwrap();
        let b = OutcomeEvent::turn("edge-7", turn()).unwrap().to_json().unwrap();
        assert_eq!(a, b);
        assert_eq!(peek_id(&a).unwrap(), "edge-7:c-42:turn:3");
    }

    #[test]
    fn envelope_round_trip_and_attributes() {
        let e = OutcomeEvent::call("edge-7", call()).unwrap();
        let json = e.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "voice_edge.outcome.call.v1");
        assert_eq!(v["dataschema"], "urn:voice-edge:outcome:call:v1");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["subject"], "c-42");
        assert_eq!(v["source"], "edge-7");
        assert_eq!(v["time"], "2026-03-21T10:16:30.000Z");
        assert_eq!(v["data"]["resolution"], "at_edge");
        assert_eq!(v["data"]["channel"], "sip");
        assert_eq!(v["data"]["schema_version"], 1);
        assert_eq!(OutcomeEvent::from_json(&json).unwrap(), e);
        let t = OutcomeEvent::turn("edge-7", turn()).unwrap();
        let tj = t.to_json().unwrap();
        let tv: serde_json::Value = serde_json::from_slice(&tj).unwrap();
        assert_eq!(tv["data"]["task_events"][0]["event"], "attempted");
        assert_eq!(tv["data"]["action"], "continue");
        assert_eq!(OutcomeEvent::from_json(&tj).unwrap(), t);
    }

    #[test]
    fn unknown_fields_are_ignored_additive_rule() {
        let e = OutcomeEvent::turn("edge-7", turn()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&e.to_json().unwrap()).unwrap();
        v["traceparent"] = "00-abc".into();
        v["data"]["new_optional_field"] = 1.into();
        let back = OutcomeEvent::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn invalid_input_is_an_error_not_a_panic() {
        assert!(matches!(OutcomeEvent::turn("edge:7", turn()), Err(EventError::InvalidNodeId(_))));
        let mut r = turn();
        r.call_id = "has space".into();
        assert!(matches!(OutcomeEvent::turn("n", r), Err(EventError::InvalidCallId(_))));
        let mut r = turn();
        r.latency.asr_ms = Some(f64::NAN);
        assert!(OutcomeEvent::turn("n", r).is_err());
        let mut r = turn();
        r.schema_version = 2;
        assert!(OutcomeEvent::turn("n", r).is_err());
        let mut c = call();
        c.escalations.count = 1;
        assert!(OutcomeEvent::call("n", c).is_err());
        let mut c = call();
        c.difficulty.score = 1.5;
        assert!(OutcomeEvent::call("n", c).is_err());
        let csat = SatisfactionRecord {
            schema_version: 1,
            call_id: "c".into(),
            score: 6,
            method: SurveyMethod::WidgetRating,
            time: at(0, 0),
        };
        assert!(OutcomeEvent::satisfaction("n", csat).is_err());

        let good = OutcomeEvent::turn("edge-7", turn()).unwrap().to_json().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let tamper = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut w = v.clone();
            f(&mut w);
            OutcomeEvent::from_json(&serde_json::to_vec(&w).unwrap())
        };
        assert!(matches!(tamper(&|w| w["id"] = "other".into()), Err(EventError::Mismatch { attribute: "id", .. })));
        assert!(matches!(tamper(&|w| w["subject"] = "c-1".into()), Err(EventError::Mismatch { .. })));
        assert!(matches!(tamper(&|w| w["specversion"] = "0.3".into()), Err(EventError::SpecVersion(_))));
        assert!(matches!(tamper(&|w| w["type"] = "x.v9".into()), Err(EventError::UnknownType(_))));
        assert!(matches!(
            tamper(&|w| w["dataschema"] = "urn:voice-edge:outcome:call:v1".into()),
            Err(EventError::Mismatch { attribute: "dataschema", .. })
        ));
        assert!(tamper(&|w| w["time"] = "yesterday".into()).is_err());
        assert!(tamper(&|w| w["data"]["turn"] = (-1).into()).is_err());
        for cut in 0..good.len() {
            assert!(OutcomeEvent::from_json(&good[..cut]).is_err());
        }
    }

    #[test]
    fn latency_summary_nearest_rank() {
        let s = LatencySummary::from_samples(&[]);
        assert_eq!((s.voice_to_voice_p50_ms, s.samples), (None, 0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = LatencySummary::from_samples(&v);
        assert_eq!((s.voice_to_voice_p50_ms, s.voice_to_voice_p95_ms, s.samples), (Some(50.0), Some(95.0), 100));
    }

    #[test]
    fn redaction_is_stable_and_salted() {
        let a = redact_number("+15550199", b"s1");
        assert_eq!(a, redact_number("+15550199", b"s1"));
        assert_ne!(a, redact_number("+15550199", b"s2"));
        assert!(a.starts_with("redacted:sha256:") && a.len() == "redacted:sha256:".len() + 32);
    }

    /// Every JSON example in docs/OUTCOMES.md parses as a valid event.
    #[test]
    fn documented_examples_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OUTCOMES.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut kinds = Vec::new();
        let mut rest = doc.as_str();
        while let Some(start) = rest.find("```json\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").unwrap();
            let e =
                OutcomeEvent::from_json(&body.as_bytes()[..end]).unwrap_or_else(|e| panic!("{e}\n{}", &body[..end]));
            kinds.push(e.kind());
            rest = &body[end..];
        }
        for k in EventKind::ALL {
            assert!(kinds.contains(&k), "no example of {k:?}");
        }
    }
}

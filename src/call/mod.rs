//! One call's conversation, as a sans-IO state machine.
//!
//! [`Call`] is fed the caller's 20 ms frames (16 kHz mono), engine results,
//! DTMF digits and `now`; it emits [`Output`]s: commands for the engine
//! ("transcribe this", "classify that", "speak this"), 20 ms frames of agent
//! speech to send, cancellations, hand-off and hang-up, and events for the
//! transcript and the turn records. It never reads a clock, sleeps, spawns or
//! touches a socket: a driver task owns the IO and calls
//! [`Call::handle_audio`], [`Call::handle_timeout`] (at [`Call::poll_timeout`])
//! and [`Call::handle_engine`], then drains [`Call::poll_output`]. Tests drive
//! it on a virtual clock, faster than real time.
//!
//! ```text
//!   Listening ──speech onset──> CallerSpeaking ──endpoint──> Thinking ──reply audio──> AgentSpeaking
//!       ^                          │  ^ (caller goes on:          │ (filler if slow)        │
//!       │                          │  │  speculation discarded)    │                         │ barge-in
//!       └──────────────────────────┴──┴────────────────────────────┴─────── playout done ────┘
//!   AgentSpeaking ──transfer reply done──> Transferring;  goodbye done ──> Survey (if the flow has one) ──> Ended
//!   hang-up (any state) ──> Ended
//! ```
//!
//! * **Streaming recognition and speculation.** While the caller speaks a
//!   partial transcript is requested every `partial_interval_ms`. After
//!   `speculate_after_ms` of trailing silence the final transcript, intent,
//!   flow reply and speech are computed speculatively on a copy of the flow
//!   session; when the endpoint fires the answer is usually ready, and if the
//!   caller goes on instead it is cancelled and counted.
//! * **Endpointing** is adaptive ([`endpoint::Endpointer`]).
//! * **Barge-in.** Caller speech during playout (louder than the expected
//!   echo of what we play) pauses the playout after `barge_in.min_speech_ms`.
//!   A burst that ends quickly and transcribes to a backchannel ("mm-hm",
//!   "okay") resumes the playout where it stopped (a false barge-in); anything
//!   else drops the rest of the reply and becomes the caller's next turn.
//! * **No dead air.** If no reply audio is ready `filler_after_ms` after the
//!   endpoint, a short filler is spoken once.
//! * **Routing** ([`routing`]). Each spoken turn's intent result goes through
//!   the [`router::Router`]: the edge answers (the flow's reply), a person
//!   does (the flow's hand-off line, then [`Command::Transfer`]), or the
//!   central cluster does ([`escalation`]: [`Command::Escalate`] at the
//!   endpoint, its sentences spoken as they stream in, the flow's reply as the
//!   fallback when the cluster is silent past `cluster_first_sentence_ms`).
//!   Keyed (DTMF) turns and turns with nothing heard stay on the edge.
//! * **Satisfaction survey** ([`survey`]). After the goodbye of a call the
//!   flow ends, a flow with `[survey]` asks for a 1-5 rating by keypad.

mod barge_in;
pub mod endpoint;
pub mod escalation;
pub mod router;
pub mod routing;
pub mod survey;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::flow::{FlowAction, FlowReply, FlowSession, TaskEvent};
use crate::media::vad::{Vad, VadConfig};
use crate::media::{ENGINE_RATE, FRAME_MS, FRAME_SAMPLES};
use crate::proto::openai::{ChatMessage, TurnContext};
use barge_in::Probe;
use endpoint::{Endpointer, EndpointingConfig};
pub use escalation::ClusterTurnOutcome;
use escalation::ClusterStream;
use router::{RouteDecision, RouteReason, Router, RouterConfig};
pub use routing::TurnTier;
use survey::SurveyRun;

const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// `[call.barge_in]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BargeInConfig {
    pub enabled: bool,
    /// Caller speech during playout that pauses it.
    pub min_speech_ms: u32,
    /// A paused burst shorter than this may be a backchannel.
    pub backchannel_max_ms: u32,
    /// Words that, alone, are a backchannel rather than an interruption.
    pub backchannel_words: Vec<String>,
    /// How much quieter than our playout its echo is expected to come back.
    pub echo_return_loss_db: f32,
    /// Caller audio must exceed the echo estimate by this much to count.
    pub echo_margin_db: f32,
    /// How long after a played frame its echo may still arrive.
    pub echo_tail_ms: u32,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        BargeInConfig {
            enabled: true,
            min_speech_ms: 120,
            backchannel_max_ms: 700,
            backchannel_words: ["mm-hm", "mhm", "mm", "uh-huh", "okay", "ok", "yeah", "yes", "right", "sure", "alright", "hmm"]
                .map(String::from)
                .to_vec(),
            echo_return_loss_db: 12.0,
            echo_margin_db: 6.0,
            echo_tail_ms: 250,
        }
    }
}

/// `[call]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CallConfig {
    pub endpointing: EndpointingConfig,
    pub barge_in: BargeInConfig,
    /// Request a partial transcript this often while the caller speaks.
    pub partial_interval_ms: u32,
    /// Have the intent model evaluate each partial transcript while the
    /// caller speaks, so the turn's classification has less left to do.
    pub warm_intent: bool,
    /// Longer caller speech is cut into a turn.
    pub max_utterance_ms: u32,
    /// Speak `filler_text` when no reply audio is ready this long after the endpoint.
    pub filler_after_ms: u32,
    pub filler_text: String,
    /// An escalated turn falls back to the edge when the cluster has sent no
    /// sentence this long after the endpoint (the filler covers the wait).
    pub cluster_first_sentence_ms: u32,
    /// Spoken instead of the flow's reply when the cluster fails; unset: the
    /// flow's own reply for the intent.
    pub cluster_fallback_text: Option<String>,
    /// Conversation messages sent with an escalation (the caller's turn included).
    pub cluster_history_messages: usize,
    /// The hand-off line when the router picks a person and the flow has no
    /// transfer intent to speak its own.
    pub handoff_text: String,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            endpointing: EndpointingConfig::default(),
            barge_in: BargeInConfig::default(),
            partial_interval_ms: 500,
            warm_intent: true,
            max_utterance_ms: 20_000,
            filler_after_ms: 900,
            filler_text: "One moment.".into(),
            cluster_first_sentence_ms: 1200,
            cluster_fallback_text: None,
            cluster_history_messages: 12,
            handoff_text: "Let me connect you to one of my colleagues.".into(),
        }
    }
}

impl CallConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.endpointing.validate()?;
        let b = &self.barge_in;
        if b.min_speech_ms < FRAME_MS || b.min_speech_ms > 1000 {
            return Err("call.barge_in.min_speech_ms: must be within 20..=1000".into());
        }
        if b.backchannel_max_ms < b.min_speech_ms {
            return Err("call.barge_in.backchannel_max_ms: must be at least min_speech_ms".into());
        }
        if !(0.0..=60.0).contains(&b.echo_return_loss_db) || !(0.0..=40.0).contains(&b.echo_margin_db) {
            return Err("call.barge_in: echo_return_loss_db must be within 0..=60 and echo_margin_db within 0..=40".into());
        }
        if self.partial_interval_ms < 100 {
            return Err("call.partial_interval_ms: below 100 ms floods the recogniser".into());
        }
        if self.max_utterance_ms < 2000 {
            return Err("call.max_utterance_ms: must be at least 2000".into());
        }
        if self.filler_text.trim().is_empty() {
            return Err("call.filler_text: must not be empty".into());
        }
        if !(200..=10_000).contains(&self.cluster_first_sentence_ms) {
            return Err("call.cluster_first_sentence_ms: must be within 200..=10000".into());
        }
        if self.cluster_fallback_text.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err("call.cluster_fallback_text: must not be empty when set".into());
        }
        if !(2..=64).contains(&self.cluster_history_messages) {
            return Err("call.cluster_history_messages: must be within 2..=64".into());
        }
        if self.handoff_text.trim().is_empty() {
            return Err("call.handoff_text: must not be empty".into());
        }
        Ok(())
    }
}

/// Where the conversation is. Serialized as [`CallState::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Listening,
    CallerSpeaking,
    Thinking,
    AgentSpeaking,
    Transferring,
    /// The post-call satisfaction survey: prompt, keyed rating, thanks.
    Survey,
    Ended,
}

impl CallState {
    /// The state's name in JSON, logs and the widget (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Listening => "listening",
            CallState::CallerSpeaking => "caller_speaking",
            CallState::Thinking => "thinking",
            CallState::AgentSpeaking => "agent_speaking",
            CallState::Transferring => "transferring",
            CallState::Survey => "survey",
            CallState::Ended => "ended",
        }
    }
}

impl Serialize for CallState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Identifies one engine request of this call.
pub type RequestId = u64;

/// Work for the engine. Results come back through [`Call::handle_engine`]
/// with the same id; [`Command::Cancel`] means the result is no longer wanted.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Transcribe 16 kHz mono audio; `partial` hypotheses may be rough.
    Transcribe { id: RequestId, audio: Arc<[f32]>, partial: bool, prompt: Option<String> },
    /// Classify what the caller said among the flow's intents.
    Classify { id: RequestId, text: String },
    /// The caller's words so far (the latest partial transcript), so the
    /// intent model can evaluate them before the turn ends. Nothing comes
    /// back; the driver may drop it when the engine is busy.
    WarmIntent { text: String },
    /// Speak text; the result is 16 kHz mono audio.
    Synthesize { id: RequestId, text: String },
    /// Answer the caller's turn with the central cluster: stream the answer
    /// back as [`EngineResult::ClusterSentence`]s, then one
    /// [`EngineResult::ClusterDone`]. `history` is the conversation so far,
    /// ending with the caller's turn.
    Escalate { id: RequestId, context: TurnContext, history: Vec<ChatMessage> },
    Cancel { id: RequestId },
    /// One 20 ms frame of agent audio to send now.
    SendAudio(Vec<f32>),
    /// Hand the caller to a person (SIP REFER or the channel's equivalent).
    Transfer,
    Hangup,
}

/// A turn's figures, for logs, metrics and outcome records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnRecord {
    pub turn: u32,
    pub transcript: String,
    pub intent: Option<String>,
    pub intent_confidence: f32,
    /// Confidence minus the runner-up's.
    pub intent_margin: f32,
    pub reply: String,
    pub action: Option<FlowAction>,
    pub task: Option<String>,
    pub task_events: Vec<TaskEvent>,
    pub dtmf: Option<String>,
    /// Caller's last speech frame to the endpoint decision.
    pub end_of_utterance_ms: f64,
    pub asr_ms: Option<f64>,
    pub intent_ms: Option<f64>,
    /// Speech request to its audio arriving.
    pub tts_ms: Option<f64>,
    /// Caller's last speech frame to the first reply frame sent.
    pub voice_to_voice_ms: Option<f64>,
    /// The answer was computed during the trailing silence.
    pub speculative: bool,
    pub filler: bool,
    /// The caller interrupted this turn's reply.
    pub barged_in: bool,
    /// The caller's last speech frame, ms after the call was answered.
    pub speech_end_ms: f64,
    /// When the reply finished (or was interrupted), ms after the call was answered.
    pub completed_ms: f64,
    /// Who answered: the edge, the cluster, the edge after the cluster
    /// failed (`edge_fallback`), or a person (the hand-off line was spoken).
    pub tier: TurnTier,
    /// Why the router chose the tier; None for turns it did not route
    /// (keyed digits, nothing heard).
    pub route_reason: Option<RouteReason>,
    /// The router's difficulty estimate, 0..=1.
    pub difficulty: Option<f32>,
    /// The turn was sent to the cluster (answered by it or not).
    pub escalated: bool,
    pub cluster_prompt_tokens: u32,
    pub cluster_completion_tokens: u32,
    pub cluster_reasoning_tokens: u32,
    /// Escalation (at the endpoint) to the cluster's first sentence.
    pub cluster_first_sentence_ms: Option<f64>,
    /// Why the cluster did not (fully) answer.
    pub cluster_error: Option<String>,
}

// A handful of events per turn: the size of the turn-record variant is not worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    State { state: CallState },
    PartialTranscript { text: String },
    Transcript { turn: u32, text: String },
    AgentReply { turn: u32, text: String },
    /// Playout paused for possible barge-in.
    PlayoutPaused,
    /// The pause was a backchannel or noise; playout resumed.
    PlayoutResumed { heard: String },
    BargeIn,
    SpeculationDiscarded,
    FillerSpoken,
    TurnCompleted(TurnRecord),
    EngineFailed { id: RequestId, error: String },
    /// The caller's keyed rating in the post-call survey, 1 (worst) ..= 5.
    Satisfaction { score: u8 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Command(Command),
    Event(CallEvent),
}

/// An intent decision as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentResult {
    pub label: String,
    pub confidence: f32,
    pub margin: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineResult {
    Transcript { id: RequestId, text: String },
    Intent { id: RequestId, intent: IntentResult },
    Speech { id: RequestId, audio: Vec<f32> },
    /// One complete sentence of an escalated turn's answer, in order.
    ClusterSentence { id: RequestId, text: String },
    /// The escalated turn's answer is over (the last result for its id).
    ClusterDone { id: RequestId, outcome: ClusterTurnOutcome },
    Failed { id: RequestId, error: String },
}

impl EngineResult {
    /// The request this result answers.
    pub fn id(&self) -> RequestId {
        match self {
            EngineResult::Transcript { id, .. }
            | EngineResult::Intent { id, .. }
            | EngineResult::Speech { id, .. }
            | EngineResult::ClusterSentence { id, .. }
            | EngineResult::ClusterDone { id, .. }
            | EngineResult::Failed { id, .. } => *id,
        }
    }
}

/// Counters over the whole call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallCounters {
    pub turns: u32,
    pub barge_ins: u32,
    /// Playout pauses that resumed (backchannels, coughs, noise).
    pub false_barge_ins: u32,
    /// Caller frames judged to be our own echo.
    pub echo_frames: u32,
    pub speculation_discarded: u32,
    pub fillers: u32,
    pub engine_failures: u32,
    /// Turns sent to the cluster.
    pub escalations: u32,
    /// Escalated turns the edge answered after all (deadline or failure).
    pub cluster_fallbacks: u32,
    /// Escalations that ended in an error (before or after speaking).
    pub cluster_failures: u32,
    /// Turns the router handed to a person.
    pub handoffs: u32,
}

/// What an in-flight request is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Purpose {
    Partial,
    Final { turn: u64 },
    Intent { turn: u64 },
    Reply { turn: u64 },
    Filler,
    Greeting,
    Probe,
    Escalation { turn: u64 },
    ClusterSpeech { turn: u64 },
    SurveyPrompt,
    SurveyThanks,
}

/// Decides whether a 20 ms caller frame is speech. Production uses the
/// earshot VAD ([`Vad`]); tests script speech with a level threshold.
pub trait SpeechDetector: Send {
    fn is_speech(&mut self, frame: &[f32]) -> bool;
}

impl SpeechDetector for Vad {
    fn is_speech(&mut self, frame: &[f32]) -> bool {
        // Non-finite samples are an error in the VAD; here they are silence.
        self.process_frame(frame).map(|d| d.is_speech).unwrap_or(false)
    }
}

/// The turn being answered (speculatively or for real).
#[derive(Debug)]
struct PendingTurn {
    key: u64,
    speech_end_at: Instant,
    endpoint_at: Option<Instant>,
    requests: Vec<RequestId>,
    asr_started: Instant,
    asr_ms: Option<f64>,
    intent_started: Option<Instant>,
    intent_ms: Option<f64>,
    tts_started: Option<Instant>,
    tts_ms: Option<f64>,
    transcript: Option<String>,
    intent: Option<IntentResult>,
    dtmf: Option<String>,
    /// The flow session after this turn (committed at the endpoint).
    session: Option<FlowSession>,
    reply_text: Option<String>,
    action: Option<FlowAction>,
    task: Option<String>,
    task_events: Vec<TaskEvent>,
    audio: Option<Vec<f32>>,
    /// The speech request for `reply_text`.
    reply_request: Option<RequestId>,
    filler: bool,
    /// The flow did not understand this turn ([`FlowReply::fallback`]).
    not_understood: bool,
    route: Option<RouteDecision>,
    tier: TurnTier,
    /// Routed to the cluster and not (yet) fallen back: the flow's reply is
    /// held back.
    awaiting_cluster: bool,
    /// How the cluster did, when it failed before its first sentence.
    cluster_outcome: Option<ClusterTurnOutcome>,
}

impl PendingTurn {
    fn new(key: u64, speech_end_at: Instant, now: Instant) -> Self {
        PendingTurn {
            key,
            speech_end_at,
            endpoint_at: None,
            requests: Vec::new(),
            asr_started: now,
            asr_ms: None,
            intent_started: None,
            intent_ms: None,
            tts_started: None,
            tts_ms: None,
            transcript: None,
            intent: None,
            dtmf: None,
            session: None,
            reply_text: None,
            action: None,
            task: None,
            task_events: Vec::new(),
            audio: None,
            reply_request: None,
            filler: false,
            not_understood: false,
            route: None,
            tier: TurnTier::Edge,
            awaiting_cluster: false,
            cluster_outcome: None,
        }
    }
}

/// What is being played.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PlayoutKind {
    Greeting,
    Filler,
    Reply,
    SurveyPrompt,
    SurveyThanks,
}

pub struct Call {
    cfg: CallConfig,
    detector: Box<dyn SpeechDetector>,
    vad_cfg: VadConfig,
    endpointer: Endpointer,
    session: FlowSession,
    state: CallState,
    outputs: VecDeque<Output>,
    counters: CallCounters,
    next_id: RequestId,
    inflight: BTreeMap<RequestId, Purpose>,
    next_turn_key: u64,

    // caller audio
    preroll: VecDeque<f32>,
    onset_ms: u32,
    utterance: Vec<f32>,
    /// The utterance the last endpoint closed, until its reply plays: if
    /// the caller goes on before that, the new utterance continues it.
    ended_utterance: Vec<f32>,
    last_speech_at: Option<Instant>,
    partial_text: String,
    last_partial_at: Option<Instant>,
    /// The partial transcription in flight, if any.
    partial_request: Option<RequestId>,
    dtmf: String,

    pending: Option<PendingTurn>,
    completed_turn: Option<TurnRecord>,

    // agent audio
    playout: VecDeque<Vec<f32>>,
    playing: Option<PlayoutKind>,
    queued_reply: Option<(Vec<f32>, TurnRecord, Instant)>,
    next_frame_at: Option<Instant>,
    first_frame_sent: bool,
    played_levels: VecDeque<(Instant, f32)>,
    probe: Option<Probe>,
    after_playout: Option<FlowAction>,
    answered_at: Option<Instant>,

    // routing and escalation
    router: Arc<Router>,
    cluster_available: bool,
    /// What was said so far (bounded), for escalations.
    conversation: VecDeque<ChatMessage>,
    last_intent: Option<String>,
    /// Consecutive committed turns with the same intent as the one before.
    repeat_streak: u32,
    /// Consecutive committed turns the flow did not understand.
    failed_streak: u32,
    cluster: Option<ClusterStream>,

    survey: Option<SurveyRun>,
    /// The flow's `[survey]` runs after the goodbye (phones); off where the
    /// channel rates the call itself.
    keypad_survey: bool,
    satisfaction: Option<u8>,
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1e3
}

fn rms(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return 0.0;
    }
    (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt()
}

fn to_frames(audio: &[f32]) -> VecDeque<Vec<f32>> {
    audio
        .chunks(FRAME_SAMPLES)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(FRAME_SAMPLES, 0.0);
            f
        })
        .collect()
}

/// A router with the default [`RouterConfig`] (which is valid by construction).
fn default_router() -> Arc<Router> {
    static DEFAULT: std::sync::OnceLock<Arc<Router>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(Router::new(RouterConfig::default()).expect("the default router config is valid")))
        .clone()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CallError {
    #[error("caller frame has {got} samples, expected {expected} (20 ms at 16 kHz)")]
    FrameSize { expected: usize, got: usize },
}

impl Call {
    /// A new call on a flow session, detecting speech with the earshot VAD.
    pub fn new(cfg: CallConfig, vad: VadConfig, session: FlowSession) -> Self {
        let detector = Box::new(Vad::new(vad.clone()));
        Call::with_detector(cfg, vad, detector, session)
    }

    /// A new call with another speech detector; `vad` still gives the
    /// onset (`min_speech_ms`) and pre-roll (`pad_ms`) lengths.
    pub fn with_detector(cfg: CallConfig, vad: VadConfig, detector: Box<dyn SpeechDetector>, session: FlowSession) -> Self {
        let preroll_samples = (vad.pad_ms as usize * ENGINE_RATE as usize) / 1000;
        Call {
            endpointer: Endpointer::new(cfg.endpointing.clone()),
            detector,
            vad_cfg: vad,
            session,
            state: CallState::Listening,
            outputs: VecDeque::new(),
            counters: CallCounters::default(),
            next_id: 1,
            inflight: BTreeMap::new(),
            next_turn_key: 1,
            preroll: VecDeque::with_capacity(preroll_samples + FRAME_SAMPLES),
            onset_ms: 0,
            utterance: Vec::new(),
            ended_utterance: Vec::new(),
            last_speech_at: None,
            partial_text: String::new(),
            last_partial_at: None,
            partial_request: None,
            dtmf: String::new(),
            pending: None,
            completed_turn: None,
            playout: VecDeque::new(),
            playing: None,
            queued_reply: None,
            next_frame_at: None,
            first_frame_sent: false,
            played_levels: VecDeque::new(),
            probe: None,
            after_playout: None,
            answered_at: None,
            router: default_router(),
            cluster_available: false,
            conversation: VecDeque::new(),
            last_intent: None,
            repeat_streak: 0,
            failed_streak: 0,
            cluster: None,
            survey: None,
            keypad_survey: true,
            satisfaction: None,
            cfg,
        }
    }

    /// Routes turns with `router` instead of one with the default
    /// [`RouterConfig`] (share one router between calls).
    pub fn with_router(mut self, router: Arc<Router>) -> Self {
        self.router = router;
        self
    }

    /// Whether the flow's keypad survey runs after the goodbye (on until
    /// set). Off where the channel collects the rating itself (the browser
    /// widget's stars).
    pub fn set_keypad_survey(&mut self, on: bool) {
        self.keypad_survey = on;
    }

    /// Whether the central cluster can take an escalation now (the driver
    /// tracks its endpoints' breakers). Off until set.
    pub fn set_cluster_available(&mut self, available: bool) {
        self.cluster_available = available;
    }

    /// The caller's rating from the post-call survey, once keyed.
    pub fn satisfaction(&self) -> Option<u8> {
        self.satisfaction
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    pub fn counters(&self) -> &CallCounters {
        &self.counters
    }

    pub fn session(&self) -> &FlowSession {
        &self.session
    }

    /// Requests still awaiting a result.
    pub fn requests_in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Call::handle_timeout`] must next be called: the next playout
    /// frame, the cluster's first-sentence deadline or the survey's.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == CallState::Ended || self.probe.is_some() {
            return None;
        }
        [self.next_frame_at, self.cluster_deadline(), self.survey_deadline()].into_iter().flatten().min()
    }

    fn since_answer(&self, t: Instant) -> f64 {
        self.answered_at.map(|a| ms_between(a, t)).unwrap_or(0.0)
    }

    /// Answers the call: speaks the flow's greeting.
    pub fn start(&mut self, now: Instant) {
        self.answered_at = Some(now);
        let text = self.session.greeting().to_string();
        self.remember(ChatMessage::assistant(text.clone()));
        let id = self.request(Purpose::Greeting);
        self.command(Command::Synthesize { id, text });
        self.set_state(CallState::Listening, now);
    }

    fn request(&mut self, purpose: Purpose) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.inflight.insert(id, purpose);
        id
    }

    fn command(&mut self, c: Command) {
        self.outputs.push_back(Output::Command(c));
    }

    fn event(&mut self, e: CallEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    fn set_state(&mut self, state: CallState, _now: Instant) {
        if self.state != state {
            self.state = state;
            self.event(CallEvent::State { state });
        }
    }

    fn cancel(&mut self, id: RequestId) {
        if self.inflight.remove(&id).is_some() {
            self.command(Command::Cancel { id });
        }
    }

    fn pending_slot_min_digits(&self) -> usize {
        let flow = self.session.flow();
        self.session
            .pending_task()
            .and_then(|t| flow.task(t))
            .and_then(|t| t.requires.iter().find(|s| !self.session.slots().contains_key(*s)))
            .and_then(|s| flow.slot(s))
            .map(|s| s.min_digits)
            .unwrap_or(0)
    }

    /// One 20 ms caller frame.
    pub fn handle_audio(&mut self, now: Instant, frame: &[f32]) -> Result<(), CallError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(CallError::FrameSize { expected: FRAME_SAMPLES, got: frame.len() });
        }
        // The survey wants keys: speech starts no turn.
        if matches!(self.state, CallState::Ended | CallState::Transferring | CallState::Survey) {
            return Ok(());
        }
        let mut speech = self.detector.is_speech(frame);
        if speech && (self.playing.is_some() || !self.played_levels.is_empty()) && self.is_echo(rms(frame), now) {
            self.counters.echo_frames += 1;
            speech = false;
        }

        if self.probe.is_some() {
            self.probe_frame(now, frame, speech);
            return Ok(());
        }

        match self.state {
            CallState::Listening | CallState::AgentSpeaking | CallState::Thinking => {
                self.onset_ms = if speech { self.onset_ms + FRAME_MS } else { 0 };
                self.preroll.extend(frame.iter().copied());
                let keep = (self.vad_cfg.pad_ms as usize * ENGINE_RATE as usize) / 1000 + FRAME_SAMPLES;
                while self.preroll.len() > keep {
                    self.preroll.pop_front();
                }
                if self.state == CallState::AgentSpeaking && self.cfg.barge_in.enabled {
                    if self.onset_ms >= self.cfg.barge_in.min_speech_ms {
                        self.pause_for_probe(now);
                    }
                } else if self.state != CallState::AgentSpeaking && self.onset_ms >= self.vad_cfg.min_speech_ms {
                    if self.state == CallState::Thinking {
                        // The caller went on after the endpoint: the answer in
                        // progress was for an unfinished utterance, which the
                        // new one continues.
                        self.discard_pending();
                        self.stop_playout();
                        self.utterance = std::mem::take(&mut self.ended_utterance);
                    } else {
                        self.utterance.clear();
                        self.ended_utterance.clear();
                    }
                    self.utterance.extend(self.preroll.drain(..));
                    self.last_speech_at = Some(now);
                    self.set_state(CallState::CallerSpeaking, now);
                }
            }
            CallState::CallerSpeaking => self.caller_frame(now, frame, speech),
            CallState::Transferring | CallState::Survey | CallState::Ended => {}
        }
        Ok(())
    }

    fn caller_frame(&mut self, now: Instant, frame: &[f32], speech: bool) {
        self.utterance.extend_from_slice(frame);
        let last = self.last_speech_at.unwrap_or(now);
        if speech {
            let gap = ms_between(last, now) as u32;
            if gap > 2 * FRAME_MS {
                let (words, digits) = (self.words_so_far().to_owned(), self.pending_slot_min_digits());
                self.endpointer.observe_in_turn_pause(gap, &words, digits);
            }
            if self.pending.is_some() {
                self.discard_pending();
            }
            self.last_speech_at = Some(now);
            let due = self.last_partial_at.is_none_or(|t| ms_between(t, now) >= self.cfg.partial_interval_ms as f64);
            if due && self.partial_request.is_none() {
                self.last_partial_at = Some(now);
                let id = self.request(Purpose::Partial);
                self.partial_request = Some(id);
                let prompt = self.session.flow().asr_prompt.clone();
                self.command(Command::Transcribe { id, audio: self.utterance.clone().into(), partial: true, prompt });
            }
            if self.utterance.len() as u64 * 1000 >= self.cfg.max_utterance_ms as u64 * ENGINE_RATE as u64 {
                self.start_turn(now);
                self.endpoint(now);
            }
            return;
        }
        let silence = ms_between(last, now) as u32;
        if self.pending.is_none() && silence >= self.cfg.endpointing.speculate_after_ms {
            self.start_turn(now);
        }
        let needed = self.endpointer.silence_needed_ms(self.words_so_far(), self.pending_slot_min_digits());
        if silence >= needed {
            if self.pending.is_none() {
                self.start_turn(now);
            }
            self.endpoint(now);
        }
    }

    /// The latest transcript of the turn so far: the speculative final once
    /// back (partials lag the audio by their decode time), else the last partial.
    fn words_so_far(&self) -> &str {
        self.pending.as_ref().and_then(|p| p.transcript.as_deref()).unwrap_or(&self.partial_text)
    }

    /// Starts answering the utterance so far (speculatively until the endpoint).
    fn start_turn(&mut self, now: Instant) {
        // The final transcription supersedes a partial still queued.
        if let Some(id) = self.partial_request.take() {
            self.cancel(id);
        }
        let key = self.next_turn_key;
        self.next_turn_key += 1;
        let id = self.request(Purpose::Final { turn: key });
        let prompt = self.session.flow().asr_prompt.clone();
        self.command(Command::Transcribe { id, audio: self.utterance.clone().into(), partial: false, prompt });
        let mut turn = PendingTurn::new(key, self.last_speech_at.unwrap_or(now), now);
        turn.requests.push(id);
        self.pending = Some(turn);
    }

    fn discard_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            // An escalation not yet speaking belongs to the pending turn.
            if self.cluster.as_ref().is_some_and(|c| c.turn == p.key) {
                self.drop_cluster_stream();
            }
            for id in p.requests {
                self.cancel(id);
            }
            self.counters.speculation_discarded += 1;
            self.event(CallEvent::SpeculationDiscarded);
        }
    }

    /// The caller's turn has ended.
    fn endpoint(&mut self, now: Instant) {
        if let Some(p) = &mut self.pending {
            p.endpoint_at = Some(now);
        }
        self.ended_utterance = std::mem::take(&mut self.utterance);
        self.partial_text.clear();
        self.last_partial_at = None;
        self.onset_ms = 0;
        self.set_state(CallState::Thinking, now);
        self.next_frame_at.get_or_insert(now + FRAME);
        self.try_release_reply(now);
    }

    /// Feeds an engine result.
    pub fn handle_engine(&mut self, now: Instant, result: EngineResult) {
        let id = result.id();
        // An escalation streams several results; it is done at ClusterDone.
        let purpose = match result {
            EngineResult::ClusterSentence { .. } => self.inflight.get(&id).copied(),
            _ => self.inflight.remove(&id),
        };
        let Some(purpose) = purpose else { return }; // cancelled or unknown
        if self.state == CallState::Ended {
            return;
        }
        // A partial hypothesis may be shed under load; only work the call
        // depends on counts as a failure. A failed escalation is the
        // cluster's failure, not the engine's.
        if let EngineResult::Failed { error, .. } = &result {
            match purpose {
                Purpose::Partial => {}
                Purpose::Escalation { .. } => self.event(CallEvent::EngineFailed { id, error: error.clone() }),
                _ => {
                    self.counters.engine_failures += 1;
                    self.event(CallEvent::EngineFailed { id, error: error.clone() });
                }
            }
        }
        match (purpose, result) {
            (Purpose::Partial, EngineResult::Transcript { text, .. }) => {
                self.partial_request = None;
                if self.state == CallState::CallerSpeaking {
                    self.partial_text = text.clone();
                    if self.cfg.warm_intent && !text.trim().is_empty() {
                        self.command(Command::WarmIntent { text: text.clone() });
                    }
                    self.event(CallEvent::PartialTranscript { text });
                }
            }
            (Purpose::Partial, _) => self.partial_request = None,
            (Purpose::Final { turn }, r) => self.on_final(now, turn, r),
            (Purpose::Intent { turn }, r) => self.on_intent(now, turn, r),
            (Purpose::Reply { turn }, r) => self.on_reply_audio(now, turn, r),
            (Purpose::Greeting, EngineResult::Speech { audio, .. })
                if self.state == CallState::Listening && self.playing.is_none() =>
            {
                self.play(now, audio, PlayoutKind::Greeting);
            }
            (Purpose::Filler, EngineResult::Speech { audio, .. })
                if self.state == CallState::Thinking && self.playing.is_none() =>
            {
                self.counters.fillers += 1;
                self.event(CallEvent::FillerSpoken);
                self.play(now, audio, PlayoutKind::Filler);
            }
            (Purpose::Probe, EngineResult::Transcript { text, .. }) => {
                if let Some(p) = &mut self.probe {
                    p.transcript = Some(text);
                    self.judge_probe(now);
                }
            }
            (Purpose::Probe, _) => {
                if let Some(p) = &mut self.probe {
                    p.transcript = Some(String::new());
                    self.judge_probe(now);
                }
            }
            (Purpose::Escalation { turn }, EngineResult::ClusterSentence { text, .. }) => {
                self.on_cluster_sentence(now, turn, text)
            }
            (Purpose::Escalation { turn }, EngineResult::ClusterDone { outcome, .. }) => {
                self.on_cluster_done(now, turn, outcome)
            }
            (Purpose::Escalation { turn }, EngineResult::Failed { error, .. }) => {
                self.on_cluster_done(now, turn, ClusterTurnOutcome::failed(error))
            }
            (Purpose::Escalation { turn }, _) => {
                self.on_cluster_done(now, turn, ClusterTurnOutcome::failed("unexpected result for an escalation".into()))
            }
            (Purpose::ClusterSpeech { turn }, r) => self.on_cluster_speech(now, turn, id, r),
            (Purpose::SurveyPrompt | Purpose::SurveyThanks, r) => self.on_survey_speech(now, purpose, r),
            _ => {}
        }
    }

    fn pending_for(&mut self, turn: u64) -> Option<&mut PendingTurn> {
        self.pending.as_mut().filter(|p| p.key == turn)
    }

    fn on_final(&mut self, now: Instant, turn: u64, result: EngineResult) {
        let text = match result {
            EngineResult::Transcript { text, .. } => text,
            _ => String::new(),
        };
        let Some(p) = self.pending_for(turn) else { return };
        p.asr_ms = Some(ms_between(p.asr_started, now));
        p.transcript = Some(text.clone());
        if text.trim().is_empty() {
            let reply = self.session.on_no_input();
            self.set_reply(now, turn, self.session.clone(), reply);
            return;
        }
        let id = self.request(Purpose::Intent { turn });
        if let Some(p) = self.pending_for(turn) {
            p.requests.push(id);
            p.intent_started = Some(now);
        }
        self.command(Command::Classify { id, text });
    }

    fn on_intent(&mut self, now: Instant, turn: u64, result: EngineResult) {
        let intent = match result {
            EngineResult::Intent { intent, .. } => intent,
            // The classifier failed: answer as for an unclear request.
            _ => IntentResult { label: String::new(), confidence: 0.0, margin: 0.0 },
        };
        let Some(p) = self.pending_for(turn) else { return };
        p.intent_ms = p.intent_started.map(|t| ms_between(t, now));
        let transcript = p.transcript.clone().unwrap_or_default();
        p.intent = Some(intent.clone());
        self.route_turn(now, turn, &intent, &transcript);
    }

    /// Speaks `reply` for the pending turn (the answer, or the fallback of an
    /// escalated turn); `session` is the flow state after it, committed with the turn.
    fn set_reply(&mut self, now: Instant, turn: u64, session: FlowSession, reply: FlowReply) {
        let id = self.request(Purpose::Reply { turn });
        let Some(p) = self.pending_for(turn) else { return };
        p.session = Some(session);
        p.reply_text = Some(reply.text.clone());
        p.action = Some(reply.action);
        p.task = reply.task;
        p.task_events = reply.events;
        p.not_understood = reply.fallback;
        p.requests.push(id);
        p.reply_request = Some(id);
        p.tts_started = Some(now);
        p.audio = None;
        self.command(Command::Synthesize { id, text: reply.text });
    }

    fn on_reply_audio(&mut self, now: Instant, turn: u64, result: EngineResult) {
        let audio = match result {
            EngineResult::Speech { audio, .. } => audio,
            _ => Vec::new(), // TTS failed: the turn completes silently rather than hanging
        };
        let Some(p) = self.pending_for(turn) else { return };
        p.tts_ms = p.tts_started.map(|t| ms_between(t, now));
        p.audio = Some(audio);
        self.try_release_reply(now);
    }

    /// At the endpoint with the answer ready: commit the turn and play it.
    fn try_release_reply(&mut self, now: Instant) {
        if self.pending.as_ref().is_some_and(|p| p.endpoint_at.is_some() && p.awaiting_cluster) {
            self.start_escalation(now);
        }
        let ready = self
            .pending
            .as_ref()
            .is_some_and(|p| p.endpoint_at.is_some() && p.audio.is_some() && !p.awaiting_cluster);
        if !ready {
            return;
        }
        let mut p = self.pending.take().expect("checked");
        if let Some(session) = p.session.take() {
            self.session = session;
        }
        self.counters.turns += 1;
        let turn = self.counters.turns;
        let record = self.turn_record(&mut p, turn);
        self.event(CallEvent::Transcript { turn, text: record.transcript.clone() });
        self.event(CallEvent::AgentReply { turn, text: record.reply.clone() });
        self.note_committed_turn(&record, p.not_understood);
        self.remember(ChatMessage::assistant(record.reply.clone()));
        self.after_playout = p.action;
        self.release(now, p.audio.unwrap_or_default(), record, p.speech_end_at);
    }

    /// The committed turn's record so far (its reply and timings to come).
    fn turn_record(&self, p: &mut PendingTurn, turn: u32) -> TurnRecord {
        let endpoint_at = p.endpoint_at.unwrap_or(p.speech_end_at);
        let mut record = TurnRecord {
            turn,
            transcript: p.transcript.clone().unwrap_or_default(),
            intent: p.intent.as_ref().map(|i| i.label.clone()).filter(|l| !l.is_empty()),
            intent_confidence: p.intent.as_ref().map(|i| i.confidence).unwrap_or(0.0),
            intent_margin: p.intent.as_ref().map(|i| i.margin).unwrap_or(0.0),
            reply: p.reply_text.clone().unwrap_or_default(),
            action: p.action,
            task: p.task.clone(),
            task_events: std::mem::take(&mut p.task_events),
            dtmf: p.dtmf.clone(),
            end_of_utterance_ms: ms_between(p.speech_end_at, endpoint_at),
            asr_ms: p.asr_ms,
            intent_ms: p.intent_ms,
            tts_ms: p.tts_ms,
            voice_to_voice_ms: None,
            speculative: p.asr_started < endpoint_at,
            filler: p.filler || self.playing == Some(PlayoutKind::Filler),
            barged_in: false,
            speech_end_ms: self.since_answer(p.speech_end_at),
            completed_ms: 0.0,
            tier: p.tier,
            route_reason: p.route.map(|r| r.reason),
            difficulty: p.route.map(|r| r.difficulty),
            escalated: matches!(p.tier, TurnTier::Cluster | TurnTier::EdgeFallback),
            ..TurnRecord::default()
        };
        if let Some(outcome) = &p.cluster_outcome {
            outcome.add_to(&mut record);
        }
        record
    }

    /// Plays a committed turn's first audio, after the filler if one is playing.
    fn release(&mut self, now: Instant, audio: Vec<f32>, record: TurnRecord, speech_end_at: Instant) {
        if self.playing == Some(PlayoutKind::Filler) {
            // Let the filler finish; the reply follows it.
            self.queued_reply = Some((audio, record, speech_end_at));
        } else {
            self.start_reply_playout(now, audio, record, speech_end_at);
        }
    }

    fn start_reply_playout(&mut self, now: Instant, audio: Vec<f32>, mut record: TurnRecord, speech_end_at: Instant) {
        self.play(now, audio, PlayoutKind::Reply);
        // The first frame leaves now: voice-to-voice is measured at send time.
        record.voice_to_voice_ms = Some(ms_between(speech_end_at, now));
        self.completed_turn = Some(record);
        // Cluster sentences that arrived while the filler played follow at once.
        self.feed_cluster_playout();
        self.flush_first_frame(now);
    }

    fn play(&mut self, now: Instant, audio: Vec<f32>, kind: PlayoutKind) {
        self.playout = to_frames(&audio);
        self.playing = Some(kind);
        self.first_frame_sent = false;
        self.next_frame_at = Some(now);
        if self.state != CallState::Survey {
            self.set_state(CallState::AgentSpeaking, now);
        }
    }

    fn flush_first_frame(&mut self, now: Instant) {
        if self.next_frame_at.is_some_and(|t| t <= now) {
            self.handle_timeout(now);
        }
    }

    /// Drives playout pacing, the filler timer and the cluster's and the
    /// survey's deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == CallState::Ended || self.probe.is_some() {
            return;
        }
        self.check_cluster_deadline(now);
        if self.state == CallState::Survey && self.playing.is_none() {
            self.check_survey_deadline(now);
            return;
        }
        // No dead air: a filler when the answer is slow.
        if self.state == CallState::Thinking && self.playing.is_none() {
            let late = self.pending.as_ref().and_then(|p| p.endpoint_at).is_some_and(|t| {
                ms_between(t, now) >= self.cfg.filler_after_ms as f64
            });
            let already = self.pending.as_ref().is_some_and(|p| p.filler);
            if late && !already {
                if let Some(p) = &mut self.pending {
                    p.filler = true;
                }
                let text = self.cfg.filler_text.clone();
                let id = self.request(Purpose::Filler);
                self.command(Command::Synthesize { id, text });
            }
            self.next_frame_at = Some(now + FRAME);
            return;
        }
        while let Some(due) = self.next_frame_at {
            if due > now || self.playing.is_none() {
                break;
            }
            match self.playout.pop_front() {
                Some(frame) => {
                    self.played_levels.push_back((now, rms(&frame)));
                    self.command(Command::SendAudio(frame));
                    self.first_frame_sent = true;
                    self.next_frame_at = Some(due + FRAME);
                }
                // A cluster answer still streaming: wait for its next sentence.
                None if self.playing == Some(PlayoutKind::Reply) && self.cluster_reply_open() => {
                    self.next_frame_at = Some(now + FRAME);
                    break;
                }
                None => {
                    self.playout_finished(now);
                    break;
                }
            }
        }
    }

    fn playout_finished(&mut self, now: Instant) {
        let kind = self.playing.take();
        self.next_frame_at = None;
        if kind == Some(PlayoutKind::Filler) {
            if let Some((audio, record, speech_end_at)) = self.queued_reply.take() {
                self.start_reply_playout(now, audio, record, speech_end_at);
                return;
            }
            self.set_state(CallState::Thinking, now);
            self.next_frame_at = Some(now + FRAME);
            return;
        }
        if let Some(kind @ (PlayoutKind::SurveyPrompt | PlayoutKind::SurveyThanks)) = kind {
            self.survey_playout_finished(now, kind);
            return;
        }
        if kind == Some(PlayoutKind::Reply) {
            self.finish_cluster_stream();
            if let Some(mut record) = self.completed_turn.take() {
                record.completed_ms = self.since_answer(now);
                self.event(CallEvent::TurnCompleted(record));
            }
            match self.after_playout.take() {
                Some(FlowAction::Transfer) => {
                    self.command(Command::Transfer);
                    self.set_state(CallState::Transferring, now);
                    return;
                }
                Some(FlowAction::EndCall) => {
                    self.session.on_call_event(crate::flow::CompletionCriterion::CallerEnded);
                    if self.start_survey(now) {
                        return;
                    }
                    self.command(Command::Hangup);
                    self.end(now);
                    return;
                }
                _ => {}
            }
        }
        if self.pending.is_some() {
            self.set_state(CallState::Thinking, now);
            self.next_frame_at = Some(now + FRAME);
        } else {
            self.set_state(CallState::Listening, now);
        }
    }

    fn stop_playout(&mut self) {
        self.playout.clear();
        self.playing = None;
        self.queued_reply = None;
    }

    /// A DTMF digit (RFC 4733 or SIP INFO). `#` ends an entry.
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if matches!(self.state, CallState::Ended | CallState::Transferring) || !"0123456789*#".contains(digit) {
            return;
        }
        if self.state == CallState::Survey {
            self.survey_key(now, digit);
            return;
        }
        if self.state == CallState::AgentSpeaking {
            // Keying during a prompt interrupts it.
            self.probe = None;
            self.abandon_cluster_reply();
            self.stop_playout();
            if let Some(mut record) = self.completed_turn.take() {
                record.barged_in = true;
                record.completed_ms = self.since_answer(now);
                self.event(CallEvent::TurnCompleted(record));
            }
            self.next_frame_at = None;
            self.set_state(CallState::Listening, now);
        }
        if digit != '#' {
            if self.dtmf.len() < 32 {
                self.dtmf.push(digit);
            }
            return;
        }
        let digits = std::mem::take(&mut self.dtmf);
        self.discard_pending();
        let key = self.next_turn_key;
        self.next_turn_key += 1;
        let mut turn = PendingTurn::new(key, now, now);
        turn.endpoint_at = Some(now);
        turn.transcript = Some(String::new());
        turn.dtmf = Some(format!("{digits}#"));
        self.pending = Some(turn);
        let mut session = self.session.clone();
        let reply = session.on_turn("", "", Some(&digits));
        self.set_state(CallState::Thinking, now);
        self.set_reply(now, key, session, reply);
    }

    /// The far end hung up (or the transport lost the call).
    pub fn hangup(&mut self, now: Instant) {
        if self.state == CallState::Ended {
            return;
        }
        self.end(now);
    }

    /// The transport reports that the transfer was accepted.
    pub fn transfer_accepted(&mut self, now: Instant) {
        self.session.on_call_event(crate::flow::CompletionCriterion::TransferAccepted);
        self.end(now);
    }

    fn end(&mut self, now: Instant) {
        // A cluster answer cut short keeps what it said and cost so far.
        self.finish_cluster_stream();
        self.cluster = None;
        // A reply cut short by the hang-up still counts as a turn.
        if let Some(mut record) = self.completed_turn.take() {
            record.completed_ms = self.since_answer(now);
            self.event(CallEvent::TurnCompleted(record));
        }
        // So does one decided and announced but queued behind a filler.
        if let Some((_, mut record, _)) = self.queued_reply.take() {
            record.completed_ms = self.since_answer(now);
            self.event(CallEvent::TurnCompleted(record));
        }
        let ids: Vec<RequestId> = self.inflight.keys().copied().collect();
        for id in ids {
            self.cancel(id);
        }
        self.pending = None;
        self.probe = None;
        self.survey = None;
        self.stop_playout();
        self.next_frame_at = None;
        self.set_state(CallState::Ended, now);
    }
}

#[cfg(test)]
mod tests;

//! One caller turn, end to end: VAD trims the utterance, whisper transcribes
//! it, the intent model classifies it, the flow session picks the reply and
//! espeak-ng speaks it (resampled to the engine's 16 kHz). Every stage is
//! timed. This is the offline harness (`voice-edge turn`) and the unit the
//! live call engine reuses; it blocks, so live calls run it on engine threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::asr::{AsrError, AsrModel, AsrSession};
use super::intent::{IntentClassifier, IntentError, IntentModel};
use super::tts::{Tts, TtsError};
use crate::flow::{Flow, FlowAction, FlowReply, FlowSession, TaskEvent};
use crate::media::vad::{speech_bounds, VadConfig};
use crate::media::ENGINE_RATE;

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Intent(#[from] IntentError),
    #[error(transparent)]
    Tts(#[from] TtsError),
}

/// Milliseconds spent in each stage of a turn.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StageTimings {
    pub vad: f64,
    pub asr: f64,
    pub intent: f64,
    pub flow: f64,
    /// Until espeak-ng delivered its first chunk of audio.
    pub tts_first_chunk: f64,
    pub tts: f64,
    pub total: f64,
}

/// What one turn produced; serialised as the `turn` command's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TurnOutcome {
    pub transcript: String,
    pub asr_confidence: f32,
    /// `None` when nothing intelligible was said.
    pub intent: Option<String>,
    pub intent_confidence: f32,
    pub intent_margin: f32,
    pub intent_ranking: Vec<(String, f32)>,
    pub reply: String,
    pub action: FlowAction,
    pub task: Option<String>,
    pub task_events: Vec<TaskEvent>,
    pub slots: std::collections::BTreeMap<String, String>,
    /// Speech found by VAD, in seconds from the start of the input.
    pub speech_span_s: Option<(f64, f64)>,
    pub timings_ms: StageTimings,
    /// The spoken reply, 16 kHz mono.
    #[serde(skip)]
    pub reply_audio: Vec<f32>,
}

/// Shared, loaded-once models plus the VAD and TTS settings.
pub struct TurnEngine {
    pub asr: AsrModel,
    pub intent: IntentModel,
    pub tts: Tts,
    pub vad: VadConfig,
}

/// Per-conversation state over a [`TurnEngine`]: whisper state, the intent
/// classifier with its cached prompt, and the flow session.
pub struct Conversation<'e> {
    engine: &'e TurnEngine,
    asr: AsrSession<'e>,
    classifier: IntentClassifier<'e>,
    pub session: FlowSession,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl TurnEngine {
    /// A conversation on `flow` (evaluates the flow's intent prompt prefix).
    pub fn conversation(&self, flow: Arc<Flow>) -> Result<Conversation<'_>, TurnError> {
        Ok(Conversation {
            engine: self,
            asr: self.asr.session()?,
            classifier: self.intent.classifier(&flow)?,
            session: FlowSession::new(flow),
        })
    }

}

impl Conversation<'_> {
    /// Tokens of the cached intent prompt.
    pub fn intent_prefix_tokens(&self) -> usize {
        self.classifier.prefix_tokens()
    }

    /// Runs one caller utterance (16 kHz mono) and optional DTMF digits.
    pub fn turn(&mut self, audio: &[f32], dtmf: Option<&str>) -> Result<TurnOutcome, TurnError> {
        let started = Instant::now();
        let mut t = StageTimings::default();

        let stage = Instant::now();
        let span = speech_bounds(audio, &self.engine.vad);
        t.vad = ms(stage.elapsed());

        let (transcript, asr_confidence) = match &span {
            Some(s) => {
                let stage = Instant::now();
                let prompt = self.session.flow().asr_prompt.as_deref();
                let tr = self.asr.transcribe(&audio[s.start..s.end], prompt)?;
                t.asr = ms(stage.elapsed());
                (tr.text, tr.confidence)
            }
            None => (String::new(), 0.0),
        };

        let mut decision = None;
        if !transcript.is_empty() {
            let stage = Instant::now();
            decision = Some(self.classifier.classify(&transcript)?);
            t.intent = ms(stage.elapsed());
        }

        let stage = Instant::now();
        let reply: FlowReply = match &decision {
            Some(d) => self.session.on_turn(&d.label, &transcript, dtmf),
            None if dtmf.is_some() => self.session.on_turn("", "", dtmf),
            None => self.session.on_no_input(),
        };
        t.flow = ms(stage.elapsed());

        let stage = Instant::now();
        let speech = self.engine.tts.speak(&reply.text)?;
        t.tts_first_chunk = ms(speech.first_chunk);
        t.tts = ms(stage.elapsed());
        t.total = ms(started.elapsed());

        let rate = ENGINE_RATE as f64;
        Ok(TurnOutcome {
            transcript,
            asr_confidence,
            intent: decision.as_ref().map(|d| d.label.clone()),
            intent_confidence: decision.as_ref().map(|d| d.confidence).unwrap_or(0.0),
            intent_margin: decision.as_ref().map(|d| d.margin).unwrap_or(0.0),
            intent_ranking: decision.map(|d| d.ranking).unwrap_or_default(),
            reply: reply.text,
            action: reply.action,
            task: reply.task,
            task_events: reply.events,
            slots: self.session.slots().clone(),
            speech_span_s: span.map(|s| (s.start as f64 / rate, s.end as f64 / rate)),
            timings_ms: t,
            reply_audio: speech.samples,
        })
    }
}

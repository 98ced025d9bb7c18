//! Escalated turns: the central cluster answers a caller turn the router
//! sent it, streamed sentence by sentence.
//!
//! At the endpoint the call emits [`Command::Escalate`] (the turn's
//! [`TurnContext`] and the conversation). The driver streams the answer back
//! as [`EngineResult::ClusterSentence`]s, then one
//! [`EngineResult::ClusterDone`] with a [`ClusterTurnOutcome`]. Each sentence
//! is synthesized as it arrives and played in order, so the caller hears the
//! first one while the rest is still being generated; barge-in works as for
//! edge replies (and cancels the rest of the answer).
//!
//! The flow's reply for the turn was synthesized meanwhile. If no sentence
//! arrives within `call.cluster_first_sentence_ms` of the escalation, or the
//! cluster fails (or answers nothing) before its first sentence, that reply
//! (or `call.cluster_fallback_text`) is spoken instead: tier `edge_fallback`.
//! Once a sentence has arrived the cluster owns the turn: a later failure
//! ends the answer where it is, with no fallback. A cluster-answered turn
//! leaves the flow session unchanged (the flow did not speak).
//!
//! [`EngineResult::ClusterSentence`]: super::EngineResult::ClusterSentence
//! [`EngineResult::ClusterDone`]: super::EngineResult::ClusterDone

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    ms_between, to_frames, Call, CallEvent, ChatMessage, Command, EngineResult, FlowReply, Purpose, RequestId,
    TurnContext, TurnRecord, TurnTier,
};
use crate::flow::FlowAction;

/// How an escalated turn went, as the driver reports it at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterTurnOutcome {
    /// The answer finished (false: an error ended it, see `error`).
    pub ok: bool,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Hidden reasoning tokens (billed, never spoken).
    pub reasoning_tokens: u32,
    /// Request to the first token, as the cluster client measured it.
    pub first_token_ms: Option<f64>,
    pub error: Option<String>,
}

impl ClusterTurnOutcome {
    /// A failure with nothing to bill.
    pub fn failed(error: String) -> Self {
        ClusterTurnOutcome { ok: false, error: Some(error), ..Default::default() }
    }

    /// Adds the cluster's cost and error to a turn record.
    pub(super) fn add_to(&self, record: &mut TurnRecord) {
        record.cluster_prompt_tokens = self.prompt_tokens;
        record.cluster_completion_tokens = self.completion_tokens;
        record.cluster_reasoning_tokens = self.reasoning_tokens;
        if record.cluster_error.is_none() {
            record.cluster_error = self.error.clone();
        }
    }
}

/// One sentence of the answer, from arrival until it is handed to playout.
#[derive(Debug)]
struct Sentence {
    text: String,
    speech_request: RequestId,
    audio: Option<Vec<f32>>,
}

/// An escalation in flight: waiting for its first sentence (the turn is
/// still pending), then speaking (the turn is committed).
#[derive(Debug)]
pub(super) struct ClusterStream {
    /// The pending turn's key.
    pub(super) turn: u64,
    /// The escalation request, until its `ClusterDone` (or cancellation).
    request: Option<RequestId>,
    started_at: Instant,
    deadline: Instant,
    first_sentence_ms: Option<f64>,
    /// Arrived, not yet handed to playout, in order.
    sentences: VecDeque<Sentence>,
    /// Handed to playout.
    spoken: Vec<String>,
    outcome: Option<ClusterTurnOutcome>,
    /// The turn is committed and its first sentence is playing (or queued
    /// behind the filler).
    speaking: bool,
}

impl ClusterStream {
    fn received_any(&self) -> bool {
        self.first_sentence_ms.is_some()
    }

    /// Puts what is known so far into the turn's record.
    fn fill(&self, record: &mut TurnRecord) {
        record.reply = self.spoken.join(" ");
        record.cluster_first_sentence_ms = self.first_sentence_ms;
        if let Some(outcome) = &self.outcome {
            outcome.add_to(record);
        }
    }
}

impl Call {
    /// At the endpoint of a turn routed to the cluster: ask it.
    pub(super) fn start_escalation(&mut self, now: Instant) {
        let Some(p) = self.pending.as_ref().filter(|p| p.awaiting_cluster) else { return };
        if self.cluster.as_ref().is_some_and(|c| c.turn == p.key) {
            return; // already asked
        }
        let turn = p.key;
        let transcript = p.transcript.clone().unwrap_or_default();
        let context = TurnContext {
            instructions: self.session.flow().classifier.instructions.clone(),
            flow_state: self.session.state_label(),
            intent: p.intent.as_ref().map(|i| i.label.clone()).filter(|l| !l.is_empty()),
            intent_confidence: p.intent.as_ref().map(|i| i.confidence),
            route_reason: p.route.map(|r| r.reason.as_str().to_string()),
        };
        let history = self.history_with(&transcript);
        let id = self.request(Purpose::Escalation { turn });
        if let Some(p) = self.pending_for(turn) {
            p.requests.push(id);
        }
        self.counters.escalations += 1;
        self.cluster = Some(ClusterStream {
            turn,
            request: Some(id),
            started_at: now,
            deadline: now + Duration::from_millis(self.cfg.cluster_first_sentence_ms as u64),
            first_sentence_ms: None,
            sentences: VecDeque::new(),
            spoken: Vec::new(),
            outcome: None,
            speaking: false,
        });
        self.command(Command::Escalate { id, context, history });
    }

    fn stream_for(&mut self, turn: u64) -> Option<&mut ClusterStream> {
        self.cluster.as_mut().filter(|c| c.turn == turn)
    }

    pub(super) fn on_cluster_sentence(&mut self, now: Instant, turn: u64, text: String) {
        let text = text.trim().to_string();
        if text.is_empty() || self.stream_for(turn).is_none() {
            return;
        }
        let id = self.request(Purpose::ClusterSpeech { turn });
        if let Some(p) = self.pending_for(turn) {
            p.requests.push(id);
        }
        let Some(stream) = self.stream_for(turn) else { return };
        stream.first_sentence_ms.get_or_insert(ms_between(stream.started_at, now));
        stream.sentences.push_back(Sentence { text: text.clone(), speech_request: id, audio: None });
        self.command(Command::Synthesize { id, text });
    }

    pub(super) fn on_cluster_speech(&mut self, now: Instant, turn: u64, id: RequestId, result: EngineResult) {
        let audio = match result {
            EngineResult::Speech { audio, .. } => audio,
            _ => Vec::new(), // TTS failed: the sentence is skipped rather than stalling the answer
        };
        let Some(stream) = self.stream_for(turn) else { return };
        if let Some(s) = stream.sentences.iter_mut().find(|s| s.speech_request == id) {
            s.audio = Some(audio);
        }
        let first_ready = !stream.speaking && stream.sentences.front().is_some_and(|s| s.audio.is_some());
        if first_ready {
            self.start_cluster_reply(now);
        } else {
            self.feed_cluster_playout();
            self.flush_first_frame(now);
        }
    }

    pub(super) fn on_cluster_done(&mut self, now: Instant, turn: u64, outcome: ClusterTurnOutcome) {
        if !outcome.ok {
            self.counters.cluster_failures += 1;
        }
        let Some(stream) = self.stream_for(turn) else { return };
        stream.request = None;
        let received = stream.received_any();
        stream.outcome = Some(outcome.clone());
        if !received {
            // Failed (or answered nothing) before its first sentence.
            if let Some(p) = self.pending_for(turn) {
                p.cluster_outcome = Some(outcome.clone());
            }
            let error = outcome.error.unwrap_or_else(|| "the cluster answered nothing".into());
            self.fall_back_to_edge(now, error);
            return;
        }
        if let (Some(stream), Some(record)) = (&self.cluster, &mut self.completed_turn) {
            stream.fill(record);
        }
    }

    /// The escalation's first-sentence deadline, while it runs.
    pub(super) fn cluster_deadline(&self) -> Option<Instant> {
        self.cluster.as_ref().filter(|c| !c.received_any()).map(|c| c.deadline)
    }

    pub(super) fn check_cluster_deadline(&mut self, now: Instant) {
        if self.cluster_deadline().is_some_and(|t| t <= now) {
            let error = format!("no sentence within {} ms", self.cfg.cluster_first_sentence_ms);
            self.fall_back_to_edge(now, error);
        }
    }

    /// The cluster did not answer: the edge does, with the flow's reply (or
    /// the configured fallback text).
    fn fall_back_to_edge(&mut self, now: Instant, error: String) {
        let Some(turn) = self.cluster.as_ref().map(|c| c.turn) else { return };
        self.drop_cluster_stream();
        self.counters.cluster_fallbacks += 1;
        let fallback_text = self.cfg.cluster_fallback_text.clone();
        let session = self.session.clone();
        let Some(p) = self.pending_for(turn) else { return };
        p.awaiting_cluster = false;
        p.tier = TurnTier::EdgeFallback;
        let outcome = p.cluster_outcome.get_or_insert_with(|| ClusterTurnOutcome::failed(error.clone()));
        outcome.error.get_or_insert(error);
        if let Some(text) = fallback_text {
            // A graceful line instead of the flow's reply: the flow state stays.
            let superseded = p.reply_request.take();
            if let Some(id) = superseded {
                self.cancel(id);
            }
            let reply = FlowReply { text, action: FlowAction::Continue, task: None, events: Vec::new(), fallback: true };
            self.set_reply(now, turn, session, reply);
        }
        self.try_release_reply(now);
    }

    /// The first sentence is ready: commit the turn as the cluster's and play it.
    fn start_cluster_reply(&mut self, now: Instant) {
        let Some(turn) = self.cluster.as_ref().map(|c| c.turn) else { return };
        if self.pending.as_ref().is_none_or(|p| p.key != turn) {
            self.drop_cluster_stream();
            return;
        }
        let mut p = self.pending.take().expect("checked");
        // The flow's reply was the fallback; the flow state stays as it was.
        if let Some(id) = p.reply_request.take() {
            self.cancel(id);
        }
        p.awaiting_cluster = false;
        p.reply_text = None;
        p.action = Some(FlowAction::Continue);
        p.task = None;
        p.task_events.clear();
        self.counters.turns += 1;
        let number = self.counters.turns;
        let mut record = self.turn_record(&mut p, number);
        record.tts_ms = None;
        self.event(CallEvent::Transcript { turn: number, text: record.transcript.clone() });
        self.note_committed_turn(&record, false);
        self.after_playout = None;
        let Some(stream) = self.cluster.as_mut() else { return };
        stream.speaking = true;
        let first = stream.sentences.pop_front().expect("the first sentence is ready");
        stream.spoken.push(first.text.clone());
        stream.fill(&mut record);
        self.event(CallEvent::AgentReply { turn: number, text: first.text });
        self.release(now, first.audio.unwrap_or_default(), record, p.speech_end_at);
    }

    /// Hands the sentences that are ready, in order, to the playing reply.
    pub(super) fn feed_cluster_playout(&mut self) {
        if self.playing != Some(super::PlayoutKind::Reply) {
            return;
        }
        let Some(stream) = self.cluster.as_mut().filter(|c| c.speaking) else { return };
        let mut texts = Vec::new();
        while stream.sentences.front().is_some_and(|s| s.audio.is_some()) {
            let s = stream.sentences.pop_front().expect("checked");
            self.playout.extend(to_frames(&s.audio.unwrap_or_default()));
            stream.spoken.push(s.text.clone());
            texts.push(s.text);
        }
        if let Some(record) = &mut self.completed_turn {
            stream.fill(record);
        }
        let turn = self.counters.turns;
        for text in texts {
            self.event(CallEvent::AgentReply { turn, text });
        }
    }

    /// The reply being played is a cluster answer with more to come.
    pub(super) fn cluster_reply_open(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.speaking && (c.outcome.is_none() || !c.sentences.is_empty()))
    }

    /// The cluster's answer has been played (or the call ends): complete its
    /// record and remember what was said.
    pub(super) fn finish_cluster_stream(&mut self) {
        let Some(stream) = self.cluster.take_if(|c| c.speaking) else { return };
        for id in stream.request.into_iter().chain(stream.sentences.iter().map(|s| s.speech_request)) {
            self.cancel(id);
        }
        if let Some(record) = &mut self.completed_turn {
            stream.fill(record);
        }
        self.remember(ChatMessage::assistant(stream.spoken.join(" ")));
    }

    /// The caller interrupted the cluster's answer: stop asking for more.
    pub(super) fn abandon_cluster_reply(&mut self) {
        if self.cluster.as_ref().is_some_and(|c| c.speaking && c.outcome.is_none()) {
            if let Some(record) = &mut self.completed_turn {
                record.cluster_error.get_or_insert_with(|| "interrupted by the caller".into());
            }
            self.finish_cluster_stream();
        }
    }

    /// Forgets an escalation that is no longer wanted, cancelling its work.
    pub(super) fn drop_cluster_stream(&mut self) {
        if let Some(stream) = self.cluster.take() {
            for id in stream.request.into_iter().chain(stream.sentences.iter().map(|s| s.speech_request)) {
                self.cancel(id);
            }
        }
    }
}

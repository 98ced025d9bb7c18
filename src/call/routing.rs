//! Routing one caller turn: the [`TurnFeatures`] the router sees (the
//! intent result, the transcript, the flow session's state, the call's
//! repeat and failure streaks, whether the cluster is up), the decision kept
//! for the turn record, and what each tier does to the pending turn:
//!
//! * [`Tier::Edge`]: the flow's reply, as before routing existed.
//! * [`Tier::Human`]: the flow's hand-off line (its transfer intent, else
//!   `call.handoff_text`), then [`super::Command::Transfer`].
//! * [`Tier::Cluster`]: the flow's reply is synthesized but held back as the
//!   fallback, and the turn is escalated at the endpoint ([`super::escalation`]).
//!
//! Also the call's memory of the conversation (bounded) that escalations
//! send along, and the streaks updated when a turn is committed.

use std::time::Instant;

use serde::Serialize;

use super::router::{Tier, TurnFeatures};
use super::{Call, ChatMessage, IntentResult, TurnRecord};
use crate::flow::{FlowAction, FlowReply};

/// Who answered a turn, as its [`TurnRecord`] says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnTier {
    /// The edge's own flow (also every keyed or unheard turn).
    #[default]
    Edge,
    /// The central cluster's streamed answer.
    Cluster,
    /// The router chose the cluster, which failed before its first sentence
    /// or missed `call.cluster_first_sentence_ms`; the edge answered.
    EdgeFallback,
    /// The router handed the caller to a person (hand-off line, transfer).
    Human,
}

impl TurnTier {
    /// The snake_case name (the same as serde's), for metrics and outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnTier::Edge => "edge",
            TurnTier::Cluster => "cluster",
            TurnTier::EdgeFallback => "edge_fallback",
            TurnTier::Human => "human",
        }
    }
}

impl std::fmt::Display for TurnTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Call {
    /// The intent result of a spoken turn: route it and prepare its answer.
    /// Runs on a copy of the flow session (speculative turns are committed
    /// at the endpoint).
    pub(super) fn route_turn(&mut self, now: Instant, turn: u64, intent: &IntentResult, transcript: &str) {
        let flow_state = self.session.state_label();
        let label = Some(intent.label.as_str()).filter(|l| !l.is_empty());
        let features = TurnFeatures {
            intent: label,
            intent_confidence: intent.confidence,
            intent_margin: intent.margin,
            asr_confidence: None,
            transcript,
            words: transcript.split_whitespace().count(),
            flow_state: &flow_state,
            repeats: match (label, self.last_intent.as_deref()) {
                (Some(now), Some(before)) if now == before => self.repeat_streak + 1,
                _ => 0,
            },
            failed_attempts: self.failed_streak,
            turn: self.counters.turns + 1,
            cluster_available: self.cluster_available,
        };
        let decision = self.router.decide(&features);
        let mut session = self.session.clone();
        let reply = match decision.tier {
            Tier::Human => session.on_handoff(transcript).unwrap_or_else(|| FlowReply {
                text: self.cfg.handoff_text.clone(),
                action: FlowAction::Transfer,
                task: None,
                events: Vec::new(),
                fallback: false,
            }),
            Tier::Edge | Tier::Cluster => session.on_turn(&intent.label, transcript, None),
        };
        let Some(p) = self.pending_for(turn) else { return };
        p.route = Some(decision);
        p.tier = match decision.tier {
            Tier::Edge => TurnTier::Edge,
            Tier::Cluster => TurnTier::Cluster,
            Tier::Human => TurnTier::Human,
        };
        p.awaiting_cluster = decision.tier == Tier::Cluster;
        // For the cluster this is the fallback, ready in case it is needed.
        self.set_reply(now, turn, session, reply);
        // An intent that came after the endpoint escalates at once.
        if self.pending_for(turn).is_some_and(|p| p.endpoint_at.is_some() && p.awaiting_cluster) {
            self.start_escalation(now);
        }
    }

    /// A turn is committed: update the streaks the router reads and
    /// remember what the caller said.
    pub(super) fn note_committed_turn(&mut self, record: &TurnRecord, not_understood: bool) {
        let intent = record.intent.clone();
        self.repeat_streak = match (&intent, &self.last_intent) {
            (Some(now), Some(before)) if now == before => self.repeat_streak + 1,
            _ => 0,
        };
        self.last_intent = intent;
        if record.tier == TurnTier::Human {
            self.counters.handoffs += 1;
        }
        self.failed_streak = if not_understood { self.failed_streak + 1 } else { 0 };
        let said = match (&record.dtmf, record.transcript.trim()) {
            (Some(keys), "") => format!("(keyed {keys})"),
            (_, text) => text.to_string(),
        };
        self.remember(ChatMessage::user(said));
    }

    /// Adds to the conversation kept for escalations (bounded).
    pub(super) fn remember(&mut self, message: ChatMessage) {
        if message.content.trim().is_empty() {
            return;
        }
        self.conversation.push_back(message);
        while self.conversation.len() > self.cfg.cluster_history_messages {
            self.conversation.pop_front();
        }
    }

    /// The conversation for an escalation: what was said before (at most
    /// `cluster_history_messages - 1` messages), then the caller's turn.
    pub(super) fn history_with(&self, caller_turn: &str) -> Vec<ChatMessage> {
        let earlier = self.cfg.cluster_history_messages.saturating_sub(1);
        let skip = self.conversation.len().saturating_sub(earlier);
        let mut history: Vec<ChatMessage> = self.conversation.iter().skip(skip).cloned().collect();
        history.push(ChatMessage::user(caller_turn));
        history
    }
}

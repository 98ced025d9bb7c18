//! One call's conversation machine wired to the engine pool: the glue every
//! channel driver (SIP/RTP, WebRTC, the scripted caller) shares.
//!
//! A driver owns the transport and the clock. Every 20 ms it hands
//! [`LiveCall::tick`] the caller's frame (or silence when the jitter buffer
//! had nothing) and gets back what to do: agent audio to send, a transfer,
//! a hang-up, events for logs and data channels. Engine commands go to the
//! [`EnginePool`] here; results come back on this call's own channel and are
//! fed to the [`Call`] at the next tick (or at once, by a driver that awaits
//! [`LiveCall::engine_results`]). When the call is over, [`LiveCall::finish`]
//! returns the summary the outcome recorder needs.
//!
//! Escalated turns (`Command::Escalate`) stream from the central cluster on
//! the async runtime given in [`CallServices`]: each sentence comes back as
//! `ClusterSentence`, then one `ClusterDone`; a cancelled escalation's task
//! is aborted. Without a cluster the router never escalates (the call is
//! told the cluster is unavailable).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use std::collections::HashMap;

use serde::Serialize;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::call::router::Router;
use crate::call::{
    Call, CallConfig, CallCounters, CallEvent, CallState, ClusterTurnOutcome, Command, EngineResult, Output, RequestId,
    TurnRecord,
};
use crate::engine::pool::{CallId, EnginePool, Job, SubmitError};
use crate::flow::{Flow, FlowSession};
use crate::media::vad::VadConfig;
use crate::outcome::event::{Channel, SatisfactionRecord, SurveyMethod, Timestamp, SCHEMA_VERSION};
use crate::outcome::recorder::CallFacts;
use crate::outcome::{EventError, OutcomeEvent};
use crate::proto::openai::{ChatMessage, TurnContext};
use crate::runtime::cluster::{ClusterChunk, ClusterClient, ClusterOutcome, ClusterRequest};

/// What every call on a node shares besides the engine: the router, and
/// the central cluster with the runtime its requests run on.
#[derive(Clone)]
pub struct CallServices {
    pub pool: Arc<EnginePool>,
    pub router: Arc<Router>,
    pub cluster: Option<(Arc<ClusterClient>, tokio::runtime::Handle)>,
}

impl CallServices {
    /// The engine alone: the default router, no cluster (offline harnesses).
    pub fn edge_only(pool: Arc<EnginePool>) -> CallServices {
        let router = Router::new(Default::default()).expect("the default router config is valid");
        CallServices { pool, router: Arc::new(router), cluster: None }
    }
}

/// What the driver must do after a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveOutput {
    /// One 20 ms frame of agent audio (16 kHz mono) to send now.
    Audio(Vec<f32>),
    /// Hand the caller to a person.
    Transfer,
    /// The agent ends the call.
    Hangup,
    /// For logs, metrics and data channels (turn records among them).
    Event(CallEvent),
}

/// A call ready for the outcome recorder (and, as JSON, for a report).
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub call_id: CallId,
    #[serde(skip)]
    pub flow: Arc<Flow>,
    pub turns: Vec<TurnRecord>,
    pub counters: CallCounters,
    pub final_state: CallState,
    pub slots: BTreeMap<String, String>,
    pub tasks_attempted: Vec<String>,
    pub tasks_completed: Vec<String>,
    #[serde(skip)]
    pub answered_at: SystemTime,
    #[serde(skip)]
    pub ended_at: SystemTime,
    pub duration_ms: f64,
    /// The call ended in a hand-off to a person.
    pub transferred: bool,
    /// The engine refused work (saturated) this many times.
    pub refused: u32,
    /// The caller's rating (1-5) from the post-call survey.
    pub satisfaction: Option<u8>,
}

/// Where a call came from, for its outcome records.
#[derive(Debug, Clone, Copy)]
pub struct CallOrigin<'a> {
    pub node_id: &'a str,
    pub call_id: &'a str,
    pub channel: Channel,
    pub trunk_or_site: &'a str,
    pub number: &'a str,
}

impl<'a> CallOrigin<'a> {
    /// A call placed on this machine (`voice-edge call`, `talk`, tests).
    pub fn local(node_id: &'a str, call_id: &'a str, trunk_or_site: &'a str) -> Self {
        CallOrigin { node_id, call_id, channel: Channel::Local, trunk_or_site, number: "local" }
    }
}

impl CallSummary {
    /// The call's outcome events: one per turn, then the call's.
    pub fn outcome_events(&self, origin: CallOrigin<'_>) -> Result<Vec<OutcomeEvent>, EventError> {
        let mut events = crate::outcome::recorder::call_events(&CallFacts {
            node_id: origin.node_id,
            call_id: origin.call_id,
            channel: origin.channel,
            trunk_or_site: origin.trunk_or_site,
            number: origin.number,
            answered: self.answered_at,
            ended: self.ended_at,
            flow_name: &self.flow.name,
            flow_version: self.flow.version,
            turns: &self.turns,
            tasks_attempted: &self.tasks_attempted,
            tasks_completed: &self.tasks_completed,
            counters: &self.counters,
            transferred: self.transferred,
        })?;
        if let Some(score) = self.satisfaction {
            let method = if origin.channel == Channel::Webrtc { SurveyMethod::WidgetRating } else { SurveyMethod::DtmfSurvey };
            events.push(OutcomeEvent::satisfaction(
                origin.node_id,
                SatisfactionRecord {
                    schema_version: SCHEMA_VERSION,
                    call_id: origin.call_id.to_string(),
                    score,
                    method,
                    time: Timestamp::from_system_time(self.ended_at),
                },
            )?);
        }
        Ok(events)
    }
}

pub struct LiveCall {
    call: Call,
    id: CallId,
    flow: Arc<Flow>,
    pool: Arc<EnginePool>,
    cluster: Option<(Arc<ClusterClient>, tokio::runtime::Handle)>,
    escalations: HashMap<RequestId, JoinHandle<()>>,
    /// The transfer target took the caller (the call machine has ended).
    transfer_accepted: bool,
    reply_tx: UnboundedSender<EngineResult>,
    reply_rx: UnboundedReceiver<EngineResult>,
    turns: Vec<TurnRecord>,
    refused: u32,
    started: Instant,
    answered_at: SystemTime,
}

/// The request id of intent warm-ups (no result comes back for them).
const WARM_REQUEST: RequestId = 0;

impl LiveCall {
    /// Answers: the call starts (greeting, timers) at `now`; `answered_at`
    /// is the same moment on the wall clock, for the outcome records.
    pub fn start(
        services: &CallServices,
        id: CallId,
        flow: Arc<Flow>,
        call_cfg: CallConfig,
        vad: VadConfig,
        now: Instant,
        answered_at: SystemTime,
    ) -> LiveCall {
        let (reply_tx, reply_rx) = unbounded_channel();
        let mut call = Call::new(call_cfg, vad, FlowSession::new(flow.clone())).with_router(services.router.clone());
        call.set_cluster_available(services.cluster.as_ref().is_some_and(|(c, _)| c.is_available()));
        call.start(now);
        LiveCall {
            call,
            id,
            flow,
            pool: services.pool.clone(),
            cluster: services.cluster.clone(),
            escalations: HashMap::new(),
            transfer_accepted: false,
            reply_tx,
            reply_rx,
            turns: Vec::new(),
            refused: 0,
            started: now,
            answered_at,
        }
    }

    /// For channels that collect the rating themselves (see
    /// [`Call::set_keypad_survey`]).
    pub fn without_keypad_survey(mut self) -> Self {
        self.call.set_keypad_survey(false);
        self
    }

    pub fn id(&self) -> CallId {
        self.id
    }

    pub fn state(&self) -> CallState {
        self.call.state()
    }

    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The channel engine results arrive on, for drivers that await them
    /// between ticks; feed each to [`LiveCall::engine_result`].
    pub fn engine_results(&mut self) -> &mut UnboundedReceiver<EngineResult> {
        &mut self.reply_rx
    }

    pub fn engine_result(&mut self, now: Instant, result: EngineResult, out: &mut Vec<LiveOutput>) {
        self.feed(now, result);
        self.drain(now, out);
    }

    fn feed(&mut self, now: Instant, result: EngineResult) {
        if let EngineResult::ClusterDone { id, .. } = &result {
            self.escalations.remove(id);
        }
        self.call.handle_engine(now, result);
    }

    /// One 20 ms step: engine results that arrived, due timers, the caller's
    /// frame (exactly 320 samples at 16 kHz), then everything the call wants done.
    pub fn tick(&mut self, now: Instant, caller_frame: &[f32], out: &mut Vec<LiveOutput>) {
        while let Ok(result) = self.reply_rx.try_recv() {
            self.feed(now, result);
        }
        if let Some((client, _)) = &self.cluster {
            self.call.set_cluster_available(client.is_available());
        }
        if self.call.poll_timeout().is_some_and(|t| t <= now) {
            self.call.handle_timeout(now);
        }
        if let Err(e) = self.call.handle_audio(now, caller_frame) {
            tracing::warn!(call = self.id, error = %e, "caller frame rejected");
        }
        self.drain(now, out);
    }

    /// A DTMF digit from the transport (RFC 4733, SIP INFO, the widget's keypad).
    pub fn dtmf(&mut self, now: Instant, digit: char, out: &mut Vec<LiveOutput>) {
        self.call.handle_dtmf(now, digit);
        self.drain(now, out);
    }

    /// The transfer target accepted the caller.
    pub fn transfer_accepted(&mut self, now: Instant, out: &mut Vec<LiveOutput>) {
        self.transfer_accepted = true;
        self.call.transfer_accepted(now);
        self.drain(now, out);
    }

    /// Ends the call (either side hung up, or the driver gave up), drops its
    /// queued engine work and returns its summary.
    pub fn finish(mut self, now: Instant) -> CallSummary {
        let transferred = self.transfer_accepted || self.call.state() == CallState::Transferring;
        self.call.hangup(now);
        for (_, task) in self.escalations.drain() {
            task.abort();
        }
        // A reply cut short by the hang-up is still a turn.
        while let Some(out) = self.call.poll_output() {
            if let Output::Event(CallEvent::TurnCompleted(record)) = out {
                self.turns.push(record);
            }
        }
        self.pool.end_call(self.id);
        let session = self.call.session();
        CallSummary {
            call_id: self.id,
            flow: self.flow.clone(),
            turns: self.turns,
            counters: self.call.counters().clone(),
            final_state: self.call.state(),
            slots: session.slots().clone(),
            tasks_attempted: session.tasks_attempted().to_vec(),
            tasks_completed: session.tasks_completed().to_vec(),
            answered_at: self.answered_at,
            ended_at: self.answered_at + now.duration_since(self.started),
            duration_ms: now.duration_since(self.started).as_secs_f64() * 1e3,
            transferred,
            refused: self.refused,
            satisfaction: self.call.satisfaction(),
        }
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<LiveOutput>) {
        while let Some(output) = self.call.poll_output() {
            match output {
                Output::Command(Command::Transcribe { id, audio, prompt, partial }) => {
                    self.submit(now, id, Job::Transcribe { audio, prompt, optional: partial })
                }
                Output::Command(Command::Classify { id, text }) => self.submit(now, id, Job::Classify { flow: self.flow.clone(), text }),
                Output::Command(Command::WarmIntent { text }) => {
                    // Best effort: shed when the intent stage is busy; no result.
                    let _ = self.pool.submit(self.id, WARM_REQUEST, Job::WarmIntent { flow: self.flow.clone(), text }, self.reply_tx.clone());
                }
                Output::Command(Command::Synthesize { id, text }) => self.submit(now, id, Job::Synthesize { text }),
                Output::Command(Command::Cancel { id }) => match self.escalations.remove(&id) {
                    Some(task) => task.abort(),
                    None => self.pool.cancel(self.id, id),
                },
                Output::Command(Command::Escalate { id, context, history }) => self.escalate(now, id, context, history),
                Output::Command(Command::SendAudio(frame)) => out.push(LiveOutput::Audio(frame)),
                Output::Command(Command::Transfer) => out.push(LiveOutput::Transfer),
                Output::Command(Command::Hangup) => out.push(LiveOutput::Hangup),
                Output::Event(CallEvent::TurnCompleted(record)) => {
                    self.turns.push(record.clone());
                    out.push(LiveOutput::Event(CallEvent::TurnCompleted(record)));
                }
                Output::Event(event) => out.push(LiveOutput::Event(event)),
            }
        }
    }

    /// Streams an escalated turn from the cluster on the async runtime.
    fn escalate(&mut self, now: Instant, id: RequestId, context: TurnContext, history: Vec<ChatMessage>) {
        let Some((client, runtime)) = self.cluster.clone() else {
            let outcome = ClusterTurnOutcome::failed("no central cluster is configured".into());
            self.call.handle_engine(now, EngineResult::ClusterDone { id, outcome });
            return;
        };
        let reply = self.reply_tx.clone();
        let task = runtime.spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ClusterChunk>(16);
            let request = ClusterRequest { context, history, temperature: 0.3, max_tokens: None };
            let stream = client.stream_turn(request, tx);
            tokio::pin!(stream);
            let outcome = loop {
                tokio::select! {
                    Some(ClusterChunk::Sentence(text)) = rx.recv() => {
                        let _ = reply.send(EngineResult::ClusterSentence { id, text });
                    }
                    outcome = &mut stream => break outcome,
                }
            };
            while let Ok(ClusterChunk::Sentence(text)) = rx.try_recv() {
                let _ = reply.send(EngineResult::ClusterSentence { id, text });
            }
            let _ = reply.send(EngineResult::ClusterDone { id, outcome: turn_outcome(&outcome) });
        });
        self.escalations.insert(id, task);
    }

    fn submit(&mut self, now: Instant, id: RequestId, job: Job) {
        if let Err(e) = self.pool.submit(self.id, id, job, self.reply_tx.clone()) {
            if !matches!(e, SubmitError::Shed(_)) {
                self.refused += 1;
            }
            self.call.handle_engine(now, EngineResult::Failed { id, error: e.to_string() });
        }
    }
}

/// What the call machine needs of a cluster turn's outcome.
fn turn_outcome(o: &ClusterOutcome) -> ClusterTurnOutcome {
    let usage = o.usage.unwrap_or_default();
    ClusterTurnOutcome {
        ok: o.error.is_none(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        first_token_ms: o.first_token_ms,
        error: o.error.map(|kind| match &o.error_detail {
            Some(detail) => format!("{kind:?}: {detail}"),
            None => format!("{kind:?}"),
        }),
    }
}

//! A live call with a scripted caller, in real time, on the engine pool.
//!
//! The caller is a list of utterances (16 kHz mono). It waits for the
//! agent's greeting, says its first utterance, waits for the agent's reply to
//! end, pauses like a person would, says the next, and so on; then it waits
//! for the last reply and hangs up. Frames go through a [`Call`] every 20 ms
//! of wall-clock time exactly as a transport would deliver them, so the
//! latencies measured (voice-to-voice, endpointing, each engine stage) are
//! the ones a caller hears. This drives `voice-edge call`, the load harness
//! and the end-to-end tests; a transport driver has the same shape with a
//! socket where the script is.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::{Call, CallConfig, CallCounters, CallEvent, CallState, Command, EngineResult, Output, TurnRecord};
use crate::engine::pool::{CallId, EnginePool, Job};
use crate::flow::{Flow, FlowSession};
use crate::media::vad::VadConfig;
use crate::media::FRAME_SAMPLES;

const FRAME: Duration = Duration::from_millis(20);

/// How the scripted caller behaves.
#[derive(Debug, Clone)]
pub struct CallerScript {
    pub utterances: Vec<Vec<f32>>,
    /// Pause after the agent stops before the caller speaks.
    pub think_time: Duration,
    /// Longest the caller waits for an agent reply before giving up.
    pub patience: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_id: CallId,
    pub turns: Vec<TurnRecord>,
    pub counters: CallCounters,
    pub final_state: CallState,
    pub slots: std::collections::BTreeMap<String, String>,
    pub tasks_completed: Vec<String>,
    pub duration_ms: f64,
    /// Wall-clock answer and end times, for the outcome records.
    #[serde(skip)]
    pub answered_at: std::time::SystemTime,
    #[serde(skip)]
    pub ended_at: std::time::SystemTime,
    pub tasks_attempted: Vec<String>,
    /// The call ended in a hand-off to a person.
    pub transferred: bool,
    /// The engine refused work (saturated) this many times.
    pub refused: u32,
    /// Agent audio as the caller heard it, 16 kHz mono, aligned to the call's start.
    #[serde(skip)]
    pub agent_audio: Vec<f32>,
}

impl CallReport {
    /// The call's outcome events (one per turn, then the call's), as a
    /// local-channel call on `trunk_or_site`.
    pub fn outcome_events(
        &self,
        node_id: &str,
        call_id: &str,
        flow: &Flow,
        trunk_or_site: &str,
    ) -> Result<Vec<crate::outcome::OutcomeEvent>, crate::outcome::EventError> {
        crate::outcome::recorder::call_events(&crate::outcome::recorder::CallFacts {
            node_id,
            call_id,
            channel: crate::outcome::event::Channel::Local,
            trunk_or_site,
            number: "local",
            answered: self.answered_at,
            ended: self.ended_at,
            flow_name: &flow.name,
            flow_version: flow.version,
            turns: &self.turns,
            tasks_attempted: &self.tasks_attempted,
            tasks_completed: &self.tasks_completed,
            counters: &self.counters,
            transferred: self.transferred,
        })
    }
}

#[derive(Debug, PartialEq)]
enum Caller {
    WaitingForAgent { since: Instant, heard_agent: bool },
    Speaking { utterance: usize, pos: usize },
    Done,
}

/// Runs one call to its end (hang-up, transfer, or the script's end).
pub fn run_scripted_call(
    pool: &EnginePool,
    call_id: CallId,
    flow: Arc<Flow>,
    call_cfg: CallConfig,
    vad: VadConfig,
    script: &CallerScript,
) -> CallReport {
    let (reply_tx, reply_rx) = mpsc::channel::<EngineResult>();
    let mut call = Call::new(call_cfg, vad, FlowSession::new(flow.clone()));
    let t0 = Instant::now();
    let answered_at = std::time::SystemTime::now();
    let mut agent_audio: Vec<f32> = Vec::new();
    let mut turns = Vec::new();
    let mut refused = 0u32;
    let mut caller = Caller::WaitingForAgent { since: t0, heard_agent: false };
    let mut next_utterance = 0usize;
    let mut agent_quiet_since = t0;
    let mut ended_at: Option<Instant> = None;
    call.start(t0);

    let mut step = 0u64;
    loop {
        step += 1;
        let due = t0 + FRAME * step as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();

        while let Ok(result) = reply_rx.try_recv() {
            call.handle_engine(now, result);
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }

        // The caller's next frame.
        let frame: Vec<f32> = match &mut caller {
            Caller::Speaking { utterance, pos } => {
                let audio = &script.utterances[*utterance];
                let end = (*pos + FRAME_SAMPLES).min(audio.len());
                let mut f = audio[*pos..end].to_vec();
                f.resize(FRAME_SAMPLES, 0.0);
                *pos = end;
                if end >= audio.len() {
                    caller = Caller::WaitingForAgent { since: now, heard_agent: false };
                }
                f
            }
            _ => vec![0.0; FRAME_SAMPLES],
        };
        call.handle_audio(now, &frame).expect("scripted frames are 20 ms");

        // Drain outputs: engine work, agent audio, events.
        let mut sent_audio = false;
        while let Some(out) = call.poll_output() {
            match out {
                Output::Command(Command::Transcribe { id, audio, prompt, .. }) => {
                    submit(pool, &mut call, now, call_id, id, Job::Transcribe { audio, prompt }, &reply_tx, &mut refused)
                }
                Output::Command(Command::Classify { id, text }) => {
                    submit(pool, &mut call, now, call_id, id, Job::Classify { flow: flow.clone(), text }, &reply_tx, &mut refused)
                }
                Output::Command(Command::Synthesize { id, text }) => {
                    submit(pool, &mut call, now, call_id, id, Job::Synthesize { text }, &reply_tx, &mut refused)
                }
                Output::Command(Command::Cancel { id }) => pool.cancel(call_id, id),
                Output::Command(Command::SendAudio(f)) => {
                    let at = (now.duration_since(t0).as_secs_f64() * 16_000.0) as usize;
                    if agent_audio.len() < at {
                        agent_audio.resize(at, 0.0);
                    }
                    agent_audio.extend_from_slice(&f);
                    sent_audio = true;
                }
                Output::Command(Command::Transfer) | Output::Command(Command::Hangup) => {
                    ended_at.get_or_insert(now);
                }
                Output::Event(CallEvent::TurnCompleted(record)) => turns.push(record),
                Output::Event(_) => {}
            }
        }
        if sent_audio {
            agent_quiet_since = now;
        }

        // The caller takes its turn once the agent has spoken and gone quiet.
        if let Caller::WaitingForAgent { since, heard_agent } = &mut caller {
            *heard_agent |= sent_audio;
            let agent_done = *heard_agent && !sent_audio && call.state() == CallState::Listening;
            let quiet = now.duration_since(agent_quiet_since) >= script.think_time;
            if agent_done && quiet {
                if next_utterance < script.utterances.len() {
                    caller = Caller::Speaking { utterance: next_utterance, pos: 0 };
                    next_utterance += 1;
                } else {
                    caller = Caller::Done;
                }
            } else if now.duration_since(*since) > script.patience {
                caller = Caller::Done;
            }
        }
        if caller == Caller::Done || ended_at.is_some() || matches!(call.state(), CallState::Ended | CallState::Transferring) {
            break;
        }
    }
    let end = Instant::now();
    let transferred = call.state() == CallState::Transferring;
    call.hangup(end);
    // A reply cut short by the hang-up is still a turn.
    while let Some(out) = call.poll_output() {
        if let Output::Event(CallEvent::TurnCompleted(record)) = out {
            turns.push(record);
        }
    }
    pool.end_call(call_id);
    CallReport {
        call_id,
        turns,
        counters: call.counters().clone(),
        final_state: call.state(),
        slots: call.session().slots().clone(),
        tasks_completed: call.session().tasks_completed().to_vec(),
        duration_ms: end.duration_since(t0).as_secs_f64() * 1e3,
        answered_at,
        ended_at: std::time::SystemTime::now(),
        tasks_attempted: call.session().tasks_attempted().to_vec(),
        transferred,
        refused,
        agent_audio,
    }
}

#[allow(clippy::too_many_arguments)]
fn submit(
    pool: &EnginePool,
    call: &mut Call,
    now: Instant,
    call_id: CallId,
    id: u64,
    job: Job,
    reply: &mpsc::Sender<EngineResult>,
    refused: &mut u32,
) {
    if let Err(e) = pool.submit(call_id, id, job, reply.clone()) {
        *refused += 1;
        call.handle_engine(now, EngineResult::Failed { id, error: e.to_string() });
    }
}

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

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::live_call::{CallOrigin, CallServices, CallSummary, LiveCall, LiveOutput};
use crate::call::{CallConfig, CallState};
use crate::engine::pool::CallId;
use crate::flow::Flow;
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
    /// Turn records, counters, slots, tasks: what the outcome recorder needs.
    #[serde(flatten)]
    pub summary: CallSummary,
    /// Agent audio as the caller heard it, 16 kHz mono, aligned to the call's start.
    #[serde(skip)]
    pub agent_audio: Vec<f32>,
}

impl CallReport {
    /// The call's outcome events (one per turn, then the call's), as a
    /// local-channel call on `trunk_or_site`.
    pub fn outcome_events(&self, node_id: &str, call_id: &str, trunk_or_site: &str) -> Result<Vec<crate::outcome::OutcomeEvent>, crate::outcome::EventError> {
        self.summary.outcome_events(CallOrigin::local(node_id, call_id, trunk_or_site))
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
    services: &CallServices,
    call_id: CallId,
    flow: Arc<Flow>,
    call_cfg: CallConfig,
    vad: VadConfig,
    script: &CallerScript,
) -> CallReport {
    let t0 = Instant::now();
    let mut call = LiveCall::start(services, call_id, flow, call_cfg, vad, t0, std::time::SystemTime::now());
    let mut agent_audio: Vec<f32> = Vec::new();
    let mut caller = Caller::WaitingForAgent { since: t0, heard_agent: false };
    let mut next_utterance = 0usize;
    let mut agent_quiet_since = t0;
    let mut ended = false;
    let mut outputs = Vec::new();

    // Engine results are fed the moment they arrive, between frames, as the
    // SIP and WebRTC drivers do (a reply is not held for the next tick).
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer runtime");
    let mut step = 0u64;
    loop {
        step += 1;
        let due = tokio::time::Instant::from_std(t0 + FRAME * step as u32);
        waiter.block_on(async {
            loop {
                tokio::select! {
                    Some(result) = call.engine_results().recv() => call.engine_result(Instant::now(), result, &mut outputs),
                    _ = tokio::time::sleep_until(due) => break,
                }
            }
        });
        let now = Instant::now();

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
        call.tick(now, &frame, &mut outputs);

        let mut sent_audio = false;
        for out in outputs.drain(..) {
            match out {
                LiveOutput::Audio(f) => {
                    let at = (now.duration_since(t0).as_secs_f64() * 16_000.0) as usize;
                    if agent_audio.len() < at {
                        agent_audio.resize(at, 0.0);
                    }
                    agent_audio.extend_from_slice(&f);
                    sent_audio = true;
                }
                LiveOutput::Transfer | LiveOutput::Hangup => ended = true,
                LiveOutput::Event(_) => {}
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
        if caller == Caller::Done || ended || matches!(call.state(), CallState::Ended | CallState::Transferring) {
            break;
        }
    }
    CallReport { summary: call.finish(Instant::now()), agent_audio }
}

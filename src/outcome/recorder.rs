//! The outcome recorder: turns what a call did (the call machine's turn
//! records, the flow's task progress, counters) into outcome events, one per
//! turn and one for the call. Pure: wall-clock times come in as arguments.
//!
//! Mapping choices (documented in docs/OUTCOMES.md as well):
//! * a turn's `started` is the caller's last speech frame (the moment the
//!   turn passed to the agent) and `ended` is when the reply finished or was
//!   cut short;
//! * `resolution`: `transferred` when the call ended in a hand-off,
//!   `at_edge` when any task was completed on the edge, `abandoned` when the
//!   caller left first, `failed` when the engine failed every turn;
//! * `resolution_time_ms`: from answer to the end of the first turn that
//!   completed a task;
//! * `difficulty.score`: the mean of (1 - intent confidence) over the turns,
//!   raised by interruptions and fillers, clamped to 0..=1, with each
//!   feature reported.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::event::{
    CallRecord, Channel, Cost, Difficulty, Escalations, EventError, FlowRef, IntentDecision, LatencySummary,
    OutcomeEvent, ReplyAction, Resolution, RouterDecision, TaskEventRecord, Timestamp, TurnLatency, TurnRecord, SCHEMA_VERSION,
};
use crate::call::{CallCounters, TurnRecord as CallTurn, TurnTier};
use crate::flow::{FlowAction, TaskEvent};

/// Everything the recorder needs to know about one finished call.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    pub node_id: &'a str,
    pub call_id: &'a str,
    pub channel: Channel,
    pub trunk_or_site: &'a str,
    pub number: &'a str,
    pub answered: SystemTime,
    pub ended: SystemTime,
    pub flow_name: &'a str,
    pub flow_version: u32,
    pub turns: &'a [CallTurn],
    pub tasks_attempted: &'a [String],
    pub tasks_completed: &'a [String],
    pub counters: &'a CallCounters,
    /// The call ended in a hand-off to a person.
    pub transferred: bool,
}

fn at(answered: SystemTime, offset_ms: f64) -> Timestamp {
    Timestamp::from_system_time(answered + Duration::from_secs_f64(offset_ms.max(0.0) / 1e3))
}

fn turn_record(f: &CallFacts<'_>, t: &CallTurn) -> TurnRecord {
    TurnRecord {
        schema_version: SCHEMA_VERSION,
        call_id: f.call_id.to_string(),
        turn: t.turn,
        started: at(f.answered, t.speech_end_ms),
        ended: at(f.answered, t.completed_ms.max(t.speech_end_ms)),
        transcript: t.transcript.clone(),
        dtmf: t.dtmf.clone(),
        intent: t.intent.as_ref().map(|label| IntentDecision {
            label: label.clone(),
            confidence: f64::from(t.intent_confidence).clamp(0.0, 1.0),
            margin: f64::from(t.intent_margin).clamp(0.0, 1.0),
        }),
        router: t.route_reason.map(|reason| RouterDecision { tier: t.tier.as_str().to_string(), reason: reason.to_string() }),
        reply: t.reply.clone(),
        action: match t.action {
            Some(FlowAction::Transfer) => ReplyAction::Transfer,
            Some(FlowAction::EndCall) => ReplyAction::EndCall,
            _ => ReplyAction::Continue,
        },
        task: t.task.clone(),
        task_events: t
            .task_events
            .iter()
            .map(|e| match e {
                TaskEvent::Attempted { task } => TaskEventRecord::Attempted { task: task.clone() },
                TaskEvent::SlotFilled { task, slot } => TaskEventRecord::SlotFilled { task: task.clone(), slot: slot.clone() },
                TaskEvent::Completed { task } => TaskEventRecord::Completed { task: task.clone() },
            })
            .collect(),
        latency: TurnLatency {
            end_of_utterance_ms: Some(t.end_of_utterance_ms),
            asr_ms: t.asr_ms,
            intent_ms: t.intent_ms,
            tts_first_frame_ms: t.tts_ms,
            voice_to_voice_ms: t.voice_to_voice_ms,
        },
        barge_in: t.barged_in,
        cost: turn_cost(t),
    }
}

fn turn_cost(t: &CallTurn) -> Cost {
    Cost {
        local_inference_ms: t.asr_ms.unwrap_or(0.0) + t.intent_ms.unwrap_or(0.0) + t.tts_ms.unwrap_or(0.0),
        cluster_prompt_tokens: t.cluster_prompt_tokens,
        cluster_completion_tokens: t.cluster_completion_tokens,
        cluster_reasoning_tokens: t.cluster_reasoning_tokens,
    }
}



/// The outcome events of a finished call: one per turn, then the call's.
pub fn call_events(f: &CallFacts<'_>) -> Result<Vec<OutcomeEvent>, EventError> {
    let mut events = Vec::with_capacity(f.turns.len() + 1);
    let mut cost = Cost::default();
    for t in f.turns {
        cost.add(&turn_cost(t));
        events.push(OutcomeEvent::turn(f.node_id, turn_record(f, t))?);
    }

    let by_cluster = f.turns.iter().any(|t| t.tier == TurnTier::Cluster);
    let resolution = if f.transferred {
        Resolution::Transferred
    } else if !f.tasks_completed.is_empty() && by_cluster {
        Resolution::ByCluster
    } else if !f.tasks_completed.is_empty() {
        Resolution::AtEdge
    } else if !f.turns.is_empty() && f.counters.engine_failures as usize >= f.turns.len() {
        Resolution::Failed
    } else {
        Resolution::Abandoned
    };
    let resolution_time_ms = f
        .turns
        .iter()
        .find(|t| t.task_events.iter().any(|e| matches!(e, TaskEvent::Completed { .. })))
        .map(|t| t.completed_ms.max(0.0) as u64);

    let mut features = BTreeMap::new();
    let n = f.turns.len().max(1) as f64;
    let uncertainty = f.turns.iter().map(|t| 1.0 - f64::from(t.intent_confidence).clamp(0.0, 1.0)).sum::<f64>() / n;
    features.insert("intent_uncertainty".to_string(), uncertainty);
    features.insert("barge_ins".to_string(), f64::from(f.counters.barge_ins));
    features.insert("fillers".to_string(), f64::from(f.counters.fillers));
    features.insert("turns".to_string(), f.turns.len() as f64);
    let routed: Vec<f64> = f.turns.iter().filter_map(|t| t.difficulty).map(f64::from).collect();
    let router_difficulty = if routed.is_empty() { 0.0 } else { routed.iter().copied().fold(0.0, f64::max) };
    features.insert("router_difficulty_max".to_string(), router_difficulty);
    let score = (uncertainty + 0.1 * f64::from(f.counters.barge_ins) + 0.05 * f64::from(f.counters.fillers))
        .max(router_difficulty)
        .clamp(0.0, 1.0);
    let tiers: Vec<String> = f
        .turns
        .iter()
        .filter(|t| t.tier != TurnTier::Edge)
        .map(|t| t.tier.as_str().to_string())
        .collect();

    let mut intents: Vec<String> = Vec::new();
    for t in f.turns {
        if let Some(i) = &t.intent {
            if !intents.contains(i) {
                intents.push(i.clone());
            }
        }
    }
    let v2v: Vec<f64> = f.turns.iter().filter_map(|t| t.voice_to_voice_ms).collect();
    let duration_ms = f.ended.duration_since(f.answered).unwrap_or_default().as_millis() as u64;
    let record = CallRecord {
        schema_version: SCHEMA_VERSION,
        call_id: f.call_id.to_string(),
        channel: f.channel,
        trunk_or_site: f.trunk_or_site.to_string(),
        number: f.number.to_string(),
        caller: None,
        started: Timestamp::from_system_time(f.answered),
        ended: Timestamp::from_system_time(f.ended),
        duration_ms,
        turns: f.turns.len() as u32,
        intents,
        tasks_attempted: f.tasks_attempted.to_vec(),
        tasks_completed: f.tasks_completed.to_vec(),
        resolution,
        resolution_time_ms,
        escalations: Escalations { count: tiers.len() as u32, tiers },
        difficulty: Difficulty { score, features },
        latency: LatencySummary::from_samples(&v2v),
        cost,
        flow: FlowRef { name: f.flow_name.to_string(), version: f.flow_version },
    };
    events.push(OutcomeEvent::call(f.node_id, record)?);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: u32, completed: bool) -> CallTurn {
        CallTurn {
            turn: n,
            transcript: "where is my order".into(),
            intent: Some("order_status".into()),
            intent_confidence: 0.9,
            intent_margin: 0.8,
            reply: "ok".into(),
            action: Some(FlowAction::Continue),
            task: Some("order_status".into()),
            task_events: if completed { vec![TaskEvent::Completed { task: "order_status".into() }] } else { vec![] },
            end_of_utterance_ms: 300.0,
            asr_ms: Some(200.0),
            intent_ms: Some(300.0),
            tts_ms: Some(10.0),
            voice_to_voice_ms: Some(700.0),
            speech_end_ms: 2000.0 * n as f64,
            completed_ms: 2000.0 * n as f64 + 1500.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_call_yields_turn_events_then_the_call_event() {
        let turns = vec![turn(1, false), turn(2, true)];
        let counters = CallCounters { turns: 2, ..Default::default() };
        let answered = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let facts = CallFacts {
            node_id: "edge-1",
            call_id: "c42",
            channel: Channel::Local,
            trunk_or_site: "cli",
            number: "local",
            answered,
            ended: answered + Duration::from_secs(9),
            flow_name: "retail",
            flow_version: 1,
            turns: &turns,
            tasks_attempted: &["order_status".to_string()],
            tasks_completed: &["order_status".to_string()],
            counters: &counters,
            transferred: false,
        };
        let events = call_events(&facts).unwrap();
        assert_eq!(events.len(), 3);
        let ids: Vec<&str> = events.iter().map(|e| e.id()).collect();
        assert_eq!(ids, ["edge-1:c42:turn:1", "edge-1:c42:turn:2", "edge-1:c42:call"]);
        let json = String::from_utf8(events[2].to_json().unwrap()).unwrap();
        assert!(json.contains("\"resolution\":\"at_edge\""), "{json}");
        assert!(json.contains("\"resolution_time_ms\":5500"), "{json}");
        // round trip through the wire format
        for e in &events {
            assert_eq!(&OutcomeEvent::from_json(&e.to_json().unwrap()).unwrap(), e);
        }
    }

    #[test]
    fn no_completed_task_is_abandoned_and_a_hand_off_is_transferred() {
        let turns = vec![turn(1, false)];
        let counters = CallCounters::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut facts = CallFacts {
            node_id: "edge-1",
            call_id: "c43",
            channel: Channel::Sip,
            trunk_or_site: "carrier-a",
            number: "+4930123456",
            answered: t0,
            ended: t0 + Duration::from_secs(4),
            flow_name: "retail",
            flow_version: 1,
            turns: &turns,
            tasks_attempted: &[],
            tasks_completed: &[],
            counters: &counters,
            transferred: false,
        };
        let json = |f: &CallFacts<'_>| String::from_utf8(call_events(f).unwrap().last().unwrap().to_json().unwrap()).unwrap();
        assert!(json(&facts).contains("\"resolution\":\"abandoned\""));
        facts.transferred = true;
        assert!(json(&facts).contains("\"resolution\":\"transferred\""));
    }
}

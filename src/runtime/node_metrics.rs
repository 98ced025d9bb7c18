//! Domain facts into the node's Prometheus metrics: what a call, a turn, the
//! engine, the spool, the shipper and the SIP core report, mapped onto the
//! series of [`Metrics`]. `ops::metrics` knows only series; this module
//! knows what the runtime's structs mean.

use crate::call::{TurnRecord, TurnTier};
use crate::engine::pool::PoolStats;
use crate::ops::metrics::{CallResult, Channel, EngineStage, Metrics, SipMethod, SipStatusClass, Tier, TurnStage};
use crate::outcome::SpoolStats;
use crate::proto::sip::UasStats;
use crate::runtime::live_call::CallSummary;
use crate::runtime::shipper::ShipperStats;

pub fn call_started(m: &Metrics, channel: Channel) {
    m.calls_active.with(channel).inc();
}

pub fn call_ended(m: &Metrics, channel: Channel, summary: &CallSummary) {
    m.calls_active.with(channel).dec();
    let result = if summary.transferred {
        CallResult::Transferred
    } else if summary.refused > 0 && summary.turns.is_empty() {
        CallResult::Failed
    } else if summary.tasks_completed.is_empty() {
        // As in the outcome record: no task done is no resolution.
        CallResult::Abandoned
    } else {
        CallResult::Completed
    };
    m.calls_total.with((channel, result)).inc();
}

pub fn call_refused(m: &Metrics, channel: Channel) {
    m.calls_total.with((channel, CallResult::Refused)).inc();
}

pub fn turn_completed(m: &Metrics, t: &TurnRecord) {
    let observe = |stage: TurnStage, ms: Option<f64>| {
        if let Some(ms) = ms.filter(|v| v.is_finite() && *v >= 0.0) {
            m.turn_latency_seconds.with(stage).observe(ms / 1e3);
        }
    };
    observe(TurnStage::EndOfUtterance, Some(t.end_of_utterance_ms));
    observe(TurnStage::Asr, t.asr_ms);
    observe(TurnStage::Intent, t.intent_ms);
    observe(TurnStage::Tts, t.tts_ms);
    observe(TurnStage::VoiceToVoice, t.voice_to_voice_ms);
    if t.barged_in {
        m.barge_ins_total.inc();
    }
    let tier = match t.tier {
        TurnTier::Edge => Tier::Edge,
        TurnTier::Human => Tier::Human,
        TurnTier::Cluster => Tier::Cluster,
        TurnTier::EdgeFallback => Tier::EdgeFallback,
    };
    m.router_decisions_total.with(tier).inc();
}

/// Gauges read from the engine, the spool and the shipper.
pub fn sample(m: &Metrics, engine: &PoolStats, spool: &SpoolStats, shipper: Option<&ShipperStats>) {
    m.engine_queue_depth.with(EngineStage::Asr).set_count(engine.asr_queued as u64);
    m.engine_queue_depth.with(EngineStage::Intent).set_count(engine.intent_queued as u64);
    m.engine_queue_depth.with(EngineStage::Tts).set_count(engine.tts_queued as u64);
    m.spool_backlog_events.set_count(spool.backlog_records + spool.pending_records);
    m.spool_backlog_bytes.set_count(spool.backlog_bytes);
    if let Some(s) = shipper {
        m.shipper_lag_events.set_count(s.lag);
        m.outcome_events_shipped_total.advance_to(s.published.saturating_sub(s.duplicates));
    }
}

/// The SIP core's counters (it counts; the metrics follow).
pub fn sip(m: &Metrics, s: &UasStats) {
    let r = &s.requests;
    for (method, n) in [
        (SipMethod::Invite, r.invite),
        (SipMethod::Ack, r.ack),
        (SipMethod::Bye, r.bye),
        (SipMethod::Cancel, r.cancel),
        (SipMethod::Options, r.options),
        (SipMethod::Info, r.info),
        (SipMethod::Notify, r.notify),
        (SipMethod::Refer, r.refer),
        (SipMethod::Other, r.other),
    ] {
        m.sip_requests_total.with(method).advance_to(n);
    }
    let c = &s.responses_sent;
    for (class, n) in [
        (SipStatusClass::Provisional, c.provisional_1xx),
        (SipStatusClass::Success, c.success_2xx),
        (SipStatusClass::Redirection, c.redirection_3xx),
        (SipStatusClass::ClientError, c.client_error_4xx),
        (SipStatusClass::ServerError, c.server_error_5xx),
        (SipStatusClass::GlobalFailure, c.global_failure_6xx),
    ] {
        m.sip_responses_total.with(class).advance_to(n);
    }
}

//! `/metrics` output read back by an independent Prometheus text-format
//! parser (`prometheus-parse`): every line parses, every family has HELP and
//! TYPE, and the values read back are the ones recorded.
//!
//! The parser does not unescape label values (it splits on `,` and `=`), so
//! escaping is checked byte for byte in `ops::metrics`'s unit tests instead.

use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value};
use voice_edge::ops::metrics::*;

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse")
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Value {
    let hit = s
        .samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)) && x.labels.len() == labels.len());
    &hit.unwrap_or_else(|| panic!("no sample {metric} {labels:?}")).value
}

fn recorded_metrics() -> Metrics {
    let m = Metrics::new("edge-fra-01");
    m.calls_total.with((Channel::Sip, CallResult::Completed)).inc_by(5);
    m.calls_total.with((Channel::Webrtc, CallResult::Refused)).inc();
    m.calls_active.with(Channel::Sip).set_count(3);
    m.barge_ins_total.inc_by(2);
    m.router_decisions_total.with(Tier::Cluster).inc_by(4);
    m.engine_queue_depth.with(EngineStage::Intent).set_count(7);
    m.spool_backlog_events.set_count(123);
    m.shipper_lag_events.set_count(120);
    m.outcome_drops_total.with(DropReason::SpoolFull).inc();
    m.sip_requests_total.with(SipMethod::from_token("INVITE")).inc_by(9);
    m.sip_responses_total.with(SipStatusClass::from_status(200).unwrap()).inc_by(8);
    m.rtp_packets_total.with(Direction::Received).inc_by(50_000);
    let v2v = m.turn_latency_seconds.with(TurnStage::VoiceToVoice);
    for ms in [180, 420, 650, 1400, 12_000] {
        v2v.observe_duration(Duration::from_millis(ms));
    }
    m
}

#[test]
fn every_line_is_valid_exposition_text() {
    let text = recorded_metrics().render();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let info = LineInfo::parse(line);
        if line.starts_with("# HELP") {
            assert!(matches!(info, LineInfo::Doc { .. }), "{line}");
        } else if line.starts_with("# TYPE") {
            assert!(matches!(info, LineInfo::Type { .. }), "{line}");
        } else {
            assert!(matches!(info, LineInfo::Sample { .. }), "not a sample: {line}");
        }
    }
}

#[test]
fn every_family_has_help_and_type_before_its_samples() {
    let m = recorded_metrics();
    let text = m.render();
    let s = scrape(&text);
    for f in m.families() {
        let name = f.desc().name;
        assert_eq!(s.docs.get(name).map(String::as_str), Some(f.desc().help), "HELP of {name}");
        let type_line = format!("# TYPE {name} {}", f.metric_type().as_str());
        let type_at = text.find(&format!("{type_line}\n")).unwrap_or_else(|| panic!("missing {type_line}"));
        let first_sample = text.lines().position(|l| l.starts_with(name) && !l.starts_with('#')).unwrap();
        let type_line_no = text[..type_at].lines().count();
        assert!(type_line_no < first_sample, "{name}: TYPE after samples");
    }
}

#[test]
fn counters_and_gauges_read_back() {
    let s = scrape(&recorded_metrics().render());
    assert_eq!(find(&s, "voice_edge_calls_total", &[("channel", "sip"), ("result", "completed")]), &Value::Counter(5.0));
    assert_eq!(find(&s, "voice_edge_calls_total", &[("channel", "webrtc"), ("result", "refused")]), &Value::Counter(1.0));
    assert_eq!(find(&s, "voice_edge_calls_total", &[("channel", "sip"), ("result", "failed")]), &Value::Counter(0.0));
    assert_eq!(find(&s, "voice_edge_calls_active", &[("channel", "sip")]), &Value::Gauge(3.0));
    assert_eq!(find(&s, "voice_edge_barge_ins_total", &[]), &Value::Counter(2.0));
    assert_eq!(find(&s, "voice_edge_router_decisions_total", &[("tier", "cluster")]), &Value::Counter(4.0));
    assert_eq!(find(&s, "voice_edge_engine_queue_depth", &[("stage", "intent")]), &Value::Gauge(7.0));
    assert_eq!(find(&s, "voice_edge_spool_backlog_events", &[]), &Value::Gauge(123.0));
    assert_eq!(find(&s, "voice_edge_shipper_lag_events", &[]), &Value::Gauge(120.0));
    assert_eq!(find(&s, "voice_edge_outcome_drops_total", &[("reason", "spool_full")]), &Value::Counter(1.0));
    assert_eq!(find(&s, "voice_edge_sip_requests_total", &[("method", "INVITE")]), &Value::Counter(9.0));
    assert_eq!(find(&s, "voice_edge_sip_responses_total", &[("class", "2xx")]), &Value::Counter(8.0));
    assert_eq!(find(&s, "voice_edge_rtp_packets_total", &[("direction", "rx")]), &Value::Counter(50_000.0));
    assert_eq!(find(&s, "voice_edge_node_info", &[("node", "edge-fra-01"), ("version", env!("CARGO_PKG_VERSION"))]), &Value::Gauge(1.0));
    let Value::Gauge(start) = find(&s, "process_start_time_seconds", &[]) else { panic!("start time is a gauge") };
    assert!(*start > 1.6e9, "start time {start}");
}

#[test]
fn histogram_reads_back_as_cumulative_buckets_sum_and_count() {
    let s = scrape(&recorded_metrics().render());
    let Value::Histogram(buckets) = find(&s, "voice_edge_turn_latency_seconds", &[("stage", "voice_to_voice")]) else {
        panic!("voice_edge_turn_latency_seconds is not a histogram")
    };
    assert_eq!(buckets.len(), LATENCY_BUCKETS_SECONDS.len() + 1);
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap_or_else(|| panic!("no le={le}")).count;
    assert_eq!(at(0.1), 0.0);
    assert_eq!(at(0.2), 1.0); // 0.18
    assert_eq!(at(0.5), 2.0); // + 0.42
    assert_eq!(at(0.8), 3.0); // + 0.65
    assert_eq!(at(1.5), 4.0); // + 1.4
    assert_eq!(at(10.0), 4.0);
    assert_eq!(at(f64::INFINITY), 5.0); // + 12.0
    for w in buckets.windows(2) {
        assert!(w[0].less_than < w[1].less_than && w[0].count <= w[1].count, "not cumulative: {buckets:?}");
    }
    let Value::Untyped(sum) = find(&s, "voice_edge_turn_latency_seconds_sum", &[("stage", "voice_to_voice")]) else { panic!() };
    assert!((sum - 14.65).abs() < 1e-9, "sum {sum}");
    assert_eq!(find(&s, "voice_edge_turn_latency_seconds_count", &[("stage", "voice_to_voice")]), &Value::Untyped(5.0));
    // An untouched stage still has all its series, at zero.
    assert_eq!(find(&s, "voice_edge_turn_latency_seconds_count", &[("stage", "asr")]), &Value::Untyped(0.0));
}

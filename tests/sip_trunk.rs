//! The node as a SIP trunk endpoint, end to end: `voice-edge serve` on
//! loopback, real SIPp callers (Debian's `sip-tester`) for signalling, and
//! the caller's media from [`common::rtp_peer`] (recorded speech streamed as
//! PCMU, RFC 4733 digits), or SIPp's own RTP captures for DTMF.
//!
//! Scenarios: a spoken question answered over RTP, DTMF (RFC 4733 from the
//! caller's RTP and from SIPp's captures), the agent's BYE after the
//! post-call survey, a transfer (REFER, NOTIFY), hold/resume, TCP, CANCEL
//! before answer, and twenty calls at once.
//!
//! Each test starts its own node (models load once per test) and runs its
//! scenarios against it; every external tool is bounded in time and killed
//! at the end. A missing tool fails with what to install.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::sipp::Sipp;
use common::rtp_peer::{to_8k, RtpPeer};
use common::scoring::require_testdata;
use serde_json::Value;

/// The tests of this file run one at a time: each starts a node whose
/// answers are timed, and two nodes on two cores slow each other down.
static ONE_NODE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_node_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_NODE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn utterance(id: &str) -> Vec<f32> {
    let path = require_testdata(&format!("utterances/{id}.wav"));
    let audio = voice_edge::media::read_wav_engine(&path).expect("read utterance");
    to_8k(&audio)
}

fn events_of(node: &Daemon, kind: &str) -> Vec<Value> {
    node.outcome_events().into_iter().filter(|e| e["type"].as_str().is_some_and(|t| t.contains(kind))).collect()
}

/// Waits until the spool holds a call record whose number is `number`.
fn wait_call_record(node: &Daemon, number: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = events_of(node, ".call.").into_iter().find(|e| e["data"]["number"] == number) {
            return e;
        }
        assert!(Instant::now() < deadline, "no call record for {number} within {timeout:?}:\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn turns_of(node: &Daemon, call_id: &str) -> Vec<Value> {
    let mut t: Vec<Value> = events_of(node, ".turn.").into_iter().filter(|e| e["subject"] == call_id).collect();
    t.sort_by_key(|e| e["data"]["turn"].as_u64());
    t
}

#[test]
fn sipp_calls_are_answered_by_the_agent() {
    let _serial = one_node_at_a_time();
    let mut node = Daemon::start("answer_after_ms = 0", "");

    // 1. A question in recorded speech; the agent's spoken answer comes back
    //    over RTP; the caller hangs up (BYE from the caller).
    {
        let mut peer = RtpPeer::bind();
        let sipp = Sipp::start(&node, "uac_call.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550001".into())], &["-d", "14000"]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_millis(3500)); // the greeting
        let greeting = peer.level_since(0.0);
        assert!(greeting.voiced_fraction > 0.2, "the greeting should be speech: {greeting:?}");
        let asked_at = peer.heard.len() as f64 / 8000.0;
        peer.say(&utterance("u01"));
        let spoke_until = peer.heard.len() as f64 / 8000.0;
        peer.listen(Duration::from_secs(6));
        let answer = peer.level_since(spoke_until);
        assert!(answer.voiced_fraction > 0.15 && answer.rms > 0.01, "the agent's answer should be speech, got {answer:?}");
        assert_eq!(peer.payload_types_in, vec![0], "PCMU negotiated, nothing else sent");
        sipp.finish(&node, Duration::from_secs(30));
        let call = wait_call_record(&node, "15550001", Duration::from_secs(10));
        let turns = turns_of(&node, call["subject"].as_str().unwrap());
        assert!(!turns.is_empty(), "turn records: {call}");
        assert_eq!(turns[0]["data"]["intent"]["label"], "order_status", "turns: {turns:?}");
        assert_eq!(call["data"]["channel"], "sip");
        assert_eq!(call["data"]["trunk_or_site"], "loopback");
        let _ = asked_at;
    }

    // 2. DTMF from the caller's RTP (RFC 4733) fills the order number after
    //    the agent asks for it; the task completes.
    {
        let mut peer = RtpPeer::bind();
        let sipp = Sipp::start(&node, "uac_call.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550002".into())], &["-d", "20000"]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_millis(3500));
        peer.say(&utterance("u01"));
        peer.listen(Duration::from_secs(5)); // "what is your order number?"
        for d in "456789#".chars() {
            peer.send_digit(d, 101);
        }
        peer.listen(Duration::from_secs(5));
        sipp.finish(&node, Duration::from_secs(40));
        let call = wait_call_record(&node, "15550002", Duration::from_secs(10));
        let turns = turns_of(&node, call["subject"].as_str().unwrap());
        assert!(turns.iter().any(|t| t["data"]["dtmf"] == "456789#"), "a DTMF turn with the digits: {turns:?}");
        let completed = call["data"]["tasks_completed"].as_array().cloned().unwrap_or_default();
        assert!(completed.iter().any(|t| t == "order_status"), "order_status completed: {call}");
    }

    // 3. DTMF from SIPp's own RFC 4733 captures.
    {
        let sipp = Sipp::start(&node, "uac_dtmf_pcap.xml", &[("service", "15550003".into())], &[]);
        sipp.finish(&node, Duration::from_secs(40));
        let call = wait_call_record(&node, "15550003", Duration::from_secs(10));
        let turns = turns_of(&node, call["subject"].as_str().unwrap());
        assert!(turns.iter().any(|t| t["data"]["dtmf"] == "456789#"), "digits from SIPp's captures: {turns:?}");
    }

    // 4. The agent hangs up after "goodbye" (BYE from the node), after the
    //    post-call survey: the caller keys 4, a satisfaction event follows.
    {
        let mut peer = RtpPeer::bind();
        let sipp = Sipp::start(&node, "uac_agent_bye.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550004".into())], &[]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_millis(3500));
        peer.say(&utterance("u46"));
        node.wait_for_log("state: Survey", Duration::from_secs(20));
        peer.listen(Duration::from_secs(3)); // the goodbye line and the survey prompt
        peer.send_digit('4', 101);
        peer.listen(Duration::from_secs(3));
        sipp.finish(&node, Duration::from_secs(40));
        let call = wait_call_record(&node, "15550004", Duration::from_secs(10));
        assert_ne!(call["data"]["resolution"], "transferred", "{call}");
        let rating = events_of(&node, ".satisfaction.")
            .into_iter()
            .find(|e| e["subject"] == call["subject"])
            .unwrap_or_else(|| panic!("no satisfaction event for {}:\n{}", call["subject"], node.logs()));
        assert_eq!(rating["data"]["score"], 4);
        assert_eq!(rating["data"]["method"], "dtmf_survey");
    }

    // 6. The caller asks for a person: REFER to the trunk's transfer target,
    //    NOTIFY 200 from the caller's side, BYE; the call is "transferred".
    {
        let mut peer = RtpPeer::bind();
        let sipp = Sipp::start(&node, "uac_transfer.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550007".into())], &[]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_millis(3500));
        peer.say(&utterance("u37"));
        peer.listen(Duration::from_secs(6));
        sipp.finish(&node, Duration::from_secs(40));
        let call = wait_call_record(&node, "15550007", Duration::from_secs(10));
        assert_eq!(call["data"]["resolution"], "transferred", "{call}");
    }

    // 7. The same question over TCP (one connection for the whole dialog).
    {
        let mut peer = RtpPeer::bind();
        let sipp =
            Sipp::start(&node, "uac_call.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550008".into())], &["-t", "t1", "-d", "12000"]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_millis(3500));
        peer.say(&utterance("u01"));
        let spoke_until = peer.heard.len() as f64 / 8000.0;
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut answer = peer.level_since(spoke_until);
        while Instant::now() < deadline && answer.voiced_fraction <= 0.1 {
            peer.listen(Duration::from_millis(500));
            answer = peer.level_since(spoke_until);
        }
        assert!(answer.voiced_fraction > 0.1 && answer.rms > 0.01, "an answer over a TCP-signalled call: {answer:?}");
        sipp.finish(&node, Duration::from_secs(30));
        wait_call_record(&node, "15550008", Duration::from_secs(10));
    }

    // 5. Hold and resume with re-INVITEs.
    {
        let mut peer = RtpPeer::bind();
        let sipp = Sipp::start(&node, "uac_hold.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550005".into())], &[]);
        peer.wait_for_node(Duration::from_secs(10));
        peer.listen(Duration::from_secs(9));
        sipp.finish(&node, Duration::from_secs(40));
        node.wait_for_log("media changed by re-INVITE", Duration::from_secs(5));
    }

    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "drained exit: {status}\n{}", node.logs());
}

#[test]
fn cancel_before_answer_gets_487() {
    let _serial = one_node_at_a_time();
    let mut node = Daemon::start("answer_after_ms = 3000", "");
    let peer = RtpPeer::bind();
    let sipp = Sipp::start(&node, "uac_cancel.xml", &[("rtp_port", peer.port.to_string()), ("service", "15550006".into())], &[]);
    sipp.finish(&node, Duration::from_secs(30));
    node.wait_for_log("call ended before it was answered", Duration::from_secs(5));
    // Nothing was answered, so nothing is billed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(events_of(&node, ".call.").is_empty(), "no call record for a cancelled call");
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn twenty_simultaneous_calls_all_get_answers() {
    let _serial = one_node_at_a_time();
    const CALLS: usize = 20;
    let mut node = Daemon::start("", "[engine]\nqueue_depth = 64\nadmit_below = 48\n");
    let question = utterance("u01");
    let handles: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut peer = RtpPeer::bind();
            let sipp = Sipp::start(&node, "uac_call.xml", &[("rtp_port", peer.port.to_string()), ("service", format!("1555010{i:02}"))], &["-d", "72000"]);
            let question = question.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                peer.wait_for_node(Duration::from_secs(20));
                peer.listen(Duration::from_millis(3500 + 150 * i as u64));
                peer.say(&question);
                let spoke_until = peer.heard.len() as f64 / 8000.0;
                // Wait for an answer: speech after the question. Twenty
                // calls share two cores, so the last answers come late;
                // the load harness (benches/call_load.rs) measures how late.
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut answer = peer.level_since(spoke_until);
                while Instant::now() < deadline && answer.voiced_fraction < 0.1 {
                    peer.listen(Duration::from_millis(500));
                    answer = peer.level_since(spoke_until);
                }
                let answered_after = Instant::now().duration_since(started);
                // Stay on the line (RTP keeps flowing) until SIPp hangs up.
                peer.listen(Duration::from_secs(70).saturating_sub(started.elapsed()));
                (sipp, answer, answered_after)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (sipp, answer, answered_after) = h.join().unwrap();
        eprintln!("call {i}: answer heard {:.1} s after the call began", answered_after.as_secs_f64());
        if answer.voiced_fraction < 0.1 {
            failures.push(format!("call {i}: no spoken answer ({answer:?})"));
        }
        sipp.finish(&node, Duration::from_secs(120));
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", node.logs());
    for i in 0..CALLS {
        wait_call_record(&node, &format!("1555010{i:02}"), Duration::from_secs(20));
    }
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success());
}

//! `voice-edge serve` as an operator runs it: health and readiness, the
//! `/metrics` exposition read by a real Prometheus text parser after real
//! calls, SIGHUP with a broken file (refused, the old config keeps serving)
//! and with a good one (new trunk numbers take effect), and SIGTERM with
//! calls in flight (new calls get 503, the calls in progress are hung up at
//! the drain deadline, and every call's outcome events are in the spool
//! when the process exits 0).

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::daemon::{http_get, Daemon};
use common::sipp::{unread_media_port, Sipp};

/// A SIPp caller that waits for the node to hang up; its media goes to a
/// socket nobody reads (the node latches nothing, sends its greeting there).
fn waiting_caller(node: &Daemon, number: &str) -> Sipp {
    Sipp::start(node, "uac_agent_bye.xml", &[("rtp_port", unread_media_port().to_string()), ("service", number.to_string())], &[])
}

fn options_status(node: &Daemon, number: &str) -> u16 {
    invite_or_options(node, "OPTIONS", number)
}

/// Sends one request without SDP and returns the first final status.
fn invite_or_options(node: &Daemon, method: &str, number: &str) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = s.local_addr().unwrap();
    let to = node.sip;
    let branch = format!("{:x}", Instant::now().elapsed().as_nanos() ^ u128::from(me.port()));
    let msg = format!(
        "{method} sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=t{branch}\r\nTo: <sip:{number}@{to}>\r\nCall-ID: {branch}@lifecycle\r\nCSeq: 1 {method}\r\n\
         Contact: <sip:probe@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, _)) = s.recv_from(&mut buf) else { return 0 };
        let code: u16 = String::from_utf8_lossy(&buf[..n]).get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 200 {
            return code;
        }
    }
}

#[test]
fn health_metrics_reload_and_drain() {
    let trunk = r#"
[[sip.trunk]]
name = "carrier"
sources = ["127.0.0.0/8"]
numbers = { "15550100" = "retail", "15550101" = "retail" }
"#;
    let mut node = Daemon::start("", trunk);

    // Health and readiness.
    assert_eq!(http_get(node.http, "/healthz").0, 200);
    let (ready, body) = http_get(node.http, "/readyz");
    assert_eq!(ready, 200, "{body}");

    // A number the trunk does not route.
    assert_eq!(invite_or_options(&node, "INVITE", "15550177"), 404);

    // SIGHUP with a broken file: refused, the old config keeps serving.
    let path = node.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[bogus_section]\nx = 1\n")).unwrap();
    node.signal("HUP");
    node.wait_for_log("config reload refused", Duration::from_secs(10));
    assert_eq!(options_status(&node, "15550100"), 200, "still serving after a refused reload");
    assert_eq!(invite_or_options(&node, "INVITE", "15550177"), 404, "old trunk numbers kept");

    // SIGHUP with a good file that routes one more number.
    std::fs::write(&path, good.replace(r#""15550101" = "retail""#, r#""15550101" = "retail", "15550177" = "retail""#)).unwrap();
    node.signal("HUP");
    node.wait_for_log("SIP trunks reloaded", Duration::from_secs(10));
    // An INVITE without SDP for a now-routed number gets past the trunk (488: no offer), not 404.
    assert_eq!(invite_or_options(&node, "INVITE", "15550177"), 488);

    // Two calls in flight, then SIGTERM.
    let callers = [waiting_caller(&node, "15550100"), waiting_caller(&node, "15550101")];
    node.wait_for_log("call answered", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let (_, metrics) = http_get(node.http, "/metrics");
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses");
    let active: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "voice_edge_calls_active" && s.labels.get("channel") == Some("sip"))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .sum();
    assert_eq!(active, 2.0, "two SIP calls active:\n{metrics}");
    assert!(scrape.samples.iter().any(|s| s.metric == "voice_edge_sip_requests_total" && s.labels.get("method") == Some("INVITE")));

    node.signal("TERM");
    node.wait_for_log("draining", Duration::from_secs(5));
    assert_eq!(invite_or_options(&node, "INVITE", "15550100"), 503, "new calls refused while draining");
    assert_eq!(http_get(node.http, "/readyz").0, 503, "not ready while draining");
    let status = node.wait(Duration::from_secs(40));
    assert!(status.success(), "drained exit: {status}\n{}", node.logs());
    // Each caller's call ended with the node's BYE, answered.
    for caller in callers {
        caller.finish(&node, Duration::from_secs(30));
    }
    let calls: Vec<_> = node.outcome_events().into_iter().filter(|e| e["type"] == "voice_edge.outcome.call.v1").collect();
    let numbers: Vec<&str> = calls.iter().filter_map(|e| e["data"]["number"].as_str()).collect();
    assert!(numbers.contains(&"15550100") && numbers.contains(&"15550101"), "both drained calls recorded: {numbers:?}\n{}", node.logs());
}

//! The browser widget end to end: `voice-edge serve` with the widget on its
//! HTTP server, and real headless Chromium (Debian's `chromium`) as the
//! caller, its fake microphone playing a recorded question
//! (`utterances/u01.wav`, "...check on my order..."), driven over the
//! DevTools protocol ([`common::cdp`]).
//!
//! What must hold: signalling refusals (400 with the reason, 413, 415, 403,
//! 503 when full or draining), the widget's page and script, the caller's
//! question transcribed into the page, the agent's voice audible in the page
//! (RMS measured with WebAudio), the rating recorded as a satisfaction
//! event, every session gone afterwards (registry, gauge, UDP sockets), and
//! the call's outcome events in the spool with channel `webrtc` and the
//! page's origin as the site. Several pages at once, and a drain with
//! sessions open, too.
//!
//! A missing chromium fails the test with the package to install. Set
//! `VOICE_EDGE_WIDGET_SCREENSHOT=path.png` to save the page after the call.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cdp::{require_chromium, Browser, Page};
use common::daemon::{http_get, Daemon};
use common::scoring::require_testdata;
use serde_json::Value;

/// A plain HTTP/1.1 request: (status, headers lower-cased, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An offer as Chromium makes them, good enough to pass the node's checks.
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 0C:5A:3B:D1:6E:7F:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// The question with silence around it, so the looping fake microphone
/// lets the greeting finish and leaves the agent room to answer.
fn question_wav(dir: &Path) -> std::path::PathBuf {
    let src = require_testdata("utterances/u01.wav");
    let mut reader = hound::WavReader::open(&src).expect("read u01.wav");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (1, 16), "u01.wav must be 16-bit mono");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let rate = spec.sample_rate as usize;
    let path = dir.join("question.wav");
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    // Lead-in: the greeting (about 3.5 s) plays first; the caller answers it.
    for s in std::iter::repeat_n(0i16, rate * 5).chain(samples).chain(std::iter::repeat_n(0i16, rate * 8)) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// True once a final caller line (not the agent's) in the transcript mentions the order.
const CALLER_SAID_ORDER: &str = "[...document.querySelectorAll('[data-testid=\"transcript\"] li.ve-caller:not(.ve-partial)')]\
     .some(li => li.textContent.toLowerCase().includes('order'))";

fn sessions(node: &Daemon) -> Vec<Value> {
    let (status, body) = http_get(node.http, "/webrtc/sessions");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).expect("sessions JSON")
}

fn gauge(node: &Daemon) -> f64 {
    let (_, body) = http_get(node.http, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("voice_edge_webrtc_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no voice_edge_webrtc_sessions in /metrics:\n{body}"))
}

/// UDP sockets the process holds now (its fds that are sockets in /proc/net/udp{,6}).
fn udp_sockets(pid: u32) -> usize {
    let fds: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the daemon's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned)).collect::<Vec<_>>())
        .filter(|inode| fds.contains(inode))
        .count()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text_of(browser: &mut Browser, page: &Page, testid: &str) -> String {
    browser.eval(page, &format!("document.querySelector('[data-testid=\"{testid}\"]').textContent")).as_str().unwrap_or("").to_owned()
}

/// Clicks call and waits until the agent is heard and the question is transcribed.
fn converse(browser: &mut Browser, page: &Page) {
    browser.click(page, "call-button");
    browser.wait_for(
        page,
        "Number(document.querySelector('[data-testid=\"agent-level\"]').dataset.peakRms) > 0.01",
        Duration::from_secs(60),
        "the agent's voice in the page (WebAudio RMS > 0.01)",
    );
    browser.wait_for(
        page,
        CALLER_SAID_ORDER,
        Duration::from_secs(120),
        "the question's transcript (\"order\") in the page",
    );
    browser.wait_for(
        page,
        "document.querySelector('[data-testid=\"agent-reply\"]').textContent.trim().length > 0",
        Duration::from_secs(60),
        "the agent's reply in the page",
    );
}

#[test]
fn widget_call_with_transcript_voice_rating_and_cleanup() {
    require_chromium();
    let tmp = tempfile::tempdir().unwrap();
    let wav = question_wav(tmp.path());
    let mut node = Daemon::start("", "[webrtc]\nmax_sessions = 4\nrating_window_s = 30\n");
    let origin = format!("http://{}", node.http);

    // The page and the script.
    let (status, page) = http_get(node.http, "/widget");
    assert_eq!(status, 200);
    assert!(page.contains("/widget.js"), "{page}");
    let (status, js) = http_get(node.http, "/widget.js");
    assert_eq!(status, 200);
    for hook in ["call-button", "hangup-button", "transcript", "agent-reply", "status", "rating"] {
        assert!(js.contains(&format!("\"{hook}\"")), "widget.js lacks data-testid {hook}");
    }

    // Signalling refusals.
    let sdp = [("Content-Type", "application/sdp")];
    let (status, _, body) = http(node.http, "POST", "/webrtc/sessions", &sdp, b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no audio section"), "the 400 says why: {body}");
    let (status, _, body) = http(node.http, "POST", "/webrtc/sessions", &sdp, b"hello");
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = http(node.http, "POST", "/webrtc/sessions", &[("Content-Type", "text/plain")], OFFER.as_bytes());
    assert_eq!(status, 415);
    let (status, _, _) = http(node.http, "POST", "/webrtc/sessions", &sdp, &vec![b'a'; 64 * 1024]);
    assert_eq!(status, 413);
    let foreign = [("Content-Type", "application/sdp"), ("Origin", "https://elsewhere.example")];
    let (status, _, body) = http(node.http, "POST", "/webrtc/sessions", &foreign, OFFER.as_bytes());
    assert_eq!(status, 403, "{body}");
    let pre = [("Origin", origin.as_str()), ("Access-Control-Request-Method", "POST")];
    let (status, headers, _) = http(node.http, "OPTIONS", "/webrtc/sessions", &pre, b"");
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(origin.as_str()));
    assert!(header(&headers, "access-control-allow-methods").unwrap_or("").contains("DELETE"));
    let (status, _, _) = http(node.http, "DELETE", "/webrtc/sessions/0123456789abcdef0123456789abcdef", &[], b"");
    assert_eq!(status, 404);
    assert!(sessions(&node).is_empty());
    assert_eq!(gauge(&node), 0.0);

    let udp_before = udp_sockets(node.pid());
    let mut browser = Browser::start(&wav);
    let page = browser.open(&format!("{origin}/widget"));
    converse(&mut browser, &page);
    let listed = sessions(&node);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["site"], Value::from(origin.clone()));
    assert_eq!(gauge(&node), 1.0);
    assert!(udp_sockets(node.pid()) > udp_before, "the session's media socket is open");

    if let Ok(path) = std::env::var("VOICE_EDGE_WIDGET_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot(&page)).expect("write the screenshot");
    }

    // Hang up, rate, and the session goes away.
    browser.click(&page, "hangup-button");
    browser.wait_for(&page, "!document.querySelector('[data-testid=\"rating\"]').hidden", Duration::from_secs(20), "the rating prompt");
    browser.click(&page, "rating-4");
    browser.wait_for(
        &page,
        "document.querySelector('[data-testid=\"status\"]').dataset.state === 'rated'",
        Duration::from_secs(20),
        "the rating's receipt",
    );
    wait_until("no session left on the node", Duration::from_secs(20), || sessions(&node).is_empty());
    assert_eq!(gauge(&node), 0.0);
    wait_until("the session's UDP sockets closed", Duration::from_secs(20), || udp_sockets(node.pid()) <= udp_before);
    let transcript = text_of(&mut browser, &page, "transcript");
    assert!(transcript.contains("Agent:") || !text_of(&mut browser, &page, "agent-reply").is_empty(), "{transcript}");

    // Outcome events: turns, the call, the rating.
    let mut events = Vec::new();
    wait_until("the call and satisfaction events in the spool", Duration::from_secs(20), || {
        events = node.outcome_events();
        events.iter().any(|e| e["type"] == "voice_edge.outcome.call.v1") && events.iter().any(|e| e["type"] == "voice_edge.outcome.satisfaction.v1")
    });
    let call = events.iter().find(|e| e["type"] == "voice_edge.outcome.call.v1").unwrap();
    let call_id = call["data"]["call_id"].as_str().unwrap().to_owned();
    assert!(call_id.starts_with("webrtc-"), "{call}");
    assert_eq!(call["data"]["channel"], "webrtc", "{call}");
    assert_eq!(call["data"]["trunk_or_site"], Value::from(origin.clone()), "{call}");
    assert!(call["data"]["turns"].as_u64().unwrap() >= 1, "{call}");
    let turns: Vec<&Value> = events.iter().filter(|e| e["type"] == "voice_edge.outcome.turn.v1" && e["data"]["call_id"] == call_id.as_str()).collect();
    assert!(turns.iter().any(|t| t["data"]["transcript"].as_str().unwrap_or("").to_lowercase().contains("order")), "{turns:?}");
    let rating = events.iter().find(|e| e["type"] == "voice_edge.outcome.satisfaction.v1").unwrap();
    assert_eq!(rating["data"]["call_id"], Value::from(call_id.clone()));
    assert_eq!(rating["data"]["score"], 4);
    assert_eq!(rating["data"]["method"], "widget_rating");

    drop(browser);
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", node.logs());
}

#[test]
fn three_browsers_at_once_then_full_then_drain() {
    require_chromium();
    let tmp = tempfile::tempdir().unwrap();
    let wav = question_wav(tmp.path());
    let mut node = Daemon::start("", "[webrtc]\nmax_sessions = 3\nretry_after_s = 7\n");
    let origin = format!("http://{}", node.http);
    let mut browser = Browser::start(&wav);
    let pages: Vec<Page> = (0..3).map(|_| browser.open(&format!("{origin}/widget"))).collect();
    for page in &pages {
        browser.click(page, "call-button");
    }
    for page in &pages {
        browser.wait_for(
            page,
            "Number(document.querySelector('[data-testid=\"agent-level\"]').dataset.peakRms) > 0.01",
            Duration::from_secs(90),
            "the agent's voice in every page",
        );
    }
    for page in &pages {
        browser.wait_for(
            page,
            CALLER_SAID_ORDER,
            Duration::from_secs(180),
            "the question's transcript in every page",
        );
    }
    assert_eq!(sessions(&node).len(), 3);
    assert_eq!(gauge(&node), 3.0);

    // Full: 503 with Retry-After.
    let sdp = [("Content-Type", "application/sdp")];
    let (status, headers, body) = http(node.http, "POST", "/webrtc/sessions", &sdp, OFFER.as_bytes());
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("7"));

    // Drain with the sessions open: new ones refused, open ones hung up at
    // the deadline, every call recorded, the process exits cleanly.
    node.signal("TERM");
    node.wait_for_log("draining", Duration::from_secs(10));
    let (status, _, body) = http(node.http, "POST", "/webrtc/sessions", &sdp, OFFER.as_bytes());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining") || body.contains("in use"), "{body}");
    let exit = node.wait(Duration::from_secs(60));
    assert!(exit.success(), "{exit}\n{}", node.logs());
    let events = node.outcome_events();
    let calls: Vec<&Value> = events.iter().filter(|e| e["type"] == "voice_edge.outcome.call.v1").collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls {
        assert_eq!(c["data"]["channel"], "webrtc");
        assert_eq!(c["data"]["trunk_or_site"], Value::from(origin.clone()));
    }
    let ids: HashSet<&str> = calls.iter().map(|c| c["data"]["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "three distinct calls");
    for page in &pages {
        browser.wait_for(page, "document.querySelector('[data-testid=\"status\"]').dataset.state === 'ended'", Duration::from_secs(10), "the page to see the end");
    }
}

//! The running node's SIP socket against hostile and odd input: every RFC
//! 4475 torture message sent over real UDP (each checked against
//! `EXPECT.tsv`, with an OPTIONS keep-alive after each to prove the node
//! still answers), and the trunk policy as a carrier or a scanner meets it
//! (403 for unknown sources whatever the number, 404 for numbers no trunk
//! routes, 405/501 with Allow, OPTIONS 200).
//!
//! Responses follow RFC 3261 §18.2.2: to the packet's source address and
//! the top Via's sent-by port (5060 when absent) unless `rport` is present,
//! so the test listens on the sending socket and on 127.0.0.1:5060/5070.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::daemon::Daemon;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance/rfc4475");

struct Listener {
    socks: Vec<UdpSocket>,
}

impl Listener {
    fn new(from_ip: &str) -> Listener {
        let mut socks = vec![UdpSocket::bind(format!("{from_ip}:0")).unwrap()];
        for port in [5060, 5070] {
            let s = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
                panic!("127.0.0.1:{port} is busy ({e}): RFC 3261 §18.2.2 sends responses to the Via port; stop the SIP service using it")
            });
            socks.push(s);
        }
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        Listener { socks }
    }

    fn send(&self, to: SocketAddr, data: &[u8]) {
        self.socks[0].send_to(data, to).unwrap();
    }

    /// Status codes of the responses that arrive within `wait`.
    fn responses(&self, wait: Duration) -> Vec<(u16, String)> {
        self.responses_until(wait, |_| false)
    }

    /// Responses until one satisfies `done` or `wait` passes.
    fn responses_until(&self, wait: Duration, done: impl Fn(&(u16, String)) -> bool) -> Vec<(u16, String)> {
        let until = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < until {
            for s in &self.socks {
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some(code) = text.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()) {
                        out.push((code, text));
                        if done(out.last().unwrap()) {
                            return out;
                        }
                    }
                }
            }
        }
        out
    }
}

fn options(to: SocketAddr, local: &UdpSocket, number: &str, branch: &str) -> Vec<u8> {
    let me = local.local_addr().unwrap();
    format!(
        "OPTIONS sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=p{branch}\r\nTo: <sip:{number}@{to}>\r\nCall-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn request(method: &str, to: SocketAddr, local: &UdpSocket, number: &str, branch: &str) -> Vec<u8> {
    String::from_utf8(options(to, local, number, branch)).unwrap().replace("OPTIONS", method).into_bytes()
}

/// The Call-ID of a raw message (long or compact form), if it has one.
fn call_id_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().take_while(|l| !l.is_empty()).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        (name == "call-id" || name == "i").then(|| value.trim().to_string()).filter(|v| !v.is_empty())
    })
}

fn alive(node: &Daemon, l: &Listener, n: usize) -> bool {
    l.send(node.sip, &options(node.sip, &l.socks[0], "keepalive", &format!("ka{n}")));
    let ok = |(c, t): &(u16, String)| *c == 200 && t.contains(&format!("ka{n}@probe"));
    l.responses_until(Duration::from_millis(2000), ok).iter().any(ok)
}

#[test]
fn rfc4475_torture_messages_over_udp() {
    let expect = std::fs::read_to_string(format!("{CORPUS}/EXPECT.tsv"))
        .unwrap_or_else(|e| panic!("{CORPUS}/EXPECT.tsv: {e}: the shared conformance material must sit beside the checkout as ../shared"));
    let mut node = Daemon::start("", "");
    let l = Listener::new("127.0.0.1");
    assert!(alive(&node, &l, 0), "OPTIONS keep-alive unanswered:\n{}", node.logs());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, line) in expect.lines().skip(1).filter(|l| !l.trim().is_empty()).enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, verdict) = (cols[0], cols[2]);
        let bytes = std::fs::read(format!("{CORPUS}/{file}")).unwrap();
        l.send(node.sip, &bytes);
        // Only responses to this message count (earlier calls' retransmissions
        // may arrive meanwhile).
        let call_id = call_id_of(&bytes);
        let got = l.responses(Duration::from_millis(400));
        let statuses: Vec<u16> =
            got.iter().filter(|(_, text)| call_id.as_deref().is_none_or(|id| text.contains(id))).map(|(c, _)| *c).collect();
        match verdict {
            // Malformed: answered 400 (505 for a SIP version we do not
            // speak), or dropped; never accepted.
            "Reject" => {
                if statuses.iter().any(|&c| c != 400 && c != 505) {
                    failures.push(format!("{file} (Reject): answered {statuses:?}"));
                }
            }
            // Well-formed syntax: handled. RFC 4475 marks the messages that
            // parse but break a rule with `_I` (answered 400 is right for
            // them); a valid one (`_V`, or no suffix) never gets 400.
            _ => {
                if statuses.contains(&400) && !file.ends_with("_I.dat") {
                    failures.push(format!("{file} (Parse): answered {statuses:?}"));
                }
            }
        }
        if !alive(&node, &l, i + 1) {
            failures.push(format!("{file}: the node stopped answering OPTIONS after it"));
        }
        checked += 1;
    }
    assert_eq!(checked, 50, "EXPECT.tsv should list the 50 RFC 4475 messages");
    assert!(failures.is_empty(), "{}\nnode log:\n{}", failures.join("\n"), node.logs());
    assert!(!node.logs().contains("panicked"), "a panic in the node:\n{}", node.logs());
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn trunk_policy_over_the_socket() {
    let trunks = r#"
[[sip.trunk]]
name = "carrier"
sources = ["127.0.0.1/32"]
numbers = { "15550100" = "retail" }
"#;
    let mut node = Daemon::start("", trunks);
    // From an allowed source.
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    carrier.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = |sock: &UdpSocket, msg: Vec<u8>| -> u16 {
        sock.send_to(&msg, node.sip).unwrap();
        let mut buf = [0u8; 65536];
        loop {
            let Ok((n, _)) = sock.recv_from(&mut buf) else { return 0 };
            let text = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code >= 200 {
                return code;
            }
        }
    };
    assert_eq!(ask(&carrier, options(node.sip, &carrier, "15550100", "o1")), 200, "OPTIONS keep-alive");
    assert_eq!(ask(&carrier, request("INVITE", node.sip, &carrier, "15550199", "i1")), 404, "unrouted number");
    assert_eq!(ask(&carrier, request("SUBSCRIBE", node.sip, &carrier, "15550100", "s1")), 405, "known method we don't do");
    assert_eq!(ask(&carrier, request("FOOBAR", node.sip, &carrier, "15550100", "f1")), 501, "unknown method");

    // A scanner from another address: 403, the same for a routed and an
    // unrouted number, so it learns nothing.
    let scanner = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback /8)");
    scanner.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(ask(&scanner, request("INVITE", node.sip, &scanner, "15550100", "x1")), 403);
    assert_eq!(ask(&scanner, request("INVITE", node.sip, &scanner, "15550199", "x2")), 403);
    assert_eq!(ask(&scanner, options(node.sip, &scanner, "15550100", "x3")), 403);

    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

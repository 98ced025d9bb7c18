//! UAS behaviour on a virtual clock: no sockets, every byte out parsed back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::proto::sip::auth::{digest_response, DigestAlgorithm};
use crate::proto::sip::message::{Message, Request, Response};
use crate::proto::sip::parse::{parse_message, Limits};

const CARRIER: &str = "198.51.100.7:5060";
const PBX: &str = "203.0.113.20:5070";
const STRANGER: &str = "192.0.2.66:5060";
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn creds() -> DigestCredentials {
    DigestCredentials { user: "pbx1".into(), password: "s3cret".into(), realm: "edge.example.com".into() }
}

fn config() -> UasConfig {
    UasConfig {
        trunks: vec![
            Trunk {
                name: "carrier".into(),
                sources: vec![("198.51.100.0".parse().unwrap(), 24)],
                digest: None,
                numbers: BTreeMap::from([("+15550100".to_string(), "retail".to_string())]),
                transfer_target: Some("sip:desk@pbx.example.com".into()),
            },
            Trunk {
                name: "pbx".into(),
                sources: vec![("203.0.113.0".parse().unwrap(), 24)],
                digest: Some(creds()),
                numbers: BTreeMap::from([("*".to_string(), "support".to_string())]),
                transfer_target: None,
            },
        ],
        max_calls: 4,
        retry_after_s: 30,
        rate_limit_per_s: 0.0,
        rate_burst: 10,
        user_agent: "voice-edge-test".into(),
        contact: "sip:voice-edge@203.0.113.5:5060".into(),
        timers: Timers::default(),
    }
}

/// A request as text. `to_tag` makes it in-dialog; `body` is (type, text).
#[allow(clippy::too_many_arguments)]
fn request(method: &str, via: &str, call_id: &str, cseq: u32, number: &str, to_tag: Option<&str>, extra: &str, body: Option<(&str, &str)>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let (ct, body) = match body {
        Some((t, b)) => (format!("Content-Type: {t}\r\n"), b.to_string()),
        None => (String::new(), String::new()),
    };
    format!(
        "{method} sip:{number}@edge.example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@carrier.example.net>;tag=from1\r\nTo: <sip:{number}@edge.example.com>{to_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn udp_via(host: &str, branch: &str) -> String {
    format!("SIP/2.0/UDP {host};branch={branch};rport")
}

fn invite(branch: &str, call_id: &str, number: &str) -> String {
    request(
        "INVITE",
        &udp_via(CARRIER, branch),
        call_id,
        1,
        number,
        None,
        "Contact: <sip:alice@198.51.100.7:5060>\r\nRecord-Route: <sip:sbc.carrier.example.net;lr>\r\n",
        Some(("application/sdp", SDP)),
    )
}

struct H {
    uas: Uas,
    now: Instant,
}

impl H {
    fn new(cfg: UasConfig) -> H {
        H { uas: Uas::new(cfg, 0x5EED), now: Instant::now() }
    }

    fn drain(&mut self) -> Vec<UasOutput> {
        std::iter::from_fn(|| self.uas.poll_output()).collect()
    }

    fn udp(&mut self, from: &str, text: &str) -> Vec<UasOutput> {
        self.udp_bytes(from, text.as_bytes())
    }

    fn udp_bytes(&mut self, from: &str, data: &[u8]) -> Vec<UasOutput> {
        let rx = Received { from: from.parse().unwrap(), transport: TransportKind::Udp, conn: None, data };
        self.uas.handle_received(self.now, rx);
        self.drain()
    }

    fn tcp(&mut self, from: &str, conn: ConnId, data: &[u8]) -> Vec<UasOutput> {
        let rx = Received { from: from.parse().unwrap(), transport: TransportKind::Tcp, conn: Some(conn), data };
        self.uas.handle_received(self.now, rx);
        self.drain()
    }

    /// Moves the clock by `d`, firing timers on the way.
    fn advance(&mut self, d: Duration) -> Vec<UasOutput> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.uas.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.uas.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }
}

/// Parses every transmission (checking Content-Length) and returns
/// (destination, message).
fn wire(outs: &[UasOutput]) -> Vec<(SocketAddr, Message)> {
    outs.iter()
        .filter_map(|o| match o {
            UasOutput::Transmit { to, data, .. } => {
                if data == b"\r\n" {
                    return None;
                }
                let (m, used) = parse_message(data, &Limits::default()).expect("our output parses");
                assert_eq!(used, data.len());
                let cl = m.headers().content_length().unwrap().expect("Content-Length present");
                assert_eq!(cl, m.body().len());
                Some((*to, m))
            }
            UasOutput::Event(_) => None,
        })
        .collect()
}

fn responses(outs: &[UasOutput]) -> Vec<Response> {
    wire(outs).into_iter().filter_map(|(_, m)| m.as_response().cloned()).collect()
}

fn statuses(outs: &[UasOutput]) -> Vec<u16> {
    responses(outs).iter().map(|r| r.status).collect()
}

fn requests_out(outs: &[UasOutput]) -> Vec<(SocketAddr, Request)> {
    wire(outs).into_iter().filter_map(|(to, m)| m.as_request().cloned().map(|r| (to, r))).collect()
}

fn events(outs: &[UasOutput]) -> Vec<UasEvent> {
    outs.iter()
        .filter_map(|o| match o {
            UasOutput::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn to_tag(r: &Response) -> String {
    r.headers.to_addr().unwrap().tag().unwrap().to_string()
}

/// INVITE -> answer -> ACK; returns the call and our To tag.
fn establish(h: &mut H, call_id: &str) -> (SipCallId, String) {
    let out = h.udp(CARRIER, &invite("z9hG4bKinv1", call_id, "+15550100"));
    let call = match events(&out).as_slice() {
        [UasEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    h.uas.answer(h.now, call, "v=0\r\n");
    let ok = responses(&h.drain()).pop().unwrap();
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    let ack = request("ACK", &udp_via(CARRIER, "z9hG4bKack1"), call_id, 1, "+15550100", Some(&tag), "", None);
    assert_eq!(events(&h.udp(CARRIER, &ack)), vec![UasEvent::CallConfirmed { call }]);
    (call, tag)
}

#[test]
fn incoming_call_ring_answer_ack_bye() {
    let mut h = H::new(config());
    let out = h.udp(CARRIER, &invite("z9hG4bKinv1", "c1@carrier", "+15550100"));
    assert_eq!(statuses(&out), vec![100], "100 Trying at once");
    let trying = &responses(&out)[0];
    assert!(trying.headers.to_addr().unwrap().tag().is_none());
    let call = match events(&out).as_slice() {
        [UasEvent::IncomingCall { call, trunk, flow, number, caller, call_id, remote, sdp_offer }] => {
            assert_eq!((trunk.as_str(), flow.as_str(), number.as_str()), ("carrier", "retail", "+15550100"));
            assert_eq!(caller, "sip:alice@carrier.example.net");
            assert_eq!(call_id, "c1@carrier");
            assert_eq!(*remote, CARRIER.parse::<SocketAddr>().unwrap());
            assert_eq!(sdp_offer.as_deref(), Some(SDP));
            *call
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(h.uas.active_calls(), 1);

    h.uas.ring(h.now, call);
    let ringing = responses(&h.drain()).pop().unwrap();
    assert_eq!(ringing.status, 180);
    assert_eq!(ringing.headers.get("Contact"), Some("<sip:voice-edge@203.0.113.5:5060>"));
    assert_eq!(ringing.headers.get("Record-Route"), Some("<sip:sbc.carrier.example.net;lr>"));
    let tag = to_tag(&ringing);

    h.uas.answer(h.now, call, "v=0\r\nm=audio 30000 RTP/AVP 0\r\n");
    let out = h.drain();
    let ok = responses(&out).pop().unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(to_tag(&ok), tag, "same To tag on every response of the dialog");
    assert_eq!(ok.body, b"v=0\r\nm=audio 30000 RTP/AVP 0\r\n");
    assert_eq!(ok.headers.get("Content-Type"), Some("application/sdp"));
    assert!(ok.headers.get("Allow").unwrap().contains("REFER"));
    assert_eq!(ok.headers.get("Server"), Some("voice-edge-test"));

    // 2xx retransmitted (T1, 2*T1) until the ACK.
    let out = h.advance(Duration::from_millis(1600));
    assert_eq!(statuses(&out), vec![200, 200]);
    assert_eq!(h.uas.stats().retransmissions, 2);
    let ack = request("ACK", &udp_via(CARRIER, "z9hG4bKack1"), "c1@carrier", 1, "+15550100", Some(&tag), "", None);
    assert_eq!(events(&h.udp(CARRIER, &ack)), vec![UasEvent::CallConfirmed { call }]);
    assert!(statuses(&h.advance(Duration::from_secs(10))).is_empty(), "no retransmission after ACK");
    // A retransmitted ACK is absorbed.
    assert!(h.udp(CARRIER, &ack).is_empty());

    let bye = request("BYE", &udp_via(CARRIER, "z9hG4bKbye1"), "c1@carrier", 2, "+15550100", Some(&tag), "", None);
    let out = h.udp(CARRIER, &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::ByeFromCaller }]);
    assert_eq!(h.uas.active_calls(), 0);
    // The BYE retransmission gets the same 200, no second event.
    let out = h.udp(CARRIER, &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());
    assert_eq!(h.uas.stats().requests.invite, 1);
    assert_eq!(h.uas.stats().requests.bye, 2);
    assert_eq!(h.uas.stats().retransmissions_received, 1);
}

#[test]
fn invite_retransmission_resends_last_response() {
    let mut h = H::new(config());
    let inv = invite("z9hG4bKinv1", "c1@carrier", "+15550100");
    let out = h.udp(CARRIER, &inv);
    let call = match events(&out).as_slice() {
        [UasEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    let out = h.udp(CARRIER, &inv);
    assert_eq!(statuses(&out), vec![100]);
    assert!(events(&out).is_empty());
    h.uas.ring(h.now, call);
    h.drain();
    assert_eq!(statuses(&h.udp(CARRIER, &inv)), vec![180]);
    assert_eq!(h.uas.active_calls(), 1);
}

#[test]
fn no_ack_means_bye_and_ack_timeout() {
    let mut h = H::new(config());
    let out = h.udp(CARRIER, &invite("z9hG4bKinv1", "c1@carrier", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.answer(h.now, call, "v=0\r\n");
    h.drain();
    let out = h.advance(Duration::from_secs(40));
    let resent = statuses(&out).iter().filter(|&&s| s == 200).count();
    assert_eq!(resent, 10, "T1 doubling to T2 below 64*T1");
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::AckTimeout }]);
    let byes = requests_out(&out);
    assert_eq!(byes[0].1.method, Method::Bye);
    assert_eq!(byes[0].0, CARRIER.parse::<SocketAddr>().unwrap());
    assert_eq!(h.uas.active_calls(), 0);
}

#[test]
fn cancel_before_answer() {
    let mut h = H::new(config());
    let out = h.udp(CARRIER, &invite("z9hG4bKinv1", "c1@carrier", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    let cancel = request("CANCEL", &udp_via(CARRIER, "z9hG4bKinv1"), "c1@carrier", 1, "+15550100", None, "", None);
    let out = h.udp(CARRIER, &cancel);
    let rs = responses(&out);
    assert_eq!(rs.iter().map(|r| (r.status, r.headers.cseq().unwrap().method.to_string())).collect::<Vec<_>>(),
        vec![(200, "CANCEL".to_string()), (487, "INVITE".to_string())]);
    assert_eq!(to_tag(&rs[0]), to_tag(&rs[1]));
    assert_eq!(events(&out), vec![UasEvent::CallCancelled { call }]);
    assert_eq!(h.uas.active_calls(), 0);
    // 487 retransmitted until the ACK (same branch), which is absorbed.
    assert_eq!(statuses(&h.advance(Duration::from_millis(600))), vec![487]);
    let ack = request("ACK", &udp_via(CARRIER, "z9hG4bKinv1"), "c1@carrier", 1, "+15550100", Some(&to_tag(&rs[1])), "", None);
    assert!(h.udp(CARRIER, &ack).is_empty());
    assert!(statuses(&h.advance(Duration::from_secs(40))).is_empty());
    // A CANCEL that matches nothing: 481.
    let stray = request("CANCEL", &udp_via(CARRIER, "z9hG4bKnone"), "zz", 1, "+15550100", None, "", None);
    assert_eq!(statuses(&h.udp(CARRIER, &stray)), vec![481]);
    // CANCEL after the answer: 200, the call goes on.
    let (call2, _) = establish(&mut h, "c2@carrier");
    let late = request("CANCEL", &udp_via(CARRIER, "z9hG4bKinv1"), "c2@carrier", 1, "+15550100", None, "", None);
    let out = h.udp(CARRIER, &late);
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());
    assert_eq!(h.uas.active_calls(), 1);
    let _ = call2;
}

#[test]
fn hangup_sends_bye_and_reports_when_answered() {
    let mut h = H::new(config());
    let (call, tag) = establish(&mut h, "c1@carrier");
    h.uas.hangup(h.now, call);
    let out = h.drain();
    let (to, bye) = requests_out(&out).pop().unwrap();
    assert_eq!(to, CARRIER.parse::<SocketAddr>().unwrap());
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5060");
    assert_eq!(bye.headers.get("Route"), Some("<sip:sbc.carrier.example.net;lr>"));
    assert_eq!(bye.headers.from_addr().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(bye.headers.to_addr().unwrap().tag(), Some("from1"));
    assert_eq!(bye.headers.get("User-Agent"), Some("voice-edge-test"));
    assert!(bye.headers.top_via().unwrap().has_rfc3261_branch());
    assert_eq!(bye.headers.top_via().unwrap().sent_by(), "203.0.113.5:5060");
    // BYE retransmitted (Timer E) until answered.
    let out = h.advance(Duration::from_millis(600));
    assert_eq!(requests_out(&out).len(), 1);
    let mut ok = response_to(&bye, 200, "OK");
    ok.headers.set("To", format!("{};tag=from1", "<sip:alice@carrier.example.net>"));
    let out = h.udp(CARRIER, &String::from_utf8(ok.to_bytes()).unwrap());
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::ByeFromUs }]);
    assert_eq!(h.uas.active_calls(), 0);
    assert_eq!(h.uas.stats().responses_received.success_2xx, 1);
    assert!(h.advance(Duration::from_secs(40)).is_empty());
}

#[test]
fn unanswered_bye_times_out_and_still_ends() {
    let mut h = H::new(config());
    let (call, _) = establish(&mut h, "c1@carrier");
    h.uas.hangup(h.now, call);
    h.drain();
    let out = h.advance(Duration::from_secs(33));
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::ByeFromUs }]);
    assert!(requests_out(&out).len() >= 8, "Timer E retransmissions");
}

#[test]
fn hangup_before_answer_is_480_and_before_ack_waits_for_ack() {
    let mut h = H::new(config());
    let out = h.udp(CARRIER, &invite("z9hG4bKinv1", "c1@carrier", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.hangup(h.now, call);
    let out = h.drain();
    assert_eq!(statuses(&out), vec![480]);
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::ByeFromUs }]);

    let out = h.udp(CARRIER, &invite("z9hG4bKinv2", "c2@carrier", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.answer(h.now, call, "v=0\r\n");
    let tag = to_tag(&responses(&h.drain())[0]);
    h.uas.hangup(h.now, call);
    assert!(requests_out(&h.drain()).is_empty(), "no BYE before the ACK");
    let ack = request("ACK", &udp_via(CARRIER, "z9hG4bKack2"), "c2@carrier", 1, "+15550100", Some(&tag), "", None);
    let out = h.udp(CARRIER, &ack);
    assert_eq!(requests_out(&out)[0].1.method, Method::Bye);
    assert!(events(&out).is_empty());
}

#[test]
fn reinvite_answer_glare_and_reject() {
    let mut h = H::new(config());
    let (call, tag) = establish(&mut h, "c1@carrier");
    let hold = SDP.replace("m=audio", "a=sendonly\r\nm=audio");
    let reinv = |branch: &str, cseq: u32| {
        request("INVITE", &udp_via(CARRIER, branch), "c1@carrier", cseq, "+15550100", Some(&tag),
            "Contact: <sip:alice@198.51.100.8:5062>\r\n", Some(("application/sdp", &hold)))
    };
    let out = h.udp(CARRIER, &reinv("z9hG4bKre1", 2));
    assert_eq!(statuses(&out), vec![100]);
    assert_eq!(events(&out), vec![UasEvent::ReInvite { call, sdp_offer: Some(hold.clone()) }]);
    // Another re-INVITE while this one is pending: 491, retransmitted
    // until its ACK (same branch, absorbed by the transaction).
    let glare = responses(&h.udp(CARRIER, &reinv("z9hG4bKre2", 3))).pop().unwrap();
    assert_eq!(glare.status, 491);
    assert_eq!(statuses(&h.advance(Duration::from_millis(500))), vec![491]);
    let ack491 = request("ACK", &udp_via(CARRIER, "z9hG4bKre2"), "c1@carrier", 3, "+15550100", Some(&tag), "", None);
    assert!(h.udp(CARRIER, &ack491).is_empty());
    h.uas.answer_reinvite(h.now, call, "v=0\r\na=recvonly\r\n");
    let ok = responses(&h.drain()).pop().unwrap();
    assert_eq!((ok.status, to_tag(&ok)), (200, tag.clone()));
    assert_eq!(ok.body, b"v=0\r\na=recvonly\r\n");
    let ack = request("ACK", &udp_via(CARRIER, "z9hG4bKack2"), "c1@carrier", 2, "+15550100", Some(&tag), "", None);
    assert!(events(&h.udp(CARRIER, &ack)).is_empty());
    assert!(statuses(&h.advance(Duration::from_secs(5))).is_empty());
    // Target refresh: our BYE goes to the new Contact URI.
    let out = h.udp(CARRIER, &reinv("z9hG4bKre3", 4));
    assert_eq!(events(&out).len(), 1);
    h.uas.reject_reinvite(h.now, call, 488, Some("305 edge \"Incompatible media format\""));
    let no = responses(&h.drain()).pop().unwrap();
    assert_eq!(no.status, 488);
    assert_eq!(no.headers.get("Warning"), Some("305 edge \"Incompatible media format\""));
    assert_eq!(h.uas.stats().rejected_488, 1);
    h.uas.hangup(h.now, call);
    let (_, bye) = requests_out(&h.drain()).pop().unwrap();
    assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.8:5062");
}

#[test]
fn info_dtmf_and_lower_cseq() {
    let mut h = H::new(config());
    let (call, tag) = establish(&mut h, "c1@carrier");
    let info = |branch: &str, cseq: u32, body: Option<(&str, &str)>| {
        request("INFO", &udp_via(CARRIER, branch), "c1@carrier", cseq, "+15550100", Some(&tag), "", body)
    };
    let out = h.udp(CARRIER, &info("z9hG4bKi1", 5, Some(("application/dtmf-relay", "Signal=7\r\nDuration=160\r\n"))));
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(events(&out), vec![UasEvent::Dtmf { call, digit: '7', duration_ms: 160 }]);
    let out = h.udp(CARRIER, &info("z9hG4bKi2", 6, Some(("application/dtmf", "#"))));
    assert_eq!(events(&out), vec![UasEvent::Dtmf { call, digit: '#', duration_ms: 0 }]);
    assert_eq!(statuses(&h.udp(CARRIER, &info("z9hG4bKi3", 7, None))), vec![200]);
    assert_eq!(statuses(&h.udp(CARRIER, &info("z9hG4bKi4", 8, Some(("text/plain", "hi"))))), vec![415]);
    // Lower CSeq than the last one: 500.
    let out = h.udp(CARRIER, &info("z9hG4bKi5", 3, Some(("application/dtmf", "1"))));
    assert_eq!(statuses(&out), vec![500]);
    assert!(events(&out).is_empty());
}

#[test]
fn refer_then_notify_sipfrag() {
    let mut h = H::new(config());
    let (call, tag) = establish(&mut h, "c1@carrier");
    h.uas.refer(h.now, call, "sip:desk@pbx.example.com");
    let (to, refer) = requests_out(&h.drain()).pop().unwrap();
    assert_eq!(to, CARRIER.parse::<SocketAddr>().unwrap());
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(refer.headers.get("Refer-To"), Some("<sip:desk@pbx.example.com>"));
    assert!(refer.headers.get("Contact").is_some());
    // A second REFER while one runs is refused locally.
    h.uas.refer(h.now, call, "sip:other@pbx.example.com");
    assert_eq!(events(&h.drain()), vec![UasEvent::TransferProgress { call, status: 491, final_: true }]);
    let mut accepted = response_to(&refer, 202, "Accepted");
    accepted.headers.set("To", "<sip:alice@carrier.example.net>;tag=from1");
    let out = h.udp(CARRIER, &String::from_utf8(accepted.to_bytes()).unwrap());
    assert_eq!(events(&out), vec![UasEvent::TransferProgress { call, status: 202, final_: false }]);
    let notify = |branch: &str, cseq: u32, frag: &str, state: &str| {
        request("NOTIFY", &udp_via(CARRIER, branch), "c1@carrier", cseq, "+15550100", Some(&tag),
            &format!("Event: refer\r\nSubscription-State: {state}\r\n"), Some(("message/sipfrag", frag)))
    };
    let out = h.udp(CARRIER, &notify("z9hG4bKn1", 2, "SIP/2.0 100 Trying\r\n", "active;expires=60"));
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(events(&out), vec![UasEvent::TransferProgress { call, status: 100, final_: false }]);
    let out = h.udp(CARRIER, &notify("z9hG4bKn2", 3, "SIP/2.0 200 OK\r\n", "terminated;reason=noresource"));
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(events(&out), vec![UasEvent::TransferProgress { call, status: 200, final_: true }]);
    // After the final NOTIFY the subscription is gone.
    assert_eq!(statuses(&h.udp(CARRIER, &notify("z9hG4bKn3", 4, "SIP/2.0 200 OK\r\n", "terminated"))), vec![481]);
    let wrong_event = request("NOTIFY", &udp_via(CARRIER, "z9hG4bKn4"), "c1@carrier", 5, "+15550100", Some(&tag), "Event: dialog\r\n", None);
    assert_eq!(statuses(&h.udp(CARRIER, &wrong_event)), vec![489]);
}

#[test]
fn refer_failures_are_reported() {
    let mut h = H::new(config());
    h.uas.refer(h.now, SipCallId(999), "sip:x@y");
    assert_eq!(events(&h.drain()), vec![UasEvent::TransferProgress { call: SipCallId(999), status: 481, final_: true }]);
    let (call, _) = establish(&mut h, "c1@carrier");
    h.uas.refer(h.now, call, "not a uri");
    assert_eq!(events(&h.drain()), vec![UasEvent::TransferProgress { call, status: 400, final_: true }]);
    h.uas.refer(h.now, call, "<sip:desk@pbx.example.com>");
    let (_, refer) = requests_out(&h.drain()).pop().unwrap();
    let mut no = response_to(&refer, 603, "Decline");
    no.headers.set("To", "<sip:alice@carrier.example.net>;tag=from1");
    let out = h.udp(CARRIER, &String::from_utf8(no.to_bytes()).unwrap());
    assert_eq!(events(&out), vec![UasEvent::TransferProgress { call, status: 603, final_: true }]);
    // Timer F: a REFER nobody answers is a final 408.
    h.uas.refer(h.now, call, "sip:desk@pbx.example.com");
    h.drain();
    let out = h.advance(Duration::from_secs(33));
    assert_eq!(events(&out), vec![UasEvent::TransferProgress { call, status: 408, final_: true }]);
}

#[test]
fn unknown_dialogs_and_methods() {
    let mut h = H::new(config());
    for method in ["BYE", "NOTIFY", "INFO"] {
        let r = request(method, &udp_via(CARRIER, "z9hG4bKu1"), "nope", 2, "+15550100", Some("x"), "", None);
        assert_eq!(statuses(&h.udp(CARRIER, &r)), vec![481], "{method}");
    }
    for method in ["REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH", "UPDATE"] {
        let r = request(method, &udp_via(CARRIER, &format!("z9hG4bK{method}")), "m1", 1, "+15550100", None, "", None);
        let resp = responses(&h.udp(CARRIER, &r)).pop().unwrap();
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.headers.get("Allow"), Some(requests::ALLOW));
    }
    let r = request("FROBNICATE", &udp_via(CARRIER, "z9hG4bKf1"), "m2", 1, "+15550100", None, "", None);
    let resp = responses(&h.udp(CARRIER, &r)).pop().unwrap();
    assert_eq!(resp.status, 501);
    assert!(resp.headers.get("Allow").is_some());
    // INVITE with a To tag for no dialog.
    let r = request("INVITE", &udp_via(CARRIER, "z9hG4bKi9"), "m3", 1, "+15550100", Some("gone"),
        "Contact: <sip:a@198.51.100.7>\r\n", Some(("application/sdp", SDP)));
    assert_eq!(statuses(&h.udp(CARRIER, &r)), vec![481]);
}

#[test]
fn options_keepalive_only_for_allowed_sources() {
    let mut h = H::new(config());
    let opt = request("OPTIONS", &udp_via(CARRIER, "z9hG4bKo1"), "o1", 1, "+15550100", None, "", None);
    let resp = responses(&h.udp(CARRIER, &opt)).pop().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers.get("Allow"), Some(requests::ALLOW));
    assert!(resp.headers.get("Accept").unwrap().contains("application/sdp"));
    assert!(resp.headers.contains("Supported"));
    // Digest trunks' sources get OPTIONS answered without a challenge.
    let opt = request("OPTIONS", &udp_via(PBX, "z9hG4bKo2"), "o2", 1, "x", None, "", None);
    assert_eq!(statuses(&h.udp(PBX, &opt)), vec![200]);
    let opt = request("OPTIONS", &udp_via(STRANGER, "z9hG4bKo3"), "o3", 1, "x", None, "", None);
    assert_eq!(statuses(&h.udp(STRANGER, &opt)), vec![403]);
}

#[test]
fn scanners_get_the_same_403_whatever_the_number() {
    let mut h = H::new(config());
    let mut seen = Vec::new();
    for (i, number) in ["+15550100", "+19999999", "100", "admin"].iter().enumerate() {
        let mut text = invite(&format!("z9hG4bKscan{i}"), &format!("scan{i}"), number);
        text = text.replace("198.51.100.7:5060", STRANGER);
        let resp = responses(&h.udp(STRANGER, &text)).pop().unwrap();
        seen.push((resp.status, resp.reason.clone(), resp.headers.len(), resp.body.len()));
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    assert_eq!(seen[0].0, 403);
    let reg = request("REGISTER", &udp_via(STRANGER, "z9hG4bKr"), "r", 1, "x", None, "", None);
    assert_eq!(statuses(&h.udp(STRANGER, &reg)), vec![403]);
    assert_eq!(h.uas.active_calls(), 0);
    assert_eq!(h.uas.stats().rejected_403, 5);
    // An allowed source dialling a number its trunk does not route: 404.
    let out = h.udp(CARRIER, &invite("z9hG4bKn", "n1", "+19999999"));
    assert_eq!(statuses(&out), vec![404]);
    assert_eq!(h.uas.stats().rejected_404, 1);
}

fn pbx_invite(branch: &str, cseq: u32, auth: Option<&str>) -> String {
    let extra = match auth {
        Some(a) => format!("Contact: <sip:pbx@203.0.113.20:5070>\r\nAuthorization: {a}\r\n"),
        None => "Contact: <sip:pbx@203.0.113.20:5070>\r\n".to_string(),
    };
    request("INVITE", &udp_via(PBX, branch), "pbx-call", cseq, "4711", None, &extra, Some(("application/sdp", SDP)))
}

fn authorization(nonce: &str, password: &str, alg: DigestAlgorithm) -> String {
    let uri = "sip:4711@edge.example.com";
    let r = digest_response(alg, "pbx1", "edge.example.com", password, "INVITE", uri, nonce, "00000001", "0a4f113b", "auth");
    format!("Digest username=\"pbx1\", realm=\"edge.example.com\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, cnonce=\"0a4f113b\", qop=auth, nc=00000001", alg.as_str())
}

fn nonce_of(resp: &Response) -> String {
    let ch = resp.headers.get("WWW-Authenticate").unwrap();
    let start = ch.find("nonce=\"").unwrap() + 7;
    ch[start..].split('"').next().unwrap().to_string()
}

#[test]
fn digest_challenge_verify_wrong_password_and_stale() {
    let mut h = H::new(config());
    let resp = responses(&h.udp(PBX, &pbx_invite("z9hG4bKp1", 1, None))).pop().unwrap();
    assert_eq!(resp.status, 401);
    let challenges: Vec<&str> = resp.headers.get_all("WWW-Authenticate").collect();
    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"));
    assert!(challenges[0].contains("realm=\"edge.example.com\""));
    assert!(h.uas.active_calls() == 0 && h.uas.stats().auth_challenges == 1);
    // The ACK for the 401 is absorbed by the transaction.
    let ack = request("ACK", &udp_via(PBX, "z9hG4bKp1"), "pbx-call", 1, "4711", Some(&to_tag(&resp)), "", None);
    assert!(h.udp(PBX, &ack).is_empty());
    let nonce = nonce_of(&resp);

    let wrong = authorization(&nonce, "guess", DigestAlgorithm::Sha256);
    assert_eq!(statuses(&h.udp(PBX, &pbx_invite("z9hG4bKp2", 2, Some(&wrong)))), vec![403]);

    let right = authorization(&nonce, "s3cret", DigestAlgorithm::Sha256);
    let out = h.udp(PBX, &pbx_invite("z9hG4bKp3", 3, Some(&right)));
    assert_eq!(statuses(&out), vec![100]);
    match events(&out).as_slice() {
        [UasEvent::IncomingCall { trunk, flow, number, .. }] => {
            assert_eq!((trunk.as_str(), flow.as_str(), number.as_str()), ("pbx", "support", "4711"));
        }
        other => panic!("{other:?}"),
    }
    // MD5 works too.
    let md5 = authorization(&nonce, "s3cret", DigestAlgorithm::Md5).replace("pbx-call", "x");
    let text = pbx_invite("z9hG4bKp4", 4, Some(&md5)).replace("pbx-call", "pbx-call-2");
    assert_eq!(statuses(&h.udp(PBX, &text)), vec![100]);
    // Two minutes later the nonce is stale: a fresh challenge with stale=true.
    h.advance(Duration::from_secs(150));
    let text = pbx_invite("z9hG4bKp5", 5, Some(&right)).replace("pbx-call", "pbx-call-3");
    let resp = responses(&h.udp(PBX, &text)).pop().unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.headers.get("WWW-Authenticate").unwrap().contains("stale=true"));
    // A nonce we never issued: a plain new challenge.
    let forged = authorization("0.1.00000000000000000000000000000000", "s3cret", DigestAlgorithm::Md5);
    let text = pbx_invite("z9hG4bKp6", 6, Some(&forged)).replace("pbx-call", "pbx-call-4");
    let resp = responses(&h.udp(PBX, &text)).pop().unwrap();
    assert_eq!(resp.status, 401);
    assert!(!resp.headers.get("WWW-Authenticate").unwrap().contains("stale"));
}

#[test]
fn capacity_and_draining_give_503_with_retry_after() {
    let mut h = H::new(UasConfig { max_calls: 1, ..config() });
    h.udp(CARRIER, &invite("z9hG4bKa", "a", "+15550100"));
    let resp = responses(&h.udp(CARRIER, &invite("z9hG4bKb", "b", "+15550100"))).pop().unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.headers.get("Retry-After"), Some("30"));
    let mut h = H::new(config());
    h.uas.set_draining(true);
    let out = h.udp(CARRIER, &invite("z9hG4bKc", "c", "+15550100"));
    assert_eq!(statuses(&out), vec![503]);
    assert!(events(&out).is_empty());
    h.uas.set_draining(false);
    assert_eq!(statuses(&h.udp(CARRIER, &invite("z9hG4bKd", "d", "+15550100"))), vec![100]);
    assert_eq!(h.uas.stats().rejected_503, 1);
}

#[test]
fn app_reject_with_warning() {
    let mut h = H::new(config());
    let out = h.udp(CARRIER, &invite("z9hG4bKa", "a", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.reject(h.now, call, 488, Some("no common codec"));
    let out = h.drain();
    let resp = responses(&out).pop().unwrap();
    assert_eq!(resp.status, 488);
    assert_eq!(resp.headers.get("Warning"), Some("399 203.0.113.5:5060 \"no common codec\""));
    assert!(events(&out).is_empty());
    assert_eq!(h.uas.active_calls(), 0);
    let out = h.udp(CARRIER, &invite("z9hG4bKb", "b", "+15550100"));
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.reject(h.now, call, 503, None);
    let resp = responses(&h.drain()).pop().unwrap();
    assert_eq!((resp.status, resp.headers.get("Retry-After")), (503, Some("30")));
}

#[test]
fn rate_limit_drops_udp_silently_and_counts() {
    let mut h = H::new(UasConfig { rate_limit_per_s: 1.0, rate_burst: 3, ..config() });
    let mut answered = 0;
    for i in 0..10 {
        let opt = request("OPTIONS", &udp_via(CARRIER, &format!("z9hG4bKrl{i}")), "rl", i, "x", None, "", None);
        answered += statuses(&h.udp(CARRIER, &opt)).len();
    }
    assert_eq!(answered, 3);
    assert_eq!(h.uas.stats().rate_limited, 7);
    h.advance(Duration::from_secs(2));
    let opt = request("OPTIONS", &udp_via(CARRIER, "z9hG4bKrlx"), "rl", 99, "x", None, "", None);
    assert_eq!(statuses(&h.udp(CARRIER, &opt)), vec![200]);
}

#[test]
fn responses_follow_via_received_and_rport() {
    let mut h = H::new(config());
    // rport: back to the packet's source port, with received/rport filled in.
    let opt = request("OPTIONS", "SIP/2.0/UDP 10.0.0.5:5080;branch=z9hG4bKv1;rport", "v1", 1, "x", None, "", None);
    let out = h.udp("198.51.100.9:40000", &opt);
    let (to, m) = wire(&out).pop().unwrap();
    assert_eq!(to, "198.51.100.9:40000".parse::<SocketAddr>().unwrap());
    assert_eq!(m.headers().get("Via"), Some("SIP/2.0/UDP 10.0.0.5:5080;branch=z9hG4bKv1;rport=40000;received=198.51.100.9"));
    // No rport: the source address at the Via port.
    let opt = request("OPTIONS", "SIP/2.0/UDP 10.0.0.5:5080;branch=z9hG4bKv2", "v2", 1, "x", None, "", None);
    let (to, _) = wire(&h.udp("198.51.100.9:40000", &opt)).pop().unwrap();
    assert_eq!(to, "198.51.100.9:5080".parse::<SocketAddr>().unwrap());
}

#[test]
fn never_forwards_anything() {
    let mut h = H::new(config());
    let text = invite("z9hG4bKfw", "fw", "+15550100")
        .replace("sip:+15550100@edge.example.com SIP/2.0", "sip:+15550100@victim.example.org SIP/2.0")
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRoute: <sip:192.0.2.200;lr>\r\n");
    let out = h.udp(CARRIER, &text);
    let UasEvent::IncomingCall { call, .. } = events(&out)[0].clone() else { panic!() };
    h.uas.answer(h.now, call, "v=0\r\n");
    let mut all = out;
    all.extend(h.drain());
    all.extend(h.advance(Duration::from_secs(40)));
    for (to, _) in wire(&all) {
        assert_eq!(to, CARRIER.parse::<SocketAddr>().unwrap());
    }
}

#[test]
fn parse_errors_and_validation() {
    let mut h = H::new(config());
    let bad = invite("z9hG4bKpe", "pe", "+15550100").replace("Contact: <sip:alice@198.51.100.7:5060>", "Contact: <sip:alice@198.51.100.7:5060");
    let resp = responses(&h.udp(CARRIER, &bad)).pop().unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.headers.to_addr().unwrap().tag().is_some());
    assert!(h.udp(CARRIER, "garbage\r\n\r\n").is_empty());
    assert_eq!(h.uas.stats().parse_errors, 2);
    let req = invite("z9hG4bKrq", "rq", "+15550100").replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: 100rel\r\n");
    let resp = responses(&h.udp(CARRIER, &req)).pop().unwrap();
    assert_eq!((resp.status, resp.headers.get("Unsupported")), (420, Some("100rel")));
    let no_contact = invite("z9hG4bKnc", "nc", "+15550100").replace("Contact: <sip:alice@198.51.100.7:5060>\r\n", "");
    assert_eq!(statuses(&h.udp(CARRIER, &no_contact)), vec![400]);
    assert_eq!(h.uas.active_calls(), 0);
}

#[test]
fn tcp_framing_same_connection_no_retransmissions_and_close() {
    let mut h = H::new(config());
    let text = invite("z9hG4bKt1", "t1", "+15550100").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let (a, b) = text.as_bytes().split_at(100);
    assert!(h.tcp(CARRIER, 7, a).is_empty());
    let out = h.tcp("198.51.100.7:50123", 7, b);
    let call = match events(&out).as_slice() {
        [UasEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    for o in &out {
        if let UasOutput::Transmit { transport, conn, .. } = o {
            assert_eq!((*transport, *conn), (TransportKind::Tcp, Some(7)));
        }
    }
    h.uas.answer(h.now, call, "v=0\r\n");
    assert_eq!(statuses(&h.drain()), vec![200]);
    assert!(statuses(&h.advance(Duration::from_secs(10))).is_empty(), "TCP: no 2xx retransmission");
    // CRLF keep-alive ping gets a pong.
    let out = h.tcp(CARRIER, 7, b"\r\n\r\n");
    assert!(out.iter().any(|o| matches!(o, UasOutput::Transmit { data, .. } if data == b"\r\n")));
    h.uas.connection_closed(h.now, 7);
    assert_eq!(events(&h.drain()), vec![UasEvent::CallEnded { call, reason: EndReason::TransportFailure }]);
    assert_eq!(h.uas.active_calls(), 0);
    // A framing error makes the connection unusable.
    h.tcp(CARRIER, 8, b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n");
    assert!(h.uas.is_connection_unusable(8));
    assert!(!h.uas.is_connection_unusable(7));
}

#[test]
fn set_config_keeps_existing_dialogs() {
    let mut h = H::new(config());
    let (call, tag) = establish(&mut h, "c1@carrier");
    h.uas.set_config(UasConfig { trunks: vec![], ..config() });
    let out = h.udp(CARRIER, &invite("z9hG4bKnew", "c2@carrier", "+15550100"));
    assert_eq!(statuses(&out), vec![403], "new calls see the new trunks");
    let bye = request("BYE", &udp_via(CARRIER, "z9hG4bKbye"), "c1@carrier", 2, "+15550100", Some(&tag), "", None);
    let out = h.udp(CARRIER, &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(events(&out), vec![UasEvent::CallEnded { call, reason: EndReason::ByeFromCaller }]);
}

#[test]
fn transaction_table_is_capped() {
    let mut h = H::new(config());
    for i in 0..(MAX_SERVER_TRANSACTIONS + 50) {
        let opt = format!(
            "OPTIONS sip:x@edge SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKcap{i}\r\nMax-Forwards: 70\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:x@edge>\r\nCall-ID: cap\r\nCSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        h.udp(CARRIER, &opt);
    }
    assert_eq!(h.uas.server_txs.len(), MAX_SERVER_TRANSACTIONS);
    assert_eq!(h.uas.stats().dropped_at_capacity, 50);
    // Timer J frees them.
    h.advance(Duration::from_secs(33));
    assert!(h.uas.server_txs.is_empty());
    assert_eq!(h.uas.poll_timeout(), None);
}

/// xorshift64*, as in the message layer's fuzz test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[b"\r\n", b";tag=", b",", b"<", b">", b"\"", b"%", b"0", b"99999999999", b"z9hG4bK", b"\xff", b" ", b";rport", b";received=", b"@"];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = m.len();
        match rng.below(5) {
            0 if len > 0 => {
                let i = rng.below(len);
                m[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(len + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                m.splice(i..i, ins.iter().copied());
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(24)).min(len);
                m.drain(i..j);
            }
            3 => m.truncate(rng.below(len + 1)),
            _ => {}
        }
    }
    m
}

#[test]
fn fuzz_mutations_never_panic() {
    let mut h = H::new(UasConfig { rate_limit_per_s: 0.0, ..config() });
    let (call, tag) = establish(&mut h, "c1@carrier");
    let in_dialog = |m: &str, body: Option<(&str, &str)>, extra: &str| {
        request(m, &udp_via(CARRIER, "z9hG4bKfz"), "c1@carrier", 9, "+15550100", Some(&tag), extra, body)
    };
    let seeds: Vec<String> = vec![
        invite("z9hG4bKf1", "f1", "+15550100"),
        pbx_invite("z9hG4bKf2", 1, Some(&authorization("0.1.00", "x", DigestAlgorithm::Md5))),
        in_dialog("BYE", None, ""),
        in_dialog("INFO", Some(("application/dtmf-relay", "Signal=5\r\nDuration=100")), ""),
        in_dialog("NOTIFY", Some(("message/sipfrag", "SIP/2.0 200 OK")), "Event: refer\r\n"),
        in_dialog("INVITE", Some(("application/sdp", SDP)), "Contact: <sip:a@198.51.100.7>\r\n"),
        in_dialog("ACK", None, ""),
        request("CANCEL", &udp_via(CARRIER, "z9hG4bKf1"), "f1", 1, "+15550100", None, "", None),
        request("OPTIONS", &udp_via(CARRIER, "z9hG4bKf3"), "f3", 1, "x", None, "", None),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c1@carrier\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n".to_string(),
    ];
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let carrier: SocketAddr = CARRIER.parse().unwrap();
    for round in 0..4_000 {
        let seed = seeds[rng.below(seeds.len())].as_bytes();
        let input = mutate(&mut rng, seed);
        let out = if round % 3 == 0 { h.tcp(CARRIER, (round % 5) as u64, &input) } else { h.udp_bytes(CARRIER, &input) };
        for o in &out {
            if let UasOutput::Transmit { to, data, .. } = o {
                // Everything goes back to the sender (its IP), and parses.
                assert_eq!(to.ip(), carrier.ip(), "round {round}");
                // Answers to unparseable requests echo the broken headers.
                let echoes_garbage = data.starts_with(b"SIP/2.0 400 ") || data.starts_with(b"SIP/2.0 513 ");
                if data != b"\r\n" && !echoes_garbage {
                    assert!(parse_message(data, &Limits::default()).is_ok(), "round {round}: {}", String::from_utf8_lossy(data));
                }
            }
        }
        if let Some(UasEvent::IncomingCall { call, .. }) = events(&out).first() {
            match rng.below(4) {
                0 => h.uas.answer(h.now, *call, "v=0\r\n"),
                1 => h.uas.reject(h.now, *call, 486, None),
                2 => h.uas.ring(h.now, *call),
                _ => h.uas.hangup(h.now, *call),
            }
        }
        if round % 97 == 0 {
            h.uas.refer(h.now, call, "sip:desk@pbx.example.com");
            h.uas.answer_reinvite(h.now, call, "v=0\r\n");
            h.uas.reject_reinvite(h.now, call, 488, None);
        }
        h.drain();
        h.advance(Duration::from_millis(rng.below(3000) as u64));
        h.uas.connection_closed(h.now, (round % 5) as u64);
    }
    assert!(h.uas.stats().parse_errors > 0);
}

#[test]
fn tcp_over_the_rate_limit_gets_503() {
    let mut h = H::new(UasConfig { rate_limit_per_s: 1.0, rate_burst: 1, ..config() });
    let opt = |i: u32| {
        request("OPTIONS", &format!("SIP/2.0/TCP {CARRIER};branch=z9hG4bKtr{i}"), "tr", i, "x", None, "", None)
    };
    let both = format!("{}{}", opt(1), opt(2));
    let out = h.tcp(CARRIER, 3, both.as_bytes());
    let rs = responses(&out);
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 503]);
    assert_eq!(rs[1].headers.get("Retry-After"), Some("30"));
    assert_eq!(h.uas.stats().rate_limited, 1);
}

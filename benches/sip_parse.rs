//! SIP signalling cost: parsing a carrier's INVITE (with SDP), serializing
//! a response, and a whole call's signalling through the sans-IO UAS
//! (INVITE -> 100/200, ACK, BYE -> 200) with the SDP answer negotiated.
//! Plain timing, median of 7 runs; prints per-operation figures and how
//! many call set-ups per second one core could signal.
//!
//! `cargo bench --bench sip_parse`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voice_edge::media::codec::CodecKind;
use voice_edge::proto::sdp::{negotiate, LocalMedia};
use voice_edge::proto::sip::{
    parse_message, response_to, Limits, Message, Received, TransportKind, Trunk, Uas, UasConfig, UasEvent, UasOutput,
};

const INVITE: &str = "INVITE sip:15550100@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 69\r\n\
From: \"Carrier Caller\" <sip:+4930123456@203.0.113.7>;tag=1928301774\r\n\
To: <sip:15550100@192.0.2.10>\r\n\
Call-ID: a84b4c76e66710@pc33.carrier.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+4930123456@203.0.113.7:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY\r\n\
Supported: timer, replaces\r\n\
User-Agent: CarrierSBC/5.1\r\n\
P-Asserted-Identity: <sip:+4930123456@carrier.example>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n{sdp}";

const SDP: &str = "v=0\r\no=sbc 2890844526 2890844526 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite(call: u64) -> Vec<u8> {
    INVITE
        .replace("{len}", &SDP.len().to_string())
        .replace("{sdp}", SDP)
        .replace("a84b4c76e66710", &format!("a84b4c76e66710-{call}"))
        .replace("z9hG4bK776asdhds", &format!("z9hG4bK776asdhds{call}"))
        .into_bytes()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_per_op(ops: u64, mut f: impl FnMut()) -> f64 {
    let runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ops {
                f();
            }
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    median(runs)
}

fn main() {
    let msg = invite(1);
    let limits = Limits::default();
    let parse_ns = time_per_op(20_000, || {
        let parsed = parse_message(std::hint::black_box(&msg), &limits).unwrap();
        std::hint::black_box(parsed);
    });
    let Ok((Message::Request(req), _)) = parse_message(&msg, &limits) else { panic!("the INVITE parses") };
    let serialize_ns = time_per_op(20_000, || {
        std::hint::black_box(response_to(&req, 180, "Ringing").with_to_tag("a7c4").to_bytes());
    });
    let local = LocalMedia {
        address: "192.0.2.10".parse().unwrap(),
        port: 20_000,
        codecs: vec![CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus],
        session_id: 1,
        session_version: 1,
    };
    let sdp_ns = time_per_op(20_000, || {
        std::hint::black_box(negotiate(SDP, &local).unwrap());
    });

    // A whole call's signalling through the UAS.
    let carrier: SocketAddr = "203.0.113.7:5060".parse().unwrap();
    let cfg = UasConfig {
        trunks: vec![Trunk {
            name: "carrier".into(),
            sources: vec![("203.0.113.0".parse().unwrap(), 24)],
            digest: None,
            numbers: [("*".to_string(), "retail".to_string())].into(),
            transfer_target: None,
        }],
        max_calls: 1_000_000,
        rate_limit_per_s: 1e12,
        rate_burst: u32::MAX,
        ..UasConfig::default()
    };
    let mut uas = Uas::new(cfg, 7);
    let mut call_no = 0u64;
    let call_ns = time_per_op(5_000, || {
        call_no += 1;
        let now = Instant::now();
        uas.handle_received(now, Received { from: carrier, transport: TransportKind::Udp, conn: None, data: &invite(call_no) });
        let mut sip_call = None;
        let mut to_tag = String::new();
        while let Some(out) = uas.poll_output() {
            match out {
                UasOutput::Event(UasEvent::IncomingCall { call, sdp_offer, .. }) => {
                    let answer = negotiate(sdp_offer.as_deref().unwrap(), &local).unwrap();
                    uas.answer(now, call, &answer.answer_sdp);
                    sip_call = Some(call);
                }
                UasOutput::Transmit { data, .. } if data.starts_with(b"SIP/2.0 200") => {
                    let text = String::from_utf8_lossy(&data);
                    let to = text.lines().find(|l| l.starts_with("To:")).unwrap_or("");
                    to_tag = to.split("tag=").nth(1).and_then(|t| t.split([';', '>']).next()).unwrap_or("").to_string();
                }
                _ => {}
            }
        }
        assert!(sip_call.is_some() && !to_tag.is_empty(), "the call was answered");
        for (method, cseq) in [("ACK", "314159 ACK"), ("BYE", "314160 BYE")] {
            let req = format!(
                "{method} sip:voice-edge@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK{method}{call_no};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:+4930123456@203.0.113.7>;tag=1928301774\r\nTo: <sip:15550100@192.0.2.10>;tag={to_tag}\r\n\
                 Call-ID: a84b4c76e66710-{call_no}@pc33.carrier.example\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            );
            uas.handle_received(now, Received { from: carrier, transport: TransportKind::Udp, conn: None, data: req.as_bytes() });
            while uas.poll_output().is_some() {}
        }
        // Let the transactions' wait timers run out.
        uas.handle_timeout(now + Duration::from_secs(64));
        while uas.poll_output().is_some() {}
    });
    assert_eq!(uas.active_calls(), 0, "every call ended");

    println!("| operation | median |");
    println!("|---|---:|");
    println!("| parse a carrier INVITE with SDP ({} bytes) | {:.1} µs |", msg.len(), parse_ns / 1e3);
    println!("| serialize a response | {:.1} µs |", serialize_ns / 1e3);
    println!("| SDP offer/answer | {:.1} µs |", sdp_ns / 1e3);
    println!("| one call's signalling through the UAS (INVITE, 100, 200, ACK, BYE, 200, SDP) | {:.1} µs |", call_ns / 1e3);
    println!("| call set-ups per second on one core | {:.0} |", 1e9 / call_ns);
}

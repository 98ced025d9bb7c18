//! The SIP message layer against the RFC 4475 torture messages, plus hand
//! tests (round trip, compact forms, folding, stream framing, keep-alives,
//! limits) and a deterministic mutation fuzz loop.
//!
//! The torture messages live in `../shared/conformance/rfc4475` beside the
//! checkout (`EXPECT.tsv` says, per file, whether RFC 4475 calls the message
//! valid — `Parse` — or malformed — `Reject`). Missing material is a test
//! failure, never a skip.

use std::fs;
use std::path::PathBuf;

use voice_edge::proto::sip::{
    parse_message, response_to, validate_request, validate_request_with, Contacts, Host, Limits,
    Message, Method, ParseErrorKind, Request, StreamFramer, Transport, Uri, ValidationPolicy,
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance/rfc4475");

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(CORPUS);
    assert!(
        dir.join("EXPECT.tsv").is_file(),
        "RFC 4475 conformance material not found at {}: the shared conformance directory \
         (shared/conformance/rfc4475 with EXPECT.tsv and the .dat files) must sit beside the \
         checkout, as ../shared",
        dir.display()
    );
    dir
}

struct Row {
    file: String,
    section: String,
    expect: String,
}

fn rows() -> Vec<Row> {
    let dir = corpus_dir();
    let text = fs::read_to_string(dir.join("EXPECT.tsv")).expect("read EXPECT.tsv");
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 3, "malformed EXPECT.tsv line: {line:?}");
        out.push(Row {
            file: cols[0].into(),
            section: cols[1].into(),
            expect: cols[2].into(),
        });
    }
    out
}

fn read(file: &str) -> Vec<u8> {
    let path = corpus_dir().join(file);
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What this element does with a datagram.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Request parsed and passed validation.
    Accepted,
    /// Response parsed (handed to the transaction layer).
    ResponseParsed,
    /// Request parsed, validation answers with this status.
    Rejected(u16, String),
    /// Parse error answered with this status.
    ParseAnswered(u16, String),
    /// Parse error, no response possible: dropped.
    Dropped(String),
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Rejected(s, _) | Outcome::ParseAnswered(s, _) => Some(*s),
            _ => None,
        }
    }

    fn parsed(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::ResponseParsed | Outcome::Rejected(..)
        )
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Accepted => "parsed, accepted".into(),
            Outcome::ResponseParsed => "parsed (response)".into(),
            Outcome::Rejected(s, r) => format!("parsed, {s} {r}"),
            Outcome::ParseAnswered(s, r) => format!("parse error, {s} {r}"),
            Outcome::Dropped(why) => format!("parse error, dropped ({why})"),
        }
    }
}

fn judge_with(bytes: &[u8], policy: &ValidationPolicy) -> Outcome {
    match parse_message(bytes, &Limits::default()) {
        Ok((Message::Request(r), _)) => match validate_request_with(&r, policy) {
            Ok(()) => Outcome::Accepted,
            Err(rej) => Outcome::Rejected(rej.status, rej.reason),
        },
        Ok((Message::Response(_), _)) => Outcome::ResponseParsed,
        Err(e) => match e.response_context() {
            Some(c) => Outcome::ParseAnswered(c.status, c.reason.clone()),
            None => Outcome::Dropped(e.to_string()),
        },
    }
}

fn judge(bytes: &[u8]) -> Outcome {
    judge_with(bytes, &ValidationPolicy::default())
}

/// What RFC 4475 asks of each message (status codes where it names one).
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Valid, and nothing for a UAS to object to.
    Accept,
    /// A response that parses.
    Response,
    /// Answered with one of these codes (after parsing or from the parse
    /// error's context).
    Status(&'static [u16]),
    /// A malformed response: dropped.
    Drop,
    /// Dropped, or answered with 400.
    DropOr400,
}

fn want(file: &str) -> Option<Want> {
    use Want::*;
    Some(match file {
        // 3.1.1 valid messages
        "TC_WSINV.dat"
        | "TC_INTMETH.dat"
        | "TC_ESC01_V.dat"
        | "TC_ESCNULL_V.dat"
        | "TC_ESC02_V.dat"
        | "TC_LWSDISP_V.dat"
        | "TC_LONGREQ_V.dat"
        | "TC_DBLREQ.dat"
        | "TC_SEMIURI_V.dat"
        | "TC_TRANSPORTS_V.dat"
        | "TC_MPART01.dat" => Accept,
        "TC_UNREASON_V.dat" | "TC_NOREASON_V.dat" => Response,
        // 3.1.2 invalid messages
        "TC_BADINV01_I.dat"
        | "TC_CLERR_I.dat"
        | "TC_NCL_I.dat"
        | "TC_SCALAR02_V.dat"
        | "TC_QUOTBAL_I.dat"
        | "TC_LTGTRURI_I.dat"
        | "TC_LWSRURI_I.dat"
        | "TC_LWSSTART_V.dat"
        | "TC_TRWS_I.dat"
        | "TC_ESCRURI_V.dat"
        | "TC_BADDATE_V.dat"
        | "TC_REGBADCT_I.dat"
        | "TC_BADASPEC_I.dat"
        | "TC_BADDN_I.dat"
        | "TC_MISMATCH01_V.dat" => Status(&[400]),
        "TC_SCALARLG_V.dat" | "TC_BIGCODE_V.dat" => Drop,
        "TC_BADVERS_V.dat" => Status(&[505]),
        "TC_MISMATCH02_V.dat" => Status(&[400, 501]),
        // 3.2, 3.3: valid syntax, judged above the parser
        "TC_BADBRANCH_V.dat" => Accept,
        "TC_INSUF_I.dat" => Status(&[400]),
        "TC_UNKSCM_V.dat" | "TC_NOVELSC_V.dat" => Status(&[416]),
        "TC_UNKSM2_V.dat" => Accept,
        "TC_BEXT01_V.dat" => Status(&[420]),
        "TC_INVUT_V.dat" => Status(&[415]),
        "TC_REGAUT01_V.dat" => Accept,
        "TC_MULTI01_I.dat" | "TC_MCL01_I.dat" => Status(&[400]),
        "TC_BCAST_V.dat" => Response,
        "TC_ZEROMF_V.dat" => Accept,
        "TC_CPARAM01_V.dat" | "TC_CPARAM02_V.dat" | "TC_REGESCRT_V.dat" => Accept,
        "TC_SDP01_V.dat" => Status(&[406, 400]),
        // 3.4.1: RFC 2543 syntax. Without Max-Forwards our default is 400;
        // with `allow_missing_max_forwards` it is accepted (checked below).
        "TC_INV2543_I.dat" => Status(&[400]),
        "TC_TEST_I.dat" => DropOr400,
        _ => return None,
    })
}

fn meets(outcome: &Outcome, want: Want) -> bool {
    match want {
        Want::Accept => *outcome == Outcome::Accepted,
        Want::Response => *outcome == Outcome::ResponseParsed,
        Want::Status(codes) => outcome.status().is_some_and(|s| codes.contains(&s)),
        Want::Drop => matches!(outcome, Outcome::Dropped(_)),
        Want::DropOr400 => matches!(outcome, Outcome::Dropped(_)) || outcome.status() == Some(400),
    }
}

#[test]
fn rfc4475_torture_messages() {
    let rows = rows();
    assert!(!rows.is_empty(), "EXPECT.tsv lists no messages");
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    println!(
        "{:<22} {:<9} {:<7} {:<4} got",
        "file", "section", "expect", "ok"
    );
    for row in &rows {
        let bytes = read(&row.file);
        let outcome = judge(&bytes);
        let mut ok = match row.expect.as_str() {
            // Must parse; any semantic rejection must be a 4xx/5xx with a reason.
            "Parse" => {
                outcome.parsed()
                    && match &outcome {
                        Outcome::Rejected(s, r) => (400..600).contains(s) && !r.is_empty(),
                        _ => true,
                    }
            }
            // Must fail to parse or be rejected, never accepted.
            "Reject" => matches!(
                outcome,
                Outcome::Rejected(..) | Outcome::ParseAnswered(..) | Outcome::Dropped(_)
            ),
            other => panic!("{}: unknown expectation {other:?}", row.file),
        };
        if let Some(w) = want(&row.file) {
            ok &= meets(&outcome, w);
        }
        println!(
            "{:<22} {:<9} {:<7} {:<4} {}",
            row.file,
            row.section,
            row.expect,
            if ok { "ok" } else { "FAIL" },
            outcome.describe()
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
            failures.push(format!(
                "{} ({}): {}",
                row.file,
                row.expect,
                outcome.describe()
            ));
        }
    }
    println!("rfc4475: {passed} passed, {failed} failed");
    assert!(
        failures.is_empty(),
        "RFC 4475 failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rfc4475_details() {
    // 3.1.1.1: the tortuous INVITE.
    let (m, _) = parse_message(&read("TC_WSINV.dat"), &Limits::default()).unwrap();
    let r = m.as_request().unwrap();
    assert_eq!(r.headers.to_addr().unwrap().tag(), Some("1918181833n"));
    let from = r.headers.from_addr().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(r.headers.max_forwards().unwrap(), Some(68));
    assert_eq!(r.headers.cseq().unwrap().seq, 9);
    let vias = r.headers.via().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(
        r.headers.get("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(r.headers.get("Subject"), Some(""));
    assert_eq!(r.body.len(), 150);
    match r.headers.contact().unwrap() {
        Some(Contacts::List(l)) => {
            assert_eq!(l[0].display_name.as_deref(), Some("Quoted string \"\""));
            assert_eq!(l[0].params.value("q"), Some("0.33"));
        }
        other => panic!("{other:?}"),
    }

    // 3.1.1.2: extension method and a user part full of odd characters.
    let (m, _) = parse_message(&read("TC_INTMETH.dat"), &Limits::default()).unwrap();
    let r = m.as_request().unwrap();
    assert_eq!(
        r.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    assert_eq!(r.headers.cseq().unwrap().method, r.method);
    let to = r.headers.to_addr().unwrap();
    assert_eq!(to.display_name.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));

    // 3.1.1.3 / 3.1.1.4: escapes.
    let (m, _) = parse_message(&read("TC_ESC01_V.dat"), &Limits::default()).unwrap();
    let r = m.as_request().unwrap();
    let Uri::Sip(u) = &r.uri else { panic!() };
    assert_eq!(
        u.user_unescaped().unwrap(),
        b"sips:user@example.com".to_vec()
    );
    let to = r.headers.to_addr().unwrap();
    let Uri::Sip(tu) = &to.uri else { panic!() };
    assert!(
        tu.equivalent(&match Uri::parse("sip:user@example.com").unwrap() {
            Uri::Sip(x) => x,
            _ => unreachable!(),
        })
    );
    let (m, _) = parse_message(&read("TC_ESCNULL_V.dat"), &Limits::default()).unwrap();
    let Some(Contacts::List(c)) = m.headers().contact().unwrap() else {
        panic!()
    };
    let Uri::Sip(c1) = &c[1].uri else { panic!() };
    assert_eq!(c1.user_unescaped().unwrap(), vec![0, 0]);

    // 3.1.1.5: C%6Fntact is an extension header, not Contact.
    let (m, _) = parse_message(&read("TC_ESC02_V.dat"), &Limits::default()).unwrap();
    assert_eq!(m.headers().count("Contact"), 2);
    assert_eq!(
        m.headers().get("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );

    // 3.1.1.7: 34 Via values in many spellings.
    let (m, _) = parse_message(&read("TC_LONGREQ_V.dat"), &Limits::default()).unwrap();
    assert_eq!(m.headers().via().unwrap().len(), 34);

    // 3.1.1.8: the trailing INVITE is noise.
    let dbl = read("TC_DBLREQ.dat");
    let (m, used) = parse_message(&dbl, &Limits::default()).unwrap();
    assert_eq!(m.as_request().unwrap().method, Method::Register);
    assert!(used < dbl.len());
    assert!(m.body().is_empty());

    // 3.1.1.10: unknown transports.
    let (m, _) = parse_message(&read("TC_TRANSPORTS_V.dat"), &Limits::default()).unwrap();
    let t: Vec<Transport> = m
        .headers()
        .via()
        .unwrap()
        .into_iter()
        .map(|v| v.transport)
        .collect();
    assert_eq!(t[3], Transport::Other("UNKNOWN".into()));
    assert_eq!(t[1], Transport::Sctp);

    // 3.1.1.12 / 13: reason phrases.
    let (m, _) = parse_message(&read("TC_UNREASON_V.dat"), &Limits::default()).unwrap();
    assert!(m
        .as_response()
        .unwrap()
        .reason
        .starts_with("= 2**3 * 5**2 но"));
    let (m, _) = parse_message(&read("TC_NOREASON_V.dat"), &Limits::default()).unwrap();
    assert_eq!(m.as_response().unwrap().reason, "");

    // 3.3.5: 420 lists exactly the Require tags.
    let (m, _) = parse_message(&read("TC_BEXT01_V.dat"), &Limits::default()).unwrap();
    let rej = validate_request(m.as_request().unwrap()).unwrap_err();
    assert_eq!(
        rej.extra_headers,
        vec![(
            "Unsupported".to_string(),
            "nothingSupportsThis, nothingSupportsThisEither".to_string()
        )]
    );
    // 3.3.6: 415 says what we accept.
    let (m, _) = parse_message(&read("TC_INVUT_V.dat"), &Limits::default()).unwrap();
    let rej = validate_request(m.as_request().unwrap()).unwrap_err();
    assert_eq!(
        rej.extra_headers,
        vec![("Accept".to_string(), "application/sdp".to_string())]
    );
    // 3.3.1: the 400 names the missing headers.
    let (m, _) = parse_message(&read("TC_INSUF_I.dat"), &Limits::default()).unwrap();
    let rej = validate_request(m.as_request().unwrap()).unwrap_err();
    assert_eq!(
        rej.reason,
        "Missing Required Header Fields: To, From, Call-ID, Max-Forwards"
    );
    // 3.4.1: RFC 2543 peers are accepted when the policy allows it.
    let compat = ValidationPolicy {
        allow_missing_max_forwards: true,
        ..Default::default()
    };
    assert_eq!(
        judge_with(&read("TC_INV2543_I.dat"), &compat),
        Outcome::Accepted
    );
    // 3.3.11: Max-Forwards 0 is 483 for a forwarding element.
    let proxy = ValidationPolicy {
        forwarding: true,
        ..Default::default()
    };
    assert_eq!(
        judge_with(&read("TC_ZEROMF_V.dat"), &proxy).status(),
        Some(483)
    );
    // 3.3.10: the broadcast Via parses as an IPv4 address.
    let (m, _) = parse_message(&read("TC_BCAST_V.dat"), &Limits::default()).unwrap();
    assert_eq!(
        m.headers().via().unwrap()[1].host,
        Host::Ipv4([255, 255, 255, 255].into())
    );
    // 3.1.2.2: a parse error that still lets us answer 400 with the Via copied.
    let e = parse_message(&read("TC_CLERR_I.dat"), &Limits::default()).unwrap_err();
    let resp = e
        .response_context()
        .unwrap()
        .to_response()
        .with_to_tag("x1");
    let text = String::from_utf8(resp.to_bytes()).unwrap();
    assert!(
        text.starts_with("SIP/2.0 400 Content-Length larger than the body"),
        "{text}"
    );
    assert!(text.contains("\r\nVia: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\r\n"));
    assert!(text.contains("\r\nTo: sip:j.user@example.com;tag=x1\r\n"));
}

const INVITE: &str = "INVITE sip:agent@voice.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: \"Voice Agent\" <sip:agent@voice.example.com>\r\n\
From: \"Caller\" <sip:+15551234567@carrier.example.net;user=phone>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@carrier.example.net\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15551234567@198.51.100.7:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Supported: timer, 100rel\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 116\r\n\
\r\n\
v=0\r\n\
o=- 2890844526 2890844526 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 101\r\n";

#[test]
fn invite_with_sdp_round_trips() {
    assert_eq!(INVITE.split("\r\n\r\n").nth(1).unwrap().len(), 116);
    let (m, used) = parse_message(INVITE.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(used, INVITE.len());
    let r = m.as_request().unwrap();
    assert_eq!(validate_request(r), Ok(()));
    assert_eq!(r.headers.allow().unwrap().len(), 5);
    assert_eq!(r.headers.supported().unwrap(), vec!["timer", "100rel"]);
    let bytes = m.to_bytes();
    assert_eq!(
        bytes,
        INVITE.as_bytes(),
        "canonical input serializes byte for byte"
    );
    let (again, _) = parse_message(&bytes, &Limits::default()).unwrap();
    assert_eq!(again, m);

    let ok = response_to(r, 200, "OK").with_to_tag("as9f2");
    let (resp, _) = parse_message(&ok.to_bytes(), &Limits::default()).unwrap();
    let resp = resp.as_response().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers.to_addr().unwrap().tag(), Some("as9f2"));
    assert_eq!(
        resp.headers.top_via().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(resp.headers.cseq().unwrap().method, Method::Invite);
}

#[test]
fn compact_forms() {
    let msg = "INVITE sip:agent@voice.example.com SIP/2.0\r\n\
v: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKc1\r\n\
Max-Forwards: 70\r\n\
f: <sip:a@example.net>;tag=f1\r\n\
t: <sip:agent@voice.example.com>\r\n\
i: compact@example.net\r\n\
CSeq: 2 INVITE\r\n\
m: <sip:a@192.0.2.9;transport=tcp>\r\n\
k: timer\r\n\
s: hello\r\n\
o: refer\r\n\
r: <sip:transfer@example.net>\r\n\
x: 1800;refresher=uac\r\n\
u: talk\r\n\
e: identity\r\n\
c: application/sdp\r\n\
l: 3\r\n\
\r\nv=0";
    let (m, _) = parse_message(msg.as_bytes(), &Limits::default()).unwrap();
    let h = m.headers();
    assert_eq!(h.top_via().unwrap().transport, Transport::Tcp);
    assert_eq!(h.from_addr().unwrap().tag(), Some("f1"));
    assert_eq!(h.call_id().unwrap(), "compact@example.net");
    assert!(matches!(h.contact().unwrap(), Some(Contacts::List(l)) if l.len() == 1));
    assert_eq!(h.supported().unwrap(), vec!["timer"]);
    assert_eq!(h.get("Subject"), Some("hello"));
    assert_eq!(h.get("Event"), Some("refer"));
    assert_eq!(h.get("Refer-To"), Some("<sip:transfer@example.net>"));
    assert_eq!(h.get("Session-Expires"), Some("1800;refresher=uac"));
    assert_eq!(h.get("Allow-Events"), Some("talk"));
    assert_eq!(h.get("Content-Encoding"), Some("identity"));
    assert!(h.content_type().unwrap().unwrap().is("application", "sdp"));
    assert_eq!(h.content_length().unwrap(), Some(3));
    assert_eq!(validate_request(m.as_request().unwrap()), Ok(()));
    let text = String::from_utf8(m.to_bytes()).unwrap();
    for full in [
        "\r\nVia: ",
        "\r\nFrom: ",
        "\r\nTo: ",
        "\r\nCall-ID: ",
        "\r\nContact: ",
        "\r\nSupported: ",
        "\r\nSubject: ",
        "\r\nEvent: ",
        "\r\nRefer-To: ",
        "\r\nSession-Expires: ",
        "\r\nAllow-Events: ",
        "\r\nContent-Encoding: ",
        "\r\nContent-Type: ",
        "\r\nContent-Length: 3\r\n",
    ] {
        assert!(text.contains(full), "missing {full:?} in {text}");
    }
    let (again, _) = parse_message(text.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn folded_headers() {
    let msg = "OPTIONS sip:agent@voice.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.9\r\n  ;branch=z9hG4bKf1,\r\n\tSIP/2.0/UDP 192.0.2.10;branch=z9hG4bKf2\r\n\
Max-Forwards:\r\n 70\r\n\
From: \"Folded\r\n Name\" <sip:a@example.net>;tag=f1\r\n\
To: <sip:agent@voice.example.com>\r\n\
Call-ID: fold@example.net\r\n\
CSeq: 7\r\n OPTIONS\r\n\
Subject: first\r\n   second\r\n\t third\r\n\
Content-Length: 0\r\n\r\n";
    let (m, _) = parse_message(msg.as_bytes(), &Limits::default()).unwrap();
    let h = m.headers();
    let vias = h.via().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].branch(), Some("z9hG4bKf1"));
    assert_eq!(h.max_forwards().unwrap(), Some(70));
    assert_eq!(
        h.from_addr().unwrap().display_name.as_deref(),
        Some("Folded Name")
    );
    assert_eq!(h.cseq().unwrap().seq, 7);
    assert_eq!(h.get("Subject"), Some("first second third"));
    assert_eq!(validate_request(m.as_request().unwrap()), Ok(()));
    // A continuation line before any header is malformed.
    let bad = "OPTIONS sip:a@b SIP/2.0\r\n continued: x\r\n\r\n";
    assert!(matches!(
        parse_message(bad.as_bytes(), &Limits::default())
            .unwrap_err()
            .kind(),
        ParseErrorKind::InvalidHeaderLine(_)
    ));
}

fn drain(f: &mut StreamFramer) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(m) = f.next_message().expect("framing") {
        out.push(m);
    }
    out
}

#[test]
fn tcp_framer_two_messages_in_one_push_and_split_pushes() {
    let options = INVITE.replace("INVITE", "OPTIONS").replace(
        "Content-Type: application/sdp\r\nContent-Length: 116\r\n\r\n",
        "Content-Length: 0\r\n\r\n",
    );
    let options = &options[..options.find("\r\n\r\n").unwrap() + 4];
    let mut stream = INVITE.as_bytes().to_vec();
    stream.extend_from_slice(options.as_bytes());

    let mut f = StreamFramer::new(Limits::default());
    f.push(&stream);
    let msgs = drain(&mut f);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].as_request().unwrap().method, Method::Invite);
    assert_eq!(msgs[0].body().len(), 116);
    assert_eq!(msgs[1].as_request().unwrap().method, Method::Options);
    assert_eq!(f.buffered(), 0);

    // Byte by byte, and in uneven chunks: same messages.
    for chunk in [1usize, 7, 100, 333] {
        let mut f = StreamFramer::new(Limits::default());
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            f.push(piece);
            got.extend(drain(&mut f));
        }
        assert_eq!(got, msgs, "chunk size {chunk}");
    }

    // A malformed message with sound framing is skipped, the stream goes on.
    let bad = options.replace("CSeq: 314159 OPTIONS", "CSeq: x OPTIONS");
    let mut f = StreamFramer::new(Limits::default());
    f.push(bad.as_bytes());
    f.push(options.as_bytes());
    let e = f.next_message().unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(e.response_context().unwrap().status, 400);
    assert_eq!(drain(&mut f).len(), 1);

    // No Content-Length on a stream: fatal.
    let mut f = StreamFramer::new(Limits::default());
    f.push(options.replace("Content-Length: 0\r\n", "").as_bytes());
    let e = f.next_message().unwrap_err();
    assert_eq!(e.kind(), &ParseErrorKind::MissingContentLength);
    assert!(e.is_fatal() && f.is_failed());
}

#[test]
fn crlf_keepalives() {
    let options = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKk\r\nMax-Forwards: 70\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: k1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"\r\n\r\n");
    assert!(f.next_message().unwrap().is_none());
    assert_eq!(f.take_pings(), 1);
    f.push(b"\r\n\r\n\r\n");
    assert!(f.next_message().unwrap().is_none());
    f.push(b"\r\n");
    assert!(f.next_message().unwrap().is_none());
    assert_eq!(f.take_pings(), 2);
    assert_eq!(f.take_pings(), 0);
    // A single CRLF (a pong) before a message is skipped.
    f.push(b"\r\n");
    f.push(options.as_bytes());
    f.push(b"\r\n\r\n");
    f.push(options.as_bytes());
    let msgs = drain(&mut f);
    assert_eq!(msgs.len(), 2);
    assert_eq!(f.take_pings(), 1);
    // Datagram keep-alives are "empty", never an error worth answering.
    let e = parse_message(b"\r\n\r\n", &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), &ParseErrorKind::Empty);
    assert!(e.response_context().is_none());
}

#[test]
fn oversize_messages() {
    let mut big = INVITE.replace("Content-Length: 116", "Content-Length: 70116");
    big.push_str(&"a".repeat(70_000));
    let e = parse_message(big.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(e.kind(), ParseErrorKind::MessageTooLarge { .. }));
    let ctx = e
        .response_context()
        .expect("the head is intact, so 513 can be sent");
    assert_eq!(
        (ctx.status, ctx.reason.as_str()),
        (513, "Message Too Large")
    );

    // Stream: the declared length alone is enough to refuse, fatally.
    let mut f = StreamFramer::new(Limits::default());
    f.push(
        INVITE
            .replace("Content-Length: 116", "Content-Length: 99999999")
            .as_bytes(),
    );
    let e = f.next_message().unwrap_err();
    assert!(e.is_fatal());
    assert!(matches!(e.kind(), ParseErrorKind::BodyTooLarge { .. }));

    // Stream: an endless head.
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
    for _ in 0..10_000 {
        f.push(b"X-Filler: 0123456789\r\n");
    }
    let e = f.next_message().unwrap_err();
    assert!(matches!(e.kind(), ParseErrorKind::MessageTooLarge { .. }) && e.is_fatal());

    // Too many headers.
    let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let e = parse_message(many.as_bytes(), &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), &ParseErrorKind::TooManyHeaders { limit: 128 });

    // A long header line.
    let long = INVITE.replace(
        "Call-ID: a84b",
        &format!("Call-ID: {}a84b", "x".repeat(9000)),
    );
    let e = parse_message(long.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(e.kind(), ParseErrorKind::HeaderLineTooLong { .. }));
}

/// xorshift64*: a tiny deterministic PRNG (no rand crate).
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

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"%",
    b"%0",
    b"=",
    b"@",
    b"[",
    b"]",
    b"?",
    b"&",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\r\n ",
    b"\r\n\r\n",
    b"99999999999999999999999",
    b"-1",
    b"SIP/2.0",
    b"sip:",
    b"Content-Length: 5\r\n",
    b";;",
    b"l: 1\r\n",
    b"v: SIP/2.0/UDP [::1",
    b"\"\\",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = m.len();
        match rng.below(7) {
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
                let j = (i + 1 + rng.below(32)).min(len);
                m.drain(i..j);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(64)).min(len);
                let copy = m[i..j].to_vec();
                let at = rng.below(len + 1);
                m.splice(at..at, copy);
            }
            4 => m.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                // Swap the case of a byte (header names, methods).
                let i = rng.below(len);
                m[i] = if m[i].is_ascii_lowercase() {
                    m[i].to_ascii_uppercase()
                } else {
                    m[i].to_ascii_lowercase()
                };
            }
            _ => {
                let i = rng.below(len + 1);
                let b = [b' ', b'\r', b'\n', b'\t'][rng.below(4)];
                m.insert(i, b);
            }
        }
    }
    m
}

#[test]
fn fuzz_mutations_never_panic() {
    let mut seeds: Vec<Vec<u8>> = rows().iter().map(|r| read(&r.file)).collect();
    seeds.push(INVITE.as_bytes().to_vec());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = Limits::default();
    let (mut parsed, mut failed) = (0usize, 0usize);
    for round in 0..10_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        match parse_message(&input, &limits) {
            Ok((m, used)) => {
                parsed += 1;
                assert!(used <= input.len());
                if let Message::Request(r) = &m {
                    if let Err(rej) = validate_request(r) {
                        assert!((400..600).contains(&rej.status), "round {round}: {rej:?}");
                        let resp = rej.to_response(r).with_to_tag("t");
                        parse_message(&resp.to_bytes(), &limits).unwrap_or_else(|e| {
                            panic!("round {round}: our own rejection does not parse: {e}")
                        });
                    }
                }
                // What we write, we read back identically, except that
                // Content-Length is rewritten (added, corrected, deduplicated).
                let out = m.to_bytes();
                let (mut back, _) = parse_message(&out, &limits).unwrap_or_else(|e| {
                    panic!(
                        "round {round}: re-parse failed: {e}\n{}",
                        String::from_utf8_lossy(&out)
                    )
                });
                assert_eq!(back.headers().count("Content-Length"), 1);
                let mut orig = m.clone();
                orig.headers_mut().remove("Content-Length");
                back.headers_mut().remove("Content-Length");
                assert_eq!(back, orig, "round {round}: round trip changed the message");
            }
            Err(e) => {
                failed += 1;
                if let Some(ctx) = e.response_context() {
                    assert!(ctx.status == 400 || ctx.status == 513);
                    assert!(!ctx.reason.is_empty());
                    let resp = ctx.to_response().to_bytes();
                    // Our error response is well-formed at the line level;
                    // only the header values copied verbatim from the
                    // broken request may be invalid.
                    if let Err(e2) = parse_message(&resp, &limits) {
                        assert!(
                            matches!(
                                e2.kind(),
                                ParseErrorKind::InvalidHeader(_)
                                    | ParseErrorKind::TooManyVias { .. }
                                    | ParseErrorKind::TooManyHeaders { .. }
                            ),
                            "round {round}: error response is malformed: {e2}\n{}",
                            String::from_utf8_lossy(&resp)
                        );
                    }
                }
            }
        }
        // The same bytes through the stream framer in random chunks.
        let mut f = StreamFramer::new(limits);
        let mut rest = &input[..];
        let mut steps = 0;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(512));
            f.push(&rest[..n]);
            rest = &rest[n..];
            loop {
                steps += 1;
                assert!(
                    steps < 100_000,
                    "round {round}: framer does not make progress"
                );
                match f.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => break,
                    Err(_) => {}
                }
            }
            if f.is_failed() {
                break;
            }
        }
    }
    println!("fuzz: 10000 mutations, {parsed} parsed, {failed} rejected, no panic");
}

#[test]
fn request_built_in_code_serializes() {
    let mut r = Request::new(
        Method::Options,
        Uri::parse("sip:agent@voice.example.com").unwrap(),
    );
    r.headers
        .push("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKcode");
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", "<sip:edge@voice.example.com>;tag=e1");
    r.headers.push("To", "<sip:agent@voice.example.com>");
    r.headers.push("Call-ID", "code1");
    r.headers.push("CSeq", "1 OPTIONS");
    let bytes = r.to_bytes();
    assert!(bytes.ends_with(b"Content-Length: 0\r\n\r\n"));
    let (m, _) = parse_message(&bytes, &Limits::default()).unwrap();
    assert_eq!(validate_request(m.as_request().unwrap()), Ok(()));
}

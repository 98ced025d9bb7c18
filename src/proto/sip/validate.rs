//! Request validation a UAS performs above the parser (RFC 3261 §8.2), in
//! the RFC's order, each failure turned into the status code, reason phrase
//! and extra headers of the response:
//!
//! | check | status |
//! |---|---|
//! | SIP-Version other than 2.0 (RFC 4475 §3.1.2.16) | 505 |
//! | missing Via, To, From, Call-ID, CSeq or Max-Forwards (§8.1.1; RFC 4475 §3.3.1) | 400, naming them |
//! | more than one To, From, Call-ID, CSeq, Max-Forwards, Content-Length or Content-Type (RFC 4475 §3.3.8, §3.3.9) | 400, naming them |
//! | malformed Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Content-Length, Content-Type, Require, Accept, Date (RFC 4475 §3.1.2.12) | 400, naming the header and fault |
//! | CSeq method differs from the request method (§8.1.1.5; RFC 4475 §3.1.2.17-18) | 400 |
//! | Content-Length differs from the body length (§18.3; RFC 4475 §3.1.2.2) | 400 |
//! | Request-URI scheme not sip, sips or tel (§8.2.2.1; RFC 4475 §3.3.2-3) | 416 |
//! | Request-URI with headers (§19.1.1 table 1; RFC 4475 §3.1.2.11) | 400 |
//! | Max-Forwards 0, only when the element would forward (§16.3 item 2) | 483 |
//! | Require with option-tags we do not support, except in ACK/CANCEL (§8.2.2.3; RFC 4475 §3.3.5) | 420 + `Unsupported` |
//! | body without Content-Type (§20.15) | 400 |
//! | Content-Encoding other than identity (§8.2.3) | 415 + `Accept-Encoding: identity` |
//! | INVITE / UPDATE / PRACK body not application/sdp (§8.2.3; RFC 4475 §3.3.6) | 415 + `Accept: application/sdp` |
//! | INVITE whose Accept excludes application/sdp (§8.2.3; RFC 4475 §3.3.15) | 406 |
//!
//! Choices (see [`ValidationPolicy`]): we are a UAS and the Request-URI is
//! us, so Max-Forwards 0 is accepted (RFC 4475 §3.3.11: the request has
//! arrived; 483 is a forwarding element's answer) unless
//! `forwarding` is set. No option-tag is supported by default (so `Require:
//! 100rel` or `Require: timer` get 420) until the dialog layer implements
//! RFC 3262 / RFC 4028 and lists them. Missing Max-Forwards is a 400 by
//! default; `allow_missing_max_forwards` accepts RFC 2543 peers (RFC 4475
//! §3.4.1). Method support (405 / 501 with Allow) is the UA core's call and
//! is not judged here. Proxy-Require is for proxies and is ignored by a UAS.
//! An ACK is never answered (§17): a rejection of an ACK means "drop
//! it".

use std::fmt;

use super::message::{Method, Request, Response, Version};
use super::serialize::response_to;
use super::syntax::reason_phrase;
use super::typed::{check_date, HeaderError};
use super::uri::Uri;

/// Why a request is refused, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    /// Headers the response must carry (Unsupported, Accept, ...).
    pub extra_headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
            extra_headers: Vec::new(),
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.to_string(), value.into()));
        self
    }

    /// The response to `req` (§8.2.6) with the extra headers; add a To tag
    /// with [`Response::with_to_tag`].
    pub fn to_response(&self, req: &Request) -> Response {
        let mut r = response_to(req, self.status, &self.reason);
        for (n, v) in &self.extra_headers {
            r.headers.push(n.clone(), v.clone());
        }
        r
    }
}

/// What this element accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationPolicy {
    /// Option-tags we implement (compared case-insensitively). Default: none.
    pub supported: Vec<String>,
    /// Request-URI schemes we serve. Default: sip, sips, tel.
    pub uri_schemes: Vec<String>,
    /// Body types accepted in INVITE / UPDATE / PRACK. Default:
    /// application/sdp.
    pub body_types: Vec<(String, String)>,
    /// Accept requests without Max-Forwards (RFC 2543 peers). Default false.
    pub allow_missing_max_forwards: bool,
    /// This element forwards requests (proxy role): Max-Forwards 0 is 483.
    /// Default false (UAS).
    pub forwarding: bool,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        ValidationPolicy {
            supported: Vec::new(),
            uri_schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            body_types: vec![("application".into(), "sdp".into())],
            allow_missing_max_forwards: false,
            forwarding: false,
        }
    }
}

fn list_reason(prefix: &str, names: &[&str]) -> String {
    format!(
        "{prefix}{}: {}",
        if names.len() > 1 { "s" } else { "" },
        names.join(", ")
    )
}

fn bad_header(e: HeaderError) -> Rejection {
    Rejection::new(400, reason_phrase(&e.to_string()))
}

struct ListFmt<'a>(&'a [String]);

impl fmt::Display for ListFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// [`validate_request_with`] under [`ValidationPolicy::default`].
pub fn validate_request(req: &Request) -> Result<(), Rejection> {
    validate_request_with(req, &ValidationPolicy::default())
}

/// Checks `req` as a UAS would before acting on it; see the module docs
/// for the checks and status codes.
pub fn validate_request_with(req: &Request, policy: &ValidationPolicy) -> Result<(), Rejection> {
    let h = &req.headers;
    if req.version != Version::SIP_2_0 {
        return Err(Rejection::new(505, "Version Not Supported"));
    }

    let mut mandatory = vec!["Via", "To", "From", "Call-ID", "CSeq"];
    if !policy.allow_missing_max_forwards {
        mandatory.push("Max-Forwards");
    }
    let missing: Vec<&str> = mandatory.into_iter().filter(|n| !h.contains(n)).collect();
    if !missing.is_empty() {
        return Err(Rejection::new(
            400,
            list_reason("Missing Required Header Field", &missing),
        ));
    }
    let repeated: Vec<&str> = [
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
    ]
    .into_iter()
    .filter(|n| h.count(n) > 1)
    .collect();
    if !repeated.is_empty() {
        return Err(Rejection::new(
            400,
            list_reason("Multiple Values in Single-Value Header Field", &repeated),
        ));
    }

    h.via().map_err(bad_header)?;
    h.from_addr().map_err(bad_header)?;
    h.to_addr().map_err(bad_header)?;
    h.call_id().map_err(bad_header)?;
    let cseq = h.cseq().map_err(bad_header)?;
    let max_forwards = h.max_forwards().map_err(bad_header)?;
    h.contact().map_err(bad_header)?;
    let content_length = h.content_length().map_err(bad_header)?;
    let content_type = h.content_type().map_err(bad_header)?;
    let require = h.require().map_err(bad_header)?;
    let accept = h.accept().map_err(bad_header)?;
    for d in h.get_all("Date") {
        check_date(d).map_err(bad_header)?;
    }

    if cseq.method != req.method {
        return Err(Rejection::new(
            400,
            "CSeq Method Does Not Match Request Method",
        ));
    }
    if let Some(n) = content_length {
        if n > req.body.len() {
            return Err(Rejection::new(400, "Content-Length Larger Than Body"));
        }
        if n < req.body.len() {
            return Err(Rejection::new(400, "Content-Length Smaller Than Body"));
        }
    }

    let scheme = req.uri.scheme();
    if !policy
        .uri_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }
    if let Uri::Sip(u) = &req.uri {
        if !u.headers.is_empty() {
            return Err(Rejection::new(400, "Request-URI Must Not Contain Headers"));
        }
    }

    if policy.forwarding && max_forwards == Some(0) {
        return Err(Rejection::new(483, "Too Many Hops"));
    }

    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unknown: Vec<String> = require
            .into_iter()
            .filter(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unknown.is_empty() {
            let list = ListFmt(&unknown).to_string();
            return Err(Rejection::new(420, "Bad Extension").with("Unsupported", list));
        }
    }

    if !req.body.is_empty() {
        let Some(ct) = content_type else {
            return Err(Rejection::new(400, "Missing Content-Type"));
        };
        let encodings = h.values("Content-Encoding");
        if encodings
            .iter()
            .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
        {
            return Err(
                Rejection::new(415, "Unsupported Media Type").with("Accept-Encoding", "identity")
            );
        }
        if matches!(req.method, Method::Invite | Method::Update | Method::Prack)
            && !policy.body_types.iter().any(|(t, s)| ct.is(t, s))
        {
            let accept_list: Vec<String> = policy
                .body_types
                .iter()
                .map(|(t, s)| format!("{t}/{s}"))
                .collect();
            return Err(Rejection::new(415, "Unsupported Media Type")
                .with("Accept", ListFmt(&accept_list).to_string()));
        }
    }

    if req.method == Method::Invite {
        if let Some(ranges) = accept {
            let ok = policy
                .body_types
                .iter()
                .any(|(t, s)| ranges.iter().any(|r| r.admits(t, s)));
            if !ok {
                return Err(Rejection::new(406, "Not Acceptable"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sip::parse::{parse_message, Limits};

    fn req(text: &str) -> Request {
        let (m, _) = parse_message(text.as_bytes(), &Limits::default()).unwrap();
        m.as_request().unwrap().clone()
    }

    const BASE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0";

    #[test]
    fn accepts_a_plain_invite() {
        assert_eq!(validate_request(&req(BASE)), Ok(()));
    }

    #[test]
    fn rejections() {
        let r =
            validate_request(&req(&BASE.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia"))).unwrap_err();
        assert_eq!(r.status, 505);
        let r = validate_request(&req(&BASE.replace("Call-ID: c1\r\n", ""))).unwrap_err();
        assert_eq!(
            (r.status, r.reason.as_str()),
            (400, "Missing Required Header Field: Call-ID")
        );
        let r = validate_request(&req(&BASE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"))).unwrap_err();
        assert_eq!(r.status, 400);
        let r = validate_request(&req(
            &BASE.replace("sip:bob@example.com SIP", "im:bob@example.com SIP")
        ))
        .unwrap_err();
        assert_eq!(r.status, 416);
        let r = validate_request(&req(&BASE.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: 100rel, foo\r\n",
        )))
        .unwrap_err();
        assert_eq!(r.status, 420);
        assert_eq!(
            r.extra_headers,
            vec![("Unsupported".into(), "100rel, foo".into())]
        );
        let policy = ValidationPolicy {
            supported: vec!["100rel".into(), "foo".into()],
            ..Default::default()
        };
        assert_eq!(
            validate_request_with(
                &req(&BASE.replace(
                    "Max-Forwards: 70\r\n",
                    "Max-Forwards: 70\r\nRequire: 100rel, foo\r\n"
                )),
                &policy
            ),
            Ok(())
        );
        let r = validate_request(&req(&BASE.replace("application/sdp", "text/plain"))).unwrap_err();
        assert_eq!(r.status, 415);
        assert_eq!(
            r.extra_headers,
            vec![("Accept".into(), "application/sdp".into())]
        );
        let r = validate_request(&req(&BASE.replace(
            "Content-Type: application/sdp\r\n",
            "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
        )))
        .unwrap_err();
        assert_eq!(r.status, 415);
        let r = validate_request(&req(&BASE.replace("Content-Type: application/sdp\r\n", "")))
            .unwrap_err();
        assert_eq!((r.status, r.reason.as_str()), (400, "Missing Content-Type"));
        let r = validate_request(&req(&BASE.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nAccept: text/html\r\n",
        )))
        .unwrap_err();
        assert_eq!(r.status, 406);
        assert_eq!(
            validate_request(&req(&BASE.replace(
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nAccept: application/*\r\n"
            ))),
            Ok(())
        );
        let zero = req(&BASE.replace("Max-Forwards: 70", "Max-Forwards: 0"));
        assert_eq!(validate_request(&zero), Ok(()));
        let proxy = ValidationPolicy {
            forwarding: true,
            ..Default::default()
        };
        assert_eq!(
            validate_request_with(&zero, &proxy).unwrap_err().status,
            483
        );
        let r = validate_request(&req(&BASE.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nDate: Fri, 01 Jan 2010 16:00:00 EST\r\n",
        )))
        .unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("Date"), "{}", r.reason);
        let mut short = req(BASE);
        short.body.pop();
        assert_eq!(
            validate_request(&short).unwrap_err().reason,
            "Content-Length Larger Than Body"
        );
        let resp = validate_request(&req(
            &BASE.replace("Call-ID: c1\r\n", "Call-ID: c1\r\ni: c2\r\n")
        ))
        .unwrap_err();
        assert_eq!(
            resp.reason,
            "Multiple Values in Single-Value Header Field: Call-ID"
        );
    }

    #[test]
    fn rejection_response() {
        let r = req(&BASE.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: foo\r\n",
        ));
        let rej = validate_request(&r).unwrap_err();
        let resp = rej.to_response(&r).with_to_tag("t1");
        assert_eq!(resp.status, 420);
        assert_eq!(resp.headers.get("Unsupported"), Some("foo"));
        assert_eq!(resp.headers.to_addr().unwrap().tag(), Some("t1"));
    }
}

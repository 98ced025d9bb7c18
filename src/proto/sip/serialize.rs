//! Writing SIP messages (RFC 3261 §7) and building responses to requests
//! (§8.2.6).
//!
//! Output is canonical: full header names (never compact forms, §7.3.3),
//! `": "` between name and value, CRLF line ends, and a Content-Length that
//! always equals the body length (the first Content-Length line is rewritten
//! in place, others dropped, one appended if none). CR or LF inside a name,
//! value or reason phrase (only possible in programmatically built messages)
//! is written as a space, so no caller can inject header lines.
//!
//! [`response_to`] copies Via (all, in order), From, To, Call-ID and CSeq
//! from the request (§8.2.6.2), and Timestamp for a 100 (§8.2.6.1). The To
//! tag a UAS must add to non-100 responses (§8.2.6.2) is added with
//! [`Response::with_to_tag`]; the tag comes from the caller's injected
//! randomness. Record-Route and Contact for dialog-creating responses
//! (§12.1.1) belong to the dialog layer.

use super::headers::{full_name, Headers};
use super::message::{Message, Request, Response};
use super::syntax::sanitize_line;
use super::typed::NameAddr;

fn push_clean(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}

fn write_headers(out: &mut Vec<u8>, headers: &Headers, body_len: usize) {
    let mut wrote_length = false;
    for h in headers.iter() {
        let name = full_name(&h.name);
        if name == "Content-Length" {
            if wrote_length {
                continue;
            }
            wrote_length = true;
            out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
            continue;
        }
        push_clean(out, &name);
        out.extend_from_slice(b": ");
        push_clean(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

impl Request {
    /// The request as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        push_clean(&mut out, &self.uri.to_string());
        out.push(b' ');
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers(&mut out, &self.headers, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    /// The response as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("{} {:03} ", self.version, self.status).as_bytes());
        push_clean(&mut out, &self.reason);
        out.extend_from_slice(b"\r\n");
        write_headers(&mut out, &self.headers, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    /// Adds `;tag=<tag>` to the To header unless it already carries a tag
    /// (§8.2.6.2). The To value is otherwise kept exactly as received. A
    /// To that does not parse is left alone.
    pub fn with_to_tag(mut self, tag: &str) -> Self {
        self.set_to_tag(tag);
        self
    }

    /// In-place form of [`Response::with_to_tag`]; returns whether a tag was
    /// added.
    pub fn set_to_tag(&mut self, tag: &str) -> bool {
        let Some(to) = self.headers.get("To") else {
            return false;
        };
        match NameAddr::parse(to) {
            Ok(n) if n.tag().is_none() => {
                let value = format!("{};tag={}", to.trim_end(), tag);
                self.headers.set("To", value);
                true
            }
            _ => false,
        }
    }

    /// Appends a header line.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body and its Content-Type.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.set("Content-Type", content_type);
        self.body = body;
        self
    }
}

impl Message {
    /// The message as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// A response to `req` carrying the headers RFC 3261 §8.2.6 requires. Only
/// the first From, To, Call-ID and CSeq are copied; every Via line is.
pub fn response_to(req: &Request, status: u16, reason: &str) -> Response {
    let mut r = Response::new(status, sanitize_line(reason, 200));
    for h in req.headers.iter().filter(|h| h.is("Via")) {
        // Each Via line as received; list members stay together.
        r.headers.push("Via", h.value.clone());
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(name) {
            r.headers.push(name, v);
        }
    }
    if status == 100 {
        if let Some(ts) = req.headers.get("Timestamp") {
            r.headers.push("Timestamp", ts);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::message::Method;
    use super::super::uri::Uri;
    use super::*;

    fn invite() -> Request {
        let mut r = Request::new(
            Method::Invite,
            Uri::parse("sip:bob@biloxi.example.com").unwrap(),
        );
        r.headers.push(
            "v",
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
        );
        r.headers.push("Via", "SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP p2.example.com;branch=z9hG4bK2");
        r.headers.push("Max-Forwards", "70");
        r.headers.push("To", "Bob <sip:bob@biloxi.example.com>");
        r.headers
            .push("f", "Alice <sip:alice@atlanta.example.com>;tag=1928301774");
        r.headers.push("i", "a84b4c76e66710");
        r.headers.push("CSeq", "314159 INVITE");
        r.headers.push("Timestamp", "54");
        r.headers.push("l", "999");
        r.headers.push("Content-Length", "3");
        r.body = b"v=0".to_vec();
        r
    }

    #[test]
    fn canonical_output() {
        let bytes = invite().to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33")
        );
        assert!(text.contains("\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"));
        assert!(text.contains("\r\nCall-ID: a84b4c76e66710\r\n"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.ends_with("\r\nContent-Length: 3\r\n\r\nv=0"));
    }

    #[test]
    fn response_to_copies_the_right_headers() {
        let req = invite();
        let r = response_to(&req, 180, "Ringing").with_to_tag("a6c85cf");
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(
            r.headers.get("To"),
            Some("Bob <sip:bob@biloxi.example.com>;tag=a6c85cf")
        );
        assert_eq!(
            r.headers.get_all("Via").nth(1),
            req.headers.get_all("Via").nth(1)
        );
        assert_eq!(r.headers.cseq().unwrap().seq, 314159);
        // An existing tag is kept.
        let again = r.clone().with_to_tag("other");
        assert_eq!(again.headers.get("To"), r.headers.get("To"));
        // Timestamp only on 100.
        assert!(!r.headers.contains("Timestamp"));
        assert_eq!(
            response_to(&req, 100, "Trying").headers.get("Timestamp"),
            Some("54")
        );
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 180 Ringing\r\nVia: "));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn no_header_injection() {
        let mut r = Response::new(200, "OK\r\nX-Evil: 1");
        r.headers.push("X-A", "a\r\nX-Evil: 2");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(!text.contains("\r\nX-Evil"));
        let ok = response_to(&invite(), 400, "Bad\r\nRequest");
        assert_eq!(ok.reason, "Bad  Request");
    }
}

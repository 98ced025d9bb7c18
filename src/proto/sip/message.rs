//! SIP message types (RFC 3261 §7): requests, responses, methods and the
//! protocol version.
//!
//! Methods are case-sensitive tokens (§7.1): `INVITE` is [`Method::Invite`],
//! `invite` or `NEWMETHOD` are [`Method::Extension`]. Messages own their
//! header list and body; typed header views live in [`super::typed`],
//! parsing in [`super::parse`], serialization in [`super::serialize`].

use std::fmt;

use super::headers::Headers;
use super::syntax::is_token;
use super::uri::Uri;

/// A request method (RFC 3261 §7.1, RFC 3262 PRACK, RFC 3311 UPDATE,
/// RFC 3515 REFER, RFC 6665 SUBSCRIBE/NOTIFY, RFC 3428 MESSAGE, RFC 6086
/// INFO) or any other token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Refer,
    Notify,
    Prack,
    Update,
    Subscribe,
    Message,
    /// Any other token, as written.
    Extension(String),
}

impl Method {
    /// Parses a method token (case-sensitive); `None` if `s` is not a token.
    pub fn from_token(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            _ if is_token(s) => Method::Extension(s.to_string()),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SIP/major.minor` (RFC 3261 §7.1). Only 2.0 is supported; others parse
/// so that the element can answer 505 (RFC 4475 §3.1.2.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl Version {
    pub const SIP_2_0: Version = Version { major: 2, minor: 0 };

    /// Parses `"SIP" "/" 1*DIGIT "." 1*DIGIT` ("SIP" case-insensitive).
    pub fn parse(s: &str) -> Option<Version> {
        let b = s.as_bytes();
        if b.len() < 4 || !b[..4].eq_ignore_ascii_case(b"SIP/") {
            return None;
        }
        let (maj, min) = s[4..].split_once('.')?;
        let num = |t: &str| -> Option<u16> {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        Some(Version {
            major: num(maj)?,
            minor: num(min)?,
        })
    }
}

impl Default for Version {
    fn default() -> Self {
        Version::SIP_2_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    /// 100..=699.
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Request {
    /// An empty SIP/2.0 request.
    pub fn new(method: Method, uri: Uri) -> Self {
        Request {
            method,
            uri,
            version: Version::SIP_2_0,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }
}

impl Response {
    /// An empty SIP/2.0 response.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Response {
            version: Version::SIP_2_0,
            status,
            reason: reason.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(Method::from_token("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::from_token("invite"),
            Some(Method::Extension("invite".into()))
        );
        assert_eq!(
            Method::from_token("RE%47IST%45R"),
            Some(Method::Extension("RE%47IST%45R".into()))
        );
        assert_eq!(Method::from_token("IN VITE"), None);
        assert_eq!(Method::from_token(""), None);
        assert_eq!(Method::Prack.to_string(), "PRACK");
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("SIP/2.0"), Some(Version::SIP_2_0));
        assert_eq!(
            Version::parse("sip/7.0"),
            Some(Version { major: 7, minor: 0 })
        );
        assert_eq!(Version::parse("SIP/2"), None);
        assert_eq!(Version::parse("SIP/2.0 "), None);
        assert_eq!(Version::parse("SIP/999999.0"), None);
        assert_eq!(Version::parse("HTTP/1.1"), None);
        assert_eq!(Version { major: 7, minor: 0 }.to_string(), "SIP/7.0");
    }
}

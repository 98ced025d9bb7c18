//! Browser session signalling in the shape of WHIP (RFC 9725): what the
//! node checks before it spends a peer connection on an offer, and the
//! names it gives sessions.
//!
//! Owns:
//! - [`check_offer`]: a WebRTC SDP offer (RFC 8866, RFC 8829 JSEP) is
//!   accepted only if it is text, starts with `v=0`, offers audio with Opus
//!   (RFC 7587), and carries ICE credentials (RFC 8839) and a DTLS
//!   fingerprint (RFC 8122). The reason for a refusal is the 400's body.
//! - [`check_origin`]: CORS for the signalling routes: the node's own page
//!   (same origin) always, other sites when configured, `*` for any; the
//!   page's origin names the call's site in its outcome records.
//! - [`SessionId`]: 128 random bits as 32 lowercase hex digits, the last
//!   segment of the session URL (`/webrtc/sessions/{id}`), unguessable so
//!   that only the page that created a session can end it.
//!
//! Sans-IO: no sockets, clocks or randomness (the caller supplies the
//! random bytes).

use std::fmt;

/// Longest SDP line accepted, in bytes.
const MAX_LINE: usize = 4096;
/// Most lines in an offer.
const MAX_LINES: usize = 2000;

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    #[error("the offer is empty")]
    Empty,
    #[error("the offer is not UTF-8 text")]
    NotText,
    #[error("the offer is not SDP: it must start with \"v=0\"")]
    NotSdp,
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    #[error("the offer has more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("the offer has no audio section (m=audio)")]
    NoAudio,
    #[error("the offer's audio section does not offer Opus (a=rtpmap:<pt> opus/48000/2)")]
    NoOpus,
    #[error("the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)")]
    NoIceCredentials,
    #[error("the offer has no DTLS fingerprint (a=fingerprint)")]
    NoFingerprint,
    #[error("origin {origin:?} is not allowed to open sessions on this node")]
    OriginNotAllowed { origin: String },
}

/// What an acceptable offer contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The payload type the browser gave Opus.
    pub opus_payload_type: u8,
    /// The offer opens an SCTP association for data channels.
    pub data_channel: bool,
    /// `m=` sections in the offer.
    pub media_sections: usize,
}

/// Checks a browser's SDP offer; the error says what is wrong.
pub fn check_offer(body: &[u8]) -> Result<OfferSummary, WhipError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(WhipError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| WhipError::NotText)?;
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if lines.len() >= MAX_LINES {
            return Err(WhipError::TooManyLines);
        }
        let n = i + 1;
        if line.len() > MAX_LINE {
            return Err(WhipError::BadLine { line: n, reason: "longer than 4096 bytes" });
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(WhipError::BadLine { line: n, reason: "control character" });
        }
        let b = line.as_bytes();
        if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
            return Err(WhipError::BadLine { line: n, reason: "not a <letter>=<value> line" });
        }
        lines.push(line);
    }
    if lines.first() != Some(&"v=0") {
        return Err(WhipError::NotSdp);
    }
    let (mut ufrag, mut pwd, mut fingerprint) = (false, false, false);
    let mut media_sections = 0;
    let mut in_audio = false;
    let mut audio = false;
    let mut opus = None;
    let mut data_channel = false;
    for line in &lines {
        if let Some(m) = line.strip_prefix("m=") {
            media_sections += 1;
            in_audio = m.starts_with("audio ");
            audio |= in_audio;
            if m.starts_with("application ") && m.contains("webrtc-datachannel") {
                data_channel = true;
            }
            continue;
        }
        ufrag |= line.starts_with("a=ice-ufrag:");
        pwd |= line.starts_with("a=ice-pwd:");
        fingerprint |= line.starts_with("a=fingerprint:");
        if in_audio && opus.is_none() {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let (pt, codec) = map.split_once(' ').unwrap_or((map, ""));
                if codec.to_ascii_lowercase().starts_with("opus/48000") {
                    opus = pt.parse::<u8>().ok().filter(|pt| *pt < 128);
                }
            }
        }
    }
    if !audio {
        return Err(WhipError::NoAudio);
    }
    let opus_payload_type = opus.ok_or(WhipError::NoOpus)?;
    if !(ufrag && pwd) {
        return Err(WhipError::NoIceCredentials);
    }
    if !fingerprint {
        return Err(WhipError::NoFingerprint);
    }
    Ok(OfferSummary { opus_payload_type, data_channel, media_sections })
}

/// Whether a page at `origin` may use the signalling routes of the node
/// reached as `host` (the request's Host header). Returns the site name for
/// the call's records: the origin, or `direct` for a request without one
/// (not from a browser page).
pub fn check_origin(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> Result<String, WhipError> {
    let Some(origin) = origin else { return Ok("direct".to_owned()) };
    let origin = origin.trim();
    let same = host.is_some_and(|h| origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h.trim())));
    let listed = allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
    if (same || listed) && origin != "null" && !origin.is_empty() {
        Ok(origin.to_owned())
    } else {
        Err(WhipError::OriginNotAllowed { origin: origin.to_owned() })
    }
}

/// A session's name in its URL and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// From 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> SessionId {
        SessionId(hex::encode(bytes))
    }

    /// Parses a URL segment: exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then(|| SessionId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The session's resource path.
    pub fn location(&self) -> String {
        format!("/webrtc/sessions/{}", self.0)
    }

    /// The call id in outcome records.
    pub fn call_id(&self) -> String {
        format!("webrtc-{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of what Chromium offers for one audio track and a data channel.
    pub(crate) const CHROMIUM_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Jt1Q\r\n\
a=ice-pwd:Cq2xS8d4vG0lBQfK3hA1bC9e\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 0C:5A:3B:D1:6E:7F:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Jt1Q\r\n\
a=ice-pwd:Cq2xS8d4vG0lBQfK3hA1bC9e\r\n\
a=fingerprint:sha-256 0C:5A:3B:D1:6E:7F:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sctp-port:5000\r\n";

    #[test]
    fn accepts_a_browser_offer() {
        let s = check_offer(CHROMIUM_OFFER.as_bytes()).unwrap();
        assert_eq!(s, OfferSummary { opus_payload_type: 111, data_channel: true, media_sections: 2 });
        // Bare LF line ends too.
        let lf = CHROMIUM_OFFER.replace("\r\n", "\n");
        assert_eq!(check_offer(lf.as_bytes()).unwrap().opus_payload_type, 111);
    }

    #[test]
    fn refusals_say_why() {
        let without = |needle: &str| CHROMIUM_OFFER.lines().filter(|l| !l.starts_with(needle)).collect::<Vec<_>>().join("\r\n");
        assert_eq!(check_offer(b""), Err(WhipError::Empty));
        assert_eq!(check_offer(b" \r\n"), Err(WhipError::Empty));
        assert_eq!(check_offer(&[0xff, 0xfe, b'v']), Err(WhipError::NotText));
        assert_eq!(check_offer(b"hello=1\r\n"), Err(WhipError::BadLine { line: 1, reason: "not a <letter>=<value> line" }));
        assert_eq!(check_offer(b"o=- 1 1 IN IP4 1.2.3.4\r\n"), Err(WhipError::NotSdp));
        assert_eq!(check_offer(b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"), Err(WhipError::NoAudio));
        assert_eq!(check_offer(without("a=rtpmap:111").as_bytes()), Err(WhipError::NoOpus));
        assert_eq!(check_offer(without("a=ice-pwd").as_bytes()), Err(WhipError::NoIceCredentials));
        assert_eq!(check_offer(without("a=fingerprint").as_bytes()), Err(WhipError::NoFingerprint));
        assert!(matches!(check_offer(b"v=0\r\na=x\x01y\r\n"), Err(WhipError::BadLine { line: 2, .. })));
        let long = format!("v=0\r\na={}\r\n", "x".repeat(5000));
        assert!(matches!(check_offer(long.as_bytes()), Err(WhipError::BadLine { line: 2, .. })));
        let many = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_LINES + 1));
        assert_eq!(check_offer(many.as_bytes()), Err(WhipError::TooManyLines));
        // Messages are readable sentences for the 400's body.
        assert!(WhipError::NoOpus.to_string().contains("Opus"));
    }

    #[test]
    fn origins_same_site_listed_or_any() {
        let none: Vec<String> = vec![];
        assert_eq!(check_origin(Some("http://127.0.0.1:8088"), Some("127.0.0.1:8088"), &none).unwrap(), "http://127.0.0.1:8088");
        assert!(check_origin(Some("https://evil.example"), Some("127.0.0.1:8088"), &none).is_err());
        assert!(check_origin(Some("null"), Some("127.0.0.1:8088"), &["*".into()]).is_err());
        let listed = vec!["https://shop.example".to_string()];
        assert_eq!(check_origin(Some("https://shop.example"), Some("edge:8088"), &listed).unwrap(), "https://shop.example");
        assert!(check_origin(Some("https://shop.example.evil"), Some("edge:8088"), &listed).is_err());
        assert!(check_origin(Some("https://x.example"), Some("edge:8088"), &["*".into()]).is_ok());
        assert_eq!(check_origin(None, Some("edge"), &none).unwrap(), "direct");
    }

    #[test]
    fn session_ids_round_trip_and_reject_garbage() {
        let id = SessionId::from_random([0xab; 16]);
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.location(), format!("/webrtc/sessions/{id}"));
        assert!(crate::outcome::event::validate_call_id(&id.call_id()).is_ok());
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"a".repeat(33), "../../etc/passwd"] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }
}

//! Parsing SIP messages from bytes (RFC 3261 §7, §18.3, §25), for datagrams
//! ([`parse_message`]) and for byte streams ([`StreamFramer`]).
//!
//! What the parser checks: the start line (§7.1, §7.2), header line syntax
//! with folding (§7.3.1), UTF-8 in header values, the syntax of every
//! header the transaction and dialog layers depend on (Via, From, To,
//! Call-ID, CSeq, Max-Forwards, Content-Length, Contact), the explicit
//! [`Limits`], and framing by Content-Length (§18.3, §20.14). Everything
//! else (missing or repeated headers, method/CSeq mismatch, schemes,
//! option-tags, media types) is judged above the parser by
//! [`super::validate`], because RFC 4475 §3.3 requires such messages to
//! parse. Scalars must fit: a CSeq above 2^32-1 or a Max-Forwards above 255
//! is a syntax error (RFC 4475 §3.1.2.4 lets an element ignore a bad
//! Max-Forwards instead; we answer 400).
//!
//! Framing rules:
//! - Datagrams: octets after `Content-Length` bytes of body are ignored
//!   (RFC 4475 §3.1.1.8); without Content-Length the body runs to the end of
//!   the datagram; a body shorter than Content-Length is an error that a
//!   UAS answers with 400 (§18.3). Conflicting Content-Length values are
//!   treated as absent here and rejected by validation (RFC 4475 §3.3.9).
//! - Streams: Content-Length is mandatory (§18.3); CRLFs before a start
//!   line are skipped (§7.5), and each double-CRLF is counted as an RFC 5626
//!   §3.5.1 keep-alive ping so the runtime can answer it with a CRLF pong.
//!   A framing error (no, bad or conflicting Content-Length, oversize) makes
//!   the stream unusable: the connection must be closed.
//!
//! Errors carry a [`ResponseContext`] when the failed message is a request
//! (not ACK) whose Request-Line names a method and a SIP version and whose
//! Via, From, To, Call-ID and CSeq header lines are present (copied
//! verbatim, even if one of them is the malformed part): the caller can then
//! answer 400 (or 513 for an exceeded limit) with a reason phrase naming the
//! problem, sending it to the datagram's source or down the same connection.
//! For an unparseable start line or a response there is no context: the
//! element drops the message.

use super::headers::{canonical_name, Headers};
use super::message::{Message, Method, Request, Response, Version};
use super::syntax::{is_token_byte, is_ws, reason_phrase, split_list};
use super::typed::{
    check_call_id, name_addr_for, parse_content_length, parse_max_forwards, CSeq, Contacts,
    HeaderError, Via,
};
use super::uri::{Uri, UriError};

/// Resource limits applied while parsing. Exceeding one is an error whose
/// context asks for `513 Message Too Large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message: start line, headers and body.
    pub max_message_size: usize,
    /// Number of header field lines.
    pub max_headers: usize,
    /// One line, and one header after unfolding.
    pub max_header_line: usize,
    /// Via values (comma-separated values counted one by one).
    pub max_via: usize,
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024,
            max_headers: 128,
            max_header_line: 8 * 1024,
            max_via: 64,
            max_body: 64 * 1024,
        }
    }
}

/// What is wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty message")]
    Empty,
    #[error("message too large ({size} bytes, limit {limit})")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("too many header fields (limit {limit})")]
    TooManyHeaders { limit: usize },
    #[error("header line too long (limit {limit} bytes)")]
    HeaderLineTooLong { limit: usize },
    #[error("too many Via values (limit {limit})")]
    TooManyVias { limit: usize },
    #[error("body too large ({size} bytes, limit {limit})")]
    BodyTooLarge { size: usize, limit: usize },
    /// Not recognisable as a SIP start line (no method and version).
    #[error("invalid start line: {0}")]
    InvalidStartLine(String),
    /// Method and version are recognisable, the rest of the line is not.
    #[error("malformed Request-Line: {0}")]
    InvalidRequestLine(String),
    #[error("invalid Request-URI: {0}")]
    InvalidRequestUri(UriError),
    #[error("invalid Status-Line: {0}")]
    InvalidStatusLine(String),
    #[error("malformed header line: {0}")]
    InvalidHeaderLine(String),
    #[error("{0} header is not valid UTF-8")]
    InvalidUtf8(String),
    #[error(transparent)]
    InvalidHeader(HeaderError),
    #[error("missing empty line after the header fields")]
    MissingEmptyLine,
    #[error("Content-Length larger than the body ({declared} > {available} bytes)")]
    BodyTruncated { declared: usize, available: usize },
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    #[error("conflicting Content-Length values on a stream transport")]
    ConflictingContentLength,
    #[error("stream unusable after an earlier framing error")]
    StreamFailed,
}

impl ParseErrorKind {
    /// The status a UAS answers with when it can answer at all.
    pub fn status(&self) -> u16 {
        match self {
            ParseErrorKind::MessageTooLarge { .. }
            | ParseErrorKind::TooManyHeaders { .. }
            | ParseErrorKind::HeaderLineTooLong { .. }
            | ParseErrorKind::TooManyVias { .. }
            | ParseErrorKind::BodyTooLarge { .. } => 513,
            _ => 400,
        }
    }
}

/// Enough of a failed request to answer it (RFC 3261 §8.2.6: Via, From,
/// To, Call-ID and CSeq copied verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseContext {
    /// 400, or 513 when a limit was exceeded.
    pub status: u16,
    /// A reason phrase naming the problem (printable, at most 120 bytes).
    pub reason: String,
    pub method: Method,
    /// Every Via header line, in order, as received.
    pub via: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

impl ResponseContext {
    /// The error response (no To tag yet: add one with
    /// [`Response::with_to_tag`]; Content-Length is written on output).
    pub fn to_response(&self) -> Response {
        let mut r = Response::new(self.status, self.reason.clone());
        for v in &self.via {
            r.headers.push("Via", v.clone());
        }
        r.headers.push("From", self.from.clone());
        r.headers.push("To", self.to.clone());
        r.headers.push("Call-ID", self.call_id.clone());
        r.headers.push("CSeq", self.cseq.clone());
        r
    }
}

/// A parse failure: what went wrong and, when possible, how to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ParseErrorKind,
    context: Option<Box<ResponseContext>>,
    fatal: bool,
}

impl ParseError {
    fn new(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            context: None,
            fatal: false,
        }
    }

    /// Builds the error, salvaging a response context from the message head
    /// where the kind allows one.
    fn with_head(kind: ParseErrorKind, head: &[u8]) -> Self {
        let context = match kind {
            ParseErrorKind::Empty
            | ParseErrorKind::InvalidStartLine(_)
            | ParseErrorKind::InvalidStatusLine(_)
            | ParseErrorKind::StreamFailed => None,
            _ => salvage(head, &kind),
        };
        ParseError {
            kind,
            context,
            fatal: false,
        }
    }

    fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// How to answer the failed request, or `None`: drop it silently.
    pub fn response_context(&self) -> Option<&ResponseContext> {
        self.context.as_deref()
    }

    /// For [`StreamFramer`]: the byte stream cannot be resynchronised and the
    /// connection must be closed (after sending any response).
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }
}

// ---------------------------------------------------------------- helpers

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Splits on CRLF.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, b"\r\n", 0) {
            Some(i) => {
                rest = Some(&r[i + 2..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn trim_ws_bytes(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ws(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ws(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Length of the run of CRLF pairs at the start of `b`.
fn leading_crlf(b: &[u8]) -> usize {
    let mut i = 0;
    while b.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

/// The header lines of `head` (after the start line), unfolded leniently:
/// lines without a colon are skipped. Only headers whose canonical name is
/// in `wanted` are returned, with their values as lossy UTF-8.
fn lenient_headers(head: &[u8], wanted: &[&str]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut current_wanted = false;
    for line in lines(head).skip(1) {
        if line.first().is_some_and(|b| is_ws(*b)) {
            if current_wanted {
                if let Some((_, v)) = out.last_mut() {
                    v.push(b' ');
                    v.extend_from_slice(trim_ws_bytes(line));
                }
            }
            continue;
        }
        current_wanted = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(trim_ws_bytes(&line[..colon])) else {
            continue;
        };
        if let Some(canon) = canonical_name(name).filter(|c| wanted.contains(c)) {
            out.push((canon, trim_ws_bytes(&line[colon + 1..]).to_vec()));
            current_wanted = true;
        }
    }
    out.into_iter()
        .map(|(n, v)| {
            let s = String::from_utf8_lossy(trim_ws_bytes(&v)).into_owned();
            (n, s.replace(['\r', '\n'], " "))
        })
        .collect()
}

/// The method of a request start line if its method and version are
/// recognisable (the URI may still be broken).
fn request_method(head: &[u8]) -> Option<Method> {
    let first = lines(head).next()?;
    if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let sp = first.iter().position(|&b| b == b' ')?;
    let method = std::str::from_utf8(&first[..sp]).ok()?;
    let trimmed = trim_ws_bytes(first);
    let last = trimmed.iter().rposition(|&b| b == b' ')?;
    Version::parse(std::str::from_utf8(&trimmed[last + 1..]).ok()?)?;
    Method::from_token(method)
}

fn salvage(head: &[u8], kind: &ParseErrorKind) -> Option<Box<ResponseContext>> {
    let method = request_method(head)?;
    if method == Method::Ack {
        return None; // an ACK is never answered (§17)
    }
    let found = lenient_headers(head, &["Via", "From", "To", "Call-ID", "CSeq"]);
    let first = |n: &str| found.iter().find(|(c, _)| *c == n).map(|(_, v)| v.clone());
    let via: Vec<String> = found
        .iter()
        .filter(|(c, _)| *c == "Via")
        .map(|(_, v)| v.clone())
        .collect();
    if via.is_empty() {
        return None;
    }
    let status = kind.status();
    let reason = if status == 513 {
        "Message Too Large".to_string()
    } else {
        reason_phrase(&kind.to_string())
    };
    Some(Box::new(ResponseContext {
        status,
        reason,
        method,
        via,
        from: first("From")?,
        to: first("To")?,
        call_id: first("Call-ID")?,
        cseq: first("CSeq")?,
    }))
}

// ---------------------------------------------------------------- head

enum StartLine {
    Request(Method, Uri, Version),
    Response(Version, u16, String),
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseErrorKind> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let bad = |s: &str| ParseErrorKind::InvalidStatusLine(s.to_string());
        let sp = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("missing status code"))?;
        let version = std::str::from_utf8(&line[..sp])
            .ok()
            .and_then(Version::parse)
            .ok_or_else(|| bad("invalid SIP-Version"))?;
        let rest = &line[sp + 1..];
        let (code, reason) = match rest.iter().position(|&b| b == b' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return Err(bad("status code is not three digits"));
        }
        let status = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return Err(bad("status code out of range"));
        }
        let reason = std::str::from_utf8(reason).map_err(|_| bad("reason phrase is not UTF-8"))?;
        if reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("control character in reason phrase"));
        }
        return Ok(StartLine::Response(version, status, reason.to_string()));
    }
    let bad_start = |s: &str| ParseErrorKind::InvalidStartLine(s.to_string());
    let sp1 = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| bad_start("not a SIP start line"))?;
    let method_text = &line[..sp1];
    if method_text.is_empty() || !method_text.iter().all(|&b| is_token_byte(b)) {
        return Err(bad_start("method is not a token"));
    }
    let trimmed = trim_ws_bytes(line);
    let last = trimmed.iter().rposition(|&b| b == b' ').unwrap_or(0);
    if last <= sp1 {
        return Err(bad_start("missing SIP-Version"));
    }
    let version = std::str::from_utf8(&trimmed[last + 1..])
        .ok()
        .and_then(Version::parse)
        .ok_or_else(|| bad_start("invalid SIP-Version"))?;
    // method_text is all token bytes, hence ASCII.
    let method = Method::from_token(std::str::from_utf8(method_text).unwrap_or(""))
        .ok_or_else(|| bad_start("method is not a token"))?;
    if trimmed.len() != line.len() {
        return Err(ParseErrorKind::InvalidRequestLine(
            "whitespace at end of line".into(),
        ));
    }
    let uri_bytes = &line[sp1 + 1..last];
    if uri_bytes.iter().any(|&b| is_ws(b)) {
        return Err(ParseErrorKind::InvalidRequestLine(
            "extra whitespace between or inside elements".into(),
        ));
    }
    let uri_text = std::str::from_utf8(uri_bytes).map_err(|_| {
        ParseErrorKind::InvalidRequestUri(UriError::InvalidChar("non-ASCII".into()))
    })?;
    let uri = Uri::parse(uri_text).map_err(ParseErrorKind::InvalidRequestUri)?;
    Ok(StartLine::Request(method, uri, version))
}

/// Parses the start line and header lines (`head` excludes the empty line).
fn parse_head(head: &[u8], limits: &Limits) -> Result<(StartLine, Headers), ParseErrorKind> {
    let too_long = ParseErrorKind::HeaderLineTooLong {
        limit: limits.max_header_line,
    };
    let mut it = lines(head);
    let first = it.next().unwrap_or(b"");
    if first.len() > limits.max_header_line {
        return Err(too_long);
    }
    if first.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ParseErrorKind::InvalidStartLine("bare CR or LF".into()));
    }
    let start = parse_start_line(first)?;
    let mut raw: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in it {
        if line.len() > limits.max_header_line {
            return Err(too_long);
        }
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ParseErrorKind::InvalidHeaderLine("bare CR or LF".into()));
        }
        if line.first().is_some_and(|b| is_ws(*b)) {
            let Some((_, value)) = raw.last_mut() else {
                return Err(ParseErrorKind::InvalidHeaderLine(
                    "continuation line before the first header".into(),
                ));
            };
            while value.last().is_some_and(|b| is_ws(*b)) {
                value.pop();
            }
            value.push(b' ');
            value.extend_from_slice(trim_ws_bytes(line));
            if value.len() > limits.max_header_line {
                return Err(too_long);
            }
            continue;
        }
        if line.is_empty() {
            return Err(ParseErrorKind::InvalidHeaderLine(
                "empty line inside the header".into(),
            ));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ParseErrorKind::InvalidHeaderLine("missing ':'".into()));
        };
        let name = trim_ws_bytes(&line[..colon]);
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(ParseErrorKind::InvalidHeaderLine(
                "invalid header name".into(),
            ));
        }
        if raw.len() >= limits.max_headers {
            return Err(ParseErrorKind::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        raw.push((name, trim_ws_bytes(&line[colon + 1..]).to_vec()));
    }
    let mut headers = Headers::new();
    for (name, value) in raw {
        // name is all token bytes, hence ASCII.
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8(trim_ws_bytes(&value).to_vec())
            .map_err(|_| ParseErrorKind::InvalidUtf8(name.clone()))?;
        headers.push(name, value);
    }
    Ok((start, headers))
}

/// Syntax of the headers the transaction and dialog layers rely on; every
/// occurrence is checked (repetition itself is judged by validation).
fn check_headers(headers: &Headers, limits: &Limits) -> Result<(), ParseErrorKind> {
    let mut vias = 0usize;
    for h in headers.iter() {
        let r = match canonical_name(&h.name) {
            Some("Via") => {
                for item in split_list(&h.value) {
                    vias += 1;
                    if vias > limits.max_via {
                        return Err(ParseErrorKind::TooManyVias {
                            limit: limits.max_via,
                        });
                    }
                    if item.is_empty() {
                        return Err(ParseErrorKind::InvalidHeader(HeaderError::Invalid {
                            header: "Via",
                            reason: "empty value in list".into(),
                        }));
                    }
                    Via::parse(item).map_err(ParseErrorKind::InvalidHeader)?;
                }
                Ok(())
            }
            Some("From") => name_addr_for("From", &h.value).map(drop),
            Some("To") => name_addr_for("To", &h.value).map(drop),
            Some("Call-ID") => check_call_id(&h.value),
            Some("CSeq") => CSeq::parse(&h.value).map(drop),
            Some("Max-Forwards") => parse_max_forwards(&h.value).map(drop),
            Some("Content-Length") => parse_content_length(&h.value).map(drop),
            Some("Contact") => Contacts::parse(&h.value).map(drop),
            _ => Ok(()),
        };
        r.map_err(ParseErrorKind::InvalidHeader)?;
    }
    Ok(())
}

enum Framing {
    Absent,
    Length(usize),
    Conflicting,
}

fn framing(headers: &Headers) -> Framing {
    match headers.content_length() {
        Ok(Some(n)) => Framing::Length(n),
        Ok(None) => Framing::Absent,
        Err(_) => Framing::Conflicting,
    }
}

fn assemble(start: StartLine, headers: Headers, body: Vec<u8>) -> Message {
    match start {
        StartLine::Request(method, uri, version) => Message::Request(Request {
            method,
            uri,
            version,
            headers,
            body,
        }),
        StartLine::Response(version, status, reason) => Message::Response(Response {
            version,
            status,
            reason,
            headers,
            body,
        }),
    }
}

fn parse_checked(head: &[u8], limits: &Limits) -> Result<(StartLine, Headers), ParseError> {
    let (start, headers) = parse_head(head, limits).map_err(|k| ParseError::with_head(k, head))?;
    check_headers(&headers, limits).map_err(|k| ParseError::with_head(k, head))?;
    Ok((start, headers))
}

// ---------------------------------------------------------------- datagrams

/// Parses one message from a datagram. Returns the message and the number
/// of bytes it used (trailing octets past Content-Length are not used).
/// A datagram of CRLFs only is [`ParseErrorKind::Empty`] (a keep-alive).
pub fn parse_message(datagram: &[u8], limits: &Limits) -> Result<(Message, usize), ParseError> {
    let lead = leading_crlf(datagram);
    let data = &datagram[lead..];
    if data.is_empty() {
        return Err(ParseError::new(ParseErrorKind::Empty));
    }
    if datagram.len() > limits.max_message_size {
        let kind = ParseErrorKind::MessageTooLarge {
            size: datagram.len(),
            limit: limits.max_message_size,
        };
        return Err(ParseError::with_head(
            kind,
            &data[..limits.max_message_size.min(data.len())],
        ));
    }
    let (head, body_start, blank) = match find(data, b"\r\n\r\n", 0) {
        Some(i) => (&data[..i], i + 4, true),
        None => (
            data.strip_suffix(b"\r\n").unwrap_or(data),
            data.len(),
            false,
        ),
    };
    let (start, headers) = parse_checked(head, limits)?;
    if !blank {
        return Err(ParseError::with_head(
            ParseErrorKind::MissingEmptyLine,
            head,
        ));
    }
    let rest = &data[body_start..];
    let (body, consumed) = match framing(&headers) {
        Framing::Length(n) => {
            if n > limits.max_body {
                let kind = ParseErrorKind::BodyTooLarge {
                    size: n,
                    limit: limits.max_body,
                };
                return Err(ParseError::with_head(kind, head));
            }
            if rest.len() < n {
                let kind = ParseErrorKind::BodyTruncated {
                    declared: n,
                    available: rest.len(),
                };
                return Err(ParseError::with_head(kind, head));
            }
            (&rest[..n], lead + body_start + n)
        }
        Framing::Absent | Framing::Conflicting => {
            if rest.len() > limits.max_body {
                let kind = ParseErrorKind::BodyTooLarge {
                    size: rest.len(),
                    limit: limits.max_body,
                };
                return Err(ParseError::with_head(kind, head));
            }
            (rest, datagram.len())
        }
    };
    Ok((assemble(start, headers, body.to_vec()), consumed))
}

// ---------------------------------------------------------------- streams

/// Cuts SIP messages out of a byte stream (TCP, TLS, ...).
///
/// Push bytes as they arrive, then call [`StreamFramer::next_message`] until
/// it returns `Ok(None)`. An error for which [`ParseError::is_fatal`] is
/// false consumed one malformed message and the stream continues; a fatal
/// one means the connection must be closed.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limits: Limits,
    /// Where to resume looking for the end of the head.
    scan_from: usize,
    /// `(head_end, total)` of a message whose head is complete and whose
    /// body is still arriving.
    pending: Option<(usize, usize)>,
    pings: usize,
    failed: bool,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limits,
            scan_from: 0,
            pending: None,
            pings: 0,
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a fatal error has occurred.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Double-CRLF keep-alive pings seen since the last call; each deserves a
    /// single CRLF pong (RFC 5626 §4.4.1).
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scan_from = 0;
        self.pending = None;
    }

    fn fail(&mut self, e: ParseError) -> ParseError {
        self.failed = true;
        e.fatal()
    }

    /// Finds the end of the next head and the message length from its
    /// Content-Length; `Ok(None)` while the head is incomplete.
    fn frame(&mut self) -> Result<Option<(usize, usize)>, ParseError> {
        let limit = self.limits.max_message_size;
        let Some(head_end) = find(&self.buf, b"\r\n\r\n", self.scan_from) else {
            if self.buf.len() > limit {
                let kind = ParseErrorKind::MessageTooLarge {
                    size: self.buf.len(),
                    limit,
                };
                let e = ParseError::with_head(kind, &self.buf[..limit]);
                return Err(self.fail(e));
            }
            self.scan_from = self.buf.len().saturating_sub(3);
            return Ok(None);
        };
        let head = &self.buf[..head_end];
        let lengths = lenient_headers(head, &["Content-Length"]);
        let mut body_len: Option<usize> = None;
        for (_, v) in &lengths {
            match parse_content_length(v) {
                Ok(n) if body_len.is_none_or(|m| m == n) => body_len = Some(n),
                Ok(_) => {
                    let e = ParseError::with_head(ParseErrorKind::ConflictingContentLength, head);
                    return Err(self.fail(e));
                }
                Err(h) => {
                    let e = ParseError::with_head(ParseErrorKind::InvalidHeader(h), head);
                    return Err(self.fail(e));
                }
            }
        }
        let Some(body_len) = body_len else {
            let e = ParseError::with_head(ParseErrorKind::MissingContentLength, head);
            return Err(self.fail(e));
        };
        if body_len > self.limits.max_body {
            let kind = ParseErrorKind::BodyTooLarge {
                size: body_len,
                limit: self.limits.max_body,
            };
            let e = ParseError::with_head(kind, head);
            return Err(self.fail(e));
        }
        let total = head_end + 4 + body_len;
        if total > limit {
            let e =
                ParseError::with_head(ParseErrorKind::MessageTooLarge { size: total, limit }, head);
            return Err(self.fail(e));
        }
        Ok(Some((head_end, total)))
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        if self.failed {
            return Err(ParseError::new(ParseErrorKind::StreamFailed).fatal());
        }
        // Keep-alives and stray CRLFs between messages.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.pings += 1;
                self.consume(4);
            } else if self.buf.starts_with(b"\r\n") && self.buf.len() >= 3 && self.buf[2] != b'\r' {
                self.consume(2);
            } else if self.buf.starts_with(b"\r\n\r") || self.buf == b"\r\n" || self.buf == b"\r" {
                return Ok(None);
            } else {
                break;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let (head_end, total) = match self.pending {
            Some(p) => p,
            None => match self.frame()? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        if self.buf.len() < total {
            self.pending = Some((head_end, total));
            return Ok(None);
        }
        let result = parse_checked(&self.buf[..head_end], &self.limits).map(|(start, headers)| {
            assemble(start, headers, self.buf[head_end + 4..total].to_vec())
        });
        self.consume(total);
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:u@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\n\
Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn datagram_roundtrip_basics() {
        let (m, used) = parse_message(OPTIONS, &Limits::default()).unwrap();
        assert_eq!(used, OPTIONS.len());
        let r = m.as_request().unwrap();
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.headers.len(), 7);
        let mut with_crlf = b"\r\n\r\n".to_vec();
        with_crlf.extend_from_slice(OPTIONS);
        with_crlf.extend_from_slice(b"garbage");
        let (_, used) = parse_message(&with_crlf, &Limits::default()).unwrap();
        assert_eq!(used, OPTIONS.len() + 4);
        assert_eq!(
            parse_message(b"\r\n\r\n", &Limits::default())
                .unwrap_err()
                .kind(),
            &ParseErrorKind::Empty
        );
    }

    #[test]
    fn errors_carry_context() {
        let bad = String::from_utf8(OPTIONS.to_vec())
            .unwrap()
            .replace("branch=z9hG4bK1", "branch=;;");
        let e = parse_message(bad.as_bytes(), &Limits::default()).unwrap_err();
        let ctx = e.response_context().expect("context");
        assert_eq!(ctx.status, 400);
        assert!(
            ctx.reason.starts_with("Invalid Via header"),
            "{}",
            ctx.reason
        );
        assert_eq!(ctx.via, vec!["SIP/2.0/UDP h.example.com;branch=;;"]);
        assert_eq!(ctx.cseq, "1 OPTIONS");
        let resp = ctx.to_response();
        assert_eq!(resp.headers.get("Call-ID"), Some("c1"));
        // No context for ACK, for responses, and for an unparseable start line.
        let ack = String::from_utf8(OPTIONS.to_vec())
            .unwrap()
            .replace("OPTIONS", "ACK")
            .replace("branch=z9hG4bK1", "branch=;;");
        assert!(parse_message(ack.as_bytes(), &Limits::default())
            .unwrap_err()
            .response_context()
            .is_none());
        let e = parse_message(b"INVITE sip:x@y\r\nVia: x\r\n\r\n", &Limits::default()).unwrap_err();
        assert!(matches!(e.kind(), ParseErrorKind::InvalidStartLine(_)));
        assert!(e.response_context().is_none());
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let e = parse_message(OPTIONS, &limits).unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::TooManyHeaders { limit: 3 });
        assert_eq!(e.response_context().unwrap().status, 513);
        let limits = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        let e = parse_message(OPTIONS, &limits).unwrap_err();
        assert!(matches!(e.kind(), ParseErrorKind::MessageTooLarge { .. }));
        let limits = Limits {
            max_header_line: 20,
            ..Limits::default()
        };
        let e = parse_message(OPTIONS, &limits).unwrap_err();
        assert!(matches!(e.kind(), ParseErrorKind::HeaderLineTooLong { .. }));
        let limits = Limits {
            max_via: 0,
            ..Limits::default()
        };
        let e = parse_message(OPTIONS, &limits).unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::TooManyVias { limit: 0 });
    }

    #[test]
    fn status_lines() {
        let ok = |s: &str| parse_start_line(s.as_bytes()).is_ok();
        assert!(ok("SIP/2.0 200 OK"));
        assert!(ok("SIP/2.0 100 "));
        assert!(ok("SIP/2.0 180"));
        assert!(!ok("SIP/2.0 4294967301 better not break the receiver"));
        assert!(!ok("SIP/2.0 099 Low"));
        assert!(!ok("SIP/2.0 700 High"));
        assert!(!ok("SIP/2.0 20 OK"));
        assert!(matches!(
            parse_start_line(b"SIP/2.0 200 a\x01b"),
            Err(ParseErrorKind::InvalidStatusLine(_))
        ));
    }

    #[test]
    fn framer_missing_content_length_is_fatal() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n");
        let e = f.next_message().unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::MissingContentLength);
        assert!(e.is_fatal());
        assert!(f.next_message().unwrap_err().is_fatal());
    }
}

//! The OpenAI-compatible chat completions wire format, sans-IO: the
//! streaming request body, an incremental server-sent-events decoder that
//! turns body bytes into content and reasoning deltas, finish reasons and
//! token usage, a sentence splitter that releases each sentence as soon as it
//! ends (so the first one is spoken before the answer is finished), and the
//! per-endpoint circuit breaker (pure logic, time enters as `now`).
//!
//! Nothing here touches a socket or a clock; `runtime::cluster` feeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenAiError {
    #[error("stream line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("stream event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
    #[error("stream is not UTF-8")]
    NotUtf8,
    #[error("stream chunk is not a chat completion chunk: {0}")]
    BadChunk(String),
    #[error("the server reported an error in the stream: {0}")]
    Upstream(String),
    #[error("data after [DONE]")]
    DataAfterDone,
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage { role: Role::Assistant, content: content.into() }
    }
}

/// What the edge knows that the big model should too; it goes into the
/// system message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnContext {
    /// Who the agent is and how it answers (the flow's instructions).
    pub instructions: String,
    /// The flow session's state (pending task, slot being filled).
    pub flow_state: String,
    /// The edge classifier's intent for this turn, and its confidence.
    pub intent: Option<String>,
    pub intent_confidence: Option<f32>,
    /// Why the router escalated (`RouteReason`'s name).
    pub route_reason: Option<String>,
}

/// The system message: the instructions, then one line of edge context and a
/// reminder that the answer is spoken.
pub fn system_message(ctx: &TurnContext) -> String {
    let mut text = ctx.instructions.trim().to_string();
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str("Context from the voice agent: flow state ");
    text.push_str(if ctx.flow_state.is_empty() { "none" } else { &ctx.flow_state });
    match (&ctx.intent, ctx.intent_confidence) {
        (Some(intent), Some(c)) => text.push_str(&format!("; caller intent {intent} (confidence {c:.2})")),
        (Some(intent), None) => text.push_str(&format!("; caller intent {intent}")),
        (None, _) => text.push_str("; caller intent unknown"),
    }
    if let Some(reason) = &ctx.route_reason {
        text.push_str("; escalated because: ");
        text.push_str(reason);
    }
    text.push_str(".\nYour answer is spoken on a phone call: plain sentences, no lists, no markup, brief.");
    text
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ChatRequestBody<'a> {
    model: &'a str,
    messages: Vec<&'a ChatMessage>,
    max_tokens: u32,
    temperature: f32,
    stream: bool,
    stream_options: StreamOptions,
}

/// The JSON body of a streaming `POST {base}/chat/completions`: a system
/// message from `ctx`, then `history` (the conversation so far, ending with
/// the caller's turn).
pub fn chat_request_body(model: &str, ctx: &TurnContext, history: &[ChatMessage], max_tokens: u32, temperature: f32) -> Vec<u8> {
    let system = ChatMessage { role: Role::System, content: system_message(ctx) };
    let mut messages = Vec::with_capacity(history.len() + 1);
    messages.push(&system);
    messages.extend(history.iter().filter(|m| m.role != Role::System));
    let body = ChatRequestBody {
        model,
        messages,
        max_tokens,
        temperature: if temperature.is_finite() { temperature.clamp(0.0, 2.0) } else { 0.0 },
        stream: true,
        stream_options: StreamOptions { include_usage: true },
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------

/// Bounds on what the decoder buffers (hostile or broken servers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SseLimits {
    pub max_line_bytes: usize,
    pub max_event_bytes: usize,
}

impl Default for SseLimits {
    fn default() -> Self {
        SseLimits { max_line_bytes: 256 * 1024, max_event_bytes: 1024 * 1024 }
    }
}

/// Incremental SSE decoder (the WHATWG event-stream format): bytes in, the
/// `data` of each complete event out. Lines end in LF, CRLF or CR, split
/// across chunks anywhere; `:` lines are comments; fields other than `data`
/// are ignored; several `data` lines join with `\n`.
#[derive(Debug, Default)]
pub struct SseDecoder {
    limits: SseLimits,
    line: Vec<u8>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in CR: a leading LF belongs to it.
    skip_lf: bool,
    events: VecDeque<String>,
}

impl SseDecoder {
    pub fn new(limits: SseLimits) -> Self {
        SseDecoder { limits, ..SseDecoder::default() }
    }

    /// Feeds body bytes; complete events queue up for [`SseDecoder::next_event`].
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), OpenAiError> {
        if self.skip_lf {
            if let [b'\n', rest @ ..] = bytes {
                bytes = rest;
            }
            if !bytes.is_empty() {
                self.skip_lf = false;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.len() + end > self.limits.max_line_bytes {
                return Err(OpenAiError::LineTooLong { limit: self.limits.max_line_bytes });
            }
            self.line.extend_from_slice(&bytes[..end]);
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line)?;
            self.line = line;
            self.line.clear();
        }
        if self.line.len() + bytes.len() > self.limits.max_line_bytes {
            return Err(OpenAiError::LineTooLong { limit: self.limits.max_line_bytes });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), OpenAiError> {
        if line.is_empty() {
            if self.has_data {
                self.events.push_back(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| OpenAiError::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            let added = value.len() + usize::from(self.has_data);
            if self.data.len() + added > self.limits.max_event_bytes {
                return Err(OpenAiError::EventTooLarge { limit: self.limits.max_event_bytes });
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        Ok(())
    }

    /// The data of the next complete event.
    pub fn next_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }
}

// ---------------------------------------------------------------------------
// Chat completion chunks
// ---------------------------------------------------------------------------

/// Token counts the server reported (`usage`, with `stream_options.include_usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Hidden reasoning tokens (`completion_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u32,
}

/// What one stream event means to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Answer text to speak.
    Content(String),
    /// Hidden reasoning (`reasoning_content`): counted, never spoken.
    Reasoning(String),
    /// Why generation stopped (`stop`, `length`, ...).
    Finish(String),
    Usage(TokenUsage),
    /// `[DONE]`: the stream is complete.
    Done,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    completion_tokens_details: Option<WireCompletionDetails>,
}

#[derive(Deserialize)]
struct WireCompletionDetails {
    #[serde(default)]
    reasoning_tokens: u32,
}

/// Parses one event's data into stream events (appended to `out`).
pub fn parse_chunk(data: &str, out: &mut Vec<StreamEvent>) -> Result<(), OpenAiError> {
    let data = data.trim();
    if data == "[DONE]" {
        out.push(StreamEvent::Done);
        return Ok(());
    }
    let chunk: WireChunk = serde_json::from_str(data).map_err(|e| {
        let mut shown: String = data.chars().take(120).collect();
        if shown.len() < data.len() {
            shown.push('…');
        }
        OpenAiError::BadChunk(format!("{e}: {shown}"))
    })?;
    if let Some(error) = chunk.error {
        let message = error.get("message").and_then(|m| m.as_str()).map(str::to_string).unwrap_or_else(|| error.to_string());
        return Err(OpenAiError::Upstream(message));
    }
    // Only the first choice is spoken (we never ask for n > 1).
    if let Some(choice) = chunk.choices.into_iter().next() {
        if let Some(delta) = choice.delta {
            if let Some(r) = delta.reasoning_content.filter(|r| !r.is_empty()) {
                out.push(StreamEvent::Reasoning(r));
            }
            if let Some(c) = delta.content.filter(|c| !c.is_empty()) {
                out.push(StreamEvent::Content(c));
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(StreamEvent::Finish(reason));
        }
    }
    if let Some(u) = chunk.usage {
        out.push(StreamEvent::Usage(TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
        }));
    }
    Ok(())
}

/// SSE decoding and chunk parsing together: body bytes in, stream events out.
#[derive(Debug, Default)]
pub struct ChatStreamDecoder {
    sse: SseDecoder,
    done: bool,
}

impl ChatStreamDecoder {
    pub fn new(limits: SseLimits) -> Self {
        ChatStreamDecoder { sse: SseDecoder::new(limits), done: false }
    }

    /// Feeds body bytes and appends the events they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), OpenAiError> {
        self.sse.push(bytes)?;
        while let Some(data) = self.sse.next_event() {
            if self.done {
                return Err(OpenAiError::DataAfterDone);
            }
            parse_chunk(&data, out)?;
            if out.last() == Some(&StreamEvent::Done) {
                self.done = true;
            }
        }
        Ok(())
    }

    /// `[DONE]` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------
// Sentences
// ---------------------------------------------------------------------------

/// Words ending in "." that do not end a sentence (compared lowercased,
/// without the final dot).
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "no", "approx", "dept", "inc", "ltd",
    "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m",
    "u.s", "fig", "min", "max", "ca",
];

/// Text deltas in, complete sentences out as soon as they end: after `.`,
/// `?` or `!` (and any closing quotes or brackets) followed by whitespace, and
/// at a newline; not after abbreviations ("e.g.", "Mr."), single initials,
/// a list number starting the sentence ("2. Call us") or inside numbers
/// ("3.5"). [`SentenceSplitter::finish`] flushes the rest.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
    /// Bytes of `buf` already scanned without finding a boundary.
    scanned: usize,
}

impl SentenceSplitter {
    pub fn new() -> Self {
        SentenceSplitter::default()
    }

    /// Adds a delta; appends every sentence it completes to `out` (trimmed,
    /// never empty).
    pub fn push(&mut self, delta: &str, out: &mut Vec<String>) {
        self.buf.push_str(delta);
        while let Some(end) = self.find_boundary() {
            let sentence = self.buf[..end].trim().to_string();
            self.buf.drain(..end);
            self.scanned = 0;
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
    }

    /// The text after the last sentence end, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.buf.trim().to_string();
        self.buf.clear();
        self.scanned = 0;
        (!rest.is_empty()).then_some(rest)
    }

    /// Text held back, waiting for its sentence to end.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    /// Byte index just past a sentence's end, if `buf` holds one.
    fn find_boundary(&mut self) -> Option<usize> {
        let bytes = self.buf.as_bytes();
        let mut i = self.scanned;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                return Some(i + 1);
            }
            if matches!(b, b'.' | b'?' | b'!') {
                // Skip further terminators and closing quotes/brackets.
                let mut j = i + 1;
                while j < bytes.len() && matches!(bytes[j], b'.' | b'?' | b'!' | b'"' | b'\'' | b')' | b']') {
                    j += 1;
                }
                if j == bytes.len() {
                    // Cannot tell yet: wait for the next delta.
                    self.scanned = i;
                    return None;
                }
                if bytes[j].is_ascii_whitespace() && !(b == b'.' && self.is_abbreviation(i)) {
                    return Some(j);
                }
                i = j;
                continue;
            }
            i += 1;
        }
        self.scanned = bytes.len();
        None
    }

    /// The word ending at the dot at `dot` is an abbreviation or an initial.
    fn is_abbreviation(&self, dot: usize) -> bool {
        let head = &self.buf[..dot];
        let word = head.rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"').next().unwrap_or("");
        if word.is_empty() {
            return false;
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            // "2. Call the courier": a list number starting the sentence.
            return head.trim_start() == word;
        }
        let mut chars = word.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            // "J. Smith": a single capital is an initial.
            return c.is_uppercase();
        }
        let lower = word.to_lowercase();
        ABBREVIATIONS.contains(&lower.as_str())
    }
}

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses requests before one probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failure_threshold: 3, cool_down: Duration::from_secs(10) }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// The cool-down ended: one probe request decides.
    HalfOpen,
}

/// What [`CircuitBreaker::try_acquire`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal request.
    Allowed,
    /// The single probe of a half-open breaker.
    Probe,
    /// Refused: open, or a probe is already in flight.
    Refused,
}

/// Closed -> open after `failure_threshold` consecutive failures -> half-open
/// after `cool_down` (one probe at a time) -> closed on the probe's success,
/// open again (a new cool-down) on its failure.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probe_in_flight: bool,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        CircuitBreaker { cfg, consecutive_failures: 0, open_until: None, probe_in_flight: false }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request started now would be let through.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// Asks to send a request now; a `Probe` must be answered with
    /// [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or
    /// [`CircuitBreaker::on_abandon`].
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        match self.state(now) {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open => Admission::Refused,
            BreakerState::HalfOpen if self.probe_in_flight => Admission::Refused,
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                Admission::Probe
            }
        }
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.probe_in_flight = false;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let was_probe = std::mem::take(&mut self.probe_in_flight);
        if was_probe || self.consecutive_failures >= self.cfg.failure_threshold {
            self.open_until = Some(now + self.cfg.cool_down);
        }
    }

    /// The request ended without a verdict (cancelled): a probe slot is freed.
    pub fn on_abandon(&mut self) {
        self.probe_in_flight = false;
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<StreamEvent>, OpenAiError> {
        let mut d = ChatStreamDecoder::new(SseLimits::default());
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out)?;
        }
        Ok(out)
    }

    const STREAM: &str = concat!(
        ": keep-alive comment\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo. \"}}]}\r\n\r\n",
        "event: message\nid: 7\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bye\"},\"finish_reason\":null}]}\r\r",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":9,\"total_tokens\":40,",
        "\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn expected() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Reasoning("think".into()),
            StreamEvent::Content("Héllo. ".into()),
            StreamEvent::Content("Bye".into()),
            StreamEvent::Finish("stop".into()),
            StreamEvent::Usage(TokenUsage { prompt_tokens: 31, completion_tokens: 9, reasoning_tokens: 2 }),
            StreamEvent::Done,
        ]
    }

    #[test]
    fn whole_stream_decodes() {
        assert_eq!(decode_all(&[STREAM.as_bytes()]).unwrap(), expected());
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_events() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            assert_eq!(decode_all(&[&bytes[..split], &bytes[split..]]).unwrap(), expected(), "split at {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&singles).unwrap(), expected());
    }

    #[test]
    fn multi_line_data_joins_with_newlines() {
        let mut sse = SseDecoder::new(SseLimits::default());
        sse.push(b"data: {\"choices\":\ndata:[]}\n\ndata\n\n").unwrap();
        assert_eq!(sse.next_event().as_deref(), Some("{\"choices\":\n[]}"));
        assert_eq!(sse.next_event().as_deref(), Some(""), "a bare `data` field is an empty line of data");
        assert_eq!(sse.next_event(), None);
        let mut out = Vec::new();
        parse_chunk("{\"choices\":\n[]}", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        let mut sse = SseDecoder::new(SseLimits::default());
        sse.push(b"data: {\"a\":1}\n").unwrap();
        assert_eq!(sse.next_event(), None);
        sse.push(b"\n").unwrap();
        assert_eq!(sse.next_event().as_deref(), Some("{\"a\":1}"));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = SseLimits { max_line_bytes: 64, max_event_bytes: 100 };
        let mut sse = SseDecoder::new(limits);
        let long = vec![b'x'; 65];
        assert_eq!(sse.push(&long), Err(OpenAiError::LineTooLong { limit: 64 }));
        let mut sse = SseDecoder::new(limits);
        let err = (0..10).map(|_| sse.push(b"data: 0123456789abcdef\n")).find(|r| r.is_err());
        assert_eq!(err, Some(Err(OpenAiError::EventTooLarge { limit: 100 })));
    }

    #[test]
    fn errors_and_garbage_are_reported() {
        let err = decode_all(&[b"data: {\"error\":{\"message\":\"model overloaded\",\"code\":503}}\n\n"]).unwrap_err();
        assert_eq!(err, OpenAiError::Upstream("model overloaded".into()));
        assert!(matches!(decode_all(&[b"data: {not json\n\n"]), Err(OpenAiError::BadChunk(_))));
        assert_eq!(decode_all(&[b"data: \xff\xfe\n\n"]), Err(OpenAiError::NotUtf8));
        assert_eq!(decode_all(&[b"data: [DONE]\n\ndata: {}\n\n"]), Err(OpenAiError::DataAfterDone));
    }

    #[test]
    fn usage_without_details_has_zero_reasoning() {
        let mut out = Vec::new();
        parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#, &mut out).unwrap();
        assert_eq!(out, vec![StreamEvent::Usage(TokenUsage { prompt_tokens: 5, completion_tokens: 3, reasoning_tokens: 0 })]);
    }

    #[test]
    fn request_body_has_the_streaming_fields() {
        let ctx = TurnContext {
            instructions: "You are the shop's phone agent.".into(),
            flow_state: "order_status".into(),
            intent: Some("order_status".into()),
            intent_confidence: Some(0.42),
            route_reason: Some("low_intent_confidence".into()),
        };
        let history = vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("Hello, how can I help?"),
            ChatMessage { role: Role::System, content: "dropped".into() },
            ChatMessage::user("my parcel is late and I am angry"),
        ];
        let body: serde_json::Value = serde_json::from_slice(&chat_request_body("m1", &ctx, &history, 128, 0.3)).unwrap();
        assert_eq!(body["model"], "m1");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 128);
        assert!((body["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4, "one system message, the other system message dropped");
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().unwrap();
        assert!(system.starts_with("You are the shop's phone agent."));
        assert!(system.contains("flow state order_status"));
        assert!(system.contains("caller intent order_status (confidence 0.42)"));
        assert!(system.contains("low_intent_confidence"));
        assert_eq!(messages[3]["role"], "user");
        assert_eq!(messages[3]["content"], "my parcel is late and I am angry");
    }

    fn split(deltas: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for d in deltas {
            s.push(d, &mut out);
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        s.push("Your order ", &mut out);
        s.push("shipped today.", &mut out);
        assert!(out.is_empty(), "the dot may still be an abbreviation or a decimal");
        s.push(" It arrives", &mut out);
        assert_eq!(out, vec!["Your order shipped today."]);
        s.push(" Friday! Anything else?\nYes", &mut out);
        assert_eq!(out, vec!["Your order shipped today.", "It arrives Friday!", "Anything else?"]);
        assert_eq!(s.pending(), "Yes");
        assert_eq!(s.finish().as_deref(), Some("Yes"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn abbreviations_initials_and_decimals_do_not_split() {
        assert_eq!(
            split(&["Mr. Smith paid 3.5 euros, e.g. by card. ", "Dr. J. Watson agreed."]),
            vec!["Mr. Smith paid 3.5 euros, e.g. by card.", "Dr. J. Watson agreed."]
        );
        assert_eq!(split(&["It costs 3", ".", "5 dollars. Done"]), vec!["It costs 3.5 dollars.", "Done"]);
        assert_eq!(split(&["He said \"stop.\" Then", " left... Ok"]), vec!["He said \"stop.\"", "Then left...", "Ok"]);
    }

    #[test]
    fn list_numbers_stay_with_their_item() {
        assert_eq!(
            split(&["1. Use the tracking", " link.\n2. Call us. It was sent in 2024. Then"]),
            vec!["1. Use the tracking link.", "2. Call us.", "It was sent in 2024.", "Then"]
        );
    }

    #[test]
    fn empty_and_whitespace_only_produce_nothing() {
        assert!(split(&["", "  ", "\n\n"]).is_empty());
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let cfg = BreakerConfig { failure_threshold: 3, cool_down: Duration::from_secs(5) };
        let mut b = CircuitBreaker::new(cfg);
        for _ in 0..2 {
            assert_eq!(b.try_acquire(t0), Admission::Allowed);
            b.on_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_success();
        assert_eq!(b.consecutive_failures(), 0, "a success resets the count");
        for _ in 0..3 {
            b.on_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(4)), Admission::Refused);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(t1), Admission::Probe);
        assert_eq!(b.try_acquire(t1), Admission::Refused, "one probe at a time");
        assert!(!b.would_admit(t1));
        b.on_success();
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert_eq!(b.try_acquire(t1), Admission::Allowed);
    }

    #[test]
    fn failed_probe_reopens_and_abandoned_probe_frees_the_slot() {
        let t0 = Instant::now();
        let cfg = BreakerConfig { failure_threshold: 1, cool_down: Duration::from_secs(1) };
        let mut b = CircuitBreaker::new(cfg);
        b.on_failure(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.try_acquire(t1), Admission::Probe);
        b.on_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open, "a failed probe starts a new cool-down");
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(b.try_acquire(t2), Admission::Probe);
        b.on_abandon();
        assert_eq!(b.try_acquire(t2), Admission::Probe, "an abandoned probe frees the slot");
    }
}

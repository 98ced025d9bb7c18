//! The central-cluster client: streams one escalated turn from an
//! OpenAI-compatible chat completions server, sentence by sentence, with
//! failover across the `[cluster]` endpoints, a circuit breaker per endpoint
//! and a per-turn budget (max tokens, first-token deadline, total deadline).
//!
//! HTTP is hyper 1's HTTP/1.1 client connection on a tokio `TcpStream`
//! (TLS through tokio-rustls for `https://` endpoints); the wire format, the
//! SSE decoder, the sentence splitter and the breaker are the sans-IO pieces
//! of [`crate::proto::openai`].
//!
//! * **Failover.** Endpoints are tried in config order, skipping those whose
//!   breaker refuses. A failed attempt moves on to the next endpoint only if
//!   nothing has been spoken yet (no sentence sent); once the caller has heard
//!   part of an answer the turn ends with the error and what was received, and
//!   the call machine speaks an edge fallback.
//! * **Breaker.** Connection errors, timeouts, protocol errors, 5xx, 408 and
//!   429 count as endpoint failures. Other 4xx mean the request is at fault:
//!   the endpoint counts as healthy and no other endpoint is tried.
//! * **Deadlines.** Each attempt gets `first_token_deadline_ms` for its first
//!   token (content or reasoning), and every attempt ends by the turn's
//!   `total_deadline_ms`, counted from the start of the turn.
//! * **Cancellation.** Dropping the [`ClusterClient::stream_turn`] future (a
//!   hang-up in a `select!`) aborts the connection at once, so the server
//!   stops generating; so does dropping the sentence receiver, which ends the
//!   turn with [`ClusterErrorKind::Cancelled`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout_at;
use tokio_rustls::rustls;

use crate::ops::network_config::ClusterConfig;
use crate::proto::openai::{
    chat_request_body, Admission, BreakerConfig, BreakerState, ChatMessage, ChatStreamDecoder, CircuitBreaker,
    SentenceSplitter, SseLimits, StreamEvent, TokenUsage, TurnContext,
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.endpoint[{index}].url: {message}")]
    BadUrl { index: usize, message: String },
    #[error("cluster.endpoint[{index}].api_key_env: environment variable {var} is not set")]
    MissingApiKey { index: usize, var: String },
    #[error("invalid cluster config: {0}")]
    Config(String),
    #[error("cannot set up TLS for the cluster endpoints: {0}")]
    Tls(String),
}

/// Client settings that are not in `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    pub breaker: BreakerConfig,
    pub sse_limits: SseLimits,
    /// Connecting to one endpoint, at most (also bounded by the deadlines).
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            breaker: BreakerConfig::default(),
            sse_limits: SseLimits::default(),
            connect_timeout: Duration::from_millis(500),
        }
    }
}

/// One escalated turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterRequest {
    /// Instructions, flow state and intent for the system message.
    pub context: TurnContext,
    /// The conversation so far, ending with the caller's turn.
    pub history: Vec<ChatMessage>,
    pub temperature: f32,
    /// Lower than `[cluster] max_tokens` for this turn (None: the config's).
    pub max_tokens: Option<u32>,
}

/// What the caller receives while the answer streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChunk {
    /// A complete sentence to speak now.
    Sentence(String),
}

/// Why a turn (or one attempt of it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ClusterErrorKind {
    /// No token within the first-token deadline.
    TimeoutFirstToken,
    /// The answer did not finish within the total deadline.
    TimeoutTotal,
    /// The server answered with a non-success status.
    Http { status: u16 },
    /// Connecting failed or the connection broke.
    Connection,
    /// The response was not a chat completions stream.
    Protocol,
    /// Every endpoint's breaker is open (or there are no endpoints).
    AllEndpointsOpen,
    /// The sentence receiver was dropped (the call ended).
    Cancelled,
}

/// One endpoint tried during a turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Index into `[cluster] endpoint`.
    pub endpoint: usize,
    /// The half-open breaker's probe.
    pub probe: bool,
    pub error: Option<ClusterErrorKind>,
    pub detail: Option<String>,
    /// Answer characters received from this endpoint (spoken or not).
    pub received_chars: usize,
    pub ms: f64,
}

/// How a turn went: for the call machine (fallback or not) and the turn record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterOutcome {
    /// The endpoint that produced the answer (or the last one tried).
    pub endpoint: Option<usize>,
    pub endpoint_url: Option<String>,
    /// Endpoints tried after the first.
    pub failover_attempts: u32,
    /// Endpoints skipped because their breaker was open.
    pub skipped_open: u32,
    pub attempts: Vec<AttemptRecord>,
    pub usage: Option<TokenUsage>,
    /// Turn start to the first token (content or reasoning) of the answering endpoint.
    pub first_token_ms: Option<f64>,
    /// Turn start to the first sentence handed to the caller.
    pub first_sentence_ms: Option<f64>,
    pub total_ms: f64,
    /// Sentences handed to the caller.
    pub sentences: u32,
    /// Everything spoken, sentences joined by spaces.
    pub spoken: String,
    /// Hidden reasoning received (characters; never spoken).
    pub reasoning_chars: usize,
    pub finish_reason: Option<String>,
    /// None: the answer finished. Some: the caller speaks an edge fallback
    /// (after `spoken`, if anything was spoken).
    pub error: Option<ClusterErrorKind>,
    pub error_detail: Option<String>,
}

impl ClusterOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone)]
struct ParsedUrl {
    https: bool,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path of the chat completions resource.
    path: String,
}

fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("{url:?} is not an http(s) URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
        return Err(format!("{url:?}: expected scheme://host[:port][/path] without credentials, query or fragment"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        None if https => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(ParsedUrl {
        https,
        host,
        port,
        authority: authority.to_string(),
        path: format!("{}/chat/completions", path.trim_end_matches('/')),
    })
}

struct Endpoint {
    url: String,
    model: String,
    target: ParsedUrl,
    api_key: Option<String>,
    breaker: Mutex<CircuitBreaker>,
}

/// Resolves the breaker of an admitted request exactly once; if the request
/// is dropped first (cancellation), frees a probe slot.
struct BreakerTicket<'a> {
    endpoint: &'a Endpoint,
    resolved: bool,
}

impl BreakerTicket<'_> {
    fn resolve(mut self, healthy: Option<bool>) {
        self.resolved = true;
        let mut breaker = self.endpoint.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match healthy {
            Some(true) => breaker.on_success(),
            Some(false) => breaker.on_failure(Instant::now()),
            None => breaker.on_abandon(),
        }
    }
}

impl Drop for BreakerTicket<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.endpoint.breaker.lock().unwrap_or_else(|e| e.into_inner()).on_abandon();
        }
    }
}

/// Aborts the spawned connection task when the turn ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Failure {
    kind: ClusterErrorKind,
    detail: String,
}

impl Failure {
    fn new(kind: ClusterErrorKind, detail: impl Into<String>) -> Self {
        Failure { kind, detail: detail.into() }
    }

    /// Whether this failure says the endpoint is unhealthy.
    fn counts_against_endpoint(&self) -> bool {
        match self.kind {
            ClusterErrorKind::Http { status } => status >= 500 || status == 408 || status == 429,
            ClusterErrorKind::Cancelled => false,
            _ => true,
        }
    }
}

/// Per-attempt progress, kept by the turn.
struct TurnProgress<'s> {
    started: Instant,
    total_deadline: Instant,
    sink: &'s mpsc::Sender<ClusterChunk>,
    outcome: ClusterOutcome,
}

impl TurnProgress<'_> {
    fn ms_since_start(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64() * 1000.0
    }

    async fn speak(&mut self, sentence: String) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::from_std(self.total_deadline);
        match timeout_at(deadline, self.sink.send(ClusterChunk::Sentence(sentence.clone()))).await {
            Err(_) => return Err(Failure::new(ClusterErrorKind::TimeoutTotal, "the sentence receiver did not keep up")),
            Ok(Err(_)) => return Err(Failure::new(ClusterErrorKind::Cancelled, "the sentence receiver was dropped")),
            Ok(Ok(())) => {}
        }
        let now = Instant::now();
        if self.outcome.first_sentence_ms.is_none() {
            self.outcome.first_sentence_ms = Some(self.ms_since_start(now));
        }
        self.outcome.sentences += 1;
        if !self.outcome.spoken.is_empty() {
            self.outcome.spoken.push(' ');
        }
        self.outcome.spoken.push_str(&sentence);
        Ok(())
    }
}

/// The client; cheap to share (`Arc`) between calls.
pub struct ClusterClient {
    endpoints: Vec<Endpoint>,
    max_tokens: u32,
    first_token_deadline: Duration,
    total_deadline: Duration,
    options: ClientOptions,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("endpoints", &self.endpoints.iter().map(|e| e.url.as_str()).collect::<Vec<_>>())
            .field("max_tokens", &self.max_tokens)
            .field("first_token_deadline", &self.first_token_deadline)
            .field("total_deadline", &self.total_deadline)
            .finish()
    }
}

impl ClusterClient {
    pub fn new(cfg: &ClusterConfig) -> Result<ClusterClient, ClusterError> {
        ClusterClient::with_options(cfg, ClientOptions::default())
    }

    pub fn with_options(cfg: &ClusterConfig, options: ClientOptions) -> Result<ClusterClient, ClusterError> {
        cfg.validate().map_err(ClusterError::Config)?;
        if options.breaker.failure_threshold == 0 {
            return Err(ClusterError::Config("breaker failure_threshold must be at least 1".into()));
        }
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        for (index, e) in cfg.endpoints.iter().enumerate() {
            let target = parse_url(&e.url).map_err(|message| ClusterError::BadUrl { index, message })?;
            let api_key = match &e.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| ClusterError::MissingApiKey { index, var: var.clone() })?),
                None => None,
            };
            endpoints.push(Endpoint {
                url: e.url.clone(),
                model: e.model.clone(),
                target,
                api_key,
                breaker: Mutex::new(CircuitBreaker::new(options.breaker)),
            });
        }
        let tls = if endpoints.iter().any(|e| e.target.https) { Some(tls_connector()?) } else { None };
        Ok(ClusterClient {
            endpoints,
            max_tokens: cfg.max_tokens,
            first_token_deadline: Duration::from_millis(cfg.first_token_deadline_ms.into()),
            total_deadline: Duration::from_millis(cfg.total_deadline_ms.into()),
            options,
            tls,
        })
    }

    /// Some endpoint would take a request now (the router's `cluster_available`).
    pub fn is_available(&self) -> bool {
        let now = Instant::now();
        self.endpoints.iter().any(|e| e.breaker.lock().unwrap_or_else(|p| p.into_inner()).would_admit(now))
    }

    /// Each endpoint's breaker state, in config order.
    pub fn breaker_states(&self) -> Vec<BreakerState> {
        let now = Instant::now();
        self.endpoints.iter().map(|e| e.breaker.lock().unwrap_or_else(|p| p.into_inner()).state(now)).collect()
    }

    /// Streams one turn: complete sentences go to `sentences` as they end;
    /// the outcome says how it went. Never panics on server behaviour.
    pub async fn stream_turn(&self, req: ClusterRequest, sentences: mpsc::Sender<ClusterChunk>) -> ClusterOutcome {
        let started = Instant::now();
        let mut progress = TurnProgress {
            started,
            total_deadline: started + self.total_deadline,
            sink: &sentences,
            outcome: ClusterOutcome::default(),
        };
        let max_tokens = req.max_tokens.map_or(self.max_tokens, |m| m.clamp(1, self.max_tokens));
        let mut last_failure: Option<Failure> = None;
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if Instant::now() >= progress.total_deadline {
                last_failure.get_or_insert(Failure::new(ClusterErrorKind::TimeoutTotal, "no time left for another endpoint"));
                break;
            }
            let admission = endpoint.breaker.lock().unwrap_or_else(|p| p.into_inner()).try_acquire(Instant::now());
            if admission == Admission::Refused {
                progress.outcome.skipped_open += 1;
                continue;
            }
            let ticket = BreakerTicket { endpoint, resolved: false };
            if !progress.outcome.attempts.is_empty() {
                // Nothing of the failed attempt was spoken: its figures go.
                progress.outcome.failover_attempts += 1;
                progress.outcome.first_token_ms = None;
                progress.outcome.reasoning_chars = 0;
                progress.outcome.usage = None;
                progress.outcome.finish_reason = None;
            }
            progress.outcome.endpoint = Some(index);
            progress.outcome.endpoint_url = Some(endpoint.url.clone());
            let body = Bytes::from(chat_request_body(&endpoint.model, &req.context, &req.history, max_tokens, req.temperature));
            let attempt_started = Instant::now();
            let mut received_chars = 0;
            let result = self.attempt(endpoint, body, &mut progress, &mut received_chars).await;
            let record = AttemptRecord {
                endpoint: index,
                probe: admission == Admission::Probe,
                error: result.as_ref().err().map(|f| f.kind),
                detail: result.as_ref().err().map(|f| f.detail.clone()),
                received_chars,
                ms: attempt_started.elapsed().as_secs_f64() * 1000.0,
            };
            progress.outcome.attempts.push(record);
            match result {
                Ok(()) => {
                    ticket.resolve(Some(true));
                    last_failure = None;
                    break;
                }
                Err(failure) => {
                    let healthy = match failure.kind {
                        ClusterErrorKind::Cancelled => None,
                        _ => Some(!failure.counts_against_endpoint()),
                    };
                    ticket.resolve(healthy);
                    // Fail over only while the caller has heard nothing and the
                    // next endpoint could do better.
                    let retry = progress.outcome.sentences == 0
                        && failure.kind != ClusterErrorKind::Cancelled
                        && failure.counts_against_endpoint();
                    last_failure = Some(failure);
                    if !retry {
                        break;
                    }
                }
            }
        }
        if progress.outcome.attempts.is_empty() && last_failure.is_none() {
            let detail = if self.endpoints.is_empty() { "no cluster endpoints configured" } else { "every endpoint's breaker is open" };
            last_failure = Some(Failure::new(ClusterErrorKind::AllEndpointsOpen, detail));
        }
        if let Some(f) = last_failure {
            progress.outcome.error = Some(f.kind);
            progress.outcome.error_detail = Some(f.detail);
        }
        progress.outcome.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        progress.outcome
    }

    async fn connect(&self, target: &ParsedUrl) -> Result<Box<dyn Io>, Failure> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Failure::new(ClusterErrorKind::Connection, format!("connect {}: {e}", target.authority)))?;
        let _ = tcp.set_nodelay(true);
        if !target.https {
            return Ok(Box::new(tcp));
        }
        let tls = self.tls.as_ref().ok_or_else(|| Failure::new(ClusterErrorKind::Connection, "TLS is not set up"))?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| Failure::new(ClusterErrorKind::Connection, format!("TLS name {:?}: {e}", target.host)))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::new(ClusterErrorKind::Connection, format!("TLS handshake with {}: {e}", target.authority)))?;
        Ok(Box::new(stream))
    }

    /// One endpoint: connect, send, stream. Sentences go out as they end.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        progress: &mut TurnProgress<'_>,
        received_chars: &mut usize,
    ) -> Result<(), Failure> {
        let attempt_started = Instant::now();
        let first_token_deadline = (attempt_started + self.first_token_deadline).min(progress.total_deadline);
        let mut got_token = false;
        let total_deadline = progress.total_deadline;
        // The deadline in force and the error it raises.
        let deadline = |got_token: bool| {
            if got_token || first_token_deadline >= total_deadline {
                (total_deadline, ClusterErrorKind::TimeoutTotal)
            } else {
                (first_token_deadline, ClusterErrorKind::TimeoutFirstToken)
            }
        };
        let bounded = |got_token: bool, cap: Option<Instant>| {
            let (at, kind) = deadline(got_token);
            let at = cap.map_or(at, |c| c.min(at));
            (tokio::time::Instant::from_std(at), kind)
        };
        let timeout_failure = |kind: ClusterErrorKind, what: &str| {
            let kind = if Instant::now() >= total_deadline { ClusterErrorKind::TimeoutTotal } else { kind };
            Failure::new(kind, format!("{what}: deadline passed"))
        };

        let target = &endpoint.target;
        let connect_cap = Some(attempt_started + self.options.connect_timeout);
        let (at, kind) = bounded(false, connect_cap);
        let io = match timeout_at(at, self.connect(target)).await {
            Ok(io) => io?,
            Err(_) if Instant::now() < first_token_deadline.min(total_deadline) => {
                return Err(Failure::new(ClusterErrorKind::Connection, format!("connect {}: timed out", target.authority)))
            }
            Err(_) => return Err(timeout_failure(kind, "connect")),
        };
        let (at, kind) = bounded(false, None);
        let (mut sender, connection) = match timeout_at(at, http1::handshake::<_, Full<Bytes>>(TokioIo::new(io))).await {
            Ok(r) => r.map_err(|e| Failure::new(ClusterErrorKind::Connection, format!("HTTP handshake: {e}")))?,
            Err(_) => return Err(timeout_failure(kind, "HTTP handshake")),
        };
        let _connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));

        let mut request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(target.path.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .header(header::USER_AGENT, concat!("voice-edge/", env!("CARGO_PKG_VERSION")));
        if let Some(key) = &endpoint.api_key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Failure::new(ClusterErrorKind::Protocol, format!("building the request: {e}")))?;
        let (at, kind) = bounded(false, None);
        let response = match timeout_at(at, sender.send_request(request)).await {
            Ok(r) => r.map_err(|e| Failure::new(ClusterErrorKind::Connection, format!("sending the request: {e}")))?,
            Err(_) => return Err(timeout_failure(kind, "waiting for the response head")),
        };
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            // A little of the error body, for the log; bounded in time and size.
            let mut text = Vec::new();
            let (at, _) = bounded(false, Some(Instant::now() + Duration::from_millis(100)));
            while text.len() < 512 {
                match timeout_at(at, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            text.extend_from_slice(&data);
                        }
                    }
                    _ => break,
                }
            }
            text.truncate(512);
            return Err(Failure::new(
                ClusterErrorKind::Http { status: status.as_u16() },
                format!("HTTP {status}: {}", String::from_utf8_lossy(&text).trim()),
            ));
        }

        let mut decoder = ChatStreamDecoder::new(self.options.sse_limits);
        let mut splitter = SentenceSplitter::new();
        let mut events = Vec::new();
        let mut ready = Vec::new();
        let mut finished = false;
        loop {
            let (at, kind) = bounded(got_token, None);
            let frame = match timeout_at(at, body.frame()).await {
                Err(_) => return Err(timeout_failure(kind, "waiting for the answer")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(Failure::new(ClusterErrorKind::Connection, format!("reading the stream: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            events.clear();
            decoder
                .push(&data, &mut events)
                .map_err(|e| Failure::new(ClusterErrorKind::Protocol, e.to_string()))?;
            for event in events.drain(..) {
                match event {
                    StreamEvent::Content(text) => {
                        if !got_token {
                            got_token = true;
                            progress.outcome.first_token_ms = Some(progress.ms_since_start(Instant::now()));
                        }
                        *received_chars += text.chars().count();
                        splitter.push(&text, &mut ready);
                    }
                    StreamEvent::Reasoning(text) => {
                        if !got_token {
                            got_token = true;
                            progress.outcome.first_token_ms = Some(progress.ms_since_start(Instant::now()));
                        }
                        progress.outcome.reasoning_chars += text.chars().count();
                    }
                    StreamEvent::Finish(reason) => progress.outcome.finish_reason = Some(reason),
                    StreamEvent::Usage(usage) => progress.outcome.usage = Some(usage),
                    StreamEvent::Done => finished = true,
                }
            }
            for sentence in ready.drain(..) {
                progress.speak(sentence).await?;
            }
            if finished {
                break;
            }
        }
        if !finished && progress.outcome.finish_reason.is_none() {
            return Err(Failure::new(ClusterErrorKind::Protocol, "the stream ended without a finish_reason or [DONE]"));
        }
        if let Some(rest) = splitter.finish() {
            progress.speak(rest).await?;
        }
        Ok(())
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, ClusterError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ClusterError::Tls("no trusted root certificates found on this system".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::network_config::ClusterEndpoint;

    #[test]
    fn urls_parse_to_host_port_and_path() {
        let u = parse_url("http://127.0.0.1:8080/v1").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (false, "127.0.0.1", 8080, "/v1/chat/completions"));
        assert_eq!(u.authority, "127.0.0.1:8080");
        let u = parse_url("https://[::1]/v1/").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (true, "::1", 443, "/v1/chat/completions"));
        let u = parse_url("http://cluster.internal").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/chat/completions"));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://user:pw@host/v1").is_err());
        assert!(parse_url("http://host:99999/v1").is_err());
        assert!(parse_url("http:///v1").is_err());
    }

    #[test]
    fn missing_api_key_variable_is_an_error() {
        let cfg = ClusterConfig {
            endpoints: vec![ClusterEndpoint {
                url: "http://127.0.0.1:1/v1".into(),
                model: "m".into(),
                api_key_env: Some("VOICE_EDGE_TEST_SURELY_UNSET_KEY".into()),
            }],
            ..ClusterConfig::default()
        };
        let err = ClusterClient::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("VOICE_EDGE_TEST_SURELY_UNSET_KEY"), "{err}");
    }

    #[tokio::test]
    async fn no_endpoints_means_all_open() {
        let client = ClusterClient::new(&ClusterConfig::default()).unwrap();
        assert!(!client.is_available());
        let (tx, _rx) = mpsc::channel(4);
        let outcome = client.stream_turn(ClusterRequest::default(), tx).await;
        assert_eq!(outcome.error, Some(ClusterErrorKind::AllEndpointsOpen));
        assert!(outcome.attempts.is_empty());
    }

    #[tokio::test]
    async fn refused_connection_is_a_connection_error_and_counts() {
        // Bind then drop: nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = ClusterConfig {
            endpoints: vec![ClusterEndpoint { url: format!("http://127.0.0.1:{port}/v1"), model: "m".into(), api_key_env: None }],
            ..ClusterConfig::default()
        };
        let opts = ClientOptions { breaker: BreakerConfig { failure_threshold: 1, cool_down: Duration::from_secs(60) }, ..ClientOptions::default() };
        let client = ClusterClient::with_options(&cfg, opts).unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let outcome = client.stream_turn(ClusterRequest::default(), tx.clone()).await;
        assert_eq!(outcome.error, Some(ClusterErrorKind::Connection), "{outcome:?}");
        assert_eq!(client.breaker_states(), vec![BreakerState::Open]);
        assert!(!client.is_available());
        let outcome = client.stream_turn(ClusterRequest::default(), tx).await;
        assert_eq!(outcome.error, Some(ClusterErrorKind::AllEndpointsOpen));
        assert_eq!(outcome.skipped_open, 1);
    }
}

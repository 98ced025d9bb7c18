//! The browser widget over WebRTC: HTTP signalling in the shape of WHIP
//! (RFC 9725), the widget's static files, and the registry of live
//! sessions with admission control and drain.
//!
//! Routes (merged into the node's HTTP server, [`super::http::router`]):
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `GET /widget` | the widget page (`web/widget.html`) |
//! | `GET /widget.js`, `GET /widget.css` | the embeddable script and its style |
//! | `POST /webrtc/sessions` | SDP offer (`application/sdp`) -> `201 Created`, SDP answer, `Location` |
//! | `GET /webrtc/sessions` | the live sessions, as JSON (operators, tests) |
//! | `DELETE /webrtc/sessions/{id}` | hang up and release the session |
//! | `OPTIONS` on both | CORS preflight |
//!
//! Refusals: a malformed offer is 400 with the reason ([`check_offer`]),
//! an offer over `webrtc.max_offer_bytes` 413, a foreign origin 403, a
//! wrong content type 415, a full node or a draining one 503 (with
//! Retry-After when full).
//!
//! Each session ([`session`]) is one peer connection (ICE, DTLS-SRTP, SCTP
//! from the `webrtc` crate) and one driver task; the registry here only
//! counts, names and signals them. Drain: new sessions are refused, running
//! ones get until the deadline and are then hung up, and
//! [`WebrtcService::drain`] returns when every session task has finished
//! (its outcome events are in the spool by then).

mod session;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::ops::metrics::{Desc, GaugeFamily};
use crate::ops::webrtc_config::WebrtcConfig;
use crate::proto::whip::{check_offer, check_origin, SessionId, WhipError};
use crate::runtime::daemon::Node;

pub use session::Control;

/// Errors setting up a session (the POST's 4xx/5xx).
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    #[error(transparent)]
    Offer(#[from] WhipError),
    #[error("the WebRTC stack refused the offer: {0}")]
    Negotiation(String),
    #[error("WebRTC stack: {0}")]
    Stack(String),
    #[error("no free UDP port in webrtc.udp_port_range {lo}-{hi}")]
    NoPort { lo: u16, hi: u16 },
    #[error("ICE candidate gathering did not finish in {0:?}")]
    Gathering(Duration),
}

const WIDGET_HTML: &str = include_str!("../../../web/widget.html");
const WIDGET_JS: &str = include_str!("../../../web/widget.js");
const WIDGET_CSS: &str = include_str!("../../../web/widget.css");

/// A live session as the registry sees it.
struct Entry {
    site: String,
    created: Instant,
    state: Arc<Mutex<&'static str>>,
    control: mpsc::UnboundedSender<Control>,
}

/// `GET /webrtc/sessions`' items.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SessionInfo {
    pub id: String,
    pub site: String,
    pub state: String,
    pub age_s: f64,
}

/// The widget's sessions on this node.
pub struct WebrtcService {
    node: Arc<Node>,
    cfg: WebrtcConfig,
    sessions: Mutex<HashMap<SessionId, Entry>>,
    /// Admitted but not yet registered (setting up) or registered.
    reserved: Mutex<usize>,
    ports: Mutex<BTreeSet<u16>>,
    draining: AtomicBool,
    /// Woken whenever a session ends.
    ended: Notify,
    gauge: Arc<GaugeFamily>,
}

impl WebrtcService {
    /// The service for `cfg`; registers its gauge
    /// (`voice_edge_webrtc_sessions`) with the node's metrics.
    pub fn new(node: Arc<Node>, cfg: WebrtcConfig) -> Arc<WebrtcService> {
        let gauge = Arc::new(GaugeFamily::new(Desc::new(
            "voice_edge_webrtc_sessions",
            "Browser (WebRTC) sessions open now, from offer to hang-up.",
        )));
        if let Err(e) = node.metrics.register(gauge.clone()) {
            tracing::warn!(error = %e, "webrtc session gauge not registered");
        }
        Arc::new(WebrtcService {
            node,
            cfg,
            sessions: Mutex::new(HashMap::new()),
            reserved: Mutex::new(0),
            ports: Mutex::new(BTreeSet::new()),
            draining: AtomicBool::new(false),
            ended: Notify::new(),
            gauge,
        })
    }

    /// Sessions open now (set up or running).
    pub fn open_sessions(&self) -> usize {
        *lock(&self.reserved)
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        let now = Instant::now();
        let mut list: Vec<SessionInfo> = lock(&self.sessions)
            .iter()
            .map(|(id, e)| SessionInfo {
                id: id.to_string(),
                site: e.site.clone(),
                state: (*lock(&e.state)).to_owned(),
                age_s: now.duration_since(e.created).as_secs_f64(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Refuses new sessions; lets running ones go on until `deadline`, then
    /// hangs them up; returns when all have ended (bounded: a session that
    /// does not end within 10 s of its hang-up is abandoned and logged).
    pub async fn drain(&self, deadline: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        let mut hung_up = false;
        loop {
            let open = self.open_sessions();
            if open == 0 {
                return;
            }
            let now = Instant::now();
            if now >= until && !hung_up {
                tracing::info!(open, "drain deadline: hanging up browser sessions");
                for e in lock(&self.sessions).values() {
                    let _ = e.control.send(Control::Hangup { reason: "node draining".into() });
                }
                hung_up = true;
            }
            if hung_up && now >= until + Duration::from_secs(10) {
                tracing::error!(open, "browser sessions did not end after the drain hang-up");
                return;
            }
            let wait = if hung_up { Duration::from_millis(200) } else { until.saturating_duration_since(now).min(Duration::from_millis(200)) };
            let _ = tokio::time::timeout(wait, self.ended.notified()).await;
        }
    }

    /// Takes one slot, or says why not.
    fn admit(&self) -> Result<Slot<'_>, Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::Draining);
        }
        let mut n = lock(&self.reserved);
        if *n >= self.cfg.max_sessions as usize {
            return Err(Refusal::Full);
        }
        *n += 1;
        self.gauge.set(*n as f64);
        Ok(Slot { service: self, port: None, armed: true })
    }

    fn release(&self) {
        let mut n = lock(&self.reserved);
        *n = n.saturating_sub(1);
        self.gauge.set(*n as f64);
        drop(n);
        self.ended.notify_waiters();
    }

    /// A UDP port from `webrtc.udp_port_range` that is free now.
    fn take_port(&self) -> Result<Option<u16>, WebrtcError> {
        let Some([lo, hi]) = self.cfg.udp_port_range else { return Ok(None) };
        let mut used = lock(&self.ports);
        for port in lo..=hi {
            if used.contains(&port) {
                continue;
            }
            if UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, port)).is_ok() {
                used.insert(port);
                return Ok(Some(port));
            }
        }
        Err(WebrtcError::NoPort { lo, hi })
    }

    fn free_port(&self, port: u16) {
        lock(&self.ports).remove(&port);
    }

    fn bind_addr(&self, port: Option<u16>) -> SocketAddr {
        SocketAddr::new(self.cfg.bind_ip, port.unwrap_or(0))
    }
}

/// One admitted session's claim on the service; released on drop unless
/// handed to the session task.
struct Slot<'a> {
    service: &'a WebrtcService,
    port: Option<u16>,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(p) = self.port {
                self.service.free_port(p);
            }
            self.service.release();
        }
    }
}

enum Refusal {
    Draining,
    Full,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The widget's routes; merge into the node's router.
pub fn routes(service: Arc<WebrtcService>) -> Router {
    let limit = service.cfg.max_offer_bytes;
    Router::new()
        .route("/", get(widget_html))
        .route("/widget", get(widget_html))
        .route("/widget.js", get(widget_js))
        .route("/widget.css", get(widget_css))
        .route("/webrtc/sessions", get(list_sessions).post(create_session).options(preflight))
        .route("/webrtc/sessions/{id}", delete(delete_session).options(preflight))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(service)
}

async fn widget_html() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], WIDGET_HTML).into_response()
}

async fn widget_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], WIDGET_JS).into_response()
}

async fn widget_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], WIDGET_CSS).into_response()
}

/// The CORS headers for a request from `origin`, when it is allowed.
fn cors(service: &WebrtcService, headers: &HeaderMap) -> Result<(String, Vec<(header::HeaderName, HeaderValue)>), Response> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match check_origin(origin, host, &service.cfg.allowed_origins) {
        Ok(site) => {
            let mut out = Vec::new();
            if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
                out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, o));
                out.push((header::VARY, HeaderValue::from_static("Origin")));
                out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Retry-After")));
            }
            Ok((site, out))
        }
        Err(e) => Err(text(StatusCode::FORBIDDEN, &e.to_string())),
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{body}\n")).into_response()
}

fn with_headers(mut r: Response, headers: Vec<(header::HeaderName, HeaderValue)>) -> Response {
    for (k, v) in headers {
        r.headers_mut().insert(k, v);
    }
    r
}

async fn preflight(State(service): State<Arc<WebrtcService>>, headers: HeaderMap) -> Response {
    let (_, mut h) = match cors(&service, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    h.push((header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET, DELETE, OPTIONS")));
    h.push((header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type")));
    h.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")));
    // WHIP (RFC 9725 §4.1): the formats a POST takes.
    h.push((header::HeaderName::from_static("accept-post"), HeaderValue::from_static("application/sdp")));
    with_headers(StatusCode::NO_CONTENT.into_response(), h)
}

async fn list_sessions(State(service): State<Arc<WebrtcService>>) -> Response {
    axum::Json(service.sessions()).into_response()
}

async fn create_session(State(service): State<Arc<WebrtcService>>, headers: HeaderMap, body: Bytes) -> Response {
    let (site, cors_headers) = match cors(&service, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reply = |r: Response| with_headers(r, cors_headers.clone());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/sdp") {
        return reply(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be sent as Content-Type: application/sdp"));
    }
    if body.len() > service.cfg.max_offer_bytes {
        return reply(text(StatusCode::PAYLOAD_TOO_LARGE, &format!("the offer is larger than {} bytes", service.cfg.max_offer_bytes)));
    }
    let summary = match check_offer(&body) {
        Ok(s) => s,
        Err(e) => return reply(text(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let mut slot = match service.admit() {
        Ok(s) => s,
        Err(Refusal::Draining) => return reply(text(StatusCode::SERVICE_UNAVAILABLE, "the node is draining; try another node")),
        Err(Refusal::Full) => {
            let r = text(StatusCode::SERVICE_UNAVAILABLE, "all browser sessions are in use; try again shortly");
            let mut r = reply(r);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(service.cfg.retry_after_s));
            return r;
        }
    };
    match service.take_port() {
        Ok(p) => slot.port = p,
        Err(e) => {
            tracing::error!(error = %e, "browser session refused");
            return reply(text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()));
        }
    }
    let id = SessionId::from_random(random_bytes());
    let offer = String::from_utf8_lossy(&body).into_owned();
    let setup = session::Setup {
        node: service.node.clone(),
        cfg: service.cfg.clone(),
        id: id.clone(),
        site: site.clone(),
        bind: service.bind_addr(slot.port),
        opus_payload_type: summary.opus_payload_type,
    };
    let started = match session::Session::negotiate(setup, offer).await {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                WebrtcError::Offer(_) | WebrtcError::Negotiation(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(session = %id, %site, error = %e, "browser session not set up");
            return reply(text(status, &e.to_string()));
        }
    };
    let answer = started.answer_sdp().to_owned();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let state = Arc::new(Mutex::new("connecting"));
    lock(&service.sessions).insert(
        id.clone(),
        Entry { site: site.clone(), created: Instant::now(), state: state.clone(), control: control_tx },
    );
    slot.armed = false;
    let port = slot.port;
    drop(slot);
    let svc = service.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
        started.run(control_rx, state).await;
        lock(&svc.sessions).remove(&session_id);
        if let Some(p) = port {
            svc.free_port(p);
        }
        svc.release();
    });
    tracing::info!(session = %id, %site, "browser session created");
    let mut r = reply((StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response());
    if let Ok(v) = HeaderValue::from_str(&id.location()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn delete_session(State(service): State<Arc<WebrtcService>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let cors_headers = match cors(&service, &headers) {
        Ok((_, h)) => h,
        Err(r) => return r,
    };
    let Some(id) = SessionId::parse(&id) else {
        return with_headers(text(StatusCode::NOT_FOUND, "no such session"), cors_headers);
    };
    let sent = lock(&service.sessions).get(&id).map(|e| e.control.send(Control::Hangup { reason: "page hung up (DELETE)".into() }).is_ok());
    let r = match sent {
        Some(true) => StatusCode::OK.into_response(),
        _ => text(StatusCode::NOT_FOUND, "no such session"),
    };
    with_headers(r, cors_headers)
}

/// 16 bytes no one can guess: the OS's random keys behind `RandomState`,
/// mixed with the time and a counter through SHA-256.
fn random_bytes() -> [u8; 16] {
    use sha2::Digest;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut digest = sha2::Sha256::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        digest.update(h.finish().to_le_bytes());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    digest.update(now.as_nanos().to_le_bytes());
    digest.update(std::process::id().to_le_bytes());
    let out = digest.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&out[..16]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ() {
        let a = SessionId::from_random(random_bytes());
        let b = SessionId::from_random(random_bytes());
        assert_ne!(a, b);
        assert!(SessionId::parse(a.as_str()).is_some());
    }

    #[test]
    fn widget_files_have_the_test_hooks() {
        for id in ["call-button", "hangup-button", "transcript", "agent-reply", "status", "rating"] {
            assert!(WIDGET_JS.contains(&format!("\"{id}\"")) || WIDGET_HTML.contains(&format!("\"{id}\"")), "{id}");
        }
    }
}

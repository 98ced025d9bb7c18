//! The node's HTTP server (axum): `GET /metrics`, `GET /healthz`,
//! `GET /readyz`. The WebRTC widget's routes merge into [`router`]'s result.
//!
//! - `/metrics`: [`Metrics::render`] as text exposition format 0.0.4.
//! - `/healthz`: 200 while the process can answer at all (liveness for a
//!   load balancer or orchestrator; systemd's watchdog covers the loops).
//! - `/readyz`: 200 only when models are loaded, sockets are bound and the
//!   node is not draining; 503 otherwise, with a JSON body naming each
//!   reason, so a balancer stops sending calls to a draining node.
//!
//! [`Readiness`] is three atomics flipped by `voice-edge serve` as it starts
//! and drains; [`serve`] runs until its shutdown future completes, then
//! stops accepting and finishes the requests in flight.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::ops::metrics::{self, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP server on {addr}: {source}")]
    Serve { addr: String, source: std::io::Error },
}

/// Whether the node should receive new calls.
#[derive(Debug, Default)]
pub struct Readiness {
    models_loaded: AtomicBool,
    sockets_bound: AtomicBool,
    draining: AtomicBool,
}

/// `/readyz`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReadinessReport {
    pub ready: bool,
    /// Why not ready: `models_not_loaded`, `sockets_not_bound`, `draining`.
    pub reasons: Vec<String>,
}

impl Readiness {
    pub fn new() -> Self {
        Readiness::default()
    }
    pub fn set_models_loaded(&self, loaded: bool) {
        self.models_loaded.store(loaded, Ordering::SeqCst);
    }
    pub fn set_sockets_bound(&self, bound: bool) {
        self.sockets_bound.store(bound, Ordering::SeqCst);
    }
    /// While draining the node refuses new calls and `/readyz` says 503.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    pub fn report(&self) -> ReadinessReport {
        let mut reasons = Vec::new();
        if !self.models_loaded.load(Ordering::SeqCst) {
            reasons.push("models_not_loaded".to_owned());
        }
        if !self.sockets_bound.load(Ordering::SeqCst) {
            reasons.push("sockets_not_bound".to_owned());
        }
        if self.is_draining() {
            reasons.push("draining".to_owned());
        }
        ReadinessReport { ready: reasons.is_empty(), reasons }
    }
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// `/metrics`, `/healthz` and `/readyz`; merge more routes into the result.
pub fn router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics_handler)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n").into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let report = state.readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(report)).into_response()
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for requests in flight (bound that wait from outside
/// with a timeout if clients may hold connections open).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    tracing::info!(%addr, "HTTP server listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(|source| HttpError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::{CallResult, Channel};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`).
    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("reply in time").unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines.map(|l| l.split_once(": ").unwrap()).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Reply { status, headers, body: body.to_owned() }
    }

    struct Running {
        addr: std::net::SocketAddr,
        state: HttpState,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), HttpError>>,
    }

    async fn start() -> Running {
        let state = HttpState { metrics: Arc::new(Metrics::new("edge-test")), readiness: Arc::new(Readiness::new()) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router(state.clone()), async {
            let _ = stopped.await;
        }));
        Running { addr, state, stop, task }
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format() {
        let srv = start().await;
        srv.state.metrics.calls_total.with((Channel::Sip, CallResult::Transferred)).inc_by(2);
        let r = request(srv.addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        let ct = r.header("content-type").unwrap();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert!(r.body.contains("# TYPE voice_edge_calls_total counter\n"));
        assert!(r.body.contains("voice_edge_calls_total{channel=\"sip\",result=\"transferred\"} 2\n"), "{}", r.body);
        assert!(r.body.contains("turn_latency_seconds_bucket{stage=\"asr\",le=\"+Inf\"} 0\n"));
        srv.stop.send(()).unwrap();
        srv.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn healthz_is_ok_even_when_not_ready() {
        let srv = start().await;
        let r = request(srv.addr, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        assert_eq!(request(srv.addr, "GET", "/readyz").await.status, 503);
        srv.stop.send(()).unwrap();
        srv.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn readyz_follows_models_sockets_and_draining() {
        let srv = start().await;
        let read = |r: &Reply| serde_json::from_str::<ReadinessReport>(&r.body).unwrap();

        let r = request(srv.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(read(&r).reasons, vec!["models_not_loaded", "sockets_not_bound"]);

        srv.state.readiness.set_models_loaded(true);
        let r = request(srv.addr, "GET", "/readyz").await;
        assert_eq!((r.status, read(&r).reasons), (503, vec!["sockets_not_bound".to_owned()]));

        srv.state.readiness.set_sockets_bound(true);
        let r = request(srv.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 200);
        assert_eq!(read(&r), ReadinessReport { ready: true, reasons: vec![] });

        srv.state.readiness.set_draining(true);
        let r = request(srv.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(read(&r), ReadinessReport { ready: false, reasons: vec!["draining".into()] });
        srv.stop.send(()).unwrap();
        srv.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_other_routes_merge_in() {
        let state = HttpState { metrics: Arc::new(Metrics::new("edge-test")), readiness: Arc::new(Readiness::new()) };
        let app = router(state).merge(Router::new().route("/widget", get(|| async { "widget" })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        assert_eq!(request(addr, "GET", "/nope").await.status, 404);
        assert_eq!(request(addr, "GET", "/widget").await.body, "widget");
        assert_eq!(request(addr, "POST", "/metrics").await.status, 405);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_and_stops_listening() {
        let srv = start().await;
        assert_eq!(request(srv.addr, "GET", "/healthz").await.status, 200);
        srv.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), srv.task).await.expect("serve returns after shutdown").unwrap().unwrap();
        let refused = tokio::net::TcpStream::connect(srv.addr).await;
        assert!(refused.is_err(), "still accepting after shutdown");
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_request_in_flight() {
        let state = HttpState { metrics: Arc::new(Metrics::new("edge-test")), readiness: Arc::new(Readiness::new()) };
        let entered = Arc::new(tokio::sync::Notify::new());
        let entered_in = entered.clone();
        let slow = move || {
            let entered = entered_in.clone();
            async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        };
        let app = router(state).route("/slow", get(slow));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        let in_flight = tokio::spawn(request(addr, "GET", "/slow"));
        entered.notified().await;
        stop.send(()).unwrap();
        let r = in_flight.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "done"));
        task.await.unwrap().unwrap();
    }
}

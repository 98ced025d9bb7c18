//! The central-cluster client against real servers on loopback: a
//! llama-server (built by `scripts/llama-server.sh`) serving a small GGUF
//! model, and tiny in-process stubs for faults (a listener that never
//! answers, 500s, a stream cut before its first sentence). Each test bounds
//! itself in time; servers are killed by a Drop guard. Tests run one at a
//! time (a shared lock): two cores do not fit several models decoding.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use voice_edge::ops::network_config::{ClusterConfig, ClusterEndpoint};
use voice_edge::proto::openai::{BreakerConfig, BreakerState, ChatMessage, TurnContext};
use voice_edge::runtime::cluster::{
    ClientOptions, ClusterChunk, ClusterClient, ClusterErrorKind, ClusterOutcome, ClusterRequest,
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TEST_LIMIT: Duration = Duration::from_secs(180);

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VOICE_EDGE_CACHE") {
        return PathBuf::from(dir);
    }
    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/voice-edge")
}

fn llama_server_binary() -> PathBuf {
    let bin = cache_dir().join("llama-server/bin/llama-server");
    assert!(bin.is_file(), "{} is missing: run scripts/llama-server.sh first", bin.display());
    bin
}

fn small_model() -> PathBuf {
    let models = cache_dir().join("models");
    for name in ["smollm2-135m-instruct-q4_1.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"] {
        let path = models.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("no small GGUF model in {}: run scripts/setup.sh --models test", models.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A llama-server child process, killed on drop.
struct LlamaServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    fn start() -> LlamaServer {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("voice-edge-llama-server-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(llama_server_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "-c", "2048", "-np", "1", "-t", "2"])
            .arg("-m")
            .arg(small_model())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start llama-server");
        let mut server = LlamaServer { child: Some(child), port, log };
        server.wait_ready(Duration::from_secs(90));
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Polls `/health` until it answers 200.
    fn wait_ready(&mut self, limit: Duration) {
        use std::io::{Read, Write};
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("llama-server exited with {status} before it was ready:\n{log}");
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
                let mut head = [0u8; 16];
                if s.read(&mut head).is_ok_and(|n| n >= 12 && &head[9..12] == b"200") {
                    return;
                }
            }
            assert!(started.elapsed() < limit, "llama-server not ready after {limit:?} (log: {})", self.log.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
        // The log is kept for a failing test only.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// How a stub endpoint answers.
#[derive(Debug, Clone)]
enum StubMode {
    /// Accepts and never answers.
    Stall,
    /// An error status with a JSON body.
    Status(u16),
    /// 200 and this event-stream body, then close.
    Stream(String),
    /// 200, a chunked body with this one chunk, then the connection drops.
    CutAfter(String),
}

/// A loopback HTTP/1.1 stub; its task ends with the test's runtime.
struct Stub {
    addr: SocketAddr,
    mode: Arc<Mutex<StubMode>>,
    requests: Arc<AtomicU32>,
    last_body: Arc<Mutex<String>>,
}

impl Stub {
    async fn start(mode: StubMode) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::new(AtomicU32::new(0)),
            last_body: Arc::new(Mutex::new(String::new())),
        };
        let (mode, requests, last_body) = (stub.mode.clone(), stub.requests.clone(), stub.last_body.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let mode = mode.lock().unwrap().clone();
                if let StubMode::Stall = mode {
                    requests.fetch_add(1, Ordering::SeqCst);
                    held.push(socket);
                    continue;
                }
                let (requests, last_body) = (requests.clone(), last_body.clone());
                tokio::spawn(async move {
                    let _ = serve_one(socket, mode, &requests, &last_body).await;
                });
            }
        });
        stub
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn set(&self, mode: StubMode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve_one(mut socket: TcpStream, mode: StubMode, requests: &AtomicU32, last_body: &Mutex<String>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    *last_body.lock().unwrap() = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    requests.fetch_add(1, Ordering::SeqCst);
    match mode {
        StubMode::Stall => unreachable!("stalling connections are held by the accept loop"),
        StubMode::Status(code) => {
            let body = r#"{"error":{"message":"stub failure","type":"server_error"}}"#;
            let response = format!(
                "HTTP/1.1 {code} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await?;
        }
        StubMode::Stream(events) => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                .await?;
            socket.write_all(events.as_bytes()).await?;
        }
        StubMode::CutAfter(event) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            socket.write_all(format!("{head}{chunk}").as_bytes()).await?;
            socket.flush().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    socket.shutdown().await
}

/// A complete OpenAI-style stream that says `text`.
fn canned_stream(text: &str) -> String {
    let delta = serde_json::json!({"choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]});
    let stop = serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    let usage = serde_json::json!({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}});
    format!("data: {delta}\n\ndata: {stop}\n\ndata: {usage}\n\ndata: [DONE]\n\n")
}

fn endpoint(url: String) -> ClusterEndpoint {
    ClusterEndpoint { url, model: "test-model".into(), api_key_env: None }
}

fn make_client(urls: Vec<String>, first_token_ms: u32, total_ms: u32, breaker: BreakerConfig) -> ClusterClient {
    let cfg = ClusterConfig {
        endpoints: urls.into_iter().map(endpoint).collect(),
        max_tokens: 96,
        first_token_deadline_ms: first_token_ms,
        total_deadline_ms: total_ms,
    };
    ClusterClient::with_options(&cfg, ClientOptions { breaker, ..ClientOptions::default() }).unwrap()
}

fn request(question: &str) -> ClusterRequest {
    ClusterRequest {
        context: TurnContext {
            instructions: "You are the phone agent of a small online shop. Answer politely in short sentences.".into(),
            flow_state: "order_status".into(),
            intent: Some("order_status".into()),
            intent_confidence: Some(0.41),
            route_reason: Some("low_intent_confidence".into()),
        },
        history: vec![
            ChatMessage::user("Hello?"),
            ChatMessage::assistant("Hello, this is the shop. How can I help you?"),
            ChatMessage::user(question),
        ],
        temperature: 0.0,
        max_tokens: None,
    }
}

/// Sentences with their arrival time (ms after `start`).
type Heard = Vec<(f64, String)>;

async fn run_turn(client: &ClusterClient, req: ClusterRequest) -> (ClusterOutcome, Heard) {
    let (tx, mut rx) = mpsc::channel(16);
    let start = Instant::now();
    let collect = async {
        let mut heard = Vec::new();
        while let Some(ClusterChunk::Sentence(s)) = rx.recv().await {
            heard.push((start.elapsed().as_secs_f64() * 1000.0, s));
        }
        heard
    };
    tokio::join!(client.stream_turn(req, tx), collect)
}

fn no_breaker() -> BreakerConfig {
    BreakerConfig { failure_threshold: 100, cool_down: Duration::from_secs(1) }
}

#[tokio::test]
async fn escalated_turn_streams_sentences_and_reports_usage() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let server = LlamaServer::start();
        let client = make_client(vec![server.url()], 5_000, 60_000, no_breaker());
        let (outcome, heard) =
            run_turn(&client, request("My parcel is late. Tell me in three short sentences what I can do.")).await;
        assert_eq!(outcome.error, None, "{outcome:#?}");
        assert!(outcome.sentences >= 2, "expected several sentences: {outcome:#?}");
        assert_eq!(heard.len() as u32, outcome.sentences);
        let joined: Vec<&str> = heard.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(joined.join(" "), outcome.spoken);
        assert!(heard.iter().all(|(_, s)| !s.trim().is_empty()));
        // Streamed: the first sentence was heard before the last one.
        assert!(heard[0].0 < heard[heard.len() - 1].0, "{heard:?}");
        let usage = outcome.usage.expect("usage reported with include_usage");
        assert!(usage.prompt_tokens > 30, "system message and history are in the prompt: {usage:?}");
        assert!((1..=96).contains(&usage.completion_tokens), "{usage:?}");
        let first_token = outcome.first_token_ms.unwrap();
        let first_sentence = outcome.first_sentence_ms.unwrap();
        assert!(first_token <= first_sentence && first_sentence <= outcome.total_ms, "{outcome:#?}");
        assert!(matches!(outcome.finish_reason.as_deref(), Some("stop" | "length")), "{outcome:#?}");
        assert_eq!((outcome.endpoint, outcome.failover_attempts, outcome.attempts.len()), (Some(0), 0, 1));
        assert_eq!(client.breaker_states(), vec![BreakerState::Closed]);
        eprintln!(
            "escalated turn: {} sentences, first token {first_token:.0} ms, first sentence {first_sentence:.0} ms, total {:.0} ms, usage {usage:?}",
            outcome.sentences, outcome.total_ms
        );
    })
    .await
    .expect("test ran past its time limit");
}

/// A loopback relay in front of `upstream` that signals `on_first_content`
/// once the first non-empty `"content"` delta has passed through to the client.
async fn content_relay(upstream: u16, on_first_content: tokio::sync::oneshot::Sender<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else { return };
        let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        let mut signal = Some(on_first_content);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if signal.is_some() {
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if text.match_indices("\"content\":\"").any(|(i, m)| !text[i + m.len()..].starts_with('"')) {
                    let _ = signal.take().unwrap().send(());
                }
            }
        }
        let _ = client_write.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn server_killed_mid_stream_reports_what_was_received() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let mut server = LlamaServer::start();
        let (first_content, content_seen) = tokio::sync::oneshot::channel();
        let relay = content_relay(server.port, first_content).await;
        let client = make_client(vec![format!("http://{relay}/v1")], 5_000, 60_000, no_breaker());
        let (tx, mut rx) = mpsc::channel(16);
        let collect = async move {
            let mut heard = Vec::new();
            while let Some(ClusterChunk::Sentence(s)) = rx.recv().await {
                heard.push(s);
            }
            heard
        };
        // The cluster dies right after its first answer token went out.
        let kill = async {
            content_seen.await.expect("the relay saw answer content");
            server.kill();
        };
        let req = request("Explain in ten sentences how parcel delivery works.");
        let (outcome, heard, ()) = tokio::join!(client.stream_turn(req, tx), collect, kill);
        assert!(
            matches!(outcome.error, Some(ClusterErrorKind::Connection | ClusterErrorKind::Protocol)),
            "{outcome:#?}"
        );
        assert!(outcome.attempts[0].received_chars > 0, "what was received is reported: {outcome:#?}");
        assert!(outcome.first_token_ms.is_some());
        assert_eq!(outcome.sentences as usize, heard.len());
        assert_eq!(outcome.spoken, heard.join(" "), "the outcome says exactly what the caller heard");
        assert_eq!(outcome.finish_reason, None, "the answer did not finish");
        assert_eq!(outcome.usage, None);
        assert!(outcome.error_detail.is_some());
    })
    .await
    .expect("test ran past its time limit");
}

#[tokio::test]
async fn stream_cut_before_anything_was_spoken_fails_over() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let partial = r#"data: {"choices":[{"index":0,"delta":{"content":"Let me check th"}}]}"#;
        let dying = Stub::start(StubMode::CutAfter(format!("{partial}\n\n"))).await;
        let server = LlamaServer::start();
        let client = make_client(vec![dying.url(), server.url()], 5_000, 60_000, no_breaker());
        let (outcome, heard) = run_turn(&client, request("Where is my parcel? Answer in one sentence.")).await;
        assert_eq!(outcome.error, None, "{outcome:#?}");
        assert_eq!((outcome.endpoint, outcome.failover_attempts), (Some(1), 1));
        assert_eq!(outcome.attempts[0].error, Some(ClusterErrorKind::Connection), "{outcome:#?}");
        assert_eq!(outcome.attempts[0].received_chars, "Let me check th".len());
        assert!(!heard.is_empty());
        assert!(!outcome.spoken.contains("Let me check th"), "the cut endpoint's words are never spoken");
        assert!(outcome.usage.is_some_and(|u| u.completion_tokens > 0));
        assert_eq!(dying.requests(), 1);
        let sent: serde_json::Value = serde_json::from_str(&dying.last_body.lock().unwrap()).unwrap();
        assert_eq!((sent["stream"].as_bool(), sent["stream_options"]["include_usage"].as_bool()), (Some(true), Some(true)));
    })
    .await
    .expect("test ran past its time limit");
}

#[tokio::test]
async fn stalled_server_times_out_at_the_first_token_deadline() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let stall = Stub::start(StubMode::Stall).await;
        let client_one = make_client(vec![stall.url()], 300, 3_000, no_breaker());
        let started = Instant::now();
        let (outcome, heard) = run_turn(&client_one, request("Hello?")).await;
        let waited = started.elapsed();
        assert_eq!(outcome.error, Some(ClusterErrorKind::TimeoutFirstToken), "{outcome:#?}");
        assert!(heard.is_empty() && outcome.sentences == 0);
        assert!(waited >= Duration::from_millis(290) && waited < Duration::from_millis(300 + 200), "waited {waited:?}");
        assert_eq!(stall.requests(), 1);

        // With a second endpoint the caller still gets an answer.
        let healthy = Stub::start(StubMode::Stream(canned_stream("Your parcel arrives tomorrow. Anything else?"))).await;
        let client_two = make_client(vec![stall.url(), healthy.url()], 300, 3_000, no_breaker());
        let (outcome, heard) = run_turn(&client_two, request("Hello?")).await;
        assert_eq!(outcome.error, None, "{outcome:#?}");
        assert_eq!(heard.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["Your parcel arrives tomorrow.", "Anything else?"]);
        assert_eq!(outcome.attempts[0].error, Some(ClusterErrorKind::TimeoutFirstToken));
        assert_eq!((outcome.endpoint, outcome.failover_attempts), (Some(1), 1));
        assert!(outcome.first_token_ms.unwrap() >= 290.0, "{outcome:#?}");

        // A total deadline shorter than the first-token one reports the total.
        let client_short = make_client(vec![stall.url()], 300, 300, no_breaker());
        let (outcome, _) = run_turn(&client_short, request("Hello?")).await;
        assert_eq!(outcome.error, Some(ClusterErrorKind::TimeoutTotal), "{outcome:#?}");
    })
    .await
    .expect("test ran past its time limit");
}

#[tokio::test]
async fn failing_endpoint_opens_its_breaker_and_a_probe_closes_it() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let flaky = Stub::start(StubMode::Status(500)).await;
        let backup = Stub::start(StubMode::Stream(canned_stream("This is the backup answering."))).await;
        let breaker = BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(400) };
        let client = make_client(vec![flaky.url(), backup.url()], 1_000, 3_000, breaker);

        for turn in 1..=3 {
            let (outcome, heard) = run_turn(&client, request("Hello?")).await;
            assert_eq!(outcome.error, None, "turn {turn}: {outcome:#?}");
            assert_eq!(heard.len(), 1);
            assert_eq!(outcome.attempts[0].error, Some(ClusterErrorKind::Http { status: 500 }));
            assert_eq!((outcome.endpoint, outcome.failover_attempts), (Some(1), 1));
            assert_eq!(flaky.requests(), turn);
        }
        assert_eq!(client.breaker_states(), vec![BreakerState::Open, BreakerState::Closed]);

        // Open: the flaky endpoint is skipped, not asked.
        let (outcome, _) = run_turn(&client, request("Hello?")).await;
        assert_eq!(outcome.error, None);
        assert_eq!((outcome.endpoint, outcome.failover_attempts, outcome.skipped_open), (Some(1), 0, 1));
        assert_eq!(flaky.requests(), 3);

        // Healed, but still cooling down: skipped.
        flaky.set(StubMode::Stream(canned_stream("The primary is back.")));
        let (outcome, _) = run_turn(&client, request("Hello?")).await;
        assert_eq!(outcome.endpoint, Some(1));
        assert_eq!(flaky.requests(), 3);

        // After the cool-down one probe goes to it and closes the breaker.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(client.breaker_states()[0], BreakerState::HalfOpen);
        let (outcome, heard) = run_turn(&client, request("Hello?")).await;
        assert_eq!(outcome.error, None, "{outcome:#?}");
        assert!(outcome.attempts[0].probe);
        assert_eq!(outcome.endpoint, Some(0));
        assert_eq!(heard[0].1, "The primary is back.");
        assert_eq!(flaky.requests(), 4);
        assert_eq!(client.breaker_states(), vec![BreakerState::Closed, BreakerState::Closed]);

        // With both endpoints failing, the caller gets the error to fall back on.
        flaky.set(StubMode::Status(503));
        backup.set(StubMode::Status(500));
        let (outcome, heard) = run_turn(&client, request("Hello?")).await;
        assert!(heard.is_empty());
        assert_eq!(outcome.error, Some(ClusterErrorKind::Http { status: 500 }), "{outcome:#?}");
        assert_eq!(outcome.attempts.len(), 2);
    })
    .await
    .expect("test ran past its time limit");
}

#[tokio::test]
async fn dropping_the_receiver_cancels_the_turn() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_LIMIT, async {
        let stub = Stub::start(StubMode::Stream(canned_stream("One. Two. Three. Four."))).await;
        let client = make_client(vec![stub.url()], 1_000, 3_000, no_breaker());
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let outcome = client.stream_turn(request("Count."), tx).await;
        assert_eq!(outcome.error, Some(ClusterErrorKind::Cancelled), "{outcome:#?}");
        assert_eq!(outcome.sentences, 0);
        assert_eq!(client.breaker_states(), vec![BreakerState::Closed], "a hang-up is not the endpoint's fault");

        // Dropping the future (the call hung up) stops at once.
        let stall = Stub::start(StubMode::Stall).await;
        let client = make_client(vec![stall.url()], 2_000, 3_000, no_breaker());
        let (tx, _rx) = mpsc::channel(1);
        let started = Instant::now();
        let hung_up = tokio::time::timeout(Duration::from_millis(100), client.stream_turn(request("Hi"), tx)).await;
        assert!(hung_up.is_err() && started.elapsed() < Duration::from_millis(500));
        assert!(client.is_available(), "the abandoned attempt freed the endpoint");
    })
    .await
    .expect("test ran past its time limit");
}

/// An escalated turn inside a live call: the router sends a hard turn to
/// the real llama-server, its sentences are synthesized and spoken as they
/// arrive, and the turn record carries the tier and the cluster's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalated_turn_in_a_live_call_is_spoken() {
    use voice_edge::call::router::{Router, RouterConfig};
    use voice_edge::call::TurnTier;
    use voice_edge::engine::pool::EnginePool;
    use voice_edge::engine::tts::{Tts, TtsConfig};
    use voice_edge::ops::config::Config;
    use voice_edge::runtime::live_call::CallServices;
    use voice_edge::runtime::scripted_call::{run_scripted_call, CallerScript};

    let _serial = SERIAL.lock().await;
    let server = LlamaServer::start();
    let cfg = Config::embedded().unwrap();
    let flow = Arc::new(cfg.default_flow().unwrap());
    let pool = Arc::new(
        EnginePool::start(&cfg, cfg.engine.clone(), std::slice::from_ref(&flow))
            .expect("engine start (models missing? run `voice-edge models fetch --set test`)"),
    );
    // A router that finds every spoken turn hard: the cluster answers.
    let router = Router::new(RouterConfig { min_intent_confidence: 0.999, ..RouterConfig::default() }).unwrap();
    let client = Arc::new(make_client(vec![server.url()], 8_000, 30_000, no_breaker()));
    let services = CallServices { pool, router: Arc::new(router), cluster: Some((client, tokio::runtime::Handle::current())) };
    let caller = Tts::new(TtsConfig { voice: "en-us+m3".into(), rate_wpm: 150, ..Default::default() }).unwrap();
    let question = caller.speak("Hello, can you tell me what your opening hours are?").unwrap().samples;
    let script = CallerScript { utterances: vec![question], think_time: Duration::from_millis(600), patience: Duration::from_secs(40) };
    let mut call_cfg = cfg.call.clone();
    // The 135M model on a busy CPU: allow it time before the edge falls back.
    call_cfg.cluster_first_sentence_ms = 8_000;
    let report = tokio::task::spawn_blocking(move || run_scripted_call(&services, 11, flow, call_cfg, cfg.vad.clone(), &script))
        .await
        .unwrap();

    let turn = report.summary.turns.first().unwrap_or_else(|| panic!("no turn: {report:?}"));
    assert_eq!(turn.tier, TurnTier::Cluster, "turn record: {turn:?}");
    assert!(turn.escalated);
    assert!(turn.cluster_completion_tokens > 0 && turn.cluster_prompt_tokens > 0, "{turn:?}");
    assert!(!turn.reply.trim().is_empty(), "the cluster's answer is the reply: {turn:?}");
    // The answer was spoken: agent audio after the caller stopped.
    let from = (turn.speech_end_ms / 1000.0 * 16_000.0) as usize;
    let answer = &report.agent_audio[from.min(report.agent_audio.len())..];
    let rms = (answer.iter().map(|s| s * s).sum::<f32>() / answer.len().max(1) as f32).sqrt();
    assert!(answer.len() > 16_000 && rms > 0.01, "the escalated answer should be heard ({} samples, rms {rms})", answer.len());
    // And the outcome records say where it was answered and what it cost.
    let events = report.outcome_events("test-node", "esc-11", "test").unwrap();
    let json: serde_json::Value = serde_json::from_slice(&events[0].to_json().unwrap()).unwrap();
    assert_eq!(json["data"]["router"]["tier"], "cluster", "{json}");
    assert!(json["data"]["cost"]["cluster_completion_tokens"].as_u64().unwrap() > 0);
    drop(server);
}

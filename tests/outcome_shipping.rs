//! The outcome shipper against a real NATS JetStream server: every outcome
//! event recorded in the spool reaches the stream exactly once, whatever
//! fails on the way (collector down, collector killed mid-shipping, a
//! corrupt record, a full spool).
//!
//! Each test starts its own `nats-server -js` on a free loopback port with
//! a temporary store, kills it on drop, and bounds every wait. The server
//! is required: without it the tests fail, they do not skip.
//!
//! The last test runs the whole node (`voice-edge serve` with SIPp calls)
//! and `kill -9`s it while calls are ending and their events are written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_nats::jetstream;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use voice_edge::outcome::event::redact_number;
use voice_edge::outcome::{
    AppendOutcome, CallRecord, Channel, CorruptReason, Cost, Difficulty, Escalations, FlowRef, FsyncPolicy,
    IntentDecision, LatencySummary, OutcomeEvent, ReplyAction, Resolution, RouterDecision, SatisfactionRecord, Spool,
    SpoolConfig, SurveyMethod, TaskEventRecord, Timestamp, TurnLatency, TurnRecord,
};
use voice_edge::runtime::shipper::{Shipper, ShipperConfig, ShipperStats};

mod common;

const NODE: &str = "edge-lon-07";
const STREAM: &str = "OUTCOMES";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// A nats-server of our own

struct NatsServer {
    child: Child,
    port: u16,
}

/// The `nats-server` binary (on PATH, or in /usr/sbin where Debian puts
/// it and a non-root PATH may not look); fails the test when missing.
fn nats_server_bin() -> PathBuf {
    let on_path = Command::new("nats-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|s| s.success()) {
        return PathBuf::from("nats-server");
    }
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.is_file() {
        return sbin;
    }
    panic!("nats-server not found: install nats-server (apt-get install nats-server)");
}

impl NatsServer {
    /// Starts `nats-server -js` on `port` with its store in `store` and
    /// waits until it accepts connections.
    fn start(port: u16, store: &Path) -> NatsServer {
        fs::create_dir_all(store).unwrap();
        let log = File::create(store.with_extension("log")).unwrap();
        let spawned = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn();
        let child = spawned.unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let mut server = NatsServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                let log = fs::read_to_string(store.with_extension("log")).unwrap_or_default();
                panic!("nats-server exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "nats-server did not listen on port {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// SIGKILL: no goodbye to clients, no final flush of its store.
    fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn url(&self) -> String {
        url(self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

// ---------------------------------------------------------------------------
// Realistic outcome events: a call of `turns` caller turns, its record and
// the caller's rating.

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(1_774_088_130_000 + ms))
}

fn call_events(call: u64) -> Vec<OutcomeEvent> {
    let call_id = format!("a84f{call:04x}-sip-{call:04}");
    let start = call * 97_000;
    let turns = 3u32;
    let mut events = Vec::new();
    let mut cost = Cost::default();
    let mut v2v = Vec::new();
    let intents = ["order_status", "order_status", "goodbye"];
    for n in 0..turns {
        let t0 = start + 2_000 + u64::from(n) * 9_000;
        let latency = 380.0 + (call * 7 + u64::from(n) * 13) as f64 % 150.0;
        let turn_cost = Cost { local_inference_ms: 190.0 + f64::from(n) * 11.5, ..Cost::default() };
        cost.add(&turn_cost);
        v2v.push(latency);
        let (task, task_events) = match n {
            0 => (Some("order_status".to_string()), vec![TaskEventRecord::Attempted { task: "order_status".into() }]),
            1 => (
                Some("order_status".to_string()),
                vec![
                    TaskEventRecord::SlotFilled { task: "order_status".into(), slot: "order_number".into() },
                    TaskEventRecord::Completed { task: "order_status".into() },
                ],
            ),
            _ => (None, vec![]),
        };
        events.push(
            OutcomeEvent::turn(
                NODE,
                TurnRecord {
                    schema_version: 1,
                    call_id: call_id.clone(),
                    turn: n,
                    started: ts(t0),
                    ended: ts(t0 + 3_750),
                    transcript: match n {
                        0 => "hi I'd like to know where my order is".into(),
                        1 => format!("my order number is {}", 456_000 + call),
                        _ => "that's all thanks bye".into(),
                    },
                    dtmf: None,
                    intent: Some(IntentDecision { label: intents[n as usize].into(), confidence: 0.97, margin: 0.91 }),
                    router: Some(RouterDecision { tier: "edge".into(), reason: "intent_confident".into() }),
                    reply: match n {
                        0 => "Sure, what's the order number?".into(),
                        1 => format!("Order {} shipped yesterday and arrives on Friday.", 456_000 + call),
                        _ => "Thanks for calling, goodbye.".into(),
                    },
                    action: if n + 1 == turns { ReplyAction::EndCall } else { ReplyAction::Continue },
                    task,
                    task_events,
                    latency: TurnLatency {
                        end_of_utterance_ms: Some(240.0),
                        asr_ms: Some(118.4),
                        intent_ms: Some(61.2),
                        tts_first_frame_ms: Some(22.9),
                        voice_to_voice_ms: Some(latency),
                    },
                    barge_in: false,
                    cost: turn_cost,
                },
            )
            .unwrap(),
        );
    }
    let ended = start + 2_000 + u64::from(turns) * 9_000;
    let mut features = BTreeMap::new();
    features.insert("turns".to_string(), f64::from(turns));
    features.insert("intent_margin_min".to_string(), 0.91);
    events.push(
        OutcomeEvent::call(
            NODE,
            CallRecord {
                schema_version: 1,
                call_id: call_id.clone(),
                channel: Channel::Sip,
                trunk_or_site: "trunk-eu-1".into(),
                number: "+442071838750".into(),
                caller: Some(redact_number(&format!("+4477009{call:05}"), b"test-salt")),
                started: ts(start),
                ended: ts(ended),
                duration_ms: ended - start,
                turns,
                intents: intents.iter().map(|s| s.to_string()).collect(),
                tasks_attempted: vec!["order_status".into()],
                tasks_completed: vec!["order_status".into()],
                resolution: Resolution::AtEdge,
                resolution_time_ms: Some(11_000 + 3_750),
                escalations: Escalations::default(),
                difficulty: Difficulty { score: 0.18, features },
                latency: LatencySummary::from_samples(&v2v),
                cost,
                flow: FlowRef { name: "retail".into(), version: 3 },
            },
        )
        .unwrap(),
    );
    events.push(
        OutcomeEvent::satisfaction(
            NODE,
            SatisfactionRecord {
                schema_version: 1,
                call_id,
                score: 1 + (call % 5) as u8,
                method: SurveyMethod::DtmfSurvey,
                time: ts(ended + 6_750),
            },
        )
        .unwrap(),
    );
    events
}

const EVENTS_PER_CALL: u64 = 5;

// ---------------------------------------------------------------------------
// Spool, shipper and stream helpers

fn spool_cfg(dir: &Path) -> SpoolConfig {
    // Production defaults (fsync every 20 ms), smaller segments so acks delete some.
    SpoolConfig { max_segment_bytes: 256 << 10, ..SpoolConfig::new(dir) }
}

fn shipper_cfg(port: u16) -> ShipperConfig {
    ShipperConfig {
        batch: 16,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        publish_timeout: Duration::from_millis(1_000),
        connect_timeout: Duration::from_millis(1_000),
        idle_poll: Duration::from_millis(10),
        ..ShipperConfig::new(url(port))
    }
}

/// Appends every event of `calls` and returns their ids (each call is
/// recorded as it completes: its events together).
fn record_calls(spool: &Mutex<Spool>, calls: impl IntoIterator<Item = u64>) -> Vec<String> {
    let mut ids = Vec::new();
    for call in calls {
        let mut s = spool.lock().unwrap();
        for event in call_events(call) {
            match s.append(&event.to_json().unwrap(), Instant::now()).unwrap() {
                AppendOutcome::Stored { .. } => ids.push(event.id().to_owned()),
                AppendOutcome::Dropped { reason } => panic!("dropped: {reason}"),
            }
        }
    }
    ids
}

struct Running {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<ShipperStats>,
    task: JoinHandle<ShipperStats>,
}

fn start_shipper(cfg: ShipperConfig, spool: &Arc<Mutex<Spool>>) -> Running {
    let shipper = Shipper::new(cfg, Arc::clone(spool)).unwrap();
    let stats = shipper.stats();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(stop_rx));
    Running { stop, stats, task }
}

impl Running {
    async fn wait(&mut self, what: &str, cond: impl Fn(&ShipperStats) -> bool) -> ShipperStats {
        let waited = tokio::time::timeout(WAIT, self.stats.wait_for(|s| cond(s))).await.map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => panic!("shipper ended while waiting for {what}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; stats: {:?}", *self.stats.borrow()),
        }
    }

    /// Asks it to stop and waits (bounded) for it to return.
    async fn stop(self) -> ShipperStats {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("shipper did not stop within 10 s")
            .expect("shipper task panicked")
    }
}

/// Every message of the stream as (Nats-Msg-Id, payload's event), after
/// checking that the header, the subject and the payload agree.
async fn stream_events(url: &str) -> Vec<(String, OutcomeEvent)> {
    let fetch = async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        let mut stream = js.get_stream(STREAM).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        let state = info.state;
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let msg = stream.get_raw_message(seq).await.unwrap();
            let id = msg.headers.get("Nats-Msg-Id").expect("Nats-Msg-Id header").as_str().to_owned();
            let event = OutcomeEvent::from_json(&msg.payload).unwrap();
            assert_eq!(event.id(), id, "header and payload ids differ");
            assert_eq!(msg.subject.as_str(), format!("outcomes.{}", event.event_type()));
            out.push((id, event));
        }
        assert_eq!(out.len() as u64, state.messages);
        out
    };
    tokio::time::timeout(WAIT, fetch).await.expect("reading the stream timed out")
}

/// The stream holds exactly one message per expected id, and nothing else.
async fn assert_exactly_once(url: &str, expected: &[String]) {
    let got = stream_events(url).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &got {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicated in the stream: {dupes:?}");
    let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(want.len(), expected.len(), "test bug: expected ids repeat");
    let have: BTreeSet<&str> = counts.keys().copied().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, unexpected {extra:?}");
    assert_eq!(got.len(), expected.len());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------

/// (a) Calls complete while the collector is down; once it starts, every
/// event arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_while_the_collector_is_down_arrive_once_it_is_up() {
    nats_server_bin();
    let tmp = TempDir::new().unwrap();
    let port = free_port();
    let (spool, _) = Spool::open(spool_cfg(&tmp.path().join("spool"))).unwrap();
    let spool = Arc::new(Mutex::new(spool));
    let mut shipper = start_shipper(shipper_cfg(port), &spool);

    let ids = record_calls(&spool, 0..40);
    let down = shipper.wait("connect failures while the collector is down", |s| s.errors >= 3).await;
    assert_eq!(down.published, 0);
    assert!(!down.connected);
    assert!(down.last_error.as_deref().unwrap().starts_with("connect"), "{down:?}");

    let server = NatsServer::start(port, &tmp.path().join("nats"));
    let total = ids.len() as u64;
    let done = shipper.wait("every event acked", |s| s.acked_seq == total && s.lag == 0).await;
    assert_eq!(done.published, total);
    assert_eq!(done.duplicates, 0);
    assert!(done.connected);
    let last = shipper.stop().await;
    assert_eq!((last.acked_seq, last.durable_seq, last.lag), (total, total, 0));
    assert_exactly_once(&server.url(), &ids).await;
    assert_eq!(spool.lock().unwrap().acked(), total);
}

/// (b) The collector is killed (SIGKILL) mid-shipping while calls go on,
/// the node restarts its shipper and spool, the collector comes back with
/// the same store: exactly one message per event. Then a copy of the spool
/// taken before any ack (as if every spool ack had been lost in a crash) is
/// shipped again: the stream, its dedupe state rebuilt from its store,
/// reports every one as a duplicate and stores none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_mid_shipping_and_restarted_keeps_exactly_once() {
    nats_server_bin();
    let tmp = TempDir::new().unwrap();
    let port = free_port();
    let store = tmp.path().join("nats");
    let spool_dir = tmp.path().join("spool");
    let server = NatsServer::start(port, &store);
    let (spool, _) = Spool::open(spool_cfg(&spool_dir)).unwrap();
    let spool = Arc::new(Mutex::new(spool));

    let early = 20u64;
    let mut ids = record_calls(&spool, 0..early);
    spool.lock().unwrap().commit(Instant::now()).unwrap();
    let replay_dir = tmp.path().join("replay");
    copy_dir(&spool_dir, &replay_dir);
    let mut shipper = start_shipper(ShipperConfig { batch: 8, ..shipper_cfg(port) }, &spool);

    // Calls keep completing, one every couple of milliseconds.
    let calls = 240u64;
    let producer = {
        let spool = Arc::clone(&spool);
        tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            for call in early..calls {
                ids.extend(record_calls(&spool, [call]));
                std::thread::sleep(Duration::from_millis(2));
            }
            ids
        })
    };

    let before = shipper.wait("PubAcks past the early calls", |s| s.published > early * EVENTS_PER_CALL).await;
    server.kill();
    let failing = shipper.wait("publish failures after the kill", |s| s.errors > before.errors).await;
    assert!(failing.last_error.is_some());

    ids.extend(tokio::time::timeout(WAIT, producer).await.expect("producer timed out").unwrap());
    let total = ids.len() as u64;
    assert_eq!(total, calls * EVENTS_PER_CALL);

    // The node restarts: shipper stopped (it is backing off: it returns at
    // once), the spool closed and recovered, a new shipper resumes at the ack.
    let first = shipper.stop().await;
    assert!(first.acked_seq < total, "the kill came after everything was shipped: {first:?}");
    drop(spool);
    let (spool, report) = Spool::open(spool_cfg(&spool_dir)).unwrap();
    assert_eq!(report.acked_seq, first.acked_seq);
    assert!(report.corrupt_records.is_empty(), "{report:?}");
    let spool = Arc::new(Mutex::new(spool));
    let mut shipper = start_shipper(ShipperConfig { batch: 8, ..shipper_cfg(port) }, &spool);
    shipper.wait("connect failures while the collector is down", |s| s.errors >= 1).await;

    let server = NatsServer::start(port, &store);
    let done = shipper.wait("every event acked", |s| s.acked_seq == total).await;
    assert!(done.published >= total - first.acked_seq, "{done:?}");
    shipper.stop().await;
    assert_exactly_once(&server.url(), &ids).await;

    // Every spool ack lost: the early records go again, and are dropped.
    let (replay, report) = Spool::open(spool_cfg(&replay_dir)).unwrap();
    let resend = early * EVENTS_PER_CALL;
    assert_eq!((report.acked_seq, replay.durable_seq()), (0, resend));
    let replay = Arc::new(Mutex::new(replay));
    let mut again = start_shipper(shipper_cfg(port), &replay);
    let r = again.wait("the replay acked", |s| s.acked_seq == resend).await;
    assert_eq!((r.published, r.duplicates), (resend, resend), "{r:?}");
    again.stop().await;
    assert_exactly_once(&server.url(), &ids).await;
}

/// (c) A record damaged in the middle of a segment (between two commits)
/// is reported at open, skipped, and everything else is delivered; a
/// sound record that is not an outcome event is counted and passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_in_the_middle_is_reported_skipped_and_the_rest_delivered() {
    nats_server_bin();
    let tmp = TempDir::new().unwrap();
    let port = free_port();
    let spool_dir = tmp.path().join("spool");
    let cfg = SpoolConfig { fsync: FsyncPolicy::Always, ..spool_cfg(&spool_dir) };
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let spool = Mutex::new(spool);
    let mut ids = record_calls(&spool, 0..6);
    let seg = segments(&spool_dir).pop().unwrap();
    let damaged_at = fs::metadata(&seg).unwrap().len();
    ids.extend(record_calls(&spool, 6..12));
    // And a record that is checksummed fine but is no outcome event.
    spool.lock().unwrap().append(br#"{"not":"an event"}"#, Instant::now()).unwrap();
    drop(spool);
    assert_eq!(segments(&spool_dir).len(), 1);

    // Flip payload bytes of the first record of the second commit (seq 31).
    let mut f = OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    let at = damaged_at + 16 + 40;
    let mut b = [0u8; 4];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b.map(|x| !x)).unwrap();
    drop(f);
    let lost = ids.remove(30);

    let (spool, report) = Spool::open(cfg).unwrap();
    assert_eq!(report.corrupt_records.len(), 1, "{report:?}");
    let c = &report.corrupt_records[0];
    assert_eq!((c.offset, c.reason), (damaged_at, CorruptReason::ChecksumMismatch));
    assert_eq!(report.unacked_records, ids.len() as u64 + 1);
    let total = spool.durable_seq();
    assert_eq!(total, 61);

    let server = NatsServer::start(port, &tmp.path().join("nats"));
    let spool = Arc::new(Mutex::new(spool));
    let mut shipper = start_shipper(shipper_cfg(port), &spool);
    let done = shipper.wait("every record acked", |s| s.acked_seq == total).await;
    assert_eq!((done.published, done.invalid, done.lag), (59, 1, 0));
    shipper.stop().await;
    assert_exactly_once(&server.url(), &ids).await;
    assert!(!stream_events(&server.url()).await.iter().any(|(id, _)| *id == lost));
}

/// (d) The spool fills while the collector is down: appends report drops,
/// the counter agrees, and what was stored is delivered, once, after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_and_counts_and_delivers_what_it_stored() {
    nats_server_bin();
    let tmp = TempDir::new().unwrap();
    let port = free_port();
    let cfg =
        SpoolConfig { max_segment_bytes: 16 << 10, max_total_bytes: 64 << 10, ..spool_cfg(&tmp.path().join("spool")) };
    let (spool, _) = Spool::open(cfg).unwrap();
    let spool = Arc::new(Mutex::new(spool));
    let mut shipper = start_shipper(shipper_cfg(port), &spool);

    let (mut stored, mut dropped) = (Vec::new(), 0u64);
    for call in 0..40 {
        let mut s = spool.lock().unwrap();
        for event in call_events(call) {
            match s.append(&event.to_json().unwrap(), Instant::now()).unwrap() {
                AppendOutcome::Stored { .. } => stored.push(event.id().to_owned()),
                AppendOutcome::Dropped { .. } => dropped += 1,
            }
        }
    }
    assert!(dropped > 50 && stored.len() > 20, "stored {}, dropped {dropped}", stored.len());
    assert_eq!(spool.lock().unwrap().stats().dropped, dropped);
    assert_eq!(stored.len() as u64 + dropped, 40 * EVENTS_PER_CALL);
    shipper.wait("connect failures while the collector is down", |s| s.errors >= 1).await;

    let server = NatsServer::start(port, &tmp.path().join("nats"));
    let total = stored.len() as u64;
    shipper.wait("every stored event acked", |s| s.acked_seq == total && s.lag == 0).await;
    assert_exactly_once(&server.url(), &stored).await;

    // Delivered segments are deleted: the spool takes records again.
    for event in call_events(99) {
        let mut s = spool.lock().unwrap();
        assert!(matches!(s.append(&event.to_json().unwrap(), Instant::now()).unwrap(), AppendOutcome::Stored { .. }));
        stored.push(event.id().to_owned());
    }
    let total = stored.len() as u64;
    let done = shipper.wait("the later call acked", |s| s.acked_seq == total).await;
    assert_eq!(done.published, total);
    assert_eq!(spool.lock().unwrap().stats().dropped, dropped);
    shipper.stop().await;
    assert_exactly_once(&server.url(), &stored).await;
}

// ---------------------------------------------------------------------------
// The whole node, killed with SIGKILL while calls end

/// SIPp callers that talk for `talk_ms` and hang up; media goes to a socket
/// nobody reads.
fn sipp_caller(node: &common::daemon::Daemon, number: &str, talk_ms: u64) -> common::sipp::Sipp {
    let keys = [("rtp_port", common::sipp::unread_media_port().to_string()), ("service", number.to_string())];
    common::sipp::Sipp::start(node, "uac_call.xml", &keys, &["-d", &talk_ms.to_string()])
}

#[test]
fn node_killed_with_sigkill_while_writing_loses_and_duplicates_nothing() {
    let store = TempDir::new().unwrap();
    let nats_port = free_port();
    let nats = NatsServer::start(nats_port, &store.path().join("js"));
    let collector = format!("nats_url = \"{}\"", nats.url());
    let mut node = common::daemon::Daemon::start_with("", &collector, "", &[]);

    // Eight calls ending a second apart; SIGKILL once three have ended, while
    // the others are ending and writing their events.
    let callers: Vec<common::sipp::Sipp> = (0..8).map(|i| sipp_caller(&node, &format!("1555030{i}"), 3_000 + 1_000 * i)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.logs().matches("call ended").count() < 3 {
        assert!(Instant::now() < deadline, "calls did not end:\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    node.kill9();
    drop(callers); // killed: their calls die with the node

    // What was committed before the kill: shipped already, or still waiting
    // in the spool (acked segments are deleted; recovery skips a torn tail).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = nats.url();
    let shipped: BTreeSet<String> = runtime.block_on(stream_events(&url)).into_iter().map(|(id, _)| id).collect();
    let waiting: BTreeSet<String> =
        common::daemon::read_spool(&node.spool_dir()).iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let committed: Vec<String> = shipped.union(&waiting).cloned().collect();
    let calls_recorded = committed.iter().filter(|id| id.ends_with(":call")).count();
    assert!(calls_recorded >= 3, "the three ended calls' records were committed: {committed:?}\n{}", node.logs());

    // Restart: the shipper resumes from the acknowledged offset.
    node.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have: BTreeSet<String> = runtime.block_on(stream_events(&url)).into_iter().map(|(id, _)| id).collect();
        if committed.iter().all(|id| have.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "committed events missing from the stream after the restart:\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Everything in the spool now (the committed events, plus any call the
    // restarted node records) is in the stream exactly once.
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let mut all: BTreeSet<String> = committed.iter().cloned().collect();
    all.extend(common::daemon::read_spool(&node.spool_dir()).iter().map(|e| e["id"].as_str().unwrap().to_string()));
    let all: Vec<String> = all.into_iter().collect();
    runtime.block_on(assert_exactly_once(&url, &all));
    drop(nats);
}

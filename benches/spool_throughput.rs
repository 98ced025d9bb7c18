//! Outcome spool throughput: events per second through `append` (plus the
//! final `commit`) for each fsync policy, with a realistic call-record
//! payload (a CloudEvents JSON of about 1.5 KB), then the shipper's side:
//! `read_from` in batches of 256 plus `ack`. Median of 3 runs of up to
//! 20,000 events, each run bounded to a few seconds (fsync-per-event
//! policies stop early). The spool lives under the target directory, on the
//! disk the build uses, never on a tmpfs where fsync would be free.
//!
//!     cargo bench --bench spool_throughput

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use voice_edge::outcome::event::{
    CallRecord, Channel, Cost, Difficulty, Escalations, FlowRef, LatencySummary, OutcomeEvent, Resolution, Timestamp,
    SCHEMA_VERSION,
};
use voice_edge::outcome::spool::{AppendOutcome, FsyncPolicy, Spool, SpoolConfig};

const EVENTS: u64 = 20_000;
const RUNS: usize = 3;
const BUDGET: Duration = Duration::from_secs(3);

fn payload() -> Vec<u8> {
    let at = |s: u64| Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(s));
    let intents = ["order_status", "order_status", "cancel_order", "agent", "order_status", "refund", "goodbye"];
    let record = CallRecord {
        schema_version: SCHEMA_VERSION,
        call_id: "a84f1c2e-7b1d-4c55-9a0e-3f7c2d9b1e44".into(),
        channel: Channel::Sip,
        trunk_or_site: "trunk-eu-west-1-primary".into(),
        number: "+442071838750".into(),
        caller: Some("redacted:sha256:b06c52419d8d646b495b4b628b8c3cb8".into()),
        started: at(1_774_088_130_000),
        ended: at(1_774_088_322_450),
        duration_ms: 192_450,
        turns: 7,
        intents: intents.iter().map(|s| s.to_string()).collect(),
        tasks_attempted: vec!["order_status".into(), "cancel_order".into(), "refund".into()],
        tasks_completed: vec!["order_status".into(), "refund".into()],
        resolution: Resolution::ByCluster,
        resolution_time_ms: Some(31_870),
        escalations: Escalations { count: 2, tiers: vec!["cluster-small".into(), "cluster-reasoning".into()] },
        difficulty: Difficulty {
            score: 0.62,
            features: BTreeMap::from(
                [
                    ("asr_low_confidence_turns", 2.0),
                    ("barge_ins", 1.0),
                    ("intent_margin_min", 0.21),
                    ("intent_switches", 3.0),
                    ("repeat_requests", 1.0),
                    ("slot_retries", 2.0),
                    ("turns", 7.0),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            ),
        },
        latency: LatencySummary {
            voice_to_voice_p50_ms: Some(447.1),
            voice_to_voice_p95_ms: Some(1_312.8),
            samples: 7,
        },
        cost: Cost {
            local_inference_ms: 1_655.25,
            cluster_prompt_tokens: 3_412,
            cluster_completion_tokens: 288,
            cluster_reasoning_tokens: 1_024,
        },
        flow: FlowRef { name: "retail-returns-and-orders".into(), version: 12 },
    };
    match OutcomeEvent::call("edge-lon-07", record).and_then(|e| e.to_json()) {
        Ok(json) => json,
        Err(e) => panic!("benchmark payload: {e}"),
    }
}

struct Run {
    events: u64,
    secs: f64,
    syncs: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

fn config(dir: &Path, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig { fsync, ..SpoolConfig::new(dir) }
}

fn append_run(root: &Path, fsync: FsyncPolicy, payload: &[u8]) -> Run {
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let (mut spool, _) = Spool::open(config(dir.path(), fsync)).expect("open spool");
    let start = Instant::now();
    let mut events = 0;
    while events < EVENTS && start.elapsed() < BUDGET {
        match spool.append(payload, Instant::now()).expect("append") {
            AppendOutcome::Stored { .. } => events += 1,
            AppendOutcome::Dropped { reason } => panic!("dropped: {reason}"),
        }
    }
    spool.commit(Instant::now()).expect("commit");
    let secs = start.elapsed().as_secs_f64();
    Run { events, secs, syncs: spool.stats().syncs }
}

fn drain_run(root: &Path, payload: &[u8]) -> Run {
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let (mut spool, _) = Spool::open(config(dir.path(), FsyncPolicy::Never)).expect("open spool");
    for _ in 0..EVENTS {
        spool.append(payload, Instant::now()).expect("append");
    }
    spool.commit(Instant::now()).expect("commit");
    let start = Instant::now();
    let mut events = 0;
    loop {
        let batch = spool.read_from(spool.acked() + 1, 256).expect("read");
        let Some(&(last, _)) = batch.last() else { break };
        events += batch.len() as u64;
        spool.ack(last).expect("ack");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(events, EVENTS);
    Run { events, secs, syncs: 0 }
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
}

fn main() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("spool_throughput");
    std::fs::create_dir_all(&root).expect("bench dir");
    let payload = payload();
    println!("payload: {} bytes (call record, CloudEvents JSON); median of {RUNS} runs", payload.len());
    println!();
    println!("| {:<32} | {:>7} | {:>10} | {:>9} | {:>7} |", "policy", "events", "events/s", "us/event", "fsyncs");
    println!("|{:-<34}|{:->9}|{:->12}|{:->11}|{:->9}|", "", "", "", "", "");
    let policies = [
        ("Always", FsyncPolicy::Always),
        ("EveryN(64)", FsyncPolicy::EveryN(64)),
        ("Interval(10ms)", FsyncPolicy::Interval(Duration::from_millis(10))),
        ("Never", FsyncPolicy::Never),
    ];
    let row = |name: &str, r: &Run| {
        println!("| {:<32} | {:>7} | {:>10.0} | {:>9.2} | {:>7} |", name, r.events, r.rate(), 1e6 / r.rate(), r.syncs);
    };
    for (name, policy) in policies {
        let r = median((0..RUNS).map(|_| append_run(&root, policy, &payload)).collect());
        row(&format!("append+commit {name}"), &r);
    }
    let r = median((0..RUNS).map(|_| drain_run(&root, &payload)).collect());
    row("drain: read_from(256) + ack", &r);
}

//! Load harness: N concurrent live calls in real time on one engine pool.
//!
//! Each call is a scripted two-turn conversation (a question, then the order
//! number or a goodbye) spoken by espeak-ng voices that differ from the
//! agent's. All N calls start together and share the engine pool, as calls
//! on one node do. For N = 1, 2, 4, 8, ... (until voice-to-voice p95 passes
//! 1 s, or `CALL_LOAD_MAX`) it prints voice-to-voice p50/p95 over every
//! turn, the medians of the stages behind it (end of utterance, ASR,
//! intent), turns answered, engine refusals (saturation), process CPU per
//! call (cores) and resident memory per call. Each N runs `CALL_LOAD_ROUNDS`
//! times (default 3), the conversations rotating between the calls. Default
//! models and config, or `VOICE_EDGE_CONFIG=FILE`. Results:
//! docs/PERFORMANCE.md. `CALL_LOAD_TURNS=1` also prints every turn's stages.
//!
//!     cargo bench --bench call_load

use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_edge::engine::pool::EnginePool;
use voice_edge::engine::tts::{Tts, TtsConfig};
use voice_edge::ops::config::Config;
use voice_edge::runtime::scripted_call::{run_scripted_call, CallReport, CallerScript};

const CONVERSATIONS: &[(&str, &[&str])] = &[
    ("en-us+m3", &["Hi, I'm calling to find out where my order is.", "The number is four five six seven eight nine."]),
    ("en-gb-x-rp", &["I'd like to return a jacket that doesn't fit.", "It's order one two three four five six."]),
    ("en-us", &["Why was my card charged twice?", "No, that's all. Thanks, bye."]),
];

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields after the command: state is [0], utime [11], stime [12]; 100 ticks/s on Linux
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    voice_edge::ops::logging::route_native_logs();
    let cfg = Config::load_or_embedded(std::env::var_os("VOICE_EDGE_CONFIG").as_deref().map(std::path::Path::new))
        .expect("config");
    let max_calls: usize = std::env::var("CALL_LOAD_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let rounds: usize = std::env::var("CALL_LOAD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let flow = Arc::new(cfg.default_flow().expect("flow"));
    let rss_before = rss_mib();
    let pool = Arc::new(EnginePool::start(&cfg, cfg.engine.clone(), std::slice::from_ref(&flow)).expect("models: run `voice-edge models fetch`"));
    let rss_engine = rss_mib();
    let services = voice_edge::runtime::live_call::CallServices::edge_only(pool.clone());

    let scripts: Vec<CallerScript> = CONVERSATIONS
        .iter()
        .map(|(voice, lines)| {
            let tts = Tts::new(TtsConfig { voice: (*voice).into(), rate_wpm: 150, ..Default::default() }).expect("espeak-ng voice");
            let utterances = lines
                .iter()
                .map(|l| tts.speak(l).expect("synthesize").samples)
                .collect();
            CallerScript { utterances, think_time: Duration::from_millis(600), patience: Duration::from_secs(30) }
        })
        .collect();

    println!("engine loaded: {:.0} MiB resident (was {:.0} MiB before models)", rss_engine, rss_before);
    println!("| calls | turns | v2v p50 ms | v2v p95 ms | eou p50 | ASR p50 | intent p50 | refused | engine failures | CPU per call (cores) | RSS per call MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut n = 1usize;
    let mut next_call_id = 1u64;
    while n <= max_calls {
        let cpu0 = cpu_seconds();
        let wall0 = Instant::now();
        let peak_rss = Arc::new(std::sync::Mutex::new(rss_mib()));
        let mut reports: Vec<CallReport> = Vec::new();
        for round in 0..rounds {
            reports.extend(std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let script = &scripts[(i + round) % scripts.len()];
                        let (services, flow, cfg) = (&services, flow.clone(), &cfg);
                        let id = next_call_id + i as u64;
                        let peak = peak_rss.clone();
                        s.spawn(move || {
                            let r = run_scripted_call(&services, id, flow, cfg.call.clone(), cfg.vad.clone(), script);
                            let mut p = peak.lock().unwrap();
                            *p = p.max(rss_mib());
                            r
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("call thread")).collect::<Vec<_>>()
            }));
            next_call_id += n as u64;
        }
        let wall = wall0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        if std::env::var_os("CALL_LOAD_TURNS").is_some() {
            for t in reports.iter().flat_map(|r| &r.summary.turns) {
                let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
                eprintln!(
                    "turn: v2v {} eou {:.0} asr {} intent {} tts {} filler {} {:?}",
                    ms(t.voice_to_voice_ms),
                    t.end_of_utterance_ms,
                    ms(t.asr_ms),
                    ms(t.intent_ms),
                    ms(t.tts_ms),
                    t.filler,
                    t.transcript
                );
            }
        }
        let mut v2v: Vec<f64> = reports.iter().flat_map(|r| r.summary.turns.iter().filter_map(|t| t.voice_to_voice_ms)).collect();
        let turns: usize = reports.iter().map(|r| r.summary.turns.len()).sum();
        let refused: u32 = reports.iter().map(|r| r.summary.refused).sum();
        let failures: u32 = reports.iter().map(|r| r.summary.counters.engine_failures).sum();
        let p50 = percentile(&mut v2v, 0.5);
        let p95 = percentile(&mut v2v, 0.95);
        let stage = |f: fn(&voice_edge::call::TurnRecord) -> Option<f64>| {
            let mut v: Vec<f64> = reports.iter().flat_map(|r| r.summary.turns.iter().filter_map(f)).collect();
            percentile(&mut v, 0.5)
        };
        let (eou, asr, intent) = (stage(|t| Some(t.end_of_utterance_ms)), stage(|t| t.asr_ms), stage(|t| t.intent_ms));
        let rss_per_call = (*peak_rss.lock().unwrap() - rss_engine).max(0.0) / n as f64;
        println!(
            "| {n} | {turns}/{} | {p50:.0} | {p95:.0} | {eou:.0} | {asr:.0} | {intent:.0} | {refused} | {failures} | {:.2} | {rss_per_call:.1} |",
            2 * n * rounds,
            cpu / wall / n as f64
        );
        if p95 > 1000.0 {
            break;
        }
        n *= 2;
    }
}

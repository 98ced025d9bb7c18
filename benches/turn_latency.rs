//! Per-stage turn latency of the engine on this machine, with the models of
//! the config (default: the embedded one; `VOICE_EDGE_CONFIG=FILE` picks
//! another). Caller utterances are spoken by espeak-ng in process, then each
//! goes through VAD, ASR, intent, flow and TTS `ROUNDS` times. Prints the
//! median and p90 of every stage in milliseconds, and the ratio of each
//! stage to the whole turn; docs/PERFORMANCE.md records the results.
//!
//!     cargo bench --bench turn_latency
//!
//! Needs the default models (`voice-edge models fetch`).

use std::sync::Arc;

use voice_edge::engine::tts::{Tts, TtsConfig};
use voice_edge::engine::{StageTimings, TurnEngine};
use voice_edge::media::ENGINE_RATE;
use voice_edge::ops::config::Config;

const UTTERANCES: &[&str] = &[
    "Where is my order? It was supposed to arrive yesterday.",
    "I need to cancel the order I placed this morning.",
    "I'd like to send back a sweater that doesn't fit.",
    "Why was my card charged twice this month?",
    "Can I talk to a real person please?",
    "That's all I needed, thanks. Goodbye.",
    "What time does your store open on Sunday?",
    "My order number is four five six seven eight nine.",
];
const ROUNDS: usize = 3;

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let idx = ((values.len() - 1) as f64 * p).round() as usize;
    values[idx]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing to run.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    // No subscriber is installed: this silences whisper/llama/ggml logging.
    voice_edge::ops::logging::route_native_logs();
    let cfg = Config::load_or_embedded(std::env::var_os("VOICE_EDGE_CONFIG").as_deref().map(std::path::Path::new))
        .expect("config");
    let paths = cfg.model_paths().expect("models missing: run `voice-edge models fetch`");
    let engine = TurnEngine::load(&cfg).expect("load models");
    let flow = Arc::new(cfg.default_flow().expect("flow"));
    let mut conversation = engine.conversation(Arc::clone(&flow)).expect("conversation");

    // The caller's voice differs from the agent's.
    let caller = Tts::new(TtsConfig { voice: "en-gb-x-rp".into(), rate_wpm: 165, ..Default::default() }).expect("espeak-ng");
    let audio: Vec<Vec<f32>> = UTTERANCES
        .iter()
        .map(|text| {
            let mut a = vec![0.0; ENGINE_RATE as usize / 2];
            a.extend(caller.speak(text).expect("synthesize").samples);
            a.extend(vec![0.0; ENGINE_RATE as usize / 2]);
            a
        })
        .collect();

    // Warm-up: first-touch page faults of the mmapped weights.
    conversation.turn(&audio[0], None).expect("turn");

    let mut samples: Vec<StageTimings> = Vec::new();
    let mut speech_s = Vec::new();
    for _ in 0..ROUNDS {
        for a in &audio {
            conversation.session = voice_edge::flow::FlowSession::new(Arc::clone(&flow));
            let out = conversation.turn(a, None).expect("turn");
            speech_s.push(out.speech_span_s.map(|(s, e)| e - s).unwrap_or(0.0));
            samples.push(out.timings_ms);
        }
    }

    type Stage = (&'static str, fn(&StageTimings) -> f64);
    let stages: [Stage; 7] = [
        ("vad", |t| t.vad),
        ("asr", |t| t.asr),
        ("intent", |t| t.intent),
        ("flow", |t| t.flow),
        ("tts_first_chunk", |t| t.tts_first_chunk),
        ("tts", |t| t.tts),
        ("total", |t| t.total),
    ];
    let mut total: Vec<f64> = samples.iter().map(|t| t.total).collect();
    let total_median = percentile(&mut total, 0.5);
    println!(
        "turn latency: {} turns ({} utterances x {ROUNDS}), median speech {:.2} s, intent prompt prefix {} tokens",
        samples.len(),
        UTTERANCES.len(),
        percentile(&mut speech_s, 0.5),
        conversation.intent_prefix_tokens()
    );
    println!("asr model: {}\nintent model: {}", paths.asr.display(), paths.intent.display());
    println!("{:<16} {:>10} {:>10} {:>14}", "stage", "median ms", "p90 ms", "share of total");
    for (name, get) in stages {
        let mut v: Vec<f64> = samples.iter().map(get).collect();
        let median = percentile(&mut v, 0.5);
        let p90 = percentile(&mut v, 0.9);
        println!("{name:<16} {median:>10.1} {p90:>10.1} {:>13.1}%", median / total_median * 100.0);
    }
}

//! Intent requests from concurrent calls are classified in one llama decode.
//! The batched answers must match one-at-a-time answers: the same label, and
//! a confidence within 0.05 (a batch runs through other quantized matmul
//! kernels than a single sequence; measured differences were up to 0.02).
//! The test prints what batching saves.

use std::time::Instant;

use voice_edge::engine::intent::{IntentModel, MAX_BATCH};
use voice_edge::ops::config::Config;

const UTTERANCES: &[&str] = &[
    "Where is my package? It should have arrived on Monday.",
    "I want to cancel the order I placed this morning.",
    "These boots are too small, how do I send them back?",
    "Why did you charge my card twice?",
    "Let me talk to a real person.",
    "Thanks, that's all. Bye.",
    "Do you have a store in Boston?",
    "It's four five six seven eight nine.",
];

#[test]
fn batched_classification_matches_one_at_a_time() {
    voice_edge::ops::logging::route_native_logs();
    let cfg = Config::embedded().unwrap();
    let paths = cfg.model_paths().expect("run `voice-edge models fetch --set test`");
    let model = IntentModel::load(&paths.intent, cfg.intent.clone()).unwrap();
    let flow = cfg.default_flow().unwrap();
    let mut clf = model.classifier(&flow).unwrap();
    assert_eq!(UTTERANCES.len(), MAX_BATCH);

    let t = Instant::now();
    let single: Vec<_> = UTTERANCES.iter().map(|u| clf.classify(u).unwrap()).collect();
    let single_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let batched = clf.classify_batch(UTTERANCES).unwrap();
    let batch_ms = t.elapsed().as_secs_f64() * 1e3;
    // The cache is back to the prefix: a later single call is unchanged.
    let again = clf.classify(UTTERANCES[0]).unwrap();

    for (u, (s, b)) in UTTERANCES.iter().zip(single.iter().zip(&batched)) {
        println!("{:<58} {:<16} {:.3} | batched {:<16} {:.3}", u, s.label, s.confidence, b.label, b.confidence);
        assert_eq!(s.label, b.label, "{u}");
        assert!((s.confidence - b.confidence).abs() < 0.05, "{u}: {} vs {}", s.confidence, b.confidence);
    }
    assert_eq!(again.label, single[0].label);
    assert!((again.confidence - single[0].confidence).abs() < 1e-4);
    println!(
        "{} utterances: one at a time {single_ms:.0} ms, batched {batch_ms:.0} ms ({:.2}x)",
        UTTERANCES.len(),
        single_ms / batch_ms
    );
    assert!(clf.classify_batch(&[]).unwrap().is_empty());
}

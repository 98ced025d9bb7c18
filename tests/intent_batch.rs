//! Intent requests from concurrent calls are classified in one llama decode.
//! The batched answers must match one-at-a-time answers: the same label, and
//! a confidence within 0.05 (a batch runs through other quantized matmul
//! kernels than a single sequence; measured differences were up to 0.02).
//! The test prints what batching saves. Warm drafts (a caller's partial
//! transcripts evaluated ahead) must give the same answers too.

use std::time::Instant;

use voice_edge::engine::intent::{IntentModel, MAX_BATCH};
use voice_edge::flow::Flow;
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

/// The default intent model and flow.
fn default_model() -> (IntentModel, Flow) {
    voice_edge::ops::logging::route_native_logs();
    let cfg = Config::embedded().unwrap();
    let paths = cfg.model_paths().expect("run `voice-edge models fetch --set test`");
    (IntentModel::load(&paths.intent, cfg.intent.clone()).unwrap(), cfg.default_flow().unwrap())
}

#[test]
fn batched_classification_matches_one_at_a_time() {
    let (model, flow) = default_model();
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

/// A caller's words so far, evaluated while they speak (a warm draft), make
/// their turn's classification evaluate only what changed, with the same
/// answer as from scratch; drafts that disagree or were evicted fall back.
#[test]
fn warm_drafts_give_the_same_answers_with_less_to_evaluate() {
    use voice_edge::engine::intent::MAX_WARM;
    let (model, flow) = default_model();
    let mut clf = model.classifier(&flow).unwrap();

    let (mut cold_ms, mut warm_ms) = (0.0, 0.0);
    for (key, u) in UTTERANCES.iter().enumerate() {
        let key = key as u64;
        let cold = clf.classify(u).unwrap();
        // Partials as they come: a first half, then most of the words.
        let words: Vec<&str> = u.split_whitespace().collect();
        let half = words[..words.len() / 2].join(" ");
        let most = words[..words.len() - 1].join(" ");
        let first = clf.warm(key, &half).unwrap();
        let more = clf.warm(key, &most).unwrap();
        let whole = clf.warm(key + 1000, &most).unwrap();
        assert!(first > 0 && more > 0 && more < whole, "{u}: {first} then {more} of {whole} tokens");
        let drafted = clf.classify_drafted(&[(Some(key), u)]).unwrap().remove(0);
        println!(
            "{:<58} {:<16} {:.3} ({} tokens, {:.0} ms) | drafted {:<16} {:.3} ({} tokens, {:.0} ms)",
            u,
            cold.label,
            cold.confidence,
            cold.tokens_evaluated,
            cold.elapsed.as_secs_f64() * 1e3,
            drafted.label,
            drafted.confidence,
            drafted.tokens_evaluated,
            drafted.elapsed.as_secs_f64() * 1e3
        );
        assert_eq!(cold.label, drafted.label, "{u}");
        assert!((cold.confidence - drafted.confidence).abs() < 0.05, "{u}: {} vs {}", cold.confidence, drafted.confidence);
        assert!(drafted.tokens_evaluated < cold.tokens_evaluated, "{u}");
        cold_ms += cold.elapsed.as_secs_f64() * 1e3;
        warm_ms += drafted.elapsed.as_secs_f64() * 1e3;
    }
    println!("classification from scratch {cold_ms:.0} ms, from warm drafts {warm_ms:.0} ms ({:.2}x)", cold_ms / warm_ms);

    // A draft that says something else entirely: still the right answer.
    let cold = clf.classify(UTTERANCES[3]).unwrap();
    clf.warm(100, UTTERANCES[0]).unwrap();
    let drafted = clf.classify_drafted(&[(Some(100), UTTERANCES[3])]).unwrap().remove(0);
    assert_eq!(cold.label, drafted.label);
    // More callers than drafts: the least recently warmed gives way, and its
    // caller is classified from scratch, correctly.
    for key in 200..200 + MAX_WARM as u64 {
        clf.warm(key, "I would like to").unwrap();
    }
    let evicted = clf.classify_drafted(&[(Some(0), UTTERANCES[0])]).unwrap().remove(0);
    let cold = clf.classify(UTTERANCES[0]).unwrap();
    assert_eq!((evicted.label.as_str(), evicted.tokens_evaluated), (cold.label.as_str(), cold.tokens_evaluated));
}

//! Intent accuracy through `voice-edge turn`: every spoken test utterance
//! (tests/data/utterances.tsv, several voices, all seven retail intents) goes
//! through VAD, whisper, the intent model, the flow and TTS in the real
//! binary. Prints the score, a per-intent table, the confusions and the
//! calibration of the confidence; fails under 90% accuracy.
//!
//! Needs the test models (`voice-edge models fetch --set test`) and the test
//! audio (`scripts/test-data.sh`); `scripts/test.sh` does both.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::scoring::{load_utterances, require_testdata};

#[test]
fn spoken_intents_are_recognised_through_turn() {
    let utterances = load_utterances();
    assert!(utterances.len() >= 40, "need at least 40 utterances, have {}", utterances.len());
    for u in &utterances {
        require_testdata(&format!("utterances/{}.wav", u.id));
    }

    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voice-edge"));
    cmd.arg("turn").arg("--out-dir").arg(out_dir.path());
    for u in &utterances {
        cmd.arg("--wav").arg(&u.wav);
    }
    let output = cmd.output().expect("run voice-edge turn");
    assert!(
        output.status.success(),
        "voice-edge turn failed (models missing? run `voice-edge models fetch --set test`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let results: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(results.len(), utterances.len(), "one result per utterance");

    let mut correct = 0usize;
    let mut per_intent: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut per_voice: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut confusions = Vec::new();
    // calibration: 5 confidence bins of (count, correct, confidence sum)
    let mut bins = [(0usize, 0usize, 0f64); 5];
    let mut total_ms = Vec::new();
    for (u, r) in utterances.iter().zip(&results) {
        for key in ["transcript", "intent", "intent_confidence", "reply", "timings_ms"] {
            assert!(r.get(key).is_some(), "turn output lacks {key}: {r}");
        }
        let got = r["intent"].as_str().unwrap_or("<none>").to_string();
        let conf = r["intent_confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&conf), "confidence {conf} out of range");
        assert!(!r["reply"].as_str().unwrap().is_empty(), "empty reply for {}", u.id);
        let reply_wav = r["reply_wav"].as_str().expect("reply written");
        assert!(std::fs::metadata(reply_wav).unwrap().len() > 16_000, "reply audio too short for {}", u.id);
        total_ms.push(r["timings_ms"]["total"].as_f64().unwrap());

        let ok = got == u.intent;
        correct += ok as usize;
        let e = per_intent.entry(u.intent.clone()).or_default();
        e.0 += ok as usize;
        e.1 += 1;
        let v = per_voice.entry(u.voice.clone()).or_default();
        v.0 += ok as usize;
        v.1 += 1;
        let bin = ((conf * 5.0) as usize).min(4);
        bins[bin].0 += 1;
        bins[bin].1 += ok as usize;
        bins[bin].2 += conf;
        if !ok {
            confusions.push(format!(
                "  {:<10} {:<16} -> {:<16} ({:.2}) voice {:<18} heard {:?}",
                u.id, u.intent, got, conf, u.voice, r["transcript"].as_str().unwrap_or("")
            ));
        }
    }

    let accuracy = correct as f64 / utterances.len() as f64;
    println!("\nintent accuracy through `turn`: {correct}/{} = {:.1}%", utterances.len(), accuracy * 100.0);
    println!("per intent:");
    for (intent, (ok, n)) in &per_intent {
        println!("  {intent:<18} {ok}/{n}");
    }
    println!("per voice:");
    for (voice, (ok, n)) in &per_voice {
        println!("  {voice:<22} {ok}/{n}");
    }
    if !confusions.is_empty() {
        println!("misclassified:\n{}", confusions.join("\n"));
    }
    let ece: f64 = bins.iter().filter(|b| b.0 > 0).map(|b| (b.2 / b.0 as f64 - b.1 as f64 / b.0 as f64).abs() * b.0 as f64).sum::<f64>()
        / utterances.len() as f64;
    println!("confidence calibration (bin: n, accuracy, mean confidence), ECE {:.3}:", ece);
    for (i, b) in bins.iter().enumerate().filter(|(_, b)| b.0 > 0) {
        println!("  {:.1}-{:.1}: {:>3}, {:.2}, {:.2}", i as f64 / 5.0, (i + 1) as f64 / 5.0, b.0, b.1 as f64 / b.0 as f64, b.2 / b.0 as f64);
    }
    total_ms.sort_by(f64::total_cmp);
    println!("turn total ms: median {:.0}, max {:.0}", total_ms[total_ms.len() / 2], total_ms[total_ms.len() - 1]);

    let intents: Vec<&String> = per_intent.keys().collect();
    assert_eq!(intents.len(), 7, "the corpus must cover all seven intents: {intents:?}");
    assert!(accuracy >= 0.90, "intent accuracy {:.1}% is under 90%", accuracy * 100.0);
}

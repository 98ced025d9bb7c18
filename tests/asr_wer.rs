//! Word error rate of the default recogniser (whisper tiny.en, Q8_0 weights) on a fixed,
//! named subset of real recordings (tests/data/wer_subset.tsv: Asterisk's
//! telephone prompts and other human speech). Numbers and punctuation are
//! normalised before scoring. Prints every error; fails at 10% or more.

mod common;

use common::scoring::{load_wer_manifest, normalize_transcript, wer};
use voice_edge::engine::asr::AsrModel;
use voice_edge::media::vad::speech_bounds;
use voice_edge::media::wav::read_wav_engine;
use voice_edge::ops::config::Config;

#[test]
fn tiny_en_word_error_rate_is_under_ten_percent() {
    voice_edge::ops::logging::route_native_logs(); // whisper's load log is noise here
    let items = load_wer_manifest();
    assert!(items.len() >= 20, "WER corpus too small: {} (run scripts/test-data.sh)", items.len());
    // VOICE_EDGE_CONFIG=FILE measures another recogniser set-up; the 10% bar
    // is for the default one.
    let cfg = Config::load_or_embedded(std::env::var_os("VOICE_EDGE_CONFIG").as_deref().map(std::path::Path::new)).unwrap();
    let paths = cfg.model_paths().expect("run `voice-edge models fetch --set test`");
    let model = AsrModel::load(&paths.asr, cfg.asr.clone()).unwrap();
    let mut session = model.session().unwrap();

    let mut pairs = Vec::new();
    let mut asr_ms = Vec::new();
    for item in &items {
        let audio = read_wav_engine(&item.wav).unwrap_or_else(|e| panic!("{}: {e}", item.id));
        let span = speech_bounds(&audio, &cfg.vad).unwrap_or_else(|| panic!("{}: VAD found no speech", item.id));
        let t = session.transcribe(&audio[span.start..span.end], None).unwrap();
        asr_ms.push(t.elapsed.as_secs_f64() * 1e3);
        let r = normalize_transcript(&item.reference).join(" ");
        let h = normalize_transcript(&t.text).join(" ");
        if r != h {
            println!("  {:<28} ref: {r}\n  {:<28} hyp: {h}", item.id, "");
        }
        pairs.push((item.reference.clone(), t.text));
    }
    let (errors, words, rate) = wer(&pairs);
    asr_ms.sort_by(f64::total_cmp);
    println!(
        "\n{} WER on {} recordings: {errors}/{words} words = {:.2}% (median ASR {:.0} ms)",
        cfg.asr.model,
        items.len(),
        rate * 100.0,
        asr_ms[asr_ms.len() / 2]
    );
    assert!(rate < 0.10, "WER {:.2}% is not under 10%", rate * 100.0);
}

//! The command line's behaviour on good and bad input: clear errors that name
//! the key or file, non-zero exits, never a panic.

use std::process::{Command, Output};

fn voice_edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voice-edge")).args(args).output().expect("run voice-edge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panic instead of an error: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

#[test]
fn check_config_accepts_the_shipped_default() {
    let o = voice_edge(&["check-config", concat!(env!("CARGO_MANIFEST_DIR"), "/configs/voice-edge.toml")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": ok"));
}

#[test]
fn check_config_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[tts]\nvoise = \"en-us\"\n").unwrap();
    let o = voice_edge(&["check-config", path.to_str().unwrap()]);
    assert_clean_failure(&o, &["voise", "bad.toml"]);
}

#[test]
fn check_config_names_a_bad_value_and_a_missing_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[tts]\nrate_wpm = 5000\n").unwrap();
    assert_clean_failure(&voice_edge(&["check-config", path.to_str().unwrap()]), &["tts.rate_wpm"]);
    std::fs::write(&path, "[intent]\nmodel = \"missing.gguf\"\n").unwrap();
    let o = voice_edge(&["check-config", path.to_str().unwrap()]);
    assert_clean_failure(&o, &["intent.model", "missing.gguf"]);
}

#[test]
fn check_config_rejects_a_broken_flow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    let flow = include_str!("../configs/flows/retail.toml").replace("[[slot]]", "[[slot]]\nbogus = 1");
    std::fs::write(dir.path().join("flows/retail.toml"), flow).unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[flows]\ndir = \"flows\"\n").unwrap();
    assert_clean_failure(&voice_edge(&["check-config", path.to_str().unwrap()]), &["bogus", "retail.toml"]);
}

#[test]
fn turn_rejects_files_that_are_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.wav");
    std::fs::write(&path, b"this is not a RIFF file at all").unwrap();
    assert_clean_failure(&voice_edge(&["turn", "--wav", path.to_str().unwrap()]), &["noise.wav"]);
    assert_clean_failure(&voice_edge(&["turn", "--wav", "/nonexistent/x.wav"]), &["/nonexistent/x.wav"]);
}

#[test]
fn models_list_shows_every_manifest_model() {
    let o = voice_edge(&["models", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["whisper-tiny.en-q8_0", "whisper-tiny.en", "qwen2.5-coder-1.5b-instruct-q4_k_m"] {
        assert!(out.contains(name), "{out}");
    }
}

#[test]
fn say_writes_speech() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.wav");
    let o = voice_edge(&["say", "Hello, how can I help?", "--out", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    assert!(reader.duration() > 16_000, "under a second of speech");
}

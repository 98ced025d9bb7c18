//! `voice-edge talk` against real ALSA (through cpal), with no sound card:
//! the test points ALSA at its own configuration (`ALSA_CONFIG_PATH`).
//!
//! - With no capture device configured, talk says there is no microphone
//!   and exits non-zero before it loads any model.
//! - With the default capture PCM reading a recorded question from a file
//!   (ALSA's `file` plugin with `infile`) and playback into ALSA's `null`
//!   PCM, the agent greets, hears the question, answers it, and Ctrl-C
//!   hangs up and prints the call report. The file-backed PCM delivers
//!   faster than real time; talk holds it back, so no audio is lost.
//!
//! Needs the test models (`voice-edge models fetch --set test`) and
//! espeak-ng for the caller's voice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use voice_edge::engine::tts::{Tts, TtsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_voice-edge");

/// A config that keeps the outcome spool inside the test's directory.
fn config_in(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("talk.toml");
    std::fs::write(&path, format!("[collector]\nspool_dir = {:?}\n", dir.join("spool"))).unwrap();
    path
}

#[test]
fn talk_without_an_audio_device_says_so_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // An ALSA configuration that defines no device at all.
    let alsa = dir.path().join("empty-alsa.conf");
    std::fs::write(&alsa, "# no devices\n").unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["--config", config_in(dir.path()).to_str().unwrap(), "talk"])
        .env("ALSA_CONFIG_PATH", &alsa)
        .output()
        .expect("run voice-edge talk");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "talk must fail without a device; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("no microphone"), "the error names the missing side: {stderr}");
    assert!(stderr.contains("--input"), "and what to do about it: {stderr}");
    assert!(!stderr.contains("loading models"), "nothing is loaded without a device: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}

#[test]
fn talk_answers_a_question_from_the_microphone_and_hangs_up_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // The caller: quiet during the greeting, then the question, then quiet.
    let caller = Tts::new(TtsConfig { voice: "en-us+m3".into(), rate_wpm: 150, ..Default::default() }).expect("espeak-ng (apt-get install espeak-ng)");
    let question = caller.speak("Hi, I'm calling about my order. Where is it?").unwrap().samples;
    let silence = |secs: usize| vec![0.0f32; 16_000 * secs];
    let microphone: Vec<f32> = [silence(7), question, silence(30)].concat();
    let raw: Vec<u8> = microphone.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect();
    let mic_file = dir.path().join("microphone.raw");
    std::fs::write(&mic_file, raw).unwrap();
    let alsa = dir.path().join("asoundrc");
    std::fs::write(
        &alsa,
        format!(
            r#"pcm.!default {{ type asym; capture.pcm "talk_mic"; playback.pcm "talk_speaker" }}
pcm.talk_mic {{ type plug; slave {{ pcm "talk_mic_file"; rate 16000; channels 1; format S16_LE }} }}
pcm.talk_mic_file {{ type file; slave.pcm "null"; file "/dev/null"; infile {:?}; format "raw" }}
pcm.talk_speaker {{ type plug; slave.pcm "null" }}
"#,
            mic_file.to_str().unwrap()
        ),
    )
    .unwrap();
    // The system's configuration first (it defines `null`), then ours.
    let alsa_path = format!("/usr/share/alsa/alsa.conf:{}", alsa.display());

    let mut child = Command::new(BIN)
        .args(["--config", config_in(dir.path()).to_str().unwrap(), "talk", "--max-seconds", "90"])
        .env("ALSA_CONFIG_PATH", alsa_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run voice-edge talk");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(80);
    let mut log = Vec::new();
    let mut heard_question = false;
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            continue;
        };
        eprintln!("talk| {line}");
        heard_question |= line.starts_with("you:") && line.to_lowercase().contains("order");
        // The turn's record comes when the answer has been spoken.
        answered = heard_question && line.contains("voice-to-voice");
        log.push(line);
    }
    // Ctrl-C: the person hangs up.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    for line in rx.try_iter() {
        eprintln!("talk| {line}");
        log.push(line);
    }
    let log = log.join("\n");
    assert!(heard_question, "talk should print the caller's question as heard; stderr:\n{log}");
    assert!(answered, "the agent should answer the question; stderr:\n{log}");
    assert!(log.contains("agent: "), "the answer is printed; stderr:\n{log}");
    assert!(out.status.success(), "Ctrl-C ends the call cleanly; status {:?}; stderr:\n{log}", out.status);

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the call report on stdout is JSON");
    let turns = report["turns"].as_array().expect("turn records");
    let turn = turns.iter().find(|t| t["transcript"].as_str().unwrap_or("").to_lowercase().contains("order")).expect("the question's turn");
    assert_eq!(turn["barged_in"], false, "the caller waited for the greeting to end: {report}");
    assert!(!turn["reply"].as_str().unwrap().is_empty(), "{turn}");
    let v2v = turn["voice_to_voice_ms"].as_f64().expect("voice-to-voice measured");
    assert!(v2v > 0.0 && v2v < 10_000.0, "{v2v}");
    let played = report["agent_audio_played_ms"].as_u64().unwrap();
    assert!(played > 2_000, "greeting and answer reached the speaker: {played} ms");
    assert_eq!(report["capture_overruns"], 0, "no captured audio lost");
    // The call's outcome events are in the spool.
    let spool = std::fs::read_dir(dir.path().join("spool")).expect("spool written").count();
    assert!(spool > 0);
}

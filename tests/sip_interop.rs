//! Interop with a second real SIP user agent: baresip (Debian's `baresip`)
//! calls the node with Opus at 48 kHz, plays a recorded question from a WAV
//! (its `aufile` source) and records what it hears (its `sndfile` module).
//! The node must negotiate Opus, understand the question, and the audio
//! baresip decoded must be speech.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::{free_port, Daemon};
use common::scoring::require_testdata;

/// Duration (s) and RMS of a WAV baresip wrote (16-bit PCM, any channels).
fn wav_level(path: &std::path::Path) -> (f64, f32) {
    let mut r = hound::WavReader::open(path).expect("baresip's recording is a WAV");
    let spec = r.spec();
    let samples: Vec<f32> = r.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect();
    let frames = samples.len() / usize::from(spec.channels.max(1));
    let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt();
    (frames as f64 / f64::from(spec.sample_rate), rms)
}

#[test]
fn baresip_calls_with_opus_and_hears_the_answer() {
    assert!(
        Command::new("baresip").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok(),
        "baresip not found: install Debian's baresip (scripts/setup.sh --tests does)"
    );
    assert!(
        Command::new("sox").arg("--version").stdout(Stdio::null()).status().is_ok(),
        "sox not found: install Debian's sox"
    );
    let mut node = Daemon::start("", "");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The caller's side: 3.5 s of silence (the greeting), the question, then
    // silence for the answer; 48 kHz stereo, as baresip's aufile wants for Opus.
    let question = require_testdata("utterances/u01.wav");
    let status = Command::new("sox")
        .args(["-n", "-r", "48000", "-c", "2", "-b", "16"])
        .arg(d.join("pad.wav"))
        .args(["trim", "0", "3.5"])
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("sox").arg(&question).args(["-r", "48000", "-c", "2", "-b", "16"]).arg(d.join("q48.wav")).status().unwrap();
    assert!(status.success(), "sox could not convert {}", question.display());
    let status = Command::new("sox")
        .arg(d.join("pad.wav"))
        .arg(d.join("q48.wav"))
        .arg(d.join("pad.wav"))
        .arg(d.join("pad.wav"))
        .arg(d.join("pad.wav"))
        .arg(d.join("question.wav"))
        .status()
        .unwrap();
    assert!(status.success(), "sox could not build the caller's audio");
    std::fs::create_dir_all(d.join("rec")).unwrap();
    let (rtp_lo, rtp_hi) = common::daemon::free_rtp_range(4);
    std::fs::write(
        d.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip}\naudio_player aufile,{dev_null}\naudio_source aufile,{src}\n\
             audio_alert aufile,{dev_null}\naudio_srate 48000\naudio_channels 2\nrtp_ports {rtp_lo}-{rtp_hi}\n\
             module_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule opus.so\nmodule sndfile.so\nmodule aufile.so\n\
             module account.so\nmodule_app menu.so\nsnd_path {rec}\n",
            sip = free_port(),
            dev_null = d.join("unused.wav").display(),
            src = d.join("question.wav").display(),
            rec = d.join("rec").display(),
        ),
    )
    .unwrap();
    std::fs::write(d.join("accounts"), "<sip:caller@127.0.0.1>;regint=0\n").unwrap();

    let out = Command::new("baresip")
        .arg("-f")
        .arg(d)
        .args(["-e", &format!("/dial sip:15550200@{}", node.sip), "-t", "22"])
        .stdin(Stdio::null())
        .output()
        .expect("run baresip");
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(log.contains("Call established"), "baresip's call was not established:\n{log}\nnode:\n{}", node.logs());
    assert!(log.contains("Set audio decoder: opus"), "Opus was not negotiated:\n{log}");

    // What baresip heard: the greeting and the answer, decoded from Opus.
    let heard = std::fs::read_dir(d.join("rec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip's sndfile wrote the decoded audio");
    let (secs, rms) = wav_level(&heard);
    assert!(secs > 4.0 && rms > 0.02, "baresip heard {secs:.1} s at RMS {rms:.3}: not the agent's speech");

    // The node understood the question.
    node.wait_for_log("call ended", Duration::from_secs(15));
    let events = node.outcome_events();
    let call = events
        .iter()
        .find(|e| e["type"] == "voice_edge.outcome.call.v1" && e["data"]["number"] == "15550200")
        .unwrap_or_else(|| panic!("no call record:\n{}", node.logs()));
    let intents: Vec<&str> = call["data"]["intents"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(intents.first(), Some(&"order_status"), "{call}");
    assert!(node.logs().contains("codec=Opus"), "the node's log should say it answered with Opus");
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.success());
}

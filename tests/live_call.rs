//! A live call end to end, in real time: a scripted caller (espeak-ng voice
//! `en-us+m3` at 150 wpm, different from the agent's) asks where an order is, then
//! says the order number; the call machine streams partials, endpoints,
//! answers speculatively, and the engine pool runs whisper, the intent model
//! and espeak-ng on their own threads. Needs the test models
//! (`voice-edge models fetch --set test`).

use std::sync::Arc;
use std::time::Duration;

use voice_edge::engine::pool::EnginePool;
use voice_edge::engine::tts::{Tts, TtsConfig};
use voice_edge::media::ENGINE_RATE;
use voice_edge::ops::config::Config;
use voice_edge::outcome::{OutcomeEvent, Spool, SpoolConfig};
use voice_edge::runtime::scripted_call::{run_scripted_call, CallerScript};

fn caller_says(tts: &Tts, text: &str) -> Vec<f32> {
    tts.speak(text).unwrap().samples
}

#[test]
fn a_two_turn_call_fills_the_order_number_and_completes_the_task() {
    voice_edge::ops::logging::route_native_logs();
    let cfg = Config::embedded().unwrap();
    let flow = Arc::new(cfg.default_flow().unwrap());
    let pool = Arc::new(
        EnginePool::start(&cfg, cfg.engine.clone(), std::slice::from_ref(&flow))
            .expect("engine start (models missing? run `voice-edge models fetch --set test`)"),
    );
    let caller = Tts::new(TtsConfig { voice: "en-us+m3".into(), rate_wpm: 150, ..Default::default() }).unwrap();
    let script = CallerScript {
        utterances: vec![
            caller_says(&caller, "Hello, I'm calling about my order. Where is it?"),
            caller_says(&caller, "The number is four five six seven eight nine."),
        ],
        think_time: Duration::from_millis(500),
        patience: Duration::from_secs(20),
    };
    let services = voice_edge::runtime::live_call::CallServices::edge_only(pool.clone());
    let report = run_scripted_call(&services, 7, flow.clone(), cfg.call.clone(), cfg.vad.clone(), &script);
    for t in &report.summary.turns {
        println!(
            "turn {}: {:?} -> {:?} ({:.2}) | eou {:.0} ms, asr {:?}, intent {:?}, voice-to-voice {:?} ms, speculative {}, filler {}",
            t.turn, t.transcript, t.intent, t.intent_confidence, t.end_of_utterance_ms, t.asr_ms.map(|v| v.round()),
            t.intent_ms.map(|v| v.round()), t.voice_to_voice_ms.map(|v| v.round()), t.speculative, t.filler
        );
    }
    println!("counters: {:?}", report.summary.counters);

    assert_eq!(report.summary.turns.len(), 2, "two caller turns answered: {:?}", report.summary.turns);
    assert_eq!(report.summary.turns[0].intent.as_deref(), Some("order_status"));
    assert_eq!(report.summary.slots.get("order_number").map(String::as_str), Some("456789"));
    assert_eq!(report.summary.tasks_completed, ["order_status"]);
    assert!(report.summary.turns[1].reply.contains("4 5 6 7 8 9"), "{}", report.summary.turns[1].reply);
    for t in &report.summary.turns {
        let v2v = t.voice_to_voice_ms.expect("voice-to-voice measured");
        assert!(v2v > 0.0 && v2v < 5000.0, "voice-to-voice {v2v} ms");
        assert!(t.asr_ms.is_some() && t.intent_ms.is_some() && t.tts_ms.is_some());
    }
    assert_eq!(report.summary.counters.engine_failures, 0);
    assert_eq!(report.summary.refused, 0);
    // The agent really spoke: greeting and two replies, not silence.
    let loud = report.agent_audio.iter().filter(|s| s.abs() > 0.05).count();
    assert!(loud > ENGINE_RATE as usize * 2, "agent audio is nearly silent ({loud} loud samples)");
    assert_eq!(pool.stats().asr_queued + pool.stats().intent_queued + pool.stats().tts_queued, 0);

    // The call leaves its outcome events (one per turn, one for the call) in
    // a durable spool, and they read back intact.
    let events = report.outcome_events("test-node", "live-7", "test").unwrap();
    assert_eq!(events.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let now = std::time::Instant::now();
    for e in &events {
        spool.append(&e.to_json().unwrap(), now).unwrap();
    }
    spool.commit(now).unwrap();
    let stored = spool.read_from(1, 10).unwrap();
    assert_eq!(stored.len(), 3);
    let call = OutcomeEvent::from_json(&stored[2].1).unwrap();
    assert_eq!(call.id(), "test-node:live-7:call");
    let json = String::from_utf8(stored[2].1.clone()).unwrap();
    assert!(json.contains("\"resolution\":\"at_edge\"") && json.contains("\"tasks_completed\":[\"order_status\"]"), "{json}");
}

/// A transcription cancelled while the ASR worker has it in hand is given
/// up half-way (whisper's abort callback), not run to its end: the next
/// request (a final transcript behind a stale partial) gets the thread.
#[test]
fn cancelling_a_transcription_in_hand_aborts_it() {
    use voice_edge::call::EngineResult;
    use voice_edge::engine::pool::Job;
    voice_edge::ops::logging::route_native_logs();
    let mut cfg = Config::embedded().unwrap();
    // The full 30 s window: long enough (over a second on two cores) to be
    // surely in hand when it is cancelled.
    cfg.asr.reduced_audio_ctx = false;
    let flow = Arc::new(cfg.default_flow().unwrap());
    let pool = EnginePool::start(&cfg, cfg.engine.clone(), std::slice::from_ref(&flow))
        .expect("engine start (models missing? run `voice-edge models fetch --set test`)");
    let caller = Tts::new(TtsConfig { voice: "en-us+m3".into(), rate_wpm: 150, ..Default::default() }).unwrap();
    let long: Arc<[f32]> = caller_says(&caller, "I would like to know where my order is, it was due last week and it still has not arrived.").into();
    let short: Arc<[f32]> = caller_says(&caller, "Where is my order?").into();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    pool.submit(1, 1, Job::Transcribe { audio: long, prompt: None, optional: true }, tx.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pool.cancel(1, 1);
    pool.submit(1, 2, Job::Transcribe { audio: short, prompt: None, optional: false }, tx).unwrap();
    let result = rx.blocking_recv().expect("the second request is answered");
    match result {
        EngineResult::Transcript { id, text } => {
            assert_eq!(id, 2, "the cancelled request has no result");
            assert!(text.to_lowercase().contains("order"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!((stats.aborted, stats.cancelled_dropped), (1, 1), "{stats:?}");
}

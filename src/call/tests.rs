//! Scenario tests of the call state machine on a virtual clock: a scripted
//! engine answers commands after set latencies, the caller's audio is
//! scripted frame by frame (loud frames are speech), and time advances 20 ms
//! a step, far faster than real time.

use super::*;
use crate::flow::Flow;
use std::collections::HashMap;

/// Speech is any frame louder than -34 dBFS.
struct Level;
impl SpeechDetector for Level {
    fn is_speech(&mut self, frame: &[f32]) -> bool {
        rms(frame) > 0.02
    }
}

fn tone(amplitude: f32) -> Vec<f32> {
    (0..FRAME_SAMPLES).map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 200.0 / 16_000.0).sin()).collect()
}

fn speech() -> Vec<f32> {
    tone(0.3)
}

fn silence() -> Vec<f32> {
    vec![0.0; FRAME_SAMPLES]
}

#[derive(Clone)]
struct Latency {
    partial_ms: u64,
    final_ms: u64,
    intent_ms: u64,
    tts_ms: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { partial_ms: 60, final_ms: 50, intent_ms: 50, tts_ms: 20 }
    }
}

/// A scripted engine and the record of everything the call emitted.
struct Sim {
    call: Call,
    t0: Instant,
    now: Instant,
    latency: Latency,
    partial_text: String,
    final_text: String,
    intent: String,
    probe_text: String,
    reply_secs: f32,
    due: Vec<(Instant, EngineResult)>,
    purposes: HashMap<RequestId, &'static str>,
    log: Vec<(f64, Output)>,
    sent_frames: Vec<(f64, Vec<f32>)>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with_config(CallConfig::default())
    }

    fn with_config(cfg: CallConfig) -> Sim {
        let flow = Arc::new(Flow::embedded("retail").unwrap());
        let vad = VadConfig { min_speech_ms: 100, pad_ms: 200, ..VadConfig::default() };
        let call = Call::with_detector(cfg, vad, Box::new(Level), FlowSession::new(flow));
        let t0 = Instant::now();
        Sim {
            call,
            t0,
            now: t0,
            latency: Latency::default(),
            partial_text: "where is my order".into(),
            final_text: "Where is my order?".into(),
            intent: "order_status".into(),
            probe_text: String::new(),
            reply_secs: 0.6,
            due: Vec::new(),
            purposes: HashMap::new(),
            log: Vec::new(),
            sent_frames: Vec::new(),
        }
    }

    fn ms(&self) -> f64 {
        ms_between(self.t0, self.now)
    }

    fn drain(&mut self) {
        while let Some(out) = self.call.poll_output() {
            let at = self.ms();
            if let Output::Command(c) = &out {
                match c {
                    Command::Transcribe { id, partial, .. } => {
                        let probe = *partial && self.call.probe.is_some();
                        let (lat, text, kind) = if probe {
                            (self.latency.partial_ms, self.probe_text.clone(), "probe")
                        } else if *partial {
                            (self.latency.partial_ms, self.partial_text.clone(), "partial")
                        } else {
                            (self.latency.final_ms, self.final_text.clone(), "final")
                        };
                        self.purposes.insert(*id, kind);
                        self.due.push((self.now + Duration::from_millis(lat), EngineResult::Transcript { id: *id, text }));
                    }
                    Command::Classify { id, .. } => {
                        let intent = IntentResult { label: self.intent.clone(), confidence: 0.9, margin: 0.8 };
                        self.due.push((self.now + Duration::from_millis(self.latency.intent_ms), EngineResult::Intent { id: *id, intent }));
                    }
                    Command::Synthesize { id, .. } => {
                        let audio: Vec<f32> = (0..(self.reply_secs * 16_000.0) as usize)
                            .map(|i| 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 16_000.0).sin())
                            .collect();
                        self.due.push((self.now + Duration::from_millis(self.latency.tts_ms), EngineResult::Speech { id: *id, audio }));
                    }
                    Command::Cancel { id } => self.due.retain(|(_, r)| result_id(r) != *id),
                    Command::SendAudio(f) => self.sent_frames.push((at, f.clone())),
                    Command::Transfer | Command::Hangup => {}
                }
            }
            self.log.push((at, out));
        }
    }

    /// One 20 ms step: engine results that are due, the playout clock, then the caller frame.
    fn step(&mut self, frame: &[f32]) {
        self.now += FRAME;
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.due).into_iter().partition(|(t, _)| *t <= self.now);
        self.due = later;
        for (_, r) in ready {
            self.call.handle_engine(self.now, r);
            self.drain();
        }
        if self.call.poll_timeout().is_some_and(|t| t <= self.now) {
            self.call.handle_timeout(self.now);
            self.drain();
        }
        self.call.handle_audio(self.now, frame).unwrap();
        self.drain();
    }

    fn run(&mut self, frame: &[f32], ms: u64) {
        for _ in 0..ms / FRAME_MS as u64 {
            self.step(frame);
        }
    }

    /// Caller audio that echoes what we just sent, `db` quieter.
    fn run_echo(&mut self, db: f32, ms: u64) {
        for _ in 0..ms / FRAME_MS as u64 {
            let gain = 10f32.powf(-db / 20.0);
            let frame: Vec<f32> =
                self.sent_frames.last().map(|(_, f)| f.iter().map(|s| s * gain).collect()).unwrap_or_else(silence);
            self.step(&frame);
        }
    }

    fn events(&self) -> Vec<(f64, CallEvent)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Event(e) => Some((*t, e.clone())),
                _ => None,
            })
            .collect()
    }

    fn commands(&self) -> Vec<(f64, Command)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Command(c) => Some((*t, c.clone())),
                _ => None,
            })
            .collect()
    }

    fn turns(&self) -> Vec<TurnRecord> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                CallEvent::TurnCompleted(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn state_at(&self, state: CallState) -> Option<f64> {
        self.events().into_iter().find(|(_, e)| *e == CallEvent::State { state }).map(|(t, _)| t)
    }

    /// Answer the greeting and let it play out.
    fn answered(mut self) -> Sim {
        self.call.start(self.now);
        self.drain();
        self.run(&silence(), 1000);
        assert_eq!(self.call.state(), CallState::Listening);
        self.log.clear();
        self.sent_frames.clear();
        self
    }
}

fn result_id(r: &EngineResult) -> RequestId {
    match r {
        EngineResult::Transcript { id, .. }
        | EngineResult::Intent { id, .. }
        | EngineResult::Speech { id, .. }
        | EngineResult::Failed { id, .. } => *id,
    }
}

#[test]
fn greeting_is_spoken_in_paced_frames() {
    let mut sim = Sim::new();
    sim.call.start(sim.now);
    sim.drain();
    sim.run(&silence(), 1000);
    // 0.6 s of greeting = 30 frames, one per 20 ms
    assert_eq!(sim.sent_frames.len(), 30);
    for pair in sim.sent_frames.windows(2) {
        assert!((pair[1].0 - pair[0].0 - 20.0).abs() < 1e-6, "frames must be 20 ms apart");
    }
    assert_eq!(sim.call.state(), CallState::Listening);
}

#[test]
fn speculative_answer_is_ready_when_the_endpoint_fires() {
    let mut sim = Sim::new().answered();
    sim.run(&speech(), 1000);
    let speech_end = sim.ms();
    sim.run(&silence(), 1000);

    let first_final = sim
        .commands()
        .into_iter()
        .find(|(_, c)| matches!(c, Command::Transcribe { partial: false, .. }))
        .map(|(t, _)| t)
        .expect("final transcription requested");
    let thinking = sim.state_at(CallState::Thinking).expect("endpoint");
    let first_frame = sim.sent_frames.first().map(|(t, _)| *t).expect("reply played");
    assert!(first_final - speech_end <= 140.0, "speculation starts after ~120 ms of silence, was {}", first_final - speech_end);
    assert!((thinking - speech_end - 300.0).abs() <= 20.0, "base endpoint 300 ms, was {}", thinking - speech_end);
    assert!(first_frame - thinking <= 20.0, "answer was ready at the endpoint");

    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert!(t.speculative);
    assert_eq!(t.intent.as_deref(), Some("order_status"));
    assert_eq!(t.reply, sim.call.session().flow().slot("order_number").unwrap().prompt);
    let v2v = t.voice_to_voice_ms.unwrap();
    assert!((280.0..=340.0).contains(&v2v), "voice-to-voice {v2v}");
    assert!(t.asr_ms.is_some() && t.intent_ms.is_some() && t.tts_ms.is_some());
    assert_eq!(sim.call.counters().speculation_discarded, 0);
}

#[test]
fn partial_transcripts_stream_while_the_caller_speaks() {
    let mut sim = Sim::new().answered();
    sim.run(&speech(), 2000);
    let partials = sim.commands().iter().filter(|(_, c)| matches!(c, Command::Transcribe { partial: true, .. })).count();
    assert!((3..=5).contains(&partials), "one partial per 500 ms of speech, got {partials}");
    assert!(sim.events().iter().any(|(_, e)| matches!(e, CallEvent::PartialTranscript { text } if text == "where is my order")));
}

#[test]
fn unfinished_words_extend_the_endpoint() {
    let mut sim = Sim::new().answered();
    sim.partial_text = "my order number is".into();
    sim.final_text = "my order number is".into();
    sim.run(&speech(), 1000);
    let speech_end = sim.ms();
    sim.run(&silence(), 1500);
    let thinking = sim.state_at(CallState::Thinking).unwrap();
    assert!((thinking - speech_end - 800.0).abs() <= 20.0, "300 + 500 ms for unfinished words, was {}", thinking - speech_end);
}

#[test]
fn a_fresh_final_transcript_overrides_a_stale_partial() {
    let mut sim = Sim::new().answered();
    // The last partial lagged ("... is my"), the speculative final is complete.
    sim.partial_text = "hi where is my".into();
    sim.final_text = "Hi, where is my order?".into();
    sim.run(&speech(), 1000);
    let speech_end = sim.ms();
    sim.run(&silence(), 1500);
    let thinking = sim.state_at(CallState::Thinking).unwrap();
    assert!((thinking - speech_end - 300.0).abs() <= 20.0, "base endpoint once the final is back, was {}", thinking - speech_end);
}

#[test]
fn caller_going_on_discards_the_speculative_answer() {
    let mut sim = Sim::new().answered();
    sim.latency.final_ms = 400; // still in flight when the caller resumes
    sim.run(&speech(), 800);
    sim.run(&silence(), 160); // speculation starts at 120 ms
    let speculative = sim
        .commands()
        .into_iter()
        .find_map(|(_, c)| match c {
            Command::Transcribe { id, partial: false, audio, .. } => Some((id, audio.len())),
            _ => None,
        })
        .expect("speculative final");
    sim.run(&speech(), 600);
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Cancel { id: speculative.0 }), "speculation cancelled");
    assert_eq!(sim.call.counters().speculation_discarded, 1);
    sim.run(&silence(), 1500);
    let last_final = sim
        .commands()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Command::Transcribe { partial: false, audio, .. } => Some(audio.len()),
            _ => None,
        })
        .last()
        .unwrap();
    assert!(last_final > speculative.1 + 16_000 / 2, "the final covers all the speech");
    assert_eq!(sim.turns().len(), 1);
    // the caller's pause became part of their pause profile
    assert!(sim.call.endpointer.typical_pause_ms().is_some());
}

#[test]
fn barge_in_stops_playout_within_200_ms() {
    let mut sim = Sim::new().answered();
    sim.reply_secs = 4.0;
    sim.run(&speech(), 800);
    sim.run(&silence(), 600);
    assert_eq!(sim.call.state(), CallState::AgentSpeaking);
    let onset = sim.ms();
    sim.run(&speech(), 1200);
    let last_frame = sim.sent_frames.last().unwrap().0;
    assert!(last_frame - onset <= 200.0, "playout went on {} ms after the caller started", last_frame - onset);
    assert_eq!(sim.call.counters().barge_ins, 1);
    assert!(sim.events().iter().any(|(_, e)| *e == CallEvent::BargeIn));
    assert_eq!(sim.call.state(), CallState::CallerSpeaking);
    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    assert!(turns[0].barged_in);
    // The interruption is the caller's next turn.
    sim.intent = "cancel_order".into();
    sim.final_text = "no wait, cancel it".into();
    sim.run(&silence(), 1000);
    assert_eq!(sim.call.counters().turns, 2, "the interruption was answered");
    assert_eq!(sim.call.state(), CallState::AgentSpeaking);
}

#[test]
fn backchannel_pauses_then_resumes_playout() {
    let mut sim = Sim::new().answered();
    sim.reply_secs = 3.0;
    sim.probe_text = "Mm-hm.".into();
    sim.run(&speech(), 800);
    sim.run(&silence(), 500);
    assert_eq!(sim.call.state(), CallState::AgentSpeaking);
    sim.run(&speech(), 260);
    sim.run(&silence(), 3500);
    assert_eq!(sim.call.counters().barge_ins, 0);
    assert_eq!(sim.call.counters().false_barge_ins, 1);
    assert!(sim.events().iter().any(|(_, e)| matches!(e, CallEvent::PlayoutResumed { heard } if heard == "Mm-hm.")));
    // every frame of the 3 s reply was played, none dropped
    assert_eq!(sim.sent_frames.len(), 150);
    assert!(!sim.turns()[0].barged_in);
}

#[test]
fn a_short_real_word_is_an_interruption() {
    let mut sim = Sim::new().answered();
    sim.reply_secs = 3.0;
    sim.probe_text = "Stop.".into();
    sim.run(&speech(), 800);
    sim.run(&silence(), 500);
    sim.run(&speech(), 260);
    sim.run(&silence(), 400);
    assert_eq!(sim.call.counters().barge_ins, 1);
    assert!(sim.sent_frames.len() < 150);
}

#[test]
fn own_echo_does_not_interrupt() {
    let mut sim = Sim::new().answered();
    sim.reply_secs = 2.0;
    sim.run(&speech(), 800);
    sim.run(&silence(), 400);
    assert_eq!(sim.call.state(), CallState::AgentSpeaking);
    sim.run_echo(20.0, 2000);
    assert_eq!(sim.call.counters().barge_ins + sim.call.counters().false_barge_ins, 0);
    assert!(sim.call.counters().echo_frames > 50, "echo frames counted: {}", sim.call.counters().echo_frames);
    assert_eq!(sim.sent_frames.len(), 100);
}

#[test]
fn a_filler_covers_a_slow_answer() {
    let mut sim = Sim::new().answered();
    sim.latency.intent_ms = 2000;
    sim.run(&speech(), 800);
    sim.run(&silence(), 4000);
    let synth: Vec<f64> = sim
        .commands()
        .into_iter()
        .filter_map(|(t, c)| matches!(&c, Command::Synthesize { text, .. } if text == "One moment.").then_some(t))
        .collect();
    assert_eq!(synth.len(), 1, "one filler");
    let thinking = sim.state_at(CallState::Thinking).unwrap();
    assert!((synth[0] - thinking - 900.0).abs() <= 40.0, "filler after 900 ms, was {}", synth[0] - thinking);
    assert_eq!(sim.call.counters().fillers, 1);
    let turns = sim.turns();
    assert_eq!(turns.len(), 1, "the real answer still came");
    assert!(turns[0].filler);
}

#[test]
fn hang_up_cancels_work_in_flight() {
    let mut sim = Sim::new().answered();
    sim.latency.intent_ms = 5000;
    sim.run(&speech(), 800);
    sim.run(&silence(), 600);
    assert!(sim.call.requests_in_flight() > 0);
    let before = sim.log.len();
    sim.call.hangup(sim.now);
    sim.drain();
    let cancels = sim.log[before..].iter().filter(|(_, o)| matches!(o, Output::Command(Command::Cancel { .. }))).count();
    assert!(cancels >= 1);
    assert_eq!(sim.call.requests_in_flight(), 0);
    assert_eq!(sim.call.state(), CallState::Ended);
    // late results and audio are ignored
    let after = sim.log.len();
    sim.call.handle_engine(sim.now, EngineResult::Intent { id: 1, intent: IntentResult { label: "goodbye".into(), confidence: 1.0, margin: 1.0 } });
    sim.run(&speech(), 500);
    assert_eq!(sim.log.len(), after);
}

#[test]
fn dtmf_fills_the_pending_order_number() {
    let mut sim = Sim::new().answered();
    sim.run(&speech(), 800);
    sim.run(&silence(), 2000);
    assert_eq!(sim.call.session().pending_task(), Some("order_status"));
    for d in "456789#".chars() {
        sim.call.handle_dtmf(sim.now, d);
        sim.drain();
    }
    sim.run(&silence(), 1500);
    let turns = sim.turns();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1].dtmf.as_deref(), Some("456789#"));
    assert!(turns[1].reply.contains("4 5 6 7 8 9"), "{}", turns[1].reply);
    assert_eq!(sim.call.session().tasks_completed(), ["order_status"]);
}

#[test]
fn transfer_and_goodbye_end_the_conversation() {
    let mut sim = Sim::new().answered();
    sim.intent = "human_agent".into();
    sim.run(&speech(), 600);
    sim.run(&silence(), 2000);
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Transfer));
    assert_eq!(sim.call.state(), CallState::Transferring);
    sim.call.transfer_accepted(sim.now);
    assert_eq!(sim.call.session().tasks_completed(), ["human_agent"]);

    let mut sim = Sim::new().answered();
    sim.intent = "goodbye".into();
    sim.run(&speech(), 600);
    sim.run(&silence(), 2000);
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Hangup));
    assert_eq!(sim.call.state(), CallState::Ended);
    assert_eq!(sim.call.session().tasks_completed(), ["goodbye"]);
}

#[test]
fn engine_failure_still_answers() {
    let mut sim = Sim::new().answered();
    sim.run(&speech(), 600);
    sim.run(&silence(), 140);
    // fail the final transcription
    let id = sim
        .commands()
        .into_iter()
        .find_map(|(_, c)| match c {
            Command::Transcribe { id, partial: false, .. } => Some(id),
            _ => None,
        })
        .unwrap();
    sim.due.retain(|(_, r)| result_id(r) != id);
    sim.call.handle_engine(sim.now, EngineResult::Failed { id, error: "whisper: out of memory".into() });
    sim.drain();
    sim.run(&silence(), 1500);
    assert_eq!(sim.call.counters().engine_failures, 1);
    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].reply, sim.call.session().flow().no_input_reply);
}

#[test]
fn bad_frames_are_errors_and_bad_config_is_named() {
    let mut sim = Sim::new();
    assert_eq!(sim.call.handle_audio(sim.now, &[0.0; 100]), Err(CallError::FrameSize { expected: 320, got: 100 }));
    let nan = vec![f32::NAN; FRAME_SAMPLES];
    sim.call.handle_audio(sim.now, &nan).unwrap();
    let cfg = CallConfig { partial_interval_ms: 10, ..Default::default() };
    assert!(cfg.validate().unwrap_err().contains("call.partial_interval_ms"));
    assert!(CallConfig::default().validate().is_ok());
}

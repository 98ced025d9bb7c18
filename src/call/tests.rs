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

/// How the scripted cluster answers an escalation (times after the Escalate command).
#[derive(Clone, Default)]
struct ClusterScript {
    sentences: Vec<(u64, String)>,
    /// None: the cluster never finishes.
    done: Option<(u64, ClusterTurnOutcome)>,
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
    intent_confidence: f32,
    probe_text: String,
    reply_secs: f32,
    cluster: ClusterScript,
    /// Speech latency by text (else `latency.tts_ms`).
    tts_ms_for: HashMap<String, u64>,
    /// Amplitude of the synthesized audio by text (else 0.5), to tell what is played.
    voice: HashMap<String, f32>,
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
            intent_confidence: 0.9,
            probe_text: String::new(),
            reply_secs: 0.6,
            cluster: ClusterScript::default(),
            tts_ms_for: HashMap::new(),
            voice: HashMap::new(),
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
                        let confidence = self.intent_confidence;
                        let intent = IntentResult { label: self.intent.clone(), confidence, margin: confidence - 0.1 };
                        self.due.push((self.now + Duration::from_millis(self.latency.intent_ms), EngineResult::Intent { id: *id, intent }));
                    }
                    Command::Synthesize { id, text } => {
                        let amplitude = self.voice.get(text).copied().unwrap_or(0.5);
                        let audio: Vec<f32> = (0..(self.reply_secs * 16_000.0) as usize)
                            .map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 16_000.0).sin())
                            .collect();
                        let latency = self.tts_ms_for.get(text).copied().unwrap_or(self.latency.tts_ms);
                        self.due.push((self.now + Duration::from_millis(latency), EngineResult::Speech { id: *id, audio }));
                    }
                    Command::Escalate { id, .. } => {
                        for (ms, text) in &self.cluster.sentences {
                            let result = EngineResult::ClusterSentence { id: *id, text: text.clone() };
                            self.due.push((self.now + Duration::from_millis(*ms), result));
                        }
                        if let Some((ms, outcome)) = &self.cluster.done {
                            let result = EngineResult::ClusterDone { id: *id, outcome: outcome.clone() };
                            self.due.push((self.now + Duration::from_millis(*ms), result));
                        }
                    }
                    Command::Cancel { id } => self.due.retain(|(_, r)| r.id() != *id),
                    Command::SendAudio(f) => self.sent_frames.push((at, f.clone())),
                    Command::Transfer | Command::Hangup | Command::WarmIntent { .. } => {}
                }
            }
            self.log.push((at, out));
        }
    }

    /// One 20 ms step: engine results that are due, the playout clock, then the caller frame.
    fn step(&mut self, frame: &[f32]) {
        self.now += FRAME;
        let (mut ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.due).into_iter().partition(|(t, _)| *t <= self.now);
        ready.sort_by_key(|(t, _)| *t);
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

    /// The final (non-partial) transcriptions requested so far: id and
    /// length of the audio sent.
    fn final_transcriptions(&self) -> Vec<(RequestId, usize)> {
        self.commands()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Command::Transcribe { id, partial: false, audio, .. } => Some((id, audio.len())),
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
    r.id()
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
    // Each partial warms the intent model with the words so far.
    let warmed = sim.commands().iter().filter(|(_, c)| matches!(c, Command::WarmIntent { text } if text == "where is my order")).count();
    assert!(warmed >= 2, "a warm-up per partial, got {warmed}");
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
fn a_pause_after_unfinished_words_does_not_slow_the_caller_down() {
    let mut sim = Sim::new().answered();
    // "Hi, ..." then a 600 ms pause: the comma explains it.
    sim.partial_text = "Hi,".into();
    sim.final_text = "Hi,".into();
    sim.run(&speech(), 600);
    sim.run(&silence(), 600);
    assert_eq!(sim.call.state(), CallState::CallerSpeaking, "a trailing comma waits longer than 600 ms");
    sim.partial_text = "Hi, where is my".into();
    sim.final_text = "Hi, where is my order?".into();
    sim.run(&speech(), 800);
    let speech_end = sim.ms();
    sim.run(&silence(), 1500);
    assert_eq!(sim.call.endpointer.typical_pause_ms(), None, "the pause was not counted as the caller's pace");
    let thinking = sim.state_at(CallState::Thinking).unwrap();
    assert!((thinking - speech_end - 300.0).abs() <= 20.0, "base endpoint, was {}", thinking - speech_end);
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
    let speculative = *sim.final_transcriptions().first().expect("speculative final");
    sim.run(&speech(), 600);
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Cancel { id: speculative.0 }), "speculation cancelled");
    assert_eq!(sim.call.counters().speculation_discarded, 1);
    sim.run(&silence(), 1500);
    let (_, last_final) = *sim.final_transcriptions().last().unwrap();
    assert!(last_final > speculative.1 + 16_000 / 2, "the final covers all the speech");
    assert_eq!(sim.turns().len(), 1);
    // the caller's pause became part of their pause profile
    assert!(sim.call.endpointer.typical_pause_ms().is_some());
}

#[test]
fn caller_going_on_after_the_endpoint_continues_the_same_utterance() {
    let mut sim = Sim::new().answered();
    sim.latency.final_ms = 900; // the answer is not ready when the caller resumes
    sim.run(&speech(), 800);
    sim.run(&silence(), 700); // the endpoint fires (base 300 ms)
    assert_eq!(sim.call.state(), CallState::Thinking, "the endpoint fired");
    let (_, first) = *sim.final_transcriptions().last().unwrap();
    sim.run(&speech(), 600); // "... where is it?"
    sim.run(&silence(), 4000);
    let (_, last) = *sim.final_transcriptions().last().unwrap();
    assert!(last >= first + 16_000 / 2, "the final covers both parts: {last} samples after {first}");
    assert_eq!(sim.turns().len(), 1, "one turn, not two");
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
fn a_reply_queued_behind_a_filler_is_still_a_turn_at_hang_up() {
    let mut sim = Sim::new().answered();
    sim.latency.intent_ms = 1500;
    // Long audio: the filler is still playing when the reply is ready.
    sim.reply_secs = 4.0;
    sim.run(&speech(), 800);
    sim.run(&silence(), 2600);
    assert_eq!(sim.call.counters().fillers, 1);
    assert_eq!(sim.call.counters().turns, 1, "the reply is decided and queued behind the filler");
    assert!(sim.turns().is_empty(), "the reply has not started");
    sim.call.hangup(sim.now);
    sim.drain();
    let turns = sim.turns();
    assert_eq!(turns.len(), 1, "the announced turn is recorded");
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
    // The goodbye, then the retail flow's survey (unanswered: it times out).
    sim.run(&silence(), 2000 + 7000);
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

// ---------------------------------------------------------------------------
// Routing, escalation to the cluster, the satisfaction survey

impl Sim {
    /// A call whose driver reports the cluster up.
    fn with_cluster() -> Sim {
        let mut sim = Sim::new();
        sim.call.set_cluster_available(true);
        sim.answered()
    }

    /// One spoken caller turn and `ms` of silence after it.
    fn say(&mut self, ms: u64) {
        self.run(&speech(), 800);
        self.run(&silence(), ms);
    }

    fn escalations(&self) -> Vec<(f64, RequestId, TurnContext, Vec<ChatMessage>)> {
        self.commands()
            .into_iter()
            .filter_map(|(t, c)| match c {
                Command::Escalate { id, context, history } => Some((t, id, context, history)),
                _ => None,
            })
            .collect()
    }

    fn synthesized(&self, text: &str) -> Vec<f64> {
        self.commands()
            .into_iter()
            .filter_map(|(t, c)| matches!(&c, Command::Synthesize { text: x, .. } if x == text).then_some(t))
            .collect()
    }

    /// When each distinct amplitude (a voice) was first sent, in order.
    fn voices_played(&self) -> Vec<(f64, f32)> {
        let mut out: Vec<(f64, f32)> = Vec::new();
        for (t, frame) in &self.sent_frames {
            let peak = frame.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            let voice = (peak * 10.0).round() / 10.0;
            if out.last().is_none_or(|(_, v)| *v != voice) {
                out.push((*t, voice));
            }
        }
        out
    }

    fn hangup_at(&self) -> Option<f64> {
        self.commands().into_iter().find(|(_, c)| *c == Command::Hangup).map(|(t, _)| t)
    }

    fn key(&mut self, digit: char) {
        self.call.handle_dtmf(self.now, digit);
        self.drain();
    }
}

fn billed(ok: bool, error: Option<&str>) -> ClusterTurnOutcome {
    ClusterTurnOutcome {
        ok,
        prompt_tokens: 812,
        completion_tokens: 46,
        reasoning_tokens: 120,
        first_token_ms: Some(240.0),
        error: error.map(String::from),
    }
}

#[test]
fn a_confident_turn_stays_on_the_edge() {
    let mut sim = Sim::with_cluster();
    sim.say(1500);
    assert!(sim.escalations().is_empty());
    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert_eq!((t.tier, t.route_reason), (TurnTier::Edge, Some(RouteReason::Confident)));
    assert!(t.difficulty.is_some_and(|d| d < 0.3), "{:?}", t.difficulty);
    assert!(!t.escalated);
    assert_eq!(t.reply, sim.call.session().flow().slot("order_number").unwrap().prompt);
}

#[test]
fn a_low_confidence_turn_is_answered_by_the_cluster_sentence_by_sentence() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.final_text = "my thing from last week is all wrong".into();
    let (first, second) = ("I'm sorry to hear that.".to_string(), "Let me look into it with you.".to_string());
    sim.cluster = ClusterScript {
        sentences: vec![(300, first.clone()), (350, second.clone())],
        done: Some((2500, billed(true, None))),
    };
    // The first sentence takes longer to synthesize than the second: order still holds.
    sim.tts_ms_for.insert(first.clone(), 200);
    sim.voice.insert(first.clone(), 0.2);
    sim.voice.insert(second.clone(), 0.4);
    sim.say(4000);

    let escalations = sim.escalations();
    assert_eq!(escalations.len(), 1, "one escalation");
    let (escalated_at, _, context, history) = &escalations[0];
    let thinking = sim.state_at(CallState::Thinking).unwrap();
    assert!((escalated_at - thinking).abs() < 1e-6, "escalated at the endpoint");
    assert_eq!(context.route_reason.as_deref(), Some("low_intent_confidence"));
    assert_eq!(context.intent.as_deref(), Some("order_status"));
    assert_eq!(context.flow_state, "idle");
    assert_eq!(history.first(), Some(&ChatMessage::assistant(sim.call.session().greeting())));
    assert_eq!(history.last(), Some(&ChatMessage::user("my thing from last week is all wrong")));

    let sentence_synth = (sim.synthesized(&first)[0], sim.synthesized(&second)[0]);
    assert!((sentence_synth.0 - escalated_at - 300.0).abs() <= 20.0, "synthesized as it arrives");
    assert!((sentence_synth.1 - escalated_at - 350.0).abs() <= 20.0);
    let voices = sim.voices_played();
    assert_eq!(voices.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [0.2, 0.4], "sentences played in order, nothing else");
    assert!(voices[0].0 < escalated_at + 2500.0, "the first sentence plays before the answer is done");
    assert!(voices[0].0 - escalated_at <= 520.0, "first sentence at ~500 ms, was {}", voices[0].0 - escalated_at);
    assert_eq!(sim.sent_frames.len(), 60, "both sentences, complete");

    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert_eq!((t.tier, t.route_reason), (TurnTier::Cluster, Some(RouteReason::LowIntentConfidence)));
    assert!(t.escalated);
    assert_eq!(t.reply, format!("{first} {second}"));
    assert_eq!((t.cluster_prompt_tokens, t.cluster_completion_tokens, t.cluster_reasoning_tokens), (812, 46, 120));
    assert!(t.cluster_first_sentence_ms.is_some_and(|ms| (ms - 300.0).abs() <= 20.0));
    assert_eq!(t.cluster_error, None);
    assert!(t.completed_ms > t.speech_end_ms + 2500.0, "completed once the answer was done and played");
    assert_eq!(sim.call.counters().escalations, 1);
    assert_eq!(sim.call.state(), CallState::Listening);
    assert_eq!(sim.call.session().pending_task(), None, "the cluster answered: the flow state is unchanged");
    assert_eq!(sim.call.requests_in_flight(), 0);
}

#[test]
fn a_silent_cluster_falls_back_to_the_edge_after_the_filler() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.say(4000);
    let (escalated_at, id, ..) = sim.escalations()[0].clone();
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Cancel { id }), "the escalation is cancelled");

    let filler = sim.synthesized("One moment.");
    assert_eq!(filler.len(), 1);
    assert!((filler[0] - escalated_at - 900.0).abs() <= 40.0, "the filler covers the wait");
    let audio: Vec<f64> = sim.sent_frames.iter().map(|(t, _)| *t).collect();
    assert!(audio[0] - escalated_at <= 1000.0, "no more than ~1 s of silence, was {}", audio[0] - escalated_at);
    let gaps = audio.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gaps <= 20.0 + 1e-6, "the fallback reply follows the filler without a gap");
    assert_eq!(audio.len(), 60, "filler then the flow's reply");

    let turns = sim.turns();
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert_eq!((t.tier, t.route_reason), (TurnTier::EdgeFallback, Some(RouteReason::LowIntentConfidence)));
    assert!(t.escalated && t.filler);
    assert_eq!(t.reply, sim.call.session().flow().slot("order_number").unwrap().prompt);
    assert!(t.cluster_error.as_deref().is_some_and(|e| e.contains("1200 ms")), "{:?}", t.cluster_error);
    assert!(t.voice_to_voice_ms.unwrap() <= 300.0 + 1200.0 + 600.0 + 40.0);
    assert_eq!(sim.call.session().pending_task(), Some("order_status"), "the flow's reply was committed");
    assert_eq!(sim.call.counters().cluster_fallbacks, 1);

    // A late answer is ignored.
    let before = sim.log.len();
    sim.call.handle_engine(sim.now, EngineResult::ClusterSentence { id, text: "Too late.".into() });
    sim.call.handle_engine(sim.now, EngineResult::ClusterDone { id, outcome: billed(true, None) });
    sim.drain();
    assert_eq!(sim.log.len(), before);
}

#[test]
fn a_cluster_failing_before_its_first_sentence_falls_back_at_once() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.cluster = ClusterScript { sentences: vec![], done: Some((200, billed(false, Some("http 503")))) };
    sim.say(2000);
    let (escalated_at, ..) = sim.escalations()[0].clone();
    let first = sim.sent_frames[0].0;
    assert!(first - escalated_at <= 240.0, "fallback as soon as the failure is known, was {}", first - escalated_at);
    let t = &sim.turns()[0];
    assert_eq!(t.tier, TurnTier::EdgeFallback);
    assert_eq!(t.cluster_error.as_deref(), Some("http 503"));
    assert_eq!(t.cluster_prompt_tokens, 812, "what the failed attempt cost is billed");
    assert_eq!(sim.call.counters().cluster_failures, 1);
}

#[test]
fn a_cluster_failing_after_a_sentence_stops_there() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.cluster = ClusterScript {
        sentences: vec![(300, "Right, I can help with that.".into())],
        done: Some((500, billed(false, Some("connection reset")))),
    };
    sim.say(3000);
    assert_eq!(sim.sent_frames.len(), 30, "the one sentence, nothing after it");
    let edge_reply = sim.call.session().flow().slot("order_number").unwrap().prompt.clone();
    let replies: Vec<String> = sim
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            CallEvent::AgentReply { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(replies, ["Right, I can help with that."], "no fallback after speaking");
    assert!(!replies.contains(&edge_reply));
    let t = &sim.turns()[0];
    assert_eq!(t.tier, TurnTier::Cluster);
    assert_eq!(t.cluster_error.as_deref(), Some("connection reset"));
    assert_eq!(t.cluster_completion_tokens, 46);
    assert_eq!(sim.call.counters().cluster_fallbacks, 0);
    assert_eq!(sim.call.state(), CallState::Listening);
}

#[test]
fn a_caller_asking_for_a_person_is_transferred_without_a_survey() {
    let mut sim = Sim::with_cluster();
    sim.intent = "other".into();
    sim.final_text = "Can I speak to a real person please".into();
    sim.say(2000);
    let t = &sim.turns()[0];
    assert_eq!((t.tier, t.route_reason), (TurnTier::Human, Some(RouteReason::CallerAskedForHuman)));
    assert_eq!(t.reply, "Of course. Let me connect you to one of my colleagues.");
    assert_eq!(t.action, Some(FlowAction::Transfer));
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Transfer));
    assert_eq!(sim.call.state(), CallState::Transferring);
    assert!(sim.escalations().is_empty());
    let survey = sim.call.session().flow().survey.clone().unwrap();
    assert!(sim.synthesized(&survey.prompt).is_empty(), "transfers skip the survey");
    assert_eq!(sim.call.counters().handoffs, 1);
}

#[test]
fn hanging_up_during_an_escalation_cancels_it() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.say(500);
    let (_, id, ..) = sim.escalations()[0].clone();
    let before = sim.log.len();
    sim.call.hangup(sim.now);
    sim.drain();
    assert!(sim.log[before..].iter().any(|(_, o)| *o == Output::Command(Command::Cancel { id })));
    assert_eq!(sim.call.requests_in_flight(), 0);
    assert_eq!(sim.call.state(), CallState::Ended);
}

#[test]
fn barge_in_during_a_cluster_answer_cancels_the_rest() {
    let mut sim = Sim::with_cluster();
    sim.intent_confidence = 0.3;
    sim.reply_secs = 2.0;
    sim.cluster = ClusterScript { sentences: vec![(200, "Let me explain how this works.".into())], done: None };
    sim.say(800);
    assert_eq!(sim.call.state(), CallState::AgentSpeaking);
    let (_, id, ..) = sim.escalations()[0].clone();
    sim.run(&speech(), 800);
    assert_eq!(sim.call.counters().barge_ins, 1);
    assert!(sim.commands().iter().any(|(_, c)| *c == Command::Cancel { id }));
    let t = &sim.turns()[0];
    assert!(t.barged_in && t.tier == TurnTier::Cluster);
    assert_eq!(t.cluster_error.as_deref(), Some("interrupted by the caller"));
}

#[test]
fn repeated_failures_escalate_and_keyed_turns_stay_on_the_edge() {
    let mut sim = Sim::with_cluster();
    sim.intent = "other".into();
    sim.final_text = "blue".into();
    sim.say(1500);
    sim.say(1500);
    assert!(sim.escalations().is_empty(), "one failure is not yet a pattern");
    sim.say(1500);
    let escalations = sim.escalations();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].2.route_reason.as_deref(), Some("repeated_failures"));
    // the history: greeting, then caller and agent in turn, ending with this turn
    let history = &escalations[0].3;
    assert_eq!(history.len(), 6);
    assert_eq!(history.iter().filter(|m| m.role == crate::proto::openai::Role::User).count(), 3);

    sim.log.clear();
    sim.run(&silence(), 2000);
    for d in "456789#".chars() {
        sim.key(d);
    }
    sim.run(&silence(), 1500);
    assert!(sim.escalations().is_empty(), "keyed turns are never escalated");
    let keyed = sim.turns().into_iter().find(|t| t.dtmf.is_some()).unwrap();
    assert_eq!((keyed.tier, keyed.route_reason), (TurnTier::Edge, None));
}

#[test]
fn without_the_keypad_survey_the_goodbye_hangs_up() {
    let mut sim = Sim::new();
    sim.call.set_keypad_survey(false);
    let mut sim = sim.answered();
    sim.intent = "goodbye".into();
    sim.say(3000);
    let survey = sim.call.session().flow().survey.clone().unwrap();
    assert!(sim.synthesized(&survey.prompt).is_empty(), "the channel rates the call itself");
    assert_eq!(sim.call.state(), CallState::Ended);
    assert!(sim.hangup_at().is_some());
}

/// A call that has just said its goodbye, its survey prompt requested.
fn at_survey() -> Sim {
    let mut sim = Sim::new().answered();
    sim.intent = "goodbye".into();
    sim.run(&speech(), 800);
    for _ in 0..150 {
        if sim.call.state() == CallState::Survey {
            break;
        }
        sim.step(&silence());
    }
    assert_eq!(sim.call.state(), CallState::Survey);
    assert_eq!(sim.turns().len(), 1, "the goodbye turn is complete");
    assert_eq!(sim.hangup_at(), None, "not yet");
    sim
}

#[test]
fn the_survey_records_a_keyed_rating_then_thanks_and_hangs_up() {
    let mut sim = at_survey();
    let survey = sim.call.session().flow().survey.clone().unwrap();
    assert_eq!(sim.synthesized(&survey.prompt).len(), 1);
    sim.run(&silence(), 1000);
    sim.key('4');
    let rated = sim.ms();
    sim.run(&silence(), 1000);
    assert_eq!(sim.call.satisfaction(), Some(4));
    let satisfaction: Vec<f64> =
        sim.events().into_iter().filter_map(|(t, e)| (e == CallEvent::Satisfaction { score: 4 }).then_some(t)).collect();
    assert_eq!(satisfaction, [rated]);
    assert!(sim.synthesized(&survey.thanks).iter().all(|t| *t == rated));
    let hangup = sim.hangup_at().expect("hung up");
    assert!((hangup - rated - 620.0).abs() <= 40.0, "after the thanks line, was {}", hangup - rated);
    assert_eq!(sim.call.state(), CallState::Ended);
    assert_eq!(sim.turns().len(), 1, "the survey is no turn");
}

#[test]
fn the_survey_times_out_without_a_rating() {
    let mut sim = at_survey();
    sim.run(&silence(), 1000);
    let prompt_end = sim.sent_frames.last().unwrap().0 + 20.0;
    assert_eq!(sim.hangup_at(), None);
    sim.run(&silence(), 6000);
    let hangup = sim.hangup_at().expect("hung up");
    assert!((hangup - prompt_end - 6000.0).abs() <= 40.0, "6 s after the prompt, was {}", hangup - prompt_end);
    assert_eq!(sim.call.satisfaction(), None);
    assert!(!sim.events().iter().any(|(_, e)| matches!(e, CallEvent::Satisfaction { .. })));
    assert_eq!(sim.call.state(), CallState::Ended);

    let mut sim = at_survey();
    sim.run(&silence(), 1000);
    sim.key('9');
    assert!(sim.hangup_at().is_some(), "another key hangs up unrated");
    assert_eq!(sim.call.satisfaction(), None);
}

#[test]
fn speech_during_the_survey_makes_no_turn() {
    let mut sim = at_survey();
    sim.log.clear();
    sim.sent_frames.clear();
    sim.run(&speech(), 1500);
    sim.run(&silence(), 1500);
    assert!(!sim.commands().iter().any(|(_, c)| matches!(c, Command::Transcribe { .. } | Command::Classify { .. })));
    assert_eq!(sim.call.state(), CallState::Survey);
    assert_eq!(sim.sent_frames.len(), 30, "the prompt was not interrupted");
    sim.key('5');
    assert_eq!(sim.call.satisfaction(), Some(5));
}

#[test]
fn cluster_settings_are_validated() {
    let cfg = CallConfig { cluster_first_sentence_ms: 50, ..Default::default() };
    assert!(cfg.validate().unwrap_err().contains("call.cluster_first_sentence_ms"));
    let cfg = CallConfig { cluster_fallback_text: Some(" ".into()), ..Default::default() };
    assert!(cfg.validate().unwrap_err().contains("call.cluster_fallback_text"));
    let cfg = CallConfig { cluster_history_messages: 1, ..Default::default() };
    assert!(cfg.validate().unwrap_err().contains("call.cluster_history_messages"));
}

#[test]
fn call_states_serialize_as_their_names() {
    let event = serde_json::to_value(CallEvent::State { state: CallState::CallerSpeaking }).unwrap();
    assert_eq!(event, serde_json::json!({"event": "state", "state": "caller_speaking"}));
    assert_eq!(serde_json::to_value(CallState::AgentSpeaking).unwrap(), "agent_speaking");
}

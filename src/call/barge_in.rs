//! Barge-in: caller speech while the agent speaks. A burst louder than the
//! expected echo of our own playout pauses it ([`Probe`]); a short burst that
//! transcribes to a backchannel ("mm-hm", "okay") or to nothing resumes it
//! where it stopped (a false barge-in); anything else drops the rest of the
//! reply (and of a streaming cluster answer) and becomes the caller's next turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ms_between, Call, CallEvent, CallState, Command, Purpose, RequestId};

/// Playout paused while a caller burst is judged.
#[derive(Debug)]
pub(super) struct Probe {
    pub(super) started_at: Instant,
    pub(super) audio: Vec<f32>,
    pub(super) last_speech_at: Instant,
    pub(super) request: Option<RequestId>,
    pub(super) transcript: Option<String>,
}

impl Call {
    /// Whether a caller frame is our own playout coming back.
    pub(super) fn is_echo(&mut self, level: f32, now: Instant) -> bool {
        let tail = Duration::from_millis(self.cfg.barge_in.echo_tail_ms as u64);
        while self.played_levels.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > tail) {
            self.played_levels.pop_front();
        }
        let loudest = self.played_levels.iter().map(|(_, l)| *l).fold(0.0f32, f32::max);
        if loudest <= 0.0 {
            return false;
        }
        let b = &self.cfg.barge_in;
        let threshold = loudest * 10f32.powf((b.echo_margin_db - b.echo_return_loss_db) / 20.0);
        level < threshold
    }

    pub(super) fn pause_for_probe(&mut self, now: Instant) {
        let mut audio: Vec<f32> = self.preroll.drain(..).collect();
        audio.shrink_to_fit();
        self.probe = Some(Probe { started_at: now, audio, last_speech_at: now, request: None, transcript: None });
        self.event(CallEvent::PlayoutPaused);
    }

    pub(super) fn probe_frame(&mut self, now: Instant, frame: &[f32], speech: bool) {
        let cfg = self.cfg.barge_in.clone();
        let Some(p) = &mut self.probe else { return };
        p.audio.extend_from_slice(frame);
        if speech {
            p.last_speech_at = now;
        }
        let burst_ms = ms_between(p.started_at, p.last_speech_at) + cfg.min_speech_ms as f64;
        let silent_ms = ms_between(p.last_speech_at, now);
        if burst_ms > cfg.backchannel_max_ms as f64 {
            self.confirm_barge_in(now);
        } else if silent_ms >= 200.0 && p.request.is_none() {
            // The burst is over: was it a backchannel?
            let audio: Arc<[f32]> = p.audio.clone().into();
            let id = self.request(Purpose::Probe);
            if let Some(p) = &mut self.probe {
                p.request = Some(id);
            }
            self.command(Command::Transcribe { id, audio, partial: true, prompt: None });
        }
    }

    pub(super) fn judge_probe(&mut self, now: Instant) {
        let heard = self.probe.as_ref().and_then(|p| p.transcript.clone()).unwrap_or_default();
        let words: Vec<String> = heard
            .to_lowercase()
            .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '!' || c == '?')
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
        let backchannel = words.iter().all(|w| self.cfg.barge_in.backchannel_words.iter().any(|b| b == w));
        if backchannel {
            // Nothing said, or only "mm-hm": resume where we paused.
            self.probe = None;
            self.counters.false_barge_ins += 1;
            self.event(CallEvent::PlayoutResumed { heard });
            self.next_frame_at = Some(now);
            self.handle_timeout(now);
        } else {
            self.confirm_barge_in(now);
        }
    }

    /// The caller really interrupted: drop the rest of the reply and listen.
    pub(super) fn confirm_barge_in(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        if let Some(id) = p.request {
            self.cancel(id);
        }
        self.counters.barge_ins += 1;
        self.event(CallEvent::BargeIn);
        self.abandon_cluster_reply();
        if let Some(mut record) = self.completed_turn.take() {
            record.barged_in = true;
            record.completed_ms = self.since_answer(now);
            self.event(CallEvent::TurnCompleted(record));
        }
        self.after_playout = None;
        self.stop_playout();
        self.next_frame_at = None;
        self.utterance = p.audio;
        self.last_speech_at = Some(p.last_speech_at);
        self.onset_ms = 0;
        self.set_state(CallState::CallerSpeaking, now);
    }
}

//! The post-call satisfaction survey: after the goodbye of a call the flow
//! ends (never after a transfer), a flow with `[survey]`
//! ([`crate::flow::SurveySpec`]) has its prompt spoken, then the call waits
//! `timeout_ms` for one key. `1`..=`5` is the rating
//! ([`super::CallEvent::Satisfaction`], [`Call::satisfaction`]), followed by
//! the thanks line and the hang-up; any other key, or none in time, hangs up
//! unrated. A key during the prompt counts. Speech is ignored throughout
//! ([`super::CallState::Survey`] starts no turns).

use std::time::{Duration, Instant};

use super::{Call, CallEvent, CallState, Command, EngineResult, PlayoutKind, Purpose, RequestId};
use crate::flow::SurveySpec;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The prompt is being synthesized or spoken.
    Prompt,
    /// The prompt was spoken; a key is awaited until the deadline.
    AwaitingKey { deadline: Instant },
    /// Rated: the thanks line is being synthesized or spoken.
    Thanks,
}

/// The survey in progress.
#[derive(Debug)]
pub(super) struct SurveyRun {
    spec: SurveySpec,
    phase: Phase,
    /// The speech request of the prompt or the thanks line.
    request: Option<RequestId>,
}

impl Call {
    /// Starts the flow's survey, if it has one (false: hang up as usual).
    pub(super) fn start_survey(&mut self, now: Instant) -> bool {
        if !self.keypad_survey {
            return false;
        }
        let Some(spec) = self.session.flow().survey.clone() else { return false };
        self.set_state(CallState::Survey, now);
        let id = self.request(Purpose::SurveyPrompt);
        self.command(Command::Synthesize { id, text: spec.prompt.clone() });
        self.survey = Some(SurveyRun { spec, phase: Phase::Prompt, request: Some(id) });
        true
    }

    pub(super) fn survey_deadline(&self) -> Option<Instant> {
        match self.survey.as_ref()?.phase {
            Phase::AwaitingKey { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub(super) fn on_survey_speech(&mut self, now: Instant, purpose: Purpose, result: EngineResult) {
        let Some(run) = &mut self.survey else { return };
        run.request = None;
        let expected = match run.phase {
            Phase::Prompt => Purpose::SurveyPrompt,
            Phase::Thanks => Purpose::SurveyThanks,
            Phase::AwaitingKey { .. } => return,
        };
        if purpose != expected {
            return;
        }
        let kind = if purpose == Purpose::SurveyPrompt { PlayoutKind::SurveyPrompt } else { PlayoutKind::SurveyThanks };
        match result {
            EngineResult::Speech { audio, .. } if !audio.is_empty() => {
                self.play(now, audio, kind);
                self.flush_first_frame(now);
            }
            // Nothing to say (speech failed): go on as if it had been said.
            _ => self.survey_playout_finished(now, kind),
        }
    }

    pub(super) fn survey_playout_finished(&mut self, now: Instant, kind: PlayoutKind) {
        self.playing = None;
        self.next_frame_at = None;
        match kind {
            PlayoutKind::SurveyPrompt => {
                let Some(run) = &mut self.survey else { return };
                let wait = Duration::from_millis(run.spec.timeout_ms as u64);
                run.phase = Phase::AwaitingKey { deadline: now + wait };
            }
            _ => self.end_survey(now),
        }
    }

    /// A key during the survey.
    pub(super) fn survey_key(&mut self, now: Instant, digit: char) {
        let Some(run) = &self.survey else { return };
        if run.phase == Phase::Thanks {
            return;
        }
        let Some(score) = SurveySpec::rating(digit) else {
            self.end_survey(now);
            return;
        };
        // A key during the prompt cuts it short.
        let unanswered = run.request;
        if let Some(id) = unanswered {
            self.cancel(id);
        }
        self.stop_playout();
        self.next_frame_at = None;
        self.satisfaction = Some(score);
        self.event(CallEvent::Satisfaction { score });
        let id = self.request(Purpose::SurveyThanks);
        let Some(run) = &mut self.survey else { return };
        run.phase = Phase::Thanks;
        run.request = Some(id);
        let text = run.spec.thanks.clone();
        self.command(Command::Synthesize { id, text });
    }

    pub(super) fn check_survey_deadline(&mut self, now: Instant) {
        if self.survey_deadline().is_some_and(|t| t <= now) {
            self.end_survey(now);
        }
    }

    fn end_survey(&mut self, now: Instant) {
        self.command(Command::Hangup);
        self.end(now);
    }
}

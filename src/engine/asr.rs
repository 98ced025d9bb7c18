//! Speech recognition with whisper.cpp (through `whisper-rs`).
//!
//! [`AsrModel`] holds the weights, loaded once per process and shared;
//! [`AsrSession`] is one decoder state (one per call, or per worker thread).
//! Input is 16 kHz mono f32. Short utterances use whisper's reduced audio
//! context (the encoder only attends over the audio actually present, rounded
//! up, instead of a full 30 s window), which is what makes per-turn recognition
//! fast enough for a live call. Blocking: run it on an engine thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::media::ENGINE_RATE;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("cannot load whisper model {path}: {source}")]
    Load { path: PathBuf, source: whisper_rs::WhisperError },
    #[error("whisper state: {0}")]
    State(whisper_rs::WhisperError),
    #[error("whisper decode failed: {0}")]
    Decode(whisper_rs::WhisperError),
    #[error("transcription aborted: its result is no longer wanted")]
    Aborted,
}

/// `[asr]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// A model name from `models/manifest.toml`, or a path to a ggml file.
    pub model: String,
    /// CPU threads for one decode.
    pub threads: u32,
    /// Spoken language (ISO 639-1); English-only models need "en".
    pub language: String,
    /// Encode only the audio present (rounded up) instead of a 30 s window.
    pub reduced_audio_ctx: bool,
    /// Extra encoder frames (20 ms each) kept beyond the audio when reduced.
    pub audio_ctx_margin: u32,
    /// The reduced context never goes below this many frames: on very short
    /// contexts whisper loops on the utterance.
    pub audio_ctx_min: u32,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            model: "whisper-tiny.en-q8_0".into(),
            threads: 2,
            language: "en".into(),
            reduced_audio_ctx: true,
            audio_ctx_margin: 128,
            audio_ctx_min: 384,
        }
    }
}

impl AsrConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.threads) {
            return Err(format!("asr.threads: {} is outside 1..=64", self.threads));
        }
        if self.language.len() != 2 || !self.language.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!("asr.language: {:?} is not a two-letter language code", self.language));
        }
        if self.audio_ctx_margin > 1500 {
            return Err(format!("asr.audio_ctx_margin: {} is above 1500 frames (30 s)", self.audio_ctx_margin));
        }
        if self.audio_ctx_min > 1500 {
            return Err(format!("asr.audio_ctx_min: {} is above 1500 frames (30 s)", self.audio_ctx_min));
        }
        Ok(())
    }
}

/// One recognised utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Mean probability of the decoded text tokens, 0..=1.
    pub confidence: f32,
    /// whisper's probability that the audio holds no speech.
    pub no_speech_prob: f32,
    pub elapsed: Duration,
}

/// whisper weights, shared by every session.
pub struct AsrModel {
    ctx: WhisperContext,
    cfg: AsrConfig,
}

/// whisper's full window: 1500 encoder frames of 20 ms (30 s).
const FULL_AUDIO_CTX: usize = 1500;
/// whisper.cpp refuses input under one second; shorter audio is padded.
const MIN_SAMPLES: usize = ENGINE_RATE as usize * 11 / 10;

impl AsrModel {
    pub fn load(path: &Path, cfg: AsrConfig) -> Result<Self, AsrError> {
        let mut params = WhisperContextParameters::default();
        params.use_gpu(cfg!(feature = "cuda"));
        let ctx = WhisperContext::new_with_params(path, params)
            .map_err(|source| AsrError::Load { path: path.to_path_buf(), source })?;
        Ok(AsrModel { ctx, cfg })
    }

    pub fn session(&self) -> Result<AsrSession<'_>, AsrError> {
        Ok(AsrSession { model: self, state: self.ctx.create_state().map_err(AsrError::State)? })
    }
}

/// A decoder state over a shared [`AsrModel`].
pub struct AsrSession<'m> {
    model: &'m AsrModel,
    state: WhisperState,
}

impl AsrSession<'_> {
    /// Transcribes one utterance of 16 kHz mono audio. `prompt` primes the
    /// decoder with the conversation's vocabulary (the flow's `asr_prompt`).
    pub fn transcribe(&mut self, samples: &[f32], prompt: Option<&str>) -> Result<Transcript, AsrError> {
        self.transcribe_abortable(samples, prompt, None)
    }

    /// [`transcribe`](Self::transcribe), given up (with
    /// [`AsrError::Aborted`]) soon after `abort` is raised: whisper checks
    /// it between graph nodes and decoded tokens.
    pub fn transcribe_abortable(&mut self, samples: &[f32], prompt: Option<&str>, abort: Option<&AtomicBool>) -> Result<Transcript, AsrError> {
        let started = Instant::now();
        let cfg = &self.model.cfg;
        let mut audio;
        let mut input = samples;
        if samples.len() < MIN_SAMPLES {
            audio = samples.to_vec();
            audio.resize(MIN_SAMPLES, 0.0);
            input = &audio;
        }

        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(cfg.threads as i32);
        params.set_language(Some(&cfg.language));
        params.set_translate(false);
        params.set_no_context(true);
        params.set_single_segment(true);
        // No timestamp tokens: with them and a domain prompt, a single
        // segment ends at the first boundary ("The number is 4" for six
        // digits). Reduced-context loops are held off by `audio_ctx_min`,
        // capped by the token limit and collapsed by `collapse_repeats`.
        params.set_no_timestamps(true);
        params.set_max_tokens(max_tokens_for(input.len()));
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_temperature(0.0);
        params.set_temperature_inc(0.0);
        if let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) {
            params.set_initial_prompt(prompt);
        }
        if cfg.reduced_audio_ctx {
            let frames = reduced_audio_ctx(input.len(), cfg.audio_ctx_margin).max(cfg.audio_ctx_min as usize);
            params.set_audio_ctx(frames.min(FULL_AUDIO_CTX) as i32);
        }

        if let Some(flag) = abort {
            unsafe extern "C" fn raised(flag: *mut std::ffi::c_void) -> bool {
                // SAFETY: the pointer is the `&AtomicBool` set below, alive
                // for the whole of `full`, which is the only caller.
                unsafe { (*(flag as *const AtomicBool)).load(Ordering::Relaxed) }
            }
            // SAFETY: `flag` outlives `params` and the `full` call using it.
            unsafe {
                params.set_abort_callback(Some(raised));
                params.set_abort_callback_user_data(flag as *const AtomicBool as *mut std::ffi::c_void);
            }
        }

        let decoded = self.state.full(params, input);
        if abort.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(AsrError::Aborted);
        }
        decoded.map_err(AsrError::Decode)?;

        let mut text = String::new();
        let (mut prob_sum, mut prob_n) = (0.0f32, 0usize);
        let mut no_speech_prob = 0.0f32;
        let eot = self.model.ctx.token_eot();
        for i in 0..self.state.full_n_segments() {
            let Some(segment) = self.state.get_segment(i) else { continue };
            if let Ok(s) = segment.to_str_lossy() {
                text.push_str(&s);
            }
            no_speech_prob = no_speech_prob.max(segment.no_speech_probability());
            for t in 0..segment.n_tokens() {
                if let Some(token) = segment.get_token(t) {
                    // Special tokens (timestamps, markers) sit at and above EOT.
                    if token.token_id() < eot {
                        prob_sum += token.token_probability();
                        prob_n += 1;
                    }
                }
            }
        }
        Ok(Transcript {
            text: collapse_repeats(&clean_transcript(&text)),
            confidence: if prob_n == 0 { 0.0 } else { prob_sum / prob_n as f32 },
            no_speech_prob,
            elapsed: started.elapsed(),
        })
    }
}

/// A cap on decoded tokens for `samples` of audio: far above speech (about
/// four tokens a second) but short of a hallucination loop's runaway.
pub fn max_tokens_for(samples: usize) -> i32 {
    let secs = samples as f32 / ENGINE_RATE as f32;
    (32.0 + 10.0 * secs).min(224.0) as i32
}

/// Encoder frames (20 ms each) that cover `samples` plus a margin, capped at
/// the full 30 s window.
pub fn reduced_audio_ctx(samples: usize, margin: u32) -> usize {
    let frames = samples.div_ceil(ENGINE_RATE as usize / 50);
    (frames + margin as usize).min(FULL_AUDIO_CTX)
}

/// Undoes whisper's loop failure ("Agent. Agent. Agent. ..." or a sentence
/// said over and over until the token cap): when the words are one phrase
/// repeated (the last copy possibly cut short), keep one copy. One- and
/// two-word phrases must repeat three times ("no no" is speech); longer
/// ones twice.
pub fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> =
        words.iter().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).collect();
    for period in 1..=words.len() / 2 {
        let copies = words.len() as f32 / period as f32;
        let needed = if period <= 2 { 3.0 } else { 2.0 };
        if copies < needed {
            continue;
        }
        // The token cap may cut the last word short.
        let last = norm.len() - 1;
        if (period..norm.len()).all(|i| norm[i] == norm[i % period] || (i == last && norm[i % period].starts_with(&norm[i]))) {
            return words[..period].join(" ");
        }
    }
    text.to_string()
}

/// Trims whitespace and drops whisper's non-speech annotations such as
/// "[BLANK_AUDIO]" or "(music)".
fn clean_transcript(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut depth = 0usize;
    for c in raw.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_covers_audio_plus_margin() {
        assert_eq!(reduced_audio_ctx(16_000, 64), 50 + 64);
        assert_eq!(reduced_audio_ctx(16_001, 0), 51);
        assert_eq!(reduced_audio_ctx(16_000 * 60, 64), FULL_AUDIO_CTX);
        assert_eq!(max_tokens_for(16_000), 42);
        assert_eq!(max_tokens_for(16_000 * 60), 224);
    }

    #[test]
    fn loops_collapse_to_one_copy() {
        assert_eq!(collapse_repeats("Agent. Agent. Agent. Agent. Ag"), "Agent.");
        assert_eq!(collapse_repeats("Agent. Agent. Agent. Agent."), "Agent.");
        assert_eq!(
            collapse_repeats("All circuits are busy now. All circuits are busy now. All circuits"),
            "All circuits are busy now."
        );
        assert_eq!(collapse_repeats("no no"), "no no");
        assert_eq!(collapse_repeats("Where is my order?"), "Where is my order?");
        assert_eq!(collapse_repeats(""), "");
    }

    #[test]
    fn annotations_are_removed() {
        assert_eq!(clean_transcript(" [BLANK_AUDIO] "), "");
        assert_eq!(clean_transcript(" Where is (coughs) my order? "), "Where is my order?");
    }

    #[test]
    fn config_checks_name_the_key() {
        let bad = AsrConfig { threads: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().starts_with("asr.threads"));
        let bad = AsrConfig { language: "english".into(), ..Default::default() };
        assert!(bad.validate().unwrap_err().starts_with("asr.language"));
    }
}

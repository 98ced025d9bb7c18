//! Inference: whisper (ASR), llama (intent) and espeak-ng (TTS), and the
//! turn pipeline that chains them.
//!
//! Model weights are loaded once per process and shared; per-conversation
//! state (whisper state, llama context with the cached prompt prefix) lives in
//! a [`turn::Conversation`]. Everything here blocks on CPU work: the live
//! runtime calls it from dedicated engine threads, never from async tasks.

pub mod asr;
pub mod intent;
pub mod label_trie;
pub mod pool;
pub mod tts;
pub mod turn;

use std::time::Instant;

use crate::ops::config::{Config, ConfigError};

pub use turn::{Conversation, StageTimings, TurnEngine, TurnError, TurnOutcome};

#[derive(Debug, thiserror::Error)]
pub enum EngineLoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Asr(#[from] asr::AsrError),
    #[error(transparent)]
    Intent(#[from] intent::IntentError),
    #[error(transparent)]
    Tts(#[from] tts::TtsError),
    #[error("an engine worker thread died while loading its model")]
    WorkerDied,
}

impl TurnEngine {
    /// Loads the models a config names (checking the files exist first).
    pub fn load(cfg: &Config) -> Result<TurnEngine, EngineLoadError> {
        let paths = cfg.model_paths()?;
        let started = Instant::now();
        let asr = asr::AsrModel::load(&paths.asr, cfg.asr.clone())?;
        let intent = intent::IntentModel::load(&paths.intent, cfg.intent.clone())?;
        let tts = tts::Tts::new(cfg.tts.clone())?;
        tracing::info!(
            asr_model = %paths.asr.display(),
            intent_model = %paths.intent.display(),
            load_ms = started.elapsed().as_millis() as u64,
            "models loaded"
        );
        Ok(TurnEngine { asr, intent, tts, vad: cfg.vad.clone() })
    }
}

//! Text to speech with espeak-ng, in process through its C library
//! (`libespeak-ng`, Debian `libespeak-ng-dev`).
//!
//! espeak-ng keeps global state (one voice, one callback, not thread-safe), so
//! every synthesis runs under one process-wide lock and the library is
//! initialised once, in `AUDIO_OUTPUT_SYNCHRONOUS` mode: `espeak_Synth` calls
//! our callback on the calling thread with 16-bit chunks at 22,050 Hz until the
//! text is spoken. The chunks are collected in a thread-local buffer, which also
//! lets us measure the time to the first chunk (the latency a caller hears).
//! In the live engine this runs on the TTS worker thread, never on the runtime.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// espeak-ng's native output rate.
pub const ESPEAK_RATE: u32 = 22_050;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("espeak-ng failed to initialise (is the espeak-ng-data package installed?)")]
    Init,
    #[error("espeak-ng has no voice named {0:?} (list them with `espeak-ng --voices`)")]
    UnknownVoice(String),
    #[error("espeak-ng rejected parameter {name} = {value}")]
    Parameter { name: &'static str, value: i32 },
    #[error("text to speak contains a NUL byte")]
    NulInText,
    #[error("espeak-ng synthesis failed with code {0}")]
    Synth(i32),
    #[error("resampling speech to the engine rate: {0}")]
    Resample(#[from] crate::media::resample::ResampleError),
}

/// `[tts]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// espeak-ng voice name, e.g. `en-us`, `en-gb-x-rp`, `en-us+f3`.
    pub voice: String,
    /// Speaking rate in words per minute (80..=450).
    pub rate_wpm: u32,
    /// Base pitch 0..=100 (50 is the voice's normal pitch).
    pub pitch: u32,
    /// Volume 0..=200 (100 is normal).
    pub volume: u32,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig { voice: "en-us".into(), rate_wpm: 175, pitch: 50, volume: 100 }
    }
}

impl TtsConfig {
    /// Range checks, with the key named in the message.
    pub fn validate(&self) -> Result<(), String> {
        if self.voice.trim().is_empty() {
            return Err("tts.voice: must not be empty".into());
        }
        if !(80..=450).contains(&self.rate_wpm) {
            return Err(format!("tts.rate_wpm: {} is outside 80..=450", self.rate_wpm));
        }
        if self.pitch > 100 {
            return Err(format!("tts.pitch: {} is outside 0..=100", self.pitch));
        }
        if self.volume > 200 {
            return Err(format!("tts.volume: {} is outside 0..=200", self.volume));
        }
        Ok(())
    }
}

/// Speech produced for one reply.
#[derive(Debug, Clone)]
pub struct Speech {
    /// Mono samples in [-1, 1] at `rate`.
    pub samples: Vec<f32>,
    pub rate: u32,
    /// Time from the request to the first audio chunk.
    pub first_chunk: Duration,
    /// Time for the whole synthesis.
    pub total: Duration,
}

#[allow(non_camel_case_types)]
type t_espeak_callback = unsafe extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

#[link(name = "espeak-ng")]
extern "C" {
    fn espeak_Initialize(output: c_int, buflength: c_int, path: *const c_char, options: c_int) -> c_int;
    fn espeak_SetSynthCallback(cb: t_espeak_callback);
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
}

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const POS_CHARACTER: c_int = 1;
const ESPEAK_CHARS_UTF8: c_uint = 1;
const ESPEAK_RATE_PARAM: c_int = 1;
const ESPEAK_VOLUME_PARAM: c_int = 2;
const ESPEAK_PITCH_PARAM: c_int = 3;
/// Callback chunk length asked of espeak-ng, in ms: small chunks give an early first frame.
const CHUNK_MS: c_int = 40;

struct Capture {
    samples: Vec<i16>,
    started: Option<Instant>,
    first_chunk: Option<Duration>,
}

thread_local! {
    static CAPTURE: RefCell<Capture> =
        const { RefCell::new(Capture { samples: Vec::new(), started: None, first_chunk: None }) };
}

unsafe extern "C" fn collect_chunk(wav: *mut c_short, n: c_int, _events: *mut c_void) -> c_int {
    if !wav.is_null() && n > 0 {
        // SAFETY: espeak-ng hands us `n` valid samples for the duration of the call.
        let chunk = unsafe { std::slice::from_raw_parts(wav, n as usize) };
        CAPTURE.with(|c| {
            let mut c = c.borrow_mut();
            if c.first_chunk.is_none() {
                c.first_chunk = c.started.map(|s| s.elapsed());
            }
            c.samples.extend_from_slice(chunk);
        });
    }
    0 // continue synthesis
}

/// The process-wide espeak-ng instance: initialised once, used under a lock.
static ESPEAK: OnceLock<Result<Mutex<()>, ()>> = OnceLock::new();

fn espeak_lock() -> Result<std::sync::MutexGuard<'static, ()>, TtsError> {
    let cell = ESPEAK.get_or_init(|| {
        // SAFETY: called once; NULL path selects the installed espeak-ng-data.
        let rate = unsafe { espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, CHUNK_MS, std::ptr::null(), 0) };
        if rate <= 0 {
            return Err(());
        }
        // SAFETY: the callback is a plain function valid for the program's life.
        unsafe { espeak_SetSynthCallback(collect_chunk) };
        Ok(Mutex::new(()))
    });
    match cell {
        Ok(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner())),
        Err(()) => Err(TtsError::Init),
    }
}

/// A configured espeak-ng voice. Cheap to create; synthesis is serialised
/// process-wide because espeak-ng has a single global voice.
#[derive(Debug, Clone)]
pub struct Tts {
    cfg: TtsConfig,
}

impl Tts {
    /// Checks the config and that espeak-ng has the voice.
    pub fn new(cfg: TtsConfig) -> Result<Self, TtsError> {
        let tts = Tts { cfg };
        let _guard = espeak_lock()?;
        tts.apply_voice()?;
        Ok(tts)
    }

    pub fn config(&self) -> &TtsConfig {
        &self.cfg
    }

    fn apply_voice(&self) -> Result<(), TtsError> {
        let name = CString::new(self.cfg.voice.as_str()).map_err(|_| TtsError::UnknownVoice(self.cfg.voice.clone()))?;
        // SAFETY: valid NUL-terminated string; caller holds the espeak lock.
        if unsafe { espeak_SetVoiceByName(name.as_ptr()) } != 0 {
            return Err(TtsError::UnknownVoice(self.cfg.voice.clone()));
        }
        for (param, name, value) in [
            (ESPEAK_RATE_PARAM, "rate_wpm", self.cfg.rate_wpm),
            (ESPEAK_PITCH_PARAM, "pitch", self.cfg.pitch),
            (ESPEAK_VOLUME_PARAM, "volume", self.cfg.volume),
        ] {
            // SAFETY: plain integer parameters; caller holds the espeak lock.
            if unsafe { espeak_SetParameter(param, value as c_int, 0) } != 0 {
                return Err(TtsError::Parameter { name, value: value as i32 });
            }
        }
        Ok(())
    }

    /// Speaks `text` at the engine's rate (16 kHz mono), what calls and the
    /// turn pipeline play; timings as for [`Tts::synthesize`].
    pub fn speak(&self, text: &str) -> Result<Speech, TtsError> {
        let speech = self.synthesize(text)?;
        let samples = crate::media::resample::resample(&speech.samples, speech.rate, crate::media::ENGINE_RATE)?;
        Ok(Speech { samples, rate: crate::media::ENGINE_RATE, ..speech })
    }

    /// Speaks `text` and returns the whole utterance at [`ESPEAK_RATE`].
    pub fn synthesize(&self, text: &str) -> Result<Speech, TtsError> {
        let ctext = CString::new(text).map_err(|_| TtsError::NulInText)?;
        let _guard = espeak_lock()?;
        self.apply_voice()?;
        let started = Instant::now();
        CAPTURE.with(|c| {
            let mut c = c.borrow_mut();
            c.samples.clear();
            c.started = Some(started);
            c.first_chunk = None;
        });
        let bytes = ctext.as_bytes_with_nul();
        // SAFETY: text is valid for the call; synchronous mode returns when done,
        // having called `collect_chunk` on this thread.
        let rc = unsafe {
            espeak_Synth(
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let total = started.elapsed();
        let (samples, first_chunk) = CAPTURE.with(|c| {
            let mut c = c.borrow_mut();
            (std::mem::take(&mut c.samples), c.first_chunk.take())
        });
        if rc != 0 {
            return Err(TtsError::Synth(rc));
        }
        Ok(Speech {
            samples: samples.iter().map(|&s| s as f32 / 32768.0).collect(),
            rate: ESPEAK_RATE,
            first_chunk: first_chunk.unwrap_or(total),
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_text_as_audible_audio() {
        let tts = Tts::new(TtsConfig::default()).expect("espeak-ng (apt-get install libespeak-ng1 espeak-ng-data)");
        let speech = tts.synthesize("Your order has shipped.").unwrap();
        assert_eq!(speech.rate, ESPEAK_RATE);
        let secs = speech.samples.len() as f32 / speech.rate as f32;
        assert!((0.8..5.0).contains(&secs), "unexpected duration {secs}s");
        let rms = (speech.samples.iter().map(|s| s * s).sum::<f32>() / speech.samples.len() as f32).sqrt();
        assert!(rms > 0.01, "speech is silent (rms {rms})");
        assert!(speech.first_chunk <= speech.total);
    }

    #[test]
    fn unknown_voice_is_a_clear_error() {
        let err = Tts::new(TtsConfig { voice: "no-such-voice-xyz".into(), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("no-such-voice-xyz"), "{err}");
    }

    #[test]
    fn config_ranges_are_checked() {
        let bad = TtsConfig { rate_wpm: 20, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("tts.rate_wpm"));
    }
}

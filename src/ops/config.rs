//! The node's configuration: loading, defaults and validation.
//!
//! `configs/voice-edge.toml` is the documented default and is also compiled
//! into the binary (`Config::embedded`), so the node runs with no file at all.
//! Loading is strict: unknown keys, bad values and missing model files are
//! errors that name the key (and the file) and say what is wrong. Relative
//! paths in a file are relative to that file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::call::CallConfig;
use crate::engine::asr::AsrConfig;
use crate::engine::intent::IntentConfig;
use crate::engine::pool::PoolConfig;
use crate::engine::tts::TtsConfig;
use crate::flow::{Flow, FlowError, FlowSource};
use crate::media::vad::VadConfig;
use crate::models::{default_models_dir, Manifest};
use crate::ops::logging::LoggingConfig;
use crate::call::router::RouterConfig;
use crate::ops::network_config::{ClusterConfig, CollectorConfig, HttpConfig, SipConfig};
use crate::ops::webrtc_config::WebrtcConfig;

const EMBEDDED: &str = include_str!("../../configs/voice-edge.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("config {origin}: {key}: model file {path} is missing{hint}")]
    MissingModel { origin: String, key: &'static str, path: PathBuf, hint: String },
    #[error("config {origin}: flows.default: {source}")]
    Flow { origin: String, source: FlowError },
}

/// `[node]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id: the `source` of its outcome events, in logs and metrics.
    pub id: String,
    /// On SIGTERM, how long calls in progress may go on before they are hung up.
    pub drain_deadline_s: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { id: "voice-edge-dev".into(), drain_deadline_s: 30 }
    }
}

/// `[models]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Where `voice-edge models fetch` puts models and where names resolve.
    /// Empty: `$VOICE_EDGE_MODELS_DIR`, else `~/.cache/voice-edge/models`.
    pub dir: Option<PathBuf>,
}

/// `[flows]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Directory of flow files; empty uses the flows compiled into the binary.
    pub dir: Option<PathBuf>,
    /// The flow calls get unless a trunk or site says otherwise.
    pub default: String,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig { dir: None, default: "retail".into() }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub models: ModelsConfig,
    pub asr: AsrConfig,
    pub intent: IntentConfig,
    pub tts: TtsConfig,
    pub vad: VadConfig,
    pub call: CallConfig,
    pub engine: PoolConfig,
    pub flows: FlowsConfig,
    pub logging: LoggingConfig,
    pub sip: SipConfig,
    pub http: HttpConfig,
    pub router: RouterConfig,
    pub cluster: ClusterConfig,
    pub collector: CollectorConfig,
    pub webrtc: WebrtcConfig,
    /// Where the config came from, for messages.
    #[serde(skip)]
    pub origin: String,
    /// Directory relative paths resolve against (None for the embedded config).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Model files a config points at.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPaths {
    pub asr: PathBuf,
    pub intent: PathBuf,
}

impl Config {
    /// The defaults compiled into the binary (`configs/voice-edge.toml`).
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED, "<embedded configs/voice-edge.toml>", None)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).map(Path::to_path_buf);
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// `--config FILE` if given, else the embedded defaults.
    pub fn load_or_embedded(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Config::embedded(),
        }
    }

    pub fn parse(text: &str, origin: &str, base_dir: Option<PathBuf>) -> Result<Config, ConfigError> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: origin.into(), message: e.to_string() })?;
        cfg.origin = origin.into();
        cfg.base_dir = base_dir;
        cfg.validate().map_err(|message| ConfigError::Invalid { origin: origin.into(), message })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.node.id.trim().is_empty() || self.node.id.len() > 128 {
            return Err("node.id: must be 1..=128 characters".into());
        }
        self.asr.validate()?;
        self.intent.validate()?;
        self.tts.validate()?;
        self.vad.validate()?;
        self.call.validate()?;
        self.engine.validate()?;
        self.logging.validate()?;
        self.sip.validate()?;
        self.router.validate()?;
        self.cluster.validate()?;
        self.collector.validate()?;
        self.webrtc.validate()?;
        if self.asr.model.trim().is_empty() {
            return Err("asr.model: must name a model or a file".into());
        }
        if self.intent.model.trim().is_empty() {
            return Err("intent.model: must name a model or a file".into());
        }
        Ok(())
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p.to_path_buf(),
        }
    }

    pub fn models_dir(&self) -> PathBuf {
        match &self.models.dir {
            Some(d) => self.resolve(d),
            None => default_models_dir(),
        }
    }

    pub fn flow_source(&self) -> FlowSource {
        match &self.flows.dir {
            Some(d) => FlowSource::Dir(self.resolve(d)),
            None => FlowSource::Embedded,
        }
    }

    /// Loads the default flow (validating it).
    pub fn default_flow(&self) -> Result<Flow, ConfigError> {
        self.load_flow(&self.flows.default)
    }

    pub fn load_flow(&self, name: &str) -> Result<Flow, ConfigError> {
        self.flow_source().load(name).map_err(|source| ConfigError::Flow { origin: self.origin.clone(), source })
    }

    /// Resolves model names through the manifest (or as paths) and checks
    /// that the files exist.
    pub fn model_paths(&self) -> Result<ModelPaths, ConfigError> {
        let manifest = Manifest::embedded();
        Ok(ModelPaths {
            asr: self.model_path("asr.model", &self.asr.model, &manifest)?,
            intent: self.model_path("intent.model", &self.intent.model, &manifest)?,
        })
    }

    fn model_path(&self, key: &'static str, value: &str, manifest: &Manifest) -> Result<PathBuf, ConfigError> {
        let (path, hint) = match manifest.get(value) {
            Some(entry) => (
                self.models_dir().join(&entry.file),
                format!("; run `voice-edge models fetch --set default` (or `--model {value}`)"),
            ),
            None => (self.resolve(Path::new(value)), " (not a model name in models/manifest.toml either)".to_string()),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(ConfigError::MissingModel { origin: self.origin.clone(), key, path, hint })
        }
    }

    /// Every check `check-config` makes: syntax and values (done at load),
    /// the default flow, and the model files.
    pub fn check(&self) -> Result<ModelPaths, ConfigError> {
        self.default_flow()?;
        self.model_paths()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let cfg = Config::embedded().unwrap();
        assert_eq!(cfg.asr.model, "whisper-tiny.en-q8_0");
        assert_eq!(cfg.flows.default, "retail");
        cfg.default_flow().unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let err = Config::parse("[asr]\nthreds = 2\n", "t.toml", None).unwrap_err().to_string();
        assert!(err.contains("threds") && err.contains("t.toml"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::parse("[intent]\ntemperature = -1.0\n", "t.toml", None).unwrap_err().to_string();
        assert!(err.contains("intent.temperature"), "{err}");
        let err = Config::parse("[asr]\nthreads = \"two\"\n", "t.toml", None).unwrap_err().to_string();
        assert!(err.contains("threads"), "{err}");
    }

    #[test]
    fn missing_model_file_names_key_and_path() {
        let cfg = Config::parse("[intent]\nmodel = \"/nonexistent/x.gguf\"\n", "t.toml", None).unwrap();
        let err = cfg.model_paths().unwrap_err().to_string();
        // asr is checked first; point it somewhere that exists to reach intent
        assert!(err.contains("asr.model") || err.contains("intent.model"), "{err}");
        let cfg = Config::parse(
            &format!("[asr]\nmodel = \"{}\"\n[intent]\nmodel = \"/nonexistent/x.gguf\"\n", file!()),
            "t.toml",
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        )
        .unwrap();
        let err = cfg.model_paths().unwrap_err().to_string();
        assert!(err.contains("intent.model") && err.contains("/nonexistent/x.gguf"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let cfg = Config::parse("[flows]\ndir = \"flows\"\n", "c.toml", Some(PathBuf::from("/etc/voice-edge"))).unwrap();
        match cfg.flow_source() {
            FlowSource::Dir(d) => assert_eq!(d, PathBuf::from("/etc/voice-edge/flows")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shipped_config_files_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["configs/voice-edge.toml", "configs/production.example.toml"] {
            let cfg = Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.default_flow().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

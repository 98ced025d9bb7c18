//! Logging set-up: structured journald entries under systemd, readable lines
//! on a terminal.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) events go to journald
//! through its native protocol, with every `tracing` field as a journal field
//! of the same name in upper case and no prefix, so operators can filter with
//! `journalctl -u voice-edge CALL_ID=...`. Elsewhere they go to stderr as
//! text. whisper.cpp, llama.cpp and ggml logs are routed into `tracing` (target
//! `llama-cpp-2` / `whisper_rs`) and kept at WARN unless `RUST_LOG` says more.

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// journald when stderr is connected to the journal, else text.
    #[default]
    Auto,
    Text,
    Journald,
}

/// `[logging]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter: `info`, `voice_edge=debug,info`, ... (`RUST_LOG` wins).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into(), format: LogFormat::Auto }
    }
}

impl LoggingConfig {
    pub fn validate(&self) -> Result<(), String> {
        EnvFilter::try_new(&self.level).map(|_| ()).map_err(|e| format!("logging.level: {:?}: {e}", self.level))
    }
}

/// True when systemd connected our stderr to the journal (`JOURNAL_STREAM`
/// holds `<device>:<inode>` of that stream).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.split_once(':') else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(cfg: &LoggingConfig) -> Result<(), String> {
    let default = format!("{},llama-cpp-2=warn,whisper_rs=warn", cfg.level);
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&default)).map_err(|e| e.to_string())?;
    let journald = match cfg.format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        let layer = tracing_journald::layer()
            .map_err(|e| format!("cannot open the journal socket: {e}"))?
            .with_field_prefix(None)
            .with_syslog_identifier("voice-edge".into());
        registry.with(layer).try_init().map_err(|e| e.to_string())?;
    } else {
        use std::io::IsTerminal;
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal());
        registry.with(fmt).try_init().map_err(|e| e.to_string())?;
    }
    route_native_logs();
    Ok(())
}

/// whisper.cpp, llama.cpp and ggml print to stderr unless hooked. ggml's hook
/// is process-global (one wins): llama-cpp-2's, installed last, takes it.
pub fn route_native_logs() {
    whisper_rs::install_logging_hooks();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

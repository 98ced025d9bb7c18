//! The `voice-edge` command line: argument parsing, wiring, and error
//! reporting with `anyhow` (the only place it is used).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

pub mod outcomes;

use crate::engine::TurnEngine;
use crate::flow::FlowSession;
use crate::media::{wav, ENGINE_RATE};
use crate::models::{self, FetchOptions, FetchSet, Manifest};
use crate::ops::config::Config;
use crate::ops::logging;

#[derive(Debug, Parser)]
#[command(name = "voice-edge", version, about = "Real-time AI voice agent at the network edge")]
pub struct Cli {
    /// Configuration file (default: the embedded configs/voice-edge.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run caller utterances through VAD, ASR, intent, flow and TTS; print one
    /// JSON object per utterance.
    Turn {
        /// Caller utterance(s): WAV files of any rate and channel count.
        #[arg(long = "wav", value_name = "FILE", required = true)]
        wavs: Vec<PathBuf>,
        /// Flow to use (default: flows.default from the config).
        #[arg(long)]
        flow: Option<String>,
        /// DTMF digits keyed during the (first) utterance, e.g. "456789#".
        #[arg(long)]
        dtmf: Option<String>,
        /// Treat the utterances as consecutive turns of one call (default:
        /// each is the first turn of its own call).
        #[arg(long)]
        same_call: bool,
        /// Where to write the spoken reply (one utterance only).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Directory for `<name>.reply.wav` per utterance.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        out_dir: Option<PathBuf>,
    },
    /// A live call in real time with a scripted caller: each WAV is one caller
    /// turn, spoken after the agent's previous reply ends. Prints the call
    /// report (turn records with voice-to-voice latency, counters) as JSON.
    Call {
        /// Caller utterances, in order.
        #[arg(long = "wav", value_name = "FILE", required = true)]
        wavs: Vec<PathBuf>,
        #[arg(long)]
        flow: Option<String>,
        /// The caller's pause after the agent stops, in ms.
        #[arg(long, default_value_t = 600)]
        think_ms: u64,
        /// Where to write the agent's side of the call (16 kHz WAV).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// A live conversation through this machine's microphone and speaker.
    /// Ctrl-C hangs up; then the call report is printed as JSON. Exits
    /// non-zero, saying what is missing, when there is no audio device.
    Talk {
        #[arg(long)]
        flow: Option<String>,
        /// Capture device by name (default: the system's default).
        #[arg(long, value_name = "DEVICE")]
        input: Option<String>,
        /// Playback device by name (default: the system's default).
        #[arg(long, value_name = "DEVICE")]
        output: Option<String>,
        /// Hang up after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        max_seconds: Option<u64>,
    },
    /// Speak text with the configured TTS voice into a WAV file (16 kHz).
    Say {
        text: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Run the node: SIP trunks, HTTP (metrics, health), engine and outcome
    /// shipper, until SIGTERM drains it (systemd: Type=notify).
    Serve,
    /// Validate a configuration file, its flows and its model files, without starting.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Read the local outcome spool (what the node recorded, shipped or not).
    Outcomes {
        /// Spool directory (default: collector.spool_dir from the config).
        #[arg(long, value_name = "DIR", global = true)]
        spool: Option<PathBuf>,
        #[command(subcommand)]
        command: OutcomesCommand,
    },
    /// Fetch, list and verify models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutcomesCommand {
    /// One line per event: seq, time, type, subject, id.
    List {
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One event as JSON, by id or sequence number.
    Show { id_or_seq: String },
    /// The last events; with --follow, keep printing new ones.
    Tail {
        #[arg(long, default_value_t = 10)]
        last: usize,
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, assemble, convert and verify the models of a set.
    Fetch {
        /// test: what the test suite needs; default: what the default config runs; all: every model.
        #[arg(long, default_value = "default")]
        set: FetchSet,
        /// Models directory (default: models.dir from the config, else $VOICE_EDGE_MODELS_DIR or ~/.cache/voice-edge/models).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Hide progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// List the manifest's models and whether each is present and verified.
    List {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Parses the command line and runs it.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let cfg = Config::load_or_embedded(cli.config.as_deref())?;
    logging::init(&cfg.logging).map_err(anyhow::Error::msg).context("setting up logging")?;
    match cli.command {
        Command::Turn { wavs, flow, dtmf, same_call, out, out_dir } => {
            if out.is_some() && wavs.len() > 1 {
                bail!("--out takes one utterance; use --out-dir for several");
            }
            turn(&cfg, &wavs, flow.as_deref(), dtmf.as_deref(), same_call, out.as_deref(), out_dir.as_deref())
        }
        Command::Call { wavs, flow, think_ms, out } => scripted_call(&cfg, &wavs, flow.as_deref(), think_ms, out.as_deref()),
        Command::Talk { flow, input, output, max_seconds } => talk(&cfg, flow.as_deref(), input, output, max_seconds),
        Command::Serve => {
            crate::runtime::daemon::serve(cfg, cli.config.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Say { text, out } => {
            let tts = crate::engine::tts::Tts::new(cfg.tts.clone())?;
            let speech = tts.speak(&text)?;
            wav::write_wav(&out, speech.rate, &speech.samples)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            let paths = cfg.check()?;
            let flows = crate::runtime::daemon::load_flows(&cfg)?;
            let mut names: Vec<&str> = flows.keys().map(String::as_str).collect();
            names.sort_unstable();
            println!(
                "{}: ok (asr {}, intent {}, default flow {}, flows {})",
                file.display(),
                paths.asr.display(),
                paths.intent.display(),
                cfg.flows.default,
                names.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { command } => models_command(&cfg, command),
        Command::Outcomes { spool, command } => {
            let dir = spool.unwrap_or_else(|| cfg.collector.spool_dir());
            let mut out = std::io::stdout().lock();
            match command {
                OutcomesCommand::List { limit } => outcomes::list(&dir, limit, &mut out)?,
                OutcomesCommand::Show { id_or_seq } => outcomes::show(&dir, &id_or_seq, &mut out)?,
                OutcomesCommand::Tail { last, follow } => {
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let opts = outcomes::TailOptions { last, follow, ..Default::default() };
                    outcomes::tail(&dir, &opts, &mut out, &stop)?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn turn(
    cfg: &Config,
    wavs: &[PathBuf],
    flow_name: Option<&str>,
    dtmf: Option<&str>,
    same_call: bool,
    out: Option<&Path>,
    out_dir: Option<&Path>,
) -> Result<ExitCode> {
    // Read every input first: a bad file fails before minutes of model loading.
    let inputs: Vec<Vec<f32>> = wavs.iter().map(|p| wav::read_wav_engine(p)).collect::<Result<_, _>>()?;
    let flow = Arc::new(match flow_name {
        Some(name) => cfg.load_flow(name)?,
        None => cfg.default_flow()?,
    });
    let engine = TurnEngine::load(cfg)?;
    let mut conversation = engine.conversation(Arc::clone(&flow))?;
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (i, (path, audio)) in wavs.iter().zip(&inputs).enumerate() {
        if !same_call {
            conversation.session = FlowSession::new(Arc::clone(&flow));
        }
        let outcome = conversation.turn(audio, if i == 0 { dtmf } else { None })?;
        let reply_path = match (out, out_dir) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(dir)) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("utterance{i}"));
                Some(dir.join(format!("{stem}.reply.wav")))
            }
            _ => None,
        };
        if let Some(p) = &reply_path {
            wav::write_wav(p, ENGINE_RATE, &outcome.reply_audio)?;
        }
        let mut json = serde_json::to_value(&outcome)?;
        json["file"] = serde_json::json!(path.display().to_string());
        json["reply_wav"] = serde_json::json!(reply_path.map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string(&json)?);
        tracing::info!(
            file = %path.display(),
            intent = outcome.intent.as_deref().unwrap_or("-"),
            confidence = outcome.intent_confidence,
            total_ms = outcome.timings_ms.total,
            "turn"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn scripted_call(cfg: &Config, wavs: &[PathBuf], flow_name: Option<&str>, think_ms: u64, out: Option<&Path>) -> Result<ExitCode> {
    use crate::engine::pool::EnginePool;
    use crate::runtime::scripted_call::{run_scripted_call, CallerScript};
    let utterances: Vec<Vec<f32>> = wavs.iter().map(|p| wav::read_wav_engine(p)).collect::<Result<_, _>>()?;
    let flow = Arc::new(match flow_name {
        Some(name) => cfg.load_flow(name)?,
        None => cfg.default_flow()?,
    });
    let pool = Arc::new(EnginePool::start(cfg, cfg.engine.clone(), std::slice::from_ref(&flow))?);
    let script = CallerScript {
        utterances,
        think_time: std::time::Duration::from_millis(think_ms),
        patience: std::time::Duration::from_secs(30),
    };
    let services = crate::runtime::live_call::CallServices::edge_only(pool);
    let report = run_scripted_call(&services, 1, flow.clone(), cfg.call.clone(), cfg.vad.clone(), &script);
    if let Some(p) = out {
        wav::write_wav(p, ENGINE_RATE, &report.agent_audio)?;
    }
    record_outcomes(cfg, &report.summary)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Raised by SIGINT during `talk`: the person at the microphone hangs up.
static TALK_HANGUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn talk_sigint(_: libc::c_int) {
    TALK_HANGUP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn talk(cfg: &Config, flow_name: Option<&str>, input: Option<String>, output: Option<String>, max_seconds: Option<u64>) -> Result<ExitCode> {
    use crate::engine::pool::EnginePool;
    use crate::runtime::talk::{run_talk, AudioDevices, DeviceChoice};
    // The devices first: without them there is nothing to load models for.
    let devices = AudioDevices::open(&DeviceChoice { input, output })?;
    eprintln!("talk: microphone {:?}, speaker {:?}; loading models ...", devices.input_name, devices.output_name);
    let flow = Arc::new(match flow_name {
        Some(name) => cfg.load_flow(name)?,
        None => cfg.default_flow()?,
    });
    let pool = Arc::new(EnginePool::start(cfg, cfg.engine.clone(), std::slice::from_ref(&flow))?);
    let services = crate::runtime::live_call::CallServices::edge_only(pool);
    let handler = talk_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
    eprintln!("talk: the agent is on the line; Ctrl-C hangs up");
    let max = max_seconds.map(std::time::Duration::from_secs);
    let report = run_talk(&devices, &services, flow, cfg.call.clone(), cfg.vad.clone(), max, &TALK_HANGUP)?;
    record_outcomes(cfg, &report.summary)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Appends the call's outcome events to the durable spool and commits them.
fn record_outcomes(cfg: &Config, summary: &crate::runtime::live_call::CallSummary) -> Result<()> {
    use crate::outcome::{Spool, SpoolConfig};
    use crate::runtime::live_call::CallOrigin;
    let ms = summary.answered_at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let call_id = format!("cli-{ms}");
    let events = summary.outcome_events(CallOrigin::local(&cfg.node.id, &call_id, "cli"))?;
    let dir = cfg.collector.spool_dir();
    let (mut spool, _) = Spool::open(SpoolConfig::new(dir.clone())).with_context(|| format!("opening the outcome spool {}", dir.display()))?;
    let now = std::time::Instant::now();
    for e in &events {
        spool.append(&e.to_json()?, now)?;
    }
    spool.commit(now)?;
    eprintln!("outcome events: {} recorded for call {call_id} in {}", events.len(), dir.display());
    Ok(())
}

fn models_command(cfg: &Config, command: ModelsCommand) -> Result<ExitCode> {
    let manifest = Manifest::embedded();
    match command {
        ModelsCommand::Fetch { set, dir, quiet } => {
            let dir = dir.unwrap_or_else(|| cfg.models_dir());
            let report = models::fetch(&manifest, set, &dir, &FetchOptions { progress: !quiet, ..Default::default() })?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List { dir } => {
            let dir = dir.unwrap_or_else(|| cfg.models_dir());
            for m in manifest.in_set(FetchSet::All) {
                let path = dir.join(&m.file);
                let state = if !path.is_file() {
                    "missing"
                } else if models::verify_cached(&path, &m.sha256)? {
                    "verified"
                } else {
                    "CHECKSUM MISMATCH"
                };
                println!("{:<40} {:<8} {:>14} {:<18} {}", m.name, format!("{:?}", m.kind).to_lowercase(), m.size, state, path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

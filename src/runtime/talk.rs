//! `voice-edge talk`: a live conversation with the agent through this
//! machine's microphone and speaker (cpal; ALSA on Linux).
//!
//! Owns the audio-device leg and its driver loop, the local twin of
//! `runtime::sip::call`:
//! - format: 16 kHz mono where the device offers it (ALSA's `plug` devices
//!   convert), else the device's default, downmixed and resampled here.
//! - capture: the device's callback downmixes to mono and hands chunks over
//!   a bounded channel; the driver resamples them to 16 kHz and feeds one
//!   20 ms frame per tick of the wall clock into [`LiveCall::tick`]. When
//!   the driver has 60 ms in hand it stops taking chunks, so a device that
//!   delivers faster than real time (a file-backed ALSA PCM) is held back
//!   by the channel instead of losing audio.
//! - playback: the agent's 20 ms frames are resampled to the device rate
//!   and queued; the device's callback plays them, or silence when there
//!   are none.
//! - the call ends when the agent hangs up or transfers, at Ctrl-C (the
//!   caller hangs up), or after `max_duration`.
//!
//! With no usable device it fails with [`TalkError`] saying which side is
//! missing; nothing is started then. Transcripts and replies are printed to
//! stderr as they happen.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Device, SampleFormat, Stream, StreamConfig, SupportedStreamConfig, SupportedStreamConfigRange};

use super::live_call::{CallServices, CallSummary, LiveCall, LiveOutput};
use crate::call::{CallConfig, CallEvent, CallState};
use crate::flow::Flow;
use crate::media::resample::{ResampleError, StreamResampler};
use crate::media::vad::VadConfig;
use crate::media::{ENGINE_RATE, FRAME_SAMPLES};

const FRAME: Duration = Duration::from_millis(20);
/// Captured audio the driver holds before it stops taking device chunks.
const CAPTURE_AHEAD_SAMPLES: usize = 3 * FRAME_SAMPLES;
/// Device chunks waiting in the channel (a period each).
const CAPTURE_CHANNEL_CHUNKS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TalkError {
    #[error("no microphone: {0} (connect one, or name a capture device with --input; `arecord -L` lists them)")]
    NoInput(String),
    #[error("no speaker: {0} (connect one, or name a playback device with --output; `aplay -L` lists them)")]
    NoOutput(String),
    #[error("the audio device uses {0:?} samples, which talk does not convert")]
    SampleFormat(SampleFormat),
    #[error("audio stream: {0}")]
    Stream(String),
    #[error("resampling: {0}")]
    Resample(#[from] ResampleError),
}

/// Which devices to use; `None` = the host's default.
#[derive(Debug, Clone, Default)]
pub struct DeviceChoice {
    pub input: Option<String>,
    pub output: Option<String>,
}

/// The open microphone and speaker, streams running.
pub struct AudioDevices {
    captured: Receiver<Vec<f32>>,
    capture_rate: u32,
    playback: Arc<Mutex<VecDeque<f32>>>,
    playback_rate: u32,
    /// Agent samples the speaker has taken (at the device rate).
    played: Arc<AtomicU64>,
    /// Capture chunks the driver never took (sent after it stopped).
    overruns: Arc<AtomicU64>,
    capture: Stream,
    speaker: Stream,
    pub input_name: String,
    pub output_name: String,
}

impl AudioDevices {
    /// Opens both devices, or says which one is missing. They start with
    /// the call ([`run_talk`]): nothing said before the agent is ready is
    /// kept.
    pub fn open(choice: &DeviceChoice) -> Result<AudioDevices, TalkError> {
        let host = cpal::default_host();
        let input = pick(&host, choice.input.as_deref(), true).map_err(TalkError::NoInput)?;
        let output = pick(&host, choice.output.as_deref(), false).map_err(TalkError::NoOutput)?;
        let input_name = input.name().unwrap_or_else(|_| "?".into());
        let output_name = output.name().unwrap_or_else(|_| "?".into());

        let in_cfg = engine_rate_config(input.supported_input_configs().ok().map(|c| c.collect()))
            .map_or_else(|| input.default_input_config(), Ok)
            .map_err(|e| TalkError::NoInput(format!("capture device {input_name:?}: {e}")))?;
        let out_cfg = engine_rate_config(output.supported_output_configs().ok().map(|c| c.collect()))
            .map_or_else(|| output.default_output_config(), Ok)
            .map_err(|e| TalkError::NoOutput(format!("playback device {output_name:?}: {e}")))?;

        let (tx, captured) = sync_channel::<Vec<f32>>(CAPTURE_CHANNEL_CHUNKS);
        let overruns = Arc::new(AtomicU64::new(0));
        let in_channels = in_cfg.channels() as usize;
        let in_format = in_cfg.sample_format();
        let stream_cfg: StreamConfig = in_cfg.config();
        let capture_rate = stream_cfg.sample_rate.0;
        let on_error = |e: cpal::StreamError| tracing::warn!(error = %e, "audio stream error");
        let dropped = overruns.clone();
        // Blocks only when the driver is 32 periods behind: a device that
        // runs ahead of real time (file-backed) waits; a live one would
        // overrun either way.
        let deliver = move |mono: Vec<f32>| {
            if tx.send(mono).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        let capture = match in_format {
            SampleFormat::F32 => input.build_input_stream(&stream_cfg, move |d: &[f32], _| deliver(downmix(d, in_channels, |s| s)), on_error, None),
            SampleFormat::I16 => input.build_input_stream(&stream_cfg, move |d: &[i16], _| deliver(downmix(d, in_channels, |s| s as f32 / 32768.0)), on_error, None),
            SampleFormat::I32 => input.build_input_stream(&stream_cfg, move |d: &[i32], _| deliver(downmix(d, in_channels, |s| s as f32 / 2_147_483_648.0)), on_error, None),
            f => return Err(TalkError::SampleFormat(f)),
        }
        .map_err(|e| TalkError::NoInput(format!("capture device {input_name:?}: {e}")))?;

        let playback = Arc::new(Mutex::new(VecDeque::<f32>::new()));
        let played = Arc::new(AtomicU64::new(0));
        let out_channels = out_cfg.channels() as usize;
        let out_format = out_cfg.sample_format();
        let out_stream_cfg: StreamConfig = out_cfg.config();
        let playback_rate = out_stream_cfg.sample_rate.0;
        let (queue, count) = (playback.clone(), played.clone());
        let fill = move |n_frames: usize, write: &mut dyn FnMut(usize, f32)| {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = 0u64;
            for i in 0..n_frames {
                let s = q.pop_front().inspect(|_| taken += 1).unwrap_or(0.0);
                write(i, s);
            }
            count.fetch_add(taken, Ordering::Relaxed);
        };
        let speaker = match out_format {
            SampleFormat::F32 => output.build_output_stream(
                &out_stream_cfg,
                move |d: &mut [f32], _| fill(d.len() / out_channels, &mut |i, s| d[i * out_channels..(i + 1) * out_channels].fill(s)),
                on_error,
                None,
            ),
            SampleFormat::I16 => output.build_output_stream(
                &out_stream_cfg,
                move |d: &mut [i16], _| {
                    fill(d.len() / out_channels, &mut |i, s| d[i * out_channels..(i + 1) * out_channels].fill((s.clamp(-1.0, 1.0) * 32767.0) as i16))
                },
                on_error,
                None,
            ),
            f => return Err(TalkError::SampleFormat(f)),
        }
        .map_err(|e| TalkError::NoOutput(format!("playback device {output_name:?}: {e}")))?;

        Ok(AudioDevices {
            captured,
            capture_rate,
            playback,
            playback_rate,
            played,
            overruns,
            capture,
            speaker,
            input_name,
            output_name,
        })
    }
}

/// The named device (or the default) on one side, or why there is none.
fn pick(host: &cpal::Host, name: Option<&str>, capture: bool) -> Result<Device, String> {
    let side = if capture { "capture" } else { "playback" };
    match name {
        None => if capture { host.default_input_device() } else { host.default_output_device() }.ok_or_else(|| format!("the audio system has no default {side} device")),
        Some(wanted) => {
            let devices = if capture { host.input_devices() } else { host.output_devices() }.map_err(|e| format!("listing {side} devices: {e}"))?;
            devices
                .into_iter()
                .find(|d| d.name().is_ok_and(|n| n == wanted))
                .ok_or_else(|| format!("no {side} device named {wanted:?}"))
        }
    }
}

/// 16 kHz mono (f32, else i16) when the device offers it, as ALSA's `plug`
/// devices do: the audio system converts, nothing is resampled here.
/// `None`: use the device's default and convert here.
fn engine_rate_config(ranges: Option<Vec<SupportedStreamConfigRange>>) -> Option<SupportedStreamConfig> {
    let ranges = ranges?;
    let fits = |r: &&SupportedStreamConfigRange, format| {
        r.channels() == 1 && r.sample_format() == format && (r.min_sample_rate().0..=r.max_sample_rate().0).contains(&ENGINE_RATE)
    };
    [SampleFormat::F32, SampleFormat::I16]
        .into_iter()
        .find_map(|format| ranges.iter().find(|r| fits(r, format)))
        .map(|r| r.clone().with_sample_rate(cpal::SampleRate(ENGINE_RATE)))
}

fn downmix<T: Copy>(interleaved: &[T], channels: usize, to_f32: impl Fn(T) -> f32) -> Vec<f32> {
    let channels = channels.max(1);
    interleaved.chunks(channels).map(|c| c.iter().map(|&s| to_f32(s)).sum::<f32>() / c.len() as f32).collect()
}

/// How a talk session ended and what it measured.
#[derive(Debug, serde::Serialize)]
pub struct TalkReport {
    #[serde(flatten)]
    pub summary: CallSummary,
    /// Agent audio the speaker took, in ms.
    pub agent_audio_played_ms: u64,
    /// Capture chunks the driver never took (delivered after it stopped).
    /// A driver that falls behind holds the device back instead; a live
    /// device then overruns, which cpal reports as a stream error (logged).
    pub capture_overruns: u64,
    /// Ticks that found less than a frame of captured audio.
    pub capture_underruns: u64,
}

/// Runs one conversation on the open devices until it ends (see the module
/// doc). `stop` is raised by the caller's Ctrl-C handler.
pub fn run_talk(
    devices: &AudioDevices,
    services: &CallServices,
    flow: Arc<Flow>,
    call_cfg: CallConfig,
    vad: VadConfig,
    max_duration: Option<Duration>,
    stop: &AtomicBool,
) -> Result<TalkReport, TalkError> {
    devices.capture.play().map_err(|e| TalkError::Stream(format!("capture device {:?}: {e}", devices.input_name)))?;
    devices.speaker.play().map_err(|e| TalkError::Stream(format!("playback device {:?}: {e}", devices.output_name)))?;
    let mut to_engine = StreamResampler::new(devices.capture_rate, ENGINE_RATE)?;
    let mut to_speaker = StreamResampler::new(ENGINE_RATE, devices.playback_rate)?;
    let t0 = Instant::now();
    let mut call = LiveCall::start(services, 1, flow, call_cfg, vad, t0, SystemTime::now());
    let mut captured: VecDeque<f32> = VecDeque::new();
    let mut resampled = Vec::new();
    let mut outputs = Vec::new();
    let mut underruns = 0u64;
    let mut frame = vec![0.0f32; FRAME_SAMPLES];
    let mut step = 0u32;
    loop {
        step += 1;
        if let Some(wait) = (t0 + FRAME * step).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        while captured.len() < CAPTURE_AHEAD_SAMPLES {
            let Ok(chunk) = devices.captured.try_recv() else { break };
            resampled.clear();
            to_engine.process_into(&chunk, &mut resampled)?;
            captured.extend(resampled.iter().copied());
        }
        if captured.len() >= FRAME_SAMPLES {
            for (slot, s) in frame.iter_mut().zip(captured.drain(..FRAME_SAMPLES)) {
                *slot = s;
            }
        } else {
            underruns += 1;
            frame.fill(0.0);
        }
        call.tick(now, &frame, &mut outputs);
        let mut ended = false;
        for out in outputs.drain(..) {
            match out {
                LiveOutput::Audio(agent) => {
                    resampled.clear();
                    to_speaker.process_into(&agent, &mut resampled)?;
                    devices.playback.lock().unwrap_or_else(|e| e.into_inner()).extend(resampled.iter().copied());
                }
                LiveOutput::Transfer => {
                    eprintln!("[agent transfers the call to a person]");
                    ended = true;
                }
                LiveOutput::Hangup => ended = true,
                LiveOutput::Event(e) => print_event(&e),
            }
        }
        let out_of_time = max_duration.is_some_and(|d| now.duration_since(t0) >= d);
        if ended || out_of_time || stop.load(Ordering::SeqCst) || matches!(call.state(), CallState::Ended | CallState::Transferring) {
            break;
        }
    }
    // Let the speaker finish what is queued (bounded: a stuck device is not waited for).
    let drain_until = Instant::now() + Duration::from_secs(5);
    while !devices.playback.lock().unwrap_or_else(|e| e.into_inner()).is_empty() && Instant::now() < drain_until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(FRAME);
    }
    Ok(TalkReport {
        summary: call.finish(Instant::now()),
        agent_audio_played_ms: devices.played.load(Ordering::Relaxed) * 1000 / devices.playback_rate.max(1) as u64,
        capture_overruns: devices.overruns.load(Ordering::Relaxed),
        capture_underruns: underruns,
    })
}

/// What the person at the microphone sees as the call goes.
fn print_event(event: &CallEvent) {
    match event {
        CallEvent::Transcript { text, .. } => eprintln!("you:   {text}"),
        CallEvent::AgentReply { text, .. } => eprintln!("agent: {text}"),
        CallEvent::BargeIn => eprintln!("[you interrupted the agent]"),
        CallEvent::FillerSpoken => eprintln!("[agent: filler while thinking]"),
        CallEvent::TurnCompleted(t) => {
            if let Some(ms) = t.voice_to_voice_ms {
                eprintln!("[turn {}: voice-to-voice {ms:.0} ms]", t.turn)
            }
        }
        CallEvent::EngineFailed { error, .. } => eprintln!("[engine error: {error}]"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_rate_is_asked_for_where_the_device_offers_it() {
        use cpal::{SampleRate, SupportedBufferSize};
        let range = |ch, lo, hi, f| SupportedStreamConfigRange::new(ch, SampleRate(lo), SampleRate(hi), SupportedBufferSize::Unknown, f);
        let offered = vec![range(2, 44_100, 48_000, SampleFormat::F32), range(1, 8_000, 48_000, SampleFormat::I16)];
        let picked = engine_rate_config(Some(offered)).expect("mono i16 covers 16 kHz");
        assert_eq!((picked.channels(), picked.sample_rate().0, picked.sample_format()), (1, 16_000, SampleFormat::I16));
        assert!(engine_rate_config(Some(vec![range(2, 44_100, 48_000, SampleFormat::F32)])).is_none(), "default config and resample");
        assert!(engine_rate_config(None).is_none());
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[0.5f32, -0.5, 1.0, 0.0], 2, |s| s), vec![0.0, 0.5]);
        assert_eq!(downmix(&[16384i16, 16384], 1, |s| s as f32 / 32768.0), vec![0.5, 0.5]);
    }
}

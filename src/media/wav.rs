//! WAV file reading and writing for the offline harness and debugging.
//!
//! Owns the only file IO in `media`: [`read_wav`] decodes any PCM WAV
//! (8/16/24/32-bit integer or 32-bit float, any channel count, any rate) to
//! mono `f32` in `[-1, 1]` by averaging channels; [`read_wav_engine`]
//! additionally resamples to the 16 kHz engine rate; [`write_wav`] writes
//! mono 16-bit PCM. Compressed WAV payloads (A-law, µ-law, ADPCM) and 64-bit
//! float are rejected with [`WavError::Unsupported`].

use std::path::{Path, PathBuf};

use super::resample::{resample, ResampleError};
use super::ENGINE_RATE;

/// Cap on the up-front allocation, so a lying header cannot make us reserve
/// gigabytes before a single sample is read.
const MAX_PREALLOC_SAMPLES: usize = 1 << 22;

/// Errors from reading or writing WAV files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The file could not be opened, read, created or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a RIFF/WAVE file at all.
    #[error("{}: not a WAV file ({reason})", path.display())]
    NotWav { path: PathBuf, reason: String },
    /// A WAV file whose header or data is damaged or inconsistent.
    #[error("{}: malformed WAV file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// A well-formed WAV file in a sample format we do not decode.
    #[error("{}: unsupported WAV format: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// The file holds no audio frames.
    #[error("{}: WAV file has no audio samples", path.display())]
    Empty { path: PathBuf },
    /// Writing: a sample rate of zero.
    #[error("{}: invalid sample rate {rate} Hz", path.display())]
    InvalidRate { path: PathBuf, rate: u32 },
    /// Resampling the decoded audio to the engine rate failed.
    #[error("{}: resampling to {ENGINE_RATE} Hz failed: {source}", path.display())]
    Resample {
        path: PathBuf,
        #[source]
        source: ResampleError,
    },
}

/// Mono audio at its original sample rate, samples in `[-1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Mono samples (multi-channel input is averaged).
    pub samples: Vec<f32>,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        if self.rate == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / f64::from(self.rate)
    }
}

fn map_hound(path: &Path, err: hound::Error) -> WavError {
    let path = path.to_path_buf();
    match err {
        hound::Error::IoError(e)
            if e.kind() == std::io::ErrorKind::UnexpectedEof || e.to_string().contains("read enough bytes") =>
        {
            WavError::Malformed { path, reason: format!("file is truncated ({e})") }
        }
        hound::Error::IoError(source) => WavError::Io { path, source },
        hound::Error::FormatError(reason @ ("no RIFF tag found" | "no WAVE tag found")) => {
            WavError::NotWav { path, reason: reason.to_string() }
        }
        hound::Error::FormatError("bits per sample is not 32") => WavError::Unsupported {
            path,
            what: "floating-point samples that are not 32-bit (e.g. 64-bit float)".to_string(),
        },
        hound::Error::FormatError(reason) => WavError::Malformed { path, reason: reason.to_string() },
        hound::Error::Unsupported => WavError::Unsupported {
            path,
            what: "encoding is not integer PCM or 32-bit float (compressed, A-law/µ-law or unusual bit depth)"
                .to_string(),
        },
        hound::Error::TooWide | hound::Error::InvalidSampleFormat => {
            WavError::Unsupported { path, what: "sample width or format cannot be decoded".to_string() }
        }
        hound::Error::UnfinishedSample => {
            WavError::Malformed { path, reason: "sample count is not a multiple of the channel count".to_string() }
        }
    }
}

/// Reads a WAV file and returns it as mono audio at its own sample rate.
///
/// Integer PCM of 8, 16, 24 or 32 bits and 32-bit float are accepted;
/// channels are averaged. A trailing incomplete frame is ignored. Errors
/// name the file and the problem: not a WAV, malformed or truncated,
/// unsupported encoding, or no samples.
pub fn read_wav(path: &Path) -> Result<Audio, WavError> {
    let mut reader = hound::WavReader::open(path).map_err(|e| map_hound(path, e))?;
    let spec = reader.spec();
    let unsupported = |what: String| WavError::Unsupported { path: path.to_path_buf(), what };
    if spec.channels == 0 {
        return Err(WavError::Malformed { path: path.to_path_buf(), reason: "zero channels".to_string() });
    }
    if spec.sample_rate == 0 {
        return Err(WavError::Malformed { path: path.to_path_buf(), reason: "sample rate is 0 Hz".to_string() });
    }
    let channels = usize::from(spec.channels);
    let total = reader.len() as usize;
    let mut samples = Vec::with_capacity((total / channels).min(MAX_PREALLOC_SAMPLES));

    match spec.sample_format {
        hound::SampleFormat::Int => {
            if !matches!(spec.bits_per_sample, 8 | 16 | 24 | 32) {
                return Err(unsupported(format!("{}-bit integer PCM", spec.bits_per_sample)));
            }
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1)) / channels as f64;
            let mut acc = 0i64;
            for (i, s) in reader.samples::<i32>().enumerate() {
                acc += i64::from(s.map_err(|e| map_hound(path, e))?);
                if (i + 1) % channels == 0 {
                    samples.push((acc as f64 * scale) as f32);
                    acc = 0;
                }
            }
        }
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(unsupported(format!("{}-bit float", spec.bits_per_sample)));
            }
            let mut acc = 0f64;
            for (i, s) in reader.samples::<f32>().enumerate() {
                let v = s.map_err(|e| map_hound(path, e))?;
                if !v.is_finite() {
                    return Err(WavError::Malformed {
                        path: path.to_path_buf(),
                        reason: format!("sample {i} is not a finite number"),
                    });
                }
                acc += f64::from(v);
                if (i + 1) % channels == 0 {
                    samples.push((acc / channels as f64).clamp(-1.0, 1.0) as f32);
                    acc = 0.0;
                }
            }
        }
    }
    if samples.is_empty() {
        return Err(WavError::Empty { path: path.to_path_buf() });
    }
    Ok(Audio { rate: spec.sample_rate, samples })
}

/// Reads a WAV file as engine audio: mono, resampled to [`ENGINE_RATE`]
/// (16 kHz), samples in `[-1, 1]`.
pub fn read_wav_engine(path: &Path) -> Result<Vec<f32>, WavError> {
    let audio = read_wav(path)?;
    resample(&audio.samples, audio.rate, ENGINE_RATE)
        .map_err(|source| WavError::Resample { path: path.to_path_buf(), source })
}

/// Writes mono 16-bit PCM at `rate` Hz. Samples are clamped to `[-1, 1]`
/// (non-finite samples are written as silence). An empty buffer writes a
/// valid WAV file with no samples.
pub fn write_wav(path: &Path, rate: u32, samples: &[f32]) -> Result<(), WavError> {
    if rate == 0 {
        return Err(WavError::InvalidRate { path: path.to_path_buf(), rate });
    }
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).map_err(|e| map_hound(path, e))?;
    for &s in samples {
        let v = if s.is_finite() { s.clamp(-1.0, 1.0) } else { 0.0 };
        writer.write_sample((v * 32767.0).round() as i16).map_err(|e| map_hound(path, e))?;
    }
    writer.finalize().map_err(|e| map_hound(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("media-wav-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_with(
        path: &Path,
        spec: hound::WavSpec,
        f: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>),
    ) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        f(&mut w);
        w.finalize().unwrap();
    }

    fn spec(channels: u16, rate: u32, bits: u16, fmt: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format: fmt }
    }

    #[test]
    fn round_trip_16bit_mono_with_clamping() {
        let dir = tmp_dir("rt");
        let p = dir.join("a.wav");
        let x = [0.0f32, 0.5, -0.5, 1.5, -2.0, f32::NAN, 0.25];
        write_wav(&p, 16_000, &x).unwrap();
        let a = read_wav(&p).unwrap();
        assert_eq!(a.rate, 16_000);
        let want = [0.0f32, 0.5, -0.5, 1.0, -1.0, 0.0, 0.25];
        assert_eq!(a.samples.len(), want.len());
        for (g, w) in a.samples.iter().zip(want) {
            assert!((g - w).abs() < 1.0 / 16_000.0, "{g} vs {w}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn all_int_depths_and_float_decode_and_downmix() {
        use hound::SampleFormat::{Float, Int};
        let dir = tmp_dir("depths");
        for bits in [8u16, 16, 24, 32] {
            let p = dir.join(format!("i{bits}.wav"));
            let full = (1i64 << (bits - 1)) - 1;
            let half = 1i64 << (bits - 2);
            // Stereo frames: (half, 0) -> 0.25 ; (full, full) -> ~1 ; (-half, -half) -> -0.5
            write_with(&p, spec(2, 8_000, bits, Int), |w| {
                for v in [half, 0, full, full, -half, -half] {
                    w.write_sample(v as i32).unwrap();
                }
            });
            let a = read_wav(&p).unwrap();
            assert_eq!(a.rate, 8_000);
            assert_eq!(a.samples.len(), 3, "{bits}-bit");
            let tol = 2.0 / (1u64 << (bits - 1)) as f32 + 1e-6;
            assert!((a.samples[0] - 0.25).abs() < tol, "{bits}: {}", a.samples[0]);
            assert!((a.samples[1] - 1.0).abs() < tol, "{bits}: {}", a.samples[1]);
            assert!((a.samples[2] + 0.5).abs() < tol, "{bits}: {}", a.samples[2]);
        }
        let p = dir.join("f32.wav");
        write_with(&p, spec(3, 44_100, 32, Float), |w| {
            for v in [0.3f32, 0.6, 0.0, -1.0, -1.0, -1.0] {
                w.write_sample(v).unwrap();
            }
        });
        let a = read_wav(&p).unwrap();
        assert_eq!(a.rate, 44_100);
        assert_eq!(a.samples.len(), 2);
        assert!((a.samples[0] - 0.3).abs() < 1e-6);
        assert!((a.samples[1] + 1.0).abs() < 1e-6);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn engine_read_resamples_to_16k() {
        let dir = tmp_dir("engine");
        let p = dir.join("s.wav");
        let x: Vec<f32> = (0..48_000).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
        write_with(&p, spec(2, 48_000, 32, hound::SampleFormat::Float), |w| {
            for &v in &x {
                w.write_sample(v).unwrap();
                w.write_sample(v).unwrap();
            }
        });
        let y = read_wav_engine(&p).unwrap();
        assert_eq!(y.len(), 16_000);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tmp_dir("errors");

        let missing = dir.join("missing.wav");
        let e = read_wav(&missing).unwrap_err();
        assert!(matches!(e, WavError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.wav"), "{e}");

        let text = dir.join("notes.wav");
        std::fs::write(&text, b"this is not audio at all, just some text").unwrap();
        let e = read_wav(&text).unwrap_err();
        assert!(matches!(e, WavError::NotWav { .. }), "{e:?}");
        assert!(e.to_string().contains("notes.wav") && e.to_string().contains("not a WAV"), "{e}");

        let tiny = dir.join("tiny.wav");
        std::fs::write(&tiny, b"RIF").unwrap();
        assert!(read_wav(&tiny).is_err());

        let empty = dir.join("empty.wav");
        write_wav(&empty, 16_000, &[]).unwrap();
        let e = read_wav(&empty).unwrap_err();
        assert!(matches!(e, WavError::Empty { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.wav"), "{e}");
        assert!(matches!(read_wav_engine(&empty), Err(WavError::Empty { .. })));

        // Truncated data chunk: header promises more samples than present.
        let trunc = dir.join("trunc.wav");
        write_wav(&trunc, 16_000, &vec![0.1f32; 1000]).unwrap();
        let bytes = std::fs::read(&trunc).unwrap();
        std::fs::write(&trunc, &bytes[..bytes.len() - 501]).unwrap();
        let e = read_wav(&trunc).unwrap_err();
        assert!(matches!(e, WavError::Malformed { .. }), "{e:?}");

        // µ-law (format tag 7): a valid WAV that we do not decode.
        let ulaw = dir.join("ulaw.wav");
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(4u32 + 8 + 18 + 8 + 4).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&18u32.to_le_bytes());
        b.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&[0xff, 0x7f, 0x00, 0x80]);
        std::fs::write(&ulaw, &b).unwrap();
        let e = read_wav(&ulaw).unwrap_err();
        assert!(matches!(e, WavError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("ulaw.wav"), "{e}");

        let e = write_wav(&dir.join("zero.wav"), 0, &[0.0]).unwrap_err();
        assert!(matches!(e, WavError::InvalidRate { .. }), "{e:?}");
        let e = write_wav(&dir.join("no/such/dir/x.wav"), 16_000, &[0.0]).unwrap_err();
        assert!(matches!(e, WavError::Io { .. }), "{e:?}");
        std::fs::remove_dir_all(dir).ok();
    }
}

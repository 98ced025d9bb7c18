//! Sample-rate conversion of mono `f32` audio.
//!
//! Owns two entry points built on rubato's synchronous FFT resampler
//! (`rubato::Fft`, fixed input and output chunk sizes):
//!
//! * [`resample`] converts a whole buffer; the output has exactly
//!   `round(len * to_rate / from_rate)` samples and is time-aligned with the
//!   input (the resampler's start-up delay is trimmed off).
//! * [`StreamResampler`] converts a live stream fed in chunks of any size,
//!   such as 8 kHz telephone audio or 48 kHz WebRTC audio to the 16 kHz
//!   engine rate and back. Its output, once [`StreamResampler::flush`]ed, is
//!   sample-for-sample the same no matter how the input was split.
//!
//! Streaming latency: input is gathered into chunks of about 20 ms (rounded up
//! to a whole number of the rate pair's minimum block, `rate / gcd`), and the
//! FFT resampler adds half an output chunk (about 10 ms) of delay. For
//! unusual rate pairs with a small GCD (e.g. 44 101 Hz) the minimum block can
//! be long, which makes the chunks and the latency long too.
//!
//! Pure computation: no IO, no threads, no clocks.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Highest sample rate accepted, in Hz.
pub const MAX_RATE: u32 = 768_000;

/// Chunk-size hint (input frames) used by [`resample`] for whole buffers:
/// bigger FFT blocks give a sharper anti-aliasing filter, and latency does not
/// matter offline.
const OFFLINE_CHUNK_HINT: usize = 2048;

/// Errors from sample-rate conversion.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A sample rate of zero or above [`MAX_RATE`].
    #[error("invalid sample rate {rate} Hz (must be 1..={max} Hz)", max = MAX_RATE)]
    InvalidRate { rate: u32 },
    /// rubato refused to build a resampler for this rate pair.
    #[error("cannot build a resampler for {from_rate} Hz -> {to_rate} Hz: {source}")]
    Construction {
        from_rate: u32,
        to_rate: u32,
        #[source]
        source: rubato::ResamplerConstructionError,
    },
    /// rubato failed while processing a chunk (an internal sizing bug if it
    /// ever happens).
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if rate == 0 || rate > MAX_RATE {
        return Err(ResampleError::InvalidRate { rate });
    }
    Ok(())
}

/// `round(len * to / from)` without overflow.
fn expected_len(len: u64, from_rate: u32, to_rate: u32) -> u64 {
    let from = u128::from(from_rate);
    let num = u128::from(len) * u128::from(to_rate);
    ((num + from / 2) / from) as u64
}

/// Resamples a whole mono buffer from `from_rate` to `to_rate`.
///
/// Returns a copy when the rates are equal and an empty vector for empty
/// input. Otherwise the output has exactly `round(len * to_rate / from_rate)`
/// samples, aligned in time with the input.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, ResampleError> {
    check_rate(from_rate)?;
    check_rate(to_rate)?;
    if from_rate == to_rate {
        return Ok(samples.to_vec());
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let mut rs = StreamResampler::with_chunk_hint(from_rate, to_rate, OFFLINE_CHUNK_HINT)?;
    let expected = expected_len(samples.len() as u64, from_rate, to_rate);
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    rs.process_into(samples, &mut out)?;
    rs.flush_into(&mut out)?;
    Ok(out)
}

/// The rubato side of a non-identity [`StreamResampler`].
struct Inner {
    fft: Fft<f32>,
    /// Input frames per rubato call.
    chunk_in: usize,
    /// Output frames per rubato call.
    chunk_out: usize,
    /// Rubato's start-up delay, in output frames.
    delay: usize,
    /// Start-up delay frames still to drop from the output.
    to_trim: usize,
    /// Rubato writes one output chunk here.
    scratch: Vec<f32>,
}

impl Inner {
    /// Resamples one chunk. `data` holds `chunk_in` frames, or fewer when
    /// `partial` (the rest is treated as silence). Appends the output, minus
    /// any start-up delay still to trim, to `out`; returns frames appended.
    fn run(&mut self, data: &[f32], partial: bool, out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        let input = InterleavedSlice::new(data, 1, data.len()).map_err(|_| {
            rubato::ResampleError::InsufficientInputBufferSize { expected: data.len(), actual: data.len() }
        })?;
        let out_len = self.scratch.len();
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, 1, out_len).map_err(|_| {
            rubato::ResampleError::InsufficientOutputBufferSize { expected: self.chunk_out, actual: out_len }
        })?;
        let indexing = if partial { Some(Indexing::new().partial_len(data.len())) } else { None };
        let (_read, written) = self.fft.process_into_buffer(&input, &mut output, indexing.as_ref())?;
        let skip = self.to_trim.min(written);
        self.to_trim -= skip;
        out.extend_from_slice(&self.scratch[skip..written]);
        Ok(written - skip)
    }

    fn reset(&mut self) {
        self.fft.reset();
        self.to_trim = self.delay;
    }
}

/// Streaming mono resampler for live audio: push chunks of any length, get
/// back whatever output is ready.
///
/// Output is time-aligned with the input (rubato's start-up delay is
/// dropped), so output sample `n` corresponds to input time
/// `n / to_rate`. Until [`flush`](Self::flush) the output lags the input by
/// up to [`latency_frames`](Self::latency_frames) output frames. After a
/// flush the total output is exactly `round(total_in * to_rate / from_rate)`
/// and the resampler is ready for a new stream.
pub struct StreamResampler {
    from_rate: u32,
    to_rate: u32,
    /// `None` when `from_rate == to_rate` (pass-through).
    inner: Option<Inner>,
    /// Input gathered towards the next full chunk.
    pending: Vec<f32>,
    in_total: u64,
    out_total: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from_rate", &self.from_rate)
            .field("to_rate", &self.to_rate)
            .field("input_chunk", &self.input_chunk())
            .field("pending", &self.pending.len())
            .field("in_total", &self.in_total)
            .field("out_total", &self.out_total)
            .finish()
    }
}

impl StreamResampler {
    /// Creates a streaming resampler with input chunks of about 20 ms.
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Self, ResampleError> {
        check_rate(from_rate)?;
        let hint = (from_rate as usize * 20).div_ceil(1000);
        Self::with_chunk_hint(from_rate, to_rate, hint)
    }

    /// Creates a streaming resampler whose input chunk is about
    /// `chunk_frames` input frames (rounded up to a whole number of the rate
    /// pair's minimum block). Larger chunks: sharper filter, more latency.
    pub fn with_chunk_hint(from_rate: u32, to_rate: u32, chunk_frames: usize) -> Result<Self, ResampleError> {
        check_rate(from_rate)?;
        check_rate(to_rate)?;
        let inner = if from_rate == to_rate {
            None
        } else {
            let fft = Fft::<f32>::new(from_rate as usize, to_rate as usize, chunk_frames.max(1), 1, FixedSync::Both)
                .map_err(|source| ResampleError::Construction { from_rate, to_rate, source })?;
            let chunk_in = fft.input_frames_max();
            let chunk_out = fft.output_frames_max();
            let delay = fft.output_delay();
            Some(Inner { fft, chunk_in, chunk_out, delay, to_trim: delay, scratch: vec![0.0; chunk_out] })
        };
        let cap = inner.as_ref().map_or(0, |i| i.chunk_in);
        Ok(Self { from_rate, to_rate, inner, pending: Vec::with_capacity(cap), in_total: 0, out_total: 0 })
    }

    /// Input sample rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    /// Output sample rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// Input frames consumed per internal resampling step (1 for pass-through).
    pub fn input_chunk(&self) -> usize {
        self.inner.as_ref().map_or(1, |i| i.chunk_in)
    }

    /// Worst-case lag of the output behind the input, in output frames:
    /// one input chunk of buffering plus rubato's delay (0 for pass-through).
    pub fn latency_frames(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.chunk_out + i.delay)
    }

    /// Feeds `input` and returns the output that became ready.
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.process_into(input, &mut out)?;
        Ok(out)
    }

    /// Feeds `input` and appends the output that became ready to `out`;
    /// returns the number of samples appended.
    pub fn process_into(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        self.in_total += input.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            self.out_total += input.len() as u64;
            return Ok(input.len());
        };
        let mut rest = input;
        let mut produced = 0;
        loop {
            if self.pending.is_empty() && rest.len() >= inner.chunk_in {
                let (chunk, tail) = rest.split_at(inner.chunk_in);
                produced += inner.run(chunk, false, out)?;
                rest = tail;
                continue;
            }
            let take = (inner.chunk_in - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < inner.chunk_in {
                break;
            }
            produced += inner.run(&self.pending, false, out)?;
            self.pending.clear();
        }
        self.out_total += produced as u64;
        Ok(produced)
    }

    /// Ends the stream: resamples the buffered input and the tail still in
    /// the filter, and returns the rest of the output. Afterwards the
    /// resampler is reset and ready for a new stream.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.flush_into(&mut out)?;
        Ok(out)
    }

    /// Like [`flush`](Self::flush), appending to `out`; returns the number of
    /// samples appended.
    pub fn flush_into(&mut self, out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        let result = self.flush_inner(out);
        self.reset();
        result
    }

    fn flush_inner(&mut self, out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let expected = expected_len(self.in_total, self.from_rate, self.to_rate);
        let owed = usize::try_from(expected.saturating_sub(self.out_total)).unwrap_or(usize::MAX);
        let start = out.len();
        if !self.pending.is_empty() {
            inner.run(&self.pending, true, out)?;
            self.pending.clear();
        }
        // Pump silence through until the filter tail (and any start-up delay
        // not yet trimmed) has come out.
        while out.len() - start < owed {
            if inner.run(&[], true, out)? == 0 && inner.to_trim == 0 {
                break; // cannot happen with a working resampler; avoid looping forever
            }
        }
        out.truncate(start + owed.min(out.len() - start));
        Ok(out.len() - start)
    }

    /// Drops all buffered input and filter state; the next sample starts a
    /// new stream.
    pub fn reset(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
        }
        self.pending.clear();
        self.in_total = 0;
        self.out_total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, amp: f64, secs: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs).round() as usize;
        (0..n).map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// Amplitude of the `freq` component of `x` (Goertzel, rectangular window).
    fn goertzel_amp(x: &[f32], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / x.len() as f64
    }

    /// Frequency estimated from rising zero crossings (linear interpolation).
    fn zero_cross_freq(x: &[f32], rate: u32) -> f64 {
        let mut first = None;
        let mut last = 0.0;
        let mut count = 0usize;
        for i in 1..x.len() {
            let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
            if a < 0.0 && b >= 0.0 {
                let t = (i - 1) as f64 + a / (a - b);
                if first.is_none() {
                    first = Some(t);
                } else {
                    count += 1;
                }
                last = t;
            }
        }
        f64::from(rate) * count as f64 / (last - first.unwrap_or(last))
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    #[test]
    fn sine_to_16k_keeps_frequency_level_and_length() {
        for from in [8_000u32, 22_050, 44_100, 48_000] {
            let input = sine(from, 1000.0, 0.5, 1.0);
            let out = resample(&input, from, 16_000).unwrap();
            assert_eq!(out.len(), 16_000, "length from {from}");
            // Middle 0.5 s: 8000 samples = whole cycles of 1 kHz and 1.2 kHz.
            let mid = &out[4000..12000];
            let f = zero_cross_freq(mid, 16_000);
            assert!((f - 1000.0).abs() < 1.0, "{from}: zero-crossing freq {f}");
            let a1k = goertzel_amp(mid, 16_000, 1000.0);
            let a_side = goertzel_amp(mid, 16_000, 1200.0).max(goertzel_amp(mid, 16_000, 800.0));
            assert!(db(a1k / 0.5).abs() < 0.1, "{from}: 1 kHz amplitude {a1k}");
            assert!(db(a1k / a_side) > 60.0, "{from}: side-band too strong {a_side}");
            let level = db(rms(mid) / rms(&input));
            assert!(level.abs() < 1.0, "{from}: rms changed by {level} dB");
            // Edges are also fine: the whole output is within 1 dB.
            let level_all = db(rms(&out) / rms(&input));
            assert!(level_all.abs() < 1.0, "{from}: whole rms changed by {level_all} dB");
        }
    }

    #[test]
    fn sine_from_16k_up_and_down() {
        let input = sine(16_000, 1000.0, 0.5, 1.0);
        for to in [8_000u32, 22_050, 48_000] {
            let out = resample(&input, 16_000, to).unwrap();
            assert_eq!(out.len(), to as usize);
            let q = to as usize / 4;
            let mid = &out[q..3 * q];
            let f = zero_cross_freq(mid, to);
            assert!((f - 1000.0).abs() < 1.0, "to {to}: freq {f}");
            let level = db(rms(mid) / rms(&input));
            assert!(level.abs() < 1.0, "to {to}: rms changed by {level} dB");
        }
    }

    #[test]
    fn lengths_are_rounded() {
        for (len, from, to) in [
            (1usize, 8_000u32, 16_000u32),
            (3, 48_000, 16_000),
            (1, 48_000, 16_000),
            (1001, 22_050, 16_000),
            (7, 16_000, 44_100),
            (12345, 44_100, 16_000),
        ] {
            let x = vec![0.1f32; len];
            let out = resample(&x, from, to).unwrap();
            let want = ((len as f64) * f64::from(to) / f64::from(from)).round() as usize;
            assert_eq!(out.len(), want, "{len} @ {from} -> {to}");
        }
    }

    #[test]
    fn empty_and_identity_and_bad_rates() {
        assert!(resample(&[], 8_000, 16_000).unwrap().is_empty());
        assert!(resample(&[], 16_000, 16_000).unwrap().is_empty());
        let x = [0.1f32, -0.2, 0.3];
        assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x.to_vec());
        assert!(matches!(resample(&x, 0, 16_000), Err(ResampleError::InvalidRate { rate: 0 })));
        assert!(matches!(resample(&x, 16_000, 0), Err(ResampleError::InvalidRate { rate: 0 })));
        assert!(StreamResampler::new(16_000, MAX_RATE + 1).is_err());
        let mut s = StreamResampler::new(8_000, 16_000).unwrap();
        assert!(s.process(&[]).unwrap().is_empty());
        assert!(s.flush().unwrap().is_empty());
    }

    #[test]
    fn live_chunk_sizes_are_20ms() {
        for (from, to, chunk) in [
            (8_000, 16_000, 160),
            (48_000, 16_000, 960),
            (16_000, 48_000, 320),
            (22_050, 16_000, 441),
            (16_000, 8_000, 320),
        ] {
            let s = StreamResampler::new(from, to).unwrap();
            assert_eq!(s.input_chunk(), chunk, "{from} -> {to}");
        }
    }

    #[test]
    fn streaming_matches_whole_buffer_whatever_the_chunking() {
        for (from, to) in [(8_000u32, 16_000u32), (48_000, 16_000), (16_000, 48_000), (22_050, 16_000)] {
            let input: Vec<f32> =
                sine(from, 440.0, 0.3, 0.73).iter().zip(sine(from, 1900.0, 0.2, 0.73)).map(|(a, b)| a + b).collect();
            let mut whole = StreamResampler::new(from, to).unwrap();
            let mut reference = whole.process(&input).unwrap();
            reference.extend(whole.flush().unwrap());
            let want = ((input.len() as f64) * f64::from(to) / f64::from(from)).round() as usize;
            assert_eq!(reference.len(), want);

            // Irregular chunk sizes, including empty ones.
            let mut s = StreamResampler::new(from, to).unwrap();
            let mut got = Vec::new();
            let sizes = [1usize, 0, 17, 333, 160, 961, 2, 5000, 29];
            let mut pos = 0;
            let mut k = 0;
            while pos < input.len() {
                let n = sizes[k % sizes.len()].min(input.len() - pos);
                let before = got.len();
                s.process_into(&input[pos..pos + n], &mut got).unwrap();
                // Output never runs ahead of the input.
                let max_out = ((pos + n) as f64 * f64::from(to) / f64::from(from)).ceil() as usize;
                assert!(got.len() <= max_out && got.len() >= before);
                pos += n;
                k += 1;
            }
            s.flush_into(&mut got).unwrap();
            assert_eq!(got, reference, "{from} -> {to}");

            // After a flush the resampler starts afresh.
            let mut again = s.process(&input).unwrap();
            again.extend(s.flush().unwrap());
            assert_eq!(again, reference);
        }
    }

    #[test]
    fn streaming_output_is_time_aligned() {
        // A 1 kHz burst starting at 0.5 s must start at 0.5 s in the output.
        for (from, to) in [(48_000u32, 16_000u32), (8_000, 16_000), (16_000, 48_000)] {
            let mut input = vec![0.0f32; from as usize / 2];
            input.extend(sine(from, 1000.0, 0.5, 0.5));
            let mut s = StreamResampler::new(from, to).unwrap();
            let mut out = Vec::new();
            for chunk in input.chunks(from as usize / 50) {
                s.process_into(chunk, &mut out).unwrap();
            }
            s.flush_into(&mut out).unwrap();
            let onset = out.iter().position(|v| v.abs() > 0.1).unwrap();
            let expected = to as usize / 2;
            let err_ms = (onset as f64 - expected as f64) * 1000.0 / f64::from(to);
            assert!(err_ms.abs() < 1.0, "{from} -> {to}: onset off by {err_ms} ms");
        }
    }

    #[test]
    fn streaming_latency_is_bounded() {
        // 8k -> 16k in 20 ms pieces: after each piece, the output is at most
        // latency_frames behind the ideal count.
        let mut s = StreamResampler::new(8_000, 16_000).unwrap();
        let piece = vec![0.25f32; 160];
        let mut total = 0usize;
        for k in 1..=50 {
            total += s.process(&piece).unwrap().len();
            assert!(k * 320 - total <= s.latency_frames(), "lag {} > {}", k * 320 - total, s.latency_frames());
        }
        total += s.flush().unwrap().len();
        assert_eq!(total, 50 * 320);
    }
}

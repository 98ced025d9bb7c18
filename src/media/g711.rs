//! ITU-T G.711 companding: μ-law (PCMU, RTP payload type 0) and A-law
//! (PCMA, payload type 8), RFC 3551 §4.5.14.
//!
//! Owns the sample-level conversions between 16-bit linear PCM and the 8-bit
//! G.711 codes, plus `f32` helpers for whole buffers. Encoding is bit logic
//! (the segment is the position of the highest set bit), decoding is bit
//! logic too; both are branch-light and allocation-free. μ-law follows the
//! G.711 14-bit range with the usual 0x84 bias and a clip at 32 635; A-law
//! the 13-bit range. Decoding then encoding any code gives the code back
//! (except μ-law's "negative zero" 0x7F, which decodes to 0 and so encodes
//! as the positive zero 0xFF).
//!
//! Pure computation: no IO, no clocks, no allocation except in the `Vec`
//! helpers the caller opts into.

/// μ-law bias added before segment search (G.711 §3.2 as commonly coded).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent before the bias is added.
const ULAW_CLIP: i32 = 32_635;

/// Encodes one 16-bit linear sample as a μ-law code.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign: u8 = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    magnitude = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // magnitude is in 0x84..=0x7FFF: its highest set bit is 7..=14.
    let highest_bit = 31 - magnitude.leading_zeros() as i32;
    let exponent = (highest_bit - 7) as u8;
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// Decodes one μ-law code to a 16-bit linear sample.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let mantissa = i32::from(code & 0x0F);
    let exponent = i32::from((code & 0x70) >> 4);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one 16-bit linear sample as an A-law code.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 3; // 13-bit range
    let mask: u8 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    // Segment: 0 for value <= 0x1F, then one per extra bit, 8 = overflow.
    let segment = if value <= 0x1F { 0 } else { (32 - value.leading_zeros() as i32) - 5 };
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if segment < 2 { (value >> 1) & 0x0F } else { (value >> segment) & 0x0F };
    (((segment as u8) << 4) | mantissa as u8) ^ mask
}

/// Decodes one A-law code to a 16-bit linear sample.
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = i32::from(code & 0x0F) << 4;
    let segment = i32::from((code & 0x70) >> 4);
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// μ-law (North America, Japan): PCMU.
    Ulaw,
    /// A-law (rest of the world): PCMA.
    Alaw,
}

impl G711Law {
    /// Encodes one linear sample with this law.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            G711Law::Ulaw => linear_to_ulaw(sample),
            G711Law::Alaw => linear_to_alaw(sample),
        }
    }

    /// Decodes one code with this law.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            G711Law::Ulaw => ulaw_to_linear(code),
            G711Law::Alaw => alaw_to_linear(code),
        }
    }

    /// Decodes codes to `f32` samples in `[-1, 1)`, appending to `out`.
    pub fn decode_f32(self, codes: &[u8], out: &mut Vec<f32>) {
        out.reserve(codes.len());
        out.extend(codes.iter().map(|&c| f32::from(self.decode_sample(c)) / 32_768.0));
    }

    /// Encodes `f32` samples (clamped to `[-1, 1]`; NaN counts as 0) as
    /// codes, appending to `out`.
    pub fn encode_f32(self, samples: &[f32], out: &mut Vec<u8>) {
        out.reserve(samples.len());
        out.extend(samples.iter().map(|&s| self.encode_sample(f32_to_i16(s))));
    }
}

/// Converts one `f32` sample to 16-bit PCM with rounding and saturation.
pub fn f32_to_i16(sample: f32) -> i16 {
    let scaled = (sample * 32_768.0).round();
    if scaled.is_nan() {
        0
    } else {
        scaled.clamp(-32_768.0, 32_767.0) as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        // First step: 0..=3 quantise to 0 (code 0xFF), 4..=11 to 8 (0xFE).
        assert_eq!(linear_to_ulaw(3), 0xFF);
        assert_eq!(linear_to_ulaw(4), 0xFE);
        assert_eq!(linear_to_ulaw(11), 0xFE);
        assert_eq!(linear_to_ulaw(12), 0xFD);
        assert_eq!(ulaw_to_linear(0xFE), 8);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_alaw(-1), 0x55);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "A-law {code:#04x}");
            if code != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(code)), code, "μ-law {code:#04x}");
            }
        }
    }

    #[test]
    fn encoding_is_monotonic_and_error_is_within_half_a_step() {
        for law in [G711Law::Ulaw, G711Law::Alaw] {
            let mut previous = i32::MIN;
            for sample in (i16::MIN..=i16::MAX).step_by(7) {
                let decoded = i32::from(law.decode_sample(law.encode_sample(sample)));
                assert!(decoded >= previous, "{law:?} not monotonic at {sample}");
                previous = decoded;
                let error = (decoded - i32::from(sample)).abs();
                // Half a quantisation step: the step doubles per segment, so
                // the error stays near 1/32 of the magnitude (plus 16 near zero).
                let bound = i32::from(sample).abs() / 30 + 16;
                let clip_slack = if i32::from(sample).abs() > 32_000 { 700 } else { 0 };
                assert!(error <= bound + clip_slack, "{law:?}: {sample} -> {decoded}");
            }
        }
    }

    #[test]
    fn f32_helpers_round_trip_and_saturate() {
        let input = [0.0f32, 0.5, -0.5, 0.999, -1.0, 2.0, -2.0, f32::NAN];
        for law in [G711Law::Ulaw, G711Law::Alaw] {
            let mut codes = Vec::new();
            law.encode_f32(&input, &mut codes);
            let mut back = Vec::new();
            law.decode_f32(&codes, &mut back);
            assert_eq!(back.len(), input.len());
            for (i, (&a, &b)) in input.iter().zip(&back).enumerate().take(5) {
                assert!((a - b).abs() < 0.03, "{law:?} sample {i}: {a} -> {b}");
            }
            assert!(back[5] > 0.97 && back[6] < -0.97);
            assert!(back[7].abs() < 0.001);
        }
    }
}

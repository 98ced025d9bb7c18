//! Quantizes the matrix weights of a whisper.cpp ggml file to Q8_0, the
//! way whisper.cpp's own `quantize` tool does, in process.
//!
//! Owns [`quantize_whisper_q8_0`]: it copies the header, mel filters and
//! vocabulary, sets the file type to "mostly Q8_0" (with ggml's
//! quantization version, as whisper.cpp expects), and rewrites every
//! two-dimensional f16 tensor (the attention and MLP projections and the
//! token embedding, which whisper.cpp creates in the file's weight type)
//! as Q8_0 blocks; convolution kernels (3-D, f16), biases, norms and
//! positional embeddings (f32) are copied as they are. Q8_0 is ggml's
//! reference `quantize_row_q8_0`: blocks of 32 values, one f16 scale
//! (max |x| / 127) and 32 rounded i8, so the output is byte-for-byte
//! deterministic and can be pinned by SHA-256 in the model manifest.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::ct2_ggml::{f16_to_f32, f32_to_f16, GGML_MAGIC};

const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;
const GGML_TYPE_Q8_0: i32 = 8;
/// `GGML_FTYPE_MOSTLY_Q8_0`, stored with `GGML_QNT_VERSION` (2) x 1000.
const FTYPE_Q8_0: i32 = 7 + 2 * 1000;
const QK8_0: usize = 32;
/// Header fields after the magic: 10 hyper-parameters, then the file type.
const HPARAMS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a whisper.cpp ggml file (magic {magic:#010x})")]
    NotGgml { path: PathBuf, magic: u32 },
    #[error("{path}: file type {ftype} is not f16 (only f16 models are quantized)")]
    NotF16 { path: PathBuf, ftype: i32 },
    #[error("{path}: tensor `{name}`: {reason}")]
    BadTensor { path: PathBuf, name: String, reason: String },
}

/// What a quantization did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantizeReport {
    pub tensors: usize,
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Reads the f16 ggml whisper model at `input` and writes its Q8_0 form to
/// `output` (see the module doc).
pub fn quantize_whisper_q8_0(input: &Path, output: &Path) -> Result<QuantizeReport, QuantizeError> {
    let in_err = |source| QuantizeError::Io { path: input.to_path_buf(), source };
    let out_err = |source| QuantizeError::Io { path: output.to_path_buf(), source };
    let mut r = BufReader::with_capacity(1 << 20, File::open(input).map_err(in_err)?);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(output).map_err(out_err)?);
    let mut report = QuantizeReport::default();

    let magic = read_i32(&mut r).map_err(in_err)? as u32;
    if magic != GGML_MAGIC {
        return Err(QuantizeError::NotGgml { path: input.to_path_buf(), magic });
    }
    write_i32(&mut w, magic as i32).map_err(out_err)?;
    for _ in 0..HPARAMS {
        let v = read_i32(&mut r).map_err(in_err)?;
        write_i32(&mut w, v).map_err(out_err)?;
    }
    let ftype = read_i32(&mut r).map_err(in_err)?;
    if ftype % 1000 != GGML_TYPE_F16 {
        return Err(QuantizeError::NotF16 { path: input.to_path_buf(), ftype });
    }
    write_i32(&mut w, FTYPE_Q8_0).map_err(out_err)?;
    // mel filters: n_mel, n_fft, then n_mel * n_fft f32
    let (n_mel, n_fft) = (read_i32(&mut r).map_err(in_err)?, read_i32(&mut r).map_err(in_err)?);
    write_i32(&mut w, n_mel).map_err(out_err)?;
    write_i32(&mut w, n_fft).map_err(out_err)?;
    copy_bytes(&mut r, &mut w, n_mel.max(0) as u64 * n_fft.max(0) as u64 * 4, input, output)?;
    // vocabulary: count, then (len, bytes) each
    let n_tokens = read_i32(&mut r).map_err(in_err)?;
    write_i32(&mut w, n_tokens).map_err(out_err)?;
    for _ in 0..n_tokens.max(0) {
        let len = read_i32(&mut r).map_err(in_err)?;
        write_i32(&mut w, len).map_err(out_err)?;
        copy_bytes(&mut r, &mut w, len.max(0) as u64, input, output)?;
    }

    // tensors to the end of the file
    loop {
        let n_dims = match read_i32(&mut r) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(in_err(e)),
        };
        let name_len = read_i32(&mut r).map_err(in_err)?;
        let ttype = read_i32(&mut r).map_err(in_err)?;
        let bad = |name: &str, reason: String| QuantizeError::BadTensor { path: input.to_path_buf(), name: name.to_owned(), reason };
        if !(1..=4).contains(&n_dims) || !(1..=1024).contains(&name_len) {
            return Err(bad("?", format!("{n_dims} dimensions, name of {name_len} bytes")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(read_i32(&mut r).map_err(in_err)?);
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).map_err(in_err)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if ne.iter().any(|&d| d <= 0) {
            return Err(bad(&name, format!("shape {ne:?}")));
        }
        let elements: u64 = ne.iter().map(|&d| d as u64).product();
        let element_size = match ttype {
            GGML_TYPE_F32 => 4,
            GGML_TYPE_F16 => 2,
            t => return Err(bad(&name, format!("type {t} (only f32 and f16 inputs)"))),
        };
        let quantize = n_dims == 2 && ttype == GGML_TYPE_F16 && ne[0] as usize % QK8_0 == 0;
        write_i32(&mut w, n_dims).map_err(out_err)?;
        write_i32(&mut w, name_len).map_err(out_err)?;
        write_i32(&mut w, if quantize { GGML_TYPE_Q8_0 } else { ttype }).map_err(out_err)?;
        for d in &ne {
            write_i32(&mut w, *d).map_err(out_err)?;
        }
        w.write_all(name.as_bytes()).map_err(out_err)?;
        report.tensors += 1;
        report.bytes_in += elements * element_size;
        if quantize {
            let mut raw = vec![0u8; elements as usize * 2];
            r.read_exact(&mut raw).map_err(in_err)?;
            let values: Vec<f32> = raw.chunks_exact(2).map(|h| f16_to_f32(u16::from_le_bytes([h[0], h[1]]))).collect();
            let blocks = quantize_q8_0(&values);
            w.write_all(&blocks).map_err(out_err)?;
            report.quantized += 1;
            report.bytes_out += blocks.len() as u64;
        } else {
            copy_bytes(&mut r, &mut w, elements * element_size, input, output)?;
            report.bytes_out += elements * element_size;
        }
    }
    let file = w.into_inner().map_err(|e| out_err(e.into_error()))?;
    file.sync_all().map_err(out_err)?;
    Ok(report)
}

/// ggml's `quantize_row_q8_0_ref`: per 32 values, the f16 scale
/// `max|x| / 127`, then each value divided by it and rounded to i8.
/// `values.len()` must be a multiple of 32.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK8_0 * (2 + QK8_0));
    for block in values.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

fn read_i32(r: &mut impl Read) -> io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

fn write_i32(w: &mut impl Write, v: i32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn copy_bytes(r: &mut impl Read, w: &mut impl Write, n: u64, input: &Path, output: &Path) -> Result<(), QuantizeError> {
    let copied = io::copy(&mut r.take(n), w).map_err(|source| QuantizeError::Io { path: output.to_path_buf(), source })?;
    if copied != n {
        let source = io::Error::new(io::ErrorKind::UnexpectedEof, format!("file ends {} bytes early", n - copied));
        return Err(QuantizeError::Io { path: input.to_path_buf(), source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_match_ggml_reference() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) / 10.0).collect();
        let q = quantize_q8_0(&values);
        assert_eq!(q.len(), 2 * 34);
        // block 0: values -2.0 ..= 1.1, amax 2.0, d = 2/127
        let d = f16_to_f32(u16::from_le_bytes([q[0], q[1]]));
        assert!((d - 2.0 / 127.0).abs() < 1e-5, "{d}");
        assert_eq!(q[2] as i8, -127);
        // dequantized values are within half a step
        for (i, x) in values[..32].iter().enumerate() {
            assert!((q[2 + i] as i8 as f32 * d - x).abs() <= d / 2.0 + 1e-4, "{i}: {x}");
        }
        assert_eq!(quantize_q8_0(&[0.0; 32])[2..], [0u8; 32], "zeros stay zeros");
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        std::fs::write(&a, b"GGUF\x03\0\0\0").unwrap();
        assert!(matches!(quantize_whisper_q8_0(&a, &b), Err(QuantizeError::NotGgml { .. })));
        let mut header = GGML_MAGIC.to_le_bytes().to_vec();
        header.extend_from_slice(&[0u8; 8]);
        std::fs::write(&a, &header).unwrap();
        assert!(matches!(quantize_whisper_q8_0(&a, &b), Err(QuantizeError::Io { .. })));
    }
}

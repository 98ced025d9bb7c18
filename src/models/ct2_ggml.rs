//! Offline converter from a CTranslate2 (faster-whisper) Whisper model to the
//! ggml file format that whisper.cpp loads.
//!
//! Input: a CTranslate2 binary `model.bin` (spec version 6, `WhisperSpec`),
//! Whisper's `mel_filters.npz` and the model's tiktoken vocabulary
//! (`gpt2.tiktoken` for English-only models, `multilingual.tiktoken`
//! otherwise), all from local files: no network, no Python.
//!
//! Output: the same bytes whisper.cpp's `models/convert-pt-to-ggml.py` writes
//! for the original PyTorch checkpoint (f16, tensors in PyTorch state-dict
//! order), so the result can be checked against a published sha256.
//!
//! CTranslate2 binary layout (all little-endian): u32 version; spec name
//! string (u16 length including the NUL, then the bytes); u32 revision; u32
//! variable count; per variable: name string, u8 rank, rank x u32 dims, u8
//! dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte count, raw
//! data; then u32 alias count and (alias, target) string pairs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use indicatif::ProgressBar;

use super::npy::{self, NpyError};

/// The only CTranslate2 binary version this converter reads.
pub const CT2_BINARY_VERSION: u32 = 6;
/// Magic number at the start of a whisper.cpp ggml file ("ggml").
pub const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Everything that can go wrong while converting; never a panic.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unsupported CTranslate2 binary version {found} (bad magic/version; this converter reads version {CT2_BINARY_VERSION})")]
    BadVersion { path: PathBuf, found: u32 },
    #[error("{path}: model spec is `{found}`, expected `WhisperSpec`")]
    WrongSpec { path: PathBuf, found: String },
    #[error("{path}: truncated model file: {what} needs {need} bytes at offset {offset}, but the file has {file_len}")]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        need: u64,
        file_len: u64,
    },
    #[error("{path}: malformed model file: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: variable `{name}` has unknown dtype code {code}")]
    UnknownDtype {
        path: PathBuf,
        name: String,
        code: u8,
    },
    #[error("variable `{name}` has dtype {dtype:?}, which this converter cannot turn into float weights (quantized models are not supported; use an f16 or f32 model)")]
    UnsupportedDtype { name: String, dtype: Ct2Dtype },
    #[error("model is missing variable `{0}`")]
    MissingTensor(String),
    #[error("variable `{name}` has shape {found:?}, expected {expected}")]
    BadShape {
        name: String,
        found: Vec<u64>,
        expected: String,
    },
    #[error("mel filters {path}: {source}")]
    MelFilters {
        path: PathBuf,
        #[source]
        source: NpyError,
    },
    #[error("mel filters {path}: array `{key}` has shape {shape:?}, expected ({n_mels}, N)")]
    MelShape {
        path: PathBuf,
        key: String,
        shape: Vec<usize>,
        n_mels: usize,
    },
    #[error("tokenizer {path}, line {line}: {what}")]
    Tokenizer {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

/// Element types of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::Bf16)
    }
}

/// One variable of a CTranslate2 model: where its data lies in the file.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: Ct2Dtype,
    /// Byte offset of the raw data in the file.
    pub offset: u64,
    pub nbytes: u64,
    /// The data itself for tiny (scalar) variables such as `num_heads`.
    pub small: Option<Vec<u8>>,
}

impl Ct2Variable {
    fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The value of an integer scalar (such as `encoder/num_heads`).
    fn scalar_int(&self) -> Option<i64> {
        let d = self.small.as_deref()?;
        Some(match (self.dtype, d.len()) {
            (Ct2Dtype::I8, 1) => d[0] as i8 as i64,
            (Ct2Dtype::I16, 2) => i16::from_le_bytes([d[0], d[1]]) as i64,
            (Ct2Dtype::I32, 4) => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return None,
        })
    }
}

/// The index of a CTranslate2 model file: header and variable locations;
/// the weights stay on disk until they are copied.
#[derive(Debug, Clone)]
pub struct Ct2Index {
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Ct2Variable>,
    pub aliases: Vec<(String, String)>,
}

impl Ct2Index {
    fn get(&self, name: &str) -> Result<&Ct2Variable, ConvertError> {
        if let Some(v) = self.variables.get(name) {
            return Ok(v);
        }
        self.aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .and_then(|(_, target)| self.variables.get(target))
            .ok_or_else(|| ConvertError::MissingTensor(name.to_string()))
    }

    fn layer_count(&self, prefix: &str) -> usize {
        let layers: BTreeSet<usize> = self
            .variables
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.split('/').next()?.parse().ok())
            .collect();
        layers.len()
    }
}

/// A positioned reader that knows the length of its input, so every read
/// can be bounds-checked before it happens.
struct Cursor<'a, R> {
    inner: &'a mut R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Cursor<'_, R> {
    fn need(&self, what: &dyn Fn() -> String, n: u64) -> Result<(), ConvertError> {
        if self.pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(ConvertError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos,
                need: n,
                file_len: self.len,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, what: &dyn Fn() -> String, n: u64) -> Result<Vec<u8>, ConvertError> {
        self.need(what, n)?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| ConvertError::Io {
                action: "read",
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, ConvertError> {
        Ok(self.bytes(what, 1)?[0])
    }

    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, ConvertError> {
        let b = self.bytes(what, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, ConvertError> {
        let b = self.bytes(what, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, ConvertError> {
        let n = self.u16(what)? as u64;
        let mut b = self.bytes(what, n)?;
        if b.last() == Some(&0) {
            b.pop();
        }
        String::from_utf8(b).map_err(|_| ConvertError::Malformed {
            path: self.path.to_path_buf(),
            what: format!("{} is not UTF-8", what()),
        })
    }

    fn skip(&mut self, what: &dyn Fn() -> String, n: u64) -> Result<(), ConvertError> {
        self.need(what, n)?;
        self.inner
            .seek(SeekFrom::Current(n as i64))
            .map_err(|source| ConvertError::Io {
                action: "seek in",
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += n;
        Ok(())
    }
}

/// Read the header and variable index of a CTranslate2 model from `r`
/// (positioned at the start of the model, `len` bytes long). `path` is only
/// used in error messages.
pub fn read_ct2_index<R: Read + Seek>(
    r: &mut R,
    len: u64,
    path: &Path,
) -> Result<Ct2Index, ConvertError> {
    let mut c = Cursor {
        inner: r,
        pos: 0,
        len,
        path,
    };
    let version = c.u32(&|| "version".into())?;
    if version != CT2_BINARY_VERSION {
        return Err(ConvertError::BadVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let spec = c.string(&|| "spec name".into())?;
    let revision = c.u32(&|| "spec revision".into())?;
    let count = c.u32(&|| "variable count".into())?;
    let mut variables = BTreeMap::new();
    for i in 0..count {
        let name = c.string(&|| format!("name of variable #{i}"))?;
        let what = |field: &str| {
            let name = name.clone();
            let field = field.to_string();
            move || format!("{field} of variable `{name}`")
        };
        let rank = c.u8(&what("rank"))?;
        if rank > 8 {
            return Err(ConvertError::Malformed {
                path: path.to_path_buf(),
                what: format!("variable `{name}` has rank {rank}"),
            });
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(c.u32(&what("shape"))? as u64);
        }
        let code = c.u8(&what("dtype"))?;
        let dtype = Ct2Dtype::from_code(code).ok_or_else(|| ConvertError::UnknownDtype {
            path: path.to_path_buf(),
            name: name.clone(),
            code,
        })?;
        let nbytes = c.u32(&what("byte count"))? as u64;
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(nbytes) {
            return Err(ConvertError::Malformed {
                path: path.to_path_buf(),
                what: format!(
                    "variable `{name}` has shape {shape:?} of {dtype:?} but {nbytes} data bytes"
                ),
            });
        }
        let offset = c.pos;
        let small = if nbytes <= 16 {
            Some(c.bytes(&what("data"), nbytes)?)
        } else {
            c.skip(&what("data"), nbytes)?;
            None
        };
        variables.insert(
            name.clone(),
            Ct2Variable {
                name,
                shape,
                dtype,
                offset,
                nbytes,
                small,
            },
        );
    }
    let mut aliases = Vec::new();
    if c.pos < c.len {
        let n = c.u32(&|| "alias count".into())?;
        for i in 0..n {
            let alias = c.string(&|| format!("alias #{i}"))?;
            let target = c.string(&|| format!("target of alias `{alias}`"))?;
            aliases.push((alias, target));
        }
    }
    Ok(Ct2Index {
        spec,
        revision,
        variables,
        aliases,
    })
}

/// Whisper hyper-parameters in the order of the ggml header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperHparams {
    pub n_vocab: u32,
    pub n_audio_ctx: u32,
    pub n_audio_state: u32,
    pub n_audio_head: u32,
    pub n_audio_layer: u32,
    pub n_text_ctx: u32,
    pub n_text_state: u32,
    pub n_text_head: u32,
    pub n_text_layer: u32,
    pub n_mels: u32,
}

fn shape2(idx: &Ct2Index, name: &str) -> Result<(u64, u64), ConvertError> {
    let v = idx.get(name)?;
    match v.shape[..] {
        [a, b] => Ok((a, b)),
        _ => Err(ConvertError::BadShape {
            name: name.into(),
            found: v.shape.clone(),
            expected: "2 dimensions".into(),
        }),
    }
}

fn to_u32(name: &str, v: u64) -> Result<u32, ConvertError> {
    u32::try_from(v).map_err(|_| ConvertError::BadShape {
        name: name.into(),
        found: vec![v],
        expected: "a dimension below 2^32".into(),
    })
}

/// Derive the hyper-parameters from the variable shapes (and the
/// `*/num_heads` scalars, falling back to a head size of 64).
pub fn whisper_hparams(idx: &Ct2Index) -> Result<WhisperHparams, ConvertError> {
    let (n_vocab, n_text_state) = shape2(idx, "decoder/embeddings/weight")?;
    let (n_text_ctx, _) = shape2(idx, "decoder/position_encodings/encodings")?;
    let (n_audio_ctx, n_audio_state) = shape2(idx, "encoder/position_encodings/encodings")?;
    let conv1 = idx.get("encoder/conv1/weight")?;
    let n_mels = match conv1.shape[..] {
        [_, m, _] => m,
        _ => {
            return Err(ConvertError::BadShape {
                name: conv1.name.clone(),
                found: conv1.shape.clone(),
                expected: "(n_state, n_mels, 3)".into(),
            })
        }
    };
    let heads = |name: &str, state: u64| -> u64 {
        idx.variables
            .get(name)
            .and_then(Ct2Variable::scalar_int)
            .filter(|&h| h > 0)
            .map(|h| h as u64)
            .unwrap_or(state / 64)
    };
    let n_audio_layer = idx.layer_count("encoder/layer_") as u64;
    let n_text_layer = idx.layer_count("decoder/layer_") as u64;
    if n_audio_layer == 0 || n_text_layer == 0 {
        return Err(ConvertError::MissingTensor(
            if n_audio_layer == 0 {
                "encoder/layer_0/..."
            } else {
                "decoder/layer_0/..."
            }
            .into(),
        ));
    }
    Ok(WhisperHparams {
        n_vocab: to_u32("n_vocab", n_vocab)?,
        n_audio_ctx: to_u32("n_audio_ctx", n_audio_ctx)?,
        n_audio_state: to_u32("n_audio_state", n_audio_state)?,
        n_audio_head: to_u32("n_audio_head", heads("encoder/num_heads", n_audio_state))?,
        n_audio_layer: to_u32("n_audio_layer", n_audio_layer)?,
        n_text_ctx: to_u32("n_text_ctx", n_text_ctx)?,
        n_text_state: to_u32("n_text_state", n_text_state)?,
        n_text_head: to_u32("n_text_head", heads("decoder/num_heads", n_text_state))?,
        n_text_layer: to_u32("n_text_layer", n_text_layer)?,
        n_mels: to_u32("n_mels", n_mels)?,
    })
}

/// One tensor of the output file and where its data comes from.
#[derive(Debug, Clone)]
struct Plan {
    /// whisper.cpp tensor name.
    name: String,
    /// CTranslate2 variable (or alias) name.
    src: String,
    /// Part `k` of `n` equal slices along dim 0 (fused q/k/v weights).
    part: Option<(u64, u64)>,
    /// Write as f32 (true) or f16 (false).
    f32: bool,
    /// Reshape a 1-D conv bias (n) into (n, 1).
    conv_bias: bool,
}

fn plan(name: String, src: String) -> Plan {
    Plan {
        name,
        src,
        part: None,
        f32: false,
        conv_bias: false,
    }
}

fn sliced(name: String, src: String, k: u64, n: u64) -> Plan {
    Plan {
        part: Some((k, n)),
        ..plan(name, src)
    }
}

/// The output tensors in whisper.cpp's expected (PyTorch state-dict) order.
fn tensor_plan(hp: &WhisperHparams) -> Vec<Plan> {
    let mut out = Vec::new();
    let s = |x: &str| x.to_string();
    let linear = |out: &mut Vec<Plan>, dst: &str, src: &str, bias: bool| {
        out.push(plan(format!("{dst}.weight"), format!("{src}/weight")));
        if bias {
            out.push(plan(format!("{dst}.bias"), format!("{src}/bias")));
        }
    };
    let norm = |out: &mut Vec<Plan>, dst: &str, src: &str| {
        out.push(plan(format!("{dst}.weight"), format!("{src}/gamma")));
        out.push(plan(format!("{dst}.bias"), format!("{src}/beta")));
    };
    // q, k, v packed along dim 0 in `src`, `first` = index of the first of
    // them in the pack, `n` = pack size. The key projection has no bias.
    let fused = |out: &mut Vec<Plan>, dst: &str, names: &[&str], src: &str| {
        let n = names.len() as u64;
        for (k, which) in names.iter().enumerate() {
            let k = k as u64;
            out.push(sliced(
                format!("{dst}.{which}.weight"),
                format!("{src}/weight"),
                k,
                n,
            ));
            if *which != "key" {
                out.push(sliced(
                    format!("{dst}.{which}.bias"),
                    format!("{src}/bias"),
                    k,
                    n,
                ));
            }
        }
    };

    out.push(Plan {
        f32: true,
        ..plan(
            s("encoder.positional_embedding"),
            s("encoder/position_encodings/encodings"),
        )
    });
    for conv in ["conv1", "conv2"] {
        out.push(plan(
            format!("encoder.{conv}.weight"),
            format!("encoder/{conv}/weight"),
        ));
        out.push(Plan {
            f32: true,
            conv_bias: true,
            ..plan(
                format!("encoder.{conv}.bias"),
                format!("encoder/{conv}/bias"),
            )
        });
    }
    for i in 0..hp.n_audio_layer {
        let d = format!("encoder.blocks.{i}");
        let c = format!("encoder/layer_{i}");
        fused(
            &mut out,
            &format!("{d}.attn"),
            &["query", "key", "value"],
            &format!("{c}/self_attention/linear_0"),
        );
        linear(
            &mut out,
            &format!("{d}.attn.out"),
            &format!("{c}/self_attention/linear_1"),
            true,
        );
        norm(
            &mut out,
            &format!("{d}.attn_ln"),
            &format!("{c}/self_attention/layer_norm"),
        );
        linear(
            &mut out,
            &format!("{d}.mlp.0"),
            &format!("{c}/ffn/linear_0"),
            true,
        );
        linear(
            &mut out,
            &format!("{d}.mlp.2"),
            &format!("{c}/ffn/linear_1"),
            true,
        );
        norm(
            &mut out,
            &format!("{d}.mlp_ln"),
            &format!("{c}/ffn/layer_norm"),
        );
    }
    norm(&mut out, "encoder.ln_post", "encoder/layer_norm");

    out.push(Plan {
        f32: true,
        ..plan(
            s("decoder.positional_embedding"),
            s("decoder/position_encodings/encodings"),
        )
    });
    out.push(plan(
        s("decoder.token_embedding.weight"),
        s("decoder/embeddings/weight"),
    ));
    for i in 0..hp.n_text_layer {
        let d = format!("decoder.blocks.{i}");
        let c = format!("decoder/layer_{i}");
        fused(
            &mut out,
            &format!("{d}.attn"),
            &["query", "key", "value"],
            &format!("{c}/self_attention/linear_0"),
        );
        linear(
            &mut out,
            &format!("{d}.attn.out"),
            &format!("{c}/self_attention/linear_1"),
            true,
        );
        norm(
            &mut out,
            &format!("{d}.attn_ln"),
            &format!("{c}/self_attention/layer_norm"),
        );
        linear(
            &mut out,
            &format!("{d}.cross_attn.query"),
            &format!("{c}/attention/linear_0"),
            true,
        );
        fused(
            &mut out,
            &format!("{d}.cross_attn"),
            &["key", "value"],
            &format!("{c}/attention/linear_1"),
        );
        linear(
            &mut out,
            &format!("{d}.cross_attn.out"),
            &format!("{c}/attention/linear_2"),
            true,
        );
        norm(
            &mut out,
            &format!("{d}.cross_attn_ln"),
            &format!("{c}/attention/layer_norm"),
        );
        linear(
            &mut out,
            &format!("{d}.mlp.0"),
            &format!("{c}/ffn/linear_0"),
            true,
        );
        linear(
            &mut out,
            &format!("{d}.mlp.2"),
            &format!("{c}/ffn/linear_1"),
            true,
        );
        norm(
            &mut out,
            &format!("{d}.mlp_ln"),
            &format!("{c}/ffn/layer_norm"),
        );
    }
    norm(&mut out, "decoder.ln", "decoder/layer_norm");
    out
}

/// Parse a tiktoken vocabulary (`<base64 token> <rank>` per line) into the
/// token byte strings in file order, dropping repeated tokens.
pub fn read_tiktoken(path: &Path) -> Result<Vec<Vec<u8>>, ConvertError> {
    let text = std::fs::read(path).map_err(|source| ConvertError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(text).map_err(|_| ConvertError::Tokenizer {
        path: path.to_path_buf(),
        line: 0,
        what: "file is not UTF-8 text".into(),
    })?;
    let mut seen = HashSet::new();
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: String| ConvertError::Tokenizer {
            path: path.to_path_buf(),
            line: i + 1,
            what,
        };
        let mut parts = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected `<base64 token> <rank>`".into()));
        };
        rank.parse::<i64>()
            .map_err(|_| bad(format!("rank `{rank}` is not an integer")))?;
        let bytes =
            decode_base64_lenient(tok).map_err(|e| bad(format!("token is not base64: {e}")))?;
        if seen.insert(bytes.clone()) {
            tokens.push(bytes);
        }
    }
    if tokens.is_empty() {
        return Err(ConvertError::Tokenizer {
            path: path.to_path_buf(),
            line: 0,
            what: "no tokens".into(),
        });
    }
    Ok(tokens)
}

/// Base64 as Python's `base64.b64decode` reads it (non-strict): characters
/// outside the alphabet, padding included, are skipped. Whisper's
/// `multilingual.tiktoken` ends with a token written as `=`, the empty
/// string, which the reference conversion keeps.
fn decode_base64_lenient(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{
        general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
    };
    if let Ok(b) = general_purpose::STANDARD.decode(s) {
        return Ok(b);
    }
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    lenient.decode(kept)
}

/// IEEE half -> single precision (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e: i32 = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Single -> half precision, round to nearest even (as NumPy's `astype`).
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return sign
            | 0x7c00
            | if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut r = m >> shift;
        if rest > half || (rest == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && r & 1 == 1) {
        r += 1; // may carry into the exponent, giving inf: correct.
    }
    sign | r as u16
}

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Convert raw little-endian `src` elements to the output element type.
fn convert_data(raw: Vec<u8>, src: Ct2Dtype, to_f32: bool) -> Vec<u8> {
    let halves = || {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    let singles = || {
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    };
    match (src, to_f32) {
        (Ct2Dtype::F16, false) | (Ct2Dtype::F32, true) => raw,
        (Ct2Dtype::F16, true) => halves().flat_map(|h| f16_to_f32(h).to_le_bytes()).collect(),
        (Ct2Dtype::Bf16, true) => halves()
            .flat_map(|h| bf16_to_f32(h).to_le_bytes())
            .collect(),
        (Ct2Dtype::Bf16, false) => halves()
            .flat_map(|h| f32_to_f16(bf16_to_f32(h)).to_le_bytes())
            .collect(),
        (Ct2Dtype::F32, false) => singles()
            .flat_map(|f| f32_to_f16(f).to_le_bytes())
            .collect(),
        // Integer types are rejected before this point.
        _ => raw,
    }
}

/// Convert a CTranslate2 Whisper `model.bin` into a whisper.cpp ggml file at
/// `out` (written directly; callers wanting atomicity pass a temporary path
/// and rename). `n_mels` is read from the model (conv1 input channels) and
/// selects `mel_{n_mels}` in `mel_filters_npz`.
pub fn convert_ct2_whisper(
    model_bin: &Path,
    mel_filters_npz: &Path,
    tiktoken: &Path,
    out: &Path,
) -> Result<(), ConvertError> {
    convert_ct2_whisper_with_progress(
        model_bin,
        mel_filters_npz,
        tiktoken,
        out,
        &ProgressBar::hidden(),
    )
}

/// [`convert_ct2_whisper`], advancing `progress` (its length set to the
/// number of tensor bytes read) as tensors are copied.
pub fn convert_ct2_whisper_with_progress(
    model_bin: &Path,
    mel_filters_npz: &Path,
    tiktoken: &Path,
    out: &Path,
    progress: &ProgressBar,
) -> Result<(), ConvertError> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io {
            action,
            path: path.clone(),
            source,
        }
    };
    let file = File::open(model_bin).map_err(io_err("open", model_bin))?;
    let len = file.metadata().map_err(io_err("stat", model_bin))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let idx = read_ct2_index(&mut reader, len, model_bin)?;
    if idx.spec != "WhisperSpec" {
        return Err(ConvertError::WrongSpec {
            path: model_bin.to_path_buf(),
            found: idx.spec,
        });
    }
    let hp = whisper_hparams(&idx)?;

    // Check every tensor the plan needs before writing anything.
    let plans = tensor_plan(&hp);
    let mut total = 0u64;
    for p in &plans {
        let v = idx.get(&p.src)?;
        if !v.dtype.is_float() {
            return Err(ConvertError::UnsupportedDtype {
                name: v.name.clone(),
                dtype: v.dtype,
            });
        }
        if let Some((_, n)) = p.part {
            if v.shape.is_empty() || v.shape[0] % n != 0 {
                return Err(ConvertError::BadShape {
                    name: v.name.clone(),
                    found: v.shape.clone(),
                    expected: format!("a first dimension divisible by {n} (fused projections)"),
                });
            }
        }
        total += v.nbytes / p.part.map_or(1, |(_, n)| n);
    }

    let key = format!("mel_{}", hp.n_mels);
    let mel =
        npy::read_npz_array(mel_filters_npz, &key).map_err(|source| ConvertError::MelFilters {
            path: mel_filters_npz.to_path_buf(),
            source,
        })?;
    if mel.shape.len() != 2 || mel.shape[0] != hp.n_mels as usize {
        return Err(ConvertError::MelShape {
            path: mel_filters_npz.to_path_buf(),
            key,
            shape: mel.shape,
            n_mels: hp.n_mels as usize,
        });
    }
    let tokens = read_tiktoken(tiktoken)?;

    progress.set_length(total);
    progress.set_position(0);
    let out_file = File::create(out).map_err(io_err("create", out))?;
    let mut w = BufWriter::with_capacity(1 << 20, out_file);
    let werr = io_err("write", out);
    let put_i32 = |w: &mut BufWriter<File>, v: i64| -> io::Result<()> {
        w.write_all(&(v as i32).to_le_bytes())
    };

    (|| -> io::Result<()> {
        put_i32(&mut w, GGML_MAGIC as i64)?;
        for v in [
            hp.n_vocab,
            hp.n_audio_ctx,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer,
            hp.n_text_ctx,
            hp.n_text_state,
            hp.n_text_head,
            hp.n_text_layer,
            hp.n_mels,
        ] {
            put_i32(&mut w, v as i64)?;
        }
        put_i32(&mut w, 1)?; // ftype: f16
        put_i32(&mut w, mel.shape[0] as i64)?;
        put_i32(&mut w, mel.shape[1] as i64)?;
        for x in &mel.data {
            w.write_all(&x.to_le_bytes())?;
        }
        put_i32(&mut w, tokens.len() as i64)?;
        for t in &tokens {
            put_i32(&mut w, t.len() as i64)?;
            w.write_all(t)?;
        }
        Ok(())
    })()
    .map_err(&werr)?;

    for p in &plans {
        let v = idx.get(&p.src)?;
        let (mut shape, offset, nbytes) = match p.part {
            None => (v.shape.clone(), v.offset, v.nbytes),
            Some((k, n)) => {
                let mut s = v.shape.clone();
                s[0] /= n;
                let part = v.nbytes / n;
                (s, v.offset + k * part, part)
            }
        };
        // numpy `squeeze()`, then the conv-bias reshape to (n, 1).
        shape.retain(|&d| d != 1);
        if p.conv_bias && shape.len() == 1 {
            shape.push(1);
        }
        let to_f32 = p.f32 || shape.len() < 2;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(io_err("seek in", model_bin))?;
        let mut raw = vec![0u8; nbytes as usize];
        reader
            .read_exact(&mut raw)
            .map_err(io_err("read", model_bin))?;
        let data = convert_data(raw, v.dtype, to_f32);
        debug_assert_eq!(
            data.len() as u64,
            v.elements() / p.part.map_or(1, |(_, n)| n) * if to_f32 { 4 } else { 2 }
        );

        (|| -> io::Result<()> {
            put_i32(&mut w, shape.len() as i64)?;
            put_i32(&mut w, p.name.len() as i64)?;
            put_i32(&mut w, if to_f32 { 0 } else { 1 })?;
            for d in shape.iter().rev() {
                put_i32(&mut w, *d as i64)?;
            }
            w.write_all(p.name.as_bytes())?;
            w.write_all(&data)
        })()
        .map_err(&werr)?;
        progress.inc(nbytes);
    }
    let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    file.sync_all().map_err(io_err("sync", out))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::models::npy::tests::npy_bytes;
    use std::io::Cursor as IoCursor;

    /// Writes a CTranslate2 version-6 file.
    struct Ct2Builder {
        vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
        aliases: Vec<(String, String)>,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    impl Ct2Builder {
        fn new() -> Self {
            Self {
                vars: Vec::new(),
                aliases: Vec::new(),
            }
        }

        /// An f16 variable whose elements count up from `start` (as halves).
        fn f16(&mut self, name: &str, shape: &[u32], start: f32) {
            let n: u32 = shape.iter().product();
            let data = (0..n)
                .flat_map(|i| f32_to_f16(start + i as f32).to_le_bytes())
                .collect();
            self.vars.push((name.into(), shape.to_vec(), 4, data));
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&6u32.to_le_bytes());
            put_str(&mut out, "WhisperSpec");
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            let mut vars = self.vars.clone();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, shape, dtype, data) in &vars {
                put_str(&mut out, name);
                out.push(shape.len() as u8);
                for d in shape {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.push(*dtype);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (a, t) in &self.aliases {
                put_str(&mut out, a);
                put_str(&mut out, t);
            }
            out
        }
    }

    /// A one-layer Whisper with d = 4, 2 mels, vocab 3.
    fn tiny_whisper() -> Ct2Builder {
        let d = 4;
        let mut b = Ct2Builder::new();
        b.vars.push((
            "encoder/num_heads".into(),
            vec![],
            2,
            2i16.to_le_bytes().to_vec(),
        ));
        b.vars.push((
            "decoder/num_heads".into(),
            vec![],
            2,
            2i16.to_le_bytes().to_vec(),
        ));
        b.f16("encoder/position_encodings/encodings", &[5, d], 0.0);
        b.f16("decoder/position_encodings/encodings", &[6, d], 0.0);
        b.f16("decoder/embeddings/weight", &[3, d], 0.0);
        b.f16("encoder/conv1/weight", &[d, 2, 3], 0.0);
        b.f16("encoder/conv1/bias", &[d], 0.0);
        b.f16("encoder/conv2/weight", &[d, d, 3], 0.0);
        b.f16("encoder/conv2/bias", &[d], 0.0);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            b.f16(
                &format!("{l}/self_attention/linear_0/weight"),
                &[3 * d, d],
                0.0,
            );
            b.f16(
                &format!("{l}/self_attention/linear_0/bias"),
                &[3 * d],
                100.0,
            );
            b.f16(&format!("{l}/self_attention/linear_1/weight"), &[d, d], 0.0);
            b.f16(&format!("{l}/self_attention/linear_1/bias"), &[d], 0.0);
            for n in ["self_attention/layer_norm", "ffn/layer_norm"] {
                b.f16(&format!("{l}/{n}/gamma"), &[d], 1.0);
                b.f16(&format!("{l}/{n}/beta"), &[d], 0.0);
            }
            b.f16(&format!("{l}/ffn/linear_0/weight"), &[2 * d, d], 0.0);
            b.f16(&format!("{l}/ffn/linear_0/bias"), &[2 * d], 0.0);
            b.f16(&format!("{l}/ffn/linear_1/weight"), &[d, 2 * d], 0.0);
            b.f16(&format!("{l}/ffn/linear_1/bias"), &[d], 0.0);
            b.f16(&format!("{side}/layer_norm/gamma"), &[d], 1.0);
            b.f16(&format!("{side}/layer_norm/beta"), &[d], 0.0);
        }
        let l = "decoder/layer_0/attention";
        b.f16(&format!("{l}/linear_0/weight"), &[d, d], 0.0);
        b.f16(&format!("{l}/linear_0/bias"), &[d], 0.0);
        b.f16(&format!("{l}/linear_1/weight"), &[2 * d, d], 0.0);
        b.f16(&format!("{l}/linear_1/bias"), &[2 * d], 0.0);
        b.f16(&format!("{l}/linear_2/weight"), &[d, d], 0.0);
        b.f16(&format!("{l}/linear_2/bias"), &[d], 0.0);
        b.f16(&format!("{l}/layer_norm/gamma"), &[d], 1.0);
        b.f16(&format!("{l}/layer_norm/beta"), &[d], 0.0);
        b.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        b
    }

    fn index(bytes: &[u8]) -> Result<Ct2Index, ConvertError> {
        read_ct2_index(
            &mut IoCursor::new(bytes),
            bytes.len() as u64,
            Path::new("model.bin"),
        )
    }

    #[test]
    fn f16_round_trips() {
        for h in [
            0u16, 0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0x8001, 0x3555,
        ] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h, "{h:#x}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds up to inf
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie to even
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    }

    #[test]
    fn base64_is_read_like_python() {
        assert_eq!(decode_base64_lenient("IQ==").unwrap(), b"!");
        assert_eq!(decode_base64_lenient("=").unwrap(), b"");
        assert_eq!(decode_base64_lenient("aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64_lenient("Q").is_err());
    }

    #[test]
    fn reads_synthetic_index() {
        let bytes = tiny_whisper().build();
        let idx = index(&bytes).unwrap();
        assert_eq!(idx.spec, "WhisperSpec");
        assert_eq!(idx.revision, 3);
        let v = &idx.variables["encoder/conv1/weight"];
        assert_eq!(v.shape, vec![4, 2, 3]);
        assert_eq!(v.dtype, Ct2Dtype::F16);
        assert_eq!(v.nbytes, 48);
        assert_eq!(
            idx.get("decoder/projection/weight").unwrap().name,
            "decoder/embeddings/weight"
        );
        let hp = whisper_hparams(&idx).unwrap();
        assert_eq!(
            hp,
            WhisperHparams {
                n_vocab: 3,
                n_audio_ctx: 5,
                n_audio_state: 4,
                n_audio_head: 2,
                n_audio_layer: 1,
                n_text_ctx: 6,
                n_text_state: 4,
                n_text_head: 2,
                n_text_layer: 1,
                n_mels: 2,
            }
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = tiny_whisper().build();
        // Cutting anywhere before the alias table must give an error, never
        // a panic; cutting inside a tensor names that tensor.
        let alias_start = bytes.len()
            - (4 + 2 * 2
                + "decoder/projection/weight".len()
                + 1
                + "decoder/embeddings/weight".len()
                + 1);
        for cut in (0..alias_start).step_by(7) {
            let err = index(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ConvertError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
        let mid = bytes.len() / 2;
        let msg = index(&bytes[..mid]).unwrap_err().to_string();
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn bad_version_and_dtype() {
        let mut bytes = tiny_whisper().build();
        bytes[0] = 5;
        assert!(matches!(
            index(&bytes),
            Err(ConvertError::BadVersion { found: 5, .. })
        ));
        let mut b = Ct2Builder::new();
        b.vars.push(("x".into(), vec![1], 9, vec![0]));
        let err = index(&b.build()).unwrap_err();
        assert!(
            matches!(&err, ConvertError::UnknownDtype { code: 9, name, .. } if name == "x"),
            "{err}"
        );
        let mut b = Ct2Builder::new();
        b.vars.push(("x".into(), vec![2], 4, vec![0; 3]));
        assert!(matches!(
            index(&b.build()),
            Err(ConvertError::Malformed { .. })
        ));
    }

    /// The bytes of a small CTranslate2 Whisper model.
    pub(crate) fn synthetic_model() -> Vec<u8> {
        tiny_whisper().build()
    }

    /// (mel_filters.npz, tiktoken) bytes matching [`synthetic_model`].
    pub(crate) fn synthetic_assets() -> (Vec<u8>, Vec<u8>) {
        let mut zw = zip::ZipWriter::new(IoCursor::new(Vec::new()));
        zw.start_file("mel_2.npy", zip::write::SimpleFileOptions::default())
            .unwrap();
        let vals: Vec<u8> = [0.25f32, 0.5, 0.75, 1.0, 1.25, 1.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        zw.write_all(&npy_bytes("<f4", false, &[2, 3], &vals))
            .unwrap();
        let npz = zw.finish().unwrap().into_inner();
        (npz, b"IQ== 0\nIg== 1\n\naGVsbG8= 2\nIQ== 3\n".to_vec())
    }

    fn write_assets(dir: &Path) -> (PathBuf, PathBuf) {
        let (npz_bytes, tok_bytes) = synthetic_assets();
        let npz = dir.join("mel_filters.npz");
        std::fs::write(&npz, npz_bytes).unwrap();
        let tok = dir.join("vocab.tiktoken");
        std::fs::write(&tok, tok_bytes).unwrap();
        (npz, tok)
    }

    #[test]
    fn converts_synthetic_model() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.bin");
        std::fs::write(&model, tiny_whisper().build()).unwrap();
        let (npz, tok) = write_assets(dir.path());
        let out = dir.path().join("ggml.bin");
        convert_ct2_whisper(&model, &npz, &tok, &out).unwrap();
        let b = std::fs::read(&out).unwrap();
        let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(i32_at(0) as u32, GGML_MAGIC);
        let hp: Vec<i32> = (1..=11).map(|k| i32_at(4 * k)).collect();
        assert_eq!(hp, vec![3, 5, 4, 2, 1, 6, 4, 2, 1, 2, 1]);
        assert_eq!((i32_at(48), i32_at(52)), (2, 3));
        assert_eq!(f32::from_le_bytes(b[56..60].try_into().unwrap()), 0.25);
        let mut o = 56 + 24;
        assert_eq!(i32_at(o), 3); // duplicate "!" dropped
        o += 4;
        let mut toks = Vec::new();
        for _ in 0..3 {
            let n = i32_at(o) as usize;
            toks.push(b[o + 4..o + 4 + n].to_vec());
            o += 4 + n;
        }
        assert_eq!(toks, vec![b"!".to_vec(), b"\"".to_vec(), b"hello".to_vec()]);
        // Walk the tensors.
        let mut names = Vec::new();
        while o < b.len() {
            let (nd, nl, ty) = (i32_at(o), i32_at(o + 4) as usize, i32_at(o + 8));
            o += 12;
            let dims: Vec<i32> = (0..nd as usize).map(|k| i32_at(o + 4 * k)).collect();
            o += 4 * nd as usize;
            let name = String::from_utf8(b[o..o + nl].to_vec()).unwrap();
            o += nl;
            let n: i32 = dims.iter().product();
            let esz = if ty == 0 { 4 } else { 2 };
            if name == "encoder.blocks.0.attn.value.bias" {
                // Third slice of the fused bias (100 + 8 ..).
                assert_eq!(ty, 0);
                assert_eq!(f32::from_le_bytes(b[o..o + 4].try_into().unwrap()), 108.0);
            }
            if name == "encoder.conv1.bias" {
                assert_eq!((dims.clone(), ty), (vec![1, 4], 0));
            }
            if name == "encoder.conv1.weight" {
                assert_eq!((dims.clone(), ty), (vec![3, 2, 4], 1));
            }
            o += n as usize * esz;
            names.push(name);
        }
        assert_eq!(o, b.len());
        assert_eq!(names[0], "encoder.positional_embedding");
        assert!(!names.iter().any(|n| n.ends_with("key.bias")));
        assert!(names.contains(&"decoder.blocks.0.cross_attn.value.weight".to_string()));
        assert_eq!(names.last().unwrap(), "decoder.ln.bias");
        assert_eq!(names.len(), 5 + 15 + 2 + 2 + 24 + 2);
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (npz, tok) = write_assets(dir.path());
        let out = dir.path().join("ggml.bin");
        let model = dir.path().join("model.bin");

        let mut b = tiny_whisper();
        b.vars
            .retain(|v| v.0 != "decoder/layer_0/attention/linear_2/weight");
        std::fs::write(&model, b.build()).unwrap();
        let err = convert_ct2_whisper(&model, &npz, &tok, &out).unwrap_err();
        assert!(
            err.to_string()
                .contains("decoder/layer_0/attention/linear_2/weight"),
            "{err}"
        );

        // n_mels = 3 has no `mel_3` in the archive.
        let mut b = tiny_whisper();
        for v in &mut b.vars {
            if v.0 == "encoder/conv1/weight" {
                v.1 = vec![4, 3, 3];
                v.3 = vec![0; 72];
            }
        }
        std::fs::write(&model, b.build()).unwrap();
        let err = convert_ct2_whisper(&model, &npz, &tok, &out).unwrap_err();
        assert!(err.to_string().contains("mel_3"), "{err}");

        // Truncated file.
        let bytes = tiny_whisper().build();
        std::fs::write(&model, &bytes[..bytes.len() - 100]).unwrap();
        let err = convert_ct2_whisper(&model, &npz, &tok, &out).unwrap_err();
        assert!(matches!(err, ConvertError::Truncated { .. }), "{err}");

        // Quantized weights.
        let mut b = tiny_whisper();
        for v in &mut b.vars {
            if v.0 == "encoder/conv2/weight" {
                v.2 = 1;
                v.3.truncate(v.3.len() / 2);
            }
        }
        std::fs::write(&model, b.build()).unwrap();
        let err = convert_ct2_whisper(&model, &npz, &tok, &out).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnsupportedDtype { .. }),
            "{err}"
        );

        // Bad tokenizer line.
        std::fs::write(&model, tiny_whisper().build()).unwrap();
        std::fs::write(&tok, "IQ== 0\nQ 1\n").unwrap();
        let err = convert_ct2_whisper(&model, &npz, &tok, &out).unwrap_err();
        assert!(
            matches!(err, ConvertError::Tokenizer { line: 2, .. }),
            "{err}"
        );
    }
}

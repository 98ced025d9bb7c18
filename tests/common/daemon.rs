//! A `voice-edge serve` process for integration tests: its own config in a
//! temporary directory (loopback SIP and HTTP on free ports, its own RTP
//! range and spool), started, waited for, signalled and read back.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any number from loopback goes to the retail flow; a person is reached by REFER.
const DEFAULT_TRUNK: &str = r#"[[sip.trunk]]
name = "loopback"
sources = ["127.0.0.0/8"]
numbers = { "*" = "retail" }
transfer_target = "sip:operator@127.0.0.1:5999""#;

pub struct Daemon {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub rtp_ports: (u16, u16),
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
}

/// A UDP and TCP port free on loopback right now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A media port for SIPp's `-mp`: SIPp binds it and the next three (RTCP,
/// video RTP and RTCP), so all four must be free.
pub fn sipp_media_port() -> u16 {
    free_rtp_range(2).0
}

/// An even RTP range of `pairs` pairs, all free now.
pub fn free_rtp_range(pairs: u16) -> (u16, u16) {
    // Successive calls walk on through the range, so ranges handed out in
    // one test process never overlap even before anyone binds them.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(pairs) * 2;
    let offset = (std::process::id() % 1_000) * 20;
    loop {
        let walked = NEXT.fetch_add(span, std::sync::atomic::Ordering::SeqCst);
        let base = (30_000 + (offset + walked) % 30_000) & !1;
        let base = base as u16;
        let hi = base + pairs * 2 - 1;
        if (base..=hi).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return (base, hi);
        }
    }
}

impl Daemon {
    /// Starts `voice-edge serve` with the embedded defaults, loopback
    /// sockets, `extra_sip` keys inside `[sip]` and `extra` sections at the
    /// end (with `[[sip.trunk]]` in `extra` replacing the default loopback
    /// trunk), and waits until it says it is ready (models loaded, sockets
    /// bound).
    pub fn start(extra_sip: &str, extra: &str) -> Daemon {
        Self::start_with(extra_sip, "", extra, &[])
    }

    /// As [`Daemon::start`], with `extra_collector` keys inside `[collector]`
    /// and extra environment variables.
    pub fn start_with(extra_sip: &str, extra_collector: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let sip_port = free_port();
        let http_port = free_port();
        let rtp = free_rtp_range(24);
        let config = format!(
            r#"[node]
id = "test-node"
drain_deadline_s = 5

[sip]
listen_udp = "127.0.0.1:{sip_port}"
listen_tcp = "127.0.0.1:{sip_port}"
rtp_ports = [{}, {}]
max_calls = 24
{extra_sip}

{trunk}

[http]
listen = "127.0.0.1:{http_port}"

[collector]
spool_dir = "{}"
{extra_collector}

{extra}
"#,
            rtp.0,
            rtp.1,
            dir.path().join("spool").display(),
            trunk = if extra.contains("[[sip.trunk]]") { "" } else { DEFAULT_TRUNK },
        );
        let path = dir.path().join("voice-edge.toml");
        std::fs::write(&path, config).expect("write the test config");
        let mut d = Daemon {
            child: None,
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            rtp_ports: rtp,
            dir,
            log: Arc::new(Mutex::new(String::new())),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        d.spawn();
        d
    }

    /// Starts the process on this daemon's config (again, after a kill) and
    /// waits until it says it is ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voice-edge"));
        cmd.args(["--config", self.config_path().to_str().unwrap(), "serve"])
            .env("RUST_LOG", "info,voice_edge=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start voice-edge serve");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("voice-edge ready") {
                    let _ = ready_tx.send(());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("voice-edge serve exited ({status}) before it was ready:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "voice-edge serve not ready after 180 s:\n{}", self.logs());
        }
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("voice-edge.toml")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (or panics after `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log after {timeout:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().expect("kill").success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait(timeout)
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("voice-edge did not exit within {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The outcome events in the spool, as JSON.
    pub fn outcome_events(&self) -> Vec<serde_json::Value> {
        read_spool(&self.spool_dir())
    }
}

pub fn read_spool(dir: &Path) -> Vec<serde_json::Value> {
    let (mut spool, _) = voice_edge::outcome::Spool::open_read_only(dir).expect("open the spool read-only");
    spool
        .read_from(0, usize::MAX)
        .expect("read the spool")
        .into_iter()
        .map(|(_, payload)| serde_json::from_slice(&payload).expect("spool records are JSON"))
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read HTTP response");
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

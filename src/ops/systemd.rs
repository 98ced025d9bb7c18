//! systemd integration without libsystemd: the `sd_notify` protocol and a
//! watchdog that pings only while the node is provably alive.
//!
//! [`notify`] (or a [`Notifier`], to handle errors) sends `READY=1`,
//! `STATUS=...`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1` and
//! `EXTEND_TIMEOUT_USEC=...` as one datagram to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract socket written with a leading
//! `@`). With no `$NOTIFY_SOCKET` (not started by systemd, or not
//! `Type=notify`) every call is a no-op that returns false.
//!
//! Reloading: `RELOADING=1` is sent together with `MONOTONIC_USEC=<now>`
//! (CLOCK_MONOTONIC). systemd >= 253 requires that field for
//! `Type=notify-reload` and uses it to tell this reload from a stale one;
//! older versions ignore it. The unit uses `Type=notify` with `ExecReload`
//! sending SIGHUP, which works on systemd 252 (Debian 12) too.
//!
//! Watchdog: [`watchdog_interval`] reads `$WATCHDOG_USEC`/`$WATCHDOG_PID`
//! and returns half the timeout (systemd's advice). [`Watchdog`] pings only
//! when a [`LivenessProbe`] passes, e.g. a [`HeartbeatProbe`] whose loops
//! have each beaten since the last check; a wedged engine or media loop
//! therefore stops the pings and systemd restarts the node. `vsock:`
//! notify addresses (systemd >= 254, VMs) are not supported.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is not an absolute path or an @abstract name")]
    UnsupportedAddress(OsString),
    #[error("NOTIFY_SOCKET {path:?}: {source}")]
    Socket { path: OsString, source: io::Error },
    #[error("notify field {0:?} contains a line feed or a NUL")]
    BadField(String),
    #[error("{var}={value:?} is not valid: {reason}")]
    BadWatchdogEnv { var: &'static str, value: String, reason: &'static str },
}

/// One field of a notify message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up (or a reload) finished: models loaded, sockets bound.
    Ready,
    /// Free-form status shown by `systemctl status` (one line).
    Status(&'a str),
    /// Reloading the configuration; send [`State::Ready`] when done. Sent as
    /// `RELOADING=1` plus `MONOTONIC_USEC=<now>` (systemd >= 253 wants it).
    Reloading,
    /// Shutting down (draining calls).
    Stopping,
    /// Watchdog keep-alive.
    Watchdog,
    /// Asks for this much more time than `TimeoutStartSec`/`TimeoutStopSec`
    /// allows, counted from now (e.g. while a large model loads).
    ExtendTimeout(Duration),
}

impl State<'_> {
    fn encode(&self, now_monotonic_usec: u64, out: &mut String) -> Result<(), NotifyError> {
        match self {
            State::Ready => out.push_str("READY=1\n"),
            State::Status(s) => {
                if s.contains(['\n', '\0']) {
                    return Err(NotifyError::BadField((*s).to_owned()));
                }
                out.push_str(&format!("STATUS={s}\n"));
            }
            State::Reloading => out.push_str(&format!("RELOADING=1\nMONOTONIC_USEC={now_monotonic_usec}\n")),
            State::Stopping => out.push_str("STOPPING=1\n"),
            State::Watchdog => out.push_str("WATCHDOG=1\n"),
            State::ExtendTimeout(d) => out.push_str(&format!("EXTEND_TIMEOUT_USEC={}\n", d.as_micros().min(u128::from(u64::MAX)))),
        }
        Ok(())
    }
}

/// The message for `states`, as sent: `KEY=VALUE` lines; `now_monotonic_usec`
/// is what `Reloading` carries as `MONOTONIC_USEC`.
pub fn encode_message(states: &[State<'_>], now_monotonic_usec: u64) -> Result<String, NotifyError> {
    let mut out = String::new();
    for s in states {
        s.encode(now_monotonic_usec, &mut out)?;
    }
    Ok(out)
}

/// Sends `states` to `$NOTIFY_SOCKET` as one message, for callers that
/// cannot act on a failure: a failure is logged (WARN) and returns false;
/// no `$NOTIFY_SOCKET` returns false silently. Use [`Notifier`] to handle
/// errors yourself.
pub fn notify(states: &[State<'_>]) -> bool {
    match Notifier::from_env().and_then(|n| n.notify(states)) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd");
            false
        }
    }
}

/// CLOCK_MONOTONIC now, in microseconds (what `MONOTONIC_USEC` wants).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// A connection to systemd's notify socket, or nothing (all calls no-ops).
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: OsString,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; disabled when it is unset or empty.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) {
            Some(addr) => Notifier::to_socket(&addr),
            None => Ok(Notifier::disabled()),
        }
    }

    /// To the socket `addr` names, in `$NOTIFY_SOCKET` syntax: an absolute
    /// path, or `@name` for an abstract socket.
    pub fn to_socket(addr: impl AsRef<OsStr>) -> Result<Notifier, NotifyError> {
        let name = addr.as_ref().to_owned();
        let bytes = name.as_bytes();
        let sock_err = |source| NotifyError::Socket { path: name.clone(), source };
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&name)).map_err(sock_err)?,
            Some(b'@') if bytes.len() > 1 => SocketAddr::from_abstract_name(&bytes[1..]).map_err(sock_err)?,
            _ => return Err(NotifyError::UnsupportedAddress(name)),
        };
        let socket = UnixDatagram::unbound().map_err(sock_err)?;
        Ok(Notifier { target: Some(Target { socket, addr, name }) })
    }

    /// Sends nothing, ever.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `states` as one datagram. `Ok(false)` when disabled.
    pub fn notify(&self, states: &[State<'_>]) -> Result<bool, NotifyError> {
        let message = encode_message(states, monotonic_usec())?;
        let Some(t) = &self.target else {
            return Ok(false);
        };
        t.socket.send_to_addr(message.as_bytes(), &t.addr).map_err(|source| NotifyError::Socket { path: t.name.clone(), source })?;
        Ok(true)
    }

    pub fn watchdog(&self) -> Result<bool, NotifyError> {
        self.notify(&[State::Watchdog])
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, if the
/// watchdog is on and meant for this process (`$WATCHDOG_PID` unset or ours).
/// A malformed value is logged (ERROR) and treated as no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "systemd watchdog disabled");
        None
    })
}

/// [`watchdog_interval`] from given values (testable without the process env).
pub fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |var, value: &str, reason| NotifyError::BadWatchdogEnv { var, value: value.into(), reason };
    let micros: u64 = usec.parse().map_err(|_| bad("WATCHDOG_USEC", usec, "not a number of microseconds"))?;
    if micros == 0 {
        return Err(bad("WATCHDOG_USEC", usec, "must be > 0"));
    }
    if let Some(pid) = pid.filter(|v| !v.is_empty()) {
        let pid: u32 = pid.parse().map_err(|_| bad("WATCHDOG_PID", pid, "not a process id"))?;
        if pid != my_pid {
            return Ok(None);
        }
    }
    Ok(Some(Duration::from_micros(micros / 2)))
}

/// Proof that the node's loops are alive. `Err` names what is stuck.
pub trait LivenessProbe: Send {
    fn check(&mut self) -> Result<(), String>;
}

impl<F: FnMut() -> Result<(), String> + Send> LivenessProbe for F {
    fn check(&mut self) -> Result<(), String> {
        self()
    }
}

/// A counter a loop advances on every iteration (also when idle: a loop
/// that blocks on an empty queue must wake with a timeout shorter than the
/// watchdog interval and beat).
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Passes when every watched heartbeat advanced since the previous check.
#[derive(Debug, Default)]
pub struct HeartbeatProbe {
    watched: Vec<(String, Arc<Heartbeat>, u64)>,
}

impl HeartbeatProbe {
    pub fn new() -> Self {
        HeartbeatProbe::default()
    }

    /// Watches `beat` under `name` (e.g. "engine.asr", "media"). The first
    /// check needs a beat after this call.
    pub fn watch(mut self, name: impl Into<String>, beat: Arc<Heartbeat>) -> Self {
        let seen = beat.count();
        self.watched.push((name.into(), beat, seen));
        self
    }
}

impl LivenessProbe for HeartbeatProbe {
    fn check(&mut self) -> Result<(), String> {
        let mut stuck = Vec::new();
        for (name, beat, seen) in &mut self.watched {
            let now = beat.count();
            if now == *seen {
                stuck.push(name.as_str());
            }
            *seen = now;
        }
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!("no heartbeat from {}", stuck.join(", ")))
        }
    }
}

/// What one watchdog tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogTick {
    /// The probe passed and `WATCHDOG=1` was sent (or notify is disabled).
    Pinged,
    /// The probe failed: no ping; systemd restarts the node if this lasts
    /// past `WatchdogSec`.
    Withheld(String),
    /// The probe passed but the ping could not be sent.
    SendFailed(String),
}

/// Pings systemd's watchdog only while a [`LivenessProbe`] passes.
pub struct Watchdog<P: LivenessProbe> {
    notifier: Arc<Notifier>,
    probe: P,
    failing: bool,
}

impl<P: LivenessProbe> Watchdog<P> {
    pub fn new(notifier: Arc<Notifier>, probe: P) -> Self {
        Watchdog { notifier, probe, failing: false }
    }

    /// One check-then-ping; logs the first failure of a run and the recovery.
    pub fn tick(&mut self) -> WatchdogTick {
        match self.probe.check() {
            Ok(()) => {
                if self.failing {
                    tracing::info!("watchdog: liveness restored, pinging again");
                    self.failing = false;
                }
                match self.notifier.watchdog() {
                    Ok(_) => WatchdogTick::Pinged,
                    Err(e) => WatchdogTick::SendFailed(e.to_string()),
                }
            }
            Err(reason) => {
                if !self.failing {
                    tracing::error!(%reason, "watchdog: liveness probe failed, withholding WATCHDOG=1");
                    self.failing = true;
                }
                WatchdogTick::Withheld(reason)
            }
        }
    }

    /// Ticks every `interval` until `shutdown` completes (a tokio task).
    pub async fn run(mut self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = timer.tick() => {
                    if let WatchdogTick::SendFailed(e) = self.tick() {
                        tracing::warn!(error = %e, "watchdog: cannot notify systemd");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound notify socket in a temp dir, standing in for systemd.
    struct FakeSystemd {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        socket: UnixDatagram,
    }

    impl FakeSystemd {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            FakeSystemd { _dir: dir, path, socket }
        }
        fn notifier(&self) -> Notifier {
            Notifier::to_socket(&self.path).unwrap()
        }
        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a notify datagram");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
        fn assert_nothing_pending(&self) {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let r = self.socket.recv(&mut buf);
            assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock), "unexpected datagram");
            self.socket.set_nonblocking(false).unwrap();
        }
    }

    #[test]
    fn ready_status_stopping_watchdog_reach_the_socket() {
        let sd = FakeSystemd::new();
        let n = sd.notifier();
        assert!(n.is_enabled());
        assert!(n.notify(&[State::Ready, State::Status("serving: 0 calls")]).unwrap());
        assert_eq!(sd.recv(), "READY=1\nSTATUS=serving: 0 calls\n");
        n.notify(&[State::Status("draining 3 calls")]).unwrap();
        assert_eq!(sd.recv(), "STATUS=draining 3 calls\n");
        n.notify(&[State::Stopping]).unwrap();
        assert_eq!(sd.recv(), "STOPPING=1\n");
        n.watchdog().unwrap();
        assert_eq!(sd.recv(), "WATCHDOG=1\n");
        n.notify(&[State::ExtendTimeout(Duration::from_secs(90))]).unwrap();
        assert_eq!(sd.recv(), "EXTEND_TIMEOUT_USEC=90000000\n");
    }

    #[test]
    fn every_state_encodes_as_systemd_expects() {
        let all = [
            State::Ready,
            State::Status("ok"),
            State::Reloading,
            State::Stopping,
            State::Watchdog,
            State::ExtendTimeout(Duration::from_millis(1500)),
        ];
        assert_eq!(
            encode_message(&all, 42).unwrap(),
            "READY=1\nSTATUS=ok\nRELOADING=1\nMONOTONIC_USEC=42\nSTOPPING=1\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=1500000\n"
        );
        assert!(matches!(encode_message(&[State::Status("a\0b")], 0), Err(NotifyError::BadField(_))));
    }

    #[test]
    fn reloading_carries_a_current_monotonic_timestamp() {
        let sd = FakeSystemd::new();
        let before = monotonic_usec();
        sd.notifier().notify(&[State::Reloading]).unwrap();
        let after = monotonic_usec();
        let msg = sd.recv();
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines.next().unwrap().strip_prefix("MONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!(before <= usec && usec <= after, "{before} <= {usec} <= {after}");
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        let name = format!("voice-edge-test-{}-{}", std::process::id(), monotonic_usec());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::to_socket(format!("@{name}")).unwrap().notify(&[State::Ready]).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_says_so() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert!(!n.notify(&[State::Ready]).unwrap());
        assert!(!n.watchdog().unwrap());
    }

    #[test]
    fn bad_addresses_and_fields_are_errors() {
        assert!(matches!(Notifier::to_socket("relative/path"), Err(NotifyError::UnsupportedAddress(_))));
        assert!(matches!(Notifier::to_socket("vsock:2:1234"), Err(NotifyError::UnsupportedAddress(_))));
        assert!(matches!(Notifier::to_socket("@"), Err(NotifyError::UnsupportedAddress(_))));
        let sd = FakeSystemd::new();
        let err = sd.notifier().notify(&[State::Ready, State::Status("two\nlines")]).unwrap_err();
        assert!(matches!(err, NotifyError::BadField(_)));
        sd.assert_nothing_pending();
        // Nobody listening: the send fails and says where.
        let gone = sd.path.with_file_name("nobody");
        let e = Notifier::to_socket(&gone).unwrap().notify(&[State::Ready]).unwrap_err();
        assert!(e.to_string().contains("nobody"), "{e}");
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_pid() {
        let f = watchdog_interval_from;
        assert_eq!(f(Some("30000000"), None, 42).unwrap(), Some(Duration::from_secs(15)));
        assert_eq!(f(Some("30000000"), Some("42"), 42).unwrap(), Some(Duration::from_secs(15)));
        assert_eq!(f(Some("30000000"), Some("43"), 42).unwrap(), None, "meant for another process");
        assert_eq!(f(None, Some("42"), 42).unwrap(), None);
        assert_eq!(f(Some(""), None, 42).unwrap(), None);
        assert!(f(Some("0"), None, 42).is_err());
        assert!(f(Some("30s"), None, 42).is_err());
        assert!(f(Some("1000"), Some("x"), 42).is_err());
    }

    #[test]
    fn heartbeat_probe_fails_until_every_loop_beats() {
        let engine = Arc::new(Heartbeat::default());
        let media = Arc::new(Heartbeat::default());
        let mut probe = HeartbeatProbe::new().watch("engine", engine.clone()).watch("media", media.clone());
        assert_eq!(probe.check(), Err("no heartbeat from engine, media".into()));
        engine.beat();
        assert_eq!(probe.check(), Err("no heartbeat from media".into()));
        engine.beat();
        media.beat();
        assert_eq!(probe.check(), Ok(()));
        // Beats are consumed: no new beats, no pass.
        assert_eq!(probe.check(), Err("no heartbeat from engine, media".into()));
    }

    #[test]
    fn watchdog_pings_only_while_the_probe_passes() {
        let sd = FakeSystemd::new();
        let beat = Arc::new(Heartbeat::default());
        let probe = HeartbeatProbe::new().watch("engine", beat.clone());
        let mut wd = Watchdog::new(Arc::new(sd.notifier()), probe);
        assert_eq!(wd.tick(), WatchdogTick::Withheld("no heartbeat from engine".into()));
        sd.assert_nothing_pending();
        beat.beat();
        assert_eq!(wd.tick(), WatchdogTick::Pinged);
        assert_eq!(sd.recv(), "WATCHDOG=1\n");
        assert!(matches!(wd.tick(), WatchdogTick::Withheld(_)));
        sd.assert_nothing_pending();
    }

    #[test]
    fn watchdog_accepts_a_closure_probe() {
        let sd = FakeSystemd::new();
        let mut alive = true;
        let mut wd = Watchdog::new(Arc::new(sd.notifier()), move || {
            let r = if alive { Ok(()) } else { Err("engine loop stalled".to_owned()) };
            alive = !alive;
            r
        });
        assert_eq!(wd.tick(), WatchdogTick::Pinged);
        assert_eq!(sd.recv(), "WATCHDOG=1\n");
        assert_eq!(wd.tick(), WatchdogTick::Withheld("engine loop stalled".into()));
        sd.assert_nothing_pending();
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_task_pings_every_interval_and_stops_on_shutdown() {
        let sd = FakeSystemd::new();
        let beat = Arc::new(Heartbeat::default());
        let beat_in = beat.clone();
        // Beat before each check, as a live loop would.
        let probe = move || {
            beat_in.beat();
            Ok(())
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Watchdog::new(Arc::new(sd.notifier()), probe).run(Duration::from_secs(15), async {
            let _ = stop_rx.await;
        }));
        // The first tick is immediate, then one every 15 s: t = 0, 15, 30.
        tokio::time::sleep(Duration::from_secs(31)).await;
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(beat.count(), 3);
        for _ in 0..3 {
            assert_eq!(sd.recv(), "WATCHDOG=1\n");
        }
        sd.assert_nothing_pending();
    }
}

//! The SIP edge of the daemon: UDP and TCP sockets around the sans-IO
//! [`Uas`], RTP port allocation, admission, and one driver task per call
//! ([`call`]).
//!
//! One task owns the `Uas` and the SIP sockets. It feeds received datagrams
//! and stream messages to the `Uas`, sends what it emits, and turns its
//! events into calls: an `IncomingCall` is admitted (engine not saturated,
//! a port pair free, the flow known), its SDP offer negotiated (488 with a
//! Warning when no codec matches), answered, and handed to a new call task
//! with its RTP sockets. Call tasks talk back through a channel (hang up,
//! transfer, ended); the server never blocks on them.
//!
//! TCP: each connection has a reader task and a writer task that move
//! bytes; the `Uas` frames the stream, answers malformed messages and
//! keep-alive pings, and says when a stream cannot be framed any more (the
//! connection is then closed).

pub mod call;
mod ports;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use self::call::{SipCallContext, ToCall};
use self::ports::RtpPorts;
use super::daemon::{DaemonError, Node};
use super::node_metrics;
use crate::ops::metrics::Channel as MetricsChannel;
use crate::ops::network_config::{parse_cidr, SipConfig};
use crate::media::codec::CodecKind;
use crate::proto::sdp::{self, LocalMedia};
use crate::proto::sip::{
    ConnId, DigestCredentials, Received, SipCallId, Timers, TransportKind, Trunk, Uas, UasConfig, UasEvent, UasOutput,
};

/// Commands from the daemon.
pub enum SipControl {
    /// Stop taking calls; hang up what is left after `deadline`; report on `done`.
    Drain { deadline: Duration, done: oneshot::Sender<()> },
    /// New trunks and limits for new calls.
    Reload(Box<SipConfig>),
}

/// What call tasks tell the server.
#[derive(Debug)]
pub enum FromCall {
    /// The agent hangs up (BYE).
    Hangup(SipCallId),
    /// Hand the caller to `target` (REFER).
    Refer(SipCallId, String),
    /// The task is done; its ports can be reused.
    Ended(SipCallId),
    /// The ring time of a call is over: answer it.
    AnswerDue(SipCallId),
}

enum TcpIn {
    Data { conn: ConnId, from: SocketAddr, bytes: Vec<u8> },
    Closed { conn: ConnId },
}

struct CallEntry {
    tx: mpsc::UnboundedSender<ToCall>,
    rtp_port: u16,
    /// The SDP session version of our last answer (RFC 3264 §8).
    media_version: u64,
    /// Until answered: the driver's context and the call's log span.
    ringing: Option<(SipCallContext, tracing::Span)>,
}

pub struct SipServer {
    node: Arc<Node>,
    uas: Uas,
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<TcpListener>,
    media_ip: IpAddr,
    ports: RtpPorts,
    rtp_timeout: Duration,
    answer_after: Duration,
    calls: HashMap<u64, CallEntry>,
    from_calls_tx: mpsc::UnboundedSender<FromCall>,
    from_calls_rx: mpsc::UnboundedReceiver<FromCall>,
    control_rx: mpsc::Receiver<SipControl>,
    tcp_in_tx: mpsc::Sender<TcpIn>,
    tcp_in_rx: mpsc::Receiver<TcpIn>,
    tcp_writers: HashMap<ConnId, mpsc::UnboundedSender<Vec<u8>>>,
    next_conn: ConnId,
    draining: Option<Drain>,
    trunk_targets: HashMap<String, Option<String>>,
}

struct Drain {
    hang_up_at: Instant,
    hung_up: bool,
    done: oneshot::Sender<()>,
}

impl SipServer {
    /// Binds the configured sockets.
    pub async fn bind(node: Arc<Node>, cfg: &SipConfig) -> Result<(SipServer, mpsc::Sender<SipControl>), DaemonError> {
        let udp = match cfg.listen_udp {
            Some(addr) => Some(Arc::new(
                UdpSocket::bind(addr).await.map_err(|source| DaemonError::Bind { what: "SIP UDP", addr, source })?,
            )),
            None => None,
        };
        let tcp = match cfg.listen_tcp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind { what: "SIP TCP", addr, source })?),
            None => None,
        };
        if udp.is_none() && tcp.is_none() {
            return Err(DaemonError::Setup("sip: set listen_udp or listen_tcp".into()));
        }
        let first = cfg.listen_udp.or(cfg.listen_tcp).expect("one is set");
        let media_ip = match cfg.public_address {
            Some(ip) => ip,
            None if !first.ip().is_unspecified() => first.ip(),
            None => {
                return Err(DaemonError::Setup(format!(
                    "sip: listening on {first} (all interfaces): set sip.public_address to the address callers send media to"
                )))
            }
        };
        let local = udp.as_ref().and_then(|s| s.local_addr().ok()).or_else(|| tcp.as_ref().and_then(|s| s.local_addr().ok())).unwrap_or(first);
        let contact_addr = SocketAddr::new(media_ip, local.port());
        let uas_cfg = uas_config(cfg, contact_addr)?;
        let seed = seed();
        let (control_tx, control_rx) = mpsc::channel(8);
        let (from_calls_tx, from_calls_rx) = mpsc::unbounded_channel();
        let (tcp_in_tx, tcp_in_rx) = mpsc::channel(1024);
        let server = SipServer {
            node,
            uas: Uas::new(uas_cfg, seed),
            udp,
            tcp,
            media_ip,
            ports: RtpPorts::new(cfg.rtp_ports[0], cfg.rtp_ports[1]),
            rtp_timeout: Duration::from_secs(u64::from(cfg.rtp_timeout_s)),
            answer_after: Duration::from_millis(u64::from(cfg.answer_after_ms)),
            calls: HashMap::new(),
            from_calls_tx,
            from_calls_rx,
            control_rx,
            tcp_in_tx,
            tcp_in_rx,
            tcp_writers: HashMap::new(),
            next_conn: 1,
            draining: None,
            trunk_targets: trunk_targets(cfg),
        };
        Ok((server, control_tx))
    }

    pub fn local_addrs(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(a) = self.udp.as_ref().and_then(|s| s.local_addr().ok()) {
            v.push(format!("udp:{a}"));
        }
        if let Some(a) = self.tcp.as_ref().and_then(|s| s.local_addr().ok()) {
            v.push(format!("tcp:{a}"));
        }
        v
    }

    /// Serves until a drain completes.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let timer = self.uas.poll_timeout().map(tokio::time::Instant::from_std);
            let drain_at = self.draining.as_ref().filter(|d| !d.hung_up).map(|d| tokio::time::Instant::from_std(d.hang_up_at));
            tokio::select! {
                r = recv_udp(&self.udp, &mut buf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        self.uas.handle_received(now, Received { from, transport: TransportKind::Udp, conn: None, data: &buf[..n] });
                    }
                    Err(e) => tracing::warn!(error = %e, "SIP UDP receive failed"),
                },
                r = accept_tcp(&self.tcp) => match r {
                    Ok((stream, from)) => self.spawn_tcp(stream, from),
                    Err(e) => tracing::warn!(error = %e, "SIP TCP accept failed"),
                },
                Some(msg) = self.tcp_in_rx.recv() => match msg {
                    TcpIn::Data { conn, from, bytes } => {
                        self.uas.handle_received(Instant::now(), Received { from, transport: TransportKind::Tcp, conn: Some(conn), data: &bytes });
                        if self.uas.is_connection_unusable(conn) {
                            // Dropping the writer ends the writer task and closes our half.
                            self.tcp_writers.remove(&conn);
                        }
                    }
                    TcpIn::Closed { conn } => {
                        self.tcp_writers.remove(&conn);
                        self.uas.connection_closed(Instant::now(), conn);
                    }
                },
                Some(msg) = self.from_calls_rx.recv() => self.from_call(msg),
                Some(ctl) = self.control_rx.recv() => self.control(ctl),
                _ = sleep_until(timer) => self.uas.handle_timeout(Instant::now()),
                _ = sleep_until(drain_at) => self.hang_up_all("drain deadline"),
            }
            self.flush().await;
            if self.draining.is_some() && self.calls.is_empty() {
                // Let final BYE/200 exchanges finish briefly, then report.
                self.linger(Duration::from_millis(300), &mut buf).await;
                if let Some(d) = self.draining.take() {
                    let _ = d.done.send(());
                }
                return;
            }
        }
    }

    /// Keeps answering for a short while (retransmissions, ACKs) after the last call.
    async fn linger(&mut self, dur: Duration, buf: &mut [u8]) {
        let until = tokio::time::Instant::now() + dur;
        loop {
            let timer = self.uas.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = recv_udp(&self.udp, buf) => if let Ok((n, from)) = r {
                    self.uas.handle_received(Instant::now(), Received { from, transport: TransportKind::Udp, conn: None, data: &buf[..n] });
                },
                _ = sleep_until(timer) => self.uas.handle_timeout(Instant::now()),
                _ = tokio::time::sleep_until(until) => return,
            }
            self.flush().await;
        }
    }

    fn control(&mut self, ctl: SipControl) {
        match ctl {
            SipControl::Drain { deadline, done } => {
                self.uas.set_draining(true);
                self.draining = Some(Drain { hang_up_at: Instant::now() + deadline, hung_up: false, done });
            }
            SipControl::Reload(cfg) => {
                let contact = self.uas_contact();
                match uas_config(&cfg, contact) {
                    Ok(uas_cfg) => {
                        self.uas.set_config(uas_cfg);
                        self.trunk_targets = trunk_targets(&cfg);
                        self.rtp_timeout = Duration::from_secs(u64::from(cfg.rtp_timeout_s));
                        self.answer_after = Duration::from_millis(u64::from(cfg.answer_after_ms));
                        tracing::info!(trunks = cfg.trunks.len(), "SIP trunks reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "SIP reload refused; the running trunks stay"),
                }
            }
        }
    }

    fn uas_contact(&self) -> SocketAddr {
        let port = self.udp.as_ref().and_then(|s| s.local_addr().ok()).or_else(|| self.tcp.as_ref().and_then(|s| s.local_addr().ok())).map(|a| a.port()).unwrap_or(5060);
        SocketAddr::new(self.media_ip, port)
    }

    fn hang_up_all(&mut self, reason: &str) {
        if let Some(d) = self.draining.as_mut() {
            d.hung_up = true;
        }
        tracing::warn!(calls = self.calls.len(), reason, "hanging up the calls still in progress");
        let now = Instant::now();
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let ringing = self.calls.get(&id).is_some_and(|e| e.ringing.is_some());
            if ringing {
                self.uas.hangup(now, SipCallId(id));
                self.forget(SipCallId(id));
            } else if let Some(entry) = self.calls.get(&id) {
                let _ = entry.tx.send(ToCall::Hangup { reason: reason.to_string(), send_bye: true });
            }
        }
    }

    fn from_call(&mut self, msg: FromCall) {
        let now = Instant::now();
        match msg {
            FromCall::Hangup(call) => self.uas.hangup(now, call),
            FromCall::Refer(call, target) => self.uas.refer(now, call, &target),
            FromCall::Ended(call) => self.forget(call),
            FromCall::AnswerDue(call) => self.answer(call),
        }
    }

    /// Sends what the `Uas` emitted and acts on its events.
    async fn flush(&mut self) {
        while let Some(out) = self.uas.poll_output() {
            match out {
                UasOutput::Transmit { to, transport, conn, data } => self.transmit(to, transport, conn, data).await,
                UasOutput::Event(event) => self.event(event).await,
            }
        }
        node_metrics::sip(&self.node.metrics, self.uas.stats());
    }

    async fn transmit(&mut self, to: SocketAddr, transport: TransportKind, conn: Option<ConnId>, data: Vec<u8>) {
        match transport {
            TransportKind::Udp => {
                if let Some(udp) = &self.udp {
                    if let Err(e) = udp.send_to(&data, to).await {
                        tracing::warn!(%to, error = %e, "SIP UDP send failed");
                    }
                }
            }
            TransportKind::Tcp => {
                let sent = conn.and_then(|c| self.tcp_writers.get(&c)).map(|w| w.send(data).is_ok()).unwrap_or(false);
                if !sent {
                    tracing::debug!(%to, ?conn, "SIP TCP connection gone; response dropped");
                }
            }
        }
    }

    async fn event(&mut self, event: UasEvent) {
        let now = Instant::now();
        match event {
            incoming @ UasEvent::IncomingCall { .. } => self.incoming(now, incoming).await,
            UasEvent::CallConfirmed { call } => self.to_call(call, ToCall::Confirmed),
            UasEvent::CallCancelled { call } => {
                self.to_call(call, ToCall::Hangup { reason: "cancelled by the caller".into(), send_bye: false })
            }
            UasEvent::CallEnded { call, reason } => {
                self.to_call(call, ToCall::Hangup { reason: format!("{reason:?}"), send_bye: false })
            }
            UasEvent::ReInvite { call, sdp_offer } => self.reinvite(now, call, sdp_offer),
            UasEvent::Dtmf { call, digit, duration_ms } => self.to_call(call, ToCall::Dtmf { digit, duration_ms }),
            UasEvent::TransferProgress { call, status, final_ } => self.to_call(call, ToCall::TransferProgress { status, final_ }),
        }
    }

    fn to_call(&mut self, call: SipCallId, msg: ToCall) {
        let Some(entry) = self.calls.get(&call.0) else { return };
        if entry.ringing.is_some() {
            // Cancelled (or failed) before it was answered: no driver to tell.
            if matches!(msg, ToCall::Hangup { .. }) {
                tracing::info!(call = call.0, "call ended before it was answered");
                self.forget(call);
            }
            return;
        }
        let _ = entry.tx.send(msg);
    }

    fn forget(&mut self, call: SipCallId) {
        if let Some(entry) = self.calls.remove(&call.0) {
            self.ports.release(entry.rtp_port);
        }
    }

    async fn incoming(&mut self, now: Instant, event: UasEvent) {
        let UasEvent::IncomingCall { call, trunk, flow: flow_name, number, caller, call_id, remote, sdp_offer } = event else {
            return;
        };
        let span = tracing::info_span!("call", call_id = %call_id, trunk = %trunk, channel = "sip");
        let _g = span.enter();
        let Some(flow) = self.node.flows().get(&flow_name).cloned() else {
            tracing::error!(flow = %flow_name, "trunk routes to a flow that is not loaded; 503");
            self.uas.reject(now, call, 503, None);
            return;
        };
        if let Some(reason) = self.node.pool.saturated() {
            tracing::warn!(%reason, "call refused: 503");
            node_metrics::call_refused(&self.node.metrics, MetricsChannel::Sip);
            self.uas.reject(now, call, 503, None);
            return;
        }
        let Some(offer) = sdp_offer.as_deref() else {
            tracing::warn!("INVITE without an SDP offer (late offer) is not supported; 488");
            self.uas.reject(now, call, 488, Some("399 voice-edge \"an SDP offer is required in the INVITE\""));
            return;
        };
        let Some((rtp_port, rtp, rtcp)) = self.bind_media().await else {
            tracing::warn!("no free RTP port pair; 503");
            node_metrics::call_refused(&self.node.metrics, MetricsChannel::Sip);
            self.uas.reject(now, call, 503, None);
            return;
        };
        let negotiated = match sdp::negotiate(offer, &self.local_media(rtp_port, call.0, 1)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no acceptable media in the offer; 488");
                self.ports.release(rtp_port);
                self.uas.reject(now, call, 488, Some(&e.warning()));
                return;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let transfer_target = self.trunk_targets.get(&trunk).cloned().flatten();
        tracing::info!(number = %number, caller = %caller, remote = %remote, codec = ?negotiated.codec.kind, flow = %flow.name, "incoming call");
        let ctx = SipCallContext {
            node: self.node.clone(),
            sip_call: call,
            sip_call_id: call_id,
            trunk,
            number,
            flow,
            negotiated,
            rtp,
            rtcp,
            rtp_timeout: self.rtp_timeout,
            transfer_target,
            to_server: self.from_calls_tx.clone(),
            inbox: rx,
        };
        drop(_g);
        self.calls.insert(call.0, CallEntry { tx, rtp_port, media_version: 1, ringing: Some((ctx, span)) });
        if self.answer_after.is_zero() {
            self.answer(call);
        } else {
            self.uas.ring(now, call);
            let tx = self.from_calls_tx.clone();
            let after = self.answer_after;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(FromCall::AnswerDue(call));
            });
        }
    }

    /// Answers a ringing call and starts its driver.
    fn answer(&mut self, call: SipCallId) {
        let Some((ctx, span)) = self.calls.get_mut(&call.0).and_then(|e| e.ringing.take()) else { return };
        self.uas.answer(Instant::now(), call, &ctx.negotiated.answer_sdp);
        span.in_scope(|| tracing::info!("call answered"));
        tokio::spawn(tracing::Instrument::instrument(call::run(ctx), span));
    }

    fn local_media(&self, port: u16, session_id: u64, session_version: u64) -> LocalMedia {
        LocalMedia {
            address: self.media_ip,
            port,
            codecs: vec![CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus],
            session_id,
            session_version,
        }
    }

    fn reinvite(&mut self, now: Instant, call: SipCallId, offer: Option<String>) {
        let Some(entry) = self.calls.get(&call.0) else {
            self.uas.reject_reinvite(now, call, 481, None);
            return;
        };
        let Some(offer) = offer else {
            self.uas.reject_reinvite(now, call, 488, Some("399 voice-edge \"re-INVITE without SDP is not supported\""));
            return;
        };
        let version = entry.media_version + 1;
        match sdp::negotiate(&offer, &self.local_media(entry.rtp_port, call.0, version)) {
            Ok(n) => {
                self.uas.answer_reinvite(now, call, &n.answer_sdp);
                let _ = entry.tx.send(ToCall::Media(Box::new(n)));
                if let Some(e) = self.calls.get_mut(&call.0) {
                    e.media_version = version;
                }
            }
            Err(e) => self.uas.reject_reinvite(now, call, 488, Some(&e.warning())),
        }
    }

    /// Binds an RTP/RTCP socket pair from the configured range.
    async fn bind_media(&mut self) -> Option<(u16, Arc<UdpSocket>, Arc<UdpSocket>)> {
        for _ in 0..self.ports.capacity() {
            let port = self.ports.allocate()?;
            let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip(), port)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip(), port + 1)).await;
            match (rtp, rtcp) {
                (Ok(a), Ok(b)) => return Some((port, Arc::new(a), Arc::new(b))),
                _ => {
                    // In use by something else: try it again last.
                    tracing::debug!(port, "RTP port pair busy");
                    self.ports.release(port);
                }
            }
        }
        None
    }

    /// Media sockets bind where SIP does (all interfaces when SIP does).
    fn bind_ip(&self) -> IpAddr {
        let sip = self.udp.as_ref().and_then(|s| s.local_addr().ok()).or_else(|| self.tcp.as_ref().and_then(|s| s.local_addr().ok()));
        sip.map(|a| a.ip()).unwrap_or(self.media_ip)
    }

    fn spawn_tcp(&mut self, stream: tokio::net::TcpStream, from: SocketAddr) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let (mut reader, mut writer) = stream.into_split();
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.tcp_writers.insert(conn, wtx);
        tokio::spawn(async move {
            while let Some(data) = wrx.recv().await {
                if writer.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let tx = self.tcp_in_tx.clone();
        // The `Uas` frames the stream itself (and answers keep-alive pings):
        // this task only moves bytes.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match tokio::time::timeout(TCP_IDLE, reader.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => n,
                };
                if tx.send(TcpIn::Data { conn, from, bytes: buf[..n].to_vec() }).await.is_err() {
                    break;
                }
            }
            let _ = tx.send(TcpIn::Closed { conn }).await;
        });
    }
}

/// An idle SIP TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(600);

async fn recv_udp(sock: &Option<Arc<UdpSocket>>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn accept_tcp(l: &Option<TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is no deadline (a `select!` arm).
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn trunk_targets(cfg: &SipConfig) -> HashMap<String, Option<String>> {
    cfg.trunks.iter().map(|t| (t.name.clone(), t.transfer_target.clone())).collect()
}

/// The `Uas` view of `[sip]`: CIDRs parsed, digest passwords read from the environment.
pub fn uas_config(cfg: &SipConfig, contact: SocketAddr) -> Result<UasConfig, DaemonError> {
    let mut trunks = Vec::new();
    for t in &cfg.trunks {
        let sources = t.sources.iter().map(|s| parse_cidr(s)).collect::<Result<Vec<_>, _>>().map_err(DaemonError::Setup)?;
        let digest = match (&t.digest_user, &t.digest_password_env) {
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    DaemonError::Setup(format!("sip.trunk {}: the environment variable {var} (digest password) is not set", t.name))
                })?;
                Some(DigestCredentials { user: user.clone(), password, realm: "voice-edge".into() })
            }
            _ => None,
        };
        trunks.push(Trunk {
            name: t.name.clone(),
            sources,
            digest,
            numbers: t.numbers.clone(),
            transfer_target: t.transfer_target.clone(),
        });
    }
    let host = match contact.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    Ok(UasConfig {
        trunks,
        max_calls: cfg.max_calls,
        retry_after_s: cfg.retry_after_s,
        rate_limit_per_s: cfg.rate_limit_per_s,
        rate_burst: cfg.rate_burst,
        user_agent: format!("voice-edge/{}", env!("CARGO_PKG_VERSION")),
        contact: format!("sip:voice-edge@{host}:{}", contact.port()),
        timers: Timers::default(),
    })
}

/// Randomness for tags, branches, nonces and SSRCs, from the OS.
pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

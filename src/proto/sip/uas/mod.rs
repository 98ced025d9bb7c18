//! The SIP user agent server of the node (RFC 3261 §8.2, §12-§17, §22): a
//! sans-IO endpoint that owns every server and client transaction and every
//! dialog. The runtime feeds it datagrams / stream bytes and timeouts, and
//! drains transmissions and call events; the application answers calls with
//! [`Uas::ring`], [`Uas::answer`], [`Uas::reject`], [`Uas::hangup`],
//! [`Uas::refer`] and the re-INVITE pair.
//!
//! | sub-module | owns |
//! |---|---|
//! | `mod.rs` | the public contract, framing and parsing, transaction plumbing, timers, output |
//! | `admission` | trunk source CIDRs, dialled number -> flow, per-source token bucket, seeded ids |
//! | `requests` | what each incoming request gets: admission of INVITEs, OPTIONS, CANCEL, in-dialog BYE / re-INVITE / INFO / NOTIFY, 405/501/481 |
//! | `app` | the application's actions and the requests the node sends (BYE, REFER) |
//!
//! Rules kept here:
//!
//! - **Termination only.** Every INVITE ends here; Route headers and foreign
//!   Request-URI domains never make the node forward anything. Messages go
//!   only to the peer that sent the request (responses per RFC 3261
//!   §18.2.2 with RFC 3581 rport: UDP to the packet's source when `rport` is
//!   present, else to the source address at the Via port; TCP down the same
//!   connection) and in-dialog requests to the address/connection the
//!   INVITE came from (symmetric signalling; Route and Request-URI are still
//!   written per §12.2.1.1).
//! - **Admission order for INVITE** (scanners learn nothing before
//!   authorisation): source allowed by some trunk (else 403, whatever the
//!   number) -> draining (503 + Retry-After) -> digest when the trunk has
//!   credentials (401 with SHA-256 and MD5 challenges; wrong credentials
//!   403; stale nonce 401 `stale=true`) -> number routed by the trunk (else
//!   404) -> capacity `max_calls` (503 + Retry-After) -> 100 Trying and
//!   [`UasEvent::IncomingCall`].
//! - **Flood limits.** Per-source token bucket (`rate_limit_per_s`,
//!   `rate_burst`): over the limit a UDP datagram is dropped unparsed and a
//!   TCP request gets 503; both are counted. Hard caps:
//!   [`MAX_SERVER_TRANSACTIONS`], [`MAX_CLIENT_TRANSACTIONS`], [`MAX_DIALOGS`]
//!   and [`MAX_PARTIAL_STREAMS`]; past a cap a UDP request is dropped
//!   (counted) and a TCP request gets a stateless 503.
//! - **TCP framing.** `Received::data` on TCP may be any chunk of the
//!   connection's byte stream (one whole message is fine too): the UAS frames
//!   it with [`StreamFramer`] per connection, answers RFC 5626 CRLF pings
//!   with a CRLF pong, and after a fatal framing error ignores the
//!   connection ([`Uas::is_connection_unusable`]) until
//!   [`Uas::connection_closed`].
//! - **Every call ends with one event**, [`UasEvent::CallEnded`] or
//!   [`UasEvent::CallCancelled`], except calls the application itself
//!   refused with [`Uas::reject`].
//! - Nothing panics on any input (mutation fuzz test in `tests.rs`).

mod admission;
mod app;
mod requests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use super::auth::DigestCredentials;
pub use super::transaction::Timers;

use super::auth::NonceIssuer;
use super::dialog::{Dialog, DialogId};
use super::message::{Message, Method, Request, Response};
use super::parse::{parse_message, Limits, ParseError, StreamFramer};
use super::serialize::response_to;
use super::syntax::split_list;
use super::transaction::{
    ClientNonInviteEvent, ClientNonInviteTx, ServerInviteEvent, ServerInviteState, ServerInviteTx,
    ServerNonInviteEvent, ServerNonInviteTx, TxAction,
};
use super::typed::Via;
use super::uri::Uri;
use admission::{IdGen, RateLimiter};

/// Server transactions alive at once, at most.
pub const MAX_SERVER_TRANSACTIONS: usize = 8_192;
/// Client transactions (our BYE / REFER) alive at once, at most.
pub const MAX_CLIENT_TRANSACTIONS: usize = 1_024;
/// Dialogs at once, whatever `max_calls` says.
pub const MAX_DIALOGS: usize = 4_096;
/// TCP connections holding a partial message at once, at most.
pub const MAX_PARTIAL_STREAMS: usize = 1_024;
/// How long a digest nonce bucket lasts (a nonce lives 1-2 buckets).
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// The transport a message came over or must go out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
}

impl TransportKind {
    fn is_reliable(self) -> bool {
        self == TransportKind::Tcp
    }

    fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }
}

/// A TCP connection, numbered by the runtime.
pub type ConnId = u64;

/// Bytes from the network.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub from: SocketAddr,
    pub transport: TransportKind,
    /// The connection, for TCP (required there).
    pub conn: Option<ConnId>,
    /// UDP: one datagram. TCP: any chunk of the connection's stream.
    pub data: &'a [u8],
}

/// A carrier or PBX allowed to send calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Trunk {
    pub name: String,
    /// Source CIDRs; empty means any source (then digest should guard it).
    pub sources: Vec<(IpAddr, u8)>,
    pub digest: Option<DigestCredentials>,
    /// DID -> flow; `"*"` matches any number.
    pub numbers: BTreeMap<String, String>,
    pub transfer_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UasConfig {
    pub trunks: Vec<Trunk>,
    pub max_calls: u32,
    pub retry_after_s: u32,
    /// Requests per second per source IP; 0 disables the limit.
    pub rate_limit_per_s: f64,
    pub rate_burst: u32,
    /// Server header of responses, User-Agent of requests (empty: none).
    pub user_agent: String,
    /// Our Contact URI, e.g. `sip:voice-edge@127.0.0.1:5060`; its host and
    /// port are also the Via sent-by of our requests.
    pub contact: String,
    pub timers: Timers,
}

impl Default for UasConfig {
    fn default() -> Self {
        UasConfig {
            trunks: Vec::new(),
            max_calls: 16,
            retry_after_s: 30,
            rate_limit_per_s: 20.0,
            rate_burst: 40,
            user_agent: "voice-edge".into(),
            contact: "sip:voice-edge@127.0.0.1:5060".into(),
            timers: Timers::default(),
        }
    }
}

/// The node's handle for one call (one dialog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SipCallId(pub u64);

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    ByeFromCaller,
    /// Our BYE was answered or timed out, or the app hung up before answer.
    ByeFromUs,
    /// No ACK for our 2xx within 64*T1 (the node sent BYE).
    AckTimeout,
    /// The call's TCP connection closed or failed.
    TransportFailure,
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasEvent {
    IncomingCall {
        call: SipCallId,
        trunk: String,
        flow: String,
        /// The DID: Request-URI user (or tel number), else the To user.
        number: String,
        /// The From URI.
        caller: String,
        /// The SIP Call-ID.
        call_id: String,
        remote: SocketAddr,
        sdp_offer: Option<String>,
    },
    /// The ACK for our 200 arrived.
    CallConfirmed { call: SipCallId },
    /// CANCEL before answer: we sent 200 to the CANCEL and 487 to the INVITE.
    CallCancelled { call: SipCallId },
    CallEnded { call: SipCallId, reason: EndReason },
    /// A re-INVITE (hold, resume, refresh): answer with
    /// [`Uas::answer_reinvite`] or [`Uas::reject_reinvite`].
    ReInvite { call: SipCallId, sdp_offer: Option<String> },
    /// INFO application/dtmf-relay or application/dtmf; `duration_ms` is 0
    /// when the body gives none.
    Dtmf { call: SipCallId, digit: char, duration_ms: u32 },
    /// REFER progress: the REFER's response (202, or a failure as final),
    /// then each NOTIFY message/sipfrag status (final from 200 up or when
    /// the subscription terminates). Local failures: 481 (no such call),
    /// 491 (call not confirmed), 400 (bad target), 408 (REFER timed out).
    TransferProgress { call: SipCallId, status: u16, final_: bool },
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasOutput {
    Transmit {
        to: SocketAddr,
        transport: TransportKind,
        conn: Option<ConnId>,
        data: Vec<u8>,
    },
    Event(UasEvent),
}

/// Requests received, by method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodCounts {
    pub invite: u64,
    pub ack: u64,
    pub bye: u64,
    pub cancel: u64,
    pub options: u64,
    pub info: u64,
    pub notify: u64,
    pub refer: u64,
    pub other: u64,
}

impl MethodCounts {
    fn count(&mut self, m: &Method) {
        let slot = match m {
            Method::Invite => &mut self.invite,
            Method::Ack => &mut self.ack,
            Method::Bye => &mut self.bye,
            Method::Cancel => &mut self.cancel,
            Method::Options => &mut self.options,
            Method::Info => &mut self.info,
            Method::Notify => &mut self.notify,
            Method::Refer => &mut self.refer,
            _ => &mut self.other,
        };
        *slot += 1;
    }
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusClassCounts {
    pub provisional_1xx: u64,
    pub success_2xx: u64,
    pub redirection_3xx: u64,
    pub client_error_4xx: u64,
    pub server_error_5xx: u64,
    pub global_failure_6xx: u64,
}

impl StatusClassCounts {
    fn count(&mut self, status: u16) {
        let slot = match status / 100 {
            1 => &mut self.provisional_1xx,
            2 => &mut self.success_2xx,
            3 => &mut self.redirection_3xx,
            4 => &mut self.client_error_4xx,
            5 => &mut self.server_error_5xx,
            _ => &mut self.global_failure_6xx,
        };
        *slot += 1;
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UasStats {
    pub requests: MethodCounts,
    /// Responses we sent (first transmissions; stateless ones included).
    pub responses_sent: StatusClassCounts,
    /// Responses received for our requests.
    pub responses_received: StatusClassCounts,
    pub rejected_403: u64,
    pub rejected_404: u64,
    pub rejected_488: u64,
    pub rejected_503: u64,
    /// 401 challenges sent.
    pub auth_challenges: u64,
    /// Messages over a source's rate limit.
    pub rate_limited: u64,
    /// Messages that did not parse (answered 400/513 when possible).
    pub parse_errors: u64,
    /// Our retransmissions (responses and requests).
    pub retransmissions: u64,
    /// Retransmitted requests absorbed by a transaction.
    pub retransmissions_received: u64,
    /// Requests dropped or refused because a hard cap was reached.
    pub dropped_at_capacity: u64,
    /// Responses matching none of our transactions.
    pub stray_responses: u64,
    pub calls_accepted: u64,
}

/// Where a message goes: address, transport, connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    transport: TransportKind,
    conn: Option<ConnId>,
}

#[derive(Debug)]
enum ServerMachine {
    Invite(ServerInviteTx),
    NonInvite(ServerNonInviteTx),
}

#[derive(Debug)]
struct ServerTx {
    machine: ServerMachine,
    peer: Peer,
    call: Option<u64>,
    /// CSeq number of the request (matches the ACK of a 2xx).
    cseq: u32,
}

impl ServerTx {
    fn deadline(&self) -> Option<Instant> {
        match &self.machine {
            ServerMachine::Invite(m) => m.next_deadline(),
            ServerMachine::NonInvite(m) => m.next_deadline(),
        }
    }

    fn is_accepted_invite(&self) -> bool {
        matches!(&self.machine, ServerMachine::Invite(m) if m.state() == ServerInviteState::Accepted && !m.is_acked())
    }
}

#[derive(Debug)]
struct ClientTx {
    machine: ClientNonInviteTx,
    peer: Peer,
    call: u64,
    method: Method,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE received, no final response yet.
    Offered,
    /// 200 sent, waiting for the ACK.
    Answered,
    Confirmed,
    /// Our BYE is out.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReferState {
    Idle,
    /// REFER sent, no final outcome yet.
    Pending,
    /// REFER got 2xx; NOTIFYs expected.
    Accepted,
}

#[derive(Debug)]
struct Call {
    dialog: Dialog,
    /// Where in-dialog requests go.
    peer: Peer,
    /// The initial INVITE (Via with received/rport), for its responses.
    invite: Request,
    invite_key: String,
    phase: Phase,
    /// An incoming re-INVITE waiting for the app: (transaction key, request).
    reinvite: Option<(String, Request)>,
    /// A re-INVITE whose 2xx waits for its ACK.
    reinvite_unacked: Option<String>,
    hangup_after_ack: bool,
    refer: ReferState,
}

/// The sans-IO SIP UAS endpoint; see the module docs.
pub struct Uas {
    cfg: UasConfig,
    /// `<sip:...>` for Contact headers.
    contact_header: String,
    /// host[:port] for the Via of our requests.
    sent_by: String,
    ids: IdGen,
    nonces: NonceIssuer,
    rate: RateLimiter,
    limits: Limits,
    framers: HashMap<ConnId, StreamFramer>,
    server_txs: HashMap<String, ServerTx>,
    client_txs: HashMap<String, ClientTx>,
    calls: BTreeMap<u64, Call>,
    dialogs: HashMap<DialogId, u64>,
    next_call: u64,
    draining: bool,
    out: VecDeque<UasOutput>,
    stats: UasStats,
}

/// The standard reason phrase for the statuses this node sends.
pub(crate) fn reason_for(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        s if s < 200 => "Session Progress",
        s if s < 300 => "OK",
        s if s < 400 => "Redirection",
        s if s < 500 => "Client Error",
        s if s < 600 => "Server Error",
        _ => "Global Failure",
    }
}

/// The contact header value and Via sent-by derived from the configured
/// contact URI.
fn contact_parts(contact: &str) -> (String, String) {
    let bare = contact.trim().trim_start_matches('<').trim_end_matches('>');
    match Uri::parse(bare) {
        Ok(Uri::Sip(s)) => {
            let sent_by = match s.port {
                Some(p) => format!("{}:{p}", s.host),
                None => s.host.to_string(),
            };
            (format!("<{bare}>"), sent_by)
        }
        _ => (format!("<{bare}>"), "voice-edge.invalid".into()),
    }
}

/// The server transaction key of a request (RFC 3261 §17.2.3): the branch,
/// the sent-by and the method, ACK matching INVITE. Requests without an
/// RFC 3261 branch fall back to Call-ID, From tag, CSeq number and top Via.
fn server_key(req: &Request, method: &Method) -> Option<String> {
    let via = req.headers.top_via().ok()?;
    if via.has_rfc3261_branch() {
        return Some(format!("{}|{}|{}", via.branch()?, via.sent_by(), method));
    }
    let h = &req.headers;
    Some(format!(
        "2543|{}|{}|{}|{}|{}",
        h.call_id().ok()?,
        h.from_addr().ok()?.tag().unwrap_or(""),
        h.cseq().ok()?.seq,
        via,
        method
    ))
}

/// Adds `received` and fills `rport` in the top Via (§18.2.1, RFC 3581
/// §4), and returns where responses go (§18.2.2).
fn stamp_via_and_route(req: &mut Request, src: Peer) -> Peer {
    let Some(first_line) = req.headers.get("Via").map(str::to_string) else {
        return src;
    };
    let items = split_list(&first_line);
    let Some(Ok(mut top)) = items.first().map(|s| Via::parse(s)) else {
        return src;
    };
    let ip = src.addr.ip();
    if top.host.to_string().trim_start_matches('[').trim_end_matches(']') != ip.to_string() {
        top.params.set("received", Some(ip.to_string()));
    }
    let rport = top.rport_requested();
    if rport {
        top.params.set("rport", Some(src.addr.port().to_string()));
    }
    let mut rebuilt = vec![top.to_string()];
    rebuilt.extend(items[1..].iter().map(|s| s.to_string()));
    let new_value = rebuilt.join(", ");
    // Replace only the first Via line, keeping any others in place.
    let mut replaced = false;
    let headers: super::headers::Headers = req
        .headers
        .iter()
        .map(|h| {
            if !replaced && h.is("Via") {
                replaced = true;
                super::headers::Header::new(h.name.clone(), new_value.clone())
            } else {
                h.clone()
            }
        })
        .collect();
    req.headers = headers;
    match src.transport {
        TransportKind::Tcp => src,
        TransportKind::Udp if rport => src,
        TransportKind::Udp => Peer {
            addr: SocketAddr::new(ip, top.port_or_default()),
            ..src
        },
    }
}

impl Uas {
    pub fn new(cfg: UasConfig, seed: u64) -> Uas {
        let (contact_header, sent_by) = contact_parts(&cfg.contact);
        Uas {
            cfg,
            contact_header,
            sent_by,
            ids: IdGen::new(seed),
            nonces: NonceIssuer::new(seed ^ 0xA5A5_5A5A_C3C3_3C3C, NONCE_LIFETIME),
            rate: RateLimiter::default(),
            limits: Limits::default(),
            framers: HashMap::new(),
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            calls: BTreeMap::new(),
            dialogs: HashMap::new(),
            next_call: 1,
            draining: false,
            out: VecDeque::new(),
            stats: UasStats::default(),
        }
    }

    /// New trunks and limits for new calls; existing dialogs are untouched.
    pub fn set_config(&mut self, cfg: UasConfig) {
        let (contact_header, sent_by) = contact_parts(&cfg.contact);
        self.contact_header = contact_header;
        self.sent_by = sent_by;
        self.cfg = cfg;
    }

    /// While draining, new INVITEs get 503 + Retry-After.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Calls that exist (offered, answered, confirmed or ending).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn stats(&self) -> &UasStats {
        &self.stats
    }

    pub fn poll_output(&mut self) -> Option<UasOutput> {
        self.out.pop_front()
    }

    /// The earliest timer deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = self.server_txs.values().filter_map(ServerTx::deadline);
        let c = self.client_txs.values().filter_map(|t| t.machine.next_deadline());
        s.chain(c).min()
    }

    /// After a fatal framing error the connection's bytes are ignored; the
    /// runtime should close it.
    pub fn is_connection_unusable(&self, conn: ConnId) -> bool {
        self.framers.get(&conn).is_some_and(StreamFramer::is_failed)
    }

    /// The runtime closed (or lost) a TCP connection: calls signalled over
    /// it end with [`EndReason::TransportFailure`] and its transactions go.
    pub fn connection_closed(&mut self, _now: Instant, conn: ConnId) {
        self.framers.remove(&conn);
        self.server_txs.retain(|_, t| t.peer.conn != Some(conn));
        self.client_txs.retain(|_, t| t.peer.conn != Some(conn));
        let lost: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.peer.conn == Some(conn))
            .map(|(&h, _)| h)
            .collect();
        for h in lost {
            self.end_call(h, Some(EndReason::TransportFailure));
        }
    }

    pub fn handle_received(&mut self, now: Instant, rx: Received<'_>) {
        let src = Peer {
            addr: rx.from,
            transport: rx.transport,
            conn: rx.conn,
        };
        match rx.transport {
            TransportKind::Udp => {
                if !self.rate.allow(now, rx.from.ip(), self.cfg.rate_limit_per_s, self.cfg.rate_burst) {
                    self.stats.rate_limited += 1;
                    return;
                }
                let parsed = parse_message(rx.data, &self.limits).map(|(m, _)| m);
                self.handle_parsed(now, src, parsed);
            }
            TransportKind::Tcp => {
                let Some(conn) = rx.conn else {
                    self.stats.parse_errors += 1;
                    return;
                };
                for item in self.frame(conn, rx.data) {
                    match item {
                        Framed::Ping => self.transmit(src, b"\r\n".to_vec()),
                        Framed::Message(m) => {
                            let m = *m;
                            let is_request = matches!(&m, Ok(Message::Request(r)) if r.method != Method::Ack);
                            if !self.rate.allow(now, rx.from.ip(), self.cfg.rate_limit_per_s, self.cfg.rate_burst) {
                                self.stats.rate_limited += 1;
                                if let (true, Ok(Message::Request(r))) = (is_request, &m) {
                                    let resp = self.overload_response(r);
                                    self.send_stateless(src, resp);
                                }
                                continue;
                            }
                            self.handle_parsed(now, src, m);
                        }
                    }
                }
            }
        }
    }

    /// Runs the connection's framer over `data`.
    fn frame(&mut self, conn: ConnId, data: &[u8]) -> Vec<Framed> {
        if !self.framers.contains_key(&conn) && self.framers.len() >= MAX_PARTIAL_STREAMS {
            // Forget one partial stream (its peer will time out) rather than grow.
            if let Some(&victim) = self.framers.keys().next() {
                self.framers.remove(&victim);
                self.stats.dropped_at_capacity += 1;
            }
        }
        let framer = self.framers.entry(conn).or_insert_with(|| StreamFramer::new(self.limits));
        let mut items = Vec::new();
        if framer.is_failed() {
            return items;
        }
        framer.push(data);
        loop {
            match framer.next_message() {
                Ok(Some(m)) => items.push(Framed::Message(Box::new(Ok(m)))),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.is_fatal();
                    items.push(Framed::Message(Box::new(Err(e))));
                    if fatal {
                        break;
                    }
                }
            }
        }
        // Pings are counted while framing (RFC 5626 §4.4.1: one CRLF pong each).
        for _ in 0..framer.take_pings() {
            items.push(Framed::Ping);
        }
        if framer.buffered() == 0 && !framer.is_failed() {
            self.framers.remove(&conn);
        }
        items
    }

    fn handle_parsed(&mut self, now: Instant, src: Peer, parsed: Result<Message, ParseError>) {
        match parsed {
            Ok(Message::Request(req)) => self.on_request(now, src, req),
            Ok(Message::Response(resp)) => self.on_response(now, resp),
            Err(e) => {
                self.stats.parse_errors += 1;
                if let Some(ctx) = e.response_context() {
                    let tag = self.ids.tag();
                    let resp = ctx.to_response().with_to_tag(&tag);
                    let dest = match ctx.via.first().and_then(|v| split_list(v).first().and_then(|s| Via::parse(s).ok())) {
                        Some(via) if src.transport == TransportKind::Udp && !via.rport_requested() => Peer {
                            addr: SocketAddr::new(src.addr.ip(), via.port_or_default()),
                            ..src
                        },
                        _ => src,
                    };
                    self.send_stateless(dest, resp);
                }
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .server_txs
            .iter()
            .filter(|(_, t)| t.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(tx) = self.server_txs.get_mut(&key) else { continue };
            let accepted = tx.is_accepted_invite();
            let actions = match &mut tx.machine {
                ServerMachine::Invite(m) => m.handle(now, ServerInviteEvent::Timeout),
                ServerMachine::NonInvite(m) => m.handle(now, ServerNonInviteEvent::Timeout),
            };
            self.run_server_actions(now, &key, actions, accepted);
        }
        let due: Vec<String> = self
            .client_txs
            .iter()
            .filter(|(_, t)| t.machine.next_deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(tx) = self.client_txs.get_mut(&key) else { continue };
            let actions = tx.machine.handle(now, ClientNonInviteEvent::Timeout);
            self.run_client_actions(now, &key, actions, 408);
        }
    }

    // ------------------------------------------------------------ output

    fn transmit(&mut self, peer: Peer, data: Vec<u8>) {
        self.out.push_back(UasOutput::Transmit {
            to: peer.addr,
            transport: peer.transport,
            conn: peer.conn,
            data,
        });
    }

    fn emit(&mut self, event: UasEvent) {
        self.out.push_back(UasOutput::Event(event));
    }

    fn count_sent(&mut self, status: u16) {
        self.stats.responses_sent.count(status);
        match status {
            403 => self.stats.rejected_403 += 1,
            404 => self.stats.rejected_404 += 1,
            488 => self.stats.rejected_488 += 1,
            503 => self.stats.rejected_503 += 1,
            401 => self.stats.auth_challenges += 1,
            _ => {}
        }
    }

    fn send_stateless(&mut self, peer: Peer, mut resp: Response) {
        self.decorate(&mut resp);
        self.count_sent(resp.status);
        self.transmit(peer, resp.to_bytes());
    }

    /// Server header on every response we send.
    fn decorate(&self, resp: &mut Response) {
        if !self.cfg.user_agent.is_empty() && !resp.headers.contains("Server") {
            resp.headers.push("Server", self.cfg.user_agent.clone());
        }
    }

    /// A response to `req` with the standard reason and `to_tag` (none for
    /// 100).
    fn response(&self, req: &Request, status: u16, to_tag: Option<&str>) -> Response {
        let r = response_to(req, status, reason_for(status));
        match to_tag {
            Some(t) if status > 100 => r.with_to_tag(t),
            _ => r,
        }
    }

    fn overload_response(&mut self, req: &Request) -> Response {
        let tag = self.ids.tag();
        self.response(req, 503, Some(&tag))
            .with_header("Retry-After", self.cfg.retry_after_s.to_string())
    }

    // ------------------------------------------------ server transactions

    /// Opens a server transaction for `req` under `key`; `false` (and the
    /// request is dropped or answered statelessly) past the cap.
    fn open_server_tx(&mut self, key: &str, req: &Request, peer: Peer, call: Option<u64>) -> bool {
        if self.server_txs.len() >= MAX_SERVER_TRANSACTIONS {
            self.stats.dropped_at_capacity += 1;
            if peer.transport == TransportKind::Tcp && req.method != Method::Ack {
                let resp = self.overload_response(req);
                self.send_stateless(peer, resp);
            }
            return false;
        }
        let reliable = peer.transport.is_reliable();
        let machine = if req.method == Method::Invite {
            ServerMachine::Invite(ServerInviteTx::new(reliable, self.cfg.timers))
        } else {
            ServerMachine::NonInvite(ServerNonInviteTx::new(reliable, self.cfg.timers))
        };
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        self.server_txs.insert(key.to_string(), ServerTx { machine, peer, call, cseq });
        true
    }

    /// Sends `resp` through the server transaction `key`.
    fn respond(&mut self, now: Instant, key: &str, mut resp: Response) {
        self.decorate(&mut resp);
        let status = resp.status;
        let bytes = resp.to_bytes();
        let Some(tx) = self.server_txs.get_mut(key) else { return };
        let actions = match &mut tx.machine {
            ServerMachine::Invite(m) if status < 200 => m.handle(now, ServerInviteEvent::SendProvisional(bytes)),
            ServerMachine::Invite(m) => m.handle(now, ServerInviteEvent::SendFinal { status, bytes }),
            ServerMachine::NonInvite(m) if status < 200 => m.handle(now, ServerNonInviteEvent::SendProvisional(bytes)),
            ServerMachine::NonInvite(m) => m.handle(now, ServerNonInviteEvent::SendFinal(bytes)),
        };
        if actions.iter().any(|a| matches!(a, TxAction::Send(_))) {
            self.count_sent(status);
        }
        self.run_server_actions(now, key, actions, false);
    }

    /// Opens a transaction for `req` and answers it at once with `resp`.
    fn answer_new(&mut self, now: Instant, peer: Peer, req: &Request, resp: Response) {
        let Some(key) = server_key(req, &req.method) else {
            self.send_stateless(peer, resp);
            return;
        };
        if self.open_server_tx(&key, req, peer, None) {
            self.respond(now, &key, resp);
        }
    }

    fn run_server_actions(&mut self, now: Instant, key: &str, actions: Vec<TxAction>, was_accepted: bool) {
        let Some((peer, call)) = self.server_txs.get(key).map(|t| (t.peer, t.call)) else { return };
        for action in actions {
            match action {
                TxAction::Send(b) => self.transmit(peer, b),
                TxAction::Retransmit(b) => {
                    self.stats.retransmissions += 1;
                    self.transmit(peer, b);
                }
                TxAction::Acked => {
                    if let Some(h) = call {
                        self.on_2xx_acked(now, h, key);
                    }
                }
                TxAction::TimedOut => {
                    if let (Some(h), true) = (call, was_accepted) {
                        self.on_ack_timeout(now, h, key);
                    }
                }
                TxAction::Terminated => {
                    self.server_txs.remove(key);
                }
                TxAction::Deliver => {}
            }
        }
    }

    // ------------------------------------------------ client transactions

    /// Builds an in-dialog request of `method` for call `h` (Contact and
    /// User-Agent added, `extra` for the rest) and starts its client
    /// transaction. `false` when there is no such call or at the cap.
    fn send_in_dialog(&mut self, now: Instant, h: u64, method: Method, extra: impl FnOnce(&mut Request)) -> bool {
        if self.client_txs.len() >= MAX_CLIENT_TRANSACTIONS {
            self.stats.dropped_at_capacity += 1;
            return false;
        }
        let branch = self.ids.branch();
        let (contact, ua, sent_by) = (self.contact_header.clone(), self.cfg.user_agent.clone(), self.sent_by.clone());
        let Some(call) = self.calls.get_mut(&h) else { return false };
        let peer = call.peer;
        let mut req = call.dialog.build_request(method.clone(), peer.transport.via_token(), &sent_by, &branch);
        req.headers.push("Contact", contact);
        if !ua.is_empty() {
            req.headers.push("User-Agent", ua);
        }
        extra(&mut req);
        let (machine, actions) = ClientNonInviteTx::start(now, peer.transport.is_reliable(), self.cfg.timers, req.to_bytes());
        self.client_txs.insert(branch.clone(), ClientTx { machine, peer, call: h, method });
        self.run_client_actions(now, &branch, actions, 0);
        true
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let branch = resp.headers.top_via().ok().and_then(|v| v.branch().map(str::to_string));
        let method = resp.headers.cseq().ok().map(|c| c.method);
        let matched = match (&branch, &method) {
            (Some(b), Some(m)) => self.client_txs.get(b).is_some_and(|t| &t.method == m),
            _ => false,
        };
        let Some(branch) = branch.filter(|_| matched) else {
            self.stats.stray_responses += 1;
            return;
        };
        self.stats.responses_received.count(resp.status);
        let Some(tx) = self.client_txs.get_mut(&branch) else { return };
        let actions = tx.machine.handle(now, ClientNonInviteEvent::Response(resp.status));
        self.run_client_actions(now, &branch, actions, resp.status);
    }

    /// `status` is the response being delivered, or 408 for a timeout.
    fn run_client_actions(&mut self, now: Instant, key: &str, actions: Vec<TxAction>, status: u16) {
        let Some((peer, call, method)) = self.client_txs.get(key).map(|t| (t.peer, t.call, t.method.clone())) else {
            return;
        };
        for action in actions {
            match action {
                TxAction::Send(b) => self.transmit(peer, b),
                TxAction::Retransmit(b) => {
                    self.stats.retransmissions += 1;
                    self.transmit(peer, b);
                }
                TxAction::Deliver => self.on_client_result(now, call, &method, status),
                TxAction::TimedOut => self.on_client_result(now, call, &method, 408),
                TxAction::Terminated => {
                    self.client_txs.remove(key);
                }
                TxAction::Acked => {}
            }
        }
    }

    // ------------------------------------------------------------ calls

    fn call_id_of(&self, h: u64) -> SipCallId {
        SipCallId(h)
    }

    /// Forgets call `h`, emitting `CallEnded` when `reason` is given.
    fn end_call(&mut self, h: u64, reason: Option<EndReason>) {
        if let Some(call) = self.calls.remove(&h) {
            self.dialogs.remove(&call.dialog.id);
            if let Some(reason) = reason {
                let call = self.call_id_of(h);
                self.emit(UasEvent::CallEnded { call, reason });
            }
        }
    }
}

/// One item out of a TCP framer.
enum Framed {
    Ping,
    Message(Box<Result<Message, ParseError>>),
}

#[cfg(test)]
mod tests;

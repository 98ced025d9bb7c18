//! One SIP call's driver task: RTP sockets around the sans-IO
//! [`RtpSession`], the conversation ([`LiveCall`]) on the engine pool, and
//! the call's logs, metrics and outcome events.
//!
//! Every 20 ms the task takes one frame from the jitter buffer (decoded,
//! concealed, or silence), gives it to the call, and sends the agent's frame
//! if there is one; RTP, RTCP, engine results and messages from the SIP
//! server are handled as they arrive. The call ends when either side hangs
//! up, the media stops for `sip.rtp_timeout_s`, a transfer completes, or the
//! daemon's drain deadline passes; its outcome events are then committed to
//! the spool before the task reports `Ended`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{sleep_until, FromCall};
use crate::call::CallEvent;
use crate::flow::Flow;
use crate::media::FRAME_SAMPLES;
use crate::outcome::event::Channel;
use crate::proto::rtp::session::{RtpEvent, RtpOutput, RtpSession, RtpSessionConfig};
use crate::proto::sdp::Negotiated;
use crate::proto::sip::SipCallId;
use crate::ops::metrics::{Channel as MetricsChannel, Direction as RtpDirection, DropReason};
use crate::runtime::daemon::Node;
use crate::runtime::node_metrics;
use crate::runtime::live_call::{CallOrigin, LiveCall, LiveOutput};

/// What the SIP server tells a call.
#[derive(Debug)]
pub enum ToCall {
    /// The caller's ACK arrived.
    Confirmed,
    /// The call is over (BYE, CANCEL, timeout, drain); `reason` is logged.
    /// `send_bye`: the node ends it (drain), so the caller must get a BYE.
    Hangup { reason: String, send_bye: bool },
    /// A SIP INFO digit.
    Dtmf { digit: char, duration_ms: u32 },
    /// A re-INVITE changed the media (hold, resume, codec, address).
    Media(Box<Negotiated>),
    /// REFER progress (202, then NOTIFY sipfrag statuses).
    TransferProgress { status: u16, final_: bool },
}

pub struct SipCallContext {
    pub node: Arc<Node>,
    pub sip_call: SipCallId,
    pub sip_call_id: String,
    pub trunk: String,
    pub number: String,
    pub flow: Arc<Flow>,
    pub negotiated: Negotiated,
    pub rtp: Arc<UdpSocket>,
    pub rtcp: Arc<UdpSocket>,
    pub rtp_timeout: Duration,
    pub transfer_target: Option<String>,
    pub to_server: mpsc::UnboundedSender<FromCall>,
    pub inbox: mpsc::UnboundedReceiver<ToCall>,
}

const FRAME: Duration = Duration::from_millis(20);
const SILENCE: [f32; FRAME_SAMPLES] = [0.0; FRAME_SAMPLES];

/// Drives the call to its end, records its outcome, reports `Ended`.
pub async fn run(mut ctx: SipCallContext) {
    let node = ctx.node.clone();
    node.active_calls.fetch_add(1, Ordering::SeqCst);
    node_metrics::call_started(&node.metrics, MetricsChannel::Sip);
    let cfg = node.config();
    let start = Instant::now();
    let answered_at = SystemTime::now();
    let mut rtp_mux = ctx.negotiated.rtcp_mux;
    let mut rtp = match RtpSession::new(session_config(&ctx.negotiated, ctx.rtp_timeout, &ctx.sip_call_id), start) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the call's media; hanging up");
            let _ = ctx.to_server.send(FromCall::Hangup(ctx.sip_call));
            let _ = ctx.to_server.send(FromCall::Ended(ctx.sip_call));
            node.active_calls.fetch_sub(1, Ordering::SeqCst);
            return;
        }
    };
    let call_number = node.next_call_number();
    let mut live = LiveCall::start(&node.call_services(), call_number, ctx.flow.clone(), cfg.call.clone(), cfg.vad.clone(), start, answered_at);
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut outs: Vec<LiveOutput> = Vec::new();
    let mut rtp_buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut ended_by: Option<String> = None;
    let mut agent_hangup = false;
    let mut transfer_pending = false;

    while ended_by.is_none() {
        let rtp_timer = rtp.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                node.media_heartbeat.fetch_add(1, Ordering::Relaxed);
                match rtp.poll_frame(now) {
                    Some(frame) => live.tick(now, &frame.samples, &mut outs),
                    None => live.tick(now, &SILENCE, &mut outs),
                }
            }
            r = ctx.rtp.recv_from(&mut rtp_buf) => if let Ok((n, from)) = r {
                if let Err(e) = rtp.handle_rtp(Instant::now(), from, &rtp_buf[..n]) {
                    tracing::trace!(%from, error = %e, "RTP packet dropped");
                }
            },
            r = ctx.rtcp.recv_from(&mut rtcp_buf) => if let Ok((n, from)) = r {
                if let Err(e) = rtp.handle_rtcp(Instant::now(), from, &rtcp_buf[..n]) {
                    tracing::trace!(%from, error = %e, "RTCP packet dropped");
                }
            },
            Some(result) = live.engine_results().recv() => live.engine_result(Instant::now(), result, &mut outs),
            msg = ctx.inbox.recv() => {
                let now = Instant::now();
                match msg {
                    None => ended_by = Some("SIP server stopped".into()),
                    Some(ToCall::Confirmed) => {}
                    Some(ToCall::Hangup { reason, send_bye }) => {
                        ended_by = Some(reason);
                        agent_hangup = send_bye;
                    }
                    Some(ToCall::Dtmf { digit, .. }) => live.dtmf(now, digit, &mut outs),
                    Some(ToCall::Media(n)) => {
                        tracing::info!(direction = ?n.direction, remote = ?n.remote_rtp, codec = ?n.codec.kind, "media changed by re-INVITE");
                        if n.codec != ctx.negotiated.codec || n.rtcp_mux != rtp_mux {
                            // A new codec: a new RTP session (new SSRC, fresh jitter buffer).
                            match RtpSession::new(session_config(&n, ctx.rtp_timeout, &ctx.sip_call_id), now) {
                                Ok(r) => rtp = r,
                                Err(e) => tracing::error!(error = %e, "cannot switch codec; keeping the old one"),
                            }
                        } else {
                            rtp.set_remote(now, n.remote_rtp, n.remote_rtcp);
                            rtp.set_direction(now, n.direction);
                        }
                        rtp_mux = n.rtcp_mux;
                        ctx.negotiated = *n;
                    }
                    Some(ToCall::TransferProgress { status, final_ }) => {
                        tracing::info!(status, final_, "transfer progress");
                        if final_ && (200..300).contains(&status) {
                            live.transfer_accepted(now, &mut outs);
                            ended_by = Some("transferred to a person".into());
                            agent_hangup = true;
                        } else if final_ || status >= 300 {
                            tracing::warn!(status, "transfer failed; ending the call");
                            ended_by = Some(format!("transfer failed ({status})"));
                            agent_hangup = true;
                        }
                    }
                }
            }
            _ = sleep_until(rtp_timer) => {
                if let Err(e) = rtp.handle_timeout(Instant::now()) {
                    tracing::debug!(error = %e, "RTP timer");
                }
            }
        }
        let now = Instant::now();
        // What the conversation wants done.
        for out in outs.drain(..) {
            match out {
                LiveOutput::Audio(frame) => {
                    if let Err(e) = rtp.send_frame(now, &frame) {
                        tracing::debug!(error = %e, "agent frame not sent");
                    }
                }
                LiveOutput::Transfer if !transfer_pending => match &ctx.transfer_target {
                    Some(target) => {
                        transfer_pending = true;
                        tracing::info!(%target, "handing the caller to a person (REFER)");
                        let _ = ctx.to_server.send(FromCall::Refer(ctx.sip_call, target.clone()));
                    }
                    None => {
                        tracing::warn!("the flow asked for a person but the trunk has no transfer_target; hanging up");
                        ended_by = Some("no transfer target".into());
                        agent_hangup = true;
                    }
                },
                LiveOutput::Transfer => {}
                LiveOutput::Hangup => {
                    ended_by.get_or_insert_with(|| "agent hung up".into());
                    agent_hangup = true;
                }
                LiveOutput::Event(event) => log_event(&node, &event),
            }
        }
        // What the media session wants sent, and what it noticed.
        while let Some(out) = rtp.poll_output() {
            match out {
                RtpOutput::Transmit { to, data, rtcp } => send(if rtcp && !rtp_mux { &ctx.rtcp } else { &ctx.rtp }, to, &data).await,
                RtpOutput::Event(RtpEvent::Dtmf { digit, .. }) => {
                    live.dtmf(now, digit, &mut outs);
                }
                RtpOutput::Event(RtpEvent::Inactive { silent_for }) => {
                    tracing::warn!(silent_ms = silent_for.as_millis() as u64, "no RTP from the caller; hanging up");
                    ended_by.get_or_insert_with(|| "RTP timeout".into());
                    agent_hangup = true;
                }
                RtpOutput::Event(RtpEvent::Latched { from }) => tracing::debug!(%from, "RTP latched to the caller's source address"),
                RtpOutput::Event(other) => tracing::debug!(event = ?other, "RTP event"),
            }
        }
    }

    let now = Instant::now();
    let _ = rtp.close(now, ended_by.as_deref());
    while let Some(out) = rtp.poll_output() {
        if let RtpOutput::Transmit { to, data, rtcp } = out {
            send(if rtcp && !rtp_mux { &ctx.rtcp } else { &ctx.rtp }, to, &data).await;
        }
    }
    if agent_hangup {
        let _ = ctx.to_server.send(FromCall::Hangup(ctx.sip_call));
    }
    let stats = rtp.stats();
    node.metrics.rtp_packets_total.with(RtpDirection::Received).inc_by(stats.packets_in);
    node.metrics.rtp_packets_total.with(RtpDirection::Sent).inc_by(stats.packets_out);
    let summary = live.finish(now);
    node_metrics::call_ended(&node.metrics, MetricsChannel::Sip, &summary);
    node.active_calls.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(
        reason = ended_by.as_deref().unwrap_or(""),
        duration_ms = summary.duration_ms as u64,
        turns = summary.turns.len(),
        tasks_completed = ?summary.tasks_completed,
        transferred = summary.transferred,
        barge_ins = summary.counters.barge_ins,
        rtp = ?stats,
        "call ended"
    );
    let origin = CallOrigin {
        node_id: &node.node_id,
        call_id: &outcome_call_id(&ctx.sip_call_id),
        channel: Channel::Sip,
        trunk_or_site: &ctx.trunk,
        number: &ctx.number,
    };
    match summary.outcome_events(origin) {
        Ok(events) => match node.sink.record(events).await {
            Ok(r) if r.dropped > 0 => {
                node.metrics.outcome_drops_total.with(DropReason::SpoolFull).inc_by(r.dropped as u64);
                tracing::error!(dropped = r.dropped, "outcome events dropped");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outcome events not recorded"),
        },
        Err(e) => tracing::error!(error = %e, "outcome events not built"),
    }
    let _ = ctx.to_server.send(FromCall::Ended(ctx.sip_call));
}

/// The media session for a negotiated leg: the trunk's RTP timeout, the
/// wall clock for RTCP sender reports, a fresh random seed.
fn session_config(n: &Negotiated, rtp_timeout: Duration, cname: &str) -> RtpSessionConfig {
    let mut cfg = RtpSessionConfig::from_negotiated(n, super::seed(), format!("voice-edge@{cname}"));
    cfg.inactivity_timeout = rtp_timeout;
    cfg.ntp_at_start = ntp_now();
    cfg
}

/// Now as a 32.32 NTP timestamp (seconds since 1900).
fn ntp_now() -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ((d.as_secs() + NTP_UNIX_OFFSET) << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// The call id in outcome records: the SIP Call-ID when it is a valid id
/// there, else a digest of it.
fn outcome_call_id(sip_call_id: &str) -> String {
    if crate::outcome::event::validate_call_id(sip_call_id).is_ok() {
        sip_call_id.to_string()
    } else {
        use sha2::Digest;
        format!("sip-{}", &hex::encode(sha2::Sha256::digest(sip_call_id.as_bytes()))[..32])
    }
}

/// One line per turn at INFO with the fields operators filter on.
fn log_event(node: &Node, event: &CallEvent) {
    match event {
        CallEvent::TurnCompleted(t) => {
            node_metrics::turn_completed(&node.metrics, t);
            tracing::info!(
                turn = t.turn,
                intent = t.intent.as_deref().unwrap_or(""),
                confidence = t.intent_confidence,
                voice_to_voice_ms = t.voice_to_voice_ms.unwrap_or(-1.0),
                end_of_utterance_ms = t.end_of_utterance_ms,
                asr_ms = t.asr_ms.unwrap_or(-1.0),
                intent_ms = t.intent_ms.unwrap_or(-1.0),
                tts_ms = t.tts_ms.unwrap_or(-1.0),
                barged_in = t.barged_in,
                transcript = %t.transcript,
                reply = %t.reply,
                "turn"
            );
        }
        CallEvent::BargeIn => tracing::debug!("barge-in"),
        CallEvent::Satisfaction { score } => tracing::info!(score, "caller rated the call"),
        CallEvent::EngineFailed { id, error } => tracing::warn!(request = id, %error, "engine request failed"),
        other => tracing::debug!(event = ?other, "call event"),
    }
}

async fn send(sock: &UdpSocket, to: SocketAddr, data: &[u8]) {
    if let Err(e) = sock.send_to(data, to).await {
        tracing::debug!(%to, error = %e, "RTP send failed");
    }
}

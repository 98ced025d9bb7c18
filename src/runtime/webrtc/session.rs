//! One browser session: its peer connection (the `webrtc` crate: ICE,
//! DTLS-SRTP, SCTP) and the driver task that runs the conversation.
//!
//! [`Session::negotiate`] answers the page's offer: Opus (payload type as
//! offered) both ways, one local audio track, host candidates on
//! `webrtc.bind_ip` (1:1 NAT address and STUN when configured), gathering
//! finished before the answer goes back (no trickle).
//!
//! [`Session::run`] is the driver, one tokio task per session:
//! - every 20 ms: the caller's next frame from [`WebrtcAudio`] (jitter
//!   buffer, Opus decode at 16 kHz, concealment) into [`LiveCall::tick`];
//!   the agent's frames are Opus-encoded and written to the local track
//!   (a frame of silence when the agent is quiet, so the browser's RTP
//!   clock runs with the wall clock);
//! - RTP from the browser's track and messages from its data channel come
//!   through small forwarding tasks (aborted at the end);
//! - call events go to the page as data channel messages
//!   ([`ServerMessage`]); keypad digits, hang-up and the rating come back.
//!
//! The conversation starts when the connection is up (so the greeting is
//! heard) and ends when the page hangs up (data channel or DELETE), the
//! agent hangs up, ICE fails or stays disconnected, the connection does
//! not come up within `webrtc.connect_timeout_s`, the session outlives
//! `webrtc.session_timeout_s`, or the node drains. Its outcome events
//! (channel `webrtc`, site = the page's origin) are recorded then; a rating
//! that arrives within `webrtc.rating_window_s` afterwards becomes a
//! satisfaction event. The peer connection is closed last.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

use super::WebrtcError;
use crate::call::CallEvent;
use crate::media::FRAME_SAMPLES;
use crate::ops::metrics::{Channel as MetricsChannel, DropReason};
use crate::ops::webrtc_config::WebrtcConfig;
use crate::outcome::event::{Channel, SatisfactionRecord, SurveyMethod, SCHEMA_VERSION};
use crate::outcome::OutcomeEvent;
use crate::proto::webrtc_audio::WebrtcAudio;
use crate::proto::whip::SessionId;
use crate::proto::widget::{ClientMessage, ServerMessage};
use crate::runtime::daemon::Node;
use crate::runtime::live_call::{CallOrigin, LiveCall, LiveOutput};
use crate::runtime::node_metrics;

/// What the registry tells a session.
#[derive(Debug)]
pub enum Control {
    /// End the session now (DELETE, drain).
    Hangup { reason: String },
}

const FRAME: Duration = Duration::from_millis(20);
/// Longest wait for ICE gathering before the answer is sent anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that stays `disconnected` this long is over.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(5);
/// Data channel messages held until the channel opens.
const MAX_QUEUED_MESSAGES: usize = 256;

/// What [`Session::negotiate`] needs.
pub struct Setup {
    pub node: Arc<Node>,
    pub cfg: WebrtcConfig,
    pub id: SessionId,
    pub site: String,
    pub bind: SocketAddr,
    pub opus_payload_type: u8,
}

/// Peer connection events, from the crate's callbacks to the driver.
enum PcEvent {
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
    DataChannel(Arc<dyn DataChannel>),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::Track(track));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.events.send(PcEvent::DataChannel(data_channel));
    }
}

/// A negotiated session, ready to run.
pub struct Session {
    setup: Setup,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    answer: String,
    events: mpsc::UnboundedReceiver<PcEvent>,
}

/// Inbound from the forwarding tasks.
enum Inbound {
    Rtp { sequence: u16, timestamp: u32, ssrc: u32, marker: bool, payload: Bytes },
    Message(Vec<u8>),
    ChannelOpen,
    ChannelClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for ICE and DTLS.
    Connecting,
    /// The conversation runs.
    Talking,
    /// The conversation is over; a rating may still come.
    Rating,
}

impl Session {
    /// Builds the peer connection and answers `offer`.
    pub async fn negotiate(setup: Setup, offer: String) -> Result<Session, WebrtcError> {
        let stack = |e: webrtc::error::Error| WebrtcError::Stack(e.to_string());
        let opus = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: setup.opus_payload_type,
            ..Default::default()
        };
        let mut media = MediaEngine::default();
        media.register_codec(opus.clone(), RtpCodecKind::Audio).map_err(stack)?;
        let registry = register_default_interceptors(Registry::new(), &mut media).map_err(stack)?;

        let mut settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(setup.bind.ip().is_loopback())
            .with_ice_timeouts(Some(Duration::from_secs(4)), Some(Duration::from_secs(12)), Some(Duration::from_secs(2)));
        if let Some(ip) = setup.cfg.public_ip {
            settings = settings.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        let ice_servers = if setup.cfg.stun_servers.is_empty() {
            vec![]
        } else {
            vec![RTCIceServer { urls: setup.cfg.stun_servers.clone(), ..Default::default() }]
        };
        let config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();

        let (events_tx, events) = mpsc::unbounded_channel();
        let (gathered_tx, mut gathered) = watch::channel(false);
        let handler = Arc::new(Handler { events: events_tx, gathered: gathered_tx });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![setup.bind])
            .build()
            .await
            .map_err(stack)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let result = async {
            let ssrc = ssrc_from(&setup.id);
            let track = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        "voice-edge".to_owned(),
                        "agent".to_owned(),
                        "agent voice".to_owned(),
                        RtpCodecKind::Audio,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                            codec: opus.rtp_codec.clone(),
                            ..Default::default()
                        }],
                    ),
                )
                .map_err(stack)?,
            );
            let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.map_err(stack)?;
            let offer = RTCSessionDescription::offer(offer).map_err(|e| WebrtcError::Negotiation(e.to_string()))?;
            pc.set_remote_description(offer).await.map_err(|e| WebrtcError::Negotiation(e.to_string()))?;
            let answer = pc.create_answer(None).await.map_err(|e| WebrtcError::Negotiation(e.to_string()))?;
            pc.set_local_description(answer).await.map_err(stack)?;
            if tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|g| *g)).await.is_err() {
                tracing::warn!(session = %setup.id, "ICE gathering unfinished; answering with what we have");
            }
            let answer = pc.local_description().await.ok_or(WebrtcError::Gathering(GATHER_TIMEOUT))?.sdp;
            let payload_type = sender
                .get_parameters()
                .await
                .map_err(stack)?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .unwrap_or(setup.opus_payload_type);
            Ok::<_, WebrtcError>((track, ssrc, payload_type, answer))
        }
        .await;
        match result {
            Ok((track, ssrc, payload_type, answer)) => Ok(Session { setup, pc, track, ssrc, payload_type, answer, events }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    pub fn answer_sdp(&self) -> &str {
        &self.answer
    }

    /// Drives the session to its end; `state` mirrors the phase for the
    /// registry's listing.
    pub async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>, state: Arc<Mutex<&'static str>>) {
        let node = self.setup.node.clone();
        let cfg = self.setup.cfg.clone();
        let id = self.setup.id.clone();
        let call_id = id.call_id();
        let created = Instant::now();
        let session_deadline = created + Duration::from_secs(u64::from(cfg.session_timeout_s));
        let connect_deadline = created + Duration::from_secs(u64::from(cfg.connect_timeout_s));
        let mut rating_deadline: Option<Instant> = None;
        let mut disconnected_since: Option<Instant> = None;

        let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(512);
        let mut forwarders: Vec<JoinHandle<()>> = Vec::new();
        let mut channel: Option<Arc<dyn DataChannel>> = None;
        let mut channel_open = false;
        let mut queued: Vec<String> = Vec::new();
        let mut audio = match WebrtcAudio::new() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(session = %id, error = %e, "Opus codec unavailable; closing the session");
                None
            }
        };
        let mut live: Option<LiveCall> = None;
        let mut phase = Phase::Connecting;
        let mut outs: Vec<LiveOutput> = Vec::new();
        let mut tick = tokio::time::interval(FRAME);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut silence = vec![0.0f32; FRAME_SAMPLES];
        let mut payload = Vec::with_capacity(256);
        let mut closing: Option<String> = audio.is_none().then(|| "no Opus codec".to_owned());
        let mut call_over: Option<String> = None;
        let mut last_state = "";

        while closing.is_none() {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let (Some(call), Some(a)) = (live.as_mut(), audio.as_mut()) {
                        node.media_heartbeat.fetch_add(1, Ordering::Relaxed);
                        let frame = a.poll_frame(now);
                        call.tick(now, &frame, &mut outs);
                    }
                    if now >= session_deadline {
                        closing = Some("session timeout".into());
                    } else if phase == Phase::Connecting && now >= connect_deadline {
                        closing = Some("connection not established in time".into());
                    } else if rating_deadline.is_some_and(|d| now >= d) {
                        closing = Some("rating window over".into());
                    } else if disconnected_since.is_some_and(|t| now.duration_since(t) >= DISCONNECTED_GRACE) {
                        closing = Some("ICE disconnected".into());
                    }
                }
                Some(result) = async { match live.as_mut() { Some(c) => c.engine_results().recv().await, None => std::future::pending().await } } => {
                    if let Some(call) = live.as_mut() {
                        call.engine_result(Instant::now(), result, &mut outs);
                    }
                }
                ev = self.events.recv() => match ev {
                    None => closing = Some("peer connection gone".into()),
                    Some(PcEvent::State(s)) => {
                        tracing::debug!(session = %id, state = %s, "peer connection state");
                        match s {
                            RTCPeerConnectionState::Connected => {
                                disconnected_since = None;
                                if phase == Phase::Connecting {
                                    let now = Instant::now();
                                    phase = Phase::Talking;
                                    let flows = node.flows();
                                    let config = node.config();
                                    match flows.get(&config.flows.default).cloned() {
                                        Some(flow) => {
                                            node.active_calls.fetch_add(1, Ordering::SeqCst);
                                            node_metrics::call_started(&node.metrics, MetricsChannel::Webrtc);
                                            live = Some(LiveCall::start(&node.call_services(), node.next_call_number(), flow, config.call.clone(), config.vad.clone(), now, SystemTime::now()).without_keypad_survey());
                                            tracing::info!(session = %id, site = %self.setup.site, "browser call connected");
                                        }
                                        None => closing = Some("the default flow is not loaded".into()),
                                    }
                                }
                            }
                            RTCPeerConnectionState::Disconnected => { disconnected_since.get_or_insert_with(Instant::now); }
                            RTCPeerConnectionState::Failed => closing = Some("ICE failed".into()),
                            RTCPeerConnectionState::Closed => closing = Some("peer connection closed".into()),
                            _ => {}
                        }
                    }
                    Some(PcEvent::Track(track)) => {
                        if track.kind().await == RtpCodecKind::Audio {
                            forwarders.push(tokio::spawn(forward_track(track, inbound_tx.clone())));
                        }
                    }
                    Some(PcEvent::DataChannel(dc)) => {
                        if channel.is_none() {
                            forwarders.push(tokio::spawn(forward_channel(dc.clone(), inbound_tx.clone())));
                            channel = Some(dc);
                        }
                    }
                },
                Some(msg) = inbound.recv() => match msg {
                    Inbound::Rtp { sequence, timestamp, ssrc, marker, payload } => {
                        if let Some(a) = audio.as_mut() {
                            a.push(Instant::now(), sequence, timestamp, ssrc, marker, &payload);
                        }
                    }
                    Inbound::ChannelOpen => {
                        channel_open = true;
                        if let Some(dc) = &channel {
                            for text in queued.drain(..) {
                                let _ = dc.send_text(&text).await;
                            }
                        }
                    }
                    Inbound::ChannelClosed => {
                        channel_open = false;
                        if phase == Phase::Rating {
                            closing = Some("page closed the data channel".into());
                        }
                    }
                    Inbound::Message(bytes) => match ClientMessage::parse(&bytes) {
                        Ok(ClientMessage::Dtmf(digit)) => {
                            if let Some(call) = live.as_mut() {
                                call.dtmf(Instant::now(), digit, &mut outs);
                            }
                        }
                        Ok(ClientMessage::Hangup) => {
                            call_over.get_or_insert_with(|| "caller hung up".into());
                        }
                        Ok(ClientMessage::Rating(score)) => {
                            if phase == Phase::Talking {
                                call_over.get_or_insert_with(|| "caller hung up".into());
                            }
                            self.record_rating(&call_id, score, phase != Phase::Connecting).await;
                            self.say(&channel, channel_open, &mut queued, ServerMessage::Rated { score }).await;
                        }
                        Err(e) => {
                            tracing::debug!(session = %id, error = %e, "data channel message refused");
                            self.say(&channel, channel_open, &mut queued, ServerMessage::Error { message: e.to_string() }).await;
                        }
                    },
                },
                msg = control.recv() => match msg {
                    Some(Control::Hangup { reason }) => closing = Some(reason),
                    None => closing = Some("registry gone".into()),
                },
            }

            // What the conversation wants done.
            let mut sent_audio = false;
            for out in outs.drain(..) {
                match out {
                    LiveOutput::Audio(frame) => {
                        if let Some(a) = audio.as_mut() {
                            self.send_frame(a, &frame, &mut payload).await;
                            sent_audio = true;
                        }
                    }
                    LiveOutput::Transfer => {
                        tracing::info!(session = %id, "the flow asked for a person; the widget has no transfer, ending the call");
                        call_over.get_or_insert_with(|| "transfer requested (not available in the widget)".into());
                    }
                    LiveOutput::Hangup => {
                        call_over.get_or_insert_with(|| "agent hung up".into());
                    }
                    LiveOutput::Event(event) => {
                        log_event(&node, &id, &event);
                        if let Some(msg) = to_page(&event) {
                            self.say(&channel, channel_open, &mut queued, msg).await;
                        }
                    }
                }
            }
            // Keep the browser's RTP clock running through the agent's silences.
            if !sent_audio && phase == Phase::Talking {
                if let Some(a) = audio.as_mut() {
                    silence.fill(0.0);
                    self.send_frame(a, &silence, &mut payload).await;
                }
            }
            if let Some(state_now) = live.as_ref().map(|c| c.state().as_str()) {
                if state_now != last_state {
                    last_state = state_now;
                    *lock(&state) = state_now;
                }
            }
            if let Some(reason) = call_over.take() {
                if phase == Phase::Talking {
                    if let Some(call) = live.take() {
                        self.finish_call(call, &call_id, &reason).await;
                    }
                    phase = Phase::Rating;
                    *lock(&state) = "rating";
                    rating_deadline = Some(Instant::now() + Duration::from_secs(u64::from(cfg.rating_window_s)));
                    self.say(&channel, channel_open, &mut queued, ServerMessage::State { state: "ended".into() }).await;
                    self.say(&channel, channel_open, &mut queued, ServerMessage::Ended { call_id: call_id.clone(), reason }).await;
                }
            }
        }

        let reason = closing.unwrap_or_default();
        *lock(&state) = "closing";
        if let Some(call) = live.take() {
            self.say(&channel, channel_open, &mut queued, ServerMessage::Ended { call_id: call_id.clone(), reason: reason.clone() }).await;
            self.finish_call(call, &call_id, &reason).await;
        }
        if let Some(dc) = &channel {
            let _ = tokio::time::timeout(Duration::from_secs(1), dc.close()).await;
        }
        if tokio::time::timeout(Duration::from_secs(3), self.pc.close()).await.is_err() {
            tracing::warn!(session = %id, "peer connection close timed out");
        }
        for f in forwarders {
            f.abort();
            let _ = f.await;
        }
        let stats = audio.as_ref().map(|a| a.stats());
        tracing::info!(session = %id, %reason, audio = ?stats, duration_ms = created.elapsed().as_millis() as u64, "browser session closed");
    }

    async fn send_frame(&self, audio: &mut WebrtcAudio, frame: &[f32], payload: &mut Vec<u8>) {
        payload.clear();
        if let Err(e) = audio.encode(frame, payload) {
            tracing::debug!(error = %e, "agent frame not encoded");
            return;
        }
        let sample = Sample { data: Bytes::copy_from_slice(payload), duration: FRAME, ..Sample::new(Instant::now()) };
        if let Err(e) = self.track.sample_writer(self.ssrc, self.payload_type).write_sample(&sample).await {
            tracing::trace!(error = %e, "agent frame not sent");
        }
    }

    /// Sends a message to the page now, or once the channel opens.
    async fn say(&self, channel: &Option<Arc<dyn DataChannel>>, open: bool, queued: &mut Vec<String>, msg: ServerMessage) {
        let text = msg.to_json();
        match channel {
            Some(dc) if open => {
                if let Err(e) = dc.send_text(&text).await {
                    tracing::debug!(error = %e, "data channel send failed");
                }
            }
            _ if queued.len() < MAX_QUEUED_MESSAGES => queued.push(text),
            _ => {}
        }
    }

    /// The conversation's end: metrics, logs, outcome events.
    async fn finish_call(&self, call: LiveCall, call_id: &str, reason: &str) {
        let node = &self.setup.node;
        let summary = call.finish(Instant::now());
        node_metrics::call_ended(&node.metrics, MetricsChannel::Webrtc, &summary);
        node.active_calls.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(
            session = %self.setup.id,
            site = %self.setup.site,
            reason,
            duration_ms = summary.duration_ms as u64,
            turns = summary.turns.len(),
            tasks_completed = ?summary.tasks_completed,
            "browser call ended"
        );
        let origin = CallOrigin {
            node_id: &node.node_id,
            call_id,
            channel: Channel::Webrtc,
            trunk_or_site: &self.setup.site,
            number: "widget",
        };
        match summary.outcome_events(origin) {
            Ok(events) => self.record(events).await,
            Err(e) => tracing::error!(error = %e, "outcome events not built"),
        }
    }

    async fn record_rating(&self, call_id: &str, score: u8, had_call: bool) {
        if !had_call {
            return;
        }
        let record = SatisfactionRecord {
            schema_version: SCHEMA_VERSION,
            call_id: call_id.to_owned(),
            score,
            method: SurveyMethod::WidgetRating,
            time: SystemTime::now().into(),
        };
        match OutcomeEvent::satisfaction(&self.setup.node.node_id, record) {
            Ok(event) => {
                tracing::info!(session = %self.setup.id, score, "widget rating");
                self.record(vec![event]).await;
            }
            Err(e) => tracing::error!(error = %e, "satisfaction event not built"),
        }
    }

    async fn record(&self, events: Vec<OutcomeEvent>) {
        let node = &self.setup.node;
        match node.sink.record(events).await {
            Ok(r) if r.dropped > 0 => {
                node.metrics.outcome_drops_total.with(DropReason::SpoolFull).inc_by(r.dropped as u64);
                tracing::error!(dropped = r.dropped, "outcome events dropped");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outcome events not recorded"),
        }
    }
}

/// The browser's RTP, decrypted, to the driver.
async fn forward_track(track: Arc<dyn TrackRemote>, to: mpsc::Sender<Inbound>) {
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(p) = event {
            let msg = Inbound::Rtp {
                sequence: p.header.sequence_number,
                timestamp: p.header.timestamp,
                ssrc: p.header.ssrc,
                marker: p.header.marker,
                payload: p.payload,
            };
            // Full means the driver is stuck; dropping is what a network would do.
            if let Err(mpsc::error::TrySendError::Closed(_)) = to.try_send(msg) {
                return;
            }
        }
    }
}

/// The page's data channel events, to the driver.
async fn forward_channel(dc: Arc<dyn DataChannel>, to: mpsc::Sender<Inbound>) {
    while let Some(event) = dc.poll().await {
        let msg = match event {
            DataChannelEvent::OnOpen => Inbound::ChannelOpen,
            DataChannelEvent::OnClose => Inbound::ChannelClosed,
            DataChannelEvent::OnMessage(m) => Inbound::Message(m.data.to_vec()),
            _ => continue,
        };
        let closed = matches!(msg, Inbound::ChannelClosed);
        if to.send(msg).await.is_err() || closed {
            return;
        }
    }
    let _ = to.send(Inbound::ChannelClosed).await;
}

/// The page's view of a call event.
fn to_page(event: &CallEvent) -> Option<ServerMessage> {
    Some(match event {
        CallEvent::State { state } => ServerMessage::State { state: state.as_str().to_owned() },
        CallEvent::PartialTranscript { text } => ServerMessage::Partial { text: text.clone() },
        CallEvent::Transcript { turn, text } => ServerMessage::Transcript { turn: *turn, text: text.clone() },
        CallEvent::AgentReply { turn, text } => ServerMessage::Reply { turn: *turn, text: text.clone() },
        _ => return None,
    })
}

fn log_event(node: &Node, id: &SessionId, event: &CallEvent) {
    match event {
        CallEvent::TurnCompleted(t) => {
            node_metrics::turn_completed(&node.metrics, t);
            tracing::info!(
                session = %id,
                turn = t.turn,
                intent = t.intent.as_deref().unwrap_or(""),
                confidence = t.intent_confidence,
                voice_to_voice_ms = t.voice_to_voice_ms.unwrap_or(-1.0),
                transcript = %t.transcript,
                reply = %t.reply,
                "turn"
            );
        }
        CallEvent::EngineFailed { id: request, error } => tracing::warn!(session = %id, request, %error, "engine request failed"),
        other => tracing::debug!(session = %id, event = ?other, "call event"),
    }
}

/// The agent track's SSRC, from the session's random id.
fn ssrc_from(id: &SessionId) -> u32 {
    let hex = &id.as_str()[..8];
    u32::from_str_radix(hex, 16).unwrap_or(0x5eed_0001).max(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

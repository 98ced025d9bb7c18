//! The outcome shipper: moves durable records from the outcome spool to the
//! collector, a NATS JetStream stream, and acknowledges them in the spool
//! once the stream has them.
//!
//! # The loop
//!
//! ```text
//! read up to `batch` durable records after the spool's ack   (spool.read_from(acked + 1, batch))
//! publish each, pipelined, on `<prefix>.<event type>`        (e.g. outcomes.voice_edge.outcome.call.v1)
//!     with header Nats-Msg-Id = the event id                 (outcome::event::peek_id)
//! await each PubAck in seq order
//! ack the spool up to the last record of the unbroken run of PubAcks
//! ```
//!
//! Nothing else decides what has been delivered: there is no cursor of its
//! own, every batch starts at `acked() + 1`, so a shipper restarted (or a
//! node rebooted) resumes exactly where the durable ack says.
//!
//! # Exactly once, and where that holds
//!
//! Delivery from the spool is at-least-once: a record is acked in the
//! spool only after its PubAck, so a crash, a timeout or a lost connection
//! between the PubAck and the spool's ack sends it again. Two mechanisms
//! turn that into exactly once in the stream:
//!
//! - **The spool's ack** keeps old events from ever being sent again: an
//!   acknowledged record is never read again (spool invariant 5), however
//!   long ago it was shipped.
//! - **JetStream's deduplication** removes the re-sends that the gap
//!   between PubAck and ack produces: every message carries the event's
//!   deterministic id as `Nats-Msg-Id`, and the stream (created here with
//!   [`ShipperConfig::duplicate_window`], 2 minutes by default) drops a
//!   message whose id it has seen within that window, answering with a
//!   PubAck whose `duplicate` flag is set (counted in
//!   [`ShipperStats::duplicates`]).
//!
//! The window is the limit: JetStream remembers ids only for
//! `duplicate_window`. A record PubAcked but not acked in the spool, and
//! sent again only after the window has passed (the node crashed right
//! after the PubAck and stayed down longer than the window), is stored
//! twice. Settlement therefore keys billed facts by event id as well
//! (`docs/OUTCOMES.md`); widen the window if nodes may stay down longer
//! (JetStream keeps one id per message of the window in memory).
//!
//! # Failures
//!
//! | what fails | what the shipper does |
//! |---|---|
//! | the collector is down at start | retries the connect with capped exponential backoff |
//! | the connection drops | the client reconnects by itself (same backoff); publishes meanwhile fail their `publish_timeout`, are counted and retried from the ack |
//! | a PubAck times out or is an error | acks the unbroken run before it, backs off, sends the rest again (dedupe drops what had arrived) |
//! | the stream is missing (no responders) | creates it again before the next batch |
//! | a record is not an outcome event (no id or type) | logs it, counts it in [`ShipperStats::invalid`], acks past it (a record that can never be sent must not stall the ones behind it) |
//! | the spool cannot be read or acked | counts the error, backs off, retries |
//!
//! Backoff is deterministic (no jitter): `backoff_initial * 2^n`, capped at
//! `backoff_max`, reset by a batch that goes through. Tests inject small
//! values through [`ShipperConfig`].
//!
//! # The spool mutex and blocking IO
//!
//! The spool is shared as `Arc<std::sync::Mutex<Spool>>` with the outcome
//! recorder that appends to it. The shipper takes the lock twice per batch,
//! each time inside `tokio::task::spawn_blocking`: once to flush and read
//! the batch, once to ack. Measured on this project's reference machine
//! (ext4 on a virtual disk, 256 records of 2 KB, release build):
//! `read_from` takes 0.14 ms (p99 0.2 ms), but `ack` takes 12 ms (p99
//! 16 ms) because it fsyncs the ack file and the directory. 12 ms is far
//! too long for a runtime worker, and even 0.14 ms of disk reads can grow
//! on a cold cache, so both go to the blocking pool (its cost, some tens of
//! microseconds, is nothing next to a network round trip). The lock is
//! never held across an `.await`. The ack is the longest hold, once per
//! batch; under load batches fill up and acks become rarer per record.
//!
//! When idle the shipper polls the spool every `idle_poll` (or at once when
//! [`Shipper::notifier`] is notified after an append), and each poll calls
//! [`Spool::flush`], so it doubles as the flush timer that
//! `FsyncPolicy::Interval` needs on a quiet spool.
//!
//! # Stopping
//!
//! [`Shipper::run`] returns when its stop signal (a `watch::Receiver<bool>`)
//! turns true or its sender is dropped: at once when idle, backing off or
//! connecting, and otherwise after the batch in flight has had its PubAcks
//! (each bounded by `publish_timeout`) and its spool ack.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use serde::Deserialize;
use tokio::sync::{watch, Notify};

use crate::outcome::event::peek_id;
use crate::outcome::{Spool, SpoolError};

/// Where and how the shipper delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipperConfig {
    /// NATS server URL(s), comma separated, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Messages go to `<subject_prefix>.<event type>`; the stream captures
    /// `<subject_prefix>.>`. Dot-separated tokens, no wildcards.
    pub subject_prefix: String,
    /// The JetStream stream, created if missing.
    pub stream_name: String,
    /// Records read, published and acked together (at least 1).
    pub batch: usize,
    /// First retry delay after a failure.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Bound on each PubAck and JetStream API call.
    pub publish_timeout: Duration,
    /// JetStream's deduplication window, set when the stream is created.
    pub duplicate_window: Duration,
    /// How often an idle shipper looks for new durable records.
    pub idle_poll: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
}

impl ShipperConfig {
    /// Defaults: prefix `outcomes`, stream `OUTCOMES`, batches of 256,
    /// backoff 100 ms to 30 s, 5 s publish timeout, 2 minute dedupe window,
    /// 50 ms idle poll, 5 s connect timeout.
    pub fn new(nats_url: impl Into<String>) -> Self {
        ShipperConfig {
            nats_url: nats_url.into(),
            subject_prefix: "outcomes".into(),
            stream_name: "OUTCOMES".into(),
            batch: 256,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
            idle_poll: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn validate(&self) -> Result<(), ShipperError> {
        let bad = |m: String| Err(ShipperError::Config(m));
        if self.nats_url.trim().is_empty() {
            return bad("nats_url is empty".into());
        }
        if !is_subject(&self.subject_prefix) {
            return bad(format!(
                "subject_prefix {:?} must be dot-separated tokens of A-Z a-z 0-9 _ -",
                self.subject_prefix
            ));
        }
        let name_ok = !self.stream_name.is_empty()
            && self.stream_name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !name_ok {
            return bad(format!("stream_name {:?} must be A-Z a-z 0-9 _ - only", self.stream_name));
        }
        if self.batch == 0 {
            return bad("batch must be at least 1".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be above 0 and at most backoff_max".into());
        }
        for (name, d) in [
            ("publish_timeout", self.publish_timeout),
            ("duplicate_window", self.duplicate_window),
            ("idle_poll", self.idle_poll),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be above 0"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("invalid shipper config: {0}")]
    Config(String),
    #[error("the shipper needs a writable spool; this one is open read-only")]
    ReadOnlySpool,
}

/// Counters and gauges for metrics; read them from [`Shipper::stats`].
/// Counters start at 0 when the shipper is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipperStats {
    /// Records the stream acknowledged (PubAcks), duplicates included.
    pub published: u64,
    /// PubAcks with the `duplicate` flag: the stream already had the event
    /// (a re-send after a failure between PubAck and spool ack).
    pub duplicates: u64,
    /// Failed connects, stream set-ups, publishes, PubAcks and spool calls.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Records skipped because they are not outcome events.
    pub invalid: u64,
    /// Batches fully or partly delivered.
    pub batches: u64,
    /// The spool's durable seq at the last look.
    pub durable_seq: u64,
    /// The spool's acked seq at the last look.
    pub acked_seq: u64,
    /// `durable_seq - acked_seq`: records waiting (gaps from corruption included).
    pub lag: u64,
    /// Connected to the collector now.
    pub connected: bool,
}

/// Capped exponential backoff without jitter: `initial * 2^n`, at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, failures: 0 }
    }

    /// The delay after the `n`th consecutive failure (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        self.initial.saturating_mul(2u32.saturating_pow(n.min(31))).min(self.max)
    }

    /// The delay to wait now, and counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Moves outcome records from the spool to JetStream; see the module doc.
pub struct Shipper {
    cfg: ShipperConfig,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<watch::Sender<ShipperStats>>,
    notify: Arc<Notify>,
    failing: bool,
}

impl fmt::Debug for Shipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shipper").field("cfg", &self.cfg).field("stats", &*self.stats.borrow()).finish()
    }
}

/// A connection and whether the stream is known to exist on it.
struct Link {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_ready: bool,
}

/// Why a step failed; `Display` is what goes into `last_error`.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Disconnected,
    Stream(String),
    Spool(String),
    Publish { seq: u64, error: String, stream_missing: bool },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Disconnected => f.write_str("collector disconnected; waiting for the reconnect"),
            Failure::Stream(e) => write!(f, "stream set-up: {e}"),
            Failure::Spool(e) => write!(f, "spool: {e}"),
            Failure::Publish { seq, error, .. } => write!(f, "publish of spool seq {seq}: {error}"),
        }
    }
}

/// What a turn of the loop did.
enum Step {
    Connected,
    /// Nothing durable past the ack.
    Idle,
    Shipped,
}

/// A record of the batch on its way.
enum InFlight {
    Sent(jetstream::context::PublishAckFuture),
    Invalid(String),
}

impl Shipper {
    /// A shipper for `spool` (writable: the shipper acks it). Nothing
    /// connects until [`Shipper::run`].
    pub fn new(cfg: ShipperConfig, spool: Arc<Mutex<Spool>>) -> Result<Shipper, ShipperError> {
        cfg.validate()?;
        if lock(&spool).is_read_only() {
            return Err(ShipperError::ReadOnlySpool);
        }
        let (tx, _) = watch::channel(ShipperStats::default());
        Ok(Shipper { cfg, spool, stats: Arc::new(tx), notify: Arc::new(Notify::new()), failing: false })
    }

    /// Live stats, for metrics (`borrow()` for the latest, `changed()` to wait).
    pub fn stats(&self) -> watch::Receiver<ShipperStats> {
        self.stats.subscribe()
    }

    /// Notify it after an append or commit to skip the rest of an idle poll.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Ships until `stop` turns true (or its sender is dropped), then
    /// returns the final stats. Failures are retried, never returned.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> ShipperStats {
        let mut backoff = Backoff::new(self.cfg.backoff_initial, self.cfg.backoff_max);
        let mut link: Option<Link> = None;
        tracing::info!(url = %self.cfg.nats_url, stream = %self.cfg.stream_name, "outcome shipper starting");
        loop {
            if stop_requested(&stop) {
                break;
            }
            let step = match link.as_mut() {
                Some(l) => self.step(l).await,
                None => {
                    let connected = tokio::select! {
                        r = self.connect() => r,
                        _ = stop_signal(&mut stop) => break,
                    };
                    connected.map(|l| {
                        link = Some(l);
                        Step::Connected
                    })
                }
            };
            match step {
                Ok(Step::Connected) => {}
                Ok(Step::Shipped) => {
                    backoff.reset();
                    self.recovered();
                }
                Ok(Step::Idle) => {
                    backoff.reset();
                    self.recovered();
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep(self.cfg.idle_poll) => {}
                        _ = stop_signal(&mut stop) => break,
                    }
                }
                Err(failure) => {
                    if let (Failure::Publish { stream_missing: true, .. }, Some(l)) = (&failure, link.as_mut()) {
                        l.stream_ready = false;
                    }
                    self.fail(&failure);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop_signal(&mut stop) => break,
                    }
                }
            }
        }
        // Every PubAck of the last batch was awaited: nothing is left to flush.
        drop(link);
        let final_stats = self.refresh_spool_stats().await;
        tracing::info!(
            published = final_stats.published,
            duplicates = final_stats.duplicates,
            lag = final_stats.lag,
            "outcome shipper stopped"
        );
        final_stats
    }

    /// One batch: make sure of the stream, read, publish, ack.
    async fn step(&mut self, l: &mut Link) -> Result<Step, Failure> {
        let connected = l.client.connection_state() == State::Connected;
        self.stats.send_if_modified(|s| std::mem::replace(&mut s.connected, connected) != connected);
        if !connected {
            return Err(Failure::Disconnected);
        }
        if !l.stream_ready {
            self.ensure_stream(&l.js).await?;
            l.stream_ready = true;
        }
        let records = self.read_batch().await?;
        if records.is_empty() {
            return Ok(Step::Idle);
        }
        let (ack_to, failure) = self.publish(&l.js, records).await;
        if let Some(seq) = ack_to {
            self.ack(seq).await?;
            self.stats.send_modify(|s| s.batches += 1);
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(Step::Shipped),
        }
    }

    async fn connect(&self) -> Result<Link, Failure> {
        let initial = self.cfg.backoff_initial;
        let max = self.cfg.backoff_max;
        let stats = Arc::clone(&self.stats);
        let options = async_nats::ConnectOptions::new()
            .name("voice-edge outcome shipper")
            .connection_timeout(self.cfg.connect_timeout)
            .ping_interval(Duration::from_secs(10))
            .reconnect_delay_callback(move |attempts| {
                let n = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
                Backoff::new(initial, max).delay(n)
            })
            .event_callback(move |event| {
                let stats = Arc::clone(&stats);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("outcome shipper: collector connection up");
                            stats.send_modify(|s| s.connected = true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("outcome shipper: collector connection lost; reconnecting");
                            stats.send_modify(|s| s.connected = false);
                        }
                        other => tracing::debug!(event = %other, "outcome shipper connection event"),
                    }
                }
            });
        let connect = options.connect(self.cfg.nats_url.as_str());
        let client = match tokio::time::timeout(self.cfg.connect_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
            Err(_) => return Err(Failure::Connect(format!("timed out after {:?}", self.cfg.connect_timeout))),
        };
        self.stats.send_modify(|s| s.connected = true);
        let js = jetstream::ContextBuilder::new().timeout(self.cfg.publish_timeout).build(client.clone());
        Ok(Link { client, js, stream_ready: false })
    }

    /// Finds or creates the stream capturing `<prefix>.>`.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), Failure> {
        let config = stream::Config {
            name: self.cfg.stream_name.clone(),
            subjects: vec![format!("{}.>", self.cfg.subject_prefix)],
            duplicate_window: self.cfg.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(|e| Failure::Stream(e.to_string()))?;
        let window = stream.cached_info().config.duplicate_window;
        if window < self.cfg.duplicate_window {
            tracing::warn!(
                stream = %self.cfg.stream_name, ?window, wanted = ?self.cfg.duplicate_window,
                "outcome stream exists with a shorter duplicate window than configured"
            );
        }
        Ok(())
    }

    /// Flushes the spool (its policy may owe a commit) and reads the next
    /// batch after the ack, on the blocking pool.
    async fn read_batch(&self) -> Result<Vec<(u64, Vec<u8>)>, Failure> {
        let spool = Arc::clone(&self.spool);
        let batch = self.cfg.batch;
        let (records, acked, durable) = blocking(move || {
            let mut s = lock(&spool);
            // A failed flush is logged by the spool and retried next time;
            // whatever is durable can still go.
            let _ = s.flush(Instant::now());
            let from = s.acked() + 1;
            let records = s.read_from(from, batch);
            (records, s.acked(), s.durable_seq())
        })
        .await?;
        self.set_seqs(acked, durable);
        records.map_err(|e| Failure::Spool(e.to_string()))
    }

    /// Publishes the batch pipelined, then awaits the PubAcks in order.
    /// Returns the last seq of the unbroken run of delivered (or invalid)
    /// records, and the failure that broke it.
    async fn publish(&self, js: &jetstream::Context, records: Vec<(u64, Vec<u8>)>) -> (Option<u64>, Option<Failure>) {
        let mut in_flight = Vec::with_capacity(records.len());
        let mut failure = None;
        for (seq, payload) in records {
            let (id, subject) = match envelope(&payload, &self.cfg.subject_prefix) {
                Ok(x) => x,
                Err(reason) => {
                    in_flight.push((seq, InFlight::Invalid(reason)));
                    continue;
                }
            };
            let message = PublishMessage::build().message_id(&id).payload(payload.into());
            match js.send_publish(subject, message).await {
                Ok(ack) => in_flight.push((seq, InFlight::Sent(ack))),
                Err(e) => {
                    failure = Some(publish_failure(seq, &e));
                    break;
                }
            }
        }
        let mut ack_to = None;
        let (mut published, mut duplicates, mut invalid) = (0, 0, 0);
        // Stop at the first failure: later PubAcks cannot be acked in the
        // spool before this one, and their records are sent again.
        for (seq, item) in in_flight {
            match item {
                InFlight::Invalid(reason) => {
                    tracing::error!(seq, %reason, "outcome spool record is not an outcome event; skipped");
                    invalid += 1;
                }
                InFlight::Sent(ack) => match ack.await {
                    Ok(ack) => {
                        published += 1;
                        duplicates += u64::from(ack.duplicate);
                    }
                    Err(e) => {
                        failure = Some(publish_failure(seq, &e));
                        break;
                    }
                },
            }
            ack_to = Some(seq);
        }
        self.stats.send_modify(|s| {
            s.published += published;
            s.duplicates += duplicates;
            s.invalid += invalid;
        });
        (ack_to, failure)
    }

    async fn ack(&self, seq: u64) -> Result<(), Failure> {
        let spool = Arc::clone(&self.spool);
        let (result, acked, durable) = blocking(move || {
            let mut s = lock(&spool);
            let r = s.ack(seq);
            (r, s.acked(), s.durable_seq())
        })
        .await?;
        self.set_seqs(acked, durable);
        result.map(|_| ()).map_err(|e: SpoolError| Failure::Spool(e.to_string()))
    }

    async fn refresh_spool_stats(&self) -> ShipperStats {
        let spool = Arc::clone(&self.spool);
        if let Ok((acked, durable)) = blocking(move || {
            let s = lock(&spool);
            (s.acked(), s.durable_seq())
        })
        .await
        {
            self.set_seqs(acked, durable);
        }
        self.stats.borrow().clone()
    }

    fn set_seqs(&self, acked: u64, durable: u64) {
        self.stats.send_modify(|s| {
            s.acked_seq = acked;
            s.durable_seq = durable;
            s.lag = durable.saturating_sub(acked);
        });
    }

    fn fail(&mut self, failure: &Failure) {
        let message = failure.to_string();
        if self.failing {
            tracing::debug!(error = %message, "outcome shipper: still failing");
        } else {
            tracing::warn!(error = %message, "outcome shipper failing; retrying with backoff");
            self.failing = true;
        }
        self.stats.send_modify(|s| {
            s.errors += 1;
            s.last_error = Some(message);
        });
    }

    fn recovered(&mut self) {
        if self.failing {
            let errors = self.stats.borrow().errors;
            tracing::info!(errors, "outcome shipper delivering again");
            self.failing = false;
        }
    }
}

/// The message id and subject of a serialized outcome event.
fn envelope(payload: &[u8], prefix: &str) -> Result<(String, String), String> {
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        ty: String,
    }
    let id = peek_id(payload).map_err(|e| e.to_string())?;
    // Visible ASCII only: it becomes a header value.
    if id.is_empty() || id.len() > 1024 || !id.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(format!("event id {id:?} is not 1 to 1024 visible ASCII characters"));
    }
    let ty = serde_json::from_slice::<TypeOnly>(payload).map_err(|e| e.to_string())?.ty;
    if !is_subject(&ty) {
        return Err(format!("event type {ty:?} cannot be a subject"));
    }
    Ok((id, format!("{prefix}.{ty}")))
}

/// Dot-separated, non-empty tokens of `A-Z a-z 0-9 _ -`.
fn is_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'))
}

fn publish_failure(seq: u64, e: &jetstream::context::PublishError) -> Failure {
    let stream_missing = e.kind() == jetstream::context::PublishErrorKind::StreamNotFound;
    Failure::Publish { seq, error: e.to_string(), stream_missing }
}

/// Locks the spool, recovering it from a panicked holder: shipping must go
/// on, and the spool's own state is consistent between calls.
fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Failure::Spool(format!("spool task failed: {e}")))
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Resolves when `stop` turns true or its sender is gone.
async fn stop_signal(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn envelope_gives_id_and_subject_and_refuses_what_cannot_be_sent() {
        let ok = br#"{"id":"edge-1:c-1:call","type":"voice_edge.outcome.call.v1","data":{}}"#;
        assert_eq!(
            envelope(ok, "outcomes").unwrap(),
            ("edge-1:c-1:call".to_string(), "outcomes.voice_edge.outcome.call.v1".to_string())
        );
        for bad in [
            &br#"not json"#[..],
            br#"{"type":"voice_edge.outcome.call.v1"}"#,
            br#"{"id":"a\r\nb","type":"t.v1"}"#,
            br#"{"id":"","type":"t.v1"}"#,
            br#"{"id":"x"}"#,
            br#"{"id":"x","type":"a.*.b"}"#,
            br#"{"id":"x","type":"a..b"}"#,
        ] {
            assert!(envelope(bad, "outcomes").is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_read_only_spool_is_refused() {
        let tmp = tempfile::TempDir::new().unwrap();
        drop(Spool::open(crate::outcome::SpoolConfig::new(tmp.path())).unwrap());
        let (view, _) = Spool::open_read_only(tmp.path()).unwrap();
        let cfg = ShipperConfig::new("nats://127.0.0.1:4222");
        assert!(matches!(Shipper::new(cfg, Arc::new(Mutex::new(view))), Err(ShipperError::ReadOnlySpool)));
    }

    #[test]
    fn config_validation() {
        let ok = ShipperConfig::new("nats://127.0.0.1:4222");
        ok.validate().unwrap();
        let cases: [fn(&mut ShipperConfig); 6] = [
            |c| c.subject_prefix = "outcomes.>".into(),
            |c| c.subject_prefix = String::new(),
            |c| c.stream_name = "OUT.COMES".into(),
            |c| c.batch = 0,
            |c| c.backoff_max = Duration::from_millis(1),
            |c| c.publish_timeout = Duration::ZERO,
        ];
        for f in cases {
            let mut c = ok.clone();
            f(&mut c);
            assert!(matches!(c.validate(), Err(ShipperError::Config(_))), "{c:?}");
        }
    }
}

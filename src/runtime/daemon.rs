//! `voice-edge serve`: the daemon's wiring and lifecycle.
//!
//! Start-up, in order: load flows, load the models and warm the classifiers
//! (the engine pool), open the outcome spool (recovering a torn tail), start
//! the shipper when a collector is configured, bind the SIP and HTTP
//! sockets, then tell systemd `READY=1`. A failure on the way is an error
//! with the reason, and the process exits non-zero before READY.
//!
//! Running: the SIP server task ([`super::sip`]) owns the SIP sockets and
//! spawns one driver task per call; the HTTP task serves `/metrics`,
//! `/healthz` and `/readyz`; the watchdog pings systemd only while the
//! engine and the media loops prove alive.
//!
//! Signals: SIGTERM (or SIGINT) drains: new calls get 503, calls in progress
//! go on up to `node.drain_deadline_s` and are then hung up; every call's
//! outcome events are committed to the spool, the shipper gets a last chance
//! to deliver, and the process exits 0. SIGHUP reloads the config file:
//! flows and SIP trunks are replaced for new calls (calls in progress keep
//! theirs); an invalid file is refused, logged, and the old config stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::outcome_sink::OutcomeSink;
use super::cluster::ClusterClient;
use super::live_call::CallServices;
use super::node_metrics;
use super::shipper::{Shipper, ShipperConfig, ShipperStats};
use super::sip::{SipControl, SipServer};
use crate::call::router::Router;
use crate::engine::pool::EnginePool;
use crate::engine::EngineLoadError;
use crate::flow::Flow;
use crate::ops::config::{Config, ConfigError};
use crate::ops::metrics::Metrics;
use crate::ops::systemd;
use crate::outcome::{Spool, SpoolConfig, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading the models")]
    Engine(#[from] EngineLoadError),
    #[error("opening the outcome spool")]
    Spool(#[from] SpoolError),
    #[error("outcome shipper: {0}")]
    Shipper(String),
    #[error("{what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// Flows by name, as trunks route to them.
pub type FlowTable = HashMap<String, Arc<Flow>>;

/// What every task of the daemon shares.
pub struct Node {
    pub node_id: String,
    pub pool: Arc<EnginePool>,
    /// The central cluster, when `[cluster]` lists endpoints.
    pub cluster: Option<Arc<ClusterClient>>,
    router: RwLock<Arc<Router>>,
    pub sink: OutcomeSink,
    pub metrics: Arc<Metrics>,
    config: RwLock<Arc<Config>>,
    flows: RwLock<Arc<FlowTable>>,
    /// Advanced by every call driver on each media tick: the watchdog's
    /// proof that media loops run.
    pub media_heartbeat: AtomicU64,
    /// Calls being driven (all channels).
    pub active_calls: AtomicU64,
    /// The engine's per-call ids.
    call_numbers: AtomicU64,
}

impl Node {
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn flows(&self) -> Arc<FlowTable> {
        self.flows.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What a new call needs: engine, router, cluster (on this runtime).
    pub fn call_services(&self) -> CallServices {
        CallServices {
            pool: self.pool.clone(),
            router: self.router.read().unwrap_or_else(|e| e.into_inner()).clone(),
            cluster: self.cluster.clone().map(|c| (c, tokio::runtime::Handle::current())),
        }
    }

    /// A fresh engine call id.
    pub fn next_call_number(&self) -> u64 {
        self.call_numbers.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Every flow the config can route a call to: the default flow and each
/// trunk's numbers.
pub fn load_flows(cfg: &Config) -> Result<FlowTable, ConfigError> {
    let mut table = FlowTable::new();
    let default = cfg.default_flow()?;
    table.insert(cfg.flows.default.clone(), Arc::new(default));
    for trunk in &cfg.sip.trunks {
        for name in trunk.numbers.values() {
            if !table.contains_key(name) {
                table.insert(name.clone(), Arc::new(cfg.load_flow(name)?));
            }
        }
    }
    Ok(table)
}

/// Runs the daemon until a drain completes. `config_path` is what SIGHUP
/// reloads (None: the embedded config, which a reload re-reads as is).
pub fn serve(cfg: Config, config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    let started = Instant::now();
    systemd::notify(&[systemd::State::Status("loading models"), systemd::State::ExtendTimeout(Duration::from_secs(300))]);
    let flows = load_flows(&cfg)?;
    let flow_list: Vec<Arc<Flow>> = flows.values().cloned().collect();
    let pool = Arc::new(EnginePool::start(&cfg, cfg.engine.clone(), &flow_list)?);

    let spool_dir = cfg.collector.spool_dir();
    std::fs::create_dir_all(&spool_dir)
        .map_err(|e| DaemonError::Setup(format!("creating the spool directory {}: {e}", spool_dir.display())))?;
    let (spool, recovery) = Spool::open(SpoolConfig::new(spool_dir.clone()))?;
    tracing::info!(spool = %spool_dir.display(), ?recovery, "outcome spool open");
    let spool = Arc::new(Mutex::new(spool));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("voice-edge-io")
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Setup(format!("starting the async runtime: {e}")))?;
    runtime.block_on(run(cfg, config_path, flows, pool, spool, started))
}

async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    flows: FlowTable,
    pool: Arc<EnginePool>,
    spool: Arc<Mutex<Spool>>,
    started: Instant,
) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);

    // The shipper, when a collector is configured.
    let mut shipper_task = None;
    let mut shipper_notify = None;
    let mut shipper_stats = None;
    if let Some(url) = &cfg.collector.nats_url {
        let mut scfg = ShipperConfig::new(url.clone());
        scfg.subject_prefix = cfg.collector.subject.clone();
        let shipper = Shipper::new(scfg, spool.clone()).map_err(|e| DaemonError::Shipper(e.to_string()))?;
        shipper_notify = Some(shipper.notifier());
        shipper_stats = Some(shipper.stats());
        shipper_task = Some(tokio::spawn(shipper.run(stop_rx.clone())));
    }

    let metrics = Arc::new(Metrics::new(&cfg.node.id));
    let router = Router::new(cfg.router.clone()).map_err(|e| DaemonError::Setup(format!("router: {e}")))?;
    let cluster = if cfg.cluster.endpoints.is_empty() {
        None
    } else {
        let client = ClusterClient::new(&cfg.cluster).map_err(|e| DaemonError::Setup(format!("cluster: {e}")))?;
        tracing::info!(endpoints = cfg.cluster.endpoints.len(), "central cluster configured");
        Some(Arc::new(client))
    };
    let node = Arc::new(Node {
        node_id: cfg.node.id.clone(),
        pool,
        cluster,
        router: RwLock::new(Arc::new(router)),
        sink: OutcomeSink::new(spool, shipper_notify),
        metrics: metrics.clone(),
        config: RwLock::new(Arc::new(cfg.clone())),
        flows: RwLock::new(Arc::new(flows)),
        media_heartbeat: AtomicU64::new(0),
        active_calls: AtomicU64::new(0),
        call_numbers: AtomicU64::new(0),
    });

    // SIP.
    let (sip, sip_control) = SipServer::bind(node.clone(), &cfg.sip).await?;
    let sip_addrs = sip.local_addrs();
    let sip_task = tokio::spawn(sip.run());

    // HTTP: metrics and health, and the browser widget when enabled.
    let readiness = Arc::new(super::http::Readiness::default());
    let mut http_task = None;
    let mut webrtc = None;
    if let Some(addr) = cfg.http.listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind { what: "HTTP", addr, source })?;
        let mut router = super::http::router(super::http::HttpState { metrics: metrics.clone(), readiness: readiness.clone() });
        if cfg.webrtc.enabled {
            let service = super::webrtc::WebrtcService::new(node.clone(), cfg.webrtc.clone());
            router = router.merge(super::webrtc::routes(service.clone()));
            webrtc = Some(service);
            tracing::info!(%addr, "browser widget on http://{addr}/ (WebRTC sessions at /webrtc/sessions)");
        }
        let mut stop = stop_rx.clone();
        http_task = Some(tokio::spawn(super::http::serve(listener, router, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
        tracing::info!(%addr, "HTTP listening (/metrics, /healthz, /readyz)");
    }
    readiness.set_models_loaded(true);
    readiness.set_sockets_bound(true);

    tokio::spawn(watchdog(node.clone(), stop_rx.clone()));
    spawn_metrics_sampler(node.clone(), shipper_stats, stop_rx.clone());

    tracing::info!(
        node = %node.node_id,
        sip = ?sip_addrs,
        startup_ms = started.elapsed().as_millis() as u64,
        "voice-edge ready"
    );
    systemd::notify(&[systemd::State::Ready, systemd::State::Status("ready: taking calls")]);

    // Signals.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| DaemonError::Setup(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Setup(format!("SIGINT handler: {e}")))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Setup(format!("SIGHUP handler: {e}")))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&node, config_path.as_deref(), &sip_control).await,
        }
    }

    // Drain.
    let deadline = Duration::from_secs(u64::from(node.config().node.drain_deadline_s));
    tracing::info!(active_calls = node.active_calls.load(Ordering::SeqCst), deadline_s = deadline.as_secs(), "draining: refusing new calls");
    systemd::notify(&[systemd::State::Stopping, systemd::State::Status("draining")]);
    readiness.set_draining(true);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = sip_control.send(SipControl::Drain { deadline, done: done_tx }).await;
    let webrtc_drain = async {
        if let Some(service) = &webrtc {
            service.drain(deadline).await;
        }
    };
    let (_, _) = tokio::join!(done_rx, webrtc_drain);
    let _ = sip_task.await;
    match node.sink.commit().await {
        Ok(seq) => tracing::info!(durable_seq = seq, "outcome spool committed"),
        Err(e) => tracing::error!(error = %e, "outcome spool commit at shutdown failed"),
    }
    // Give the shipper a moment to deliver what the last calls left.
    if let Some(task) = shipper_task {
        let spool = node.sink.spool().clone();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let (acked, durable) = {
                let s = spool.lock().unwrap_or_else(|e| e.into_inner());
                (s.acked(), s.durable_seq())
            };
            if acked >= durable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(true);
        if let Ok(stats) = task.await {
            tracing::info!(?stats, "outcome shipper stopped");
        }
    } else {
        let _ = stop_tx.send(true);
    }
    if let Some(t) = http_task {
        let _ = t.await;
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// SIGHUP: re-read the config; apply flows and trunks if valid.
async fn reload(node: &Arc<Node>, path: Option<&std::path::Path>, sip: &tokio::sync::mpsc::Sender<SipControl>) {
    systemd::notify(&[systemd::State::Reloading, systemd::State::Status("reloading config")]);
    let loaded = Config::load_or_embedded(path).and_then(|cfg| load_flows(&cfg).map(|flows| (cfg, flows)));
    match loaded {
        Ok((cfg, flows)) => {
            let old = node.config();
            let restart_needed = [
                (old.sip.listen_udp != cfg.sip.listen_udp, "sip.listen_udp"),
                (old.sip.listen_tcp != cfg.sip.listen_tcp, "sip.listen_tcp"),
                (old.http.listen != cfg.http.listen, "http.listen"),
                (old.models != cfg.models || old.asr != cfg.asr || old.intent != cfg.intent || old.tts != cfg.tts, "models"),
                (old.collector != cfg.collector, "collector"),
                (old.cluster != cfg.cluster, "cluster"),
            ];
            for (changed, key) in restart_needed {
                if changed {
                    tracing::warn!(key, "config reload: this change takes effect at the next restart");
                }
            }
            let names: Vec<&String> = flows.keys().collect();
            tracing::info!(flows = ?names, trunks = cfg.sip.trunks.len(), "config reloaded");
            let sip_cfg = cfg.sip.clone();
            match Router::new(cfg.router.clone()) {
                Ok(r) => *node.router.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r),
                Err(e) => tracing::error!(error = %e, "router config refused; the running router stays"),
            }
            *node.flows.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(flows);
            *node.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
            let _ = sip.send(SipControl::Reload(Box::new(sip_cfg))).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
        }
    }
    systemd::notify(&[systemd::State::Ready, systemd::State::Status("ready: taking calls")]);
}

/// Pings systemd's watchdog only while media ticks advance (or no call is
/// up) and the engine answers a probe.
async fn watchdog(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let Some(interval) = systemd::watchdog_interval() else { return };
    let mut last_beat = node.media_heartbeat.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let beat = node.media_heartbeat.load(Ordering::SeqCst);
        let media_alive = beat != last_beat || node.active_calls.load(Ordering::SeqCst) == 0;
        last_beat = beat;
        let engine = node.pool.clone();
        let engine_alive = tokio::time::timeout(interval, tokio::task::spawn_blocking(move || engine.probe()))
            .await
            .map(|r| r.unwrap_or(false))
            .unwrap_or(false);
        if media_alive && engine_alive {
            systemd::notify(&[systemd::State::Watchdog]);
        } else {
            tracing::error!(media_alive, engine_alive, "watchdog: not pinging systemd");
        }
    }
}

/// Copies gauges that are read, not counted (queue depths, spool backlog,
/// shipper lag) into the metrics once a second.
fn spawn_metrics_sampler(node: Arc<Node>, shipper: Option<watch::Receiver<ShipperStats>>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let engine = node.pool.stats();
            let spool = node.sink.spool().lock().unwrap_or_else(|e| e.into_inner()).stats();
            let shipped = shipper.as_ref().map(|s| s.borrow().clone());
            node_metrics::sample(&node.metrics, &engine, &spool, shipped.as_ref());
        }
    });
}

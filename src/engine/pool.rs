//! The inference engine for live calls: whisper, llama and espeak-ng each on
//! a dedicated OS thread, fed through bounded queues.
//!
//! * Weights load once, in the worker threads, before [`EnginePool::start`]
//!   returns; per-flow intent classifiers (with their cached prompt prefix)
//!   are created once per flow and shared by every call on that flow.
//!   Before the pool reports ready, whisper transcribes a second of silence
//!   and each classifier runs a draft and a classification once, so the
//!   first caller after a start does not pay for first use.
//! * Each request carries its call id and request id; the result goes back
//!   on the channel the caller gave with the request. Work for a cancelled
//!   request or an ended call is dropped when a worker reaches it; a
//!   transcription already in hand is aborted (whisper's abort callback),
//!   so a final transcription never waits behind a stale partial.
//! * Queues are bounded (`queue_depth` per stage). A full queue refuses the
//!   request at once ([`SubmitError::Saturated`]) instead of letting every
//!   call slow down; [`EnginePool::saturated`] tells admission control to
//!   refuse new calls with a clear reason.
//! * Intent requests waiting together (from concurrent calls) are classified
//!   in one llama decode, up to `MAX_BATCH`, each on its own copy of the
//!   flow's cached prompt prefix, and of its call's warm draft: the partial
//!   transcripts of a caller still speaking are evaluated ahead
//!   ([`Job::WarmIntent`], optional work), so the turn's classification only
//!   evaluates the words the draft lacks.
//! * The async runtime never blocks on inference: submitting is a
//!   non-blocking channel send.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Deserialize;

use super::asr::AsrModel;
use super::intent::{IntentClassifier, IntentModel, MAX_BATCH};
use super::tts::Tts;
use super::EngineLoadError;
use crate::call::{EngineResult, IntentResult, RequestId};
use crate::flow::Flow;
use crate::media::ENGINE_RATE;
use crate::ops::config::Config;

pub type CallId = u64;

/// `[engine]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Requests waiting per stage (ASR, intent, TTS) before new ones are refused.
    pub queue_depth: usize,
    /// New calls are refused once a stage's queue is this full.
    pub admit_below: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { queue_depth: 16, admit_below: 8 }
    }
}

impl PoolConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.queue_depth) {
            return Err("engine.queue_depth: must be within 1..=1024".into());
        }
        if self.admit_below == 0 || self.admit_below > self.queue_depth {
            return Err("engine.admit_below: must be within 1..=queue_depth".into());
        }
        Ok(())
    }
}

/// What a request asks of the engine.
#[derive(Debug, Clone)]
pub enum Job {
    /// `optional`: a partial hypothesis, shed (refused at once) whenever
    /// the ASR stage already has work queued, so partials never delay the
    /// final transcripts of other calls.
    Transcribe { audio: Arc<[f32]>, prompt: Option<String>, optional: bool },
    Classify { flow: Arc<Flow>, text: String },
    /// The caller's words so far (a partial transcript): evaluated into the
    /// call's warm draft so the turn's `Classify` has less left to do. No
    /// result comes back; shed like an optional transcription.
    WarmIntent { flow: Arc<Flow>, text: String },
    Synthesize { text: String },
}

impl Job {
    fn stage(&self) -> Stage {
        match self {
            Job::Transcribe { .. } => Stage::Asr,
            Job::Classify { .. } | Job::WarmIntent { .. } => Stage::Intent,
            Job::Synthesize { .. } => Stage::Tts,
        }
    }

    /// Work that only makes later work faster or fresher, dropped rather
    /// than queued behind other work.
    fn optional(&self) -> bool {
        matches!(self, Job::Transcribe { optional: true, .. } | Job::WarmIntent { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Asr,
    Intent,
    Tts,
}

const STAGES: [Stage; 3] = [Stage::Asr, Stage::Intent, Stage::Tts];

impl Stage {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the {0:?} stage is saturated ({1} requests queued)")]
    Saturated(Stage, usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("optional {0:?} work shed: the stage is busy")]
    Shed(Stage),
}

/// Where a request's result goes: an unbounded channel, so a worker never
/// blocks on a slow call driver, and both threads (`try_recv`) and tasks
/// (`recv().await`) can read it.
pub type ReplyTo = tokio::sync::mpsc::UnboundedSender<EngineResult>;

struct Envelope {
    call: CallId,
    id: RequestId,
    job: Job,
    reply: ReplyTo,
}

/// Requests and calls whose results are no longer wanted, and the request
/// each stage has in hand (so cancelling it can abort it).
#[derive(Default)]
struct Cancellations {
    requests: HashSet<(CallId, RequestId)>,
    ended: HashSet<CallId>,
    ended_order: VecDeque<CallId>,
    running: [Option<(CallId, RequestId)>; 3],
}

const ENDED_CALLS_REMEMBERED: usize = 4096;

impl Cancellations {
    fn take(&mut self, call: CallId, id: RequestId) -> bool {
        self.requests.remove(&(call, id)) || self.ended.contains(&call)
    }

    /// Stages whose request in hand matches.
    fn running_matching(&self, matches: impl Fn(CallId, RequestId) -> bool) -> Vec<Stage> {
        STAGES.into_iter().filter(|s| self.running[s.index()].is_some_and(|(c, r)| matches(c, r))).collect()
    }
}

struct Shared {
    cancelled: Mutex<Cancellations>,
    /// Per stage: raised when the request in hand is cancelled. The ASR
    /// worker gives up on it (a final transcription no longer waits behind
    /// a stale partial, a hung-up call frees the thread); other stages
    /// finish their short jobs and the result is dropped.
    abort: [AtomicBool; 3],
    depth: [AtomicUsize; 3],
    /// Per stage: when the job in hand started, in ms since `epoch` plus
    /// one (0: idle). A job in hand far too long means a hung worker.
    busy_since: [AtomicU64; 3],
    epoch: Instant,
    /// Jobs dropped because their call or request was cancelled.
    dropped: AtomicUsize,
    /// Of those, jobs given up half-way (the ASR worker's abort).
    aborted: AtomicUsize,
}

/// Engine statistics for metrics and admission control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub asr_queued: usize,
    pub intent_queued: usize,
    pub tts_queued: usize,
    pub cancelled_dropped: usize,
    /// Requests given up half-way because they were cancelled while in hand.
    pub aborted: usize,
}

pub struct EnginePool {
    cfg: PoolConfig,
    senders: [SyncSender<Envelope>; 3],
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

type Ready = Result<(), EngineLoadError>;

impl EnginePool {
    /// Loads the models the config names on three worker threads, evaluates
    /// the intent prompt of each of `flows` (other flows are prepared on
    /// their first call), and returns once all are ready (or the first load
    /// error).
    pub fn start(config: &Config, cfg: PoolConfig, flows: &[Arc<Flow>]) -> Result<EnginePool, EngineLoadError> {
        let paths = config.model_paths()?;
        let shared = Arc::new(Shared {
            cancelled: Mutex::new(Cancellations::default()),
            abort: [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)],
            depth: [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)],
            busy_since: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            epoch: Instant::now(),
            dropped: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let mut threads = Vec::new();

        let (asr_tx, asr_rx) = mpsc::sync_channel::<Envelope>(cfg.queue_depth);
        let (asr_cfg, asr_path, sh, ready) = (config.asr.clone(), paths.asr.clone(), shared.clone(), ready_tx.clone());
        threads.push(spawn("ve-asr", move || {
            let model = match AsrModel::load(&asr_path, asr_cfg) {
                Ok(m) => m,
                Err(e) => return drop(ready.send(Err(e.into()))),
            };
            let mut session = match model.session() {
                Ok(s) => s,
                Err(e) => return drop(ready.send(Err(e.into()))),
            };
            // First use sizes whisper's buffers: pay it here, not on a call.
            if let Err(e) = session.transcribe(&vec![0.0; ENGINE_RATE as usize], None) {
                return drop(ready.send(Err(e.into())));
            }
            let _ = ready.send(Ok(()));
            serve(asr_rx, &sh, Stage::Asr, |job| match job {
                Job::Transcribe { audio, prompt, .. } => {
                    match session.transcribe_abortable(&audio, prompt.as_deref(), Some(&sh.abort[Stage::Asr.index()])) {
                        Ok(t) => Ok(Done::Transcript(t.text)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                _ => Err("not an ASR job".into()),
            });
        }));

        let (intent_tx, intent_rx) = mpsc::sync_channel::<Envelope>(cfg.queue_depth);
        let (intent_cfg, intent_path, sh, ready) =
            (config.intent.clone(), paths.intent.clone(), shared.clone(), ready_tx.clone());
        let warm: Vec<Arc<Flow>> = flows.to_vec();
        threads.push(spawn("ve-intent", move || {
            let model = match IntentModel::load(&intent_path, intent_cfg) {
                Ok(m) => m,
                Err(e) => return drop(ready.send(Err(e.into()))),
            };
            let mut classifiers = HashMap::new();
            for flow in &warm {
                let mut clf = match model.classifier(flow) {
                    Ok(clf) => clf,
                    Err(e) => return drop(ready.send(Err(e.into()))),
                };
                // First use of a draft and a classification, paid before any call.
                let sample = flow.intents.iter().flat_map(|i| i.examples.first()).next().map_or("hello", String::as_str);
                if let Err(e) = clf.warm_up(sample) {
                    return drop(ready.send(Err(e.into())));
                }
                classifiers.insert((flow.name.clone(), flow.version), clf);
            }
            let _ = ready.send(Ok(()));
            serve_intent(intent_rx, &sh, &model, &mut classifiers);
        }));

        let (tts_tx, tts_rx) = mpsc::sync_channel::<Envelope>(cfg.queue_depth);
        let (tts_cfg, sh, ready) = (config.tts.clone(), shared.clone(), ready_tx);
        threads.push(spawn("ve-tts", move || {
            let tts = match Tts::new(tts_cfg) {
                Ok(t) => t,
                Err(e) => return drop(ready.send(Err(e.into()))),
            };
            let _ = ready.send(Ok(()));
            serve(tts_rx, &sh, Stage::Tts, |job| match job {
                Job::Synthesize { text } => {
                    let speech = tts.speak(&text).map_err(|e| e.to_string())?;
                    Ok(Done::Speech(speech.samples))
                }
                _ => Err("not a TTS job".into()),
            });
        }));

        let started = Instant::now();
        for _ in 0..3 {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(EngineLoadError::WorkerDied),
            }
        }
        tracing::info!(load_ms = started.elapsed().as_millis() as u64, "engine workers ready");
        Ok(EnginePool { cfg, senders: [asr_tx, intent_tx, tts_tx], shared, threads })
    }

    /// Queues work for a call; the result arrives on `reply` with the same id.
    pub fn submit(&self, call: CallId, id: RequestId, job: Job, reply: ReplyTo) -> Result<(), SubmitError> {
        let stage = job.stage();
        let depth = &self.shared.depth[stage.index()];
        if job.optional() && depth.load(Ordering::SeqCst) > 0 {
            return Err(SubmitError::Shed(stage));
        }
        depth.fetch_add(1, Ordering::SeqCst);
        match self.senders[stage.index()].try_send(Envelope { call, id, job, reply }) {
            Ok(()) => Ok(()),
            Err(e) => {
                depth.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::Saturated(stage, self.cfg.queue_depth)),
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    /// The result of this request is no longer wanted.
    pub fn cancel(&self, call: CallId, id: RequestId) {
        let mut c = self.shared.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        for stage in c.running_matching(|k, r| (k, r) == (call, id)) {
            self.shared.abort[stage.index()].store(true, Ordering::SeqCst);
        }
        c.requests.insert((call, id));
    }

    /// The call is over: drop all of its queued work.
    pub fn end_call(&self, call: CallId) {
        let mut c = self.shared.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        for stage in c.running_matching(|k, _| k == call) {
            self.shared.abort[stage.index()].store(true, Ordering::SeqCst);
        }
        c.requests.retain(|(k, _)| *k != call);
        if c.ended.insert(call) {
            c.ended_order.push_back(call);
            while c.ended_order.len() > ENDED_CALLS_REMEMBERED {
                if let Some(old) = c.ended_order.pop_front() {
                    c.ended.remove(&old);
                }
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let d = |s: Stage| self.shared.depth[s.index()].load(Ordering::SeqCst);
        PoolStats {
            asr_queued: d(Stage::Asr),
            intent_queued: d(Stage::Intent),
            tts_queued: d(Stage::Tts),
            cancelled_dropped: self.shared.dropped.load(Ordering::SeqCst),
            aborted: self.shared.aborted.load(Ordering::SeqCst),
        }
    }

    /// Why a new call should be refused now, if it should.
    pub fn saturated(&self) -> Option<String> {
        let s = self.stats();
        for (stage, queued) in [(Stage::Asr, s.asr_queued), (Stage::Intent, s.intent_queued), (Stage::Tts, s.tts_queued)] {
            if queued >= self.cfg.admit_below {
                return Some(format!("engine saturated: {queued} {stage:?} requests queued (limit {})", self.cfg.admit_below));
            }
        }
        None
    }

    /// Whether every worker thread is alive and none has been on one job
    /// longer than `HUNG_AFTER` (the daemon's watchdog asks; cheap, never blocks).
    pub fn probe(&self) -> bool {
        const HUNG_AFTER_MS: u64 = 30_000;
        if self.threads.iter().any(|t| t.is_finished()) {
            return false;
        }
        let now_ms = self.shared.epoch.elapsed().as_millis() as u64 + 1;
        self.shared.busy_since.iter().all(|b| {
            let since = b.load(Ordering::SeqCst);
            since == 0 || now_ms.saturating_sub(since) < HUNG_AFTER_MS
        })
    }
}

impl Shared {
    fn set_busy(&self, stage: Stage, busy: bool) {
        let stamp = if busy { self.epoch.elapsed().as_millis() as u64 + 1 } else { 0 };
        self.busy_since[stage.index()].store(stamp, Ordering::SeqCst);
    }
}

impl Drop for EnginePool {
    fn drop(&mut self) {
        // Closing the queues ends the workers once their current job is done.
        let (dead, _) = mpsc::sync_channel(1);
        for s in &mut self.senders {
            *s = dead.clone();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The intent worker: every Classify request waiting in the queue (up to
/// [`MAX_BATCH`]) is classified together, one decode for all of them, each
/// from its call's warm draft; then the waiting drafts are warmed (only the
/// latest of each call).
fn serve_intent<'m>(
    rx: Receiver<Envelope>,
    shared: &Shared,
    model: &'m IntentModel,
    classifiers: &mut HashMap<(String, u32), IntentClassifier<'m>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(env) => batch.push(env),
                Err(_) => break,
            }
        }
        shared.depth[Stage::Intent.index()].fetch_sub(batch.len(), Ordering::SeqCst);
        let mut live = Vec::with_capacity(batch.len());
        let mut warm: Vec<Envelope> = Vec::new();
        for env in batch {
            let cancelled = shared.cancelled.lock().unwrap_or_else(|e| e.into_inner()).take(env.call, env.id);
            if cancelled {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
            } else if matches!(env.job, Job::WarmIntent { .. }) {
                warm.retain(|w| w.call != env.call);
                warm.push(env);
            } else {
                live.push(env);
            }
        }
        shared.set_busy(Stage::Intent, true);
        // Requests of one flow share a classifier and its cached prompt.
        while !live.is_empty() {
            let key = flow_key(&live[0].job);
            let (group, rest): (Vec<Envelope>, Vec<Envelope>) = live.into_iter().partition(|e| flow_key(&e.job) == key);
            live = rest;
            let results = classify_group(model, classifiers, &group);
            for (env, result) in group.into_iter().zip(results) {
                let result = match result {
                    Ok(intent) => EngineResult::Intent { id: env.id, intent },
                    Err(error) => {
                        tracing::warn!(call = env.call, request = env.id, %error, "intent request failed");
                        EngineResult::Failed { id: env.id, error }
                    }
                };
                let _ = env.reply.send(result);
            }
        }
        for env in warm {
            let Job::WarmIntent { flow, text } = &env.job else { continue };
            if let Err(error) = classifier_for(model, classifiers, flow).and_then(|c| c.warm(env.call, text).map_err(|e| e.to_string())) {
                tracing::debug!(call = env.call, %error, "warming the intent draft failed");
            }
        }
        shared.set_busy(Stage::Intent, false);
    }
}

fn flow_key(job: &Job) -> Option<(String, u32)> {
    match job {
        Job::Classify { flow, .. } | Job::WarmIntent { flow, .. } => Some((flow.name.clone(), flow.version)),
        _ => None,
    }
}

/// The flow's classifier, made (its prompt evaluated) on first use.
fn classifier_for<'c, 'm>(
    model: &'m IntentModel,
    classifiers: &'c mut HashMap<(String, u32), IntentClassifier<'m>>,
    flow: &Flow,
) -> Result<&'c mut IntentClassifier<'m>, String> {
    let key = (flow.name.clone(), flow.version);
    if !classifiers.contains_key(&key) {
        let clf = model.classifier(flow).map_err(|e| e.to_string())?;
        classifiers.insert(key.clone(), clf);
    }
    Ok(classifiers.get_mut(&key).expect("inserted above"))
}

fn classify_group<'m>(
    model: &'m IntentModel,
    classifiers: &mut HashMap<(String, u32), IntentClassifier<'m>>,
    group: &[Envelope],
) -> Vec<Result<IntentResult, String>> {
    let Some(Job::Classify { flow, .. }) = group.first().map(|e| &e.job) else {
        return group.iter().map(|_| Err("not an intent job".to_string())).collect();
    };
    let clf = match classifier_for(model, classifiers, flow) {
        Ok(c) => c,
        Err(e) => return group.iter().map(|_| Err(e.clone())).collect(),
    };
    let requests: Vec<(Option<u64>, &str)> = group
        .iter()
        .map(|e| match &e.job {
            Job::Classify { text, .. } => (Some(e.call), text.as_str()),
            _ => (None, ""),
        })
        .collect();
    match clf.classify_drafted(&requests) {
        Ok(decisions) => decisions
            .into_iter()
            .map(|d| Ok(IntentResult { label: d.label, confidence: d.confidence, margin: d.margin }))
            .collect(),
        Err(e) => group.iter().map(|_| Err(e.to_string())).collect(),
    }
}

enum Done {
    Transcript(String),
    Speech(Vec<f32>),
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("spawning an engine thread")
}

/// A worker's loop: take a request, skip it if cancelled, run it, reply.
fn serve(rx: Receiver<Envelope>, shared: &Shared, stage: Stage, mut run: impl FnMut(Job) -> Result<Done, String>) {
    let abort = &shared.abort[stage.index()];
    while let Ok(env) = rx.recv() {
        shared.depth[stage.index()].fetch_sub(1, Ordering::SeqCst);
        {
            let mut c = shared.cancelled.lock().unwrap_or_else(|e| e.into_inner());
            if c.take(env.call, env.id) {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            c.running[stage.index()] = Some((env.call, env.id));
            abort.store(false, Ordering::SeqCst);
        }
        let id = env.id;
        shared.set_busy(stage, true);
        let outcome = run(env.job);
        shared.set_busy(stage, false);
        shared.cancelled.lock().unwrap_or_else(|e| e.into_inner()).running[stage.index()] = None;
        if abort.swap(false, Ordering::SeqCst) {
            // Cancelled while in hand: nobody wants the result.
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            if outcome.is_err() {
                shared.aborted.fetch_add(1, Ordering::SeqCst);
            }
            continue;
        }
        let result = match outcome {
            Ok(Done::Transcript(text)) => EngineResult::Transcript { id, text },
            Ok(Done::Speech(audio)) => EngineResult::Speech { id, audio },
            Err(error) => {
                tracing::warn!(call = env.call, request = id, stage = ?stage, %error, "engine request failed");
                EngineResult::Failed { id, error }
            }
        };
        // The call may have gone away; its results are simply dropped.
        let _ = env.reply.send(result);
    }
}

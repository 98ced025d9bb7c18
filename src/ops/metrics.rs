//! The node's Prometheus metrics: a small, dependency-free registry and the
//! [`Metrics`] struct that names every metric the node exports.
//!
//! Building blocks: [`Counter`], [`Gauge`] and [`Histogram`] are atomics,
//! cheap to update from any thread (the media loop, engine threads, tokio
//! tasks) with no lock; f64 values (gauges, histogram sums) live in an
//! `AtomicU64` as bits, updated by compare-and-swap. Labelled families
//! ([`CounterVec`], [`GaugeVec`], [`HistogramVec`]) have a *fixed* label set:
//! their label values are enums ([`LabelValue`]), every series exists from
//! the start (so `rate()` sees zeros instead of missing series) and
//! cardinality cannot grow with traffic.
//!
//! [`Metrics::render`] writes the text exposition format 0.0.4 (what
//! `GET /metrics` serves, [`CONTENT_TYPE`]): `# HELP` and `# TYPE` per
//! family, escaped label values, histograms as cumulative `_bucket{le}`
//! series ending in `le="+Inf"`, then `_sum` and `_count`. The reference
//! table of metrics is in `docs/OPERATIONS.md`.
//!
//! Consistency: a scrape reads each atomic once. A histogram's `+Inf`
//! bucket and `_count` are the same number by construction (both are the
//! sum of the bucket counters); `_sum` may lag an observation that is in
//! flight during the scrape, which Prometheus tolerates.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("metric name {0:?} is not [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName(String),
    #[error("metric {metric}: label name {label:?} is not [a-zA-Z_][a-zA-Z0-9_]* (or starts with the reserved \"__\")")]
    InvalidLabelName { metric: String, label: String },
    #[error("metric {metric}: label {label:?} is used twice")]
    DuplicateLabel { metric: String, label: String },
    #[error("metric {0:?} is registered twice")]
    DuplicateMetric(String),
    #[error("metric {metric}: histogram buckets must be finite and strictly increasing, got {buckets:?}")]
    InvalidBuckets { metric: String, buckets: Vec<f64> },
}

// ---------------------------------------------------------------------------
// Label sets
// ---------------------------------------------------------------------------

/// One label whose values are a closed set (an enum). `ALL` lists every
/// value once; `index` is the value's position in `ALL`.
pub trait LabelValue: Copy + Send + Sync + 'static {
    /// The label's name, e.g. `"channel"`.
    const NAME: &'static str;
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn index(self) -> usize;
}

/// A fixed set of labels: one [`LabelValue`] or a pair of them. Series are
/// numbered `0..cardinality()`; `values(i)` gives series `i`'s label values
/// in the order of `names()`.
pub trait LabelSet: Copy + Send + Sync + 'static {
    fn names() -> Vec<&'static str>;
    fn cardinality() -> usize;
    fn position(self) -> usize;
    fn values(position: usize) -> Vec<&'static str>;
}

impl<A: LabelValue> LabelSet for A {
    fn names() -> Vec<&'static str> {
        vec![A::NAME]
    }
    fn cardinality() -> usize {
        A::ALL.len()
    }
    fn position(self) -> usize {
        self.index()
    }
    fn values(position: usize) -> Vec<&'static str> {
        vec![A::ALL[position].as_str()]
    }
}

impl<A: LabelValue, B: LabelValue> LabelSet for (A, B) {
    fn names() -> Vec<&'static str> {
        vec![A::NAME, B::NAME]
    }
    fn cardinality() -> usize {
        A::ALL.len() * B::ALL.len()
    }
    fn position(self) -> usize {
        self.0.index() * B::ALL.len() + self.1.index()
    }
    fn values(position: usize) -> Vec<&'static str> {
        vec![A::ALL[position / B::ALL.len()].as_str(), B::ALL[position % B::ALL.len()].as_str()]
    }
}

/// Declares a label enum: `label_enum!(Channel, "channel", { Sip => "sip", ... })`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident, $label:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl LabelValue for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum!(
    /// Where a call came from.
    Channel, "channel", { Sip => "sip", Webrtc => "webrtc" });
label_enum!(
/// How a call ended.
CallResult, "result", {
    /// The conversation ended normally (either side hung up after the flow finished).
    Completed => "completed",
    /// Handed to a human or another queue.
    Transferred => "transferred",
    /// The caller hung up before the flow finished.
    Abandoned => "abandoned",
    /// Not answered: at capacity (503) or the engine refused admission.
    Refused => "refused",
    /// Ended by an error on our side (media, engine, protocol).
    Failed => "failed",
});
label_enum!(
/// A stage of one conversational turn, for latency.
TurnStage, "stage", {
    /// Caller stopped speaking -> endpoint fired.
    EndOfUtterance => "end_of_utterance",
    Asr => "asr",
    Intent => "intent",
    /// Request -> first audio chunk.
    Tts => "tts",
    /// Caller stopped speaking -> first reply audio sent.
    VoiceToVoice => "voice_to_voice",
});
label_enum!(
    /// An engine worker stage (its own thread and bounded queue).
    EngineStage, "stage", { Asr => "asr", Intent => "intent", Tts => "tts" });
label_enum!(
/// Where the router sent a turn.
Tier, "tier", {
    /// Answered by the node's own models.
    Edge => "edge",
    /// Escalated to the central cluster.
    Cluster => "cluster",
    /// The cluster was chosen but missed its deadline; the edge answered.
    EdgeFallback => "edge_fallback",
    /// Handed to a person.
    Human => "human",
});
label_enum!(
/// Why an outcome event was not stored.
DropReason, "reason", {
    /// The spool was at its byte cap (the shipper is stalled).
    SpoolFull => "spool_full",
    /// The disk failed while appending.
    DiskError => "disk_error",
    /// The event could not be encoded.
    Encode => "encode",
});
label_enum!(
/// A SIP request method (RFC 3261 and the usual extensions).
SipMethod, "method", {
    Invite => "INVITE", Ack => "ACK", Bye => "BYE", Cancel => "CANCEL",
    Options => "OPTIONS", Register => "REGISTER", Info => "INFO", Update => "UPDATE",
    Prack => "PRACK", Refer => "REFER", Notify => "NOTIFY", Subscribe => "SUBSCRIBE",
    Message => "MESSAGE",
    /// Any other method (kept as one series: methods are caller input).
    Other => "other",
});
label_enum!(
/// A SIP response's status class.
SipStatusClass, "class", {
    Provisional => "1xx", Success => "2xx", Redirection => "3xx",
    ClientError => "4xx", ServerError => "5xx", GlobalFailure => "6xx",
});
label_enum!(
    /// RTP direction as seen by the node.
    Direction, "direction", { Received => "rx", Sent => "tx" });

impl SipMethod {
    /// The series for a method token; unknown methods count as `other`.
    pub fn from_token(token: &str) -> SipMethod {
        SipMethod::ALL.iter().copied().find(|m| *m != SipMethod::Other && m.as_str() == token).unwrap_or(SipMethod::Other)
    }
}

impl SipStatusClass {
    /// The class of a status code (100..=699); `None` outside that range.
    pub fn from_status(code: u16) -> Option<SipStatusClass> {
        match code {
            100..=199 => Some(SipStatusClass::Provisional),
            200..=299 => Some(SipStatusClass::Success),
            300..=399 => Some(SipStatusClass::Redirection),
            400..=499 => Some(SipStatusClass::ClientError),
            500..=599 => Some(SipStatusClass::ServerError),
            600..=699 => Some(SipStatusClass::GlobalFailure),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Scalar building blocks
// ---------------------------------------------------------------------------

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Raises the count to `total` if it is below (mirrors a cumulative
    /// count kept elsewhere, e.g. the shipper's `published`); never lowers it.
    pub fn advance_to(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An f64 in an `AtomicU64` (bit pattern), added to by compare-and-swap.
#[derive(Debug)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn add(&self, delta: f64) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + delta).to_bits();
            match self.0.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge(AtomicF64);

impl Default for Gauge {
    fn default() -> Self {
        Gauge(AtomicF64::new(0.0))
    }
}

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v);
    }
    /// Sets a count (queue depth, backlog) exactly; counts up to 2^53 are exact in f64.
    pub fn set_count(&self, n: u64) {
        self.0.store(n as f64);
    }
    pub fn add(&self, delta: f64) {
        self.0.add(delta);
    }
    pub fn inc(&self) {
        self.0.add(1.0);
    }
    pub fn dec(&self) {
        self.0.add(-1.0);
    }
    pub fn get(&self) -> f64 {
        self.0.load()
    }
}

/// Bucket upper bounds (seconds) for per-stage turn latency: 10 ms .. 10 s,
/// dense around the 0.2-1.5 s range a voice-to-voice target lives in.
pub const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Observations counted into fixed buckets, with their sum.
#[derive(Debug)]
pub struct Histogram {
    /// Finite upper bounds, strictly increasing; `+Inf` is implicit.
    bounds: Arc<[f64]>,
    /// Non-cumulative counts: `counts[i]` for `(bounds[i-1], bounds[i]]`,
    /// the last one for `(bounds[last], +Inf)`.
    counts: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl Histogram {
    fn with_bounds(bounds: Arc<[f64]>) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, sum: AtomicF64::new(0.0) }
    }

    /// A histogram with these finite, strictly increasing bucket bounds.
    pub fn new(bounds: &[f64]) -> Result<Histogram, MetricsError> {
        check_buckets("histogram", bounds)?;
        Ok(Histogram::with_bounds(bounds.into()))
    }

    /// Records one value. NaN is ignored (it would poison the sum).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        // The first bound >= v: Prometheus buckets are `le` (inclusive).
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.add(v);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.counts.len());
        let mut running = 0u64;
        for c in self.counts.iter() {
            running += c.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        HistogramSnapshot { bounds: self.bounds.to_vec(), cumulative, sum: self.sum.load() }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    /// `cumulative[i]`: observations `<= bounds[i]`; the last entry is `+Inf`.
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

fn check_buckets(metric: &str, bounds: &[f64]) -> Result<(), MetricsError> {
    let ok = !bounds.is_empty() && bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(MetricsError::InvalidBuckets { metric: metric.into(), buckets: bounds.to_vec() })
    }
}

// ---------------------------------------------------------------------------
// Families: name, help, optional constant labels, fixed label sets
// ---------------------------------------------------------------------------

/// Name, help text and constant labels of one metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    /// Labels with one fixed value on every series (e.g. `node_info`'s).
    pub const_labels: Vec<(&'static str, String)>,
}

impl Desc {
    pub fn new(name: &'static str, help: &'static str) -> Desc {
        Desc { name, help, const_labels: Vec::new() }
    }
    pub fn with_const_label(mut self, name: &'static str, value: impl Into<String>) -> Desc {
        self.const_labels.push((name, value.into()));
        self
    }
}

/// The Prometheus metric type, as written in `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A metric family that can write itself in the text format.
pub trait Encode: Send + Sync {
    fn desc(&self) -> &Desc;
    fn metric_type(&self) -> MetricType;
    /// Label names of the variable labels (constant ones are in `desc`).
    fn label_names(&self) -> Vec<&'static str>;
    /// Appends `# HELP`, `# TYPE` and every series.
    fn encode(&self, out: &mut String);
}

/// A counter family with no labels.
#[derive(Debug)]
pub struct CounterFamily {
    desc: Desc,
    counter: Counter,
}

impl CounterFamily {
    pub fn new(desc: Desc) -> Self {
        CounterFamily { desc, counter: Counter::default() }
    }
}

impl std::ops::Deref for CounterFamily {
    type Target = Counter;
    fn deref(&self) -> &Counter {
        &self.counter
    }
}

impl Encode for CounterFamily {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
    fn label_names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Counter);
        write_sample(out, self.desc.name, "", &self.desc.const_labels, &[], None, self.counter.get() as f64);
    }
}

/// A gauge family with no labels.
#[derive(Debug)]
pub struct GaugeFamily {
    desc: Desc,
    gauge: Gauge,
}

impl GaugeFamily {
    pub fn new(desc: Desc) -> Self {
        GaugeFamily { desc, gauge: Gauge::default() }
    }
}

impl std::ops::Deref for GaugeFamily {
    type Target = Gauge;
    fn deref(&self) -> &Gauge {
        &self.gauge
    }
}

impl Encode for GaugeFamily {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
    fn label_names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Gauge);
        write_sample(out, self.desc.name, "", &self.desc.const_labels, &[], None, self.gauge.get());
    }
}

/// Counters, one per value of the label set `L`.
#[derive(Debug)]
pub struct CounterVec<L: LabelSet> {
    desc: Desc,
    series: Box<[Counter]>,
    _labels: PhantomData<fn() -> L>,
}

impl<L: LabelSet> CounterVec<L> {
    pub fn new(desc: Desc) -> Self {
        let series = (0..L::cardinality()).map(|_| Counter::default()).collect();
        CounterVec { desc, series, _labels: PhantomData }
    }
    pub fn with(&self, labels: L) -> &Counter {
        &self.series[labels.position()]
    }
}

impl<L: LabelSet> Encode for CounterVec<L> {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
    fn label_names(&self) -> Vec<&'static str> {
        L::names()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Counter);
        let names = L::names();
        for (i, c) in self.series.iter().enumerate() {
            let labels: Vec<(&str, &str)> = names.iter().copied().zip(L::values(i)).collect();
            write_sample(out, self.desc.name, "", &self.desc.const_labels, &labels, None, c.get() as f64);
        }
    }
}

/// Gauges, one per value of the label set `L`.
#[derive(Debug)]
pub struct GaugeVec<L: LabelSet> {
    desc: Desc,
    series: Box<[Gauge]>,
    _labels: PhantomData<fn() -> L>,
}

impl<L: LabelSet> GaugeVec<L> {
    pub fn new(desc: Desc) -> Self {
        let series = (0..L::cardinality()).map(|_| Gauge::default()).collect();
        GaugeVec { desc, series, _labels: PhantomData }
    }
    pub fn with(&self, labels: L) -> &Gauge {
        &self.series[labels.position()]
    }
}

impl<L: LabelSet> Encode for GaugeVec<L> {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
    fn label_names(&self) -> Vec<&'static str> {
        L::names()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Gauge);
        let names = L::names();
        for (i, g) in self.series.iter().enumerate() {
            let labels: Vec<(&str, &str)> = names.iter().copied().zip(L::values(i)).collect();
            write_sample(out, self.desc.name, "", &self.desc.const_labels, &labels, None, g.get());
        }
    }
}

/// A histogram family with no labels.
#[derive(Debug)]
pub struct HistogramFamily {
    desc: Desc,
    histogram: Histogram,
}

impl HistogramFamily {
    pub fn new(desc: Desc, bounds: &[f64]) -> Result<Self, MetricsError> {
        check_buckets(desc.name, bounds)?;
        Ok(HistogramFamily { histogram: Histogram::with_bounds(bounds.into()), desc })
    }
}

impl std::ops::Deref for HistogramFamily {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.histogram
    }
}

impl Encode for HistogramFamily {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
    fn label_names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Histogram);
        write_histogram(out, &self.desc, &[], &self.histogram.snapshot());
    }
}

/// Histograms, one per value of the label set `L`, sharing bucket bounds.
#[derive(Debug)]
pub struct HistogramVec<L: LabelSet> {
    desc: Desc,
    series: Box<[Histogram]>,
    _labels: PhantomData<fn() -> L>,
}

impl<L: LabelSet> HistogramVec<L> {
    pub fn new(desc: Desc, bounds: &[f64]) -> Result<Self, MetricsError> {
        check_buckets(desc.name, bounds)?;
        let bounds: Arc<[f64]> = bounds.into();
        let series = (0..L::cardinality()).map(|_| Histogram::with_bounds(bounds.clone())).collect();
        Ok(HistogramVec { desc, series, _labels: PhantomData })
    }
    pub fn with(&self, labels: L) -> &Histogram {
        &self.series[labels.position()]
    }
}

impl<L: LabelSet> Encode for HistogramVec<L> {
    fn desc(&self) -> &Desc {
        &self.desc
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
    fn label_names(&self) -> Vec<&'static str> {
        L::names()
    }
    fn encode(&self, out: &mut String) {
        write_header(out, &self.desc, MetricType::Histogram);
        let names = L::names();
        for (i, h) in self.series.iter().enumerate() {
            let labels: Vec<(&str, &str)> = names.iter().copied().zip(L::values(i)).collect();
            write_histogram(out, &self.desc, &labels, &h.snapshot());
        }
    }
}

// ---------------------------------------------------------------------------
// Text format 0.0.4
// ---------------------------------------------------------------------------

/// `# HELP` text: backslash and line feed escaped.
pub fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value or `le` bound: Go's spelling of the non-finite values
/// (`+Inf`, `-Inf`, `NaN`); finite values as Rust's shortest round-trip form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn write_header(out: &mut String, desc: &Desc, ty: MetricType) {
    let _ = writeln!(out, "# HELP {} {}", desc.name, escape_help(desc.help));
    let _ = writeln!(out, "# TYPE {} {}", desc.name, ty.as_str());
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    const_labels: &[(&'static str, String)],
    labels: &[(&str, &str)],
    le: Option<f64>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let all = const_labels
        .iter()
        .map(|(k, v)| (*k, v.as_str().to_owned()))
        .chain(labels.iter().map(|(k, v)| (*k, (*v).to_owned())))
        .chain(le.map(|b| ("le", format_value(b))));
    let mut first = true;
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(&v));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

fn write_histogram(out: &mut String, desc: &Desc, labels: &[(&str, &str)], snap: &HistogramSnapshot) {
    for (i, count) in snap.cumulative.iter().enumerate() {
        let le = snap.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        write_sample(out, desc.name, "_bucket", &desc.const_labels, labels, Some(le), *count as f64);
    }
    write_sample(out, desc.name, "_sum", &desc.const_labels, labels, None, snap.sum);
    write_sample(out, desc.name, "_count", &desc.const_labels, labels, None, snap.count() as f64);
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks one family's metric and label names (histograms may not use `le`).
pub fn validate(family: &dyn Encode) -> Result<(), MetricsError> {
    let desc = family.desc();
    if !valid_metric_name(desc.name) {
        return Err(MetricsError::InvalidMetricName(desc.name.into()));
    }
    let mut seen: Vec<&str> = Vec::new();
    let names = desc.const_labels.iter().map(|(k, _)| *k).chain(family.label_names());
    for label in names {
        let reserved_le = family.metric_type() == MetricType::Histogram && label == "le";
        if !valid_label_name(label) || reserved_le {
            return Err(MetricsError::InvalidLabelName { metric: desc.name.into(), label: label.into() });
        }
        if seen.contains(&label) {
            return Err(MetricsError::DuplicateLabel { metric: desc.name.into(), label: label.into() });
        }
        seen.push(label);
    }
    Ok(())
}

/// Families added at run time (e.g. by the WebRTC gateway), rendered after
/// the node's own. Registration validates names and refuses duplicates.
#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Arc<dyn Encode>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&'static str> = self.lock().iter().map(|f| f.desc().name).collect();
        f.debug_struct("Registry").field("families", &names).finish()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn Encode>>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.families.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a family; `taken` lists names already in use elsewhere.
    fn register_checked(&self, family: Arc<dyn Encode>, taken: &[&str]) -> Result<(), MetricsError> {
        validate(family.as_ref())?;
        let name = family.desc().name;
        let mut families = self.lock();
        if taken.contains(&name) || families.iter().any(|f| f.desc().name == name) {
            return Err(MetricsError::DuplicateMetric(name.into()));
        }
        families.push(family);
        Ok(())
    }

    pub fn register(&self, family: Arc<dyn Encode>) -> Result<(), MetricsError> {
        self.register_checked(family, &[])
    }

    pub fn encode(&self, out: &mut String) {
        for f in self.lock().iter() {
            f.encode(out);
        }
    }
}

// ---------------------------------------------------------------------------
// The node's metrics
// ---------------------------------------------------------------------------

/// Every metric the node exports, by name. Shared as `Arc<Metrics>`;
/// update fields directly (`metrics.calls_total.with((Channel::Sip, CallResult::Completed)).inc()`).
#[derive(Debug)]
pub struct Metrics {
    /// `voice_edge_node_info{node,version}` = 1: which node and build this is.
    pub node_info: GaugeFamily,
    /// `process_start_time_seconds`: Unix time the process started.
    pub process_start_time_seconds: GaugeFamily,
    /// `voice_edge_calls_total{channel,result}`: finished calls by how they ended.
    pub calls_total: CounterVec<(Channel, CallResult)>,
    /// `voice_edge_calls_active{channel}`: calls in progress now.
    pub calls_active: GaugeVec<Channel>,
    /// `voice_edge_turn_latency_seconds{stage}`: per-turn latency of each stage.
    pub turn_latency_seconds: HistogramVec<TurnStage>,
    /// `voice_edge_barge_ins_total`: agent playouts interrupted by the caller.
    pub barge_ins_total: CounterFamily,
    /// `voice_edge_router_decisions_total{tier}`: where turns were answered.
    pub router_decisions_total: CounterVec<Tier>,
    /// `voice_edge_engine_queue_depth{stage}`: requests waiting per engine stage.
    pub engine_queue_depth: GaugeVec<EngineStage>,
    /// `voice_edge_engine_requests_refused_total{stage}`: requests refused because the stage's queue was full.
    pub engine_requests_refused_total: CounterVec<EngineStage>,
    /// `voice_edge_spool_backlog_events`: outcome events stored and not yet acknowledged by the collector.
    pub spool_backlog_events: GaugeFamily,
    /// `voice_edge_spool_backlog_bytes`: bytes the spool holds against its cap.
    pub spool_backlog_bytes: GaugeFamily,
    /// `voice_edge_shipper_lag_events`: durable events the shipper has not had acknowledged, at its last look.
    pub shipper_lag_events: GaugeFamily,
    /// `voice_edge_outcome_events_shipped_total`: events the collector acknowledged (duplicates included).
    pub outcome_events_shipped_total: CounterFamily,
    /// `voice_edge_outcome_drops_total{reason}`: outcome events lost before the spool.
    pub outcome_drops_total: CounterVec<DropReason>,
    /// `voice_edge_sip_requests_total{method}`: SIP requests received.
    pub sip_requests_total: CounterVec<SipMethod>,
    /// `voice_edge_sip_responses_total{class}`: SIP responses sent.
    pub sip_responses_total: CounterVec<SipStatusClass>,
    /// `voice_edge_rtp_packets_total{direction}`: RTP packets received and sent.
    pub rtp_packets_total: CounterVec<Direction>,
    /// Families registered at run time by other components.
    pub extra: Registry,
}

impl Metrics {
    /// All metrics at zero, `node_info` set to 1 for `node_id`, and the
    /// process start time set to now.
    pub fn new(node_id: &str) -> Metrics {
        let latency = HistogramVec::new(
            Desc::new(
                "voice_edge_turn_latency_seconds",
                "Latency of one turn's stages in seconds: end_of_utterance (caller stopped -> endpoint), asr, intent, tts (to first audio), voice_to_voice (caller stopped -> first reply audio).",
            ),
            LATENCY_BUCKETS_SECONDS,
        )
        .expect("LATENCY_BUCKETS_SECONDS are finite and increasing (unit-tested)");
        let metrics = Metrics {
            node_info: GaugeFamily::new(
                Desc::new("voice_edge_node_info", "Which node and build this is; always 1.")
                    .with_const_label("node", node_id)
                    .with_const_label("version", env!("CARGO_PKG_VERSION")),
            ),
            process_start_time_seconds: GaugeFamily::new(Desc::new(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
            )),
            calls_total: CounterVec::new(Desc::new("voice_edge_calls_total", "Finished calls by channel and how they ended.")),
            calls_active: GaugeVec::new(Desc::new("voice_edge_calls_active", "Calls in progress.")),
            turn_latency_seconds: latency,
            barge_ins_total: CounterFamily::new(Desc::new("voice_edge_barge_ins_total", "Agent playouts interrupted by the caller.")),
            router_decisions_total: CounterVec::new(Desc::new(
                "voice_edge_router_decisions_total",
                "Turns by the tier that answered them (edge, cluster, edge_fallback after a missed cluster deadline).",
            )),
            engine_queue_depth: GaugeVec::new(Desc::new("voice_edge_engine_queue_depth", "Requests waiting in each engine stage's queue.")),
            engine_requests_refused_total: CounterVec::new(Desc::new(
                "voice_edge_engine_requests_refused_total",
                "Engine requests refused because the stage's queue was full.",
            )),
            spool_backlog_events: GaugeFamily::new(Desc::new(
                "voice_edge_spool_backlog_events",
                "Outcome events in the spool not yet acknowledged by the collector.",
            )),
            spool_backlog_bytes: GaugeFamily::new(Desc::new("voice_edge_spool_backlog_bytes", "Bytes the outcome spool holds against its cap.")),
            shipper_lag_events: GaugeFamily::new(Desc::new(
                "voice_edge_shipper_lag_events",
                "Durable outcome events the shipper has not yet had acknowledged, at its last look.",
            )),
            outcome_events_shipped_total: CounterFamily::new(Desc::new(
                "voice_edge_outcome_events_shipped_total",
                "Outcome events the collector acknowledged, duplicates included.",
            )),
            outcome_drops_total: CounterVec::new(Desc::new("voice_edge_outcome_drops_total", "Outcome events not stored, by reason.")),
            sip_requests_total: CounterVec::new(Desc::new("voice_edge_sip_requests_total", "SIP requests received, by method.")),
            sip_responses_total: CounterVec::new(Desc::new("voice_edge_sip_responses_total", "SIP responses sent, by status class.")),
            rtp_packets_total: CounterVec::new(Desc::new("voice_edge_rtp_packets_total", "RTP packets by direction (rx received, tx sent).")),
            extra: Registry::default(),
        };
        metrics.node_info.set(1.0);
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        metrics.process_start_time_seconds.set(start.as_secs_f64());
        metrics
    }

    /// The node's own families, in rendering order.
    pub fn families(&self) -> Vec<&dyn Encode> {
        vec![
            &self.node_info,
            &self.process_start_time_seconds,
            &self.calls_total,
            &self.calls_active,
            &self.turn_latency_seconds,
            &self.barge_ins_total,
            &self.router_decisions_total,
            &self.engine_queue_depth,
            &self.engine_requests_refused_total,
            &self.spool_backlog_events,
            &self.spool_backlog_bytes,
            &self.shipper_lag_events,
            &self.outcome_events_shipped_total,
            &self.outcome_drops_total,
            &self.sip_requests_total,
            &self.sip_responses_total,
            &self.rtp_packets_total,
        ]
    }

    /// Adds a family from another component; its name must be new.
    pub fn register(&self, family: Arc<dyn Encode>) -> Result<(), MetricsError> {
        let taken: Vec<&str> = self.families().iter().map(|f| f.desc().name).collect();
        self.extra.register_checked(family, &taken)
    }

    /// Every family in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for f in self.families() {
            f.encode(&mut out);
        }
        self.extra.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metric_names_are_valid_unique_and_counters_end_in_total() {
        let m = Metrics::new("edge-1");
        let mut names = Vec::new();
        for f in m.families() {
            validate(f).unwrap();
            let name = f.desc().name;
            assert!(!names.contains(&name), "{name} twice");
            names.push(name);
            if f.metric_type() == MetricType::Counter {
                assert!(name.ends_with("_total"), "{name}: counters end in _total");
            }
            assert!(!f.desc().help.is_empty(), "{name} has no help");
        }
        assert_eq!(names.len(), 17);
    }

    #[test]
    fn latency_buckets_are_valid() {
        check_buckets("x", LATENCY_BUCKETS_SECONDS).unwrap();
    }

    #[test]
    fn validation_rejects_bad_names() {
        let bad = GaugeFamily::new(Desc::new("1abc", "h"));
        assert_eq!(validate(&bad), Err(MetricsError::InvalidMetricName("1abc".into())));
        let reserved = GaugeFamily::new(Desc::new("ok", "h").with_const_label("__x", "v"));
        assert!(matches!(validate(&reserved), Err(MetricsError::InvalidLabelName { .. })));
        let dup = CounterVec::<Channel>::new(Desc::new("c_total", "h").with_const_label("channel", "x"));
        assert!(matches!(validate(&dup), Err(MetricsError::DuplicateLabel { .. })));
        let le = HistogramFamily::new(Desc::new("h", "h").with_const_label("le", "1"), &[1.0]).unwrap();
        assert!(matches!(validate(&le), Err(MetricsError::InvalidLabelName { .. })));
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
    }

    #[test]
    fn histogram_rejects_bad_buckets() {
        assert!(Histogram::new(&[]).is_err());
        assert!(Histogram::new(&[1.0, 1.0]).is_err());
        assert!(Histogram::new(&[2.0, 1.0]).is_err());
        assert!(Histogram::new(&[1.0, f64::INFINITY]).is_err());
        assert!(Histogram::new(&[f64::NAN]).is_err());
    }

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::new(&[0.1, 0.5, 1.0]).unwrap();
        for v in [0.05, 0.1, 0.2, 0.5, 0.7, 3.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        // le=0.1: 0.05, 0.1; le=0.5: +0.2, 0.5; le=1: +0.7; +Inf: +3.0. NaN ignored.
        assert_eq!(s.cumulative, vec![2, 4, 5, 6]);
        assert_eq!(s.count(), 6);
        assert!((s.sum - 4.55).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn counters_and_gauges_update_from_many_threads() {
        let m = Arc::new(Metrics::new("edge-1"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        m.barge_ins_total.inc();
                        m.calls_active.with(Channel::Sip).add(0.5);
                        m.turn_latency_seconds.with(TurnStage::Asr).observe(0.25);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.barge_ins_total.get(), 40_000);
        assert_eq!(m.calls_active.with(Channel::Sip).get(), 20_000.0);
        assert_eq!(m.calls_active.with(Channel::Webrtc).get(), 0.0);
        let s = m.turn_latency_seconds.with(TurnStage::Asr).snapshot();
        assert_eq!(s.count(), 40_000);
        assert_eq!(s.sum, 10_000.0);
    }

    #[test]
    fn counter_advance_to_never_lowers() {
        let c = Counter::default();
        c.advance_to(10);
        c.advance_to(4);
        assert_eq!(c.get(), 10);
        c.inc();
        assert_eq!(c.get(), 11);
    }

    #[test]
    fn gauge_set_inc_dec() {
        let g = Gauge::default();
        g.set_count(7);
        g.inc();
        g.dec();
        g.dec();
        assert_eq!(g.get(), 6.0);
        g.set(-1.5);
        assert_eq!(g.get(), -1.5);
    }

    #[test]
    fn label_pairs_number_every_combination_once() {
        type L = (Channel, CallResult);
        assert_eq!(L::cardinality(), 10);
        let mut seen = vec![false; L::cardinality()];
        for &c in Channel::ALL {
            for &r in CallResult::ALL {
                let p = (c, r).position();
                assert!(!seen[p]);
                seen[p] = true;
                assert_eq!(L::values(p), vec![c.as_str(), r.as_str()]);
            }
        }
    }

    #[test]
    fn sip_method_and_class_mapping() {
        assert_eq!(SipMethod::from_token("INVITE"), SipMethod::Invite);
        assert_eq!(SipMethod::from_token("invite"), SipMethod::Other, "methods are case-sensitive");
        assert_eq!(SipMethod::from_token("FOO"), SipMethod::Other);
        assert_eq!(SipMethod::from_token("other"), SipMethod::Other);
        assert_eq!(SipStatusClass::from_status(183), Some(SipStatusClass::Provisional));
        assert_eq!(SipStatusClass::from_status(503), Some(SipStatusClass::ServerError));
        assert_eq!(SipStatusClass::from_status(699), Some(SipStatusClass::GlobalFailure));
        assert_eq!(SipStatusClass::from_status(99), None);
        assert_eq!(SipStatusClass::from_status(700), None);
    }

    #[test]
    fn escaping_follows_the_text_format() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
        assert_eq!(escape_help("x\\y\nz \"q\""), r#"x\\y\nz "q""#);
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(0.025), "0.025");
        assert_eq!(format_value(3.0), "3");
    }

    #[test]
    fn render_exact_text_for_a_small_histogram_and_const_labels() {
        let h =
            HistogramFamily::new(Desc::new("demo_seconds", "Demo.\nSecond line").with_const_label("node", "a\"b"), &[0.5, 1.0]).unwrap();
        h.observe(0.25);
        h.observe(2.0);
        let mut out = String::new();
        h.encode(&mut out);
        let expected = "# HELP demo_seconds Demo.\\nSecond line\n\
# TYPE demo_seconds histogram\n\
demo_seconds_bucket{node=\"a\\\"b\",le=\"0.5\"} 1\n\
demo_seconds_bucket{node=\"a\\\"b\",le=\"1\"} 1\n\
demo_seconds_bucket{node=\"a\\\"b\",le=\"+Inf\"} 2\n\
demo_seconds_sum{node=\"a\\\"b\"} 2.25\n\
demo_seconds_count{node=\"a\\\"b\"} 2\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn render_labelled_counter_lists_every_series() {
        let m = Metrics::new("edge-1");
        m.sip_responses_total.with(SipStatusClass::ServerError).inc_by(3);
        let mut out = String::new();
        m.sip_responses_total.encode(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP voice_edge_sip_responses_total SIP responses sent, by status class.");
        assert_eq!(lines[1], "# TYPE voice_edge_sip_responses_total counter");
        assert_eq!(lines.len(), 2 + 6);
        assert!(lines.contains(&"voice_edge_sip_responses_total{class=\"5xx\"} 3"));
        assert!(lines.contains(&"voice_edge_sip_responses_total{class=\"2xx\"} 0"));
    }

    #[test]
    fn registry_refuses_duplicates_and_invalid_names() {
        let m = Metrics::new("edge-1");
        let ok = Arc::new(GaugeFamily::new(Desc::new("webrtc_sessions", "Sessions.")));
        ok.set(2.0);
        m.register(ok.clone()).unwrap();
        assert_eq!(m.register(ok), Err(MetricsError::DuplicateMetric("webrtc_sessions".into())));
        let clash = Arc::new(CounterFamily::new(Desc::new("voice_edge_barge_ins_total", "again")));
        assert_eq!(m.register(clash), Err(MetricsError::DuplicateMetric("voice_edge_barge_ins_total".into())));
        let bad = Arc::new(CounterFamily::new(Desc::new("bad-name", "x")));
        assert!(matches!(m.register(bad), Err(MetricsError::InvalidMetricName(_))));
        assert!(m.render().contains("\nwebrtc_sessions 2\n"));
    }
}

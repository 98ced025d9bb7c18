//! `cargo bench --bench router`: the cost of one `Router::decide` on
//! realistic turn features (default phrase lists), with criterion for the
//! mean, then p50/p99/max over individually timed calls. Target: p99 < 50 µs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use voice_edge::call::router::{Router, RouterConfig, TurnFeatures};

const TRANSCRIPTS: &[&str] = &[
    "where is my order",
    "I'd like to check the status of order four five six seven",
    "can I return these shoes, they don't fit",
    "I want to speak to a human right now",
    "this is the third time I'm calling and it is unacceptable, I want a refund dispute opened",
    "can you give me a better price if I order two of them",
    "yes",
    "um so basically I ordered a jacket last week and then the size was wrong so I sent it back but I never got the \
     refund and now my bank says there is a second charge and I really don't understand what happened with all of \
     this can you please look into it for me",
    "I'm going to talk to my lawyer about this",
    "what are your opening hours on sunday",
];

fn features(i: usize) -> TurnFeatures<'static> {
    let transcript = TRANSCRIPTS[i % TRANSCRIPTS.len()];
    let confidence = [0.93, 0.71, 0.52, 0.88, 0.35][i % 5];
    TurnFeatures {
        intent: if i.is_multiple_of(7) { None } else { Some(["order_status", "returns", "opening_hours", "agent_handoff"][i % 4]) },
        intent_confidence: confidence,
        intent_margin: confidence * 0.6,
        asr_confidence: if i.is_multiple_of(3) { None } else { Some(0.6 + (i % 4) as f32 * 0.1) },
        transcript,
        words: transcript.split_whitespace().count(),
        flow_state: ["idle", "order_number", "returns"][i % 3],
        repeats: (i % 4) as u32,
        failed_attempts: (i % 3) as u32,
        turn: 1 + (i % 10) as u32,
        cluster_available: !i.is_multiple_of(11),
    }
}

fn bench_decide(c: &mut Criterion) {
    let router = Router::new(RouterConfig::default()).expect("default router config");
    let inputs: Vec<TurnFeatures> = (0..64).map(features).collect();
    let mut i = 0;
    c.bench_function("router_decide", |b| {
        b.iter(|| {
            i = (i + 1) % inputs.len();
            black_box(router.decide(black_box(&inputs[i])))
        })
    });
}

fn percentiles() {
    let router = Router::new(RouterConfig::default()).expect("default router config");
    let inputs: Vec<TurnFeatures> = (0..64).map(features).collect();
    for f in &inputs {
        black_box(router.decide(f));
    }
    const N: usize = 200_000;
    let mut samples = Vec::with_capacity(N);
    for k in 0..N {
        let f = &inputs[k % inputs.len()];
        let t = Instant::now();
        black_box(router.decide(black_box(f)));
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((N as f64 * q) as usize).min(N - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99, p999, max) = (at(0.50), at(0.99), at(0.999), samples[N - 1]);
    println!(
        "router decide over {N} calls ({} distinct feature sets): p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.1} µs (target p99 < 50 µs: {})",
        inputs.len(),
        us(p50),
        us(p99),
        us(p999),
        us(max),
        if p99 < Duration::from_micros(50) { "met" } else { "MISSED" }
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_decide
}

fn main() {
    benches();
    percentiles();
    Criterion::default().configure_from_args().final_summary();
}

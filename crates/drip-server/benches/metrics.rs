//! Recording one decision in the server's metrics, from two threads at
//! once (the runtime's workers on this 2-vCPU machine): `Metrics::decision`
//! (per-thread slots, summed when rendered) beside what it replaced, the
//! Prometheus exporter's own counter and histogram handles found in a
//! `DashMap` by bucket (every thread adding to the same atomics and
//! pushing its sample on one shared queue until an upkeep).
//!
//! Run: `cargo bench -p drip-server --bench metrics` (`METRICS_ROUNDS`,
//! `METRICS_CALLS` per thread and round).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use drip::Outcome;
use drip_server::metrics::{DECISION_SECONDS, DECISIONS, Metrics};
use metrics::{Counter, Histogram, Recorder, counter, histogram, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

const THREADS: usize = 2;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The exporter's handles, as `Metrics` kept them before (2026-12-07).
struct Exporter {
    recorder: PrometheusRecorder,
    decisions: DashMap<String, Arc<[Counter; 3]>>,
    latency: Histogram,
}

impl Exporter {
    fn new() -> Exporter {
        let recorder = PrometheusBuilder::new().build_recorder();
        let latency =
            with_local_recorder(&recorder as &dyn Recorder, || histogram!(DECISION_SECONDS));
        Exporter {
            recorder,
            decisions: DashMap::new(),
            latency,
        }
    }

    fn decision(&self, bucket: &str, i: usize, elapsed: Duration) {
        if let Some(c) = self.decisions.get(bucket) {
            c[i].increment(1);
        } else {
            let counters = self
                .decisions
                .entry(bucket.to_owned())
                .or_insert_with(|| {
                    Arc::new(with_local_recorder(&self.recorder as &dyn Recorder, || {
                        ["allowed", "limited", "exceeds"].map(
                            |o| counter!(DECISIONS, "bucket" => bucket.to_owned(), "outcome" => o),
                        )
                    }))
                })
                .clone();
            counters[i].increment(1);
        }
        self.latency.record(elapsed.as_secs_f64());
    }
}

/// ns per call, `calls` on each of the threads at once.
fn time(calls: usize, record: impl Fn(usize) + Sync) -> f64 {
    let barrier = Barrier::new(THREADS);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for n in 0..calls {
                    record(n);
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let rounds = env("METRICS_ROUNDS", 11).max(1);
    let calls = env("METRICS_CALLS", 2_000_000).max(1);
    let elapsed = Duration::from_micros(7);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Fresh each round: the exporter's queue of samples grows until an
        // upkeep, as between two scrapes.
        let m = Metrics::new();
        let e = Exporter::new();
        let run_ours = || time(calls, |_| m.decision("x", Outcome::Allowed, elapsed));
        let run_theirs = || time(calls, |_| e.decision("x", 0, elapsed));
        if round % 2 == 0 {
            ours.push(run_ours());
            theirs.push(run_theirs());
        } else {
            theirs.push(run_theirs());
            ours.push(run_ours());
        }
        assert!(m.render().contains("drip_decision_duration_seconds_count"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, t) = (median(&mut ours), median(&mut theirs));
    println!(
        "one decision recorded, {THREADS} threads at once: Metrics::decision {o:.1} ns, \
         the exporter's handles {t:.1} ns; ours/theirs {:.2} (median of {rounds} rounds of {calls} per thread)",
        o / t
    );
}

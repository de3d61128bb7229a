//! The counts and latencies of a run, and their two forms: a table in the
//! style of oha/hey/ghz, and one JSON object.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::outcome::Outcome;

/// Latencies are recorded in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// What one worker (or the whole run) counted.
pub struct Tally {
    /// Admitted requests.
    pub admitted: u64,
    /// Requests refused by the limit (429).
    pub rejected: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latencies in µs (from the intended send time under `--rate`).
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            admitted: 0,
            rejected: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
        }
    }
}

impl Tally {
    /// Counts one request that took `latency`.
    pub fn record(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Admitted { .. } => self.admitted += 1,
            Outcome::Rejected { .. } => self.rejected += 1,
            Outcome::Error { kind, .. } => *self.errors.entry(kind.clone()).or_default() += 1,
        }
        let us = (latency.as_micros() as u64).clamp(1, self.latency.high());
        self.latency.saturating_record(us);
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Tally) {
        self.admitted += other.admitted;
        self.rejected += other.rejected;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        let _ = self.latency.add(&other.latency);
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    /// Fastest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The figures of `h` (µs), all 0 when it is empty.
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        Latency {
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(h.max()),
        }
    }
}

/// A closed-loop run's latencies corrected for coordinated omission the way
/// wrk 4 corrects its own: an answer slower than the mean interval between
/// one connection's requests stands for the requests that connection did not
/// send meanwhile. Only for comparing with wrk; the measured figures are
/// `latency`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Corrected {
    /// The interval: duration × concurrency / requests, ms.
    pub interval_ms: f64,
    /// Requests counted, the synthetic ones included.
    pub samples: u64,
    /// The percentiles over them.
    pub latency: Latency,
}

/// About a second of work at most for the correction.
const MAX_CORRECTION_STEPS: u64 = 50_000_000;

impl Corrected {
    /// wrk's `stats_correct(latency, runtime_us / (complete / connections))`,
    /// as HdrHistogram's post-run correction of `h` (µs).
    fn of(h: &Histogram<u64>, elapsed: Duration, concurrency: u64) -> Option<Corrected> {
        if h.is_empty() {
            return None;
        }
        let interval_us =
            ((elapsed.as_micros() as u64).saturating_mul(concurrency) / h.len()).max(1);
        // The correction records one value per interval below each recorded
        // one: skip it where that would take longer than the run itself.
        let work: u64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() / interval_us)
            .fold(0, u64::saturating_add);
        if work > MAX_CORRECTION_STEPS {
            return None;
        }
        let corrected = h.clone_correct(interval_us);
        Some(Corrected {
            interval_ms: interval_us as f64 / 1000.0,
            samples: corrected.len(),
            latency: Latency::of(&corrected),
        })
    }
}

/// One bar of the latency histogram: requests at most `le_ms` (and above the
/// previous bar).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Bucket {
    /// Upper bound, ms.
    pub le_ms: f64,
    /// Requests in this bar.
    pub count: u64,
}

/// The whole run, as `--json` writes it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    /// `http` or `grpc`.
    pub protocol: String,
    /// Requests sent (admitted + rejected + errors).
    pub requests: u64,
    /// Admitted (200).
    pub admitted: u64,
    /// Refused by the limit (429): not errors.
    pub rejected: u64,
    /// Errors in all.
    pub errors: u64,
    /// Errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Requests per second over the run.
    pub throughput_rps: f64,
    /// The `--rate` asked for, requests per second (latencies then count from
    /// each request's intended send time: coordinated-omission corrected).
    pub target_rate_rps: Option<f64>,
    /// Workers (connections).
    pub concurrency: u64,
    /// Latency percentiles, as measured.
    pub latency: Latency,
    /// Without `--rate`: the same corrected as wrk corrects its figures, to
    /// compare with wrk's.
    pub latency_wrk_corrected: Option<Corrected>,
    /// A small latency histogram (ten bars).
    pub histogram: Vec<Bucket>,
}

impl Report {
    /// The report of `tally` over `elapsed`.
    pub fn new(
        protocol: &str,
        tally: &Tally,
        elapsed: Duration,
        target_rate_rps: Option<f64>,
        concurrency: u64,
    ) -> Report {
        let h = &tally.latency;
        let errors: u64 = tally.errors.values().sum();
        let requests = tally.admitted + tally.rejected + errors;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            protocol: protocol.to_string(),
            requests,
            admitted: tally.admitted,
            rejected: tally.rejected,
            errors,
            errors_by_kind: tally.errors.clone(),
            duration_s: secs,
            throughput_rps: requests as f64 / secs,
            target_rate_rps,
            concurrency,
            latency: Latency::of(h),
            latency_wrk_corrected: match target_rate_rps {
                Some(_) => None,
                None => Corrected::of(h, elapsed, concurrency),
            },
            histogram: bars(h, 10),
        }
    }

    /// Writes the table.
    pub fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "Summary ({}):", self.protocol)?;
        writeln!(out, "  Requests:     {}", self.requests)?;
        writeln!(out, "  Admitted:     {}", self.admitted)?;
        writeln!(out, "  Rejected:     {} (429)", self.rejected)?;
        writeln!(out, "  Errors:       {}", self.errors)?;
        for (kind, n) in &self.errors_by_kind {
            writeln!(out, "    {kind}: {n}")?;
        }
        writeln!(out, "  Duration:     {:.3} s", self.duration_s)?;
        writeln!(out, "  Throughput:   {:.1} req/s", self.throughput_rps)?;
        if let Some(r) = self.target_rate_rps {
            writeln!(
                out,
                "  Target rate:  {r:.1} req/s (latency from intended send time)"
            )?;
        }
        writeln!(out, "  Concurrency:  {}", self.concurrency)?;
        let l = &self.latency;
        writeln!(out)?;
        writeln!(out, "Latency (ms):")?;
        for (name, v) in [
            ("min", l.min_ms),
            ("mean", l.mean_ms),
            ("p50", l.p50_ms),
            ("p90", l.p90_ms),
            ("p99", l.p99_ms),
            ("p99.9", l.p999_ms),
            ("max", l.max_ms),
        ] {
            writeln!(out, "  {name:<6} {v:>10.3}")?;
        }
        if let Some(c) = &self.latency_wrk_corrected {
            let l = &c.latency;
            writeln!(out)?;
            writeln!(
                out,
                "Corrected as wrk corrects (interval {:.3} ms, {} samples), ms:",
                c.interval_ms, c.samples
            )?;
            writeln!(
                out,
                "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms
            )?;
        }
        writeln!(out)?;
        writeln!(out, "Latency histogram (ms):")?;
        let most = self
            .histogram
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(0)
            .max(1);
        for b in &self.histogram {
            let bar = "■".repeat((b.count * 40).div_ceil(most) as usize);
            writeln!(out, "  {:>10.3} [{:>8}] |{bar}", b.le_ms, b.count)?;
        }
        Ok(())
    }
}

/// `n` equal-width bars from the fastest to the slowest latency.
fn bars(h: &Histogram<u64>, n: u64) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min(), h.max());
    let width = (hi - lo).div_ceil(n).max(1);
    let mut out = Vec::new();
    let mut below = 0;
    let mut edge = lo;
    while edge < hi || out.is_empty() {
        edge = (edge + width).min(hi);
        let upto = if edge >= hi {
            h.len()
        } else {
            h.count_between(0, edge)
        };
        out.push(Bucket {
            le_ms: edge as f64 / 1000.0,
            count: upto - below,
        });
        below = upto;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tally(latencies_us: &[u64]) -> Tally {
        let mut t = Tally::default();
        for &us in latencies_us {
            t.record(
                &Outcome::Admitted {
                    status: "200",
                    detail: Bytes::new(),
                },
                Duration::from_micros(us),
            );
        }
        t
    }

    #[test]
    fn answers_within_the_interval_need_no_correction() {
        // 4 requests on 1 connection in 4 ms: interval 1 ms, all faster.
        let r = Report::new(
            "http",
            &tally(&[900, 900, 900, 900]),
            Duration::from_millis(4),
            None,
            1,
        );
        let c = r.latency_wrk_corrected.expect("closed loop");
        assert_eq!(c.interval_ms, 1.0);
        assert_eq!(c.samples, 4);
        assert_eq!(c.latency, r.latency);
    }

    #[test]
    fn a_slow_answer_stands_for_the_requests_not_sent() {
        // 10 requests on 1 connection in 20 ms: interval 2 ms; the 11 ms
        // answer adds 9, 7, 5, 3 ms, as wrk's stats_correct would.
        let mut us = vec![1000; 9];
        us.push(11_000);
        let r = Report::new("http", &tally(&us), Duration::from_millis(20), None, 1);
        let c = r.latency_wrk_corrected.expect("closed loop");
        assert_eq!(c.interval_ms, 2.0);
        assert_eq!(c.samples, 14);
        assert!(c.latency.p90_ms > r.latency.p90_ms, "{c:?}");
        assert_eq!(r.latency.p50_ms, 1.0);
    }

    #[test]
    fn a_fixed_rate_run_is_already_corrected() {
        let r = Report::new(
            "http",
            &tally(&[5000]),
            Duration::from_secs(1),
            Some(1.0),
            1,
        );
        assert!(r.latency_wrk_corrected.is_none());
    }
}

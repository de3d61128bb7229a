//! `drip stress` as a user runs it, against a real `drip serve` process:
//! a capacity-100 bucket with a slow leak admits exactly 100, the counts add
//! up, `--json` agrees with the table, `--rate` holds its rate, gRPC does the
//! same, and failures (not 429s) make the exit status non-zero.

mod serve_proc;

use std::process::Command;

use serde_json::Value;
use serve_proc::{DRIP, Serve};

/// Runs `drip stress ARGS`; returns (success, stdout, stderr).
fn stress(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(DRIP)
        .arg("stress")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run drip stress");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The number after `label` in the table, e.g. `Admitted:     100`.
fn table_count(table: &str, label: &str) -> u64 {
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in\n{table}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const SLOW_LEAK: &str = r#"{"capacity": 100, "leak_rate": 0.001}"#;

/// 300 requests at a capacity-100 bucket that barely leaks: 100 admitted,
/// 200 rejected, no errors; the table and `--json` (two fresh buckets) agree.
fn admits_exactly_capacity(grpc: bool) {
    let serve = Serve::start();
    serve.put_bucket("table", SLOW_LEAK);
    serve.put_bucket("json", SLOW_LEAK);
    let url = if grpc {
        serve.grpc_url()
    } else {
        serve.http_url()
    };
    let mut base = vec![
        "--url",
        url.as_str(),
        "--requests",
        "300",
        "--concurrency",
        "8",
    ];
    if grpc {
        base.push("--grpc");
    }

    let (ok, table, err) = stress(&[&base[..], &["--bucket", "table"]].concat());
    assert!(ok, "a run with only 429s must succeed: {err}");
    let counts = ["Requests:", "Admitted:", "Rejected:", "Errors:"].map(|l| table_count(&table, l));
    assert_eq!(counts, [300, 100, 200, 0], "{table}");
    assert!(
        table.contains("p99.9")
            && table.contains("Latency histogram")
            && table.contains("Corrected as wrk corrects"),
        "{table}"
    );

    let (ok, json, err) = stress(&[&base[..], &["--bucket", "json", "--json"]].concat());
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&json).expect("--json is one JSON object");
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}"));
    assert_eq!(n("admitted"), 100, "{json}");
    assert_eq!(n("admitted") + n("rejected") + n("errors"), n("requests"));
    assert_eq!(
        [n("requests"), n("admitted"), n("rejected"), n("errors")],
        counts,
        "--json and the table disagree"
    );
    assert_eq!(r["protocol"], if grpc { "grpc" } else { "http" });
    let l = &r["latency"];
    let ms: Vec<f64> = ["min_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
        .iter()
        .map(|k| l[k].as_f64().unwrap())
        .collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]) && ms[0] > 0.0, "{l}");
    // A closed-loop run also reports its latencies corrected as wrk's are:
    // the synthetic samples only add, each below a measured one.
    let c = &r["latency_wrk_corrected"];
    assert!(c["samples"].as_u64().unwrap() >= 300, "{c}");
    assert!(c["interval_ms"].as_f64().unwrap() > 0.0, "{c}");
    assert_eq!(c["latency"]["max_ms"], l["max_ms"], "{c}");
    let bars: u64 = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bars, 300, "the histogram counts every request");
}

#[test]
fn http_admits_exactly_the_capacity() {
    admits_exactly_capacity(false);
}

#[test]
fn grpc_admits_exactly_the_capacity() {
    admits_exactly_capacity(true);
}

/// `--rate 200` for 5 s: 1000 requests and 200 req/s, each within 5%.
fn holds_the_rate(grpc: bool) {
    let serve = Serve::start();
    serve.put_bucket("wide", r#"{"capacity": 1000000, "leak_rate": 1000000}"#);
    let url = if grpc {
        serve.grpc_url()
    } else {
        serve.http_url()
    };
    let mut args = vec![
        "--url",
        &url,
        "--bucket",
        "wide",
        "--rate",
        "200",
        "--duration",
        "5s",
        "--concurrency",
        "8",
        "--json",
    ];
    if grpc {
        args.push("--grpc");
    }
    let (ok, json, err) = stress(&args);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&json).unwrap();
    let requests = r["requests"].as_u64().unwrap() as f64;
    let rps = r["throughput_rps"].as_f64().unwrap();
    assert!(
        (requests - 1000.0).abs() <= 50.0,
        "{requests} requests in 5 s at 200/s"
    );
    assert!((rps - 200.0).abs() <= 10.0, "{rps} req/s for --rate 200");
    assert_eq!(r["admitted"].as_u64().unwrap() as f64, requests);
    assert_eq!(r["target_rate_rps"].as_f64(), Some(200.0));
}

#[test]
fn http_rate_holds_within_5_percent() {
    holds_the_rate(false);
}

#[test]
fn grpc_rate_holds_within_5_percent() {
    holds_the_rate(true);
}

#[test]
fn failures_are_counted_by_kind_and_fail_the_run() {
    let serve = Serve::start();
    let (ok, json, err) = stress(&[
        "--url",
        &serve.http_url(),
        "--bucket",
        "missing",
        "--requests",
        "20",
        "--json",
    ]);
    assert!(!ok, "404s are errors: the exit status must say so");
    assert!(err.contains("20 of 20 requests failed"), "{err}");
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["errors_by_kind"]["http 404"], 20, "{json}");

    let (ok, _, err) = stress(&[
        "--url",
        &serve.grpc_url(),
        "--grpc",
        "--bucket",
        "missing",
        "--requests",
        "5",
    ]);
    assert!(!ok && err.contains("5 of 5 requests failed"), "{err}");
}

#[test]
fn verbose_prints_one_numbered_line_per_request() {
    let serve = Serve::start();
    serve.put_bucket("v", r#"{"capacity": 2, "leak_rate": 0.001}"#);
    let (ok, out, err) = stress(&[
        "--url",
        &serve.http_url(),
        "--bucket",
        "v",
        "--requests",
        "3",
        "--concurrency",
        "1",
        "--verbose",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().take(3).collect();
    assert!(lines[0].starts_with("1: 200 - {\"allowed\":true"), "{out}");
    assert!(lines[1].starts_with("2: 200 - {\"allowed\":true"), "{out}");
    assert!(lines[2].starts_with("3: 429 - {\"allowed\":false"), "{out}");
}

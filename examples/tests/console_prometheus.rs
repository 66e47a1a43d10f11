//! The console's `/metrics` read by Prometheus's own parser: Python's
//! `prometheus_client` (pinned in `scripts/interop-venv.sh`), through
//! `examples/interop/python/metrics.py`, against a Keel echo server in this
//! process that has just answered calls the test counted.
//!
//! ```text
//!   test ──baidu_std──► EchoService.Echo   (ok, fail:1003, fail:2001)
//!   metrics.py ──GET /metrics──► same port ──► text_string_to_metric_families ──► JSON ──► test
//! ```

#[path = "support/console.rs"]
mod console;
#[path = "support/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use console::EchoServer;
use peers::{python, python_dir, run_bounded};
use serde_json::Value;

/// How long the parser's run may take.
const PARSER_RUN: Duration = Duration::from_secs(60);

const OK_CALLS: u64 = 23;
/// Failed calls: `(code, its name, how many)`.
const FAILED_CALLS: [(i32, &str, u64); 2] = [(1003, "EREQUEST", 4), (2001, "EINTERNAL", 3)];

/// The echo method's labels, as the exposition spells them.
fn is_echo(sample: &Value) -> bool {
    sample["labels"]["service"] == "example.EchoService" && sample["labels"]["method"] == "Echo"
}

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:#?}"))
}

fn value(sample: &Value) -> f64 {
    sample["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("not a finite number: {sample}"))
}

/// The echo method's samples of `family` whose sample name is `name`.
fn echo_samples<'a>(family: &'a Value, name: &str) -> Vec<&'a Value> {
    family["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["name"] == name && is_echo(s))
        .collect()
}

#[test]
fn prometheus_client_parses_metrics_that_count_the_calls_made() {
    let server = EchoServer::start();
    for i in 0..OK_CALLS {
        server.echo_ok(&format!("hello {i}"));
    }
    for (code, _, count) in FAILED_CALLS {
        for _ in 0..count {
            server.echo_fail(code);
        }
    }
    let calls = OK_CALLS + FAILED_CALLS.iter().map(|(_, _, n)| n).sum::<u64>();

    let mut parse = Command::new(python());
    parse
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(python_dir().join("metrics.py"))
        .arg(server.url("/metrics"));
    let run = run_bounded(parse, PARSER_RUN).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.status.success(),
        "metrics.py failed ({}):\n{}\nthe exposition:\n{}",
        run.status,
        run.stderr,
        server.get("/metrics").body
    );
    let parsed: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("metrics.py printed no JSON ({e}): {}", run.stdout));
    assert!(
        parsed["content_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{}",
        parsed["content_type"]
    );
    let families = parsed["families"].as_array().expect("families");

    // Every family is typed, documented, prefixed, and named by convention:
    // counters' samples end in _total (the parser drops the suffix from the
    // family's name, so the family name must not end in it twice), other
    // kinds never end in it.
    assert!(families.len() >= 10, "{families:#?}");
    for f in families {
        let name = f["name"].as_str().expect("name");
        let kind = f["type"].as_str().expect("type");
        assert!(name.starts_with("keel_"), "{name} lacks the keel_ prefix");
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind),
            "{name} is of type {kind} (no # TYPE line, or an unexpected one)"
        );
        assert!(
            f["help"].as_str().is_some_and(|h| !h.is_empty()),
            "{name} has no help"
        );
        let samples = f["samples"].as_array().expect("samples");
        for s in samples {
            let sample = s["name"].as_str().expect("sample name");
            assert!(value(s) >= 0.0, "{sample} is negative: {s}");
            match kind {
                "counter" => assert_eq!(sample, format!("{name}_total"), "counter {name}"),
                _ => assert!(
                    !sample.ends_with("_total"),
                    "{kind} {sample} ends in _total"
                ),
            }
        }
        if kind != "histogram" {
            assert!(!samples.is_empty(), "{name} has no samples");
        }
    }

    // Calls and errors by code, of the echo method.
    let started = echo_samples(
        family(families, "keel_server_method_calls"),
        "keel_server_method_calls_total",
    );
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(value(started[0]), calls as f64);
    let errors = echo_samples(
        family(families, "keel_server_method_errors"),
        "keel_server_method_errors_total",
    );
    let by_code: BTreeMap<String, (String, f64)> = errors
        .iter()
        .map(|s| {
            let code = s["labels"]["code"].as_str().expect("code").to_owned();
            let name = s["labels"]["name"].as_str().expect("name").to_owned();
            (code, (name, value(s)))
        })
        .collect();
    let expected: BTreeMap<String, (String, f64)> = FAILED_CALLS
        .iter()
        .map(|(code, name, n)| (code.to_string(), ((*name).to_owned(), *n as f64)))
        .collect();
    assert_eq!(by_code, expected);
    let in_flight = echo_samples(
        family(families, "keel_server_method_in_flight"),
        "keel_server_method_in_flight",
    );
    assert_eq!(in_flight.len(), 1);
    assert_eq!(value(in_flight[0]), 0.0);
    let server_calls = family(families, "keel_server_calls");
    assert!(value(&server_calls["samples"][0]) >= calls as f64);
    let server_errors = family(families, "keel_server_errors");
    assert!(value(&server_errors["samples"][0]) >= (calls - OK_CALLS) as f64);

    // The latency histogram: buckets by increasing bound, cumulative counts
    // that never fall, +Inf last and equal to _count, which counts every
    // call that ended.
    let histogram = family(families, "keel_server_handling_seconds");
    assert_eq!(histogram["type"], "histogram");
    let mut buckets: Vec<(f64, f64)> =
        echo_samples(histogram, "keel_server_handling_seconds_bucket")
            .iter()
            .map(|s| {
                let le = s["labels"]["le"].as_str().expect("le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()
                        .unwrap_or_else(|_| panic!("le={le:?} is not a number"))
                };
                (bound, value(s))
            })
            .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    let in_exposition_order = buckets.clone();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(
        buckets, in_exposition_order,
        "buckets are listed by increasing bound"
    );
    assert!(
        buckets.windows(2).all(|w| w[0].0 < w[1].0),
        "one bucket per bound: {buckets:?}"
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative counts never fall: {buckets:?}"
    );
    let (last_bound, last_count) = *buckets.last().expect("buckets");
    assert_eq!(last_bound, f64::INFINITY, "the last bucket is +Inf");
    assert_eq!(last_count, calls as f64);
    let count = echo_samples(histogram, "keel_server_handling_seconds_count");
    assert_eq!(count.len(), 1);
    assert_eq!(value(count[0]), calls as f64);
    let sum = echo_samples(histogram, "keel_server_handling_seconds_sum");
    assert_eq!(sum.len(), 1);
    assert!(value(sum[0]) > 0.0, "{}", sum[0]);
    // Loopback echo calls are fast: most end in a bucket under a second.
    let under_a_second = buckets
        .iter()
        .rev()
        .find(|(bound, _)| *bound <= 1.0)
        .map_or(0.0, |b| b.1);
    assert!(under_a_second > 0.0, "{buckets:?}");
}

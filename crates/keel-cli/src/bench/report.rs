//! What `keel bench` prints: a table and a text histogram, or one JSON
//! object (`--format json`).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use keel::Code;
use serde_json::json;

use super::Errors;
use crate::failure::code_name;

/// The percentiles reported.
const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p999", 0.999),
    ("max", 1.0),
];

/// A measured run.
pub struct Report {
    /// Protocol and address.
    pub target: String,
    /// `package.Service.Method`.
    pub method: String,
    pub concurrency: u64,
    pub connections: u64,
    /// Open loop's rate, if one was asked.
    pub qps_target: Option<f64>,
    /// Calls completed, successes and failures.
    pub calls: u64,
    pub ok: u64,
    pub errors: Errors,
    pub elapsed: Duration,
    /// Latencies of the successful calls, in microseconds.
    pub histogram: Histogram<u64>,
    pub client_allocs_per_call: Option<f64>,
    pub server_allocs_per_call: Option<f64>,
}

/// `850us`, `1.25ms`, `2.00s`.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

impl Report {
    fn qps(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.histogram.is_empty() {
            0
        } else if q >= 1.0 {
            self.histogram.max()
        } else {
            self.histogram.value_at_quantile(q)
        }
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = QUANTILES
            .iter()
            .map(|(name, q)| (format!("{name}_us"), json!(self.quantile(*q))))
            .chain([("mean_us".to_owned(), json!(self.histogram.mean()))])
            .collect();
        let errors: Vec<serde_json::Value> = self
            .errors
            .iter()
            .map(|(code, (count, message))| {
                json!({
                    "code": code,
                    "name": Code::new(*code).name(),
                    "count": count,
                    "message": message,
                })
            })
            .collect();
        json!({
            "target": self.target,
            "method": self.method,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "qps_target": self.qps_target,
            "seconds": self.elapsed.as_secs_f64(),
            "calls": self.calls,
            "ok": self.ok,
            "errors": self.calls - self.ok,
            "errors_by_code": errors,
            "qps": self.qps(),
            "latency": latency,
            "client_allocs_per_call": self.client_allocs_per_call,
            "server_allocs_per_call": self.server_allocs_per_call,
        })
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mode = match self.qps_target {
            Some(r) => format!("open loop at {r:.0} calls/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "{} -> {}: {} in flight on {} connection(s), {mode}",
            self.method, self.target, self.concurrency, self.connections
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "  calls       {:>12}", self.calls);
        let _ = writeln!(out, "  seconds     {:>12.2}", self.elapsed.as_secs_f64());
        let _ = writeln!(out, "  QPS         {:>12.0}", self.qps());
        let _ = writeln!(out, "  errors      {:>12}", self.calls - self.ok);
        for (code, (count, message)) in &self.errors {
            let _ = writeln!(
                out,
                "    {:<22} {count:>8}  {message}",
                code_name(Code::new(*code))
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "  latency (successful calls)");
        for (name, q) in QUANTILES {
            let _ = writeln!(out, "    {name:<5} {:>10}", micros(self.quantile(q)));
        }
        let _ = writeln!(
            out,
            "    mean  {:>10}",
            micros(self.histogram.mean() as u64)
        );
        let figure = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  allocations per call: {} client, {} server{}",
            figure(self.client_allocs_per_call),
            figure(self.server_allocs_per_call),
            if self.server_allocs_per_call.is_none() {
                " (the server's console shows no counting allocator)"
            } else {
                ""
            }
        );
        if !self.histogram.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "  histogram");
            out.push_str(&self.bars());
        }
        out
    }

    /// Ten bars between the fastest and the slowest call (log-spaced
    /// edges when they are far apart).
    fn bars(&self) -> String {
        let (lo, hi) = (self.histogram.min().max(1), self.histogram.max().max(1));
        const ROWS: usize = 10;
        const WIDTH: f64 = 40.0;
        let log = hi as f64 / lo as f64 > 20.0;
        let edge = |i: usize| -> u64 {
            let f = i as f64 / ROWS as f64;
            if log {
                (lo as f64 * (hi as f64 / lo as f64).powf(f)).round() as u64
            } else {
                (lo as f64 + (hi - lo) as f64 * f).round() as u64
            }
        };
        let mut counts = Vec::with_capacity(ROWS);
        let mut below = 0;
        for i in 1..=ROWS {
            let upto = if i == ROWS { u64::MAX } else { edge(i) };
            let n: u64 = self
                .histogram
                .iter_recorded()
                .filter(|v| {
                    let x = v.value_iterated_to();
                    x <= upto
                })
                .map(|v| v.count_at_value())
                .sum();
            counts.push((edge(i).min(hi), n - below));
            below = n;
        }
        let most = counts.iter().map(|c| c.1).max().unwrap_or(1).max(1);
        let mut out = String::new();
        for (upto, n) in counts {
            let bar = "■".repeat((n as f64 / most as f64 * WIDTH).round() as usize);
            let _ = writeln!(out, "    <= {:>9} {n:>10} {bar}", micros(upto));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_count_every_call() {
        let mut h = super::super::new_histogram();
        for us in [100, 200, 300, 400, 10_000] {
            h.record(us).expect("in range");
        }
        let mut errors = Errors::new();
        errors.insert(1008, (2, "timed out".into()));
        let r = Report {
            target: "baidu_std 127.0.0.1:1".into(),
            method: "a.B.C".into(),
            concurrency: 4,
            connections: 1,
            qps_target: None,
            calls: 7,
            ok: 5,
            errors,
            elapsed: Duration::from_secs(1),
            histogram: h,
            client_allocs_per_call: Some(1.0),
            server_allocs_per_call: None,
        };
        let j = r.json();
        assert_eq!(j["calls"], 7);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["errors_by_code"][0]["name"], "ERPCTIMEDOUT");
        assert_eq!(j["latency"]["max_us"], 10_007);
        let text = r.text();
        assert!(text.contains("ERPCTIMEDOUT(1008)"), "{text}");
        let bars: u64 = text
            .lines()
            .filter(|l| l.trim_start().starts_with("<="))
            .map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .expect("count")
                    .parse::<u64>()
                    .expect("n")
            })
            .sum();
        assert_eq!(bars, 5, "{text}");
        assert_eq!(micros(1_500), "1.50ms");
    }
}

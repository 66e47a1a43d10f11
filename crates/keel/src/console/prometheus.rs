//! `/metrics`: Prometheus's text exposition format (version 0.0.4) of the
//! variables `/vars` shows, and per method the calls, the errors by code
//! and a latency histogram (`keel_server_handling_seconds`, whose buckets
//! are exact: see [`PROMETHEUS_BOUNDS`]).

use std::fmt::Write as _;

use crate::console::pages::code_name;
use crate::console::vars;
use crate::metrics::buckets::PROMETHEUS_BOUNDS;
use crate::server::builder::ServerCore;

/// Escapes a label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
pub(crate) fn exposition(core: &ServerCore) -> String {
    let mut out = String::with_capacity(8192);
    for var in vars::all(core) {
        header(&mut out, var.name, var.help, var.kind.as_str());
        let _ = writeln!(out, "{} {}", var.name, var.value);
    }
    let dispatcher = &core.dispatcher;
    let stats = dispatcher.method_stats_table();
    let limits = dispatcher.limits();
    let methods = dispatcher.methods();
    header(
        &mut out,
        "keel_server_method_calls_total",
        "Calls of a method (started).",
        "counter",
    );
    for (m, index) in &methods {
        if let Some(s) = stats.get(*index) {
            let _ = writeln!(
                out,
                "keel_server_method_calls_total{{service=\"{}\",method=\"{}\"}} {}",
                label(m.service),
                label(m.method),
                s.snapshot_counts().0
            );
        }
    }
    header(
        &mut out,
        "keel_server_method_errors_total",
        "Calls of a method that failed, by status code.",
        "counter",
    );
    for (m, index) in &methods {
        if let Some(s) = stats.get(*index) {
            for (code, count) in s.errors_by_code() {
                let (code, name) = match code {
                    Some(code) => (code.to_string(), code_name(code)),
                    None => ("other".to_owned(), "other".to_owned()),
                };
                let _ = writeln!(
                    out,
                    "keel_server_method_errors_total{{service=\"{}\",method=\"{}\",code=\"{}\",name=\"{}\"}} {count}",
                    label(m.service),
                    label(m.method),
                    label(&code),
                    label(&name)
                );
            }
        }
    }
    header(
        &mut out,
        "keel_server_method_in_flight",
        "Calls of a method being handled now.",
        "gauge",
    );
    for (m, index) in &methods {
        if let Some(l) = limits.methods.get(*index) {
            let _ = writeln!(
                out,
                "keel_server_method_in_flight{{service=\"{}\",method=\"{}\"}} {}",
                label(m.service),
                label(m.method),
                l.current()
            );
        }
    }
    header(
        &mut out,
        "keel_server_handling_seconds",
        "Time from admission to the handler's answer, of the calls of a method that ended.",
        "histogram",
    );
    for (m, index) in &methods {
        let Some(s) = stats.get(*index) else { continue };
        let buckets = s.latency().snapshot();
        let labels = format!(
            "service=\"{}\",method=\"{}\"",
            label(m.service),
            label(m.method)
        );
        for (bound, count) in PROMETHEUS_BOUNDS.iter().zip(buckets.cumulative_at_bounds()) {
            // The bound is the top of a bucket of whole microseconds.
            let le = (*bound + 1) as f64 / 1e6;
            let _ = writeln!(
                out,
                "keel_server_handling_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
            );
        }
        let count = buckets.count();
        let _ = writeln!(
            out,
            "keel_server_handling_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "keel_server_handling_seconds_sum{{{labels}}} {}",
            buckets.sum_micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "keel_server_handling_seconds_count{{{labels}}} {count}"
        );
    }
    out
}

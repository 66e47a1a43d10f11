//! One renderer for every console page: the page's JSON document drawn as
//! HTML. Objects become two-column tables, arrays of objects become tables
//! with a column per key, and arrays of numbers under a key ending in
//! `series` become charts (inline SVG, drawn here: no script, no CDN).
//!
//! `/status` has a layout of its own ([`Layout::Status`]): drawn as nested
//! tables, its methods' eight figures in three windows pushed the charts
//! past the right edge of a laptop's window; one table per service, three
//! rows per method, as brpc draws it, reads at a glance.

use std::fmt::Write as _;

use serde_json::Value;

use crate::console::Page;
use crate::console::pages::KNOWN;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}\
nav{background:#1d3557;padding:8px 16px}nav a{color:#f1faee;margin-right:14px;text-decoration:none}\
main{padding:12px 16px}h1{font-size:20px;margin:4px 0 12px}\
table{border-collapse:collapse;margin:4px 0 12px}td,th{border:1px solid #ddd;padding:3px 8px;\
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg.chart{background:#f8fbff;border:1px solid #cde}svg.chart polyline{fill:none;stroke:#1d70b8;stroke-width:1.5}\
h2{font-size:16px;margin:14px 0 4px}table.status td{white-space:nowrap}table.status td,table.status th{padding:2px 6px}\
table.status td.w{color:#555}table.status svg.chart{display:block;width:200px;height:34px}\
pre{background:#f6f6f6;padding:8px;overflow:auto}form{margin:6px 0 12px}input{margin-right:6px}";

/// Escapes text for HTML.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How a page's document is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// By its shape: objects as tables, series as charts.
    Document,
    /// `/status`'s document: a table per service, rows per method and
    /// window.
    Status,
}

/// The whole HTML page.
pub(crate) fn html(page: &Page) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · keel</title><style>{STYLE}</style></head><body><nav>",
        escape(page.title)
    );
    for (path, _) in KNOWN {
        let _ = write!(out, "<a href=\"{path}\">{path}</a>");
    }
    let _ = write!(out, "</nav><main><h1>{}</h1>", escape(page.title));
    out.push_str(&page.extra_html);
    match page.layout {
        Layout::Document => value(&mut out, "", &page.json),
        Layout::Status => status(&mut out, &page.json),
    }
    out.push_str("</main></body></html>");
    out
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn value(out: &mut String, key: &str, v: &Value) {
    match v {
        Value::Object(map) => {
            out.push_str("<table>");
            for (k, v) in map {
                let _ = write!(out, "<tr><th>{}</th>", escape(k));
                cell(out, k, v);
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        }
        Value::Array(items) if key.ends_with("series") => chart(out, items),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let mut columns: Vec<&str> = Vec::new();
            for item in items {
                if let Value::Object(map) = item {
                    for k in map.keys() {
                        if !columns.contains(&k.as_str()) {
                            columns.push(k);
                        }
                    }
                }
            }
            out.push_str("<table><tr>");
            for c in &columns {
                let _ = write!(out, "<th>{}</th>", escape(c));
            }
            out.push_str("</tr>");
            for item in items {
                out.push_str("<tr>");
                for c in &columns {
                    cell(out, c, item.get(*c).unwrap_or(&Value::Null));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        }
        Value::Array(items) if items.iter().all(is_scalar) => {
            let texts: Vec<String> = items.iter().map(scalar).collect();
            out.push_str(&escape(&texts.join(", ")));
        }
        Value::Array(items) => {
            for item in items {
                value(out, key, item);
            }
        }
        v => out.push_str(&escape(&scalar(v))),
    }
}

fn cell(out: &mut String, key: &str, v: &Value) {
    if v.is_number() {
        out.push_str("<td class=\"n\">");
    } else {
        out.push_str("<td>");
    }
    if key == "path" || key == "href" {
        if let Some(link) = v.as_str().filter(|s| s.starts_with('/')) {
            let _ = write!(out, "<a href=\"{0}\">{0}</a></td>", escape(link));
            return;
        }
    }
    value(out, key, v);
    out.push_str("</td>");
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            // Counters and gauges are kept as floats; most are whole.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        v => v.to_string(),
    }
}

/// Calls in flight, and their limit if there is one: `3` or `3 / 100`.
fn in_flight(now: &Value, limit: &Value) -> String {
    match limit {
        Value::Null => scalar(now),
        limit => format!("{} / {}", scalar(now), scalar(limit)),
    }
}

/// An entry of a method's `errors_by_code`: `EREQUEST (1003): 3`, or
/// `4242: 2` for a code with no name.
fn error_count(e: &Value) -> String {
    let count = scalar(&e["count"]);
    match &e["code"] {
        Value::Null => format!("other: {count}"),
        code if e["name"].as_str() == Some(scalar(code).as_str()) => {
            format!("{}: {count}", scalar(code))
        }
        code => format!("{} ({}): {count}", scalar(&e["name"]), scalar(code)),
    }
}

/// `/status`: the server's figures, then per service a table with three
/// rows per method (last second, last minute, since start) beside what
/// holds for all three: its name (the path on hover), kind, calls in flight, errors by code
/// and its QPS chart.
fn status(out: &mut String, doc: &Value) {
    const WINDOWS: [(&str, &str); 3] = [
        ("second", "second"),
        ("minute", "minute"),
        ("total", "since start"),
    ];
    const FIGURES: [(&str, &str); 8] = [
        ("calls", "calls"),
        ("errors", "errors"),
        ("qps", "QPS"),
        ("avg_us", "avg µs"),
        ("p50_us", "p50 µs"),
        ("p99_us", "p99 µs"),
        ("p999_us", "p999 µs"),
        ("max_us", "max µs"),
    ];
    let _ = write!(
        out,
        "<p>up {} s · calls in flight (limit): {} · <a href=\"/status?format=json\">JSON</a></p>",
        scalar(&doc["uptime_s"]),
        in_flight(&doc["concurrency"], &doc["max_concurrency"]),
    );
    if let Some(limits) = doc["connection_limits"].as_object() {
        out.push_str("<p>connection limits: ");
        for (i, (name, limit)) in limits.iter().enumerate() {
            let shown = if limit.is_null() {
                "none".to_owned()
            } else {
                scalar(limit)
            };
            let _ = write!(
                out,
                "{}{} {}",
                if i == 0 { "" } else { " · " },
                escape(&name.replace('_', " ")),
                escape(&shown)
            );
        }
        out.push_str("</p>");
    }
    for service in doc["services"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<h2>{}</h2><table class=\"status\"><tr><th>method</th><th>kind</th>\
             <th>in flight (limit)</th><th>errors by code</th><th>window</th>",
            escape(service["name"].as_str().unwrap_or_default())
        );
        for (_, header) in FIGURES {
            let _ = write!(out, "<th>{header}</th>");
        }
        out.push_str("<th>QPS, each second</th></tr>");
        for method in service["methods"].as_array().into_iter().flatten() {
            let errors: Vec<String> = method["errors_by_code"]
                .as_array()
                .into_iter()
                .flatten()
                .map(error_count)
                .collect();
            for (row, (window, label)) in WINDOWS.iter().enumerate() {
                out.push_str("<tr>");
                if row == 0 {
                    let _ = write!(
                        out,
                        "<td rowspan=\"3\" title=\"{}\">{}</td><td rowspan=\"3\">{}</td>\
                         <td rowspan=\"3\" class=\"n\">{}</td><td rowspan=\"3\">{}</td>",
                        escape(method["path"].as_str().unwrap_or_default()),
                        escape(method["method"].as_str().unwrap_or_default()),
                        escape(method["kind"].as_str().unwrap_or_default()),
                        in_flight(&method["concurrency"], &method["max_concurrency"]),
                        errors
                            .iter()
                            .map(|e| escape(e))
                            .collect::<Vec<_>>()
                            .join("<br>"),
                    );
                }
                let _ = write!(out, "<td class=\"w\">{label}</td>");
                for (figure, _) in FIGURES {
                    let _ = write!(
                        out,
                        "<td class=\"n\">{}</td>",
                        escape(&scalar(&method[*window][figure]))
                    );
                }
                if row == 0 {
                    out.push_str("<td rowspan=\"3\">");
                    let series = method["qps_series"]
                        .as_array()
                        .map_or(&[][..], Vec::as_slice);
                    chart(out, series);
                    out.push_str("</td>");
                }
                out.push_str("</tr>");
            }
        }
        out.push_str("</table>");
    }
}

/// A line chart of `points` (oldest first), scaled to its own maximum.
pub(crate) fn chart(out: &mut String, points: &[Value]) {
    const W: f64 = 360.0;
    const H: f64 = 60.0;
    let ys: Vec<f64> = points.iter().filter_map(Value::as_f64).collect();
    let max = ys.iter().copied().fold(0.0_f64, f64::max);
    let min = ys.iter().copied().fold(max, f64::min).min(0.0);
    let span = if max > min { max - min } else { 1.0 };
    let n = ys.len().max(2);
    let _ = write!(
        out,
        "<svg class=\"chart\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{} points, max {max}</title><polyline points=\"",
        ys.len()
    );
    if ys.len() < 2 {
        // Nothing yet: a baseline, so the chart is drawn from the start.
        let y = ys
            .first()
            .map_or(H - 1.0, |v| H - 1.0 - (v - min) / span * (H - 2.0));
        let _ = write!(out, "0,{y:.1} {W},{y:.1}");
    } else {
        for (i, v) in ys.iter().enumerate() {
            let x = i as f64 * W / (n - 1) as f64;
            let y = H - 1.0 - (v - min) / span * (H - 2.0);
            let _ = write!(out, "{x:.1},{y:.1} ");
        }
    }
    out.push_str("\"/></svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_render_as_escaped_tables_and_charts() {
        let page = Page::new(
            "T<est>",
            serde_json::json!({
                "name": "<b>",
                "rows": [{"a": 1, "b": "x"}, {"a": 2.5, "c": true}],
                "qps_series": [1, 3, 2],
                "list": [1, 2],
                "whole": 4114.0,
            }),
        );
        let html = html(&page);
        assert!(html.contains("<title>T&lt;est&gt; · keel</title>"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("<th>a</th><th>b</th><th>c</th>"));
        assert!(html.contains("<td class=\"n\">2.50</td>"));
        assert!(html.contains("<td class=\"n\">4114</td>"));
        assert!(html.contains("<svg class=\"chart\""));
        assert!(html.contains("<polyline points=\"0.0,"));
        assert!(html.contains("1, 2"));
    }

    #[test]
    fn status_draws_three_rows_per_method_and_a_chart() {
        let window = serde_json::json!({
            "calls": 9, "errors": 2, "qps": 1.5, "avg_us": 3, "p50_us": 2,
            "p99_us": 7, "p999_us": 7, "max_us": 8,
        });
        let mut page = Page::new(
            "status",
            serde_json::json!({
                "uptime_s": 1.0, "concurrency": 0, "max_concurrency": null,
                "services": [{"name": "example.EchoService", "methods": [{
                    "method": "Echo", "path": "/example.EchoService/Echo", "kind": "unary",
                    "calls": 9, "errors": 2, "concurrency": 1, "max_concurrency": 10,
                    "errors_by_code": [
                        {"code": 1003, "name": "EREQUEST", "count": 1},
                        {"code": 4242, "name": "4242", "count": 1},
                    ],
                    "second": window, "minute": window, "total": window,
                    "qps_series": [0, 3, 1],
                }]}],
            }),
        );
        page.layout = Layout::Status;
        let html = html(&page);
        assert!(html.contains("<h2>example.EchoService</h2>"));
        assert!(html.contains("title=\"/example.EchoService/Echo\">Echo</td>"));
        assert!(html.contains("<td rowspan=\"3\" class=\"n\">1 / 10</td>"));
        assert!(html.contains("EREQUEST (1003): 1<br>4242: 1"));
        assert_eq!(html.matches("<td class=\"w\">").count(), 3);
        assert_eq!(html.matches("<td class=\"n\">1.50</td>").count(), 3);
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 1);
        assert!(html.contains("calls in flight (limit): 0 ·"));
    }
}

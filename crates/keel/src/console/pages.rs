//! The console's pages, each a JSON document (see [`super::render`] for
//! how it is drawn).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::console::render::{Layout, chart, escape};
use crate::console::state::Window;
use crate::console::vars::{self, Var};
use crate::console::{Page, Query};
use crate::method::MethodKind;
use crate::server::builder::ServerCore;
use crate::status::Code;

/// Every page, with what it shows (the index links them all).
pub(crate) const KNOWN: &[(&str, &str)] = &[
    ("/", "this index"),
    ("/status", "every method: QPS, latency, errors, concurrency"),
    ("/vars", "every counter and gauge, charted"),
    ("/metrics", "the same for Prometheus"),
    ("/rpcz", "recent span trees"),
    ("/pools", "every keel-pool"),
    ("/memory", "heap and resident memory"),
    ("/connections", "every connection of the process"),
    (
        "/invokers",
        "every cluster invoker of the process, and its etcd registrations",
    ),
    ("/health", "200 while serving, 503 while shutting down"),
    ("/flags", "settings that can change at run time"),
];

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `/`: the process summary and links.
pub(crate) fn index(core: &ServerCore) -> Page {
    let uptime = core.console.started.elapsed();
    let services: Vec<&str> = core.dispatcher.table().services().map(|s| s.name).collect();
    Page::new(
        "keel",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": secs(uptime),
            "pid": std::process::id(),
            "protocols": ["baidu_std", "grpc", "http"],
            "services": services,
            "build": {
                "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
                "target_os": std::env::consts::OS,
                "target_arch": std::env::consts::ARCH,
                "counting_allocator": keel_alloc::is_installed(),
            },
            "pages": KNOWN.iter().map(|(path, what)| json!({"path": path, "shows": what})).collect::<Vec<_>>(),
        }),
    )
}

fn window(w: &Window) -> Value {
    json!({
        "calls": w.calls,
        "errors": w.errors,
        "qps": (w.qps * 100.0).round() / 100.0,
        "avg_us": w.avg_us,
        "p50_us": w.p50_us,
        "p99_us": w.p99_us,
        "p999_us": w.p999_us,
        "max_us": w.max_us,
    })
}

fn kind(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ClientStreaming => "client_streaming",
        MethodKind::ServerStreaming => "server_streaming",
        MethodKind::BidiStreaming => "bidi_streaming",
    }
}

/// A code as the console names it: `ENOMETHOD`, `NotFound`, or its number.
pub(crate) fn code_name(code: i32) -> String {
    Code::new(code)
        .name()
        .map_or_else(|| code.to_string(), str::to_owned)
}

/// `/status`: every method of every service.
pub(crate) fn status(core: &ServerCore) -> Page {
    let dispatcher = &core.dispatcher;
    let limits = dispatcher.limits();
    let stats = dispatcher.method_stats_table();
    let uptime = core.console.started.elapsed().as_secs_f64().max(1e-3);
    let mut services: Vec<Value> = Vec::new();
    let mut current: Option<(&str, Vec<Value>)> = None;
    for (method, index) in dispatcher.methods() {
        if current
            .as_ref()
            .is_some_and(|(name, _)| *name != method.service)
        {
            if let Some((name, methods)) = current.take() {
                services.push(json!({"name": name, "methods": methods}));
            }
        }
        let Some(counters) = stats.get(index) else {
            continue;
        };
        let (calls, errors) = counters.snapshot_counts();
        let total = Window::of(&counters.latency().snapshot(), calls, errors, uptime);
        let (second, minute, qps) = core.console.method(index);
        let limiter = limits.methods.get(index);
        let errors_by_code: Vec<Value> = counters
            .errors_by_code()
            .into_iter()
            .map(|(code, count)| match code {
                Some(code) => json!({"code": code, "name": code_name(code), "count": count}),
                None => json!({"code": null, "name": "other", "count": count}),
            })
            .collect();
        let entry = json!({
            "method": method.method,
            "path": method.path,
            "kind": kind(method.kind),
            "calls": calls,
            "errors": errors,
            "concurrency": limiter.map_or(0, |l| l.current()),
            "max_concurrency": limiter.and_then(|l| l.max()),
            "errors_by_code": errors_by_code,
            "second": window(&second),
            "minute": window(&minute),
            "total": window(&total),
            "qps_series": qps,
        });
        match current.as_mut() {
            Some((_, methods)) => methods.push(entry),
            None => current = Some((method.service, vec![entry])),
        }
    }
    if let Some((name, methods)) = current.take() {
        services.push(json!({"name": name, "methods": methods}));
    }
    // The table keeps services in no useful order; a page that reorders
    // itself on every restart is hard to read.
    services.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut page = Page::new(
        "status",
        json!({
            "uptime_s": secs(core.console.started.elapsed()),
            "concurrency": limits.global.current(),
            "max_concurrency": limits.global.max(),
            "adaptive_concurrency": limits.is_adaptive(),
            "connection_limits": connection_limits(core),
            "services": services,
        }),
    );
    page.layout = Layout::Status;
    page
}

/// The server's connection limits (`null`: none).
fn connection_limits(core: &ServerCore) -> Value {
    let limits = &core.conn_limits;
    json!({
        "first_request_timeout_s": limits.first_request.map(secs),
        "idle_timeout_s": limits.idle.map(secs),
        "max_connections": limits.max_connections,
        "max_calls_per_connection": limits.max_calls_per_connection,
        "max_header_size": limits.max_header_size,
    })
}

fn var_json(core: &ServerCore, index: usize, var: &Var) -> Value {
    json!({
        "name": var.name,
        "kind": var.kind.as_str(),
        "value": var.value,
        "help": var.help,
        "series": core.console.series(index),
    })
}

/// `/vars`: every variable with its recent history; `?q=` keeps the names
/// containing it.
pub(crate) fn vars(core: &ServerCore, query: &Query) -> Page {
    let filter = query.get("q").unwrap_or("");
    let all = vars::all(core);
    let listed: Vec<Value> = all
        .iter()
        .enumerate()
        .filter(|(_, v)| v.name.contains(filter))
        .map(|(i, v)| var_json(core, i, v))
        .collect();
    let mut page = Page::new(
        "vars",
        json!({"filter": filter, "points_every_s": 1, "vars": listed}),
    );
    let _ = write!(
        page.extra_html,
        "<form method=\"get\" action=\"/vars\"><input id=\"filter\" name=\"q\" value=\"{}\" \
         placeholder=\"filter by name\" autofocus><input type=\"submit\" value=\"filter\"></form>",
        escape(filter)
    );
    page
}

/// `/vars/NAME`: one variable.
pub(crate) fn var(core: &ServerCore, name: &str) -> Page {
    let all = vars::all(core);
    match all.iter().position(|v| v.name == name) {
        Some(i) => {
            let mut page = Page::new("var", var_json(core, i, &all[i]));
            let series: Vec<Value> = core
                .console
                .series(i)
                .into_iter()
                .map(Value::from)
                .collect();
            page.extra_html.push_str("<p>");
            chart(&mut page.extra_html, &series);
            page.extra_html.push_str("</p>");
            page
        }
        None => {
            let mut page = Page::new(
                "Not found",
                json!({"error": format!("no variable is named {name:?}"), "see": "/vars"}),
            );
            page.status = http::StatusCode::NOT_FOUND;
            page
        }
    }
}

fn parse_id(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() == 16 || s.starts_with("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok().or_else(|| u64::from_str_radix(hex, 16).ok())
    }
}

/// `/rpcz`: recent trees, newest first; `?trace=ID` draws one.
pub(crate) fn rpcz(query: &Query) -> Page {
    let tracer = crate::rpcz::tracer();
    let store = tracer.store();
    let target = tracer.sampler().target();
    let mut form = String::new();
    let _ = write!(
        form,
        "<form method=\"get\" action=\"/rpcz\">trace <input name=\"trace\" size=\"18\" value=\"{}\">\
         method <input name=\"method\" value=\"{}\">min µs <input name=\"min_us\" size=\"8\" value=\"{}\">\
         <label><input type=\"checkbox\" name=\"errors\" value=\"1\"{}>errors only</label>\
         <input type=\"submit\" value=\"search\"></form>\
         <form method=\"post\" action=\"/flags\">sampling target (spans/s, 0 = off) \
         <input name=\"rpcz_target\" size=\"8\" value=\"{target}\"><input type=\"submit\" value=\"set\"></form>",
        escape(query.get("trace").unwrap_or("")),
        escape(query.get("method").unwrap_or("")),
        escape(query.get("min_us").unwrap_or("")),
        if query.get("errors").is_some() {
            " checked"
        } else {
            ""
        },
    );
    if let Some(id) = query.get("trace") {
        let Some(trace_id) = parse_id(id) else {
            let mut page = Page::new(
                "rpcz",
                json!({"error": format!("{id:?} is not a trace id")}),
            );
            page.status = http::StatusCode::BAD_REQUEST;
            page.extra_html = form;
            return page;
        };
        let tree = store.render_json(trace_id);
        let text = store.render_text(trace_id);
        let mut page = match tree.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            Some(tree) => Page::new("rpcz trace", tree),
            None => {
                let mut page = Page::new(
                    "rpcz trace",
                    json!({"error": format!("trace {trace_id:016x} is not in the store")}),
                );
                page.status = http::StatusCode::NOT_FOUND;
                page
            }
        };
        page.extra_html = form;
        if let Some(text) = text {
            let _ = write!(
                page.extra_html,
                "<pre class=\"trace\">{}</pre>",
                escape(&text)
            );
        }
        return page;
    }
    let min_latency = query
        .get("min_us")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros);
    let limit = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let summaries = store.query(&crate::rpcz::Query {
        trace_id: None,
        min_latency,
        errors_only: query.get("errors").is_some(),
        method: query.get("method"),
        limit,
    });
    let traces: Vec<Value> = summaries
        .iter()
        .map(|s| {
            json!({
                "trace_id": format!("{:016x}", s.trace_id),
                "href": format!("/rpcz?trace={:016x}", s.trace_id),
                "method": s.method,
                "kind": s.kind.as_str(),
                "latency_us": u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX),
                "status": s.status,
                "error": s.error,
                "spans": s.spans,
            })
        })
        .collect();
    let stats = store.stats();
    let mut page = Page::new(
        "rpcz",
        json!({
            "enabled": target > 0,
            "target_spans_per_s": target,
            "stored": stats.trees,
            "store_bytes": stats.bytes,
            "traces": traces,
        }),
    );
    page.extra_html = form;
    page
}

/// `/pools`: every keel-pool.
pub(crate) fn pools() -> Page {
    let pools: Vec<Value> = keel_pool::all_stats()
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "object_size": p.object_size,
                "live": p.live,
                "cached_local": p.cached_local,
                "cached_global": p.cached_global,
                "thread_caches": p.thread_caches,
                "blocks": p.blocks,
                "bytes": p.bytes,
                "heap_bytes": p.heap_bytes,
                "high_water": p.high_water,
                "idle_trims": p.idle_trims,
                "blocks_freed": p.blocks_freed,
                "bytes_returned": p.bytes_returned,
                "gets": p.gets,
                "puts": p.puts,
            })
        })
        .collect();
    Page::new("pools", json!({"pools": pools}))
}

/// `/memory`: the counting allocator's figures when installed, and RSS.
pub(crate) fn memory() -> Page {
    let installed = keel_alloc::is_installed();
    let pools: u64 = keel_pool::all_stats().iter().map(|p| p.bytes).sum();
    Page::new(
        "memory",
        json!({
            "counting_allocator": installed,
            "heap_live_bytes": installed.then(keel_alloc::live_bytes),
            "heap_peak_bytes": installed.then(keel_alloc::peak_bytes),
            "resident_bytes": vars::resident_bytes(),
            "pool_bytes": pools,
            "rpcz_store_bytes": crate::rpcz::tracer().store().stats().bytes,
        }),
    )
}

/// Rows a list page shows unless `?limit=` says otherwise (a page stays
/// fast with ten thousand connections).
const DEFAULT_ROWS: usize = 200;

fn limit(query: &Query) -> usize {
    query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROWS)
}

/// `text` cut to `max` characters, marked where it was cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// `/connections`: the connections of the process, most recently active
/// first (`?limit=`, default 200).
pub(crate) fn connections(query: &Query) -> Page {
    let mut all = crate::connections::connections();
    let count = all.len();
    all.sort_by_key(|c| c.idle);
    all.truncate(limit(query));
    let shown: Vec<Value> = all
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id,
                "side": c.side.as_str(),
                "peer": c.peer.to_string(),
                "protocol": c.protocol,
                "age_s": secs(c.age),
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "in_flight": c.in_flight,
                "idle_s": secs(c.idle),
            })
        })
        .collect();
    Page::new(
        "connections",
        json!({"count": count, "shown": shown.len(), "connections": shown}),
    )
}

/// `/invokers`: the live invokers of the process (`?limit=`, default
/// 200), a channel's long naming URL cut short.
pub(crate) fn invokers(query: &Query) -> Page {
    let mut all = crate::cluster::invokers();
    let count = all.len();
    all.truncate(limit(query));
    let shown: Vec<Value> = all
        .into_iter()
        .map(|i| {
            json!({
                "id": i.id,
                "endpoint": i.endpoint.to_string(),
                "channel": shorten(&i.channel, 120),
                "state": format!("{:?}", i.state).to_lowercase(),
                "in_flight": i.in_flight,
                "calls": i.calls,
                "errors": i.errors,
                "error_rate": (i.error_rate * 1000.0).round() / 1000.0,
                "latency_us": i.latency_us,
                "connected": i.connected,
                "pending": i.pending,
            })
        })
        .collect();
    // The process's own registrations in etcd: where channels on the same
    // URL find it.
    let registrations: Vec<Value> = crate::etcd::registrations()
        .into_iter()
        .map(|r| {
            json!({
                "url": shorten(&r.url, 120),
                "key": r.key,
                "value": r.value,
                "lease": format!("{:x}", r.lease),
                "state": r.state.as_str(),
                "grants": r.grants,
            })
        })
        .collect();
    Page::new(
        "invokers",
        json!({
            "count": count,
            "shown": shown.len(),
            "invokers": shown,
            "registrations": registrations,
        }),
    )
}

//! The builtin console: HTTP pages on the service port (or an internal
//! one, see [`Console`](crate::server::Console)) that show what a server
//! and its process hold, as brpc's builtin services do.
//!
//! ```text
//!   GET /             index: version, uptime, protocols, address, build
//!       /status       every method: QPS, latency p50/p99/p999/max, errors
//!                     by code, concurrency and its limit; last second,
//!                     last minute, since start; a QPS chart each
//!       /vars[/NAME]  every counter and gauge, with a chart of the last
//!                     three minutes; ?q= filters
//!       /metrics      the same in Prometheus's text format
//!       /rpcz         recent span trees (?trace=ID&method=&min_us=&errors=1)
//!       /pools        every keel-pool       /memory  heap (counting allocator), RSS
//!       /connections  every connection      /invokers  every cluster invoker
//!       /health       200 serving; 503 shutting down, or the server's
//!                     health ("") set to anything but SERVING
//!       /flags        run-time settings; POST name=value sets one
//! ```
//!
//! Every page is JSON with `?format=json` or `Accept: application/json`,
//! and HTML otherwise: the same document, drawn by one renderer
//! ([`render`]), with charts as inline SVG. Nothing is fetched from
//! elsewhere: pages, styles and the little script they use are in the
//! binary.
//!
//! Owns: the pages and their history ([`state`]). May not touch: calls —
//! it only reads counters the dispatch path and the protocols keep.

mod flags;
mod pages;
mod prometheus;
mod render;
mod state;
pub(crate) mod vars;

use bytes::Bytes;
use http::header::{ACCEPT, HeaderValue};
use http::{Method, StatusCode};

use crate::server::builder::ServerCore;
use crate::server::http::{HttpResponse, respond as http_respond, text};

pub(crate) use state::{ConsoleState, sampler};

/// A page: its title and its document.
pub(crate) struct Page {
    pub(crate) title: &'static str,
    pub(crate) json: serde_json::Value,
    /// HTML shown above the document (forms, a drawn trace), if any.
    pub(crate) extra_html: String,
    /// How the HTML view draws the document.
    pub(crate) layout: render::Layout,
    pub(crate) status: StatusCode,
}

impl Page {
    pub(crate) fn new(title: &'static str, json: serde_json::Value) -> Page {
        Page {
            title,
            json,
            extra_html: String::new(),
            layout: render::Layout::Document,
            status: StatusCode::OK,
        }
    }
}

/// The query string's `name=value` pairs, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (form_decode(k), form_decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the client asked for JSON.
fn wants_json(parts: &http::request::Parts, query: &Query) -> bool {
    match query.get("format") {
        Some(format) => format == "json",
        None => parts
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept.contains("application/json") && !accept.contains("text/html")
            }),
    }
}

/// Answers a console request.
pub(crate) fn respond(
    core: &ServerCore,
    parts: &http::request::Parts,
    body: &Bytes,
) -> HttpResponse {
    let path = parts.uri.path();
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let json = wants_json(parts, &query);
    let page = match (&parts.method, path) {
        (&Method::GET | &Method::HEAD, "/") => pages::index(core),
        (&Method::GET | &Method::HEAD, "/status") => pages::status(core),
        (&Method::GET | &Method::HEAD, "/vars") => pages::vars(core, &query),
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/vars/") => {
            pages::var(core, &p["/vars/".len()..])
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            return http_respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(prometheus::exposition(core)),
            );
        }
        (&Method::GET | &Method::HEAD, "/rpcz") => pages::rpcz(&query),
        (&Method::GET | &Method::HEAD, "/pools") => pages::pools(),
        (&Method::GET | &Method::HEAD, "/memory") => pages::memory(),
        (&Method::GET | &Method::HEAD, "/connections") => pages::connections(&query),
        (&Method::GET | &Method::HEAD, "/invokers") => pages::invokers(&query),
        (&Method::GET | &Method::HEAD, "/health") => {
            let serving = !core.dispatcher.is_draining()
                && core.health.get("") == Some(crate::server::ServingStatus::Serving);
            let status = if serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return text(status, if serving { "OK\n" } else { "shutting down\n" });
        }
        (&Method::GET | &Method::HEAD, "/flags") => flags::page(core),
        (&Method::POST, "/flags") => flags::set(core, &query, body, json),
        (&Method::GET | &Method::HEAD, "/favicon.ico") => {
            return http_respond(StatusCode::NO_CONTENT, "image/x-icon", Bytes::new());
        }
        (method, path) if pages::KNOWN.iter().any(|(p, _)| *p == path) => {
            let mut page = Page::new(
                "Method not allowed",
                serde_json::json!({ "error": format!("{method} is not allowed on {path}") }),
            );
            page.status = StatusCode::METHOD_NOT_ALLOWED;
            page
        }
        (_, path) => {
            let mut page = Page::new(
                "Not found",
                serde_json::json!({
                    "error": format!("{path} is not a console page"),
                    "pages": pages::KNOWN.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                }),
            );
            page.status = StatusCode::NOT_FOUND;
            page
        }
    };
    let mut response = if json {
        http_respond(
            page.status,
            "application/json",
            Bytes::from(serde_json::to_vec_pretty(&page.json).unwrap_or_default()),
        )
    } else {
        http_respond(
            page.status,
            "text/html; charset=utf-8",
            Bytes::from(render::html(&page)),
        )
    };
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_like_forms() {
        let q = Query::parse("q=keel_server&x=a+b%2Fc&empty=&bad=%zz&end=%4");
        assert_eq!(q.get("q"), Some("keel_server"));
        assert_eq!(q.get("x"), Some("a b/c"));
        assert_eq!(q.get("empty"), None);
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("end"), Some("%4"));
    }
}

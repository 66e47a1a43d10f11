//! `/flags`: the settings that can change while the server runs, read with
//! GET and set with POST (`name=value` as a form or query, or a JSON
//! object `{"name": value}`). Only the flags listed are settable; a value
//! is checked before anything changes, and a bad one is a 400 naming the
//! flag and what it takes.
//!
//! ```text
//!   rpcz_target                       spans per second the sampler aims at (0: off)
//!   max_concurrency                   the server's limit of calls in flight
//!   max_concurrency./pkg.Service/M    one method's limit
//! ```
//! A limit is a positive number, or `0` / `unlimited` for none.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::console::{Page, Query};
use crate::server::builder::ServerCore;
use crate::server::limit::Limiter;

/// The most spans per second a target may ask for.
const MAX_RPCZ_TARGET: u64 = 1_000_000;

fn limit_json(limiter: &Limiter) -> Value {
    limiter.max().map_or(Value::from("unlimited"), Value::from)
}

/// Every flag: `(name, value, what it sets)`.
fn all(core: &ServerCore) -> Vec<Value> {
    let limits = core.dispatcher.limits();
    let mut flags = vec![
        json!({
            "name": "rpcz_target",
            "value": crate::rpcz::tracer().sampler().target(),
            "settable": true,
            "description": "spans per second the rpcz sampler aims at (0 turns tracing off)",
        }),
        json!({
            "name": "max_concurrency",
            "value": limit_json(&limits.global),
            "settable": true,
            "description": "the server's limit of calls in flight (0 or unlimited: none)",
        }),
    ];
    for (method, index) in core.dispatcher.methods() {
        if let Some(limiter) = limits.methods.get(index) {
            flags.push(json!({
                "name": format!("max_concurrency.{}", method.path),
                "value": limit_json(limiter),
                "settable": true,
                "description": format!("{method}'s limit of calls in flight (0 or unlimited: none)"),
            }));
        }
    }
    flags.push(json!({
        "name": "max_body_size",
        "value": core.wire_limits.max_body_size,
        "settable": false,
        "description": "the largest request body accepted (set when the server is built)",
    }));
    flags
}

/// GET `/flags`.
pub(crate) fn page(core: &ServerCore) -> Page {
    let mut page = Page::new("flags", json!({"flags": all(core)}));
    page.extra_html.push_str(
        "<form method=\"post\" action=\"/flags\">set <input name=\"name\" placeholder=\"flag\">\
         = <input name=\"value\" placeholder=\"value\"><input type=\"submit\" value=\"set\"></form>",
    );
    page
}

/// A limit's value: a positive count, or none.
fn parse_limit(name: &str, value: &str) -> Result<Option<usize>, String> {
    match value.trim() {
        "unlimited" | "0" => Ok(None),
        v => v.parse::<usize>().map(Some).map_err(|_| {
            format!(
                "{name} takes a positive number of calls, or 0 / unlimited for none; got {value:?}"
            )
        }),
    }
}

/// Applies one `name = value`, or says why not (nothing changed then).
fn apply(core: &ServerCore, name: &str, value: &str) -> Result<(), String> {
    let limits = core.dispatcher.limits();
    match name {
        "rpcz_target" => {
            let target: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|&t| t <= MAX_RPCZ_TARGET)
                .ok_or_else(|| {
                    format!("rpcz_target takes spans per second from 0 to {MAX_RPCZ_TARGET}; got {value:?}")
                })?;
            crate::rpcz::tracer().sampler().set_target(target);
            Ok(())
        }
        "max_concurrency" => {
            limits.global.set_max(parse_limit(name, value)?);
            Ok(())
        }
        _ => {
            if let Some(path) = name.strip_prefix("max_concurrency.") {
                let found = core
                    .dispatcher
                    .methods()
                    .into_iter()
                    .find(|(m, _)| m.path == path)
                    .and_then(|(_, index)| limits.methods.get(index));
                return match found {
                    Some(limiter) => {
                        limiter.set_max(parse_limit(name, value)?);
                        Ok(())
                    }
                    None => Err(format!("{path} is not a method this server serves")),
                };
            }
            if name == "max_body_size" {
                return Err("max_body_size is not settable at run time".to_owned());
            }
            Err(format!("{name:?} is not a flag (GET /flags lists them)"))
        }
    }
}

/// The `(name, value)` pairs a POST asks to set.
fn requested(query: &Query, body: &Bytes) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let trimmed = body.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        let object: serde_json::Map<String, Value> = serde_json::from_slice(trimmed)
            .map_err(|e| format!("the body is not a JSON object of flags: {e}"))?;
        for (k, v) in object {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => return Err(format!("{k} must be a number or a string, not {other}")),
            };
            pairs.push((k, v));
        }
    } else {
        let text = std::str::from_utf8(trimmed).map_err(|_| "the body is not UTF-8".to_owned())?;
        pairs.extend(Query::parse(text).pairs().iter().cloned());
    }
    pairs.extend(query.pairs().iter().filter(|(k, _)| k != "format").cloned());
    // The page's form sends `name=..&value=..`.
    if let (Some(name), Some(value)) = (
        pairs
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone()),
        pairs
            .iter()
            .find(|(k, _)| k == "value")
            .map(|(_, v)| v.clone()),
    ) {
        pairs.retain(|(k, _)| k != "name" && k != "value");
        pairs.push((name, value));
    }
    if pairs.is_empty() {
        return Err("nothing to set: send name=value".to_owned());
    }
    Ok(pairs)
}

/// POST `/flags`: sets every flag named, or none when one is bad.
pub(crate) fn set(core: &ServerCore, query: &Query, body: &Bytes, _json: bool) -> Page {
    let bad = |message: String| {
        let mut page = Page::new("flags", json!({"error": message, "flags": all(core)}));
        page.status = StatusCode::BAD_REQUEST;
        page
    };
    let pairs = match requested(query, body) {
        Ok(pairs) => pairs,
        Err(message) => return bad(message),
    };
    // Check every value first, so a bad one changes nothing.
    let limits = core.dispatcher.limits();
    let saved_target = crate::rpcz::tracer().sampler().target();
    let saved_global = limits.global.max();
    let saved_methods: Vec<Option<usize>> = limits.methods.iter().map(Limiter::max).collect();
    for (name, value) in &pairs {
        if let Err(message) = apply(core, name, value) {
            crate::rpcz::tracer().sampler().set_target(saved_target);
            limits.global.set_max(saved_global);
            for (limiter, max) in limits.methods.iter().zip(saved_methods) {
                limiter.set_max(max);
            }
            return bad(message);
        }
    }
    let set: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    Page::new("flags", json!({"set": set, "flags": all(core)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_or_say_what_they_take() {
        assert_eq!(parse_limit("m", "12"), Ok(Some(12)));
        assert_eq!(parse_limit("m", "unlimited"), Ok(None));
        assert_eq!(parse_limit("m", "0"), Ok(None));
        let err = parse_limit("max_concurrency", "-3").unwrap_err();
        assert!(
            err.contains("max_concurrency takes a positive number"),
            "{err}"
        );
    }

    #[test]
    fn posts_name_flags_as_forms_json_or_the_pages_form() {
        let none = Query::parse("");
        let form = requested(
            &none,
            &Bytes::from_static(b"rpcz_target=5&max_concurrency=9"),
        )
        .unwrap();
        assert_eq!(form.len(), 2);
        let json = requested(&none, &Bytes::from_static(br#"{"rpcz_target": 7}"#)).unwrap();
        assert_eq!(json, vec![("rpcz_target".to_owned(), "7".to_owned())]);
        let page = requested(&none, &Bytes::from_static(b"name=rpcz_target&value=3")).unwrap();
        assert_eq!(page, vec![("rpcz_target".to_owned(), "3".to_owned())]);
        assert!(requested(&none, &Bytes::new()).is_err());
        assert!(requested(&none, &Bytes::from_static(b"{\"a\": [1]}")).is_err());
    }
}

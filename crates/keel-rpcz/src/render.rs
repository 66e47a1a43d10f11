//! Rendering a finished tree as indented text or JSON (for the console).

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::time::Duration;

use crate::span::{Kind, Mark, Span};
use crate::tree::TreeView;

/// Spans in depth-first order with their depth: the root, then each span's
/// children sorted by start time (then id). A span whose parent is not in
/// the tree (cannot happen for trees built by this crate) is shown under the
/// root.
fn ordered<'a>(t: &TreeView<'a>) -> Vec<(usize, &'a Span)> {
    let root = t.root();
    let mut kids: Vec<&Span> = t.children().iter().map(|s| &**s).collect();
    kids.sort_by_key(|s| (s.start(), s.span_id()));
    let ids: HashSet<u64> = t.spans().map(|s| s.span_id()).collect();
    let mut by_parent: HashMap<u64, Vec<&Span>> = HashMap::new();
    for k in kids {
        let parent = if ids.contains(&k.parent_span_id()) && k.parent_span_id() != k.span_id() {
            k.parent_span_id()
        } else {
            root.span_id()
        };
        by_parent.entry(parent).or_default().push(k);
    }
    let mut out = Vec::with_capacity(t.len());
    let mut stack = vec![(0usize, root)];
    while let Some((depth, s)) = stack.pop() {
        out.push((depth, s));
        if let Some(children) = by_parent.remove(&s.span_id()) {
            // Reversed, so the earliest child is visited first.
            stack.extend(children.into_iter().rev().map(|k| (depth + 1, k)));
        }
    }
    out
}

fn us(d: Duration) -> u128 {
    d.as_micros()
}

/// What an event line shows.
#[derive(Clone, Copy)]
enum Event<'a> {
    /// A moment: `[label]`.
    Mark(&'a str),
    /// An annotation's text.
    Note(&'a str),
    /// Where the span's annotations were cut: how many lines and bytes were
    /// not kept.
    Cut(u32, u64),
}

/// Events of one span as (offset from the root start, event).
fn events<'a>(root: &Span, s: &'a Span) -> Vec<(Duration, Event<'a>)> {
    let base = s.start().saturating_duration_since(root.start());
    let start = match s.kind() {
        Kind::Server => "received",
        Kind::Client => "start",
    };
    let mut ev = vec![(base, Event::Mark(start))];
    for m in Mark::ALL {
        if let Some(off) = s.mark(m) {
            ev.push((base + off, Event::Mark(m.as_str())));
        }
    }
    for (off, text) in s.annotations() {
        ev.push((base + off, Event::Note(text)));
    }
    if let Some(off) = s.annotations_cut_at() {
        ev.push((
            base + off,
            Event::Cut(s.annotations_dropped(), s.annotation_bytes_dropped()),
        ));
    }
    // Stable: the cut follows the line it cut.
    ev.sort_by_key(|e| e.0);
    ev
}

/// The tree as indented text: one header line per span, then its marks
/// (`[sent]`) and annotations, each stamped in µs from the root's start.
/// Children are indented under their parent. A tree that reached its span
/// limit says how many children it dropped on its first line; a span whose
/// annotations reached their limit shows a `[annotations truncated …]`
/// marker where the cut is.
///
/// ```text
/// trace 000000000000002a
/// server example.EchoService.Echo span=… parent=… status=0 latency=500us …
///   +0us [received]
///   +120us cache miss
///   client example.Backend.Get span=… parent=… status=0 latency=300us
///     +150us [start]
/// ```
pub fn text(t: &TreeView<'_>) -> String {
    let root = t.root();
    let mut out = String::with_capacity(256 * t.len());
    let _ = write!(out, "trace {:016x}", root.trace_id());
    if t.dropped_spans() > 0 {
        let _ = write!(
            out,
            " dropped_spans={} (the tree keeps {} spans)",
            t.dropped_spans(),
            t.len()
        );
    }
    out.push('\n');
    for (depth, s) in ordered(t) {
        let pad = "  ".repeat(depth);
        let _ = write!(
            out,
            "{pad}{} {} span={:016x} parent={:016x} status={} latency={}us",
            s.kind().as_str(),
            s.method(),
            s.span_id(),
            s.parent_span_id(),
            s.status(),
            us(s.latency()),
        );
        if !s.protocol().is_empty() {
            let _ = write!(out, " protocol={}", s.protocol());
        }
        if let Some(p) = s.peer() {
            let _ = write!(out, " peer={p}");
        }
        let _ = write!(
            out,
            " request={}B response={}B",
            s.request_size(),
            s.response_size()
        );
        if s.abandoned() {
            out.push_str(" abandoned");
        }
        out.push('\n');
        for (at, event) in events(root, s) {
            match event {
                Event::Mark(label) => {
                    let _ = writeln!(out, "{pad}  +{}us [{label}]", us(at));
                }
                Event::Note(text) => {
                    // A multi-line annotation continues under its first line.
                    let mut lines = text.lines();
                    let _ = writeln!(out, "{pad}  +{}us {}", us(at), lines.next().unwrap_or(""));
                    for more in lines {
                        let _ = writeln!(out, "{pad}    {more}");
                    }
                }
                Event::Cut(lines, bytes) => {
                    let _ = writeln!(
                        out,
                        "{pad}  +{}us [annotations truncated: {lines} cut or dropped, {bytes} bytes not kept]",
                        us(at)
                    );
                }
            }
        }
    }
    out
}

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The tree as JSON: `{"trace_id": hex, "dropped_spans": n, "spans": [...]}`
/// with spans in the same depth-first order as [`text`], each with its
/// parent id, so a page can rebuild the tree. Ids are hex strings (a `u64`
/// does not fit a JSON number exactly); times are µs from the root's start.
/// A span whose annotations were cut has `"annotations_truncated":
/// {"at_us", "dropped", "bytes"}`.
pub fn json(t: &TreeView<'_>) -> String {
    let root = t.root();
    let mut out = String::with_capacity(384 * t.len());
    let _ = write!(
        out,
        "{{\"trace_id\":\"{:016x}\",\"dropped_spans\":{},\"spans\":[",
        root.trace_id(),
        t.dropped_spans(),
    );
    for (i, (depth, s)) in ordered(t).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let base = s.start().saturating_duration_since(root.start());
        let _ = write!(
            out,
            "{{\"span_id\":\"{:016x}\",\"parent_span_id\":\"{:016x}\",\"depth\":{depth},\"kind\":\"{}\",\"method\":",
            s.span_id(),
            s.parent_span_id(),
            s.kind().as_str(),
        );
        json_str(&mut out, s.method());
        out.push_str(",\"protocol\":");
        json_str(&mut out, s.protocol());
        out.push_str(",\"peer\":");
        match s.peer() {
            Some(p) => json_str(&mut out, &p.to_string()),
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"status\":{},\"request_size\":{},\"response_size\":{},\"start_us\":{},\"latency_us\":{},\"abandoned\":{},\"marks\":{{",
            s.status(),
            s.request_size(),
            s.response_size(),
            us(base),
            us(s.latency()),
            s.abandoned(),
        );
        let mut first = true;
        for m in Mark::ALL {
            if let Some(off) = s.mark(m) {
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(out, "\"{}\":{}", m.as_str(), us(base + off));
            }
        }
        out.push_str("},\"annotations\":[");
        for (j, (off, text)) in s.annotations().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"at_us\":{},\"text\":", us(base + off));
            json_str(&mut out, text);
            out.push('}');
        }
        out.push(']');
        if let Some(off) = s.annotations_cut_at() {
            let _ = write!(
                out,
                ",\"annotations_truncated\":{{\"at_us\":{},\"dropped\":{},\"bytes\":{}}}",
                us(base + off),
                s.annotations_dropped(),
                s.annotation_bytes_dropped(),
            );
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

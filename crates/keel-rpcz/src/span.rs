//! [`Span`]: the record of one call, server or client side.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keel_pool::Reset;

/// Which side of a call a span records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call this process served.
    Server,
    /// A call this process made.
    Client,
}

impl Kind {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Client => "client",
        }
    }
}

/// A moment in a call's life, recorded as an offset from the span's start.
///
/// The start itself is "received" for a server span and "start" for a client
/// span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Server: the handler began.
    HandlerStart = 0,
    /// Server: the handler returned.
    HandlerEnd = 1,
    /// Server: the response was written. Client: the request was written.
    Sent = 2,
    /// Client: the response arrived.
    ResponseReceived = 3,
}

impl Mark {
    /// Every mark, in call order.
    pub const ALL: [Mark; 4] = [
        Mark::HandlerStart,
        Mark::HandlerEnd,
        Mark::Sent,
        Mark::ResponseReceived,
    ];

    /// A short label for rendering, e.g. `"handler_start"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::HandlerStart => "handler_start",
            Mark::HandlerEnd => "handler_end",
            Mark::Sent => "sent",
            Mark::ResponseReceived => "response_received",
        }
    }
}

/// Offsets not recorded yet.
const UNSET: u64 = u64::MAX;

/// One annotation line: when, and where its text ends in the span's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    at_ns: u64,
    end: u32,
}

/// Initial annotation text capacity of a fresh span (kept across reuse).
pub const ANNOTATION_BYTES: usize = 256;
/// Initial annotation line capacity of a fresh span (kept across reuse).
pub const ANNOTATION_LINES: usize = 8;
/// Annotation text capacity a span keeps when it returns to the pool; a
/// span that grew beyond it (one huge annotation) shrinks back to
/// [`ANNOTATION_BYTES`], so idle pooled spans stay small.
pub const ANNOTATION_BYTES_KEPT: usize = 16 << 10;
/// Annotation line capacity kept across reuse (see
/// [`ANNOTATION_BYTES_KEPT`]).
pub const ANNOTATION_LINES_KEPT: usize = 256;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The record of one call. Spans live in a pool; a tree's spans are read
/// through a [`TreeView`](crate::TreeView) once the tree is finished.
pub struct Span {
    pub(crate) trace_id: u64,
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) kind: Kind,
    pub(crate) method: &'static str,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) request_size: u64,
    pub(crate) response_size: u64,
    pub(crate) status: i32,
    pub(crate) protocol: &'static str,
    pub(crate) start: Instant,
    pub(crate) marks: [u64; 4],
    pub(crate) end_ns: u64,
    pub(crate) abandoned: bool,
    text: String,
    lines: Vec<Line>,
}

impl Span {
    /// A fresh span for the pool, with annotation buffers preallocated.
    pub(crate) fn fresh() -> Span {
        Span {
            trace_id: 0,
            span_id: 0,
            parent_span_id: 0,
            kind: Kind::Server,
            method: "",
            peer: None,
            request_size: 0,
            response_size: 0,
            status: 0,
            protocol: "",
            start: epoch(),
            marks: [UNSET; 4],
            end_ns: UNSET,
            abandoned: false,
            text: String::with_capacity(ANNOTATION_BYTES),
            lines: Vec::with_capacity(ANNOTATION_LINES),
        }
    }

    #[inline]
    fn offset_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }

    pub(crate) fn set_mark(&mut self, mark: Mark, at: Instant) {
        self.marks[mark as usize] = self.offset_ns(at);
    }

    pub(crate) fn set_end(&mut self, at: Instant) {
        self.end_ns = self.offset_ns(at);
    }

    /// Appends an annotation line. Longer than `u32::MAX` bytes in total is
    /// silently cut (a span is not a log file).
    pub(crate) fn push_annotation(&mut self, at: Instant, text: &str) {
        if self.text.len() + text.len() > u32::MAX as usize {
            return;
        }
        self.text.push_str(text);
        self.lines.push(Line {
            at_ns: self.offset_ns(at),
            end: self.text.len() as u32,
        });
    }

    pub(crate) fn push_annotation_fmt(&mut self, at: Instant, args: fmt::Arguments<'_>) {
        use fmt::Write;
        let before = self.text.len();
        if self.text.write_fmt(args).is_err() || self.text.len() > u32::MAX as usize {
            self.text.truncate(before);
            return;
        }
        self.lines.push(Line {
            at_ns: self.offset_ns(at),
            end: self.text.len() as u32,
        });
    }

    /// Heap bytes this span holds, counting its own slot.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<Span>()
            + self.text.capacity()
            + self.lines.capacity() * std::mem::size_of::<Line>()
    }

    /// The trace this span belongs to.
    pub fn trace_id(&self) -> u64 {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The parent span's id, 0 for a root with no remote parent.
    pub fn parent_span_id(&self) -> u64 {
        self.parent_span_id
    }

    /// Server or client.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Full method name, e.g. `example.EchoService.Echo`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The other end of the call, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Request size in bytes.
    pub fn request_size(&self) -> u64 {
        self.request_size
    }

    /// Response size in bytes.
    pub fn response_size(&self) -> u64 {
        self.response_size
    }

    /// Status code, 0 = ok.
    pub fn status(&self) -> i32 {
        self.status
    }

    /// Protocol name, e.g. `baidu_std`; empty if not set.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// When the span started: request received (server) or call started
    /// (client).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// When `mark` happened, as an offset from [`start`](Self::start).
    pub fn mark(&self, mark: Mark) -> Option<Duration> {
        match self.marks[mark as usize] {
            UNSET => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Start to finish; zero while unfinished.
    pub fn latency(&self) -> Duration {
        match self.end_ns {
            UNSET => Duration::ZERO,
            ns => Duration::from_nanos(ns),
        }
    }

    /// Whether the span's handle was dropped without `finish`.
    pub fn abandoned(&self) -> bool {
        self.abandoned
    }

    /// Annotation lines: offset from [`start`](Self::start) and text.
    pub fn annotations(&self) -> impl Iterator<Item = (Duration, &str)> + '_ {
        let mut begin = 0usize;
        self.lines.iter().map(move |l| {
            let end = l.end as usize;
            let s = &self.text[begin..end];
            begin = end;
            (Duration::from_nanos(l.at_ns), s)
        })
    }

    /// Capacity of the annotation text buffer (kept across reuse).
    pub fn annotation_capacity(&self) -> usize {
        self.text.capacity()
    }
}

impl Reset for Span {
    fn reset(&mut self) {
        self.trace_id = 0;
        self.span_id = 0;
        self.parent_span_id = 0;
        self.kind = Kind::Server;
        self.method = "";
        self.peer = None;
        self.request_size = 0;
        self.response_size = 0;
        self.status = 0;
        self.protocol = "";
        self.marks = [UNSET; 4];
        self.end_ns = UNSET;
        self.abandoned = false;
        self.text.clear();
        self.lines.clear();
        if self.text.capacity() > ANNOTATION_BYTES_KEPT {
            self.text.shrink_to(ANNOTATION_BYTES);
        }
        if self.lines.capacity() > ANNOTATION_LINES_KEPT {
            self.lines.shrink_to(ANNOTATION_LINES);
        }
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("trace_id", &format_args!("{:016x}", self.trace_id))
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field(
                "parent_span_id",
                &format_args!("{:016x}", self.parent_span_id),
            )
            .field("kind", &self.kind)
            .field("method", &self.method)
            .field("status", &self.status)
            .field("latency", &self.latency())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_split_and_reset_keeps_capacity() {
        let mut s = Span::fresh();
        let t0 = s.start;
        s.push_annotation(t0 + Duration::from_micros(5), "hello");
        s.push_annotation_fmt(t0 + Duration::from_micros(7), format_args!("n={}", 42));
        let got: Vec<_> = s.annotations().collect();
        assert_eq!(
            got,
            vec![
                (Duration::from_micros(5), "hello"),
                (Duration::from_micros(7), "n=42")
            ]
        );
        let cap = s.annotation_capacity();
        s.reset();
        assert_eq!(s.annotations().count(), 0);
        assert_eq!(s.annotation_capacity(), cap);
        assert_eq!(s.mark(Mark::Sent), None);

        // An outsized buffer is not kept idle in the pool.
        s.push_annotation(t0, &"x".repeat(ANNOTATION_BYTES_KEPT + 1));
        s.reset();
        assert!(s.annotation_capacity() <= ANNOTATION_BYTES_KEPT);
    }
}

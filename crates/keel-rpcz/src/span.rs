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

/// Bytes each annotation line costs in a span's buffer besides its text:
/// its time (8) and its length (4). Counted against
/// [`StoreConfig::max_annotation_bytes`](crate::StoreConfig::max_annotation_bytes).
pub const ANNOTATION_OVERHEAD: usize = 12;

/// Initial annotation buffer capacity of a fresh span (kept across reuse).
pub const ANNOTATION_BYTES: usize = 256;
/// Annotation buffer capacity a span keeps when it returns to the pool; a
/// span whose buffer grew beyond it shrinks back to [`ANNOTATION_BYTES`], so
/// idle pooled spans stay small (rule R7).
pub const ANNOTATION_BYTES_KEPT: usize = 1 << 10;
/// Default [`StoreConfig::max_annotation_bytes`](crate::StoreConfig::max_annotation_bytes):
/// what a span may record, as much as it keeps across reuse.
pub const MAX_ANNOTATION_BYTES: usize = ANNOTATION_BYTES_KEPT;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The record of one call. Spans live in a pool; a tree's spans are read
/// through a [`TreeView`](crate::TreeView) once the tree is finished.
///
/// Annotations live in one buffer of records, `[at_ns: u64][len: u32][text]`
/// each (little-endian), bounded by the span's annotation limit: the buffer
/// never grows past it, an annotation that does not fit is cut to fit, and
/// every later one is counted, not kept
/// ([`annotations_dropped`](Span::annotations_dropped)); rendering shows a
/// marker where the cut is.
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
    /// Annotation records (see above).
    notes: Vec<u8>,
    /// Most bytes `notes` may hold (records included).
    note_limit: usize,
    /// Annotations cut or not kept, and their bytes not kept.
    notes_dropped: u32,
    notes_dropped_bytes: u64,
    /// When the first annotation was cut or dropped.
    notes_cut_ns: u64,
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
            notes: Vec::with_capacity(ANNOTATION_BYTES),
            note_limit: MAX_ANNOTATION_BYTES,
            notes_dropped: 0,
            notes_dropped_bytes: 0,
            notes_cut_ns: UNSET,
        }
    }

    /// Sets the most bytes this span's annotations may take (records
    /// included; capped at `u32::MAX`).
    pub(crate) fn set_annotation_limit(&mut self, bytes: usize) {
        self.note_limit = bytes.min(u32::MAX as usize);
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

    /// Appends an annotation line, cut to fit the span's limit (see
    /// [`Span`]).
    pub(crate) fn push_annotation(&mut self, at: Instant, text: &str) {
        match self.begin_note(at) {
            Some(mut w) => {
                w.write(text);
                w.end();
            }
            None => self.note_cut(at, text.len() as u64),
        }
    }

    /// Appends a formatted annotation line without building a `String`,
    /// cut to fit like [`push_annotation`](Self::push_annotation).
    pub(crate) fn push_annotation_fmt(&mut self, at: Instant, args: fmt::Arguments<'_>) {
        use fmt::Write;
        match self.begin_note(at) {
            Some(mut w) => {
                if w.write_fmt(args).is_err() {
                    // A `Display` impl failed: record nothing of this line.
                    w.abort();
                } else {
                    w.end();
                }
            }
            None => {
                // Measure what is dropped without keeping it.
                struct Count(u64);
                impl Write for Count {
                    fn write_str(&mut self, s: &str) -> fmt::Result {
                        self.0 += s.len() as u64;
                        Ok(())
                    }
                }
                let mut n = Count(0);
                let _ = n.write_fmt(args);
                self.note_cut(at, n.0);
            }
        }
    }

    /// Starts a record stamped `at`; `None` (the caller counts the line as
    /// dropped) when not even an empty record fits or the span already cut
    /// its annotations.
    fn begin_note(&mut self, at: Instant) -> Option<NoteWriter<'_>> {
        let start = self.notes.len();
        if self.notes_cut_ns != UNSET || start + ANNOTATION_OVERHEAD > self.note_limit {
            return None;
        }
        let at_ns = self.offset_ns(at);
        reserve_within(&mut self.notes, ANNOTATION_OVERHEAD, self.note_limit);
        self.notes.extend_from_slice(&at_ns.to_le_bytes());
        self.notes.extend_from_slice(&0u32.to_le_bytes());
        Some(NoteWriter {
            span: self,
            start,
            at,
            cut: 0,
        })
    }

    /// Counts one annotation cut or dropped, with `bytes` of its text lost.
    fn note_cut(&mut self, at: Instant, bytes: u64) {
        if self.notes_cut_ns == UNSET {
            self.notes_cut_ns = self.offset_ns(at);
        }
        self.notes_dropped = self.notes_dropped.saturating_add(1);
        self.notes_dropped_bytes = self.notes_dropped_bytes.saturating_add(bytes);
    }

    /// Heap bytes this span holds, counting its own slot.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<Span>() + self.notes.capacity()
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
        let mut rest = &self.notes[..];
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_at_checked(ANNOTATION_OVERHEAD)?;
            let at_ns = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
            let (text, tail) = tail.split_at_checked(len)?;
            rest = tail;
            // Records hold whole `str`s or prefixes cut at a char boundary.
            let text = std::str::from_utf8(text).expect("annotation records are UTF-8");
            Some((Duration::from_nanos(at_ns), text))
        })
    }

    /// Capacity of the annotation buffer (kept across reuse up to
    /// [`ANNOTATION_BYTES_KEPT`]).
    pub fn annotation_capacity(&self) -> usize {
        self.notes.capacity()
    }

    /// Annotations cut short or not kept because the span reached its
    /// annotation limit.
    pub fn annotations_dropped(&self) -> u32 {
        self.notes_dropped
    }

    /// Bytes of annotation text not kept.
    pub fn annotation_bytes_dropped(&self) -> u64 {
        self.notes_dropped_bytes
    }

    /// When the first annotation was cut or dropped, as an offset from
    /// [`start`](Self::start); `None` if none was.
    pub fn annotations_cut_at(&self) -> Option<Duration> {
        match self.notes_cut_ns {
            UNSET => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

/// Grows `buf` by `extra` bytes of room the way a `Vec` does (doubling),
/// but never past `limit` (the caller never needs more than `limit`).
fn reserve_within(buf: &mut Vec<u8>, extra: usize, limit: usize) {
    let need = buf.len() + extra;
    if need <= buf.capacity() {
        return;
    }
    let target = (buf.capacity() * 2).max(need).min(limit.max(need));
    buf.reserve_exact(target - buf.len());
}

/// Writes one annotation record's text, cutting it at the span's limit.
struct NoteWriter<'a> {
    span: &'a mut Span,
    /// Where the record starts in the buffer.
    start: usize,
    at: Instant,
    /// Text bytes not kept.
    cut: u64,
}

impl NoteWriter<'_> {
    fn write(&mut self, text: &str) {
        let notes = &mut self.span.notes;
        let room = self.span.note_limit.saturating_sub(notes.len());
        let mut keep = text.len().min(room);
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        reserve_within(notes, keep, self.span.note_limit);
        notes.extend_from_slice(&text.as_bytes()[..keep]);
        self.cut += (text.len() - keep) as u64;
    }

    /// Closes the record: writes its length, counts a cut. A record that
    /// kept nothing of a non-empty text is removed.
    fn end(self) {
        let len = self.span.notes.len() - self.start - ANNOTATION_OVERHEAD;
        if self.cut > 0 {
            if len == 0 {
                self.span.notes.truncate(self.start);
            }
            self.span.note_cut(self.at, self.cut);
        }
        if len > 0 {
            self.span.notes[self.start + 8..self.start + ANNOTATION_OVERHEAD]
                .copy_from_slice(&(len as u32).to_le_bytes());
        }
    }

    /// Removes the record.
    fn abort(self) {
        self.span.notes.truncate(self.start);
    }
}

impl fmt::Write for NoteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s);
        Ok(())
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
        self.notes.clear();
        if self.notes.capacity() > ANNOTATION_BYTES_KEPT {
            self.notes.shrink_to(ANNOTATION_BYTES);
        }
        self.note_limit = MAX_ANNOTATION_BYTES;
        self.notes_dropped = 0;
        self.notes_dropped_bytes = 0;
        self.notes_cut_ns = UNSET;
    }

    fn heap_bytes(&self) -> usize {
        self.notes.capacity()
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
        s.set_annotation_limit(64 << 10);
        s.push_annotation(t0, &"x".repeat(ANNOTATION_BYTES_KEPT + 1));
        assert!(s.annotation_capacity() > ANNOTATION_BYTES_KEPT);
        s.reset();
        assert_eq!(s.annotation_capacity(), ANNOTATION_BYTES);
    }

    #[test]
    fn annotations_are_cut_at_the_limit_and_counted() {
        let mut s = Span::fresh();
        let t0 = s.start;
        s.set_annotation_limit(100);
        s.push_annotation(t0, "first");
        // 12 + 5 used; 83 left: 12 for the record, 71 of 80 bytes of text.
        s.push_annotation_fmt(t0, format_args!("{}", "é".repeat(40)));
        s.push_annotation(t0 + Duration::from_micros(1), "dropped");
        let got: Vec<_> = s.annotations().map(|(_, t)| t.to_string()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "first");
        // Cut at a char boundary: 35 two-byte chars.
        assert_eq!(got[1], "é".repeat(35));
        assert_eq!(s.annotations_dropped(), 2);
        assert_eq!(s.annotation_bytes_dropped(), 10 + 7);
        assert_eq!(s.annotations_cut_at(), Some(Duration::ZERO));
        assert!(s.annotation_capacity() <= ANNOTATION_BYTES.max(100));

        // Whatever is written, the buffer stays within the limit.
        let mut s = Span::fresh();
        s.set_annotation_limit(4 << 10);
        for i in 0..10_000 {
            s.push_annotation_fmt(t0, format_args!("line {i} {}", "y".repeat(90)));
        }
        assert!(
            s.annotation_capacity() <= 4 << 10,
            "{}",
            s.annotation_capacity()
        );
        assert!(s.annotations().count() < 50);
        assert_eq!(
            s.annotations().count() + s.annotations_dropped() as usize,
            10_000 + 1, // the one cut short is counted in both
        );
        s.reset();
        assert_eq!(s.annotations_dropped(), 0);
        assert_eq!(s.annotations_cut_at(), None);
    }
}

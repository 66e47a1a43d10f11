//! Streaming calls (gRPC): typed streams of messages in, typed sinks of
//! messages out, on both sides.
//!
//! ```text
//!   server handler                                client
//!   ─────────────                                 ──────
//!   Streaming<Req>::message().await   ◄── DATA ── RequestSink<Req>::send(&req).await
//!   ResponseSink<Resp>::send(&resp)   ── DATA ──► Streaming<Resp>::message().await
//!   return Ok(()) / Err(status)       ── trailers (grpc-status) ──► message() -> Ok(None) / Err(status)
//! ```
//!
//! Backpressure is HTTP/2 flow control end to end: `send` waits until the
//! peer's window has room for the message, and a stream's receive window is
//! released only as `message()` takes messages, so a slow reader never makes
//! the other side buffer more than a window.
//!
//! Every stream is released on every path: finished, reset by the peer,
//! past its deadline, or its connection lost. Dropping a caller's
//! [`Streaming`] before its end, an unclosed [`RequestSink`], or a handler's
//! [`ResponseSink`] before the handler returned resets the stream
//! (RST_STREAM CANCEL), which cancels the other side.
//!
//! On a server, a stream's messages go through its cell on Keel's own
//! HTTP/2 connection ([`crate::server::http2_stream`]); on a client, through
//! its stream on Keel's HTTP/2 client connection
//! ([`crate::transport::http2`]).
//!
//! Owns: messages on HTTP/2 streams (framing, compression, flow control) and the
//! typed wrappers generated code hands to handlers and callers. May not
//! touch: admission, routing, retries — the dispatcher and the channel do
//! those.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap};
use prost::Message;
use tokio::time::Instant;

use crate::codec::grpc::{self as wire, ResponseHead};
use crate::codec::{Encode, RequiredSchema, decode_request, decode_response};
use crate::compression::Compression;
use crate::metadata::Metadata;
use crate::method::MethodDescriptor;
use crate::response::Response;
use crate::server::http2_stream::Cell;
use crate::status::{Code, Status};
use crate::transport::http2::{Received, StreamRef};

/// Messages arriving on one stream, still encoded.
pub(crate) struct Incoming {
    state: IncomingState,
    buf: Chunks,
    max: usize,
    encoding: Option<Compression>,
    /// The code of malformed data: the peer's fault.
    blame: Code,
    deadline: Option<Instant>,
    headers: Metadata,
    trailers: Metadata,
    /// A client's handle on the stream's sending half: reading that stops
    /// early (dropped, past the deadline) resets the stream with it.
    canceller: Option<Arc<StreamRef>>,
    /// A caller's statistics and span, finished when the stream ends.
    record: Option<StreamRecord>,
    /// The deadline's timer, once a read had to wait (dropped at the end).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    budget: Budget,
}

/// A caller's stream as its channel records a call: counted in its
/// method's statistics and traced by its client span, both finished once,
/// when the stream ends however it ends (a dropped stream counts as a
/// failure, `ECANCELED`).
pub(crate) struct StreamRecord {
    stats: Arc<crate::metrics::MethodStats>,
    started: Instant,
    span: crate::rpcz::SpanHandle,
}

impl StreamRecord {
    pub(crate) fn new(
        stats: Arc<crate::metrics::MethodStats>,
        span: crate::rpcz::SpanHandle,
    ) -> StreamRecord {
        stats.start();
        StreamRecord {
            stats,
            started: Instant::now(),
            span,
        }
    }

    /// Records the stream's end: `failure` is its error, if it failed.
    pub(crate) fn finish(self, failure: Option<Code>) {
        self.stats
            .finish(self.started.elapsed(), failure.map(Code::value));
        if self.span.is_sampled() {
            self.span.mark(crate::rpcz::Mark::ResponseReceived);
            self.span.finish(failure.map_or(0, Code::value));
        }
    }
}

enum IncomingState {
    /// A client waiting for the response's headers.
    Response(Arc<StreamRef>),
    /// A client reading the response's messages.
    Body(Arc<StreamRef>),
    /// A server stream on Keel's own HTTP/2 connection.
    Cell(Arc<Cell>),
    /// The stream ended: `Ok` after a clean end (with grpc-status 0 on a
    /// client), else why not.
    Done(Result<(), Status>),
}

impl Incoming {
    /// The requests of a server stream on Keel's own HTTP/2 connection.
    pub(crate) fn server_cell(
        cell: Arc<Cell>,
        max: usize,
        encoding: Option<Compression>,
        deadline: Option<Instant>,
    ) -> Incoming {
        Incoming::new(
            IncomingState::Cell(cell),
            max,
            encoding,
            Code::Internal,
            deadline,
        )
    }

    /// The responses of a client stream, before its headers.
    pub(crate) fn client(
        stream: Arc<StreamRef>,
        max: usize,
        deadline: Option<Instant>,
    ) -> Incoming {
        let canceller = stream.clone();
        let mut incoming = Incoming::new(
            IncomingState::Response(stream),
            max,
            None,
            Code::ERESPONSE,
            deadline,
        );
        incoming.canceller = Some(canceller);
        incoming
    }

    fn new(
        state: IncomingState,
        max: usize,
        encoding: Option<Compression>,
        blame: Code,
        deadline: Option<Instant>,
    ) -> Incoming {
        Incoming {
            state,
            buf: Chunks::default(),
            max,
            encoding,
            blame,
            deadline,
            headers: Metadata::new(),
            trailers: Metadata::new(),
            canceller: None,
            record: None,
            timer: None,
            budget: Budget::default(),
        }
    }

    /// Records this caller's stream in its channel's statistics and span.
    pub(crate) fn set_record(&mut self, record: StreamRecord) {
        self.record = Some(record);
    }

    /// The next message, `Ok(None)` once the stream ended cleanly, or why
    /// it did not (on a client: the server's status). Past the deadline the
    /// stream is reset and this is `ERPCTIMEDOUT`.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        // Messages already buffered come without a wait: stay fair. The
        // yield comes before a message is taken, so a caller that drops
        // this future there (a `select!` that chose another branch) loses
        // nothing.
        if self.budget.take_due() {
            tokio::task::yield_now().await;
        }
        // A message already buffered (a DATA frame carries many small
        // ones) is taken at once: no timer, no wait.
        let next = match self.buffered() {
            Some(next) => next,
            None => self.next_unbudgeted().await,
        };
        if let Ok(Some(_)) = &next {
            self.budget.count();
        }
        next
    }

    /// The next message, if it is whole in the buffer, uncompressed, and
    /// the turn goes on, decoded into `into` (empty) where it lies: no
    /// `Bytes` is cut out for it, no future or status stands in the way.
    /// `None` for anything else (more to read, a yield due, a compressed
    /// or bad message, the end): [`next`](Self::next) deals with it. A
    /// message that does not decode is consumed, and its error returned,
    /// as `next` and the decoding after it would.
    ///
    /// Decoding in place, rather than cutting each message out first,
    /// saves two reference counts per message and the moves of a `Bytes`
    /// through the calls: with [`Encode::encode_to`] no longer working
    /// out a length twice, one stream of 16-byte messages ran 7-9% faster
    /// (`keel-bench grpc --streaming`, Keel's pair, builds alternating).
    #[inline]
    pub(crate) fn merge_plain<M: Message>(
        &mut self,
        server: bool,
        method: &MethodDescriptor,
        required: Option<&RequiredSchema>,
        into: &mut M,
    ) -> Option<Result<(), Box<Status>>> {
        if self.budget.due {
            return None;
        }
        let merged = self.buf.with_plain(self.max, |buf, len| {
            crate::codec::merge_in_place(server, method, buf, len, required, into)
        })?;
        self.budget.count();
        Some(merged)
    }

    async fn next_unbudgeted(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(deadline) = self.deadline else {
            return self.next_inner().await;
        };
        // One timer for the whole stream, polled only while waiting.
        let mut timer = self
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        let next = tokio::select! {
            biased;
            next = self.next_inner() => Some(next),
            () = timer.as_mut() => None,
        };
        match next {
            Some(next) => {
                if !matches!(self.state, IncomingState::Done(_)) {
                    self.timer = Some(timer);
                }
                next
            }
            None => {
                let status = Status::new(Code::ERPCTIMEDOUT, "the stream passed its deadline");
                if let Some(stream) = &self.canceller {
                    stream.reset();
                }
                self.end(Err(status.clone()));
                Err(status)
            }
        }
    }

    /// Ends the stream's reading: dropping the body (with the response
    /// future) gives its unread window back to the connection.
    fn end(&mut self, result: Result<(), Status>) {
        if let Some(record) = self.record.take() {
            record.finish(result.as_ref().err().map(Status::code));
        }
        self.state = IncomingState::Done(result);
        self.buf = Chunks::default();
        self.timer = None;
    }

    /// The next message if it is whole in the buffer (or the error that
    /// cutting it found); `None` when more must be read.
    fn buffered(&mut self) -> Option<Result<Option<Bytes>, Status>> {
        match self.buf.split_message(self.max) {
            Ok(Some(message)) => Some(self.decompress(message)),
            Ok(None) => None,
            Err(e) => {
                let status = wire::message_error(e, self.blame);
                self.end(Err(status.clone()));
                Some(Err(status))
            }
        }
    }

    async fn next_inner(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(buffered) = self.buffered() {
                return buffered;
            }
            match &mut self.state {
                IncomingState::Response(stream) => {
                    let stream = stream.clone();
                    match std::future::poll_fn(|cx| stream.poll_head(cx)).await {
                        Ok(Some(head)) => self.on_headers(&stream, &head),
                        Ok(None) => self.end(Err(Status::new(
                            Code::Internal,
                            "the server ended the stream with no headers",
                        ))),
                        Err(status) => self.end(Err(status)),
                    }
                }
                IncomingState::Body(stream) => {
                    match std::future::poll_fn(|cx| stream.poll_data(cx)).await {
                        Ok(Received::Data(chunk)) => self.buf.append(chunk),
                        Err(status) => self.end(Err(status)),
                        Ok(Received::End(_)) if !self.buf.is_empty() => {
                            let status =
                                Status::new(self.blame, "the stream ended inside a message");
                            self.end(Err(status));
                        }
                        Ok(Received::End(trailers)) => {
                            // A client reads the server's status in the trailers.
                            let outcome = match trailers {
                                Some(trailers) => {
                                    self.trailers = trailers.metadata.clone();
                                    trailers.status().unwrap_or_else(|| {
                                        Err(Status::new(
                                            Code::Internal,
                                            "the server ended the stream without grpc-status",
                                        ))
                                    })
                                }
                                None => Err(Status::new(
                                    Code::Internal,
                                    "the server ended the stream without trailers",
                                )),
                            };
                            self.end(outcome);
                        }
                    }
                }
                IncomingState::Cell(cell) => {
                    match std::future::poll_fn(|cx| cell.poll_data(cx)).await {
                        Some(Ok(chunk)) => self.buf.append(chunk),
                        Some(Err(status)) => self.end(Err(status)),
                        None if !self.buf.is_empty() => {
                            let status =
                                Status::new(self.blame, "the stream ended inside a message");
                            self.end(Err(status));
                        }
                        None => self.end(Ok(())),
                    }
                }
                IncomingState::Done(result) => return result.clone().map(|()| None),
            }
        }
    }

    fn on_headers(&mut self, stream: &Arc<StreamRef>, head: &ResponseHead) {
        if head.http_status != 200 {
            self.end(Err(Status::new(
                Code::from_http_status(head.http_status),
                format!("the server answered HTTP status {}", head.http_status),
            )));
            return;
        }
        self.headers = head.metadata.clone();
        // Trailers-only: the status is in the headers, there is no body.
        if let Some(outcome) = head.status() {
            self.end(outcome);
            return;
        }
        match head.encoding() {
            Ok(encoding) => {
                self.encoding = encoding;
                self.state = IncomingState::Body(stream.clone());
            }
            Err(name) => self.end(Err(Status::new(
                Code::Internal,
                format!("the server answered in grpc-encoding {name}, which Keel cannot read"),
            ))),
        }
    }

    fn decompress(&mut self, message: keel_wire::grpc::Message) -> Result<Option<Bytes>, Status> {
        if !message.compressed {
            return Ok(Some(message.data));
        }
        let Some(kind) = self.encoding else {
            let status = Status::new(
                self.blame,
                "a compressed message on a stream with no grpc-encoding",
            );
            self.end(Err(status.clone()));
            return Err(status);
        };
        crate::compression::decompress(kind.as_i32(), message.data, self.max, self.blame).map(Some)
    }
}

/// A stream's bytes not yet cut into messages, as the chunks the stream
/// handed over: the message being cut (`head`), and the chunk that
/// follows it (`rest`). A chunk is taken as it is when nothing is left of
/// the last message, joined without a copy when it follows it in the same
/// block (`unsplit`); otherwise only the bytes that complete the message
/// are copied, and the rest of the chunk waits, uncopied, for its turn. A
/// stream of 1 KiB messages in 16 KiB frames, whose messages straddle
/// every frame, copies about a message per frame rather than every frame.
#[derive(Default)]
struct Chunks {
    head: BytesMut,
    /// Non-empty only while `head` holds a whole message.
    rest: BytesMut,
}

impl Chunks {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.rest.is_empty()
    }

    /// Takes `chunk`, the stream's next bytes (only asked for while no
    /// whole message is buffered, so `rest` is empty).
    fn append(&mut self, mut chunk: BytesMut) {
        debug_assert!(self.rest.is_empty());
        if self.head.is_empty() {
            self.head = chunk;
            return;
        }
        if self.head.as_ptr().wrapping_add(self.head.len()) == chunk.as_ptr() {
            // Most likely the same block: joined in place (`unsplit`
            // copies if it is not).
            self.head.unsplit(chunk);
            return;
        }
        let prefix = keel_wire::grpc::PREFIX_LEN;
        if self.head.len() < prefix {
            let n = (prefix - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk.split_to(n));
        }
        // A bad prefix is left for `split_message` to report.
        if let Ok(Some((_, len))) = keel_wire::grpc::parse_prefix(&self.head, usize::MAX) {
            let missing = (prefix + len).saturating_sub(self.head.len());
            let n = missing.min(chunk.len());
            self.head.extend_from_slice(&chunk.split_to(n));
        }
        // Emptied, the chunk still holds its block: it is not kept (see
        // `next_chunk_if_done`).
        if !chunk.is_empty() {
            self.rest = chunk;
        }
    }

    /// Once `head` is used up, `rest` takes its place; with no `rest`,
    /// `head` becomes a new empty buffer, so that an emptied one does not
    /// hold its block for a stream that then goes quiet.
    #[inline]
    fn next_chunk_if_done(&mut self) {
        if self.head.is_empty() {
            self.head = std::mem::take(&mut self.rest);
        }
    }

    /// Hands the next message to `read` where it lies (`head`, past its
    /// prefix, with its length), if it is whole, uncompressed and within
    /// `max`; `read` consumes exactly that length. `None`, with nothing
    /// consumed, for anything else, which [`split_message`](Self::split_message)
    /// then deals with. It reads the prefix itself rather than peek and
    /// call `split_message`: that second parse and loop cost 16-byte
    /// streams about a tenth of their rate (1.41-1.66x tonic against
    /// 1.64-1.81x in alternating runs).
    #[inline]
    fn with_plain<R>(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut BytesMut, usize) -> R,
    ) -> Option<R> {
        self.next_chunk_if_done();
        let (compressed, len) = keel_wire::grpc::parse_prefix(&self.head, max).ok()??;
        if compressed || self.head.len() < keel_wire::grpc::PREFIX_LEN + len {
            return None;
        }
        bytes::Buf::advance(&mut self.head, keel_wire::grpc::PREFIX_LEN);
        let out = read(&mut self.head, len);
        self.next_chunk_if_done();
        Some(out)
    }

    /// The next whole message, `None` when more must be read, or the
    /// error its prefix shows.
    fn split_message(
        &mut self,
        max: usize,
    ) -> Result<Option<keel_wire::grpc::Message>, keel_wire::grpc::MessageError> {
        loop {
            let message = keel_wire::grpc::split_message(&mut self.head, max)?;
            let used_up = self.head.is_empty() && !self.rest.is_empty();
            self.next_chunk_if_done();
            if message.is_some() || !used_up {
                return Ok(message);
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // A caller that stops reading before the end cancels the call.
        if let (Some(stream), false) = (
            &self.canceller,
            matches!(self.state, IncomingState::Done(_)),
        ) {
            stream.reset();
        }
    }
}

/// Messages a task takes from a stream, or queues on it, between two looks
/// at how long its turn has run: a turn ends after a multiple of this many
/// messages once it has lasted [`MIN_TURN`], counted from its first
/// message (a wait inside the turn only brings the yield sooner).
const MESSAGES_PER_LOOK: u32 = 128;
/// The shortest turn that ends in a yield.
const MIN_TURN: Duration = Duration::from_micros(100);

/// When a task looping over a stream's messages yields to the other tasks
/// of its worker.
///
/// Messages already received, or queued while there is room, come without
/// a wait, so a loop over them would never yield. tokio's cooperative
/// budget (one unit per message, a yield every 128) made a task streaming
/// 16-byte messages yield every 128 of them, about every 20 us; each yield
/// put it at the back of its worker's queue and woke the other worker.
/// So a turn ends after 128 messages only if it lasted [`MIN_TURN`]
/// (100 us, the top of tokio's advice of 10 to 100 us between yields);
/// otherwise it goes on, looking again every 128 messages. A task that
/// works 10 us per message still yields every 128 messages, as under
/// tokio's budget; a task of cheap messages yields about every 100 us, not
/// every 20, and reads the clock once every 128 messages. Server-streaming
/// 16-byte messages went from 3.6-4.8 to 5.2-5.7 million messages/s with
/// a turn of 32 KiB of messages (`keel-bench grpc --streaming --rounds
/// 21`, Keel's client and server), a turn blind to the work done per
/// message; this policy keeps that rate (1.47-1.48x tonic's, against
/// 1.47-1.52x for the byte turn, in alternating runs).
#[derive(Default)]
struct Budget {
    /// Messages in this turn.
    messages: u32,
    /// When this turn's first message came.
    since: Option<std::time::Instant>,
    /// The turn is over: yield before the next message.
    due: bool,
}

impl Budget {
    /// Counts a message taken or queued without a wait.
    fn count(&mut self) {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        self.messages += 1;
        if self.messages % MESSAGES_PER_LOOK == 0 && since.elapsed() >= MIN_TURN {
            self.due = true;
        }
    }

    /// Whether the turn is over; the next one starts.
    fn take_due(&mut self) -> bool {
        if !self.due {
            return false;
        }
        *self = Budget::default();
        true
    }
}

/// Bytes a stream's sender (a handler's response sink, a caller's request
/// sink) may have queued ahead of the peer's window before `send` waits.
/// A handler that runs this far ahead of its connection's writer hands it
/// larger batches, so the two wait on each other less: one server-streaming
/// call of 1 KiB messages ran at 1.76-1.93x tonic's rate with 256 KiB
/// against 1.60-1.86x with 64 KiB (`keel-bench grpc --streaming`,
/// alternating runs); 1 MiB did no better than 256 KiB. A reader that
/// stops holds this much per stream beyond its window.
pub(crate) const MAX_PENDING: usize = 256 * 1024;

/// Whether `len` more bytes may join the `queued` ones now: always into an
/// empty queue (a message larger than [`MAX_PENDING`] goes alone), else
/// within [`MAX_PENDING`]. Both HTTP/2 sides' `send` ask it.
pub(crate) fn may_queue(queued: usize, len: usize) -> bool {
    queued == 0 || queued + len <= MAX_PENDING
}

/// A message to queue: sealed already (compressed), or encoded straight
/// into the queue with its prefix (a streamed message, and a unary gRPC
/// request, which goes straight into the connection's output).
pub(crate) enum Queued<'a> {
    Sealed(Bytes),
    Plain(&'a (dyn Encode + Sync)),
}

impl<'a> Queued<'a> {
    /// `message`, sealed at once when compressed (else encoded where it is
    /// queued).
    pub(crate) fn new(
        message: &'a (dyn Encode + Sync),
        compress: Option<Compression>,
    ) -> Result<Queued<'a>, Status> {
        Ok(match compress {
            None => Queued::Plain(message),
            compress => Queued::Sealed(wire::seal_message(message, compress)?),
        })
    }

    /// Its bytes on the wire, prefix included.
    pub(crate) fn len(&self) -> usize {
        match self {
            Queued::Sealed(data) => data.len(),
            Queued::Plain(message) => keel_wire::grpc::PREFIX_LEN + message.encoded_len(),
        }
    }

    /// Appends its `len` bytes (its [`len`](Self::len)) to `pending`.
    pub(crate) fn append_to(&self, pending: &mut BytesMut, len: usize) {
        match self {
            Queued::Sealed(data) => pending.extend_from_slice(data),
            Queued::Plain(message) => {
                pending.reserve(len);
                let body = len - keel_wire::grpc::PREFIX_LEN;
                pending.extend_from_slice(&keel_wire::grpc::prefix(false, body));
                message.encode_to(pending);
            }
        }
    }
}

/// Messages leaving on one stream.
pub(crate) struct Outgoing {
    /// Headers the server sends with its first message (initial metadata).
    headers: HeaderMap,
    /// A server sent its response headers.
    headers_sent: bool,
    /// A client's stream.
    client: Option<Arc<StreamRef>>,
    /// A server stream on Keel's own HTTP/2 connection.
    cell: Option<Arc<Cell>>,
    compress: Option<Compression>,
    /// END_STREAM sent, or the stream reset: nothing more goes out.
    ended: bool,
    budget: Budget,
}

impl Outgoing {
    /// The requests of a client stream whose headers were sent.
    pub(crate) fn client(stream: Arc<StreamRef>, compress: Option<Compression>) -> Outgoing {
        Outgoing {
            headers: HeaderMap::new(),
            headers_sent: false,
            client: Some(stream),
            cell: None,
            compress,
            ended: false,
            budget: Budget::default(),
        }
    }

    /// The responses of a server stream on Keel's own HTTP/2 connection.
    pub(crate) fn server_cell(cell: Arc<Cell>, compress: Option<Compression>) -> Outgoing {
        Outgoing {
            headers: HeaderMap::new(),
            headers_sent: false,
            client: None,
            cell: Some(cell),
            compress,
            ended: false,
            budget: Budget::default(),
        }
    }

    /// The response's headers: the handler's metadata and gRPC's own.
    fn response_headers(&mut self) -> HeaderMap {
        let mut headers = std::mem::take(&mut self.headers);
        headers.insert(CONTENT_TYPE, wire::CONTENT_TYPE);
        headers.insert(wire::GRPC_ACCEPT_ENCODING, wire::ACCEPT_ENCODING);
        if let Some(name) = self.compress.and_then(wire::encoding_name) {
            headers.insert(wire::GRPC_ENCODING, name);
        }
        headers
    }

    fn closed() -> Status {
        Status::new(
            Code::Cancelled,
            "the stream is closed: nothing more can be sent",
        )
    }

    /// Sends one message: queued for the connection, waiting while the
    /// peer's flow-control window and the queue are full.
    pub(crate) async fn send(&mut self, message: &(dyn Encode + Sync)) -> Result<(), Status> {
        // Uncompressed, the message is encoded into the queue itself.
        let data = Queued::new(message, self.compress)?;
        if self.ended {
            return Err(Outgoing::closed());
        }
        if self.cell.is_some() && !self.headers_sent {
            self.headers_sent = true;
            let headers = self.response_headers();
            if let Some(cell) = &self.cell {
                cell.send_headers(headers);
            }
        }
        // Borrowed, not cloned: a clone per message would bounce the
        // reference count between the handler's core and the connection's.
        let len = data.len();
        let append = |queue: &mut BytesMut| data.append_to(queue, len);
        let sent = match (&self.cell, &self.client) {
            (Some(cell), _) => cell.send(len, append).await,
            (None, Some(stream)) => stream.send(len, append).await,
            (None, None) => Err(Outgoing::closed()),
        };
        if let Err(failed) = sent {
            self.ended = true;
            return Err(failed);
        }
        // Queueing never waits while there is room, so a sender looping
        // would never yield: let the connection and other tasks run now
        // and then (see `Budget`).
        self.budget.count();
        if self.budget.take_due() {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Queues `message` at once when nothing stands in the way (a server
    /// stream whose headers went, uncompressed, room in the queue, the
    /// turn going on), with no future and no status in the way; `false`
    /// for anything else, which [`send`](Self::send) deals with. A turn
    /// that ends here yields at the next `send`.
    #[inline]
    pub(crate) fn try_queue(&mut self, message: &(dyn Encode + Sync)) -> bool {
        if self.ended || self.compress.is_some() || !self.headers_sent || self.budget.due {
            return false;
        }
        let Some(cell) = &self.cell else {
            return false;
        };
        let data = Queued::Plain(message);
        let len = data.len();
        if !cell.try_send(len, |queue| data.append_to(queue, len)) {
            return false;
        }
        self.budget.count();
        true
    }

    /// A client's end of its requests (END_STREAM).
    pub(crate) fn close(&mut self) {
        if !self.ended {
            self.ended = true;
            if let Some(stream) = &self.client {
                stream.close_send();
            }
        }
    }

    /// A server's end of the call: `result` and `metadata` in the trailers,
    /// or in the headers of a trailers-only response when no message went
    /// out.
    pub(crate) fn finish(mut self, result: &Result<(), Status>, metadata: &Metadata) {
        let mut trailers = HeaderMap::new();
        let outcome = match wire::metadata_into(metadata, &mut trailers, Code::EINTERNAL) {
            Ok(()) => result.clone(),
            Err(unsendable) => {
                trailers.clear();
                Err(unsendable)
            }
        };
        match &outcome {
            Ok(()) => {
                trailers.insert(wire::GRPC_STATUS, http::HeaderValue::from_static("0"));
            }
            // The handler's trailing metadata goes with failures too.
            Err(status) => wire::status_into(status, &mut trailers),
        }
        self.ended = true;
        if let Some(cell) = &self.cell {
            if self.headers_sent {
                cell.finish(trailers);
            } else {
                let mut headers = std::mem::take(&mut self.headers);
                headers.insert(CONTENT_TYPE, wire::CONTENT_TYPE);
                headers.extend(trailers);
                cell.finish(headers);
            }
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Dropped mid-stream: tell the peer at once.
        if let Some(cell) = &self.cell {
            cell.reset();
        } else if let Some(stream) = &self.client {
            stream.reset();
        }
    }
}

/// The two directions of a stream a server serves, handed to
/// [`Service::call_stream`](crate::server::Service::call_stream). Generated
/// adapters turn them into a typed [`Streaming`] and [`ResponseSink`] for
/// the handler, and give them back with [`restore`](Self::restore) so the
/// server can end the stream with the handler's status.
pub struct ServerStream {
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
}

impl fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("incoming", &self.incoming.is_some())
            .field("outgoing", &self.outgoing.is_some())
            .finish()
    }
}

impl ServerStream {
    pub(crate) fn new(incoming: Incoming, outgoing: Outgoing) -> ServerStream {
        ServerStream {
            incoming: Some(incoming),
            outgoing: Some(outgoing),
        }
    }

    /// The requests, typed, for the handler of `method` (checked for
    /// `required` fields when given). Taken once.
    pub fn requests<T: Message + Default>(
        &mut self,
        method: &'static MethodDescriptor,
        required: Option<&'static RequiredSchema>,
    ) -> Streaming<T> {
        Streaming {
            raw: self.incoming.take(),
            method,
            required,
            server: true,
            _message: PhantomData,
        }
    }

    /// The responses, typed, for the handler. Taken once.
    pub fn responses<T: Message>(&mut self) -> ResponseSink<T> {
        ResponseSink {
            raw: self.outgoing.take(),
            _message: PhantomData,
        }
    }

    /// Gives the stream's parts back after the handler ran.
    pub fn restore<Req, Resp>(&mut self, requests: Streaming<Req>, responses: ResponseSink<Resp>) {
        let mut requests = requests;
        let mut responses = responses;
        self.incoming = requests.raw.take();
        self.outgoing = responses.raw.take();
    }

    /// Ends the stream with the handler's outcome (the server calls this).
    pub(crate) fn finish(mut self: Box<Self>, result: &Result<(), Status>, metadata: &Metadata) {
        if let Some(outgoing) = self.outgoing.take() {
            outgoing.finish(result, metadata);
        }
    }
}

/// Messages of type `T` arriving on a stream: a server handler's requests,
/// or a caller's responses.
pub struct Streaming<T> {
    raw: Option<Incoming>,
    method: &'static MethodDescriptor,
    required: Option<&'static RequiredSchema>,
    /// Requests decode as the server's (`EREQUEST`), responses as the
    /// client's (`ERESPONSE`).
    server: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("method", &self.method.path)
            .finish_non_exhaustive()
    }
}

impl<T: Message + Default> Streaming<T> {
    pub(crate) fn client(
        raw: Incoming,
        method: &'static MethodDescriptor,
        required: Option<&'static RequiredSchema>,
    ) -> Streaming<T> {
        Streaming {
            raw: Some(raw),
            method,
            required,
            server: false,
            _message: PhantomData,
        }
    }

    /// The next message, `Ok(None)` once the other side finished cleanly,
    /// or the error that ended the stream (on a client, the server's
    /// status; past the call's deadline, `ERPCTIMEDOUT`).
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(None);
        };
        let mut message = T::default();
        if let Some(merged) = raw.merge_plain(self.server, self.method, self.required, &mut message)
        {
            return match merged {
                Ok(()) => Ok(Some(message)),
                Err(failure) => Err(*failure),
            };
        }
        let bytes = match raw.next().await? {
            Some(bytes) => bytes,
            None => return Ok(None),
        };
        if self.server {
            decode_request(self.method, bytes, self.required).map(Some)
        } else {
            decode_response(self.method, bytes, self.required).map(Some)
        }
    }

    /// The one message of a stream that carries exactly one (a
    /// server-streaming call's request); anything else is an error of the
    /// sender. Generated adapters use it.
    pub async fn single(&mut self) -> Result<T, Status> {
        let blame = if self.server {
            Code::EREQUEST
        } else {
            Code::ERESPONSE
        };
        let Some(message) = self.message().await? else {
            return Err(Status::new(
                blame,
                "the stream ended before its one message",
            ));
        };
        if self.message().await?.is_some() {
            return Err(Status::new(
                blame,
                "the stream carried more than its one message",
            ));
        }
        Ok(message)
    }

    /// The metadata the server sent in its headers (a caller's stream;
    /// empty until the first message or the end arrived).
    pub fn metadata(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::new();
        self.raw.as_ref().map_or(&EMPTY, |raw| &raw.headers)
    }

    /// The metadata the server sent in its trailers (a caller's stream,
    /// once it ended).
    pub fn trailers(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::new();
        self.raw.as_ref().map_or(&EMPTY, |raw| &raw.trailers)
    }
}

/// Where a server handler sends its responses of type `T`.
pub struct ResponseSink<T> {
    raw: Option<Outgoing>,
    _message: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for ResponseSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSink").finish_non_exhaustive()
    }
}

impl<T: Message> ResponseSink<T> {
    /// Sends one response, waiting while the client's flow-control window
    /// is full (a slow reader slows the handler instead of growing a
    /// buffer). Fails once the client went away.
    ///
    /// Responses sent one after another, with nothing to wait for between
    /// them, are handed to the connection together: when the handler's
    /// task next waits for anything (a request, a timer, room in the
    /// window) or yields, or once 16 KiB of them are ready, whichever
    /// comes first.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        let Some(raw) = self.raw.as_mut() else {
            return Err(Outgoing::closed());
        };
        if raw.try_queue(message) {
            return Ok(());
        }
        raw.send(message).await
    }

    /// Adds `key: value` to the headers sent before the first response
    /// (gRPC's initial metadata). Metadata set on the
    /// [`Context`](crate::Context) goes in the trailers. Ignored once a
    /// response was sent.
    pub fn header(&mut self, key: &str, value: &str) -> Result<(), Status> {
        let Some(raw) = self
            .raw
            .as_mut()
            .filter(|raw| raw.cell.is_some() && !raw.headers_sent)
        else {
            return Ok(());
        };
        let entry = Metadata::new().with(key, value);
        wire::metadata_into(&entry, &mut raw.headers, Code::EINTERNAL)
    }
}

/// Where a caller sends the requests of type `T` of a client-streaming or
/// bidirectional call. [`close`](Self::close) says there are no more;
/// dropping it unclosed cancels the call.
pub struct RequestSink<T> {
    raw: Outgoing,
    _message: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for RequestSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSink").finish_non_exhaustive()
    }
}

impl<T: Message + Sync> RequestSink<T> {
    pub(crate) fn new(raw: Outgoing) -> RequestSink<T> {
        RequestSink {
            raw,
            _message: PhantomData,
        }
    }

    /// Sends one request, waiting while the server's flow-control window
    /// is full.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        self.raw.send(message).await
    }

    /// Ends the requests (the server's stream of them ends cleanly).
    pub fn close(&mut self) {
        self.raw.close();
    }
}

/// A client-streaming call in progress: send requests, then
/// [`finish`](Self::finish) for the one response.
pub struct ClientStreamingCall<Req, Resp> {
    requests: RequestSink<Req>,
    responses: Streaming<Resp>,
}

impl<Req, Resp> fmt::Debug for ClientStreamingCall<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStreamingCall")
            .field("method", &self.responses.method.path)
            .finish_non_exhaustive()
    }
}

impl<Req: Message + Sync, Resp: Message + Default> ClientStreamingCall<Req, Resp> {
    pub(crate) fn new(
        requests: RequestSink<Req>,
        responses: Streaming<Resp>,
    ) -> ClientStreamingCall<Req, Resp> {
        ClientStreamingCall {
            requests,
            responses,
        }
    }

    /// Sends one request.
    pub async fn send(&mut self, message: &Req) -> Result<(), Status> {
        self.requests.send(message).await
    }

    /// Ends the requests and waits for the response and the final status.
    pub async fn finish(mut self) -> Result<Response<Resp>, Status> {
        self.requests.close();
        let Some(message) = self.responses.message().await? else {
            return Err(Status::new(
                Code::Internal,
                "the server ended a client-streaming call with no response",
            ));
        };
        if self.responses.message().await?.is_some() {
            return Err(Status::new(
                Code::Internal,
                "the server sent more than one response to a client-streaming call",
            ));
        }
        let mut metadata = self.responses.metadata().clone();
        metadata.extend_from(self.responses.trailers());
        Ok(Response {
            message,
            attachment: Bytes::new(),
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Budget, Chunks, Compression, Incoming, IncomingState, MAX_PENDING, MESSAGES_PER_LOOK,
        MIN_TURN, MethodDescriptor, Outgoing, ResponseSink, Streaming,
    };
    use crate::server::http2_stream::{Cell, Signal};
    use bytes::BytesMut;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::time::Duration;

    /// `n` messages of `len` bytes each (message `i` filled with `i`),
    /// prefixed as on the wire.
    fn wire(n: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            put_message(&mut out, false, &vec![i as u8; len]);
        }
        out
    }

    /// Appends `body` to `out` as one message on the wire, with its prefix.
    fn put_message(out: &mut Vec<u8>, compressed: bool, body: &[u8]) {
        out.extend_from_slice(&keel_wire::grpc::prefix(compressed, body.len()));
        out.extend_from_slice(body);
    }

    /// Feeds `bytes` to a [`Chunks`] in chunks of `step` bytes, each a
    /// block of its own (never adjacent to the last), cutting messages as
    /// the stream reader does; returns them.
    fn cut(bytes: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut chunks = Chunks::default();
        let mut messages = Vec::new();
        for piece in bytes.chunks(step) {
            while let Some(m) = chunks.split_message(1 << 20).expect("well formed") {
                messages.push(m.data.to_vec());
            }
            chunks.append(BytesMut::from(piece));
        }
        while let Some(m) = chunks.split_message(1 << 20).expect("well formed") {
            messages.push(m.data.to_vec());
        }
        assert!(chunks.is_empty(), "bytes left after the last message");
        messages
    }

    #[test]
    fn messages_straddling_chunks_come_out_whole_and_in_order() {
        for (n, len) in [(40, 1024), (300, 16), (3, 20_000), (5, 0)] {
            let bytes = wire(n, len);
            // Steps that cut prefixes, bodies and both, and that hold many
            // messages per chunk.
            for step in [1, 3, 5, 7, 1000, 16_384, 65_536] {
                let messages = cut(&bytes, step);
                assert_eq!(messages.len(), n, "{n} x {len} B in steps of {step}");
                for (i, m) in messages.iter().enumerate() {
                    assert_eq!(m.len(), len);
                    assert!(m.iter().all(|&b| b == i as u8), "message {i} corrupted");
                }
            }
        }
    }

    #[test]
    fn only_the_bytes_completing_a_message_are_copied() {
        // 1 KiB messages in 16 KiB chunks: what follows the straddling
        // message stays in the chunk it came in.
        let bytes = wire(40, 1024);
        let mut chunks = Chunks::default();
        chunks.append(BytesMut::from(&bytes[..16_384]));
        let mut cut = 0;
        while chunks
            .split_message(1 << 20)
            .expect("well formed")
            .is_some()
        {
            cut += 1;
        }
        assert_eq!(cut, 16_384 / 1029);
        let second = BytesMut::from(&bytes[16_384..32_768]);
        let second_at = second.as_ptr();
        chunks.append(second);
        assert!(!chunks.rest.is_empty());
        assert_eq!(
            chunks.rest.as_ptr(),
            second_at.wrapping_add(1029 - 16_384 % 1029),
            "the rest of the chunk was not copied"
        );
        assert_eq!(chunks.head.len(), 1029);
    }

    #[test]
    fn a_bad_prefix_in_a_later_chunk_is_reported() {
        let mut bytes = wire(2, 10);
        bytes[15] = 7; // the second message's flag
        let mut chunks = Chunks::default();
        chunks.append(BytesMut::from(&bytes[..12]));
        assert!(chunks.split_message(1 << 20).expect("partial").is_none());
        // Completes the first message; the second, bad, waits in `rest`.
        chunks.append(BytesMut::from(&bytes[12..]));
        assert!(chunks.split_message(1 << 20).expect("first").is_some());
        assert!(chunks.split_message(1 << 20).is_err());
    }

    /// A task looping over messages that never make it wait yields after
    /// 128 messages when they took it at least [`MIN_TURN`], and not before
    /// a turn lasted that long when they are cheap.
    #[test]
    fn a_turn_ends_after_128_messages_that_lasted_long_enough() {
        let mut budget = Budget::default();
        let started = std::time::Instant::now();
        let mut messages = 0u32;
        while !budget.take_due() {
            budget.count();
            messages += 1;
            assert!(messages < 100_000_000, "the turn never ended");
        }
        assert_eq!(messages % MESSAGES_PER_LOOK, 0, "{messages}");
        assert!(started.elapsed() >= MIN_TURN);
        // The next turn starts afresh; slow messages end it at the first look.
        for _ in 0..MESSAGES_PER_LOOK {
            assert!(!budget.take_due());
            std::thread::sleep(Duration::from_micros(1));
            budget.count();
        }
        assert!(budget.take_due());
    }

    /// A yielding reader, on a thread of its own runtime, lets another task
    /// of that thread run while it reads a stream of small messages that
    /// are all buffered already.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_of_small_messages_yields_to_other_tasks() {
        let other_ran = another_task();
        let mut incoming = buffered(&wire(1_000_000, 0), None);
        let mut read = 0usize;
        while !other_ran.load(Relaxed) {
            match incoming.next().await {
                Ok(Some(_)) => read += 1,
                other => panic!("read {read} messages and then {other:?} before yielding"),
            }
        }
        assert!(
            read >= MESSAGES_PER_LOOK as usize,
            "yielded after {read} messages"
        );
    }

    /// The same through a typed stream, whose reads take buffered messages
    /// by their own short way ([`Incoming::merge_plain`]).
    #[tokio::test(flavor = "current_thread")]
    async fn a_typed_stream_of_small_messages_yields_to_other_tasks() {
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        let other_ran = another_task();
        let raw = buffered(&wire(1_000_000, 0), None);
        let mut stream = Streaming::<()>::client(raw, &METHOD, None);
        let mut read = 0usize;
        while !other_ran.load(Relaxed) {
            match stream.message().await {
                Ok(Some(())) => read += 1,
                other => panic!("read {read} messages and then {other:?} before yielding"),
            }
        }
        assert!(
            read >= MESSAGES_PER_LOOK as usize,
            "yielded after {read} messages"
        );
    }

    /// Buffered messages (taken the short way when whole and plain) are
    /// checked for their required fields.
    #[tokio::test]
    async fn a_typed_stream_checks_required_fields_of_buffered_messages() {
        use crate::codec::{RequiredField, RequiredSchema};
        use prost::Message as _;
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        static NEEDS_FIELD_1: RequiredSchema = RequiredSchema {
            message: "s.B",
            required: &[RequiredField {
                number: 1,
                path: "s.B.value",
            }],
            nested: &[],
            map_entry: false,
        };
        let mut bytes = Vec::new();
        for body in ["present".to_string().encode_to_vec(), Vec::new()] {
            put_message(&mut bytes, false, &body);
        }
        let raw = buffered(&bytes, None);
        let mut stream = Streaming::<String>::client(raw, &METHOD, Some(&NEEDS_FIELD_1));
        let first = stream.message().await.expect("has its field");
        assert_eq!(first.as_deref(), Some("present"));
        let failure = stream.message().await.expect_err("misses its field");
        assert_eq!(failure.code(), crate::status::Code::ERESPONSE, "{failure}");
        assert!(failure.message().contains("s.B.value"), "{failure}");
    }

    /// A buffered message that does not decode, decoded where it lies,
    /// fails alone: its bytes are consumed, the messages around it come
    /// out whole, and the stream's end is still read.
    #[tokio::test]
    async fn a_message_that_does_not_decode_in_place_is_skipped_whole() {
        use prost::Message as _;
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        let mut bytes = Vec::new();
        // A string field whose length runs past the message's end.
        let bad = vec![0x0a, 0x09, b'x'];
        for body in [
            "before".to_string().encode_to_vec(),
            bad,
            "after".to_string().encode_to_vec(),
        ] {
            put_message(&mut bytes, false, &body);
        }
        let raw = buffered(&bytes, None);
        let mut stream = Streaming::<String>::client(raw, &METHOD, None);
        let first = stream.message().await.expect("well formed");
        assert_eq!(first.as_deref(), Some("before"));
        let failure = stream.message().await.expect_err("truncated field");
        assert_eq!(failure.code(), crate::status::Code::ERESPONSE, "{failure}");
        assert!(failure.message().contains("response_size=3"), "{failure}");
        let last = stream.message().await.expect("well formed");
        assert_eq!(last.as_deref(), Some("after"));
        assert_eq!(stream.message().await.expect("the end"), None);
    }

    /// A handler sending small responses into a queue that always has
    /// room (the connection takes each as it comes) still lets the other
    /// tasks of its worker run: responses queued at once
    /// ([`Outgoing::try_queue`]) count toward its turn.
    #[tokio::test(flavor = "current_thread")]
    async fn a_sink_of_small_responses_yields_to_other_tasks() {
        let other_ran = another_task();
        let cell = Cell::new(1, Arc::new(Signal::default()));
        let mut sink = ResponseSink::<()> {
            raw: Some(Outgoing::server_cell(cell.clone(), None)),
            _message: std::marker::PhantomData,
        };
        let mut sent = 0usize;
        while !other_ran.load(Relaxed) {
            sink.send(&()).await.expect("queued");
            sent += 1;
            // The connection's side takes what is queued.
            let _ = cell.work(usize::MAX, true);
            assert!(sent < 1_000_000, "sent {sent} responses without yielding");
        }
        assert!(
            sent >= MESSAGES_PER_LOOK as usize,
            "yielded after {sent} responses"
        );
    }

    /// A response is queued at once only when nothing stands in the way:
    /// never past the queue's bound (backpressure), on a failed stream
    /// (whose failure the next `send` reports) or a compressed one.
    #[tokio::test]
    async fn a_response_is_queued_at_once_only_when_nothing_stands_in_the_way() {
        let cell = Cell::new(1, Arc::new(Signal::default()));
        let mut sink = ResponseSink::<()> {
            raw: Some(Outgoing::server_cell(cell.clone(), None)),
            _message: std::marker::PhantomData,
        };
        assert!(!raw(&mut sink).try_queue(&()), "the headers go first");
        sink.send(&()).await.expect("queued with the headers");
        let mut queued = 1;
        loop {
            // Only the queue's bound may stop this loop (no turn ends).
            raw(&mut sink).budget = Budget::default();
            if !raw(&mut sink).try_queue(&()) {
                break;
            }
            queued += 1;
            assert!(queued <= MAX_PENDING, "queued {queued} responses");
        }
        let work = cell.work(usize::MAX, true);
        assert_eq!(work.data.len(), queued * keel_wire::grpc::PREFIX_LEN);
        assert!(
            work.data.len() <= MAX_PENDING,
            "{} bytes queued",
            work.data.len()
        );
        assert!(
            work.data.len() + keel_wire::grpc::PREFIX_LEN > MAX_PENDING,
            "stopped with room left: {} bytes queued",
            work.data.len()
        );
        raw(&mut sink).budget = Budget::default();
        assert!(raw(&mut sink).try_queue(&()), "room again once taken");

        cell.end_recv(Err(crate::status::Status::new(
            crate::status::Code::Cancelled,
            "the client went away",
        )));
        assert!(!raw(&mut sink).try_queue(&()));
        let failure = sink.send(&()).await.expect_err("the stream failed");
        assert_eq!(failure.code(), crate::status::Code::Cancelled, "{failure}");

        let cell = Cell::new(3, Arc::new(Signal::default()));
        let mut sink = ResponseSink::<()> {
            raw: Some(Outgoing::server_cell(cell, Some(Compression::Gzip))),
            _message: std::marker::PhantomData,
        };
        sink.send(&()).await.expect("queued with the headers");
        assert!(!raw(&mut sink).try_queue(&()), "compressed: the usual way");
        sink.send(&()).await.expect("queued the usual way");
    }

    /// A bad prefix ends a typed stream with the sender's blame, whether
    /// messages before it were taken the short way or not.
    #[tokio::test]
    async fn a_typed_stream_reports_a_bad_prefix_after_good_messages() {
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        let mut bytes = wire(3, 0);
        bytes.extend_from_slice(&[2, 0, 0, 0, 0]);
        let mut stream = Streaming::<()>::client(buffered(&bytes, None), &METHOD, None);
        for _ in 0..3 {
            assert_eq!(stream.message().await.expect("a good message"), Some(()));
        }
        let failure = stream.message().await.expect_err("a bad flag");
        assert_eq!(failure.code(), crate::status::Code::Internal, "{failure}");
        let again = stream.message().await.expect_err("the stream ended");
        assert_eq!(again.code(), failure.code());
    }

    /// A sink's stream.
    fn raw(sink: &mut ResponseSink<()>) -> &mut Outgoing {
        sink.raw.as_mut().expect("open")
    }

    /// An ended stream whose `bytes` are all buffered, in `encoding`.
    fn buffered(bytes: &[u8], encoding: Option<Compression>) -> Incoming {
        let mut incoming = Incoming::new(
            IncomingState::Done(Ok(())),
            1 << 20,
            encoding,
            crate::status::Code::Internal,
            None,
        );
        incoming.buf.append(BytesMut::from(bytes));
        incoming
    }

    /// A task spawned on this (current-thread) runtime, which says when
    /// it ran.
    fn another_task() -> Arc<AtomicBool> {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Relaxed) });
        ran
    }

    /// Cutting a buffered message the short way, when it can, gives the
    /// same messages as cutting every one the usual way, wherever chunks
    /// end.
    #[test]
    fn plain_messages_are_cut_alike_either_way() {
        /// Cuts what `chunks` holds whole, the short way first.
        fn drain(chunks: &mut Chunks, messages: &mut Vec<Vec<u8>>) -> usize {
            let mut plain = 0;
            loop {
                if let Some(m) = chunks.with_plain(1 << 20, |buf, len| buf.split_to(len)) {
                    messages.push(m.to_vec());
                    plain += 1;
                } else if let Some(m) = chunks.split_message(1 << 20).expect("well formed") {
                    messages.push(m.data.to_vec());
                } else {
                    return plain;
                }
            }
        }
        for len in [0, 5, 300] {
            let bytes = wire(40, len);
            for step in [1, 3, 7, 16, 1000, bytes.len()] {
                let mut chunks = Chunks::default();
                let mut messages = Vec::new();
                let mut plain = 0;
                for piece in bytes.chunks(step) {
                    plain += drain(&mut chunks, &mut messages);
                    chunks.append(BytesMut::from(piece));
                }
                plain += drain(&mut chunks, &mut messages);
                assert!(chunks.is_empty(), "bytes left after the last message");
                assert_eq!(messages, cut(&bytes, step), "len {len}, step {step}");
                if step == bytes.len() {
                    assert_eq!(plain, 40, "len {len}: all buffered, all cut the short way");
                }
            }
        }
    }

    /// Compressed messages, too large ones and a stream's end go the
    /// usual way, between messages taken the short way.
    #[tokio::test]
    async fn a_typed_stream_reads_compressed_and_plain_messages_in_order() {
        use prost::Message as _;
        static METHOD: MethodDescriptor = MethodDescriptor::for_tests();
        let mut bytes = Vec::new();
        for (i, text) in ["plain", "squeezed", "plain again"].into_iter().enumerate() {
            let body = text.to_string().encode_to_vec();
            let (compressed, body) = if i == 1 {
                let mut out = BytesMut::new();
                crate::compression::compress(Compression::Gzip, &body, &mut out).expect("gzip");
                (true, out.to_vec())
            } else {
                (false, body)
            };
            put_message(&mut bytes, compressed, &body);
        }
        let raw = buffered(&bytes, Some(Compression::Gzip));
        let mut stream = Streaming::<String>::client(raw, &METHOD, None);
        let mut read = Vec::new();
        while let Some(text) = stream.message().await.expect("a well-formed stream") {
            read.push(text);
        }
        assert_eq!(read, ["plain", "squeezed", "plain again"]);

        let mut too_large = buffered(&wire(1, 64), None);
        too_large.max = 63;
        let mut stream = Streaming::<()>::client(too_large, &METHOD, None);
        let failure = stream.message().await.expect_err("over the maximum");
        assert_eq!(
            failure.code(),
            crate::status::Code::ResourceExhausted,
            "{failure}"
        );
    }
}

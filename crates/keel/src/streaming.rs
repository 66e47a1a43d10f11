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
//! the `h2` crate's streams.
//!
//! Owns: messages on HTTP/2 streams (framing, compression, flow control) and the
//! typed wrappers generated code hands to handlers and callers. May not
//! touch: admission, routing, retries — the dispatcher and the channel do
//! those.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use http::header::{CONTENT_TYPE, HeaderMap};
use prost::Message;
use tokio::time::Instant;

use crate::codec::grpc as wire;
use crate::codec::{Encode, RequiredSchema, decode_request, decode_response};
use crate::compression::Compression;
use crate::metadata::Metadata;
use crate::method::MethodDescriptor;
use crate::response::Response;
use crate::server::http2_stream::Cell;
use crate::status::{Code, Status};

/// Messages arriving on one stream, still encoded.
pub(crate) struct Incoming {
    state: IncomingState,
    buf: BytesMut,
    max: usize,
    encoding: Option<Compression>,
    /// The code of malformed data: the peer's fault.
    blame: Code,
    deadline: Option<Instant>,
    headers: Metadata,
    trailers: Metadata,
    /// A client's handle on the stream's sending half: reading that stops
    /// early (dropped, past the deadline) resets the stream with it.
    canceller: Option<SharedSend>,
    /// A caller's statistics and span, finished when the stream ends.
    record: Option<StreamRecord>,
    /// The deadline's timer, once a read had to wait (dropped at the end).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
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
    Response(h2::client::ResponseFuture),
    Body(RecvStream),
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
        response: h2::client::ResponseFuture,
        max: usize,
        deadline: Option<Instant>,
        canceller: SharedSend,
    ) -> Incoming {
        let mut incoming = Incoming::new(
            IncomingState::Response(response),
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
            buf: BytesMut::new(),
            max,
            encoding,
            blame,
            deadline,
            headers: Metadata::new(),
            trailers: Metadata::new(),
            canceller: None,
            record: None,
            timer: None,
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
        let Some(deadline) = self.deadline else {
            return self.next_inner().await;
        };
        // A message already buffered (a DATA frame carries many small
        // ones) is taken without the timer: only a read that waits needs
        // it.
        if let Some(buffered) = self.buffered() {
            tokio::task::consume_budget().await;
            return buffered;
        }
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
                if let Some(send) = &self.canceller {
                    reset(send);
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
        self.buf = BytesMut::new();
        self.timer = None;
    }

    /// The next message if it is whole in the buffer (or the error that
    /// cutting it found); `None` when more must be read.
    fn buffered(&mut self) -> Option<Result<Option<Bytes>, Status>> {
        match keel_wire::grpc::split_message(&mut self.buf, self.max) {
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
        // Messages already buffered come without a wakeup: stay fair.
        tokio::task::consume_budget().await;
        loop {
            if let Some(buffered) = self.buffered() {
                return buffered;
            }
            match &mut self.state {
                IncomingState::Response(response) => match response.await {
                    Ok(response) => self.on_headers(response),
                    Err(e) => self.end(Err(wire::stream_failed(&e))),
                },
                IncomingState::Body(body) => match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        self.buf.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => self.end(Err(wire::stream_failed(&e))),
                    None if !self.buf.is_empty() => {
                        let status = Status::new(self.blame, "the stream ended inside a message");
                        self.end(Err(status));
                    }
                    None if self.blame == Code::ERESPONSE => {
                        // A client reads the server's status in the trailers.
                        let outcome = match body.trailers().await {
                            Ok(Some(trailers)) => {
                                self.trailers = wire::metadata_from(&trailers);
                                wire::status_from(&trailers).unwrap_or_else(|| {
                                    Err(Status::new(
                                        Code::Internal,
                                        "the server ended the stream without grpc-status",
                                    ))
                                })
                            }
                            Ok(None) => Err(Status::new(
                                Code::Internal,
                                "the server ended the stream without trailers",
                            )),
                            Err(e) => Err(wire::stream_failed(&e)),
                        };
                        self.end(outcome);
                    }
                    None => self.end(Ok(())),
                },
                IncomingState::Cell(cell) => {
                    match std::future::poll_fn(|cx| cell.poll_data(cx)).await {
                        Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
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

    fn on_headers(&mut self, response: http::Response<RecvStream>) {
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            self.end(Err(Status::new(
                Code::from_http_status(parts.status.as_u16()),
                format!("the server answered HTTP status {}", parts.status),
            )));
            return;
        }
        self.headers = wire::metadata_from(&parts.headers);
        // Trailers-only: the status is in the headers, there is no body.
        if let Some(outcome) = wire::status_from(&parts.headers) {
            self.end(outcome);
            return;
        }
        match wire::encoding_from(&parts.headers) {
            Ok(encoding) => {
                self.encoding = encoding;
                self.state = IncomingState::Body(body);
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

impl Drop for Incoming {
    fn drop(&mut self) {
        // A caller that stops reading before the end cancels the call.
        if let (Some(send), false) = (
            &self.canceller,
            matches!(self.state, IncomingState::Done(_)),
        ) {
            reset(send);
        }
    }
}

/// A stream's sending half: the h2 stream and the messages waiting to go
/// out on it. Shared with the stream's flusher task, and on a client with
/// the responses' stream, so that either side, dropped early, can reset it.
///
/// Messages are not each a DATA frame: a handler that sends a burst (the
/// usual way to stream) has its messages joined into frames of up to the
/// window's size by a flusher task that runs once the sender yields. One
/// DATA frame per small message would cost a frame header each, and h2
/// peers (hyper, tonic) close a connection that receives many small DATA
/// frames it has not read yet (`ENHANCE_YOUR_CALM`, "too_many_data_frames").
pub(crate) struct SendHalf {
    state: Mutex<SendState>,
    /// Woken when the flusher took what was pending (room for more).
    drained: tokio::sync::Notify,
}

struct SendState {
    stream: SendStream<Bytes>,
    /// Sealed messages not handed to h2 yet.
    pending: BytesMut,
    /// A flusher task runs (or is about to).
    flushing: bool,
    /// Why sending failed, once it did.
    failed: Option<Status>,
    /// What ends the stream once `pending` is out.
    end: End,
}

/// How a stream's sending ends, after its pending messages.
enum End {
    Open,
    /// END_STREAM on an empty DATA frame (a client's last request).
    Data,
    /// Trailers (a server's status and trailing metadata).
    Trailers(HeaderMap),
}

/// Messages pending beyond this wait for the flusher (backpressure, with
/// h2's window behind it).
const MAX_PENDING: usize = 64 * 1024;

pub(crate) type SharedSend = Arc<SendHalf>;

impl SendHalf {
    pub(crate) fn new(stream: SendStream<Bytes>) -> SharedSend {
        Arc::new(SendHalf {
            state: Mutex::new(SendState {
                stream,
                pending: BytesMut::new(),
                flushing: false,
                failed: None,
                end: End::Open,
            }),
            drained: tokio::sync::Notify::new(),
        })
    }
}

fn lock(send: &SharedSend) -> std::sync::MutexGuard<'_, SendState> {
    send.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resets `send` (CANCEL): the peer stops at once.
fn reset(send: &SharedSend) {
    let mut st = lock(send);
    st.pending = BytesMut::new();
    st.stream.send_reset(h2::Reason::CANCEL);
}

/// A message to queue: sealed already (compressed), or encoded straight
/// into the queue with its prefix.
enum Queued<'a> {
    Sealed(&'a [u8]),
    Plain(&'a (dyn Encode + Sync)),
}

impl Queued<'_> {
    fn len(&self) -> usize {
        match self {
            Queued::Sealed(data) => data.len(),
            Queued::Plain(message) => keel_wire::grpc::PREFIX_LEN + message.encoded_len(),
        }
    }

    fn append_to(&self, pending: &mut BytesMut, len: usize) {
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

/// Queues one message; a flusher task writes it (with those queued
/// meanwhile) once this task yields. Waits while too much is pending.
async fn enqueue(send: &SharedSend, data: Queued<'_>) -> Result<(), Status> {
    let len = data.len();
    loop {
        let drained = send.drained.notified();
        tokio::pin!(drained);
        {
            let mut st = lock(send);
            if let Some(failed) = &st.failed {
                return Err(failed.clone());
            }
            if st.pending.is_empty() || st.pending.len() + len <= MAX_PENDING {
                data.append_to(&mut st.pending, len);
                if !st.flushing {
                    st.flushing = true;
                    tokio::spawn(flush(send.clone()));
                }
                return Ok(());
            }
            drained.as_mut().enable();
        }
        drained.await;
    }
}

/// Ends the sending half as `end` says: now, or after the flusher wrote
/// what is pending.
fn end_with(send: &SharedSend, end: End) {
    let mut st = lock(send);
    if st.flushing {
        st.end = end;
    } else {
        apply_end(&mut st.stream, end);
    }
}

fn apply_end(stream: &mut SendStream<Bytes>, end: End) {
    match end {
        End::Open => {}
        End::Data => {
            let _ = stream.send_data(Bytes::new(), true);
        }
        End::Trailers(trailers) => {
            let _ = stream.send_trailers(trailers);
        }
    }
}

/// DATA frames smaller than this count against h2 peers' budget of small
/// frames (h2 allows about a hundred unread): a batch this small waits a
/// few more turns of the scheduler for the sender to add to it.
const SMALL_FRAME: usize = 256;
/// Turns a small batch waits without the sender adding to it before it
/// goes as it is (a sender that sends one message and then waits must not
/// be held up; one still adding keeps the batch open until it is large).
const SMALL_WAITS: usize = 4;

/// The flusher: after the sender yields, writes everything pending, as
/// few DATA frames as the peer's window allows, then the end if one is
/// due. A small batch waits for the sender to add to it: on a runtime
/// with several workers a sender adding messages on one while the flusher
/// takes them on another would otherwise make a frame of each message.
async fn flush(send: SharedSend) {
    tokio::task::yield_now().await;
    loop {
        let mut idle = 0;
        let mut seen = 0;
        while idle < SMALL_WAITS {
            let (ready, len) = {
                let st = lock(&send);
                let ready = st.pending.len() >= SMALL_FRAME
                    || !matches!(st.end, End::Open)
                    || st.failed.is_some();
                (ready, st.pending.len())
            };
            if ready {
                break;
            }
            idle = if len > seen { 0 } else { idle + 1 };
            seen = len;
            tokio::task::yield_now().await;
        }
        let mut data = {
            let mut st = lock(&send);
            if st.pending.is_empty() || st.failed.is_some() {
                st.flushing = false;
                let end = std::mem::replace(&mut st.end, End::Open);
                if st.failed.is_none() {
                    apply_end(&mut st.stream, end);
                }
                drop(st);
                send.drained.notify_waiters();
                return;
            }
            st.pending.split().freeze()
        };
        send.drained.notify_waiters();
        while !data.is_empty() {
            lock(&send).stream.reserve_capacity(data.len());
            let granted = std::future::poll_fn(|cx| lock(&send).stream.poll_capacity(cx)).await;
            let failure = match granted {
                Some(Ok(0)) => None,
                Some(Ok(n)) => {
                    let chunk = data.split_to(n.min(data.len()));
                    let sent = lock(&send).stream.send_data(chunk, false);
                    sent.err().map(|e| wire::stream_failed(&e))
                }
                Some(Err(e)) => Some(wire::stream_failed(&e)),
                None => Some(Outgoing::closed()),
            };
            if let Some(failure) = failure {
                lock(&send).failed = Some(failure);
                break;
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
    send: Option<SharedSend>,
    /// A server stream on Keel's own HTTP/2 connection.
    cell: Option<Arc<Cell>>,
    compress: Option<Compression>,
    /// END_STREAM sent, or the stream reset: nothing more goes out.
    ended: bool,
}

impl Outgoing {
    /// The requests of a client stream whose headers were sent.
    pub(crate) fn client(send: SharedSend, compress: Option<Compression>) -> Outgoing {
        Outgoing {
            headers: HeaderMap::new(),
            headers_sent: false,
            send: Some(send),
            cell: None,
            compress,
            ended: false,
        }
    }

    /// The responses of a server stream on Keel's own HTTP/2 connection.
    pub(crate) fn server_cell(cell: Arc<Cell>, compress: Option<Compression>) -> Outgoing {
        Outgoing {
            headers: HeaderMap::new(),
            headers_sent: false,
            send: None,
            cell: Some(cell),
            compress,
            ended: false,
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

    /// The stream a client sends on.
    fn stream(&mut self) -> Result<SharedSend, Status> {
        if self.ended {
            return Err(Outgoing::closed());
        }
        self.send.clone().ok_or_else(Outgoing::closed)
    }

    /// Sends one message: queued for the stream's flusher, waiting while
    /// the peer's flow-control window and the queue are full.
    pub(crate) async fn send(&mut self, message: &(dyn Encode + Sync)) -> Result<(), Status> {
        // Uncompressed, the message is encoded into the queue itself.
        let sealed = match self.compress {
            None => None,
            compress => Some(wire::seal_message(message, compress)?),
        };
        let data = sealed
            .as_deref()
            .map_or(Queued::Plain(message), Queued::Sealed);
        if let Some(cell) = self.cell.clone() {
            if self.ended {
                return Err(Outgoing::closed());
            }
            if !self.headers_sent {
                self.headers_sent = true;
                cell.send_headers(self.response_headers());
            }
            let len = data.len();
            if let Err(failed) = cell.send(len, |queue| data.append_to(queue, len)).await {
                self.ended = true;
                return Err(failed);
            }
            tokio::task::consume_budget().await;
            return Ok(());
        }
        let stream = self.stream()?;
        if let Err(failed) = enqueue(&stream, data).await {
            self.ended = true;
            return Err(failed);
        }
        // Queueing never waits while there is room, so a handler sending
        // in a loop would never yield: take part in tokio's cooperative
        // budget, letting the flusher, the connection and other tasks run.
        tokio::task::consume_budget().await;
        Ok(())
    }

    /// A client's end of its requests (END_STREAM).
    pub(crate) fn close(&mut self) {
        if !self.ended {
            self.ended = true;
            if let Some(send) = &self.send {
                end_with(send, End::Data);
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
        } else if let Some(send) = &self.send {
            end_with(send, End::Trailers(trailers));
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
        } else if let Some(send) = &self.send {
            reset(send);
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
        let Some(bytes) = raw.next().await? else {
            return Ok(None);
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
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        match self.raw.as_mut() {
            Some(raw) => raw.send(message).await,
            None => Err(Outgoing::closed()),
        }
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

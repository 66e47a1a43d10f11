//! One server connection speaking gRPC over HTTP/2, on Keel's own HTTP/2
//! (frames from [`keel_wire::http2`], header blocks from
//! [`keel_wire::hpack`]).
//!
//! ```text
//!   read ─► frames ─► HEADERS: HPACK ─► the call's head (path, timeout, metadata, ...)
//!                     DATA: the request message (unary), or a stream's cell
//!   unary, request whole ─► Dispatcher::start ─► poll once, inline
//!                              │ ready: HEADERS + DATA + trailers into `out`
//!                              ▼ pending: a task in `calls`; its answer comes back there
//!   streaming ─► a task runs the handler; it leaves messages in the stream's
//!               cell (super::http2_stream) and the connection frames them,
//!               splicing large runs of them among `out`'s frames uncopied
//!   write `out` once per turn (vectored): every answer ready together
//!   shares one write
//! ```
//!
//! It is built like the baidu_std connection: one task owns the socket,
//! both HPACK tables, every stream's windows and the buffers; handlers that
//! finish on their first poll cost no task and no wakeup; buffers shrink
//! back when the connection goes quiet, so an idle connection holds about
//! what baidu_std's does (the `h2` crate keeps 28 KB of fixed buffers per
//! connection, which is why Keel does not use it here).
//!
//! Owns: HTTP/2 on the server side (the preface, SETTINGS, flow control in
//! both directions, stream states, PING, GOAWAY, RST_STREAM), gRPC framing
//! of unary calls, and the connection's authentication state (the first
//! stream's `authorization` decides for the connection, as before). May not
//! touch: routing, limits, handlers, spans' contents or statistics — the
//! dispatcher does those, the same for every protocol.
//!
//! A client that resets a stream or drops the connection cancels its
//! handler (its task is aborted). Graceful shutdown sends GOAWAY: streams
//! in flight finish, new ones are refused (REFUSED_STREAM, which clients
//! retry), and the connection closes when the last ends.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use keel_pool::{FutureBox, Pool, Pooled, Reset};
use keel_wire::hpack::{Decoder, Encoder, HpackError, Indexing};
use keel_wire::http2::{self as frame, Assembly, Head, HeaderBlocks, Reason, flag, kind, setting};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::codec::grpc as wire;
use crate::compression::Compression;
use crate::conn_buffers::{KEEP_CAPACITY, ReadBuffer, SPLICE_MIN, Splices, WriteBuffer};
use crate::metadata::Metadata;
use crate::method::MethodKind;
use crate::rpcz::TraceContext;
use crate::server::builder::ServerCore;
use crate::server::dispatch::{Answer, Request};
use crate::server::http2_stream::{Cell, Signal};
use crate::server::interceptor::authenticate;
use crate::server::sniff::OpenGuard;
use crate::status::{Code, Status};
use crate::streaming::{Incoming, Outgoing, ServerStream};
use crate::tls::Duplex;
use crate::transport::http2::{Payload, each_frame};

/// Per-stream receive window: how much a client may send ahead of the
/// handler (bounds what a stream buffers).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Largest frame the peer may send us.
const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Streams a client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// How long a connection whose credential failed stays open to read its
/// refusals before it is cut.
const REFUSED_LINGER: Duration = Duration::from_secs(1);
/// How long a connection stays above its idle footprint after activity.
const IDLE_SHRINK: Duration = Duration::from_millis(250);
/// Bytes queued for writing beyond which reading pauses (backpressure on a
/// client that does not read its answers).
const MAX_QUEUED_OUT: usize = 4 * 1024 * 1024;
/// Turns of the scheduler a small batch of streamed messages waits for its
/// handler to add to it, counted while the handler adds nothing (a handler
/// that sends one message and then waits is not held up long; one still
/// sending keeps the batch open until it is large).
const SMALL_WAITS: u8 = 4;
/// Header block fragments (HEADERS + CONTINUATION) buffered at most.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The HTTP/2 client preface.
#[cfg(fuzzing)]
pub(crate) const PREFACE: &[u8; 24] = frame::PREFACE;

/// Serves gRPC on `stream`, whose first bytes `head` (the preface, and
/// whatever followed it) were read already, until the client closes the
/// connection or a graceful shutdown has let every stream finish.
pub(crate) async fn serve<S: Duplex>(
    mut stream: S,
    head: BytesMut,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
    open: OpenGuard,
) {
    let open = Arc::new(open);
    let (mut rd, mut wr) = stream.halves();
    let mut head = head;
    if head.len() < frame::PREFACE.len() || &head[..frame::PREFACE.len()] != frame::PREFACE {
        return;
    }
    head.advance(frame::PREFACE.len());
    let mut input = ReadBuffer::new(head);
    // Answers being written while `conn.out` collects the next ones.
    let mut writing = WriteBuffer::default();
    let mut conn = Conn::new(peer, shared, open.clone());
    conn.greet();
    if conn.shared.dispatcher.is_draining() {
        conn.go_away();
    }
    let keepalive = conn.shared.grpc_keepalive;
    let far = Duration::from_secs(86_400 * 365);
    let ping = tokio::time::sleep(keepalive.map_or(far, |k| k.interval));
    tokio::pin!(ping);
    let mut awaiting_pong = false;
    let cut = tokio::time::sleep(far);
    tokio::pin!(cut);
    let shrink = tokio::time::sleep(IDLE_SHRINK);
    tokio::pin!(shrink);
    let mut shrink_armed = false;
    let mut busy = false;
    // Shrunk, and nothing read or written since: what is still held is
    // in use (an open stream's entry, a blocked stream), so the timer is
    // not armed again until there is activity (an idle connection with a
    // quiet stream would otherwise shrink, and reallocate, every tick).
    let mut shrunk = false;
    let mut eof = false;
    let signal = conn.signal.clone();
    loop {
        // Every whole frame read so far.
        if conn.error.is_none() {
            let cut = each_frame(&mut input.buf, MAX_FRAME_SIZE as usize, |h, payload| {
                conn.on_frame(h, payload);
                conn.error.is_none()
            });
            if let Err(len) = cut {
                conn.fail(Reason::FrameSize, too_large(len, MAX_FRAME_SIZE));
            }
        }
        if conn.ping_acked {
            conn.ping_acked = false;
            if awaiting_pong {
                awaiting_pong = false;
                ping.as_mut()
                    .reset(Instant::now() + keepalive.map_or(far, |k| k.interval));
            }
        }
        if conn.refused_at_first {
            conn.refused_at_first = false;
            cut.as_mut().reset(Instant::now() + REFUSED_LINGER);
        }
        conn.serve_dirty();
        conn.window_updates();
        writing.take_spliced(&mut conn.out, &mut conn.splices);
        let flushed = writing.flushed();
        open.info().set_in_flight(conn.streams.len());
        let closing = conn.error.is_some()
            || eof
            || (conn.going_away && conn.streams.is_empty() && conn.calls.is_empty());
        if flushed && closing && conn.out.is_empty() {
            let _ = wr.shutdown().await;
            return;
        }
        // A connection that went quiet after a burst gives the big buffers
        // back (R7).
        input.prepare();
        writing.settle(input.size());
        let may_read =
            !eof && conn.error.is_none() && conn.out.len() + conn.splices.bytes() < MAX_QUEUED_OUT;
        if !shrink_armed
            && !shrunk
            && (input.above_idle() || writing.holds() || conn.holds_more_than_idle())
        {
            shrink.as_mut().reset(Instant::now() + IDLE_SHRINK);
            shrink_armed = true;
        }
        tokio::select! {
            biased;
            Some(done) = conn.calls.join_next(), if !conn.calls.is_empty() => {
                if let Ok((id, answer)) = done {
                    conn.on_answer(id, answer);
                }
            }
            () = signal.notify.notified() => {}
            () = tokio::task::yield_now(), if !conn.deferred.is_empty() => {
                let mut deferred = std::mem::take(&mut conn.deferred);
                conn.dirty.append(&mut deferred);
                conn.deferred = deferred;
            }
            written = writing.write_to(&mut wr), if !flushed => {
                if !writing.wrote(written, &open) {
                    return;
                }
                busy = true;
                shrunk = false;
            }
            read = input.read(&mut rd), if may_read => {
                busy = true;
                shrunk = false;
                match input.filled(read, &open) {
                    Some(end) => eof |= end,
                    None => return,
                }
            }
            changed = shutdown.changed(), if !conn.going_away => {
                let _ = changed;
                conn.go_away();
            }
            () = &mut ping, if keepalive.is_some() && conn.error.is_none() => {
                let Some(k) = keepalive else { return };
                if awaiting_pong {
                    // No pong within the timeout: the peer is gone.
                    return;
                }
                frame::put_ping(&mut conn.out, false, *b"keel-ka!");
                conn.shared.dispatcher.stats.keepalive_pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                awaiting_pong = true;
                ping.as_mut().reset(Instant::now() + k.timeout);
            }
            () = &mut cut, if conn.refused => return,
            () = &mut shrink, if shrink_armed => if busy {
                // Still busy: look again later (no allocation churn while
                // calls keep coming).
                busy = false;
                shrink.as_mut().reset(Instant::now() + IDLE_SHRINK);
            } else {
                shrink_armed = false;
                shrunk = true;
                input.quiet();
                writing.quiet();
                conn.shrink();
            },
        }
    }
}

/// Whether `data` is exactly one gRPC message, prefix included.
fn whole_message(data: &[u8]) -> bool {
    keel_wire::grpc::parse_prefix(data, usize::MAX)
        .ok()
        .flatten()
        .is_some_and(|(_, len)| keel_wire::grpc::PREFIX_LEN + len == data.len())
}

/// One stream the connection knows.
struct Stream {
    /// What the peer lets us send on it.
    send_window: i64,
    /// What it may still send before our next WINDOW_UPDATE.
    recv_window: i64,
    /// Received on it and consumed, not yet given back.
    recv_unacked: u32,
    /// Given to its handler's cell and not yet taken (the connection's
    /// window comes back as the handler takes it, or when the stream goes).
    held: u32,
    /// The client ended its side (END_STREAM).
    remote_closed: bool,
    /// Turns a small batch waited without growing, and its size then.
    waits: u8,
    seen: usize,
    state: StreamState,
    /// Answer bytes and trailers waiting for window.
    blocked: Option<Box<Blocked>>,
}

enum StreamState {
    /// A unary call reading its request.
    Reading(PooledHead, Checked, BytesMut),
    /// A unary call running as a task, or its answer being written.
    Running(Option<AbortHandle>),
    /// A streaming call: its handler runs as a task.
    Streaming(Arc<Cell>, Option<AbortHandle>),
}

/// What waits for the peer's window on a stream.
struct Blocked {
    data: Bytes,
    /// The trailers that follow the data (a unary answer's, or a
    /// streaming handler's end).
    trailers: Option<Trailers>,
    /// More may follow from the stream's cell.
    from_cell: bool,
}

enum Trailers {
    /// `grpc-status: 0` and nothing else.
    Ok,
    Map(HeaderMap),
}

/// What a stream's headers say about its call, as decoded.
#[derive(Default)]
struct CallHead {
    path: String,
    metadata: Metadata,
    content_type: bool,
    encoding: Option<Result<Option<Compression>, String>>,
    accept: Accept,
    timeout: Option<Result<Duration, String>>,
    trace: Option<TraceContext>,
    /// The `authorization` header, kept only while the connection's
    /// credential is undecided.
    authorization: Option<Vec<u8>>,
}

/// A path longer than this is not kept for the next call (R7).
const KEPT_PATH: usize = 256;

impl Reset for CallHead {
    /// Back to empty, keeping the path's capacity (every call has one);
    /// metadata and the rest are rare enough not to be kept.
    fn reset(&mut self) {
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        if path.capacity() > KEPT_PATH {
            path = String::new();
        }
        *self = CallHead {
            path,
            ..CallHead::default()
        };
    }

    fn heap_bytes(&self) -> usize {
        self.path.capacity()
    }
}

keel_pool::pool! {
    /// The heads of calls as their HEADERS decode: pooled, path included,
    /// so that a call allocates none.
    static HEADS: Pool<CallHead, CallHeadCache> = Pool::with_config(
        "grpc.call_heads",
        CallHead::default,
        crate::transport::http2::HEAD_POOL,
    );
}

/// A call's head, from [`HEADS`].
type PooledHead = Pooled<'static, CallHead, CallHeadCache>;

/// The encodings a client's `grpc-accept-encoding` lists.
#[derive(Default, Clone, Copy)]
struct Accept {
    gzip: bool,
    deflate: bool,
}

impl Accept {
    fn takes(self, kind: Compression) -> bool {
        match kind {
            Compression::Gzip => self.gzip,
            Compression::Zlib => self.deflate,
            _ => false,
        }
    }
}

/// A call's head, checked.
#[derive(Clone, Copy)]
struct Checked {
    encoding: Option<Compression>,
    /// How answers are compressed by default: like the request, when the
    /// client takes it.
    compress: Option<Compression>,
    accept: Accept,
    deadline: Option<Instant>,
}

impl Checked {
    /// How an answer is compressed: as the handler chose when the client
    /// takes it, else like the request.
    fn response(self, chosen: Option<Compression>) -> Option<Compression> {
        match chosen {
            Some(Compression::None) => None,
            Some(kind) if self.accept.takes(kind) => Some(kind),
            _ => self.compress,
        }
    }
}

/// A unary call's answer and how to compress it; `None` for a streaming
/// call (its stream ended through its cell).
type Finished = (u32, Option<(Answer, Option<Compression>)>);

struct Conn {
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    open: Arc<OpenGuard>,
    out: BytesMut,
    /// A streamed answer's queued bytes, written from where they are
    /// among `out`'s frames rather than copied into it.
    splices: Splices,
    decoder: Decoder,
    encoder: Encoder,
    /// A header block being encoded (reused).
    block: BytesMut,
    /// Header blocks arriving in HEADERS + CONTINUATION frames.
    blocks: HeaderBlocks,
    streams: HashMap<u32, Stream>,
    /// Running handlers (unary calls that waited, streaming calls).
    calls: JoinSet<Finished>,
    signal: Arc<Signal>,
    dirty: Vec<u32>,
    /// Streams whose small batch waits a turn for more.
    deferred: Vec<u32>,
    /// Streams waiting for the peer's window.
    blocked: Vec<u32>,
    last_stream: u32,
    /// The peer's settings.
    peer_window: u32,
    peer_max_frame: usize,
    /// The connection's send window, and what was consumed of its receive
    /// window and not given back yet.
    send_window: i64,
    recv_unacked: u32,
    max_streams: usize,
    /// The authenticator's verdict on this connection (`None` until the
    /// first stream, when there is an authenticator).
    admission: Option<Result<(), Status>>,
    refused: bool,
    refused_at_first: bool,
    going_away: bool,
    ping_acked: bool,
    /// The connection failed: GOAWAY sent, closing.
    error: Option<Reason>,
}

impl Conn {
    fn new(peer: SocketAddr, shared: Arc<ServerCore>, open: Arc<OpenGuard>) -> Conn {
        let max_streams = shared
            .conn_limits
            .max_calls_per_connection
            .map_or(MAX_CONCURRENT_STREAMS as usize, |max| {
                max.min(MAX_CONCURRENT_STREAMS as usize)
            });
        Conn {
            peer,
            admission: shared.authenticator.is_none().then_some(Ok(())),
            shared,
            open,
            out: BytesMut::new(),
            splices: Splices::default(),
            decoder: Decoder::new(4096),
            encoder: Encoder::new(),
            block: BytesMut::new(),
            blocks: HeaderBlocks::default(),
            streams: HashMap::new(),
            calls: JoinSet::new(),
            signal: Arc::new(Signal::default()),
            dirty: Vec::new(),
            deferred: Vec::new(),
            blocked: Vec::new(),
            last_stream: 0,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME as usize,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_unacked: 0,
            max_streams,
            refused: false,
            refused_at_first: false,
            going_away: false,
            ping_acked: false,
            error: None,
        }
    }

    /// Our SETTINGS, and the connection's window beyond the default.
    fn greet(&mut self) {
        let header_list =
            u32::try_from(self.shared.conn_limits.max_header_size).unwrap_or(u32::MAX);
        frame::put_settings(
            &mut self.out,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    u32::try_from(self.max_streams).unwrap_or(u32::MAX),
                ),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_FRAME_SIZE, MAX_FRAME_SIZE),
                (setting::MAX_HEADER_LIST_SIZE, header_list),
            ],
        );
        frame::put_window_update(&mut self.out, 0, CONNECTION_WINDOW - frame::DEFAULT_WINDOW);
    }

    /// A connection error: GOAWAY with `reason`, then close.
    fn fail(&mut self, reason: Reason, why: String) {
        if self.error.is_none() {
            self.error = Some(reason);
            self.shared.dispatcher.count_protocol_error();
            frame::put_goaway(&mut self.out, self.last_stream, reason, why.as_bytes());
        }
    }

    /// Graceful shutdown: no new streams; those open finish.
    fn go_away(&mut self) {
        if !self.going_away {
            self.going_away = true;
            frame::put_goaway(&mut self.out, self.last_stream, Reason::NoError, b"");
        }
    }

    fn on_frame(&mut self, h: Head, frame: Payload<'_>) {
        let payload = frame.bytes();
        match self.blocks.take(&h, payload, MAX_HEADER_BLOCK) {
            Err((reason, why)) => return self.fail(reason, why),
            Ok(Assembly::Complete { stream, end_stream }) => {
                return self.on_headers(stream, end_stream);
            }
            Ok(Assembly::Pending) => return,
            Ok(Assembly::Other) => {}
        }
        if let Err(e) = frame::check_fixed(&h) {
            return self.fail(e.reason(), e.to_string());
        }
        match h.kind {
            kind::DATA => self.on_data(h, frame),
            kind::SETTINGS => self.on_settings(h, payload),
            kind::PING => {
                if h.has(flag::ACK) {
                    self.ping_acked = true;
                } else {
                    let mut data = [0; 8];
                    data.copy_from_slice(payload);
                    frame::put_ping(&mut self.out, true, data);
                }
            }
            kind::WINDOW_UPDATE => {
                self.on_window_update(h.stream, frame::window_increment(payload));
            }
            kind::RST_STREAM => {
                let reason = frame::rst_reason(payload);
                if let Some(stream) = self.streams.remove(&h.stream) {
                    self.forget(stream, &format!("the client reset the stream ({reason})"));
                }
            }
            // The client is leaving: no new streams will come; those open
            // finish.
            kind::GOAWAY => self.going_away = true,
            kind::PUSH_PROMISE => self.fail(
                Reason::Protocol,
                "a client may not send PUSH_PROMISE".to_owned(),
            ),
            // PRIORITY is advice; unknown frame types are ignored.
            _ => {}
        }
    }

    fn on_settings(&mut self, h: Head, payload: &[u8]) {
        if h.has(flag::ACK) {
            return;
        }
        let peer = match frame::peer_settings(&h, payload) {
            Ok(peer) => peer,
            Err(e) => return self.fail(e.reason(), e.to_string()),
        };
        if let Some(size) = peer.table {
            self.encoder.set_max_table_size(size as usize);
        }
        if let Some(size) = peer.max_frame {
            self.peer_max_frame = size as usize;
        }
        let window = peer.window;
        frame::put_settings_ack(&mut self.out);
        if let Some(window) = window {
            let delta = i64::from(window) - i64::from(self.peer_window);
            self.peer_window = window;
            for (&id, stream) in &mut self.streams {
                stream.send_window += delta;
                if stream.blocked.is_some() {
                    self.blocked.push(id);
                }
            }
            self.unblock();
        }
    }

    fn on_window_update(&mut self, id: u32, increment: u32) {
        if increment == 0 {
            if id == 0 {
                return self.fail(Reason::Protocol, "a WINDOW_UPDATE of 0".to_owned());
            }
            return self.reset_stream(id, Reason::Protocol);
        }
        if id == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(frame::MAX_WINDOW) {
                return self.fail(
                    Reason::FlowControl,
                    "the connection's window went over 2^31-1".to_owned(),
                );
            }
            let blocked = self.streams.iter().filter(|(_, s)| s.blocked.is_some());
            self.blocked.extend(blocked.map(|(&id, _)| id));
        } else if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_window += i64::from(increment);
            if stream.send_window > i64::from(frame::MAX_WINDOW) {
                return self.reset_stream(id, Reason::FlowControl);
            }
            if stream.blocked.is_some() {
                self.blocked.push(id);
            }
        }
        self.unblock();
    }

    /// Resets a stream (its peer's fault, or ours) and cancels its handler.
    fn reset_stream(&mut self, id: u32, reason: Reason) {
        frame::put_rst(&mut self.out, id, reason);
        if let Some(stream) = self.streams.remove(&id) {
            self.forget(stream, &format!("the server reset the stream ({reason})"));
        }
    }

    /// A stream removed before its end: its handler learns it and is
    /// cancelled, and the connection's window it held comes back.
    fn forget(&mut self, stream: Stream, why: &str) {
        self.recv_unacked += stream.held;
        match stream.state {
            StreamState::Running(Some(abort)) => abort.abort(),
            StreamState::Streaming(cell, abort) => {
                cell.end_recv(Err(Status::new(Code::Cancelled, why.to_owned())));
                if let Some(abort) = abort {
                    abort.abort();
                }
            }
            _ => {}
        }
    }

    fn on_data(&mut self, h: Head, frame: Payload<'_>) {
        let payload = frame.bytes();
        // Every byte counts against the connection's window, whatever
        // becomes of it; a handler's data comes back as it takes it.
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.recv_unacked += len;
        let range = match frame::data_payload(&h, payload) {
            Ok(range) => range,
            Err(e) => return self.fail(e.reason(), e.to_string()),
        };
        let end_stream = h.has(flag::END_STREAM);
        let Some(stream) = self.streams.get_mut(&h.stream) else {
            if h.stream > self.last_stream {
                return self.fail(
                    Reason::Protocol,
                    format!("DATA on stream {}, which was never opened", h.stream),
                );
            }
            // A stream already closed (answered, or reset): dropped.
            return;
        };
        if stream.remote_closed {
            return self.reset_stream(h.stream, Reason::StreamClosed);
        }
        stream.recv_window -= i64::from(len);
        if stream.recv_window < 0 {
            return self.reset_stream(h.stream, Reason::FlowControl);
        }
        stream.remote_closed = end_stream;
        let data_len = u32::try_from(range.len()).unwrap_or(u32::MAX);
        match &mut stream.state {
            StreamState::Reading(_, _, buf) => {
                // The message is buffered here (the maximum message size
                // bounds it): its window comes back at once.
                stream.recv_unacked += len;
                let max = self.shared.grpc_max_message_size;
                let over = buf.len() + range.len() > keel_wire::grpc::PREFIX_LEN + max;
                if !over && buf.is_empty() && (end_stream || whole_message(&payload[range.clone()]))
                {
                    // A whole request in one frame (the usual unary call;
                    // some clients end the stream with an empty frame
                    // after it): cut out of the read buffer, not copied;
                    // its handler is done with it as soon as it is decoded.
                    *buf = frame.cut(range);
                } else if !over {
                    buf.extend_from_slice(&payload[range]);
                }
                if over || end_stream {
                    self.request_read(h.stream, over);
                }
            }
            StreamState::Streaming(cell, _) => {
                stream.recv_unacked += len - data_len;
                stream.held += data_len;
                self.recv_unacked -= data_len;
                cell.push(&payload[range]);
                if end_stream {
                    cell.end_recv(Ok(()));
                }
            }
            StreamState::Running(_) => stream.recv_unacked += len,
        }
        if let Some(stream) = self.streams.get_mut(&h.stream) {
            give_back_window(&mut self.out, h.stream, stream);
        }
    }

    fn on_headers(&mut self, id: u32, end_stream: bool) {
        let mut head = HEADS.get();
        let want_credential = self.admission.is_none();
        let decoded = self.decoder.decode(
            self.blocks.block(),
            self.shared.conn_limits.max_header_size,
            |name, value| head.field(name, value, want_credential),
        );
        self.blocks.done(KEEP_CAPACITY);
        let too_large = match decoded {
            Ok(()) => false,
            Err(HpackError::TooLarge { .. }) => true,
            Err(e) => return self.fail(Reason::Compression, e.to_string()),
        };
        if id % 2 == 0 {
            return self.fail(
                Reason::Protocol,
                format!("a client opened stream {id}, an even number"),
            );
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers from the client: its side ends.
            if !end_stream {
                return self.reset_stream(id, Reason::Protocol);
            }
            stream.remote_closed = true;
            match &stream.state {
                StreamState::Reading(..) => self.request_read(id, false),
                StreamState::Streaming(cell, _) => cell.end_recv(Ok(())),
                StreamState::Running(_) => {}
            }
            return;
        }
        if id <= self.last_stream {
            // Headers of a closed stream: decoded (the table stays in
            // step), otherwise ignored.
            return;
        }
        self.last_stream = id;
        if self.going_away || self.streams.len() >= self.max_streams {
            if !self.going_away {
                self.shared
                    .limit_counters
                    .refused_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            frame::put_rst(&mut self.out, id, Reason::RefusedStream);
            return;
        }
        self.open.info().request();
        self.streams.insert(
            id,
            Stream {
                send_window: i64::from(self.peer_window),
                recv_window: i64::from(STREAM_WINDOW),
                recv_unacked: 0,
                held: 0,
                remote_closed: end_stream,
                waits: 0,
                seen: 0,
                state: StreamState::Running(None),
                blocked: None,
            },
        );
        // The first stream's credential decides for the whole connection;
        // a connection that failed is answered on every stream it opened,
        // and closed (as baidu_std closes one).
        let verdict = self.admission.get_or_insert_with(|| {
            authenticate(
                self.shared.authenticator.as_deref(),
                head.authorization.as_deref().unwrap_or_default(),
                self.peer,
            )
        });
        if let Err(status) = verdict {
            let status = status.clone();
            self.refuse(id, &status);
            if !self.refused {
                self.refused = true;
                self.refused_at_first = true;
            }
            self.go_away();
            return;
        }
        if too_large {
            let max = self.shared.conn_limits.max_header_size;
            return self.refuse(
                id,
                &Status::resource_exhausted(format!(
                    "the request's headers are larger than the server's maximum of {max} bytes"
                )),
            );
        }
        let checked = match check(&mut head) {
            Ok(checked) => checked,
            Err(status) => return self.refuse(id, &status),
        };
        let (service, method) = route(&head.path).unwrap_or_default();
        let streaming = self
            .shared
            .dispatcher
            .table()
            .lookup(service, method)
            .is_ok_and(|route| route.method.kind != MethodKind::Unary);
        if streaming {
            return self.start_streaming(id, head, checked, end_stream);
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.state = StreamState::Reading(head, checked, BytesMut::new());
        }
        if end_stream {
            self.request_read(id, false);
        }
    }

    /// Answers a stream the server refuses before its handler runs.
    fn refuse(&mut self, id: u32, status: &Status) {
        self.shared.dispatcher.count_protocol_error();
        self.trailers_only(id, status, &[]);
    }

    /// The request of a unary call is whole (or over the maximum): run it,
    /// first poll inline.
    fn request_read(&mut self, id: u32, over: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let StreamState::Reading(head, checked, buf) =
            std::mem::replace(&mut stream.state, StreamState::Running(None))
        else {
            return;
        };
        let max = self.shared.grpc_max_message_size;
        let message = if over {
            Err(wire::message_error(
                keel_wire::grpc::MessageError::TooLarge {
                    len: buf.len(),
                    max,
                },
                Code::Internal,
            ))
        } else {
            Ok(buf.freeze())
        };
        let mut call = FutureBox::new(run_unary(
            head,
            checked,
            message,
            self.shared.clone(),
            self.peer,
        ));
        let noop = &mut TaskContext::from_waker(Waker::noop());
        match Pin::new(&mut call).poll(noop) {
            Poll::Ready(answer) => self.on_answer(id, Some(answer)),
            Poll::Pending => {
                let abort = self.calls.spawn(async move { (id, Some(call.await)) });
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.state = StreamState::Running(Some(abort));
                }
            }
        }
    }

    fn start_streaming(&mut self, id: u32, head: PooledHead, checked: Checked, end: bool) {
        let cell = Cell::new(id, self.signal.clone());
        if end {
            cell.end_recv(Ok(()));
        }
        let max = self.shared.grpc_max_message_size;
        let incoming = Incoming::server_cell(cell.clone(), max, checked.encoding, checked.deadline);
        let outgoing = Outgoing::server_cell(cell.clone(), checked.compress);
        let shared = self.shared.clone();
        let peer = self.peer;
        let batching = cell.clone();
        let abort = self.calls.spawn(async move {
            let stream = Box::new(ServerStream::new(incoming, outgoing));
            let mut run = std::pin::pin!(run_streaming(head, checked, stream, &shared, peer));
            // What the handler queues in a poll goes to the connection at
            // the poll's end (see `Cell::batched`).
            std::future::poll_fn(|cx| batching.batched(|| run.as_mut().poll(cx))).await;
            (id, None)
        });
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.state = StreamState::Streaming(cell, Some(abort));
        }
    }

    /// A unary call's answer (from its first poll, or its task).
    fn on_answer(&mut self, id: u32, answer: Option<(Answer, Option<Compression>)>) {
        let Some((mut answer, compress)) = answer else {
            return;
        };
        if !self.streams.contains_key(&id) {
            // Reset by the client meanwhile.
            answer.finish_span();
            return;
        }
        let result = std::mem::replace(&mut answer.result, Ok(()));
        let mut headers = None;
        let mut trailers = Trailers::Ok;
        let sealed = result.and_then(|()| {
            if !answer.metadata.is_empty() || !answer.trailers.is_empty() {
                let mut map = HeaderMap::new();
                wire::metadata_into(&answer.metadata, &mut map, Code::EINTERNAL)?;
                headers = Some(map);
                let mut map = HeaderMap::new();
                wire::metadata_into(&answer.trailers, &mut map, Code::EINTERNAL)?;
                trailers = Trailers::Map(map);
            }
            // Uncompressed, it is copied from the answer's buffer (the
            // thread's, reused) straight into `out` when the windows take
            // it whole (see `send_answer`).
            if compress.is_none() {
                return Ok(None);
            }
            wire::seal(std::mem::take(&mut answer.body), compress).map(Some)
        });
        match sealed {
            Err(status) => {
                let metadata = [&answer.metadata, &answer.trailers];
                self.trailers_only(id, &status, &metadata);
            }
            Ok(sealed) => {
                self.response_headers(id, headers.as_ref(), compress);
                match sealed {
                    Some(message) => self.send_data(id, message, Some(trailers), false),
                    None => self.send_answer(id, std::mem::take(&mut answer.body), trailers),
                }
            }
        }
        answer.finish_span();
    }

    /// Sends an uncompressed answer and its trailers: from its buffer
    /// straight into `out` when the windows take it whole (the buffer then
    /// goes back to the thread), else as [`send_data`](Self::send_data)
    /// does.
    fn send_answer(&mut self, id: u32, mut body: BytesMut, trailers: Trailers) {
        wire::seal_in_place(&mut body);
        let sent = self.put_within_window(id, &body, None);
        let rest = if sent == body.len() {
            wire::give_back_answer_buffer(body);
            Bytes::new()
        } else {
            // Advanced past, not split: no shared header to allocate.
            let mut rest = body.freeze();
            rest.advance(sent);
            rest
        };
        self.send_data(id, rest, Some(trailers), false);
    }

    /// Writes as much of `data` on stream `id` as its and the connection's
    /// windows allow into `out`; how much that was. `shared` is `data`
    /// itself when it is held as shared [`Bytes`]: its frames of at least
    /// [`SPLICE_MIN`] bytes are then spliced rather than copied.
    fn put_within_window(&mut self, id: u32, data: &[u8], shared: Option<&Bytes>) -> usize {
        let Some(stream) = self.streams.get_mut(&id) else {
            return 0;
        };
        let room = usize::try_from(stream.send_window.min(self.send_window)).unwrap_or(0);
        let n = data.len().min(room);
        if n == 0 {
            return 0;
        }
        let sent = i64::try_from(n).unwrap_or(i64::MAX);
        stream.send_window -= sent;
        self.send_window -= sent;
        let splices = &mut self.splices;
        frame::put_data_with(
            &mut self.out,
            id,
            n,
            self.peer_max_frame,
            false,
            |out, range| match shared {
                Some(shared) if range.len() >= SPLICE_MIN => splices.push(out, shared.slice(range)),
                _ => out.extend_from_slice(&data[range]),
            },
        );
        n
    }

    /// HEADERS opening a unary call's response.
    fn response_headers(
        &mut self,
        id: u32,
        metadata: Option<&HeaderMap>,
        compress: Option<Compression>,
    ) {
        let encoding = compress.and_then(wire::encoding_name);
        let base = [
            (&b":status"[..], &b"200"[..], Indexing::Yes),
            (
                b"content-type",
                wire::CONTENT_TYPE_TEXT.as_bytes(),
                Indexing::Yes,
            ),
            (
                b"grpc-accept-encoding",
                wire::ACCEPT_ENCODING_TEXT.as_bytes(),
                Indexing::Yes,
            ),
        ];
        let encoding = encoding
            .as_ref()
            .map(|name| (&b"grpc-encoding"[..], name.as_bytes(), Indexing::Yes));
        let fields = base
            .into_iter()
            .chain(encoding)
            .chain(metadata.into_iter().flat_map(map_fields));
        self.block.clear();
        self.encoder.encode(fields, &mut self.block);
        frame::put_headers(&mut self.out, id, &self.block, self.peer_max_frame, false);
    }

    /// Ends stream `id` with a trailers-only response carrying `status` and
    /// whatever response metadata the handler set.
    fn trailers_only(&mut self, id: u32, status: &Status, metadata: &[&Metadata]) {
        let mut map = HeaderMap::new();
        map.insert(http::header::CONTENT_TYPE, wire::CONTENT_TYPE);
        map.insert(wire::GRPC_ACCEPT_ENCODING, wire::ACCEPT_ENCODING);
        for metadata in metadata {
            let mut extra = HeaderMap::new();
            if wire::metadata_into(metadata, &mut extra, Code::EINTERNAL).is_ok() {
                map.extend(extra);
            }
        }
        wire::status_into(status, &mut map);
        self.end_with_headers(id, &map, true);
    }

    /// Writes the HEADERS that end stream `id` (`:status` first when they
    /// are the whole response), then forgets the stream.
    fn end_with_headers(&mut self, id: u32, map: &HeaderMap, with_status: bool) {
        let status = with_status.then_some((&b":status"[..], &b"200"[..], Indexing::Yes));
        let fields = status.into_iter().chain(map_fields(map));
        self.block.clear();
        self.encoder.encode(fields, &mut self.block);
        frame::put_headers(&mut self.out, id, &self.block, self.peer_max_frame, true);
        self.closed_locally(id);
    }

    /// Writes trailers, ending stream `id`.
    fn end_with_trailers(&mut self, id: u32, trailers: Trailers) {
        match trailers {
            Trailers::Ok => {
                let fields = [(&b"grpc-status"[..], &b"0"[..], Indexing::Yes)];
                self.block.clear();
                self.encoder.encode(fields, &mut self.block);
                frame::put_headers(&mut self.out, id, &self.block, self.peer_max_frame, true);
                self.closed_locally(id);
            }
            Trailers::Map(mut map) => {
                if !map.contains_key(wire::GRPC_STATUS) {
                    map.insert(wire::GRPC_STATUS, http::HeaderValue::from_static("0"));
                }
                self.end_with_headers(id, &map, false);
            }
        }
    }

    /// Our side of stream `id` ended: forget it, resetting it (NO_ERROR)
    /// when the client is still sending (RFC 9113, section 8.1).
    fn closed_locally(&mut self, id: u32) {
        if let Some(stream) = self.streams.remove(&id) {
            if !stream.remote_closed {
                frame::put_rst(&mut self.out, id, Reason::NoError);
            }
            self.recv_unacked += stream.held;
            if let StreamState::Streaming(cell, _) = &stream.state {
                cell.end_recv(Err(Status::new(
                    Code::Cancelled,
                    "the stream is closed: the server ended it",
                )));
            }
        }
    }

    /// Sends `data` on stream `id` as the windows allow, then `trailers`;
    /// what does not fit waits for WINDOW_UPDATE.
    fn send_data(&mut self, id: u32, mut data: Bytes, trailers: Option<Trailers>, from_cell: bool) {
        let n = self.put_within_window(id, &data, Some(&data));
        data.advance(n);
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if !data.is_empty() {
            stream.blocked = Some(Box::new(Blocked {
                data,
                trailers,
                from_cell,
            }));
            self.blocked.push(id);
            return;
        }
        stream.blocked = None;
        if let Some(trailers) = trailers {
            self.end_with_trailers(id, trailers);
        } else if from_cell {
            // The handler may have queued more meanwhile.
            self.dirty.push(id);
            self.signal.notify.notify_one();
        }
    }

    /// Streams that waited for window, now that it grew.
    fn unblock(&mut self) {
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.sort_unstable();
        blocked.dedup();
        for &id in &blocked {
            if self.send_window <= 0 {
                break;
            }
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            if stream.send_window <= 0 {
                continue;
            }
            if let Some(b) = stream.blocked.take() {
                let Blocked {
                    data,
                    trailers,
                    from_cell,
                } = *b;
                self.send_data(id, data, trailers, from_cell);
            }
        }
        blocked.retain(|id| self.streams.get(id).is_some_and(|s| s.blocked.is_some()));
        blocked.append(&mut self.blocked);
        blocked.sort_unstable();
        blocked.dedup();
        self.blocked = blocked;
    }

    /// What streaming handlers left in their cells.
    fn serve_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.signal.take(&mut dirty);
        for &id in &dirty {
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let StreamState::Streaming(cell, _) = &stream.state else {
                continue;
            };
            let cell = cell.clone();
            let room = if stream.blocked.is_some() {
                0
            } else {
                usize::try_from(stream.send_window.min(self.send_window)).unwrap_or(0)
            };
            let work = cell.work(room, stream.waits >= SMALL_WAITS);
            if let Some(len) = work.small {
                // Growing resets the count: a handler still sending keeps
                // its batch open.
                stream.waits = if len > stream.seen {
                    0
                } else {
                    stream.waits + 1
                };
                stream.seen = len;
                self.deferred.push(id);
            } else {
                stream.waits = 0;
                stream.seen = 0;
            }
            let taken = u32::try_from(work.unacked).unwrap_or(u32::MAX);
            stream.recv_unacked += taken;
            stream.held -= taken.min(stream.held);
            give_back_window(&mut self.out, id, stream);
            self.recv_unacked += taken;
            if work.reset {
                frame::put_rst(&mut self.out, id, Reason::Cancel);
                if let Some(stream) = self.streams.remove(&id) {
                    self.recv_unacked += stream.held;
                }
                continue;
            }
            if let Some(headers) = &work.headers {
                self.response_headers_map(id, headers);
            }
            let trailers = work.trailers.map(Trailers::Map);
            if work.trailers_only {
                if let Some(Trailers::Map(map)) = &trailers {
                    self.end_with_headers(id, map, true);
                }
                continue;
            }
            if !work.data.is_empty() || trailers.is_some() {
                self.send_data(id, work.data, trailers, true);
            } else if work.more
                && work.small.is_none()
                && let Some(stream) = self.streams.get_mut(&id)
                && stream.blocked.is_none()
            {
                // Queued, but no window: wait for WINDOW_UPDATE.
                stream.blocked = Some(Box::new(Blocked {
                    data: Bytes::new(),
                    trailers: None,
                    from_cell: true,
                }));
                self.blocked.push(id);
            }
        }
        dirty.clear();
        if self.dirty.is_empty() && dirty.capacity() <= 64 {
            self.dirty = dirty;
        }
    }

    /// Response headers a streaming handler's cell asked for.
    fn response_headers_map(&mut self, id: u32, map: &HeaderMap) {
        let status = (&b":status"[..], &b"200"[..], Indexing::Yes);
        let fields = std::iter::once(status).chain(map_fields(map));
        self.block.clear();
        self.encoder.encode(fields, &mut self.block);
        frame::put_headers(&mut self.out, id, &self.block, self.peer_max_frame, false);
    }

    /// The connection's WINDOW_UPDATE for what was consumed, once half its
    /// window is (a stream's goes where it consumes, see
    /// [`give_back_window`]).
    fn window_updates(&mut self) {
        if self.recv_unacked >= CONNECTION_WINDOW / 2 {
            frame::put_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    /// Whether anything is above the idle footprint (the shrink timer
    /// should run).
    fn holds_more_than_idle(&self) -> bool {
        self.out.capacity() > 0
            || self.splices.holds()
            || self.block.capacity() > 0
            || self.blocks.capacity() > 0
            || self.streams.capacity() > 0
            || self.dirty.capacity() > 0
            || self.deferred.capacity() > 0
            || self.blocked.capacity() > 0
    }

    /// Quiet for a moment: back to the idle footprint (R7). Whatever is in
    /// use is kept.
    fn shrink(&mut self) {
        if self.out.is_empty() {
            // Nothing is spliced among no frames.
            self.out = BytesMut::new();
            self.splices = Splices::default();
        }
        self.block = BytesMut::new();
        self.blocks.shrink();
        self.streams.shrink_to_fit();
        self.dirty = Vec::new();
        if self.deferred.is_empty() {
            self.deferred = Vec::new();
        }
        for stream in self.streams.values() {
            if let StreamState::Streaming(cell, _) = &stream.state {
                cell.shrink();
            }
        }
        // Only streams still waiting for window stay listed.
        let streams = &self.streams;
        self.blocked
            .retain(|id| streams.get(id).is_some_and(|s| s.blocked.is_some()));
        self.blocked.shrink_to_fit();
        self.decoder.shrink();
    }
}

/// A stream's WINDOW_UPDATE once half its window was consumed (and the
/// client may still send).
fn give_back_window(out: &mut BytesMut, id: u32, stream: &mut Stream) {
    if stream.recv_unacked >= STREAM_WINDOW / 2 && !stream.remote_closed {
        frame::put_window_update(out, id, stream.recv_unacked);
        stream.recv_window += i64::from(stream.recv_unacked);
        stream.recv_unacked = 0;
    }
}

/// Checks a stream's head, in the order gRPC servers check it.
fn check(head: &mut CallHead) -> Result<Checked, Status> {
    route(&head.path)?;
    if !head.content_type {
        return Err(Status::new(
            Code::Unknown,
            "content-type is not application/grpc",
        ));
    }
    let encoding = match head.encoding.take() {
        None => None,
        Some(Ok(encoding)) => encoding,
        Some(Err(name)) => {
            return Err(Status::unimplemented(format!(
                "grpc-encoding {name} is not supported (gzip, deflate, identity are)"
            )));
        }
    };
    let deadline = match head.timeout.take() {
        None => None,
        Some(Ok(timeout)) => Some(Instant::now() + timeout),
        Some(Err(value)) => {
            return Err(Status::new(
                Code::Internal,
                format!("grpc-timeout {value:?} is malformed"),
            ));
        }
    };
    Ok(Checked {
        encoding,
        compress: encoding.filter(|&kind| head.accept.takes(kind)),
        accept: head.accept,
        deadline,
    })
}

/// The call a stream's head asks for, for the dispatcher.
fn request<'a>(
    head: &'a mut CallHead,
    checked: Checked,
    peer: SocketAddr,
    payload: Bytes,
    stream: Option<Box<ServerStream>>,
) -> Request<'a> {
    let (service, method) = route(&head.path).unwrap_or_default();
    Request {
        service,
        method,
        payload,
        stream,
        attachment: Bytes::new(),
        metadata: std::mem::take(&mut head.metadata),
        compression: checked.encoding.unwrap_or(Compression::None),
        peer: Some(peer),
        log_id: 0,
        deadline: checked.deadline,
        trace: head.trace,
        protocol: "grpc",
    }
}

/// Runs a unary call whose request arrived whole: the answer, and how to
/// compress it.
async fn run_unary(
    mut head: PooledHead,
    checked: Checked,
    message: Result<Bytes, Status>,
    shared: Arc<ServerCore>,
    peer: SocketAddr,
) -> (Answer, Option<Compression>) {
    let max = shared.grpc_max_message_size;
    let payload = match message.and_then(|whole| wire::unary_message(whole, max, Code::Internal)) {
        Ok((false, payload)) => Ok(payload),
        Ok((true, payload)) => match checked.encoding {
            None => Err(Status::new(
                Code::Internal,
                "a compressed message on a stream with no grpc-encoding",
            )),
            Some(kind) => {
                // A message that may inflate a lot goes on in a task of
                // its own, so the connection's other streams go on.
                if crate::compression::inflates_large(kind.as_i32(), payload.len(), max) {
                    tokio::task::yield_now().await;
                }
                crate::compression::decompress(kind.as_i32(), payload, max, Code::Internal)
            }
        },
        Err(status) => Err(status),
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(status) => {
            shared.dispatcher.count_protocol_error();
            return (Answer::failed(status), None);
        }
    };
    let request = request(&mut head, checked, peer, payload, None);
    match shared.dispatcher.start(request, wire::answer_buffer()) {
        Ok(running) => {
            let answer = running.await;
            let compress = checked.response(answer.compression);
            (answer, compress)
        }
        Err(refused) => (Answer::failed(refused.status), None),
    }
}

/// Runs a streaming call: its handler reads and sends through `stream`,
/// which ends with its status.
async fn run_streaming(
    mut head: PooledHead,
    checked: Checked,
    stream: Box<ServerStream>,
    shared: &Arc<ServerCore>,
    peer: SocketAddr,
) {
    let request = request(&mut head, checked, peer, Bytes::new(), Some(stream));
    let answer = match shared.dispatcher.start(request, BytesMut::new()) {
        Ok(running) => running.await,
        Err(refused) => {
            if let Some(stream) = refused.stream {
                stream.finish(&Err(refused.status), &Metadata::new());
            }
            return;
        }
    };
    let Answer {
        result,
        mut metadata,
        trailers,
        stream,
        mut span,
        ..
    } = answer;
    metadata.extend_from(&trailers);
    if let Some(stream) = stream {
        stream.finish(&result, &metadata);
    }
    if span.is_sampled() {
        span.mark(crate::rpcz::Mark::Sent);
        let code = result.as_ref().err().map_or(0, |e| e.code().value());
        std::mem::take(&mut span).finish(code);
    }
}

/// The fields of a header map, for the encoder (metadata never enters its
/// table: values change from call to call).
fn map_fields(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8], Indexing)> {
    map.iter().map(|(name, value)| {
        let indexing = if value.is_sensitive() {
            Indexing::Never
        } else if name == wire::GRPC_STATUS
            || name == wire::GRPC_ENCODING
            || name == http::header::CONTENT_TYPE
            || name == wire::GRPC_ACCEPT_ENCODING
        {
            Indexing::Yes
        } else {
            Indexing::No
        };
        (name.as_str().as_bytes(), value.as_bytes(), indexing)
    })
}

/// Why a frame over `max` bytes ends a connection.
pub(crate) fn too_large(len: usize, max: u32) -> String {
    format!("a frame of {len} bytes, over the {max} allowed")
}

/// `(service, method)` of a gRPC path `/package.Service/Method`.
pub(crate) fn route(path: &str) -> Result<(&str, &str), Status> {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        .ok_or_else(|| Status::unimplemented(format!("{path:?} is not a gRPC method path")))
}

impl CallHead {
    /// One header field of the request.
    fn field(&mut self, name: &[u8], value: &[u8], want_credential: bool) {
        match name {
            b":path" => {
                self.path.clear();
                self.path.push_str(&String::from_utf8_lossy(value));
            }
            b"content-type" => self.content_type = value.starts_with(b"application/grpc"),
            b"grpc-encoding" => self.encoding = Some(wire::encoding_named(Some(value))),
            b"grpc-accept-encoding" => {
                for name in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    match name {
                        b"gzip" => self.accept.gzip = true,
                        b"deflate" => self.accept.deflate = true,
                        _ => {}
                    }
                }
            }
            b"grpc-timeout" => {
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(keel_wire::grpc::parse_timeout);
                self.timeout = Some(
                    parsed
                        .map(|t| t.min(Duration::from_secs(100 * 365 * 86_400)))
                        .ok_or_else(|| String::from_utf8_lossy(value).into_owned()),
                );
            }
            b"traceparent" => {
                self.trace = std::str::from_utf8(value)
                    .ok()
                    .and_then(wire::parse_traceparent);
            }
            b"authorization" if want_credential => self.authorization = Some(value.to_vec()),
            _ if name.first() == Some(&b':') => {}
            _ => {
                if let (Ok(name), Ok(value)) =
                    (std::str::from_utf8(name), std::str::from_utf8(value))
                    && !wire::is_reserved(name)
                    && value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                {
                    self.metadata.insert(name, value);
                }
            }
        }
    }
}

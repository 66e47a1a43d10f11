//! One server connection speaking baidu_std.
//!
//! A connection is one task. It reads whatever bytes are available, cuts
//! every complete frame out of them, and dispatches each call:
//!
//! ```text
//!   read ─► frames ─► lookup ─► limits ─► handler future ─► poll once, inline
//!                                                   │ ready: encode into `out`
//!                                                   │ pending: spawn it; its
//!                                                   ▼ result comes back on `done`
//!   write `out` once per batch (responses ready together share one write)
//! ```
//!
//! Most handlers (echo, lookups) finish on their first poll, so they cost no
//! task, no channel and no wakeup; one read of many pipelined requests is
//! answered by one write. Calls that wait (I/O, downstream RPCs) run as their
//! own tasks and may complete out of order; responses carry the request's
//! correlation id, so order does not matter (one connection multiplexes many
//! calls).
//!
//! A call that carries `timeout_ms` is stopped when that deadline passes:
//! the client no longer waits for it.
//!
//! A frame that cannot be parsed is answered when its correlation id is
//! known, and the connection is then closed: framing is lost or the peer is
//! not speaking baidu_std. Other connections are not affected.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::{Bytes, BytesMut};
use keel_wire::CompressType;
use keel_wire::baidu_std::{MetaView, RawFrame, decode_raw_frame, encode_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::context::Context;
use crate::method::MethodDescriptor;
use crate::rpcz::{Mark, SpanHandle};
use crate::server::builder::Shared;
use crate::server::limit::Permit;
use crate::server::service::Service;
use crate::status::{Code, Status};

/// Room offered to each read: small for a quiet connection (an idle
/// connection should cost little), doubled while reads fill it.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;
/// Buffers larger than this are given back once empty.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Response buffers kept for reuse per connection, and the largest kept.
const SCRATCH_KEPT: usize = 4;
const SCRATCH_MAX: usize = 4 * 1024;
/// Encoded answers waiting to be written beyond which reading pauses.
const MAX_QUEUED_OUT: usize = 4 * 1024 * 1024;

pub(crate) struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    open: OpenGuard,
}

/// A finished call, ready to be written.
struct Done {
    correlation_id: i64,
    compress: i32,
    result: Result<(), Status>,
    /// The encoded response message (reused buffer).
    body: BytesMut,
    attachment: Bytes,
    /// The call's span when sampled: marked sent and finished once the
    /// answer is framed for writing.
    span: SpanHandle,
}

type CallFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Counts a connection as open from accept until its task ends however it
/// ends (including being aborted before it first ran, or at the end of a
/// graceful shutdown).
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> OpenGuard {
        shared.stats.connections.fetch_add(1, Ordering::AcqRel);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-connection state the frame handler works on.
struct State {
    peer: SocketAddr,
    shared: Arc<Shared>,
    out: BytesMut,
    scratch: Vec<BytesMut>,
    /// Where spawned calls send their result; made on the first call that
    /// waits (most connections never need it).
    done_tx: Option<mpsc::UnboundedSender<Done>>,
    /// The receiving end of a channel just made, for the read loop to take.
    new_done_rx: Option<mpsc::UnboundedReceiver<Done>>,
    /// Calls running as their own tasks.
    spawned: usize,
    draining: bool,
    /// Stop reading: framing is lost or the peer misbehaved.
    broken: bool,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> Connection {
        Connection {
            stream,
            peer,
            open: OpenGuard::new(shared.clone()),
            shared,
            shutdown,
        }
    }

    pub(crate) async fn run(self) {
        let Connection {
            mut stream,
            peer,
            shared,
            mut shutdown,
            open: _open,
        } = self;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.split();
        let mut done_rx: Option<mpsc::UnboundedReceiver<Done>> = None;
        let mut st = State {
            peer,
            draining: shared.draining.load(Ordering::Acquire),
            shared,
            out: BytesMut::new(),
            scratch: Vec::new(),
            done_tx: None,
            new_done_rx: None,
            spawned: 0,
            broken: false,
        };
        let mut inbuf = BytesMut::new();
        let mut read_size = READ_MIN;
        // Responses being written (from `written` on) while `st.out`
        // collects the next ones: reading goes on during a write, so a
        // client that sends while it receives cannot deadlock us.
        let mut writing = BytesMut::new();
        let mut written = 0;
        let mut eof = false;
        loop {
            // Every complete frame in the buffer.
            while !st.broken {
                match decode_raw_frame(&mut inbuf, &st.shared.wire_limits) {
                    Ok(Some(frame)) => st.on_frame(frame),
                    Ok(None) => break,
                    Err(e) => st.on_bad_frame(&e),
                }
            }
            if let Some(rx) = st.new_done_rx.take() {
                done_rx = Some(rx);
            }
            // Calls that finished on their own tasks meanwhile.
            while let Some(Ok(done)) = done_rx.as_mut().map(|rx| rx.try_recv()) {
                st.spawned -= 1;
                st.write_done(done);
            }
            if written == writing.len() && !st.out.is_empty() {
                writing.clear();
                written = 0;
                std::mem::swap(&mut st.out, &mut writing);
                if st.out.capacity() > KEEP_CAPACITY {
                    st.out = BytesMut::new();
                }
            }
            let flushed = written == writing.len();
            // Framing lost or the peer closed: answer what is ready, then
            // close; calls still running are cancelled with the connection
            // (nobody can read their answers). Draining: wait for them.
            let closing = st.broken || eof;
            if flushed && (closing || (st.draining && st.spawned == 0)) {
                let _ = wr.shutdown().await;
                return;
            }
            // A connection that went quiet after a burst gives the big
            // buffers back.
            if inbuf.is_empty() && inbuf.capacity() > 4 * read_size {
                inbuf = BytesMut::new();
                st.scratch.clear();
            }
            if flushed {
                writing.clear();
                written = 0;
                if writing.capacity() > 4 * read_size {
                    writing = BytesMut::new();
                }
            }
            inbuf.reserve(read_size);
            let room = inbuf.capacity() - inbuf.len();
            // Stop reading while answers pile up unread (backpressure).
            let may_read = !closing && st.out.len() < MAX_QUEUED_OUT;
            tokio::select! {
                biased;
                Some(done) = recv_done(&mut done_rx), if st.spawned > 0 && !closing => {
                    st.spawned -= 1;
                    st.write_done(done);
                }
                n = wr.write(&writing[written..]), if !flushed => match n {
                    Ok(n) if n > 0 => written += n,
                    _ => return,
                },
                read = rd.read_buf(&mut inbuf), if may_read => match read {
                    Ok(0) => eof = true,
                    // A read that filled the room asks for more next time.
                    Ok(n) if n >= room => read_size = (read_size * 2).min(READ_MAX),
                    Ok(n) if n < room / 4 => read_size = (read_size / 2).max(READ_MIN),
                    Ok(_) => {}
                    Err(_) => return,
                },
                changed = shutdown.changed(), if !st.draining => {
                    let _ = changed;
                    st.draining = true;
                }
                else => return,
            }
        }
    }
}

impl State {
    fn on_frame(&mut self, frame: RawFrame) {
        let meta = match frame.meta() {
            Ok(meta) => meta,
            Err(e) => return self.on_bad_frame(&e),
        };
        let cid = meta.correlation_id;
        let Some(request) = meta.request else {
            // A response or a stream frame sent to a server: not a call.
            self.error(cid, Code::EREQUEST, "frame carries no request meta");
            self.broken = true;
            return;
        };
        if self.draining {
            return self.error(cid, Code::ELOGOFF, "server is shutting down");
        }
        let (method, service, slot) = match self
            .shared
            .table
            .lookup(request.service_name, request.method_name)
        {
            Ok(route) => (route.method, route.service.clone(), route.slot),
            Err(status) => return self.error_status(cid, &status),
        };
        let (payload, attachment) = match frame.split(&meta) {
            Ok(parts) => parts,
            Err(e) => return self.error(cid, Code::EREQUEST, &e.to_string()),
        };
        let payload = match decompress(&meta, payload, &self.shared.wire_limits) {
            Ok(p) => p,
            Err(status) => return self.error_status(cid, &status),
        };
        let permit = match self.shared.limits.acquire(slot) {
            Ok(p) => p,
            Err(which) => {
                let text = format!("concurrency limit of {which} reached calling {method}");
                return self.error(cid, Code::ELIMIT, &text);
            }
        };
        let span = crate::rpcz::tracer().server(
            method.path,
            crate::rpcz::incoming(request.trace_id, request.span_id, request.parent_span_id),
            std::time::Instant::now(),
        );
        if span.is_sampled() {
            span.set_peer(self.peer);
            span.set_protocol("baidu_std");
            span.set_request_size(payload.len() as u64);
        }
        let mut ctx = Context::new(method)
            .with_peer(self.peer)
            .with_log_id(request.log_id as u64)
            .with_attachment(attachment);
        if let Some(ms) = request.timeout_ms.filter(|&ms| ms > 0) {
            ctx = ctx.with_deadline(
                tokio::time::Instant::now() + std::time::Duration::from_millis(ms as u64),
            );
        }
        let body = self.scratch.pop().unwrap_or_default();
        let mut call: CallFuture = Box::pin(run_call(
            service,
            method,
            ctx,
            payload,
            body,
            permit,
            span,
            cid,
            meta.compress_type,
        ));
        // First poll inline: handlers that do not wait finish here, with no
        // task and no wakeup. The no-op waker is fine: a pending call is
        // spawned and polled again at once with a real one.
        match call
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(done) => self.write_done(done),
            Poll::Pending => {
                self.spawned += 1;
                let tx = match &self.done_tx {
                    Some(tx) => tx.clone(),
                    None => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.new_done_rx = Some(rx);
                        self.done_tx.insert(tx).clone()
                    }
                };
                tokio::spawn(async move {
                    // When the connection goes away nobody can receive the
                    // answer: the call is cancelled (rule R5).
                    tokio::select! {
                        done = &mut call => { let _ = tx.send(done); }
                        _ = tx.closed() => {}
                    }
                });
            }
        }
    }

    /// A frame that could not be cut or parsed. Answer if we know whom to
    /// answer, then stop reading.
    fn on_bad_frame(&mut self, e: &keel_wire::WireError) {
        if let keel_wire::WireError::AttachmentLargerThanPayload { correlation_id, .. } = e {
            self.error(*correlation_id, Code::EREQUEST, &e.to_string());
        }
        self.broken = true;
    }

    fn error_status(&mut self, cid: i64, status: &Status) {
        self.error(cid, status.code(), status.message());
    }

    fn error(&mut self, cid: i64, code: Code, text: &str) {
        let stats = &self.shared.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats.errors.fetch_add(1, Ordering::Relaxed);
        encode_response(&mut self.out, cid, code.value(), text, 0, &[], &[])
            .expect("an error frame without payload is far below the frame size limit");
    }

    fn write_done(&mut self, mut done: Done) {
        match &done.result {
            Ok(()) => {
                self.shared.stats.calls.fetch_add(1, Ordering::Relaxed);
                let written = match compress(done.compress, &done.body) {
                    Ok(Some(compressed)) => encode_response(
                        &mut self.out,
                        done.correlation_id,
                        0,
                        "",
                        done.compress,
                        &compressed,
                        &done.attachment,
                    ),
                    Ok(None) => encode_response(
                        &mut self.out,
                        done.correlation_id,
                        0,
                        "",
                        0,
                        &done.body,
                        &done.attachment,
                    ),
                    Err(status) => {
                        self.error_status(done.correlation_id, &status);
                        Ok(())
                    }
                };
                if let Err(e) = written {
                    let text = format!("response cannot be framed: {e}");
                    self.error(done.correlation_id, Code::ERESPONSE, &text);
                }
            }
            Err(status) => self.error_status(done.correlation_id, status),
        }
        if done.span.is_sampled() {
            done.span.mark(Mark::Sent);
            let status = done.result.as_ref().err().map_or(0, |e| e.code().value());
            std::mem::take(&mut done.span).finish(status);
        }
        if self.scratch.len() < SCRATCH_KEPT && done.body.capacity() <= SCRATCH_MAX {
            done.body.clear();
            self.scratch.push(done.body);
        }
    }
}

/// The next result of a spawned call; never resolves before the channel
/// exists.
async fn recv_done(rx: &mut Option<mpsc::UnboundedReceiver<Done>>) -> Option<Done> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs one admitted call to completion. Owns everything it uses, so it can
/// move to its own task if the handler waits.
#[allow(clippy::too_many_arguments)] // one call's parts, moved in once
async fn run_call(
    service: Arc<dyn Service>,
    method: &'static MethodDescriptor,
    ctx: Context,
    payload: Bytes,
    mut body: BytesMut,
    permit: Permit,
    span: SpanHandle,
    correlation_id: i64,
    compress: i32,
) -> Done {
    let mut call = service.call(method.index, &ctx, payload, &mut body);
    // A handler that panics answers EINTERNAL; the connection and its other
    // calls carry on (the panic is still reported by the panic hook).
    let call = std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(Status::new(
                Code::EINTERNAL,
                format!("the handler of {method} panicked"),
            ))),
        }
    });
    // Past the deadline the client has given up: stop the handler rather
    // than let abandoned calls pile up.
    let deadline = ctx.deadline();
    let bounded = async move {
        match deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(Status::new(
                    Code::ERPCTIMEDOUT,
                    format!("{method} did not finish before the client's deadline"),
                )),
            },
        }
    };
    // A sampled call runs with its span as the task's current span, so
    // client calls the handler makes become its children.
    let (result, span) = if span.is_sampled() {
        span.mark(Mark::HandlerStart);
        let (result, span) = crate::rpcz::scope(span, bounded).await;
        let span = span.unwrap_or_else(SpanHandle::none);
        span.mark(Mark::HandlerEnd);
        span.set_response_size(body.len() as u64);
        (result, span)
    } else {
        (bounded.await, span)
    };
    drop(permit);
    Done {
        correlation_id,
        compress,
        result,
        body,
        attachment: ctx.take_response_attachment(),
        span,
    }
}

fn decompress(
    meta: &MetaView<'_>,
    payload: Bytes,
    limits: &keel_wire::baidu_std::Limits,
) -> Result<Bytes, Status> {
    if meta.compress_type == 0 {
        return Ok(payload);
    }
    let kind = CompressType::try_from(meta.compress_type)
        .map_err(|e| Status::new(Code::EREQUEST, e.to_string()))?;
    keel_wire::decompress(kind, &payload, limits.max_body_size)
        .map_err(|e| Status::new(Code::EREQUEST, e.to_string()))
}

/// Compresses a response body the way the request was compressed (brpc
/// clients that compress can read compressed answers). `None` = as is.
fn compress(kind: i32, body: &[u8]) -> Result<Option<BytesMut>, Status> {
    if kind == 0 {
        return Ok(None);
    }
    let kind = CompressType::try_from(kind).map_err(|e| Status::internal(e.to_string()))?;
    let mut out = BytesMut::new();
    keel_wire::compress(kind, body, &mut out).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Some(out))
}

//! One server connection speaking baidu_std.
//!
//! A connection is one task. It reads whatever bytes are available, cuts
//! every complete frame out of them, and hands each call to the one
//! dispatch path ([`Dispatcher::start`]):
//!
//! ```text
//!   read ─► frames ─► meta, decompress ─► dispatch ─► running call ─► poll once, inline
//!                                                       │ ready: encode into `out`
//!                                                       │ pending: spawn it; its
//!                                                       ▼ answer comes back on `done`
//!   write `out` once per batch (responses ready together share one write)
//! ```
//!
//! Owns: baidu_std framing on the server side (frames in, answers out,
//! compression of both), the connection's buffers, its authentication
//! state, and where waiting calls run. May not touch: routing, limits,
//! handlers, spans' contents or statistics — the dispatcher does those,
//! the same for every protocol.
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
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::{Bytes, BytesMut};
use keel_wire::baidu_std::{
    MetaView, RawFrame, RequestView, ResponseHeader, decode_raw_frame, encode_response,
    encode_response_with,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::tls::Duplex;
use tokio::sync::watch;

use crate::server::done_queue::{DoneReceiver, DoneSender, done_queue};

use crate::busy_poll::BusyPoll;
use crate::compression::{self, Compression};
use crate::conn_buffers::{ReadBuffer, WriteBuffer, give_back_if_empty};
use crate::metadata::{Metadata, REQUEST_ID};
use crate::server::builder::ServerCore;
use crate::server::dispatch::{Answer, Request};
use crate::server::interceptor::authenticate;
use crate::server::sniff::OpenGuard;
use crate::status::{Code, Status};

/// Response buffers kept for reuse per connection, and the largest kept.
const SCRATCH_KEPT: usize = 4;
const SCRATCH_MAX: usize = 4 * 1024;
/// How long a connection stays above its idle footprint after activity.
const IDLE_SHRINK: std::time::Duration = std::time::Duration::from_millis(250);
/// Encoded answers waiting to be written beyond which reading pauses.
const MAX_QUEUED_OUT: usize = 4 * 1024 * 1024;

pub(crate) struct Connection<S = TcpStream> {
    stream: S,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    shutdown: watch::Receiver<bool>,
    open: OpenGuard,
}

/// A finished call, ready to be written.
struct Done {
    correlation_id: i64,
    compress: i32,
    answer: Answer,
}

/// Per-connection state the frame handler works on.
struct ConnectionState {
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    out: BytesMut,
    scratch: Vec<BytesMut>,
    /// Compressed responses are built here (reused).
    packed: BytesMut,
    /// Whether the peer's credential passed the server's authenticator
    /// (always, when it has none).
    authenticated: bool,
    /// Where spawned calls send their result; made on the first call that
    /// waits (most connections never need it).
    done_tx: Option<DoneSender<Done>>,
    /// The receiving end of a channel just made, for the read loop to take.
    new_done_rx: Option<DoneReceiver<Done>>,
    /// Calls running as their own tasks.
    spawned: usize,
    draining: bool,
    /// Stop reading: framing is lost or the peer misbehaved.
    broken: bool,
}

impl<S: Duplex> Connection<S> {
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        shared: Arc<ServerCore>,
        shutdown: watch::Receiver<bool>,
        open: OpenGuard,
    ) -> Connection<S> {
        Connection {
            stream,
            peer,
            open,
            shared,
            shutdown,
        }
    }

    /// Serves the connection; `head` holds the bytes already read from it
    /// (the ones the protocol was told by).
    pub(crate) async fn run(self, head: BytesMut) {
        let Connection {
            mut stream,
            peer,
            shared,
            mut shutdown,
            open,
        } = self;
        let (mut rd, mut wr) = stream.halves();
        let mut done_rx: Option<DoneReceiver<Done>> = None;
        let mut st = ConnectionState {
            peer,
            draining: shared.dispatcher.is_draining(),
            authenticated: shared.authenticator.is_none(),
            shared,
            out: BytesMut::new(),
            scratch: Vec::new(),
            packed: BytesMut::new(),
            done_tx: None,
            new_done_rx: None,
            spawned: 0,
            broken: false,
        };
        let mut inbuf = ReadBuffer::new(head);
        // Responses being written while `st.out` collects the next ones.
        let mut writing = WriteBuffer::default();
        let mut eof = false;
        // Gives back what activity grew once the connection has been quiet
        // a moment (see `quiet`); armed while anything is above its idle
        // size, so a busy connection pays one timer per IDLE_SHRINK.
        let shrink = tokio::time::sleep(IDLE_SHRINK);
        tokio::pin!(shrink);
        let mut shrink_armed = false;
        // Whether anything was read or written since the timer was armed.
        let mut busy = false;
        let mut spin = BusyPoll::new(st.shared.busy_poll);
        loop {
            // Every complete frame in the buffer.
            while !st.broken {
                match decode_raw_frame(&mut inbuf.buf, &st.shared.wire_limits) {
                    Ok(Some(frame)) => {
                        open.info().request();
                        spin.request();
                        st.on_frame(frame);
                    }
                    Ok(None) => break,
                    Err(e) => st.on_bad_frame(&e),
                }
            }
            if let Some(rx) = st.new_done_rx.take() {
                done_rx = Some(rx);
            }
            // Calls that finished on their own tasks meanwhile.
            while let Some(done) = done_rx.as_mut().and_then(DoneReceiver::try_recv) {
                st.spawned -= 1;
                st.write_done(done);
            }
            writing.take(&mut st.out);
            let flushed = writing.flushed();
            open.info().set_in_flight(st.spawned);
            // Framing lost or the peer closed: answer what is ready, then
            // close; calls still running are cancelled with the connection
            // (nobody can read their answers). Draining: wait for them.
            let closing = st.broken || eof;
            if flushed && (closing || (st.draining && st.spawned == 0)) {
                let _ = wr.shutdown().await;
                return;
            }
            // A connection that went quiet after a burst gives the big
            // buffers back (R7).
            if inbuf.prepare() {
                st.scratch.clear();
            }
            writing.settle(inbuf.size());
            // Stop reading while answers pile up unread (backpressure).
            let may_read = !closing && st.out.len() < MAX_QUEUED_OUT;
            if !shrink_armed
                && (inbuf.above_idle()
                    || writing.holds()
                    || st.out.capacity() > 0
                    || st.packed.capacity() > 0
                    || !st.scratch.is_empty()
                    || done_rx.is_some())
            {
                shrink
                    .as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_SHRINK);
                shrink_armed = true;
            }
            // A lone caller's next request: poll for it a moment before
            // sleeping (see `busy_poll`).
            if may_read
                && flushed
                && st.spawned == 0
                && inbuf.buf.is_empty()
                && !st.draining
                && spin.due()
            {
                // Others get their turn (see `busy_poll`); a shutdown
                // notice is taken below, not spun past.
                if spin.yield_first() {
                    tokio::task::yield_now().await;
                }
                if !shutdown.has_changed().unwrap_or(true)
                    && let Some(read) = spin.spin::<S>(&rd, &mut inbuf.buf, || {
                        !shutdown.has_changed().unwrap_or(true)
                    })
                {
                    spin.read();
                    busy = true;
                    match inbuf.filled(read, &open) {
                        Some(end) => eof |= end,
                        None => return,
                    }
                    continue;
                }
            }
            // Nothing to write: the select may wait for the next bytes
            // alone, which it must see (see `busy_poll`).
            if flushed {
                spin.settle::<S>(&rd);
            }
            tokio::select! {
                biased;
                done = recv_done(&mut done_rx), if st.spawned > 0 && !closing => {
                    st.spawned -= 1;
                    st.write_done(done);
                }
                written = wr.write(writing.pending()), if !flushed => {
                    if !writing.wrote(written, &open) {
                        return;
                    }
                    if !writing.flushed() {
                        // The rest waits for room, and a caller that
                        // pipelines may send meanwhile: the wait must see it.
                        spin.settle::<S>(&rd);
                    }
                    busy = true;
                }
                read = inbuf.read(&mut rd), if may_read => {
                    spin.read();
                    busy = true;
                    match inbuf.filled(read, &open) {
                        Some(end) => eof |= end,
                        None => return,
                    }
                }
                changed = shutdown.changed(), if !st.draining => {
                    let _ = changed;
                    st.draining = true;
                }
                () = &mut shrink, if shrink_armed => { if busy {
                    // Still busy: look again later; nothing is given back
                    // while calls keep coming (no allocation churn).
                    busy = false;
                    shrink.as_mut().reset(tokio::time::Instant::now() + IDLE_SHRINK);
                } else {
                    shrink_armed = false;
                    // Quiet for a moment: back to the idle footprint (R7).
                    // Whatever is in use (a partial frame, an unflushed
                    // answer, calls still running) is kept.
                    inbuf.quiet();
                    writing.quiet();
                    give_back_if_empty(&mut st.out);
                    st.packed = BytesMut::new();
                    st.scratch = Vec::new();
                    if st.spawned == 0 {
                        st.done_tx = None;
                        done_rx = None;
                    }
                } }
                else => return,
            }
        }
    }
}

impl ConnectionState {
    fn on_frame(&mut self, frame: RawFrame) {
        let mut meta = match frame.meta() {
            Ok(meta) => meta,
            Err(e) => return self.on_bad_frame(&e),
        };
        let cid = meta.correlation_id;
        let Some(request) = meta.request.take() else {
            // A response or a stream frame sent to a server: not a call.
            self.error(cid, Code::EREQUEST, "frame carries no request meta");
            self.broken = true;
            return;
        };
        if !self.authenticated {
            let verdict = authenticate(
                self.shared.authenticator.as_deref(),
                meta.authentication_data,
                self.peer,
            );
            if let Err(status) = verdict {
                // brpc closes a connection whose credential fails.
                self.error_status(cid, &status);
                self.broken = true;
                return;
            }
            self.authenticated = true;
        }
        if let Some(max) = self.shared.conn_limits.max_calls_per_connection
            && self.spawned >= max
        {
            self.shared
                .limit_counters
                .refused_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.error(
                cid,
                Code::ELIMIT,
                &format!("{max} calls are in flight on this connection, the most allowed"),
            );
        }
        let (payload, attachment) = match frame.split(&meta) {
            Ok(parts) => parts,
            Err(e) => return self.error(cid, Code::EREQUEST, &e.to_string()),
        };
        let limits = &self.shared.wire_limits;
        if compression::inflates_large(meta.compress_type, payload.len(), limits.max_body_size) {
            // Ends the borrows of `frame` before it moves.
            drop((request, meta, payload, attachment));
            return self.spawn_inflating(frame, cid);
        }
        let payload = match compression::decompress(
            meta.compress_type,
            payload,
            limits.max_body_size,
            Code::EREQUEST,
        ) {
            Ok(p) => p,
            Err(status) => return self.error_status(cid, &status),
        };
        let call = call_of(&meta, &request, payload, attachment, self.peer);
        let body = self.scratch.pop().unwrap_or_default();
        let mut running = match self.shared.dispatcher.start(call, body) {
            Ok(running) => running,
            Err(refused) => return self.write_error(cid, &refused.status),
        };
        let compress = meta.compress_type;
        // First poll inline: handlers that do not wait finish here, with no
        // task and no wakeup. The no-op waker is fine: a pending call is
        // spawned and polled again at once with a real one.
        match std::pin::Pin::new(&mut running).poll(&mut TaskContext::from_waker(Waker::noop())) {
            Poll::Ready(answer) => self.write_done(Done {
                correlation_id: cid,
                compress,
                answer,
            }),
            Poll::Pending => {
                self.spawned += 1;
                let tx = self.done_sender();
                tokio::spawn(async move {
                    // When the connection goes away nobody can receive the
                    // answer: the call is cancelled (rule R5).
                    tokio::select! {
                        answer = &mut running => {
                            let _ = tx.send(Done { correlation_id: cid, compress, answer });
                        }
                        _ = tx.closed() => {}
                    }
                });
            }
        }
    }

    /// Where a call running as its own task sends its answer.
    fn done_sender(&mut self) -> DoneSender<Done> {
        match &self.done_tx {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = done_queue();
                self.new_done_rx = Some(rx);
                self.done_tx.insert(tx).clone()
            }
        }
    }

    /// Runs the call of `frame`, whose payload may inflate to a lot, as a
    /// task of its own from decompression on: however long inflating
    /// takes, the connection goes on reading and answering its other
    /// calls meanwhile.
    fn spawn_inflating(&mut self, frame: RawFrame, cid: i64) {
        self.spawned += 1;
        let tx = self.done_sender();
        let shared = self.shared.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            // When the connection goes away nobody can receive the answer:
            // the call is cancelled (rule R5).
            tokio::select! {
                done = inflate_and_run(&shared, peer, &frame, cid) => {
                    let _ = tx.send(done);
                }
                _ = tx.closed() => {}
            }
        });
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

    /// An answer of the connection's own (the dispatcher never saw the
    /// call): counted here.
    fn error(&mut self, cid: i64, code: Code, text: &str) {
        self.shared.dispatcher.count_protocol_error();
        self.write_error(cid, &Status::new(code, text.to_owned()));
    }

    /// Frames an error answer (counted by whoever produced it).
    fn write_error(&mut self, cid: i64, status: &Status) {
        encode_response(
            &mut self.out,
            cid,
            status.code().value(),
            status.message(),
            0,
            &[],
            &[],
        )
        .expect("an error frame without payload is far below the frame size limit");
    }

    fn write_done(&mut self, done: Done) {
        let Done {
            correlation_id: cid,
            compress,
            mut answer,
        } = done;
        if let Err(status) = &answer.result {
            self.write_error(cid, status);
        } else {
            // Compressed as the handler chose, else the way the request
            // was (brpc clients that compress can read compressed answers).
            let kind = answer
                .compression
                .unwrap_or_else(|| Compression::try_from(compress).unwrap_or(Compression::None));
            // No trailers on baidu_std: they travel with the metadata.
            if !answer.trailers.is_empty() {
                let trailers = std::mem::take(&mut answer.trailers);
                answer.metadata.extend_from(&trailers);
            }
            let packed = if kind == Compression::None {
                Ok(&answer.body[..])
            } else {
                self.packed.clear();
                compression::compress(kind, &answer.body, &mut self.packed)
                    .map(|()| &self.packed[..])
            };
            let header = ResponseHeader {
                correlation_id: cid,
                compress_type: kind.as_i32(),
                user_fields: answer.metadata.as_pairs(),
                ..ResponseHeader::default()
            };
            let written = match packed {
                Ok(body) => encode_response_with(&mut self.out, &header, body, &answer.attachment)
                    .map_err(|e| {
                        Status::new(Code::ERESPONSE, format!("response cannot be framed: {e}"))
                    }),
                Err(status) => Err(status),
            };
            if let Err(status) = written {
                self.write_error(cid, &status);
            }
            if self.packed.capacity() > SCRATCH_MAX {
                self.packed = BytesMut::new();
            }
        }
        answer.finish_span();
        let mut body = answer.body;
        if self.scratch.len() < SCRATCH_KEPT && body.capacity() <= SCRATCH_MAX {
            body.clear();
            self.scratch.push(body);
        }
    }
}

/// The call a request frame asks for, its payload decompressed.
fn call_of<'a>(
    meta: &MetaView<'a>,
    request: &'a RequestView<'a>,
    payload: Bytes,
    attachment: Bytes,
    peer: SocketAddr,
) -> Request<'a> {
    let mut metadata: Metadata = if meta.user_fields.is_empty() {
        Metadata::new()
    } else {
        meta.user_fields.iter().collect()
    };
    // brpc clients send `set_request_id()` in its own field: handlers
    // read it as the `x-request-id` metadata entry.
    if !request.request_id.is_empty() && metadata.get(REQUEST_ID).is_none() {
        metadata.insert(REQUEST_ID, &*request.request_id);
    }
    let deadline = request
        .timeout_ms
        .filter(|&ms| ms > 0)
        .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms as u64));
    Request {
        stream: None,
        service: &request.service_name,
        method: &request.method_name,
        payload,
        attachment,
        metadata,
        compression: Compression::try_from(meta.compress_type).unwrap_or(Compression::None),
        peer: Some(peer),
        log_id: request.log_id as u64,
        deadline,
        trace: crate::rpcz::incoming(request.trace_id, request.span_id, request.parent_span_id),
        protocol: "baidu_std",
    }
}

/// Decompresses the payload of `frame` (a request already checked by
/// `on_frame`), then runs its call: the answer to write.
async fn inflate_and_run(
    shared: &Arc<ServerCore>,
    peer: SocketAddr,
    frame: &RawFrame,
    cid: i64,
) -> Done {
    let failed = |status: Status| Done {
        correlation_id: cid,
        compress: 0,
        answer: Answer::failed(status),
    };
    let checked = "checked by on_frame before";
    let (mut meta, (payload, attachment)) = match frame.meta().and_then(|m| {
        let parts = frame.split(&m)?;
        Ok((m, parts))
    }) {
        Ok(parsed) => parsed,
        Err(e) => return failed(Status::new(Code::EREQUEST, format!("{e} ({checked})"))),
    };
    let Some(request) = meta.request.take() else {
        return failed(Status::new(
            Code::EREQUEST,
            format!("no request meta ({checked})"),
        ));
    };
    let compress = meta.compress_type;
    let payload = match compression::decompress(
        compress,
        payload,
        shared.wire_limits.max_body_size,
        Code::EREQUEST,
    ) {
        Ok(p) => p,
        Err(status) => {
            shared.dispatcher.count_protocol_error();
            return failed(status);
        }
    };
    let call = call_of(&meta, &request, payload, attachment, peer);
    match shared.dispatcher.start(call, BytesMut::new()) {
        Ok(running) => Done {
            correlation_id: cid,
            compress,
            answer: running.await,
        },
        Err(refused) => failed(refused.status),
    }
}

/// The next result of a spawned call; never resolves before the channel
/// exists.
async fn recv_done(rx: &mut Option<DoneReceiver<Done>>) -> Done {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

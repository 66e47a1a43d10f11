//! The baidu_std transport: one multiplexed TCP connection to one endpoint
//! (brpc's "single" connection type), reconnected after failures.
//!
//! ```text
//!   call ──lock──► encode frame into `out`, insert in pending ──► notify writer
//!     │                                                            │
//!     ▼                                                            ▼
//!   PendingCall (polls its entry)               connection task: write `out` (all
//!     ▲                                          calls queued meanwhile in one write),
//!     └──────────── entry Done + wake ◄───────── read responses, match correlation id
//! ```
//!
//! Pending calls live in the [`PendingCalls`] table keyed by correlation
//! id; a call that completes, fails, times out, or whose future is dropped
//! leaves it on that path (rule R1). The connection task ends when the
//! transport drops (rule R5).
//!
//! Owns: the client side of baidu_std over one TCP connection: connecting
//! (and reconnecting after a failure), framing requests (meta,
//! compression, attachment, the credential on a connection's first
//! request), the write batching, reading and matching responses by
//! correlation id, and the connection's buffers, shrunk back once it goes
//! quiet (rule R7). May not touch: retries, server choice, the call's
//! deadline as a whole, per-method statistics or interceptors (the layers
//! above: `crate::cluster`, `crate::channel`); nor the pending table's
//! insides (`pending.rs`: a call enters and leaves it only through its
//! API).
//!
//! A server that answers `ELOGOFF` is stopping (draining, as in a
//! graceful restart): its connection is retired at once, like brpc's
//! log-off socket. It takes no new request (those queued for it and not yet
//! taken for writing fail as unwritten, and are retried for free) and ends
//! once the calls it sent are answered, while new calls connect again, to
//! whoever listens on the address now: usually the restarted server.
//!
//! A response is handed to its call as it came, still compressed: the call
//! decompresses it in its own task, so a large (or lying) payload never
//! holds up the connection's other calls. After a connection breaks with
//! no answer, the next one waits (see `reconnect.rs`).
//!
//! One attempt only: [`BaiduStd::try_call`] never retries. Retrying is the
//! channel's job (`crate::channel`), the one retry loop of the code base.
//! A failure says whether the request was written (see
//! `Status::request_unwritten`), which is what the retry loop needs to
//! know.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use keel_pool::FutureBox;
use keel_wire::baidu_std::{
    Limits, RequestHeader, decode_raw_frame, encode_request, salvage_correlation_id,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::pending::{Arrived, CallId, PendingCalls};
use super::reconnect::Reconnect;
use crate::busy_poll::BusyPoll;
use crate::compression::{self, Compression, Scratch};
use crate::metadata::{Metadata, REQUEST_ID};
use crate::status::{Code, Status};
use crate::transport::{Call, EndpointConfig, Reply};

const READ_CHUNK: usize = 8 * 1024;
const READ_MIN_ROOM: usize = 1024;
const KEEP_CAPACITY: usize = 64 * 1024;
/// How long a connection stays above its idle footprint after activity.
const IDLE_SHRINK: Duration = Duration::from_millis(250);
/// Requests queued for one connection and not yet written, in bytes; past
/// it calls fail with EOVERCROWDED (brpc's `socket_max_unwritten_bytes`)
/// instead of growing the queue without bound when the peer stops reading.
const MAX_UNWRITTEN: usize = 64 * 1024 * 1024;
/// A write queue larger than this grows by a quarter, not by doubling.
const GROW_SLOWLY_FROM: usize = 8 * 1024 * 1024;
/// Room [`make_room`] adds for a request's frame header and meta.
const FRAME_SLACK: usize = 64 * 1024;

/// Makes room in the write queue `out` for `adding` more bytes (its frame
/// adds a little more, which the room left covers). A small queue grows
/// as a `BytesMut` does, doubling; past [`GROW_SLOWLY_FROM`], by a quarter
/// more than needed. So a queue held at [`MAX_UNWRITTEN`] by a peer that
/// does not read holds not much more in capacity than in bytes (R8): with
/// doubling, the buffer being written and the queue behind it together
/// held up to 1.5 times the bound.
fn make_room(out: &mut BytesMut, adding: usize) {
    // The frame's header and meta come on top of the message.
    let need = out.len() + adding + FRAME_SLACK;
    if need <= out.capacity() || need <= GROW_SLOWLY_FROM {
        return;
    }
    // A lone request gets its size; a queue, a quarter more.
    let want = if out.is_empty() {
        need
    } else {
        need + need / 4
    };
    // Through a `Vec`, whose exact reserve reallocates in place where the
    // allocator can: a copy would hold the old and the new buffer at once.
    let mut bytes: Vec<u8> = std::mem::take(out).into();
    bytes.reserve_exact(want - bytes.len());
    *out = BytesMut::from(bytes::Bytes::from(bytes));
}

/// Calls one `host:port` over baidu_std.
pub struct BaiduStd {
    conn: Arc<Link>,
    /// Dropping the transport drops this sender, which ends the connection
    /// task (its receiver sees the channel close).
    _alive: watch::Sender<()>,
    alive_rx: watch::Receiver<()>,
    /// TLS, when the channel has it.
    tls: Option<Result<crate::tls::Connector, String>>,
}

impl std::fmt::Debug for BaiduStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaiduStd")
            .field("addr", &self.conn.addr)
            .field("pending", &self.pending_calls())
            .finish()
    }
}

/// The endpoint's connection as calls and the connection task share it:
/// one TCP connection at a time, replaced after failures (each one an
/// "epoch").
struct Link {
    addr: String,
    config: EndpointConfig,
    state: Mutex<LinkState>,
    wake_writer: Notify,
    /// A request is queued and not yet taken for writing (a polling
    /// connection stops for it).
    unsent: AtomicBool,
    /// Callers the last read woke (see [`super::WokenCallers`]).
    woken: super::WokenCallers,
    connect_lock: tokio::sync::Mutex<()>,
    /// When to connect again after failures.
    reconnect: Reconnect,
}

/// What the mutex of a [`Link`] guards.
struct LinkState {
    /// Bumped for every new connection; pending calls remember the epoch they were
    /// sent on, so a failed connection fails exactly its own calls.
    epoch: u64,
    up: bool,
    /// The address the current connection reached (for client spans).
    peer: Option<std::net::SocketAddr>,
    out: BytesMut,
    /// Bytes queued on this connection so far (written or still in `out`):
    /// where the next request begins in the connection's byte stream.
    queued: u64,
    pending: PendingCalls,
    /// Whether this connection's first request (which carries the
    /// credential) is queued.
    credential_sent: bool,
    /// Bytes the writer took from `out` and has not finished writing: they
    /// count against the unwritten-bytes bound like the queue does.
    taken: usize,
    /// When the connection of epoch `.0` will next fail calls whose
    /// deadline passed (no waiting call's deadline is earlier): a call
    /// whose deadline is no earlier needs no timer of its own.
    sweep_at: Option<(u64, Instant)>,
}

impl BaiduStd {
    pub(crate) fn new(addr: String, config: EndpointConfig) -> BaiduStd {
        let (alive, alive_rx) = watch::channel(());
        BaiduStd {
            tls: super::tls_for(&config, &addr),
            conn: Arc::new(Link {
                addr,
                config,
                state: Mutex::new(LinkState {
                    epoch: 0,
                    up: false,
                    peer: None,
                    out: BytesMut::new(),
                    queued: 0,
                    pending: PendingCalls::default(),
                    credential_sent: false,
                    taken: 0,
                    sweep_at: None,
                }),
                wake_writer: Notify::new(),
                unsent: AtomicBool::new(false),
                woken: super::WokenCallers::default(),
                connect_lock: tokio::sync::Mutex::new(()),
                reconnect: Reconnect::default(),
            }),
            _alive: alive,
            alive_rx,
        }
    }

    /// Calls waiting for a response now.
    pub fn pending_calls(&self) -> usize {
        self.conn.lock().pending.len()
    }

    /// Addresses this transport connects to.
    pub fn addr(&self) -> &str {
        &self.conn.addr
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.conn.up_epoch().is_some()
    }

    pub(crate) fn reconnect(&self) -> &Reconnect {
        &self.conn.reconnect
    }

    /// Sends `call` once: no retry after a connection failure (the channel
    /// retries, on another server when it has several).
    ///
    /// A failure before any byte of the request was written (connecting
    /// failed, or the connection was lost first) is `EFAILEDSOCKET` like
    /// any broken connection, and carries an internal mark saying so: the
    /// retry loop retries such a call without spending the retry budget.
    pub async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        // Compression is slow work: do it before taking the lock.
        let scratch = compress_request(call)?;
        let packed = scratch.as_ref().map(|s| &s.packed[..]);
        // The common case takes the lock once: the connection is up, the
        // call is queued on it and registered with this task's waker (the
        // one its `PendingCall` is polled with next, in the same poll).
        let mut queued =
            std::future::poll_fn(|cx| Poll::Ready(self.enqueue(call, None, packed, cx.waker())))
                .await;
        if matches!(queued, Ok(None)) {
            // Connecting is rare and its future large: in a pooled block,
            // so the call's own future stays small.
            queued = match FutureBox::new(self.connect()).await {
                Ok(epoch) => {
                    std::future::poll_fn(|cx| {
                        Poll::Ready(self.enqueue(call, Some(epoch), packed, cx.waker()))
                    })
                    .await
                }
                Err(status) => Err(status),
            };
        }
        if let Some(scratch) = scratch {
            scratch.give_back();
        }
        let (key, kept) = match queued {
            Ok(Some(queued)) => queued,
            Ok(None) => return Err(self.closed()),
            Err(status) => return Err(status),
        };
        call.span.mark(crate::rpcz::Mark::Sent);
        self.conn.wake_writer.notify_one();
        PendingCall {
            conn: &self.conn,
            key,
            registered: true,
            finished: false,
            // The connection fails the entry by the call's deadline.
            kept_deadline: call.kept_deadline.filter(|_| kept),
        }
        .await
    }

    fn closed(&self) -> Status {
        Status::new(
            Code::EFAILEDSOCKET,
            format!("connection to {} closed", self.conn.addr),
        )
        .with_request_unwritten()
    }

    /// Encodes `call` (its payload already compressed into `packed`, if
    /// it asked for compression) into the write queue of connection
    /// `epoch` (or of the one up now), and registers it as pending, to wake
    /// `waker` when answered. `None` when no connection is up (and `epoch`
    /// was not named): connect first.
    fn enqueue(
        &self,
        call: &Call<'_>,
        epoch: Option<u64>,
        packed: Option<&[u8]>,
        waker: &Waker,
    ) -> Result<Option<(CallId, bool)>, Status> {
        self.conn.woken.queued();
        // Read before the lock: callers on other threads wait for it.
        let now = call.deadline.map(|_| Instant::now());
        let mut st = self.conn.lock();
        match epoch {
            None if !st.up => return Ok(None),
            Some(epoch) if !st.up || st.epoch != epoch => return Err(self.closed()),
            _ => {}
        }
        let epoch = st.epoch;
        // The bound counts the request being added (R8): the queue
        // never holds more than MAX_UNWRITTEN, or one larger request.
        let adding = packed.map_or_else(|| call.request.encoded_len(), <[u8]>::len)
            + call.options.attachment.len();
        let unwritten = st.out.len() + st.taken;
        if unwritten > 0 && unwritten + adding > MAX_UNWRITTEN {
            return Err(Status::new(
                Code::EOVERCROWDED,
                format!(
                    "{unwritten} bytes wait to be written to {} and the call adds {adding}: \
                     the connection is overcrowded",
                    self.conn.addr
                ),
            ));
        }
        if call.span.is_sampled() {
            if let Some(peer) = st.peer {
                call.span.set_peer(peer);
            }
            call.span.set_protocol("baidu_std");
        }
        let start = st.queued;
        let key = st.pending.insert(epoch, start, call.deadline, waker);
        // The connection already sweeps by this call's deadline, and its
        // sweep is not overdue (its task runs).
        let kept = call.deadline.zip(now).is_some_and(|(deadline, now)| {
            st.sweep_at
                .is_some_and(|(swept, at)| swept == epoch && now <= at && at <= deadline)
        });
        let credential: &[u8] = if st.credential_sent {
            &[]
        } else {
            &self.conn.config.credential
        };
        let LinkState { out, .. } = &mut *st;
        make_room(out, adding);
        let before = out.len();
        if let Err(status) = encode_call(out, call, now, key.correlation_id(), packed, credential) {
            st.pending.remove(key);
            return Err(status);
        }
        st.queued += (st.out.len() - before) as u64;
        st.credential_sent = true;
        if !self.conn.unsent.load(Ordering::Relaxed) {
            self.conn.unsent.store(true, Ordering::Relaxed);
        }
        Ok(Some((key, kept)))
    }

    /// Connects (one caller at a time), unless another caller just did.
    async fn connect(&self) -> Result<u64, Status> {
        let _one_at_a_time = self.conn.connect_lock.lock().await;
        if let Some(epoch) = self.conn.up_epoch() {
            return Ok(epoch);
        }
        self.conn.reconnect.admit(&self.conn.addr)?;
        let stream = super::connect(&self.conn.addr, self.conn.config.connect_timeout)
            .await
            .inspect_err(|_| self.conn.reconnect.failed())?;
        self.conn.reconnect.connected();
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let (plain, tls) = match &self.tls {
            None => (Some(stream), None),
            Some(tls) => {
                let handshake = super::handshake_tls(tls, stream, &self.conn.addr);
                match tokio::time::timeout(self.conn.config.connect_timeout, handshake).await {
                    Ok(stream) => (
                        None,
                        Some(stream.inspect_err(|_| self.conn.reconnect.failed())?),
                    ),
                    Err(_) => {
                        self.conn.reconnect.failed();
                        return Err(Status::new(
                            Code::EFAILEDSOCKET,
                            format!(
                                "fail to connect {}: no TLS handshake within {:?}",
                                self.conn.addr, self.conn.config.connect_timeout
                            ),
                        )
                        .with_request_unwritten());
                    }
                }
            }
        };
        let epoch = {
            let mut st = self.conn.lock();
            st.epoch += 1;
            st.up = true;
            st.peer = peer;
            st.out.clear();
            st.queued = 0;
            st.credential_sent = false;
            st.epoch
        };
        let (conn, alive) = (self.conn.clone(), self.alive_rx.clone());
        if let Some(stream) = plain {
            tokio::spawn(run_connection(conn, stream, peer, epoch, alive));
        } else if let Some(stream) = tls {
            tokio::spawn(run_connection(conn, stream, peer, epoch, alive));
        }
        Ok(epoch)
    }
}

/// The request compressed as its options ask, in this thread's reused
/// buffers (give them back once the frame is encoded), or `None` to encode
/// it straight into the frame.
fn compress_request(call: &Call<'_>) -> Result<Option<Scratch>, Status> {
    let kind = call.options.compression;
    if kind == Compression::None {
        return Ok(None);
    }
    let mut scratch = Scratch::take();
    scratch.plain.reserve(call.request.encoded_len());
    call.request.encode_to(&mut scratch.plain);
    let Scratch { plain, packed } = &mut scratch;
    compression::compress(kind, plain, packed)
        .map_err(|e| Status::new(Code::EREQUEST, e.message().to_owned()))?;
    Ok(Some(scratch))
}

/// Encodes `call`'s request frame; `now` (read when the call has a
/// deadline) tells the time it has left.
fn encode_call(
    out: &mut BytesMut,
    call: &Call<'_>,
    now: Option<Instant>,
    correlation_id: i64,
    packed: Option<&[u8]>,
    credential: &[u8],
) -> Result<(), Status> {
    let options = call.options;
    let timeout_ms = call.deadline.zip(now).map(|(d, now)| {
        let left = d.saturating_duration_since(now).as_millis();
        left.clamp(1, i32::MAX as u128) as i32
    });
    let trace = call.span.context();
    let header = RequestHeader {
        service_name: call.method.service,
        method_name: call.method.method,
        correlation_id,
        log_id: options.log_id as i64,
        trace_id: trace.map_or(0, |t| t.trace_id as i64),
        span_id: trace.map_or(0, |t| t.span_id as i64),
        parent_span_id: trace.map_or(0, |t| t.parent_span_id as i64),
        timeout_ms,
        // brpc's own field for it (a brpc server's `request_id()`); the
        // entry also travels in user_fields like any other.
        request_id: options.metadata.get(REQUEST_ID).unwrap_or(""),
        compress_type: options.compression.as_i32(),
        attachment_len: options.attachment.len(),
        authentication_data: credential,
        user_fields: options.metadata.as_pairs(),
    };
    let framed = match packed {
        None => encode_request(
            out,
            &header,
            call.request.encoded_len(),
            |dst| call.request.encode_to(dst),
            &options.attachment,
        ),
        Some(packed) => encode_request(
            out,
            &header,
            packed.len(),
            |dst| dst.extend_from_slice(packed),
            &options.attachment,
        ),
    };
    framed.map_err(|e| Status::new(Code::EREQUEST, format!("request cannot be framed: {e}")))
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn up_epoch(&self) -> Option<u64> {
        let st = self.lock();
        st.up.then_some(st.epoch)
    }

    /// Delivers the answers cut from one read to the calls that still wait
    /// for them, under one lock; wakes them once it is released. Returns
    /// the calls still waiting.
    fn complete(&self, answers: &mut Answers) -> usize {
        let waiting = {
            let mut st = self.lock();
            for (cid, result) in answers.ready.drain(..) {
                let id = CallId::from_correlation_id(cid);
                answers.wakers.extend(st.pending.complete(id, result));
            }
            st.pending.waiting()
        };
        self.woken.woke(answers.wakers.len());
        for w in answers.wakers.drain(..) {
            w.wake();
        }
        waiting
    }

    /// The connection of `epoch`, which wrote its first `written` bytes,
    /// is gone: fail its calls, forget its queue.
    fn fail(&self, epoch: u64, why: &str, written: u64) {
        let wakers = {
            let mut st = self.lock();
            if st.epoch == epoch {
                if st.up {
                    // The live connection broke (not one retired or
                    // replaced): wait before the next, unless it answered.
                    self.reconnect.failed();
                }
                st.up = false;
                // Drop the queue's memory, not just its contents (R8).
                st.out = BytesMut::new();
                st.taken = 0;
            }
            let text = format!("connection to {} failed: {why}", self.addr);
            st.pending.fail_epoch(epoch, &text, written)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The server of connection `epoch` is stopping (it answered
    /// `ELOGOFF`): new calls go to a new connection (to whoever listens on
    /// the address now: a restarted server, or nobody), while this one
    /// only finishes the calls it sent. The calls queued for it but not
    /// yet taken for writing, from its `sent`-th byte on, fail as unwritten
    /// (retried for free). Called by the connection's own task.
    fn retire(&self, epoch: u64, sent: u64) {
        let wakers = {
            let mut st = self.lock();
            if st.epoch != epoch || !st.up {
                return;
            }
            st.up = false;
            st.out = BytesMut::new();
            st.taken = 0;
            let text = format!("connection to {} closed: the server is stopping", self.addr);
            st.pending.fail_unsent(epoch, sent, &text)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Whether a call still waits for an answer on connection `epoch`.
    fn waits_on(&self, epoch: u64) -> bool {
        self.lock().pending.waits_on(epoch)
    }
}

/// Fails the connection's calls however its task ends: an error, the
/// channel dropping, or the task being cancelled with its runtime.
struct FailOnExit<'a> {
    conn: &'a Link,
    epoch: u64,
    why: String,
    /// Bytes written to the socket: calls queued past them were not sent.
    written: u64,
}

impl Drop for FailOnExit<'_> {
    fn drop(&mut self) {
        self.conn.fail(self.epoch, &self.why, self.written);
    }
}

/// Reads responses and writes queued requests of one connection until it
/// fails or the transport is dropped. Reading never waits for a write to
/// finish (nor the reverse): a peer that answers while we still send a
/// large batch cannot deadlock us.
async fn run_connection<S: crate::tls::Duplex>(
    conn: Arc<Link>,
    mut stream: S,
    peer: Option<std::net::SocketAddr>,
    epoch: u64,
    mut alive: watch::Receiver<()>,
) {
    let mut exit = FailOnExit {
        conn: &conn,
        epoch,
        why: "the connection task was cancelled".into(),
        written: 0,
    };
    let limits = Limits::new(conn.config.max_body_size);
    let peer = peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let listed =
        crate::connections::Registered::new(crate::connections::Side::Client, peer, "baidu_std");
    let (mut rd, mut wr) = stream.halves();
    let mut reads = ReadBuffers::default();
    let mut answers = Answers::default();
    // Requests taken from the queue and being written, from `written` on.
    let mut outbuf = BytesMut::new();
    let mut written = 0;
    // Gives back what activity grew once the connection has been quiet a
    // moment; armed while anything is above its idle size.
    let shrink = tokio::time::sleep(IDLE_SHRINK);
    tokio::pin!(shrink);
    let mut shrink_armed = false;
    // Whether anything was read or written since the timer was armed.
    let mut busy = false;
    // Fails the calls whose deadline passed (their callers keep no timer
    // while they wait here): armed at the pending table's earliest
    // deadline, learnt as each batch of requests is taken.
    let sweep = tokio::time::sleep(IDLE_SHRINK);
    tokio::pin!(sweep);
    let mut sweep_at: Option<tokio::time::Instant> = None;
    // The server said it is stopping: this connection takes no more
    // requests and ends once the calls it sent are answered.
    let mut retired = false;
    // The last take left exactly one call waiting: a lone caller's request
    // is on its way. Any read or sweep clears it, so the connection polls
    // only for an answer it has just sent for, never while a caller that a
    // read woke waits for this worker.
    let mut lone_sent = false;
    // Calls waiting for their answer, as of the last take, read or sweep
    // (never fewer than wait on written requests).
    let mut waiting = 0;
    let mut spin = BusyPoll::new(conn.config.busy_poll);
    exit.why = loop {
        if retired && written == outbuf.len() && !conn.waits_on(epoch) {
            break "the server is stopping and answered every call sent".into();
        }
        reads.prepare();
        let holding = answers.ready.capacity() + answers.wakers.capacity() > 0;
        if !shrink_armed && (outbuf.capacity() > 0 || reads.above_idle() || holding) {
            shrink
                .as_mut()
                .reset(tokio::time::Instant::now() + IDLE_SHRINK);
            shrink_armed = true;
        }
        let inbuf = &mut reads.current;
        // A lone caller's answer: poll for it a moment before sleeping
        // (see `busy_poll`), once everything is written and nothing
        // partial waits in the buffer.
        let mut spun = None;
        if lone_sent && written == outbuf.len() && inbuf.is_empty() && !retired && spin.due() {
            if spin.yield_first() {
                tokio::task::yield_now().await;
            }
            // A dropped channel is taken below, not spun past; nor is a
            // call queued meanwhile, or the deadline sweep.
            if !alive.has_changed().unwrap_or(true) {
                spun = spin.spin::<S>(&rd, inbuf, || {
                    !conn.unsent.load(Ordering::Relaxed)
                        && sweep_at.is_none_or(|at| tokio::time::Instant::now() < at)
                });
            }
        }
        let read = if let Some(read) = spun {
            read
        } else {
            // An answer may come while the select waits: it must see it
            // (see `busy_poll`); a write still to do ends the wait anyway.
            if written == outbuf.len() && waiting > 0 {
                spin.settle::<S>(&rd);
            }
            tokio::select! {
                closed = alive.changed() => {
                    let _ = closed;
                    break "channel dropped".into();
                }
                () = &mut sweep, if sweep_at.is_some() => {
                    let mut st = conn.lock();
                    let expired = st.pending.expire(tokio::time::Instant::now());
                    let next = st.pending.earliest();
                    arm_sweep(sweep.as_mut(), &mut sweep_at, &mut st, epoch, next);
                    waiting = st.pending.waiting();
                    drop(st);
                    expired.into_iter().for_each(Waker::wake);
                    lone_sent = false;
                    continue;
                }
                () = &mut shrink, if shrink_armed => { if busy {
                    // Still busy: look again later (no allocation churn).
                    busy = false;
                    shrink.as_mut().reset(tokio::time::Instant::now() + IDLE_SHRINK);
                } else {
                    shrink_armed = false;
                    // Quiet for a moment: back to the idle footprint (R7).
                    if written == outbuf.len() {
                        outbuf = BytesMut::new();
                        written = 0;
                    }
                    let mut st = conn.lock();
                    if st.epoch == epoch && st.out.is_empty() {
                        st.out = BytesMut::new();
                    }
                    st.pending.quiet();
                    drop(st);
                    reads.shrink();
                    answers = Answers::default();
                } continue; }
                _ = conn.wake_writer.notified(), if !retired && written == outbuf.len() => {
                    conn.woken.let_them_queue().await;
                    outbuf.clear();
                    written = 0;
                    if outbuf.capacity() > KEEP_CAPACITY {
                        outbuf = BytesMut::new();
                    }
                    let mut st = conn.lock();
                    if st.epoch != epoch {
                        // A newer connection owns the queue; pass the wakeup
                        // on and leave.
                        drop(st);
                        conn.wake_writer.notify_one();
                        break "replaced by a newer connection".into();
                    }
                    std::mem::swap(&mut st.out, &mut outbuf);
                    conn.unsent.store(false, Ordering::Relaxed);
                    waiting = st.pending.waiting();
                    // A take of nothing (a wakeup left over from a batch)
                    // sends nothing to wait for.
                    lone_sent = waiting == 1 && !outbuf.is_empty();
                    listed.set_in_flight(waiting);
                    if let Some(at) = st.pending.earliest()
                        && sweep_at.is_none_or(|armed| at < armed)
                    {
                        arm_sweep(sweep.as_mut(), &mut sweep_at, &mut st, epoch, Some(at));
                    }
                    // Still unwritten, for the queue's bound, until written;
                    // only large batches are counted (a small one cannot move
                    // a 64 MiB bound), so small calls take no extra lock.
                    st.taken = if outbuf.len() >= KEEP_CAPACITY { outbuf.len() } else { 0 };
                    continue;
                }
                n = wr.write(&outbuf[written..]), if written < outbuf.len() => match n {
                    Ok(0) => break "the connection stopped accepting data".into(),
                    Ok(n) => {
                        written += n;
                        busy = true;
                        exit.written += n as u64;
                        listed.wrote(n);
                        if written < outbuf.len() {
                            // The rest waits for room, and answers may
                            // come meanwhile: the wait must see them.
                            spin.settle::<S>(&rd);
                        }
                        if written == outbuf.len() && outbuf.len() >= KEEP_CAPACITY {
                            if !retired {
                                conn.lock().taken = 0;
                            }
                            if outbuf.capacity() > KEEP_CAPACITY {
                                // A large request was written: give its buffer
                                // back now, not when the next call comes (R7).
                                outbuf = BytesMut::new();
                                written = 0;
                            }
                        }
                        continue;
                    }
                    Err(e) => break e.to_string(),
                },
                read = rd.read_buf(&mut *inbuf) => read,
            }
        };
        spin.read();
        lone_sent = false;
        match read {
            Ok(0) => break "closed by the server".into(),
            Ok(n) => {
                listed.read(n);
                busy = true;
                // Taken for writing so far: written, or in `outbuf` still
                // to be written.
                let sent = exit.written + (outbuf.len() - written) as u64;
                let cut = deliver(&conn, inbuf, &limits, (epoch, sent), &mut answers);
                for _ in 0..answers.ready.len() {
                    spin.request();
                }
                // Calls still waiting, for the console.
                waiting = conn.complete(&mut answers);
                listed.set_in_flight(waiting);
                match cut {
                    Err(e) => break e,
                    Ok(stopping) => retired |= stopping,
                }
                reads.settle();
            }
            Err(e) => break e.to_string(),
        }
    };
}

/// Arms connection `epoch`'s deadline sweep at `at` (`None`: no deadline
/// waits), and tells the callers queueing on it (`LinkState::sweep_at`).
fn arm_sweep(
    sweep: Pin<&mut tokio::time::Sleep>,
    armed: &mut Option<Instant>,
    st: &mut LinkState,
    epoch: u64,
    at: Option<Instant>,
) {
    *armed = at;
    if let Some(at) = at {
        sweep.reset(at);
    }
    if st.epoch == epoch {
        st.sweep_at = at.map(|at| (epoch, at));
    }
}

/// The connection's read buffers.
///
/// Responses are handed to their callers as slices of the buffer they were
/// read into, so a buffer is reused only once its slices are gone. Two
/// buffers alternate: when `current` fills up, reading moves to `spare`,
/// whose responses were taken long ago, so it is reclaimed in place (no
/// allocation in steady state), carrying any partial frame over. A buffer
/// grown for a large response is given back as soon as what is left in it
/// is small (copied out), so neither a small leftover nor the idle spare
/// keeps a large allocation alive (rule R7).
#[derive(Default)]
struct ReadBuffers {
    current: BytesMut,
    spare: BytesMut,
    /// Whether `current` (resp. `spare`) was grown past `READ_CHUNK`.
    current_grown: bool,
    spare_grown: bool,
}

impl ReadBuffers {
    /// Room for the next read.
    fn prepare(&mut self) {
        // The quiet trim reaches this thread's arena (see `ReadBuffer`).
        keel_alloc::note_thread();
        if self.current.is_empty() && self.current.capacity() > KEEP_CAPACITY {
            self.current = BytesMut::new();
            self.current_grown = false;
        }
        if self.current.capacity() - self.current.len() < READ_MIN_ROOM {
            // Twice the partial frame: a large response grows the buffer
            // geometrically, so moving it over costs O(size) in all.
            let need = READ_CHUNK.max(2 * self.current.len() + READ_MIN_ROOM);
            self.spare.clear();
            self.spare.reserve(need);
            self.spare.extend_from_slice(&self.current);
            std::mem::swap(&mut self.current, &mut self.spare);
            self.spare.clear();
            self.spare_grown = self.current_grown;
            self.current_grown = need > READ_CHUNK;
        }
    }

    /// Whether more than one idle read chunk is held.
    fn above_idle(&self) -> bool {
        self.spare.capacity() > 0 || self.current.capacity() > READ_CHUNK
    }

    /// Back to one read chunk (the connection is quiet).
    fn shrink(&mut self) {
        self.spare = BytesMut::new();
        self.spare_grown = false;
        if self.current.is_empty() && self.current.capacity() > READ_CHUNK {
            self.current = BytesMut::new();
            self.current_grown = false;
        }
    }

    /// After responses were cut from `current`.
    fn settle(&mut self) {
        // The decoder reserves room for the rest of a large frame it has
        // begun to see: that grows the buffer too.
        self.current_grown |= self.current.capacity() > READ_CHUNK;
        if self.current_grown && self.current.len() <= READ_CHUNK / 2 {
            let mut small = BytesMut::with_capacity(READ_CHUNK);
            small.extend_from_slice(&self.current);
            self.current = small;
            self.current_grown = false;
        }
        if self.spare_grown && !self.current_grown {
            self.spare = BytesMut::new();
            self.spare_grown = false;
        }
    }
}

/// The answers of one read on their way to their calls, and the wakers
/// of those calls; kept between reads (given back when the connection
/// goes quiet, rule R7), so answering costs no allocation.
#[derive(Default)]
struct Answers {
    ready: Vec<(i64, Result<Arrived, Status>)>,
    wakers: Vec<Waker>,
}

/// Cuts every complete response out of `inbuf` into `answers` (for
/// [`Link::complete`], even when a later frame is bad); true when one of
/// them said the server is stopping (`ELOGOFF`). Then the connection
/// (`epoch`, which took its first `sent` bytes for writing) is retired
/// before that call learns of it, so that its retry connects again.
fn deliver(
    conn: &Link,
    inbuf: &mut BytesMut,
    limits: &Limits,
    (epoch, sent): (u64, u64),
    answers: &mut Answers,
) -> Result<bool, String> {
    let mut stopping = false;
    loop {
        let frame = match decode_raw_frame(inbuf, limits) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(stopping),
            Err(e) => return Err(format!("bad response frame: {e}")),
        };
        let meta = match frame.meta() {
            Ok(meta) => meta,
            Err(e) => {
                // The frame's length was right, so the next one can be
                // read: this answer fails the call it was for (when its id
                // can be read), not the connection, as brpc drops a
                // response whose meta does not parse.
                super::BAD_RESPONSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(cid) = salvage_correlation_id(frame.meta_bytes()) {
                    let text = format!("bad response meta from {}: {e}", conn.addr);
                    answers
                        .ready
                        .push((cid, Err(Status::new(Code::ERESPONSE, text))));
                }
                continue;
            }
        };
        conn.reconnect.answered();
        let cid = meta.correlation_id;
        let logoff = meta
            .response
            .as_ref()
            .is_some_and(|r| r.error_code == Code::ELOGOFF.value());
        if logoff && !stopping {
            stopping = true;
            conn.retire(epoch, sent);
        }
        let result = match meta.response {
            Some(r) if r.error_code != 0 => Err(Status::new(
                Code::new(r.error_code),
                r.error_text.into_owned(),
            )),
            // Handed over still compressed: the call decompresses it in
            // its own task (see `PendingCall`), never this loop.
            _ => match frame.split(&meta) {
                Ok((payload, attachment)) => Ok(Arrived {
                    reply: Reply {
                        payload,
                        attachment,
                        metadata: if meta.user_fields.is_empty() {
                            Metadata::new()
                        } else {
                            meta.user_fields.iter().collect()
                        },
                    },
                    compress_type: meta.compress_type,
                }),
                Err(e) => Err(Status::new(Code::ERESPONSE, e.to_string())),
            },
        };
        answers.ready.push((cid, result));
    }
}

/// A call waiting for its response; dropping it frees its entry.
struct PendingCall<'a> {
    conn: &'a Link,
    key: CallId,
    /// Its entry already holds the waker of the poll that comes first
    /// (registered when queued, in the same poll): that poll can only
    /// find it waiting, and takes no lock.
    registered: bool,
    finished: bool,
    /// Told, each time this waits, that the wait ends by the deadline.
    kept_deadline: Option<&'a std::sync::atomic::AtomicBool>,
}

impl Future for PendingCall<'_> {
    type Output = Result<Reply, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        if std::mem::take(&mut self.registered) {
            // An answer that came meanwhile woke this task: it is polled
            // again.
            self.keeps_deadline();
            return Poll::Pending;
        }
        let mut st = self.conn.lock();
        match st.pending.poll(self.key, cx.waker()) {
            Poll::Ready(result) => {
                drop(st);
                self.finished = true;
                // Decompressed here, in the caller's task: however large
                // the payload, or however it lies about its size, the
                // connection's loop has long moved on to the other calls.
                Poll::Ready(result.and_then(|arrived| {
                    let Arrived {
                        mut reply,
                        compress_type,
                    } = arrived;
                    reply.payload = compression::decompress(
                        compress_type,
                        reply.payload,
                        self.conn.config.max_body_size,
                        Code::ERESPONSE,
                    )?;
                    Ok(reply)
                }))
            }
            Poll::Pending => {
                drop(st);
                self.keeps_deadline();
                Poll::Pending
            }
        }
    }
}

impl PendingCall<'_> {
    fn keeps_deadline(&self) {
        if let Some(kept) = self.kept_deadline {
            kept.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.lock().pending.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_queue_grows_by_a_quarter_not_by_doubling() {
        let mut out = BytesMut::new();
        let request = vec![7u8; 4 << 20];
        for _ in 0..16 {
            let slow = out.len() + request.len() > GROW_SLOWLY_FROM;
            make_room(&mut out, request.len());
            let before = out.capacity();
            out.extend_from_slice(&request);
            if slow {
                assert_eq!(
                    out.capacity(),
                    before,
                    "room was made before the bytes came"
                );
            }
            let len = out.len();
            assert!(
                out.capacity()
                    <= (2 * GROW_SLOWLY_FROM).max(len + (len + FRAME_SLACK) / 4 + request.len()),
                "{} bytes of capacity for {len}",
                out.capacity()
            );
        }
        assert_eq!(&out[..4], &[7, 7, 7, 7]);
        assert_eq!(out.len(), 64 << 20);
        // A lone large request: its size and the frame's slack, no more.
        let mut lone = BytesMut::new();
        make_room(&mut lone, 32 << 20);
        assert_eq!(lone.capacity(), (32 << 20) + FRAME_SLACK);
    }
}

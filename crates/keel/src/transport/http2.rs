//! Keel's own HTTP/2 on the client side: one connection to one server,
//! its streams shared by the calls on it (frames from
//! [`keel_wire::http2`], header blocks from [`keel_wire::hpack`]).
//!
//! ```text
//!   call ──lock──► HEADERS (HPACK, in stream order) + DATA into `out` ──► wake the task
//!     │                                                                      │
//!     ▼                                                                      ▼
//!   StreamRef (polls its stream)                 connection task: write `out` (all
//!     ▲                                          calls queued meanwhile in one write),
//!     └── stream done/data + wake ◄── lock ◄──── read frames, decode HEADERS, DATA
//! ```
//!
//! It is built like the baidu_std client: every call and the connection's
//! task share one mutex, which a call takes once to open its stream and
//! queue its request, and the task once per read to hand every frame read
//! over; the wakers are woken after it is released. The encoder's table
//! lives under the mutex, so header blocks are encoded in the order they
//! are queued; the decoder belongs to the task, which reads in order.
//!
//! Flow control both ways: a stream sends what the server's windows allow
//! and keeps the rest until WINDOW_UPDATE; the server's data is given back
//! as window when it arrives for a unary call (its one message is bounded
//! by the maximum message size), and as the caller takes it on a streaming
//! call (a slow reader holds the server at the stream's window). Small
//! DATA frames a streaming caller queues back to back are merged into one.
//!
//! Every stream leaves the table on every path (rule R1): its caller takes
//! the outcome, or drops it (the stream is then reset with CANCEL). The
//! task ends (rule R5) when the transport is gone or the connection
//! failed, once no stream is left; buffers go back to their idle footprint
//! once the connection is quiet (R7).
//!
//! Owns: HTTP/2 on the client side (the preface, SETTINGS, both windows,
//! stream ids and states, PING, GOAWAY, RST_STREAM). May not touch: what
//! the header fields mean (the gRPC transport says) or retries.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use keel_pool::{Pool, Pooled};
use keel_wire::hpack::{Decoder, Encoder, HpackError};
use keel_wire::http2::{
    self as frame, Assembly, Cut, Head, HeaderBlocks, Reason, flag, kind, setting,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::pending::IdHasher;
use crate::codec::grpc::ResponseHead;
use crate::conn_buffers::{KEEP_CAPACITY, ReadBuffer, WriteBuffer, give_back_if_empty};
use crate::status::{Code, Status};
use crate::streaming::{MAX_PENDING, Queued, may_queue};

/// What a stream may receive before the caller takes it.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// What the connection may receive before WINDOW_UPDATE.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Largest frame the server may send.
const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Header block fragments (HEADERS + CONTINUATION) buffered at most.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Decoded response headers or trailers accepted at most.
const MAX_HEADER_LIST: usize = 1024 * 1024;
/// How long a connection stays above its idle footprint after activity.
const IDLE_SHRINK: Duration = Duration::from_millis(250);
/// The largest stream id (2^31 - 1): a connection that used them all takes
/// no more streams.
const LAST_STREAM_ID: u32 = (1 << 31) - 1;

/// One HTTP/2 connection as its calls and its task share it.
pub(crate) struct Connection {
    state: Mutex<State>,
    /// The task: bytes to write, or a stream left.
    wake: Notify,
    /// Callers waiting for a stream slot (the server's limit).
    slots: Notify,
    /// Callers the last read woke (see [`super::WokenCallers`]).
    woken: super::WokenCallers,
    /// The address it reached (for client spans).
    pub(crate) peer: Option<SocketAddr>,
}

struct State {
    out: BytesMut,
    encoder: Encoder,
    /// A header block being encoded (reused).
    block: BytesMut,
    next_id: u32,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    /// The server's SETTINGS.
    max_streams: usize,
    peer_window: u32,
    peer_max_frame: usize,
    /// The connection's send window.
    send_window: i64,
    /// Received on the connection and not given back yet.
    recv_unacked: u32,
    /// Why the connection takes no new stream (GOAWAY, a failure, stream
    /// ids used up), once it does not.
    closed: Option<Status>,
    /// It was closed without failing (GOAWAY NO_ERROR, stream ids used
    /// up): no reason to wait before connecting again.
    graceful: bool,
    /// The task ended: nothing more will be read or written.
    ended: bool,
    /// Streams with data waiting for window.
    blocked: Vec<u32>,
    /// The last frame in `out`, when it is a DATA frame without
    /// END_STREAM: its stream and where its head starts (for merging).
    last_data: Option<(u32, usize)>,
}

/// One stream of the connection.
#[derive(Default)]
struct Stream {
    send_window: i64,
    /// Request bytes waiting for window, and whether END_STREAM follows.
    pending: BytesMut,
    end_pending: bool,
    /// END_STREAM went out (or is in `out`).
    local_closed: bool,
    in_blocked: bool,
    /// What the server may still send before our next WINDOW_UPDATE.
    recv_window: i64,
    /// Received and consumed, not given back yet.
    unacked: u32,
    /// Window comes back as the caller takes data (a streaming call), not
    /// as it arrives.
    streaming: bool,
    /// A unary call's largest response message.
    limit: usize,
    head: Option<PooledHead>,
    /// The response headers came (the caller may have taken them).
    head_seen: bool,
    data: BytesMut,
    trailers: Option<PooledHead>,
    /// The server's side ended: `Ok` with END_STREAM, or why not.
    end: Option<Result<(), Status>>,
    reader: Option<Waker>,
    sender: Option<Waker>,
}

impl Stream {
    fn wake_reader(&mut self, wakers: &mut Vec<Waker>) {
        if let Some(w) = self.reader.take() {
            wakers.push(w);
        }
    }

    fn fail(&mut self, status: &Status, wakers: &mut Vec<Waker>) {
        if self.end.is_none() {
            self.end = Some(Err(status.clone()));
        }
        self.pending = BytesMut::new();
        self.end_pending = false;
        self.wake_reader(wakers);
        if let Some(w) = self.sender.take() {
            wakers.push(w);
        }
    }

    /// Both sides ended: the server no longer counts it.
    fn closed(&self) -> bool {
        self.end.is_some() && (self.local_closed || !matches!(self.end, Some(Ok(()))))
    }
}

/// A unary call's response, whole.
pub(crate) struct Finished {
    pub(crate) head: PooledHead,
    pub(crate) data: BytesMut,
    pub(crate) trailers: Option<PooledHead>,
}

keel_pool::pool! {
    /// The headers and trailers of responses, as the connection read them
    /// (a unary call takes two): pooled, so that a call allocates none.
    /// Small blocks and thread caches (see [`HEAD_POOL`]).
    pub(crate) static HEADS: Pool<ResponseHead, HeadCache> =
        Pool::with_config("grpc.response_heads", ResponseHead::default, HEAD_POOL);
}

/// The blocks and thread caches of the pools of heads (these, and the
/// server's call heads): a head lives only while its call does, so a few
/// dozen a thread serve any load, and small blocks keep what a pool holds
/// (and the heap it moves between threads and trims) to a few KB, where the
/// defaults (16 KiB blocks, 256 KiB a thread) held ~70 KiB more and made a
/// soak's live heap swing by tens of KB.
pub(crate) const HEAD_POOL: keel_pool::PoolConfig = keel_pool::PoolConfig {
    block_objects: Some(16),
    local_capacity: Some(32),
    ..keel_pool::PoolConfig::DEFAULT
};

/// A response's headers or trailers, from [`HEADS`].
pub(crate) type PooledHead = Pooled<'static, ResponseHead, HeadCache>;

/// A streaming call's DATA frames at least this large are cut out of the
/// read buffer and handed to their stream as they are, not copied. Smaller
/// ones are copied: a cut frame keeps its whole read block (at most
/// 64 KiB) alive until its reader takes it, and a streaming reader may be
/// slow, so only frames of at least an eighth of a block are. A unary
/// call's response is copied: its caller takes it after the connection
/// has prepared its next read, which a cut would make allocate a new
/// block (two allocations a call where the copy costs one).
const CUT_DATA: usize = 8 * 1024;

/// A whole frame's payload in the read buffer, read in place or cut out
/// of the buffer without a copy ([`cut`](Self::cut)). Both HTTP/2 sides
/// get their frames through [`each_frame`].
pub(crate) struct Payload<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    len: usize,
    cut: &'a mut bool,
}

impl Payload<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The payload's bytes in `range` (of [`bytes`](Self::bytes)) as
    /// their own buffer, split off the read buffer (which becomes shared:
    /// its block lives until they are dropped).
    pub(crate) fn cut(self, range: std::ops::Range<usize>) -> BytesMut {
        debug_assert!(range.end <= self.len);
        self.buf.advance(self.start + range.start);
        *self.cut = true;
        let mut cut = self.buf.split_to(self.len - range.start);
        cut.truncate(range.len());
        cut
    }
}

/// Hands every whole frame read into `buf` to `on_frame`, in order, while
/// it returns `true`, then drops the bytes of the frames handled. `Err`
/// with the announced length when a frame is larger than `max_frame`.
pub(crate) fn each_frame(
    buf: &mut BytesMut,
    max_frame: usize,
    mut on_frame: impl FnMut(Head, Payload<'_>) -> bool,
) -> Result<(), usize> {
    let mut at = 0;
    let result = loop {
        match frame::cut(&buf[at..], max_frame) {
            Cut::Whole(h) => {
                let len = h.len;
                let mut cut = false;
                let payload = Payload {
                    buf: &mut *buf,
                    start: at + frame::HEAD_LEN,
                    len,
                    cut: &mut cut,
                };
                let go_on = on_frame(h, payload);
                // A cut payload took the bytes before it along.
                at = if cut { 0 } else { at + frame::HEAD_LEN + len };
                if !go_on {
                    break Ok(());
                }
            }
            Cut::Partial => break Ok(()),
            Cut::TooLarge(len) => break Err(len),
        }
    };
    buf.advance(at);
    result
}

/// What a streaming call reads next.
pub(crate) enum Received {
    /// Bytes off the stream's buffer, not copied (see `Chunks` in [`crate::streaming`]).
    Data(BytesMut),
    /// The server ended its side: the trailers, if any.
    End(Option<PooledHead>),
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unwritten(why: String) -> Status {
    Status::new(Code::EFAILEDSOCKET, why).with_request_unwritten()
}

impl Connection {
    /// A connection over `io` (TCP or TLS, connected): the preface and
    /// SETTINGS are queued and its task spawned, which runs until `alive`
    /// closes (the transport dropped) or the connection fails, and no
    /// stream is left.
    pub(crate) fn start<S: crate::tls::Duplex>(
        io: S,
        peer: Option<SocketAddr>,
        alive: watch::Receiver<()>,
    ) -> Arc<Connection> {
        let mut out = BytesMut::new();
        out.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_FRAME_SIZE, MAX_FRAME_SIZE),
            ],
        );
        frame::put_window_update(&mut out, 0, CONNECTION_WINDOW - frame::DEFAULT_WINDOW);
        let conn = Arc::new(Connection {
            state: Mutex::new(State {
                out,
                encoder: Encoder::new(),
                block: BytesMut::new(),
                next_id: 1,
                streams: HashMap::default(),
                max_streams: usize::MAX,
                peer_window: frame::DEFAULT_WINDOW,
                peer_max_frame: frame::DEFAULT_MAX_FRAME as usize,
                send_window: i64::from(frame::DEFAULT_WINDOW),
                recv_unacked: 0,
                closed: None,
                graceful: false,
                ended: false,
                blocked: Vec::new(),
                last_data: None,
            }),
            wake: Notify::new(),
            slots: Notify::new(),
            woken: super::WokenCallers::default(),
            peer,
        });
        conn.wake.notify_one();
        tokio::spawn(run(conn.clone(), io, alive));
        conn
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether it takes new streams.
    pub(crate) fn is_open(&self) -> bool {
        self.lock().closed.is_none()
    }

    /// Whether it stopped taking streams without failing: the server went
    /// away gracefully (GOAWAY NO_ERROR), or its stream ids were used up.
    pub(crate) fn closed_gracefully(&self) -> bool {
        self.lock().graceful
    }

    /// Opens a stream: `encode` appends its header block (called under
    /// the connection's lock, so blocks go out in encoding order), then
    /// `body` follows. With `end` it is a unary call (END_STREAM after
    /// `body`; a response message over `limit` fails it); without, a
    /// streaming call whose requests follow. Waits while the server's
    /// limit on streams is reached. Fails, with nothing written, when the
    /// connection takes no new stream.
    pub(crate) async fn open(
        self: &Arc<Self>,
        encode: &mut (dyn FnMut(&mut Encoder, &mut BytesMut) + Send),
        body: &Queued<'_>,
        end: bool,
        limit: usize,
    ) -> Result<StreamRef, Status> {
        let streaming = !end;
        self.woken.queued();
        loop {
            let slot = self.slots.notified();
            tokio::pin!(slot);
            {
                let mut st = self.lock();
                if let Some(closed) = &st.closed {
                    return Err(closed.clone());
                }
                if st.streams.len() < st.max_streams {
                    let id = st.next_id;
                    if id >= LAST_STREAM_ID - 1 {
                        st.closed = Some(unwritten("the connection used up its stream ids".into()));
                        st.graceful = true;
                    } else {
                        st.next_id += 2;
                    }
                    let was_empty = st.out.is_empty();
                    let st = &mut *st;
                    st.block.clear();
                    encode(&mut st.encoder, &mut st.block);
                    let headers_end = end && body.len() == 0;
                    frame::put_headers(&mut st.out, id, &st.block, st.peer_max_frame, headers_end);
                    st.last_data = None;
                    if st.block.capacity() > KEEP_CAPACITY {
                        st.block = BytesMut::new();
                    }
                    st.streams.insert(
                        id,
                        Stream {
                            send_window: i64::from(st.peer_window),
                            recv_window: i64::from(STREAM_WINDOW),
                            streaming,
                            limit,
                            local_closed: headers_end,
                            ..Stream::default()
                        },
                    );
                    if !headers_end {
                        st.send_body(id, body, end);
                    }
                    if was_empty {
                        self.wake.notify_one();
                    }
                    return Ok(StreamRef {
                        conn: self.clone(),
                        id,
                        released: false,
                    });
                }
                slot.as_mut().enable();
            }
            slot.await;
        }
    }
}

impl State {
    /// Queues a new stream's `body` (and END_STREAM when `end`). A message
    /// the windows and one frame take whole is encoded straight into
    /// `out`; anything else goes through [`send`](Self::send).
    fn send_body(&mut self, id: u32, body: &Queued<'_>, end: bool) {
        if let Queued::Sealed(data) = body {
            return self.send(id, data, end);
        }
        let len = body.len();
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let room = stream.send_window.min(self.send_window).max(0) as usize;
        if stream.pending.is_empty() && len <= room.min(self.peer_max_frame) {
            stream.send_window -= len as i64;
            self.send_window -= len as i64;
            stream.local_closed |= end;
            let flags = if end { flag::END_STREAM } else { 0 };
            frame::put_head(&mut self.out, len, kind::DATA, flags, id);
            body.append_to(&mut self.out, len);
            self.last_data = None;
            return;
        }
        let mut sealed = BytesMut::with_capacity(len);
        body.append_to(&mut sealed, len);
        self.send(id, &sealed, end);
    }

    /// Queues a unary call's `data` (and END_STREAM when `end`) on stream
    /// `id`, straight from the slice: what the windows allow goes into
    /// `out` now, the rest waits for window.
    fn send(&mut self, id: u32, data: &[u8], end: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.pending.is_empty() {
            let room = stream.send_window.min(self.send_window).max(0) as usize;
            let now = data.len().min(room);
            let end_now = end && now == data.len();
            if now > 0 || end_now {
                stream.send_window -= now as i64;
                self.send_window -= now as i64;
                stream.local_closed |= end_now;
                put_data(
                    &mut self.out,
                    &mut self.last_data,
                    id,
                    &data[..now],
                    self.peer_max_frame,
                    end_now,
                );
            }
            if now < data.len() || (end && !end_now) {
                let stream = self.streams.get_mut(&id).expect("present above");
                stream.pending.extend_from_slice(&data[now..]);
                stream.end_pending = end;
                if !stream.in_blocked {
                    stream.in_blocked = true;
                    self.blocked.push(id);
                }
            }
            return;
        }
        stream.pending.extend_from_slice(data);
        stream.end_pending |= end;
    }

    /// Moves what the windows allow of stream `id`'s pending bytes (and
    /// then its END_STREAM) into `out`: `true` when nothing is left
    /// waiting. Wakes its sender once there is room in its queue.
    fn flush_pending(&mut self, id: u32, wakers: &mut Vec<Waker>) -> bool {
        let Some(stream) = self.streams.get_mut(&id) else {
            return true;
        };
        let room = stream.send_window.min(self.send_window).max(0) as usize;
        let now = stream.pending.len().min(room);
        let end_now = stream.end_pending && now == stream.pending.len();
        if now == 0 && !end_now {
            return false;
        }
        stream.send_window -= now as i64;
        self.send_window -= now as i64;
        stream.local_closed |= end_now;
        stream.end_pending &= !end_now;
        if stream.pending.len() - now < MAX_PENDING
            && let Some(w) = stream.sender.take()
        {
            wakers.push(w);
        }
        put_data(
            &mut self.out,
            &mut self.last_data,
            id,
            &stream.pending[..now],
            self.peer_max_frame,
            end_now,
        );
        stream.pending.advance(now);
        let done = stream.pending.is_empty() && !stream.end_pending;
        if done && stream.pending.capacity() > MAX_PENDING {
            stream.pending = BytesMut::new();
        }
        done
    }

    /// [`flush_pending`](Self::flush_pending), and onto the blocked list
    /// when bytes are left waiting for window.
    fn flush_or_block(&mut self, id: u32, wakers: &mut Vec<Waker>) {
        if !self.flush_pending(id, wakers)
            && let Some(stream) = self.streams.get_mut(&id)
            && !stream.in_blocked
        {
            stream.in_blocked = true;
            self.blocked.push(id);
        }
    }

    /// Sends what waits for window, as far as the windows now allow.
    fn unblock(&mut self, wakers: &mut Vec<Waker>) {
        let mut i = 0;
        while i < self.blocked.len() {
            let id = self.blocked[i];
            if self.flush_pending(id, wakers) {
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.in_blocked = false;
                }
                self.blocked.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Fails stream `id` for its caller with `status` and resets it with
    /// `reason`: the server broke a rule of the stream (or its answer is
    /// refused).
    fn reset(&mut self, id: u32, status: &Status, reason: Reason, wakers: &mut Vec<Waker>) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.fail(status, wakers);
            stream.local_closed = true;
        }
        frame::put_rst(&mut self.out, id, reason);
        self.last_data = None;
    }

    /// Removes stream `id` (its caller is done with it): reset first when
    /// the server may still send on it or wait for it.
    fn release(&mut self, id: u32) -> bool {
        let Some(stream) = self.streams.remove(&id) else {
            return false;
        };
        if !stream.closed() && !self.ended {
            frame::put_rst(&mut self.out, id, Reason::Cancel);
            self.last_data = None;
        }
        // The window it held is the connection's again.
        true
    }

    /// Fails every stream (the connection is gone) and refuses new ones.
    fn fail_all(&mut self, status: &Status, wakers: &mut Vec<Waker>) {
        self.closed.get_or_insert_with(|| status.clone());
        for stream in self.streams.values_mut() {
            stream.fail(status, wakers);
        }
    }
}

/// Appends a DATA frame, merged into the last frame in `out` when that is
/// a DATA frame of the same stream with room left.
fn put_data(
    out: &mut BytesMut,
    last: &mut Option<(u32, usize)>,
    id: u32,
    data: &[u8],
    max_frame: usize,
    end: bool,
) {
    if let Some((last_id, at)) = *last
        && last_id == id
        && at + frame::HEAD_LEN <= out.len()
    {
        let len = out.len() - at - frame::HEAD_LEN;
        if len + data.len() <= max_frame {
            let merged = len + data.len();
            out[at..at + 3].copy_from_slice(&(merged as u32).to_be_bytes()[1..]);
            if end {
                out[at + 4] |= flag::END_STREAM;
                *last = None;
            }
            out.extend_from_slice(data);
            return;
        }
    }
    let start = out.len();
    frame::put_data(out, id, data, max_frame, end);
    // Where the last frame begins: the only one when it fit in one.
    *last = (!end && data.len() <= max_frame && !data.is_empty()).then_some((id, start));
}

/// A caller's hold on one stream: dropping it releases the stream (reset
/// when unfinished).
pub(crate) struct StreamRef {
    conn: Arc<Connection>,
    id: u32,
    released: bool,
}

impl StreamRef {
    /// The connection's peer address.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.conn.peer
    }

    /// A unary call's whole response, once the server ended its side.
    pub(crate) fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<Result<Finished, Status>> {
        let mut st = self.conn.lock();
        let Some(stream) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        match stream.end.clone() {
            None => {
                stream.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(end) => {
                let outcome = end.and_then(|()| {
                    let head = stream.head.take().ok_or_else(|| {
                        Status::new(
                            Code::Internal,
                            "the server ended the stream with no headers",
                        )
                    })?;
                    Ok(Finished {
                        head,
                        data: std::mem::take(&mut stream.data),
                        trailers: stream.trailers.take(),
                    })
                });
                self.released = true;
                let id = self.id;
                self.release_in(&mut st, id);
                Poll::Ready(outcome)
            }
        }
    }

    /// A streaming call's response headers, once they came (`None` when
    /// the stream ended first).
    pub(crate) fn poll_head(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<PooledHead>, Status>> {
        let mut st = self.conn.lock();
        let Some(stream) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if let Some(head) = stream.head.take() {
            return Poll::Ready(Ok(Some(head)));
        }
        match &stream.end {
            Some(Err(status)) => Poll::Ready(Err(status.clone())),
            Some(Ok(())) => Poll::Ready(Ok(None)),
            None => {
                stream.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// A streaming call's next bytes of response, window given back as
    /// they are taken.
    pub(crate) fn poll_data(&self, cx: &mut Context<'_>) -> Poll<Result<Received, Status>> {
        let mut st = self.conn.lock();
        let st = &mut *st;
        let Some(stream) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if !stream.data.is_empty() {
            let data = stream.data.split();
            stream.unacked += data.len() as u32;
            if stream.end.is_none() && stream.unacked >= STREAM_WINDOW / 2 {
                let was_empty = st.out.is_empty();
                frame::put_window_update(&mut st.out, self.id, stream.unacked);
                stream.recv_window += i64::from(stream.unacked);
                stream.unacked = 0;
                st.last_data = None;
                if was_empty {
                    self.conn.wake.notify_one();
                }
            }
            return Poll::Ready(Ok(Received::Data(data)));
        }
        match &stream.end {
            Some(Err(status)) => Poll::Ready(Err(status.clone())),
            Some(Ok(())) => Poll::Ready(Ok(Received::End(stream.trailers.take()))),
            None => {
                stream.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Queues `len` request bytes `append` writes, waiting while
    /// [`MAX_PENDING`] bytes wait for the server's window already.
    pub(crate) async fn send(
        &self,
        len: usize,
        append: impl Fn(&mut BytesMut),
    ) -> Result<(), Status> {
        std::future::poll_fn(|cx| {
            let mut st = self.conn.lock();
            let Some(stream) = st.streams.get_mut(&self.id) else {
                return Poll::Ready(Err(gone()));
            };
            if let Some(Err(status)) = &stream.end {
                return Poll::Ready(Err(status.clone()));
            }
            if stream.local_closed || stream.end_pending {
                return Poll::Ready(Err(Status::new(
                    Code::Cancelled,
                    "the stream is closed: nothing more can be sent",
                )));
            }
            if !may_queue(stream.pending.len(), len) {
                stream.sender = Some(cx.waker().clone());
                return Poll::Pending;
            }
            append(&mut stream.pending);
            let was_empty = st.out.is_empty();
            let mut wakers = Vec::new();
            st.flush_or_block(self.id, &mut wakers);
            if was_empty && !st.out.is_empty() {
                self.conn.wake.notify_one();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Ends the request side (END_STREAM after what is queued).
    pub(crate) fn close_send(&self) {
        let mut st = self.conn.lock();
        let Some(stream) = st.streams.get(&self.id) else {
            return;
        };
        if stream.local_closed
            || stream.end_pending
            || stream.end.as_ref().is_some_and(Result::is_err)
        {
            return;
        }
        let was_empty = st.out.is_empty();
        if let Some(stream) = st.streams.get_mut(&self.id) {
            stream.end_pending = true;
        }
        let mut wakers = Vec::new();
        st.flush_or_block(self.id, &mut wakers);
        if was_empty && !st.out.is_empty() {
            self.conn.wake.notify_one();
        }
    }

    /// Gives up on the stream: the server is told (RST_STREAM CANCEL) and
    /// both sides of this caller see it failed.
    pub(crate) fn reset(&self) {
        let mut st = self.conn.lock();
        let ended = st.ended;
        let Some(stream) = st.streams.get_mut(&self.id) else {
            return;
        };
        let open = !stream.closed();
        let mut wakers = Vec::new();
        stream.fail(
            &Status::new(Code::Cancelled, "the call cancelled the stream"),
            &mut wakers,
        );
        stream.local_closed = true;
        if open && !ended {
            let was_empty = st.out.is_empty();
            frame::put_rst(&mut st.out, self.id, Reason::Cancel);
            st.last_data = None;
            if was_empty {
                self.conn.wake.notify_one();
            }
        }
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
    }

    fn release_in(&self, st: &mut State, id: u32) {
        let was_empty = st.out.is_empty();
        if st.release(id) {
            if (was_empty && !st.out.is_empty()) || st.closed.is_some() {
                self.conn.wake.notify_one();
            }
            self.conn.slots.notify_one();
        }
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        if !self.released {
            let mut st = self.conn.lock();
            let id = self.id;
            self.release_in(&mut st, id);
        }
    }
}

fn gone() -> Status {
    Status::new(Code::EFAILEDSOCKET, "the HTTP/2 stream is gone")
}

/// The task's own reading state.
struct Reader {
    decoder: Decoder,
    /// Header blocks arriving in HEADERS + CONTINUATION frames.
    blocks: HeaderBlocks,
    /// The connection failed (our GOAWAY is queued): why.
    error: Option<String>,
    wakers: Vec<Waker>,
}

impl Reader {
    fn fail(&mut self, st: &mut State, reason: Reason, why: String) {
        if self.error.is_none() {
            frame::put_goaway(&mut st.out, 0, reason, why.as_bytes());
            st.last_data = None;
            self.error = Some(format!("HTTP/2 error from the server ({reason}): {why}"));
        }
    }

    fn on_frame(&mut self, st: &mut State, h: Head, frame: Payload<'_>) {
        let payload = frame.bytes();
        match self.blocks.take(&h, payload, MAX_HEADER_BLOCK) {
            Err((reason, why)) => return self.fail(st, reason, why),
            Ok(Assembly::Complete { stream, end_stream }) => {
                return self.on_headers(st, stream, end_stream);
            }
            Ok(Assembly::Pending) => return,
            Ok(Assembly::Other) => {}
        }
        if let Err(e) = frame::check_fixed(&h) {
            return self.fail(st, e.reason(), e.to_string());
        }
        match h.kind {
            kind::DATA => self.on_data(st, h, frame),
            kind::SETTINGS => self.on_settings(st, h, payload),
            kind::PING if !h.has(flag::ACK) => {
                let mut data = [0; 8];
                data.copy_from_slice(payload);
                frame::put_ping(&mut st.out, true, data);
                st.last_data = None;
            }
            kind::WINDOW_UPDATE => {
                self.on_window_update(st, h.stream, frame::window_increment(payload))
            }
            kind::RST_STREAM => {
                let reason = frame::rst_reason(payload);
                if let Some(stream) = st.streams.get_mut(&h.stream) {
                    // After a whole response, a reset only says the server
                    // needs no more of the request.
                    if !matches!(stream.end, Some(Ok(()))) {
                        let status = if reason == Reason::RefusedStream {
                            unwritten(format!("the server refused the stream ({reason})"))
                        } else {
                            Status::new(
                                Code::Cancelled,
                                format!("the server reset the stream ({reason})"),
                            )
                        };
                        stream.fail(&status, &mut self.wakers);
                    }
                    stream.local_closed = true;
                    stream.pending = BytesMut::new();
                    stream.end_pending = false;
                }
            }
            kind::GOAWAY => {
                let (last, reason, debug) = frame::goaway(payload);
                let why = format!(
                    "the server closed the connection (GOAWAY {reason}{}{})",
                    if debug.is_empty() { "" } else { ": " },
                    String::from_utf8_lossy(debug)
                );
                if st.closed.is_none() {
                    st.closed = Some(unwritten(why.clone()));
                    st.graceful = reason == Reason::NoError;
                }
                // Streams the server never saw are refused: nothing of
                // them ran, so a retry is safe.
                let refused = unwritten(why);
                for (&id, stream) in &mut st.streams {
                    if id > last {
                        stream.fail(&refused, &mut self.wakers);
                        stream.local_closed = true;
                    }
                }
            }
            kind::PUSH_PROMISE => self.fail(
                st,
                Reason::Protocol,
                "PUSH_PROMISE, which this client disabled".into(),
            ),
            // PRIORITY is advice; unknown frame types are ignored.
            _ => {}
        }
    }

    fn on_settings(&mut self, st: &mut State, h: Head, payload: &[u8]) {
        if h.has(flag::ACK) {
            return;
        }
        let peer = match frame::peer_settings(&h, payload) {
            Ok(peer) => peer,
            Err(e) => return self.fail(st, e.reason(), e.to_string()),
        };
        if let Some(size) = peer.table {
            st.encoder.set_max_table_size(size as usize);
        }
        if let Some(size) = peer.max_frame {
            st.peer_max_frame = size as usize;
        }
        if let Some(max) = peer.max_streams {
            st.max_streams = max as usize;
        }
        let window = peer.window;
        frame::put_settings_ack(&mut st.out);
        st.last_data = None;
        if let Some(window) = window {
            let delta = i64::from(window) - i64::from(st.peer_window);
            st.peer_window = window;
            for stream in st.streams.values_mut() {
                stream.send_window += delta;
            }
            st.unblock(&mut self.wakers);
        }
    }

    fn on_window_update(&mut self, st: &mut State, id: u32, increment: u32) {
        if increment == 0 {
            return self.fail(st, Reason::Protocol, "a WINDOW_UPDATE of 0".into());
        }
        if id == 0 {
            st.send_window += i64::from(increment);
            if st.send_window > i64::from(frame::MAX_WINDOW) {
                return self.fail(
                    st,
                    Reason::FlowControl,
                    "the connection's window went over 2^31-1".into(),
                );
            }
        } else if let Some(stream) = st.streams.get_mut(&id) {
            stream.send_window += i64::from(increment);
            if stream.send_window > i64::from(frame::MAX_WINDOW) {
                let status = Status::new(Code::Internal, "the server overflowed a stream's window");
                return st.reset(id, &status, Reason::FlowControl, &mut self.wakers);
            }
        }
        st.unblock(&mut self.wakers);
    }

    fn on_data(&mut self, st: &mut State, h: Head, frame: Payload<'_>) {
        let payload = frame.bytes();
        let len = payload.len() as u32;
        st.recv_unacked += len;
        if st.recv_unacked >= CONNECTION_WINDOW / 2 {
            frame::put_window_update(&mut st.out, 0, st.recv_unacked);
            st.recv_unacked = 0;
            st.last_data = None;
        }
        let range = match frame::data_payload(&h, payload) {
            Ok(range) => range,
            Err(e) => return self.fail(st, e.reason(), e.to_string()),
        };
        if h.stream >= st.next_id {
            return self.fail(
                st,
                Reason::Protocol,
                format!("DATA on stream {}, which was never opened", h.stream),
            );
        }
        // A stream its caller already released: dropped.
        let Some(stream) = st.streams.get_mut(&h.stream) else {
            return;
        };
        if stream.end.is_some() {
            return;
        }
        if !stream.head_seen {
            let status = Status::new(Code::Internal, "the server sent DATA before its headers");
            return st.reset(h.stream, &status, Reason::Protocol, &mut self.wakers);
        }
        stream.recv_window -= i64::from(len);
        if stream.recv_window < 0 {
            let status = Status::new(Code::Internal, "the server overran a stream's window");
            return st.reset(h.stream, &status, Reason::FlowControl, &mut self.wakers);
        }
        let data_len = range.len();
        if stream.data.is_empty() && stream.streaming && len as usize >= CUT_DATA {
            // Taken as it is when nothing waits before it (see CUT_DATA).
            stream.data = frame.cut(range);
        } else {
            stream.data.extend_from_slice(&frame.bytes()[range]);
        }
        if !stream.streaming
            && let Err(e) = keel_wire::grpc::parse_prefix(&stream.data, stream.limit)
        {
            // Refused from its prefix, before its bytes are buffered.
            let status = crate::codec::grpc::message_error(e, Code::ERESPONSE);
            stream.data = BytesMut::new();
            return st.reset(h.stream, &status, Reason::Cancel, &mut self.wakers);
        }
        // Padding is consumed at once; a unary call's data too (its size
        // is bounded by the maximum message size).
        stream.unacked += if stream.streaming {
            len - data_len as u32
        } else {
            len
        };
        if h.has(flag::END_STREAM) {
            stream.end = Some(Ok(()));
            stream.wake_reader(&mut self.wakers);
            return;
        }
        if stream.streaming {
            stream.wake_reader(&mut self.wakers);
        }
        if stream.unacked >= STREAM_WINDOW / 2 {
            frame::put_window_update(&mut st.out, h.stream, stream.unacked);
            stream.recv_window += i64::from(stream.unacked);
            stream.unacked = 0;
            st.last_data = None;
        }
    }

    fn on_headers(&mut self, st: &mut State, id: u32, end_stream: bool) {
        let mut head = HEADS.get();
        let decoded = self
            .decoder
            .decode(self.blocks.block(), MAX_HEADER_LIST, |name, value| {
                head.field(name, value)
            });
        self.blocks.done(KEEP_CAPACITY);
        let too_large = match decoded {
            Ok(()) => false,
            Err(HpackError::TooLarge { .. }) => true,
            Err(e) => return self.fail(st, Reason::Compression, e.to_string()),
        };
        if id % 2 == 0 || id >= st.next_id {
            return self.fail(
                st,
                Reason::Protocol,
                format!("HEADERS on stream {id}, which this client never opened"),
            );
        }
        let Some(stream) = st.streams.get_mut(&id) else {
            return;
        };
        if stream.end.is_some() {
            return;
        }
        if too_large {
            let status = Status::new(
                Code::Internal,
                format!("the server's headers are over {MAX_HEADER_LIST} bytes"),
            );
            return st.reset(id, &status, Reason::Cancel, &mut self.wakers);
        }
        let informational = (100..200).contains(&head.http_status);
        if informational && !end_stream {
            return;
        }
        if !stream.head_seen {
            stream.head_seen = true;
            stream.head = Some(head);
        } else {
            stream.trailers = Some(head);
        }
        if end_stream {
            stream.end = Some(Ok(()));
        }
        stream.wake_reader(&mut self.wakers);
    }
}

/// Runs one connection until the transport is gone (or the connection
/// failed) and no stream is left.
async fn run<S: crate::tls::Duplex>(
    conn: Arc<Connection>,
    mut io: S,
    mut alive: watch::Receiver<()>,
) {
    let peer = conn
        .peer
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let listed =
        crate::connections::Registered::new(crate::connections::Side::Client, peer, "grpc");
    let (mut rd, mut wr) = io.halves();
    let mut input = ReadBuffer::new(BytesMut::new());
    let mut writing = WriteBuffer::default();
    let mut reader = Reader {
        decoder: Decoder::new(keel_wire::hpack::DEFAULT_TABLE_SIZE),
        blocks: HeaderBlocks::default(),
        error: None,
        wakers: Vec::new(),
    };
    let shrink = tokio::time::sleep(IDLE_SHRINK);
    tokio::pin!(shrink);
    let mut shrink_armed = false;
    let mut busy = false;
    let mut dropped = false;
    let mut eof = false;
    let why: String = loop {
        {
            let mut st = conn.lock();
            let st = &mut *st;
            // Every whole frame read so far, in one lock.
            if reader.error.is_none() {
                let cut = each_frame(&mut input.buf, MAX_FRAME_SIZE as usize, |h, payload| {
                    reader.on_frame(st, h, payload);
                    reader.error.is_none()
                });
                if let Err(len) = cut {
                    let why = crate::server::http2::too_large(len, MAX_FRAME_SIZE);
                    reader.fail(st, Reason::FrameSize, why);
                }
            }
            if let Some(error) = &reader.error {
                let status = Status::new(Code::EFAILEDSOCKET, error.clone());
                st.fail_all(&status, &mut reader.wakers);
            }
            if eof && reader.error.is_none() {
                let status = Status::new(Code::EFAILEDSOCKET, "the server closed the connection");
                st.fail_all(&status, &mut reader.wakers);
            }
            if dropped && st.closed.is_none() {
                st.closed = Some(unwritten("the channel was dropped".into()));
            }
            if st.closed.is_some() {
                // Callers waiting for a stream slot learn it now.
                conn.slots.notify_waiters();
            }
            writing.take(&mut st.out);
            st.last_data = None;
            listed.set_in_flight(st.streams.len());
            let done =
                (st.closed.is_some() || reader.error.is_some() || eof) && st.streams.is_empty();
            if done && writing.flushed() && st.out.is_empty() {
                st.ended = true;
                drop(reader.wakers.drain(..));
                break st
                    .closed
                    .as_ref()
                    .map_or_else(|| "closed".to_owned(), |s| s.message().to_owned());
            }
            // Output waiting is activity; a stream that is merely open is
            // not: a quiet watch, or an ended stream whose handle its
            // caller keeps, must not hold the buffers a burst grew.
            if !st.out.is_empty() {
                busy = true;
            }
        }
        conn.woken.woke(reader.wakers.len());
        reader.wakers.drain(..).for_each(Waker::wake);
        input.prepare();
        writing.settle(input.size());
        let flushed = writing.flushed();
        if !shrink_armed && (input.above_idle() || writing.holds()) {
            shrink.as_mut().reset(Instant::now() + IDLE_SHRINK);
            shrink_armed = true;
        }
        let may_read = !eof && reader.error.is_none();
        tokio::select! {
            biased;
            () = conn.wake.notified(), if flushed => conn.woken.let_them_queue().await,
            written = wr.write(writing.pending()), if !flushed => {
                if !writing.wrote(written, &listed) {
                    let mut st = conn.lock();
                    let status = Status::new(Code::EFAILEDSOCKET, "the connection failed while writing");
                    st.fail_all(&status, &mut reader.wakers);
                    st.ended = true;
                    drop(st);
                    reader.wakers.drain(..).for_each(Waker::wake);
                    break "the connection failed while writing".into();
                }
                busy = true;
            }
            read = input.read(&mut rd), if may_read => {
                busy = true;
                match input.filled(read, &listed) {
                    Some(end) => eof |= end,
                    None => eof = true,
                }
            }
            closed = alive.changed(), if !dropped => {
                let _ = closed;
                dropped = true;
            }
            () = &mut shrink, if shrink_armed => if busy {
                busy = false;
                shrink.as_mut().reset(Instant::now() + IDLE_SHRINK);
            } else {
                shrink_armed = false;
                input.quiet();
                writing.quiet();
                let mut st = conn.lock();
                give_back_if_empty(&mut st.out);
                if st.streams.is_empty() {
                    st.streams.shrink_to_fit();
                    st.blocked = Vec::new();
                }
                // Open streams' queues, once empty, go back too.
                for stream in st.streams.values_mut() {
                    give_back_if_empty(&mut stream.pending);
                    give_back_if_empty(&mut stream.data);
                }
                drop(st);
                reader.decoder.shrink();
                reader.blocks.shrink();
                reader.wakers = Vec::new();
            },
        }
    };
    let _ = why;
    let _ = wr.shutdown().await;
}

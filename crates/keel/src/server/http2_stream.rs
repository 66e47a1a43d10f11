//! A streaming call's stream on Keel's HTTP/2 server connection
//! ([`super::http2`]): the state the connection task and the handler share.
//!
//! ```text
//!   connection task                      handler's task
//!   ───────────────                      ──────────────
//!   DATA ──► push ──► recv ────────────► poll_data (taken: `unacked` grows)
//!   WINDOW_UPDATE ◄── work() ◄── dirty ◄─┘
//!   HEADERS/DATA/trailers ◄── work() ◄── send / finish / reset
//! ```
//!
//! The handler never touches the socket or HPACK: it leaves bytes (sealed
//! messages) and intentions (headers, trailers, reset) here and marks the
//! stream dirty; the connection takes them on its next turn, as the peer's
//! flow-control windows allow, and wakes the handler when there is room.
//! So messages sent in a burst leave in as few frames as the windows allow,
//! and a slow reader holds the handler at [`MAX_PENDING`] bytes queued.
//!
//! Owns: one stream's buffers in both directions and the wakeups between
//! its two sides. May not touch: frames, windows, HPACK (the connection's).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::conn_buffers::give_back_if_empty;
use crate::status::Status;
use crate::streaming::{MAX_PENDING, may_queue};

/// The streams of one connection that have work for it, and its wakeup.
#[derive(Default)]
pub(crate) struct Signal {
    dirty: Mutex<Vec<u32>>,
    /// `notify_one` keeps a permit when nobody waits: no wakeup is lost.
    pub(crate) notify: tokio::sync::Notify,
}

impl Signal {
    /// Moves the streams marked since the last call to the end of `into`
    /// (both lists keep their capacity: no allocation per turn).
    pub(crate) fn take(&self, into: &mut Vec<u32>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut dirty);
        if dirty.capacity() > 64 {
            *dirty = Vec::new();
        }
    }
}

/// One stream's shared state.
pub(crate) struct Cell {
    id: u32,
    signal: Arc<Signal>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// DATA received and not taken yet.
    recv: BytesMut,
    /// The request side ended: `Ok` (END_STREAM) or why not.
    recv_end: Option<Result<(), Status>>,
    /// Bytes taken by the handler and not yet given back as window.
    unacked: usize,
    reader: Option<Waker>,
    /// Response headers to send (the handler's first message or its end).
    headers: Option<HeaderMap>,
    /// Whether the handler asked for headers (so trailers are trailers,
    /// not a trailers-only response).
    headers_asked: bool,
    /// Sealed messages waiting for the connection.
    send: BytesMut,
    sender: Option<Waker>,
    /// The trailers that end the response, once the handler finished.
    trailers: Option<HeaderMap>,
    /// The handler dropped its side mid-stream: reset it (CANCEL).
    reset: bool,
    /// Sending failed (the peer reset the stream, or the connection went).
    failed: Option<Status>,
    /// In the connection's dirty list.
    queued: bool,
}

/// What the connection is to do for a stream, taken in one lock.
#[derive(Default)]
pub(crate) struct Work {
    /// Window to give back for data the handler took.
    pub(crate) unacked: usize,
    pub(crate) headers: Option<HeaderMap>,
    /// Message bytes to send (at most what was asked).
    pub(crate) data: Bytes,
    /// Trailers, once every byte before them is out.
    pub(crate) trailers: Option<HeaderMap>,
    /// A trailers-only response: the headers carry the end.
    pub(crate) trailers_only: bool,
    pub(crate) reset: bool,
    /// Bytes still queued after `data`.
    pub(crate) more: bool,
    /// Nothing was taken: only this many bytes are queued, fewer than
    /// [`BATCH`], and the sender may still add to them.
    pub(crate) small: Option<usize>,
}

/// A batch of streamed messages smaller than this waits a few turns of the
/// scheduler for the handler to add to it (see the connection's
/// `SMALL_WAITS`), for two reasons:
/// - each batch the connection takes costs a wakeup of the connection's
///   task and a frame: taken one message at a time, a handler sending in
///   a loop spent most of its time waking the connection (server-streaming
///   16-byte messages went from 0.9x tonic's rate to 1.2x with batches up
///   to 16 KiB);
/// - h2 peers (hyper, tonic) count DATA frames under 256 bytes they have
///   not read yet, and close a connection that receives about a hundred
///   (ENHANCE_YOUR_CALM).
pub(crate) const BATCH: usize = 16 * 1024;

impl Cell {
    pub(crate) fn new(id: u32, signal: Arc<Signal>) -> Arc<Cell> {
        Arc::new(Cell {
            id,
            signal,
            state: Mutex::new(State::default()),
        })
    }

    #[inline]
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the stream on the connection's list (once until taken).
    fn mark(&self, st: &mut State) {
        if !st.queued {
            st.queued = true;
            self.signal
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.id);
            self.signal.notify.notify_one();
        }
    }

    // The handler's side.

    /// The next bytes of the request side: `None` once it ended cleanly.
    pub(crate) fn poll_data(&self, cx: &mut Context<'_>) -> Poll<Option<Result<BytesMut, Status>>> {
        let mut st = self.lock();
        if !st.recv.is_empty() {
            let data = st.recv.split();
            st.unacked += data.len();
            self.mark(&mut st);
            return Poll::Ready(Some(Ok(data)));
        }
        match &st.recv_end {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(status)) => Poll::Ready(Some(Err(status.clone()))),
            None => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Asks for the response headers to go out before what follows.
    pub(crate) fn send_headers(&self, headers: HeaderMap) {
        let mut st = self.lock();
        st.headers_asked = true;
        st.headers = Some(headers);
        self.mark(&mut st);
    }

    /// Queues `len` bytes written by `append`, waiting while
    /// [`MAX_PENDING`] bytes are queued already.
    pub(crate) async fn send(
        &self,
        len: usize,
        append: impl Fn(&mut BytesMut),
    ) -> Result<(), Status> {
        // Queued or not, as a flag: the failure (a large value) is fetched
        // only when there is one.
        let queued = std::future::poll_fn(|cx| {
            let mut st = self.lock();
            match self.queue_now(&mut st, len, &append) {
                Some(queued) => Poll::Ready(queued),
                None => {
                    st.sender = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        if queued {
            return Ok(());
        }
        let failed = self.lock().failed.clone();
        Err(failed
            .unwrap_or_else(|| Status::new(crate::status::Code::Internal, "the stream failed")))
    }

    /// Queues `len` bytes written by `append` if there is room now and the
    /// stream has not failed; `false` otherwise (then [`send`](Self::send)
    /// waits, or tells the failure).
    #[inline]
    pub(crate) fn try_send(&self, len: usize, append: impl FnOnce(&mut BytesMut)) -> bool {
        self.queue_now(&mut self.lock(), len, append) == Some(true)
    }

    /// Queues `len` bytes written by `append` if there is room: `Some(true)`
    /// queued, `Some(false)` the stream failed, `None` no room yet.
    #[inline]
    fn queue_now(
        &self,
        st: &mut State,
        len: usize,
        append: impl FnOnce(&mut BytesMut),
    ) -> Option<bool> {
        if st.failed.is_some() {
            return Some(false);
        }
        if !may_queue(st.send.len(), len) {
            return None;
        }
        append(&mut st.send);
        self.mark(st);
        Some(true)
    }

    /// Ends the response: `headers` first when none went yet (a
    /// trailers-only response when `trailers_only`).
    pub(crate) fn finish(&self, trailers: HeaderMap) {
        let mut st = self.lock();
        st.trailers = Some(trailers);
        self.mark(&mut st);
    }

    /// The handler gave up mid-stream: the peer is told (RST_STREAM).
    pub(crate) fn reset(&self) {
        let mut st = self.lock();
        st.reset = true;
        st.send = BytesMut::new();
        self.mark(&mut st);
    }

    // The connection's side.

    /// The connection went quiet: the queues' buffers, once empty, go
    /// back (R7), so a stream open and idle after a burst holds none.
    pub(crate) fn shrink(&self) {
        let mut st = self.lock();
        give_back_if_empty(&mut st.send);
        give_back_if_empty(&mut st.recv);
    }

    /// DATA arrived.
    pub(crate) fn push(&self, data: &[u8]) {
        let mut st = self.lock();
        st.recv.extend_from_slice(data);
        if let Some(reader) = st.reader.take() {
            reader.wake();
        }
    }

    /// The request side ended (END_STREAM), or the stream failed: both
    /// sides learn it.
    pub(crate) fn end_recv(&self, result: Result<(), Status>) {
        let mut st = self.lock();
        if let Err(status) = &result {
            st.failed.get_or_insert_with(|| status.clone());
            st.send = BytesMut::new();
            if let Some(sender) = st.sender.take() {
                sender.wake();
            }
        }
        st.recv_end.get_or_insert(result);
        if let Some(reader) = st.reader.take() {
            reader.wake();
        }
    }

    /// Takes what is to be done, sending at most `room` message bytes; a
    /// batch under [`BATCH`] stays unless `take_small`.
    pub(crate) fn work(&self, room: usize, take_small: bool) -> Work {
        let mut st = self.lock();
        st.queued = false;
        let mut work = Work {
            unacked: std::mem::take(&mut st.unacked),
            reset: st.reset,
            ..Work::default()
        };
        if st.reset || st.failed.is_some() {
            return work;
        }
        work.headers = st.headers.take();
        if !take_small && st.trailers.is_none() && !st.send.is_empty() && st.send.len() < BATCH {
            work.small = Some(st.send.len());
            work.more = true;
            return work;
        }
        let take = st.send.len().min(room);
        if take > 0 {
            work.data = st.send.split_to(take).freeze();
            if let Some(sender) = st.sender.take() {
                sender.wake();
            }
        }
        work.more = !st.send.is_empty();
        if !work.more && st.trailers.is_some() {
            work.trailers_only = !st.headers_asked;
            work.trailers = st.trailers.take();
        }
        if st.send.is_empty() && st.send.capacity() > MAX_PENDING {
            st.send = BytesMut::new();
        }
        work
    }
}

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

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Bytes queued in `send` when the handler last added to it: never
    /// fewer than are there now (only the connection takes from it), so a
    /// batch that fits under this fits under the queue's bound (see
    /// [`Cell::batched`]).
    queued_hint: AtomicUsize,
}

/// The messages a handler queued during the poll of its task that is
/// running on this thread, not yet in its cell (see [`Cell::batched`]).
struct Batch {
    /// The cell (its address) whose handler's task is being polled here;
    /// 0 when none.
    key: usize,
    /// What the cell's queue held when the poll began (its hint).
    queued: usize,
    bytes: Option<BytesMut>,
}

thread_local! {
    static HANDLER_BATCH: RefCell<Batch> = const {
        RefCell::new(Batch {
            key: 0,
            queued: 0,
            bytes: None,
        })
    };
}

/// Clears this thread's batch when a batched poll ends, however it ends
/// (a handler that panics loses what it batched in that poll, as its
/// stream is reset anyway).
struct BatchScope;

impl Drop for BatchScope {
    fn drop(&mut self) {
        HANDLER_BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            batch.key = 0;
            batch.bytes = None;
        });
    }
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
            queued_hint: AtomicUsize::new(0),
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

    /// This cell's key in [`HANDLER_BATCH`].
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Runs `poll`, one poll of the task of this stream's handler, with the
    /// stream's batch open on this thread, then hands what the handler
    /// queued meanwhile to the connection in one go.
    ///
    /// A handler sending in a loop took the cell's lock once per message
    /// (two atomic operations, which were three quarters of the time its
    /// `send` took); batched, messages go into a buffer of the thread's
    /// own, and the lock is taken once per [`BATCH`] bytes and once per
    /// poll. A message is handed over at the latest when the handler's
    /// task stops (waits for anything, yields, or ends), and a batch goes
    /// as soon as it reaches [`BATCH`], the least the connection takes
    /// while the handler keeps adding; only a handler that computes for a
    /// long time between two sends without waiting holds the first back
    /// until then (and its worker with it, batched or not).
    ///
    /// One server-streaming call of 16-byte messages took the server 78-92
    /// ns of CPU per message rather than 89-99, and ran at 8.4-10.0 million
    /// messages/s rather than 7.8-8.8 (`keel-bench grpc --streaming`,
    /// Keel's pair, builds alternating, five runs each). A poll inside
    /// another stream's batched poll (a handler driving another stream's
    /// task by hand) is not batched.
    pub(crate) fn batched<R>(&self, poll: impl FnOnce() -> R) -> R {
        let opened = HANDLER_BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            if batch.key != 0 {
                return false;
            }
            batch.key = self.key();
            batch.queued = self.queued_hint.load(Ordering::Relaxed);
            true
        });
        if !opened {
            return poll();
        }
        let scope = BatchScope;
        let out = poll();
        let bytes = HANDLER_BATCH.with(|batch| batch.borrow_mut().bytes.take());
        drop(scope);
        if let Some(bytes) = bytes.filter(|bytes| !bytes.is_empty()) {
            self.hand_over(&mut self.lock(), &bytes);
        }
        out
    }

    /// Runs `f` on this thread's batch if it is this cell's (`None`
    /// otherwise: no batched poll of this stream is running here).
    fn with_batch<R>(&self, f: impl FnOnce(Option<&mut Batch>) -> R) -> R {
        HANDLER_BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            let own = batch.key == self.key();
            f(own.then_some(&mut *batch))
        })
    }

    /// Drops this thread's batch if it is this cell's (the stream is reset).
    fn discard_batch(&self) {
        self.with_batch(|batch| {
            if let Some(bytes) = batch.and_then(|batch| batch.bytes.as_mut()) {
                bytes.clear();
            }
        });
    }

    /// Appends a batch to the queue (dropped if the stream failed).
    fn hand_over(&self, st: &mut State, bytes: &[u8]) {
        if st.failed.is_some() || st.reset {
            return;
        }
        st.send.extend_from_slice(bytes);
        self.queued_hint.store(st.send.len(), Ordering::Relaxed);
        self.mark(st);
    }

    /// Hands this thread's batch of this cell over, before anything that
    /// must follow it, and notes what the queue holds now.
    fn flush_batch(&self, st: &mut State) {
        self.with_batch(|batch| {
            let Some(batch) = batch else {
                return;
            };
            if let Some(bytes) = batch.bytes.as_mut()
                && !bytes.is_empty()
            {
                self.hand_over(st, bytes);
                bytes.clear();
            }
            batch.queued = st.send.len();
        });
    }

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
            self.flush_batch(&mut st);
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
        // Into the batch when it is open, small enough and within the
        // bound; else `append` comes back for the queue itself.
        let batched = self.with_batch(|batch| {
            let Some(batch) = batch.filter(|_| len <= BATCH) else {
                return Err(append);
            };
            let bytes = batch.bytes.get_or_insert_with(BytesMut::new);
            if !may_queue(batch.queued + bytes.len(), len) {
                return Err(append);
            }
            append(bytes);
            Ok(bytes.len() >= BATCH)
        });
        match batched {
            Ok(false) => true,
            Ok(true) => {
                let mut st = self.lock();
                self.flush_batch(&mut st);
                st.failed.is_none()
            }
            Err(append) => {
                let mut st = self.lock();
                self.flush_batch(&mut st);
                self.queue_now(&mut st, len, append) == Some(true)
            }
        }
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
        self.queued_hint.store(st.send.len(), Ordering::Relaxed);
        self.mark(st);
        Some(true)
    }

    /// Ends the response: `headers` first when none went yet (a
    /// trailers-only response when `trailers_only`).
    pub(crate) fn finish(&self, trailers: HeaderMap) {
        let mut st = self.lock();
        self.flush_batch(&mut st);
        st.trailers = Some(trailers);
        self.mark(&mut st);
    }

    /// The handler gave up mid-stream: the peer is told (RST_STREAM).
    pub(crate) fn reset(&self) {
        let mut st = self.lock();
        self.discard_batch();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    fn cell(id: u32) -> Arc<Cell> {
        Cell::new(id, Arc::new(Signal::default()))
    }

    /// Everything queued so far, as the connection takes it.
    fn queued(cell: &Cell) -> Vec<u8> {
        cell.work(usize::MAX, true).data.to_vec()
    }

    fn put(byte: u8, n: usize) -> impl FnOnce(&mut BytesMut) {
        move |queue| queue.extend_from_slice(&vec![byte; n])
    }

    #[test]
    fn a_poll_hands_its_messages_over_when_it_ends() {
        let c = cell(1);
        c.batched(|| {
            assert!(c.try_send(3, put(1, 3)));
            assert!(c.try_send(2, put(2, 2)));
            assert!(queued(&c).is_empty(), "nothing reached the connection yet");
        });
        assert_eq!(queued(&c), [1, 1, 1, 2, 2]);
        // Outside a batched poll, a message goes straight to the queue.
        assert!(c.try_send(1, put(3, 1)));
        assert_eq!(queued(&c), [3]);
    }

    #[test]
    fn a_batch_goes_at_batch_size_and_before_what_follows_it() {
        let c = cell(1);
        c.batched(|| {
            assert!(c.try_send(BATCH - 1, put(1, BATCH - 1)));
            assert!(queued(&c).is_empty());
            assert!(c.try_send(1, put(2, 1)));
            assert_eq!(queued(&c).len(), BATCH, "handed over on reaching BATCH");
            assert!(c.try_send(1, put(3, 1)));
            // Larger than a batch: straight to the queue, after the batch.
            assert!(c.try_send(BATCH + 1, put(4, BATCH + 1)));
            let queue = queued(&c);
            assert_eq!(queue.len(), BATCH + 2);
            assert_eq!(queue[0], 3);
            assert!(queue[1..].iter().all(|&b| b == 4));
            assert!(c.try_send(1, put(5, 1)));
            c.finish(HeaderMap::new());
        });
        let work = c.work(usize::MAX, true);
        assert_eq!(&work.data[..], [5], "the batch went before the trailers");
        assert!(work.trailers.is_some());
    }

    #[test]
    fn the_queue_bound_counts_what_a_poll_batched() {
        let c = cell(1);
        let mut sent = 0;
        c.batched(|| {
            while c.try_send(1000, put(0, 1000)) {
                sent += 1000;
                assert!(sent <= MAX_PENDING, "{sent} queued and batched");
            }
        });
        assert!(sent > MAX_PENDING - 1000, "{sent}");
        assert_eq!(queued(&c).len(), sent);
    }

    #[test]
    fn a_poll_that_panics_leaves_no_batch_open() {
        let (c, d) = (cell(1), cell(2));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.batched(|| {
                assert!(c.try_send(1, put(1, 1)));
                panic!("a handler panicked");
            })
        }));
        assert!(panicked.is_err());
        assert!(queued(&c).is_empty(), "its batch went with it");
        // The thread batches the next poll, of any stream.
        d.batched(|| {
            assert!(d.try_send(1, put(2, 1)));
            assert!(queued(&d).is_empty());
        });
        assert_eq!(queued(&d), [2]);
        assert!(c.try_send(1, put(3, 1)));
        assert_eq!(queued(&c), [3]);
    }

    #[test]
    fn a_poll_inside_another_is_not_batched() {
        let (c, d) = (cell(1), cell(2));
        c.batched(|| {
            d.batched(|| {
                assert!(d.try_send(1, put(2, 1)));
                assert_eq!(queued(&d), [2], "straight to its queue");
                assert!(c.try_send(1, put(1, 1)));
            });
            assert!(queued(&c).is_empty(), "the outer batch is still open");
        });
        assert_eq!(queued(&c), [1]);
    }

    #[test]
    fn a_reset_or_a_failure_drops_the_batch() {
        let c = cell(1);
        c.batched(|| {
            assert!(c.try_send(1, put(1, 1)));
            c.reset();
        });
        let work = c.work(usize::MAX, true);
        assert!(work.reset);
        assert!(work.data.is_empty());
        let c = cell(3);
        c.batched(|| {
            assert!(c.try_send(1, put(1, 1)));
            c.end_recv(Err(Status::new(Code::Cancelled, "reset by the client")));
            // The batch that fills up next tells the failure.
            assert!(!c.try_send(BATCH, put(2, BATCH)));
        });
        assert!(queued(&c).is_empty());
    }
}

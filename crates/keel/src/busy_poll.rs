//! Busy-polling: waiting for a lone caller's next request, or for its
//! answer, without sleeping.
//!
//! A connection that has nothing to do normally waits for its next bytes
//! in the runtime: the worker parks in `epoll_wait`, and the bytes'
//! arrival wakes it. When one caller sends one call at a time (1x1), that
//! wakeup is most of a round trip, on both sides: on an idle CPU it is a
//! halt and an interrupt, tens of microseconds on a virtual machine. So
//! such a connection first polls its socket itself, with plain
//! non-blocking `recv`s, for at most a short window (50 us by default),
//! and waits the ordinary way only if nothing came:
//!
//! - a server connection, once it has answered everything, for the next
//!   request;
//! - a client connection, once it has written a lone call's request, for
//!   the answer; it stops for a call queued meanwhile (which it must
//!   write) and for its deadline sweep, and never polls right after a
//!   read, while a caller that read woke may be waiting for the worker.
//!
//! With both sides polling, a 1x1 round trip never waits for a CPU to wake,
//! and each side's CPU per call is about the call's period, shorter than
//! one wakeup (`keel-bench pingpong`).
//!
//! Spinning costs CPU and holds a worker, so it is reserved for where it
//! pays:
//!
//! - **A lone caller.** The last [`LONE_READS`] reads each carried exactly
//!   one request (one answer, on a client), and nothing is unwritten; a
//!   server has no call in flight, a client exactly one, just sent: a
//!   connection carrying many calls at once finds its next bytes ready
//!   anyway.
//! - **It works.** A window that ends with nothing read makes the
//!   connection skip the next 1, 2, 4, ... up to [`MAX_SKIP`] chances, so a
//!   caller that pauses between calls costs one window per thousand calls
//!   at most; a window that ends with bytes resets that.
//! - **The process's only connection.** A spinning worker runs nothing
//!   else, and the other workers may all be asleep (tokio wakes one for
//!   new work, not for a busy one), so other sockets of the process could
//!   wait for the window: a connection spins only when it is the one open
//!   Keel connection of the process, server or client side. A server with
//!   several callers, or one that also calls out, never spins; nor,
//!   therefore, do two connections at once.
//! - **Others get their turn.** The task yields before every
//!   [`YIELD_EVERY`]th window (a yield per window cost a third of the
//!   gain), so what calls woke, timers and other I/O get the worker (tokio
//!   polls its driver when a task yields) at least that often, not only
//!   when the runtime's cooperative budget runs out; and a shutdown notice
//!   is never spun past.
//! - **No other worker is woken.** On Linux, once a window's first read
//!   finds nothing, the socket's read low-water mark (`SO_RCVLOWAT`) is
//!   raised above a small request's size, so its arrival does not wake
//!   the worker sleeping in `epoll_wait` on the connection's behalf:
//!   without it, that worker woke for every call (measured at 30k calls/s:
//!   one context switch and one `epoll_wait` per call, a third of a core)
//!   only to find the task already running. An edge that comes while the
//!   mark is up is lost to `epoll`, which is safe because nothing waits
//!   on it: a window that ends without reading puts the mark back at 1,
//!   and one that read leaves it up only while the connection answers or
//!   writes (a lone caller sends nothing more before its answer); the
//!   connection puts it back at 1 before it waits in the runtime for what
//!   the socket may bring ([`BusyPoll::settle`]), and lowering it signals
//!   the socket if bytes are waiting. That saves a `setsockopt` each way
//!   per call. A larger request simply wakes that worker, as before.
//! - **Plain TCP only, two workers or more.** A TLS stream has bytes
//!   buffered the socket cannot see; a runtime with one worker (or a
//!   current-thread one) would have nothing left to run the rest.
//!
//! The window is a server option ([`ServerBuilder::busy_poll`](
//! crate::server::ServerBuilder::busy_poll)) and a channel's
//! ([`ChannelBuilder::busy_poll`](crate::ChannelBuilder::busy_poll));
//! `None` turns spinning off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::tls::Duplex;

/// How long a lone connection polls its socket before waiting (default).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_micros(50);
/// Reads in a row that must each have carried one request.
pub(crate) const LONE_READS: u8 = 8;
/// Windows in a row without yielding to the runtime.
pub(crate) const YIELD_EVERY: u8 = 8;
/// The most chances skipped after windows that found nothing.
pub(crate) const MAX_SKIP: u16 = 1024;
/// The most bytes one spinning `recv` takes (the normal read takes the
/// rest); no more than the read buffer has room for.
const SPIN_READ: usize = 2048;
/// The socket's read low-water mark while a window polls it: more than a
/// small request, and a quarter of Linux's default receive buffer, so
/// that setting it leaves the buffer as it is on ordinary sockets.
const SPIN_LOW_WATER: i32 = 32 * 1024;

/// One connection's busy-polling state.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    /// The window; zero: never spin.
    window: Duration,
    /// Requests cut since the last read.
    requests: u32,
    /// Reads in a row that carried one request each before the last one
    /// (up to `LONE_READS`).
    lone: u8,
    /// Chances left to skip, and how many the next empty window skips.
    skip: u16,
    backoff: u16,
    /// Windows since the task last yielded.
    unyielded: u8,
    /// The socket's read mark: whether it may be raised, and whether it is.
    mark: Mark,
}

impl BusyPoll {
    /// A connection's state; `window` `None` or zero never spins, nor
    /// does a connection served on a current-thread runtime (spinning
    /// would hold the only worker, the one its caller may need).
    pub(crate) fn new(window: Option<Duration>) -> BusyPoll {
        let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|h| {
            h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread
                && h.metrics().num_workers() >= 2
        });
        BusyPoll {
            window: window.filter(|_| multi_thread).unwrap_or(Duration::ZERO),
            requests: 0,
            lone: 0,
            skip: 0,
            backoff: 0,
            unyielded: 0,
            mark: Mark::Unknown,
        }
    }

    /// Whether the task should yield before the window [`due`](Self::due)
    /// allowed (see the module's rules).
    pub(crate) fn yield_first(&mut self) -> bool {
        self.unyielded += 1;
        if self.unyielded < YIELD_EVERY {
            return false;
        }
        self.unyielded = 0;
        true
    }

    /// One request (on a client: one answer) was cut from the input.
    pub(crate) fn request(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    /// A read brought bytes: the requests the previous one carried are
    /// judged, and counting starts again.
    pub(crate) fn read(&mut self) {
        self.lone = if self.requests == 1 {
            (self.lone + 1).min(LONE_READS)
        } else {
            0
        };
        self.requests = 0;
    }

    /// Whether the connection spins before its next wait, given that it
    /// waits for a lone caller's next bytes (a server: it has answered
    /// everything; a client: it has just written one call) and holds no
    /// partial frame. Uses up a skipped chance.
    pub(crate) fn due(&mut self) -> bool {
        self.due_among(crate::connections::open_count())
    }

    /// [`due`](Self::due), `open` connections being open in the process.
    fn due_among(&mut self, open: usize) -> bool {
        // The streak counts the reads before this one, which must also
        // have carried one request.
        if self.window.is_zero() || self.lone + 1 < LONE_READS || self.requests != 1 {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        open == 1
    }

    /// Polls `rd` for up to the window (call it when [`due`](Self::due)
    /// said so, after yielding: see the module's rules), appending what
    /// arrives to `buf`, for as long as `keep_on` says (asked between
    /// reads: a client stops for a call queued meanwhile, or for its
    /// deadline sweep): `Some` with the read's result (`Ok(0)`: the peer
    /// closed), `None` when it did not spin, nothing came or it stopped
    /// (then wait the ordinary way). The caller must call
    /// [`read`](Self::read) for a `Some(Ok(n))` as for any read, and
    /// [`settle`](Self::settle) before it waits for reading in the runtime.
    pub(crate) fn spin<S: Duplex>(
        &mut self,
        rd: &S::Reader<'_>,
        buf: &mut BytesMut,
        keep_on: impl FnMut() -> bool,
    ) -> Option<std::io::Result<usize>> {
        // No other worker is woken for what the window reads (see the
        // module's rules): the mark goes up once a read found nothing
        // (bytes already there were signalled anyway). A window that read
        // leaves it up for the next one (a lone caller's next bytes come
        // only after the answer: a setsockopt each way per call saved);
        // any other end puts it back at 1, and so does `settle` before
        // the connection waits for reading in the runtime, so that every
        // such wait sees every byte.
        let mut mark = self.mark;
        let got = self.poll(
            buf,
            &STATS,
            |room| {
                let read = S::recv_now(rd, room);
                if let Some(Err(e)) = &read
                    && e.kind() == std::io::ErrorKind::WouldBlock
                {
                    mark.raise::<S>(rd);
                }
                read
            },
            keep_on,
        );
        self.mark = mark;
        if !matches!(got, Some(Ok(n)) if n > 0) {
            self.settle::<S>(rd);
        }
        got
    }

    /// Puts the read mark back at 1 if a window left it raised: call it
    /// before waiting in the runtime for what the socket may bring.
    pub(crate) fn settle<S: Duplex>(&mut self, rd: &S::Reader<'_>) {
        if self.mark == Mark::Up {
            self.mark = Mark::Down;
            let lowered = S::set_read_low_water(rd, 1);
            debug_assert!(lowered.is_ok(), "lowering the read mark: {lowered:?}");
        }
    }

    /// Polls with `recv` (a non-blocking read) for up to the window,
    /// appending what it reads to `buf`, and learns from the outcome.
    fn poll(
        &mut self,
        buf: &mut BytesMut,
        stats: &Stats,
        recv: impl FnMut(&mut [u8]) -> Option<std::io::Result<usize>>,
        keep_on: impl FnMut() -> bool,
    ) -> Option<std::io::Result<usize>> {
        // Never more than `buf` has room for: polling allocates nothing.
        let spare = SPIN_READ.min(buf.capacity() - buf.len());
        if spare == 0 {
            return None;
        }
        let mut room = [0u8; SPIN_READ];
        let start = Instant::now();
        let got = poll_for(start, self.window, &mut room[..spare], recv, keep_on);
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.nanos.fetch_add(spent, Ordering::Relaxed);
        match got {
            Polled::Read(n) => {
                if n > 0 {
                    stats.hits.fetch_add(1, Ordering::Relaxed);
                }
                buf.extend_from_slice(&room[..n]);
                self.backoff = 0;
                Some(Ok(n))
            }
            Polled::Failed(e) => Some(Err(e)),
            Polled::Nothing => {
                stats.misses.fetch_add(1, Ordering::Relaxed);
                self.backoff = (self.backoff * 2).clamp(1, MAX_SKIP);
                self.skip = self.backoff;
                None
            }
            // Neither a hit nor a miss: the caller had other work.
            Polled::Stopped => None,
            Polled::Unsupported => {
                self.window = Duration::ZERO;
                None
            }
        }
    }
}

/// A connection's socket read mark: whether it may be raised, and whether
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Not looked at yet (at 1).
    Unknown,
    /// At 1, and may be raised.
    Down,
    /// Raised.
    Up,
    /// At 1 for good: the buffer cannot hold it raised.
    Refused,
}

impl Mark {
    /// Raises `rd`'s read mark (once: it stays up until lowered); false where it may not or
    /// could not (then the other worker may wake, nothing worse). Linux
    /// clamps a socket's receive window for good to a mark that half its
    /// receive buffer cannot hold (`tcp_set_rcvlowat`), so the buffer is
    /// looked at once, at the first raise, and must hold four marks (the
    /// default buffer, 128 KiB, does).
    fn raise<S: Duplex>(&mut self, rd: &S::Reader<'_>) -> bool {
        if *self == Mark::Unknown {
            *self = match S::read_buffer(rd) {
                Some(bytes) if bytes >= 4 * SPIN_LOW_WATER as usize => Mark::Down,
                _ => Mark::Refused,
            };
        }
        if *self == Mark::Down && S::set_read_low_water(rd, SPIN_LOW_WATER).is_ok() {
            *self = Mark::Up;
        }
        *self == Mark::Up
    }
}

/// What busy-polling did in the process, for `/vars`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Windows that found the next request.
    pub(crate) hits: AtomicU64,
    /// Windows that ended with nothing.
    pub(crate) misses: AtomicU64,
    /// Time spent polling, in nanoseconds.
    pub(crate) nanos: AtomicU64,
}

/// The process's busy-polling, every connection's (server and client) together.
pub(crate) static STATS: Stats = Stats {
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    nanos: AtomicU64::new(0),
};

/// What a window of polling found.
enum Polled {
    /// Bytes (at the start of the room given), or the peer's close (`0`).
    Read(usize),
    Failed(std::io::Error),
    Nothing,
    /// `keep_on` said to stop before anything came.
    Stopped,
    /// The stream cannot be read without the runtime.
    Unsupported,
}

/// Calls `recv` (a non-blocking read into `room`) until it reads, fails,
/// `window` has passed, or `keep_on` says to stop.
fn poll_for(
    start: Instant,
    window: Duration,
    room: &mut [u8],
    mut recv: impl FnMut(&mut [u8]) -> Option<std::io::Result<usize>>,
    mut keep_on: impl FnMut() -> bool,
) -> Polled {
    loop {
        match recv(room) {
            None => return Polled::Unsupported,
            Some(Ok(n)) => return Polled::Read(n),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Some(Err(e)) => return Polled::Failed(e),
        }
        if start.elapsed() >= window {
            return Polled::Nothing;
        }
        if !keep_on() {
            return Polled::Stopped;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    const WINDOW: Duration = Duration::from_millis(1);

    /// A multi-thread runtime's connection state (spinning needs one).
    fn state(window: Option<Duration>) -> BusyPoll {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async { BusyPoll::new(window) })
    }

    /// `n` reads of one request each.
    fn lone_reads(bp: &mut BusyPoll, n: u8) {
        for _ in 0..n {
            bp.read();
            bp.request();
        }
    }

    fn would_block() -> Option<std::io::Result<usize>> {
        Some(Err(Error::from(ErrorKind::WouldBlock)))
    }

    /// Spins (when due) with a read that finds nothing `empty` times,
    /// then `then`; how many times it was called, and what the spin
    /// returned.
    fn spin_once(
        bp: &mut BusyPoll,
        buf: &mut BytesMut,
        empty: usize,
        then: Option<std::io::Result<&[u8]>>,
    ) -> (usize, Option<std::io::Result<usize>>) {
        if !bp.due_among(1) {
            return (0, None);
        }
        let mut calls = 0;
        let mut then = Some(then);
        let got = bp.poll(
            buf,
            &Stats::default(),
            |room| {
                calls += 1;
                if calls <= empty {
                    return would_block();
                }
                match then.take().flatten() {
                    None => would_block(),
                    Some(Ok(bytes)) => {
                        room[..bytes.len()].copy_from_slice(bytes);
                        Some(Ok(bytes.len()))
                    }
                    Some(Err(e)) => Some(Err(e)),
                }
            },
            || true,
        );
        (calls, got)
    }

    #[test]
    fn a_window_told_to_stop_is_neither_a_hit_nor_a_miss() {
        let mut bp = state(Some(WINDOW));
        lone_reads(&mut bp, LONE_READS);
        assert!(bp.due_among(1));
        let stats = Stats::default();
        let mut asked = 0;
        let got = bp.poll(
            &mut BytesMut::with_capacity(64),
            &stats,
            |_| would_block(),
            || {
                asked += 1;
                asked < 3
            },
        );
        assert!(got.is_none());
        assert_eq!(asked, 3, "asked between reads until told to stop");
        assert_eq!(stats.hits.load(Ordering::Relaxed), 0);
        assert_eq!(stats.misses.load(Ordering::Relaxed), 0);
        assert!(
            bp.due_among(1),
            "no backoff: the next chance is not skipped"
        );
    }

    #[test]
    fn only_a_lone_caller_spins() {
        let mut bp = state(Some(WINDOW));
        let mut buf = BytesMut::with_capacity(64);
        lone_reads(&mut bp, LONE_READS - 1);
        assert_eq!(spin_once(&mut bp, &mut buf, 0, Some(Ok(b"x"))).0, 0);
        lone_reads(&mut bp, 1);
        let (calls, got) = spin_once(&mut bp, &mut buf, 3, Some(Ok(b"next")));
        assert_eq!((calls, got.unwrap().unwrap()), (4, 4));
        assert_eq!(&buf[..], b"next");
        // A read that carried two requests ends the streak.
        bp.read();
        bp.request();
        bp.request();
        bp.read();
        bp.request();
        assert_eq!(spin_once(&mut bp, &mut buf, 0, Some(Ok(b"x"))).0, 0);
        lone_reads(&mut bp, LONE_READS);
        assert_eq!(spin_once(&mut bp, &mut buf, 0, Some(Ok(b"x"))).0, 1);
        // Two requests since the last read: not lone now.
        lone_reads(&mut bp, LONE_READS);
        bp.request();
        assert_eq!(spin_once(&mut bp, &mut buf, 0, Some(Ok(b"x"))).0, 0);
    }

    #[test]
    fn empty_windows_back_off_and_a_hit_resets() {
        let mut bp = state(Some(WINDOW));
        let mut buf = BytesMut::with_capacity(64);
        lone_reads(&mut bp, LONE_READS);
        let mut backoffs = Vec::new();
        for _ in 0..12 {
            let (calls, got) = spin_once(&mut bp, &mut buf, usize::MAX, None);
            assert!(calls >= 1 && got.is_none(), "the window ran out: {calls}");
            backoffs.push(bp.backoff);
            for _ in 0..bp.backoff {
                assert_eq!(
                    spin_once(&mut bp, &mut buf, 0, None).0,
                    0,
                    "a chance skipped"
                );
            }
        }
        assert_eq!(
            backoffs,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1024]
        );
        // A window that finds bytes resets the back-off.
        assert!(spin_once(&mut bp, &mut buf, 0, Some(Ok(b"y"))).1.is_some());
        assert_eq!((bp.skip, bp.backoff), (0, 0));
    }

    #[test]
    fn a_close_or_an_error_ends_the_spin_with_it() {
        let mut bp = state(Some(WINDOW));
        let mut buf = BytesMut::with_capacity(64);
        lone_reads(&mut bp, LONE_READS);
        assert_eq!(
            spin_once(&mut bp, &mut buf, 2, Some(Ok(b"")))
                .1
                .unwrap()
                .unwrap(),
            0
        );
        let reset = Error::from(ErrorKind::ConnectionReset);
        let got = spin_once(&mut bp, &mut buf, 0, Some(Err(reset))).1.unwrap();
        assert_eq!(got.unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert!(buf.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_window_raises_the_low_water_mark_and_settling_restores_it() {
        use crate::sys::read_low_water;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (conn, _) = listener.accept().unwrap();
            conn.set_nonblocking(true).unwrap();
            // The same socket, for the sender's thread to watch.
            let watched = conn.try_clone().unwrap();
            let mut conn = tokio::net::TcpStream::from_std(conn).unwrap();
            let (rd, _wr) = conn.split();
            let mut buf = BytesMut::with_capacity(64);

            // A window that finds nothing leaves the mark at 1.
            let mut short = BusyPoll::new(Some(WINDOW));
            lone_reads(&mut short, LONE_READS);
            assert!(short.due_among(1));
            assert!(
                short
                    .spin::<tokio::net::TcpStream>(&rd, &mut buf, || true)
                    .is_none()
            );
            assert_eq!(read_low_water(&watched), 1);

            // The peer sends once it sees the mark raised: the window
            // finds the bytes, and leaves the mark up for the next one
            // (no setsockopt each way per call) until the connection
            // settles before waiting in the runtime.
            let sender = std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while read_low_water(&watched) != SPIN_LOW_WATER {
                    assert!(Instant::now() < deadline, "the mark was never raised");
                    std::hint::spin_loop();
                }
                std::io::Write::write_all(&mut peer, b"request").unwrap();
                (peer, watched)
            });
            let mut long = BusyPoll::new(Some(Duration::from_secs(10)));
            lone_reads(&mut long, LONE_READS);
            assert!(long.due_among(1));
            let got = long.spin::<tokio::net::TcpStream>(&rd, &mut buf, || true);
            assert_eq!(got.unwrap().unwrap(), 7);
            assert_eq!(&buf[..], b"request");
            let (mut peer, watched) = sender.join().unwrap();
            assert_eq!(
                read_low_water(&watched),
                SPIN_LOW_WATER,
                "left up after a hit"
            );
            // The next window reads without raising it again...
            std::io::Write::write_all(&mut peer, b"next").unwrap();
            let mut next = BytesMut::with_capacity(64);
            lone_reads(&mut long, LONE_READS);
            assert!(long.due_among(1));
            let got = long.spin::<tokio::net::TcpStream>(&rd, &mut next, || true);
            assert_eq!(got.unwrap().unwrap(), 4);
            assert_eq!(read_low_water(&watched), SPIN_LOW_WATER);
            // ... and settling puts it back at 1, once.
            long.settle::<tokio::net::TcpStream>(&rd);
            assert_eq!(read_low_water(&watched), 1);
            assert_ne!(long.mark, Mark::Up);
            // A window that finds nothing ends with it at 1 too.
            lone_reads(&mut long, LONE_READS);
            long.window = WINDOW;
            assert!(long.due_among(1));
            assert!(
                long.spin::<tokio::net::TcpStream>(&rd, &mut next, || true)
                    .is_none()
            );
            assert_eq!(read_low_water(&watched), 1);
            drop(peer);
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_mark_is_never_raised_on_a_socket_whose_buffer_cannot_hold_it() {
        use crate::sys::read_low_water;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            for (buffer, allowed) in [(None, true), (Some(4096), false)] {
                let _peer = std::net::TcpStream::connect(addr).unwrap();
                let (conn, _) = listener.accept().unwrap();
                if let Some(bytes) = buffer {
                    socket2::SockRef::from(&conn)
                        .set_recv_buffer_size(bytes)
                        .unwrap();
                }
                conn.set_nonblocking(true).unwrap();
                let watched = conn.try_clone().unwrap();
                let mut conn = tokio::net::TcpStream::from_std(conn).unwrap();
                let (rd, _wr) = conn.split();
                let mut mark = Mark::Unknown;
                assert_eq!(mark.raise::<tokio::net::TcpStream>(&rd), allowed);
                let expected = if allowed { SPIN_LOW_WATER } else { 1 };
                assert_eq!(read_low_water(&watched), expected);
                // Decided once for the connection.
                assert_eq!(mark == Mark::Up, allowed);
                assert_eq!(mark.raise::<tokio::net::TcpStream>(&rd), allowed);
            }
        });
    }

    #[test]
    fn never_spins_when_off_unsupported_full_or_single_threaded() {
        let mut buf = BytesMut::with_capacity(64);
        let mut off = state(None);
        lone_reads(&mut off, LONE_READS);
        assert_eq!(spin_once(&mut off, &mut buf, 0, Some(Ok(b"x"))).0, 0);

        let mut full = state(Some(WINDOW));
        lone_reads(&mut full, LONE_READS);
        let mut no_room = BytesMut::new();
        assert_eq!(
            spin_once(&mut full, &mut no_room, 0, Some(Ok(b"x"))).0,
            0,
            "no room"
        );

        let mut tls = state(Some(WINDOW));
        lone_reads(&mut tls, LONE_READS);
        assert!(tls.due_among(1));
        assert!(
            tls.poll(&mut buf, &Stats::default(), |_| None, || true)
                .is_none()
        );
        assert!(
            tls.window.is_zero(),
            "a stream that cannot be polled is never tried again"
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut single = rt.block_on(async { BusyPoll::new(Some(WINDOW)) });
        lone_reads(&mut single, LONE_READS);
        assert_eq!(spin_once(&mut single, &mut buf, 0, Some(Ok(b"x"))).0, 0);
        assert_eq!(
            BusyPoll::new(Some(WINDOW)).window,
            Duration::ZERO,
            "outside a runtime"
        );
        let one = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let lone_worker = one.block_on(async { BusyPoll::new(Some(WINDOW)) });
        assert_eq!(lone_worker.window, Duration::ZERO, "one worker");
    }

    #[test]
    fn the_task_yields_every_few_windows() {
        let mut bp = state(Some(WINDOW));
        let yields: Vec<bool> = (0..3 * YIELD_EVERY).map(|_| bp.yield_first()).collect();
        assert_eq!(yields.iter().filter(|y| **y).count(), 3);
        assert!(yields[usize::from(YIELD_EVERY) - 1]);
    }
}

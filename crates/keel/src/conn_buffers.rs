//! A connection's two byte buffers, as every protocol that owns its
//! socket (baidu_std and HTTP/2 servers, the HTTP/2 client) keeps them: what was read and not yet cut
//! into frames, and the answers being written while the next ones collect.
//!
//! Both start empty and grow with the traffic, and both go back to their
//! idle footprint once the connection has been quiet for a moment (rule
//! R7): an idle connection costs a few KB however large its last message.
//! A quiet connection holds no read buffer at all: it waits for its next
//! bytes with a few bytes of room inline ([`ReadBuffer::read`]).
//!
//! ```text
//!   busy:   read_buf into `buf` (1-64 KiB of room, sized by the reads)
//!   quiet:  `buf` given back ──► read into `wake` (64 B, inline)
//!           bytes came ──► `buf` made again with them, busy again
//! ```
//!
//! Owns: sizing, growing and giving back these buffers. May not touch:
//! what is in them (the protocol's frames).

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::connections::Count;

/// Room offered to each read: small for a quiet connection (an idle
/// connection should cost little), doubled while reads fill it.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;
/// Buffers larger than this are given back once empty.
pub(crate) const KEEP_CAPACITY: usize = 64 * 1024;
/// Room a quiet connection's next read is offered, on the side: its
/// buffer is made again only once bytes came (see [`ReadBuffer::read`]).
/// A small baidu_std call fits.
const WAKE_READ: usize = 64;

/// Gives `buf`'s allocation back if it holds nothing (an empty `BytesMut`
/// may still hold a large block, or share one): the step every quiet
/// connection takes for the buffers and queues it keeps (R7).
pub(crate) fn give_back_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}

/// Bytes read and not yet cut into frames.
pub(crate) struct ReadBuffer {
    pub(crate) buf: BytesMut,
    /// Room the next read is offered.
    size: usize,
    /// Whether `buf`'s allocation grew past [`KEEP_CAPACITY`] (a large
    /// message): its capacity() only counts the room after the frames
    /// already cut, so it cannot tell.
    grown: bool,
    /// Room offered to the read in flight.
    room: usize,
    /// The connection went quiet with nothing buffered: `buf` holds no
    /// block, and the next read goes to `wake`.
    parked: bool,
    wake: [u8; WAKE_READ],
}

impl ReadBuffer {
    /// A buffer holding `head`, the bytes read before the protocol was
    /// known.
    pub(crate) fn new(head: BytesMut) -> ReadBuffer {
        ReadBuffer {
            buf: head,
            size: READ_MIN,
            grown: false,
            room: 0,
            parked: false,
            wake: [0; WAKE_READ],
        }
    }

    /// Reads from `rd` into the buffer's room; what a connection's select
    /// waits on. On a quiet connection ([`quiet`](Self::quiet)) the read
    /// waits with [`WAKE_READ`] bytes of room on the side, and the buffer
    /// is made again only with the bytes that came: an idle connection
    /// holds no read buffer. Cancel-safe, as the reads it makes.
    pub(crate) async fn read<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> std::io::Result<usize> {
        if !self.parked {
            return rd.read_buf(&mut self.buf).await;
        }
        let n = rd.read(&mut self.wake).await?;
        if n > 0 {
            self.parked = false;
            self.buf.reserve(self.size);
            self.buf.extend_from_slice(&self.wake[..n]);
            // A read this small keeps the room at its least (`filled`).
            self.room = self.size;
        }
        Ok(n)
    }

    /// After the frames were cut: a buffer that went empty after a burst is
    /// given back; a small leftover of a large message is copied out rather
    /// than keeping the large allocation alive. Then room is made for the
    /// next read. Whether the buffer was given back after a burst.
    pub(crate) fn prepare(&mut self) -> bool {
        // The quiet trim reaches this thread's arena (a thread-local read
        // after the first time).
        keel_alloc::note_thread();
        if self.parked {
            // Quiet: no room is made before bytes come (see `read`).
            return false;
        }
        let mut gave_back = false;
        if self.buf.is_empty() && (self.grown || self.buf.capacity() > 4 * self.size) {
            self.buf = BytesMut::new();
            self.grown = false;
            gave_back = true;
        } else if self.grown && self.buf.len() <= READ_MAX {
            let mut small = BytesMut::with_capacity(self.buf.len() + self.size);
            small.extend_from_slice(&self.buf);
            self.buf = small;
            self.grown = false;
        }
        self.buf.reserve(self.size);
        self.grown |= self.buf.capacity() > KEEP_CAPACITY;
        self.room = self.buf.capacity() - self.buf.len();
        gave_back
    }

    /// A read into `buf` ended: `Some(true)` at the end of the stream,
    /// `None` when the connection is lost. The bytes are counted on `open`;
    /// a read that filled the room asks for more next time, one that used
    /// little of it for less.
    pub(crate) fn filled(
        &mut self,
        read: std::io::Result<usize>,
        open: &impl Count,
    ) -> Option<bool> {
        let n = read.ok()?;
        if n == 0 {
            return Some(true);
        }
        open.read(n);
        if n >= self.room {
            self.size = (self.size * 2).min(READ_MAX);
        } else if n < self.room / 4 {
            self.size = (self.size / 2).max(READ_MIN);
        }
        Some(false)
    }

    /// Whether it holds more than a quiet connection's footprint.
    pub(crate) fn above_idle(&self) -> bool {
        self.size > READ_MIN || self.buf.capacity() > 2 * READ_MIN
    }

    /// The connection went quiet: back to the idle footprint, keeping a
    /// partial frame; with none, no read buffer at all until bytes come
    /// (see [`read`](Self::read)).
    pub(crate) fn quiet(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.grown = false;
            self.parked = true;
        }
        self.size = READ_MIN;
    }

    /// Room offered to reads now (for sizing the write buffer alike).
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// Pieces (frames, spliced data) one vectored write takes at most.
pub(crate) const WRITE_SLICES: usize = 64;

/// Data larger than this is spliced ([`Splices`]) rather than copied into
/// the write buffer.
pub(crate) const SPLICE_MIN: usize = 4 * 1024;

/// Large data placed among a buffer's frames without being copied into it:
/// each piece goes out after the buffer's first `at` bytes, from where it
/// is (one vectored write), and is dropped once written. A streamed
/// answer's queued bytes go out this way.
#[derive(Default)]
pub(crate) struct Splices {
    list: Vec<(usize, Bytes)>,
    bytes: usize,
}

impl Splices {
    /// `data` goes out after what `buf` holds now.
    pub(crate) fn push(&mut self, buf: &BytesMut, data: Bytes) {
        self.bytes += data.len();
        self.list.push((buf.len(), data));
    }

    /// Bytes spliced.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether its list holds any memory.
    pub(crate) fn holds(&self) -> bool {
        self.list.capacity() > 0
    }

    fn clear(&mut self) {
        self.list.clear();
        self.bytes = 0;
    }
}

/// Answers being written (from `written` on) while the protocol collects
/// the next ones in its own buffer: reading goes on during a write, so a
/// client that sends while it receives cannot deadlock the server.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    writing: BytesMut,
    /// Data that goes out among `writing`'s bytes.
    splices: Splices,
    /// Of `writing` and its splices, in the order they go out.
    written: usize,
}

impl WriteBuffer {
    /// When everything was written, takes what `out` collected to write
    /// next (and gives `out` an empty buffer, a new one when it grew large).
    pub(crate) fn take(&mut self, out: &mut BytesMut) {
        self.take_spliced(out, &mut Splices::default());
    }

    /// [`take`](Self::take), with the data spliced among `out`'s bytes.
    pub(crate) fn take_spliced(&mut self, out: &mut BytesMut, splices: &mut Splices) {
        if self.flushed() && !out.is_empty() {
            self.writing.clear();
            self.splices.clear();
            self.written = 0;
            std::mem::swap(out, &mut self.writing);
            std::mem::swap(splices, &mut self.splices);
            if out.capacity() > KEEP_CAPACITY {
                *out = BytesMut::new();
            }
        }
    }

    /// Everything taken was written.
    pub(crate) fn flushed(&self) -> bool {
        self.written == self.writing.len() + self.splices.bytes
    }

    /// The bytes still to write, when nothing was spliced among them.
    pub(crate) fn pending(&self) -> &[u8] {
        debug_assert!(self.splices.list.is_empty(), "spliced: write slices()");
        &self.writing[self.written..]
    }

    /// Writes what is still to write, spliced data included, to `wr`: one
    /// vectored write of at most [`WRITE_SLICES`] pieces. The slices are
    /// made on the stack at each poll, not kept in the connection's future
    /// (1 KiB for the whole life of every connection otherwise). Cancel-safe
    /// as the write is; count what it wrote with [`wrote`](Self::wrote).
    pub(crate) fn write_to<'a, W: AsyncWrite + Unpin>(
        &'a self,
        wr: &'a mut W,
    ) -> impl Future<Output = std::io::Result<usize>> + 'a {
        std::future::poll_fn(move |cx| {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let n = self.slices(&mut slices);
            Pin::new(&mut *wr).poll_write_vectored(cx, &slices[..n])
        })
    }

    /// The bytes still to write, spliced data included, as slices for a
    /// vectored write: as many as fit in `dst`; how many that was.
    pub(crate) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let list = &self.splices.list;
        let tail = list.last().map_or(0, |(at, _)| *at);
        let mut from = 0;
        let pieces = list
            .iter()
            .flat_map(|(at, data)| {
                let head = &self.writing[from..*at];
                from = *at;
                [head, &data[..]]
            })
            .chain(std::iter::once(&self.writing[tail..]));
        let mut skip = self.written;
        let mut n = 0;
        for piece in pieces {
            if n == dst.len() {
                break;
            }
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            dst[n] = IoSlice::new(&piece[skip..]);
            skip = 0;
            n += 1;
        }
        n
    }

    /// A write of [`pending`](Self::pending) ended: `false` when the
    /// connection is lost. The bytes are counted on `open`.
    pub(crate) fn wrote(&mut self, write: std::io::Result<usize>, open: &impl Count) -> bool {
        match write {
            Ok(n) if n > 0 => {
                open.wrote(n);
                self.written += n;
                true
            }
            _ => false,
        }
    }

    /// Once written, a buffer larger than a few reads is given back, and
    /// the spliced data is dropped.
    pub(crate) fn settle(&mut self, read_size: usize) {
        if self.flushed() {
            self.writing.clear();
            self.splices.clear();
            self.written = 0;
            if self.writing.capacity() > 4 * read_size {
                self.writing = BytesMut::new();
            }
        }
    }

    /// Whether it holds any memory.
    pub(crate) fn holds(&self) -> bool {
        self.writing.capacity() > 0 || self.splices.holds()
    }

    /// The connection went quiet: give the buffer back once written.
    pub(crate) fn quiet(&mut self) {
        if self.flushed() {
            self.writing = BytesMut::new();
            self.splices = Splices::default();
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nobody;

    impl Count for Nobody {
        fn read(&self, _: usize) {}
        fn wrote(&self, _: usize) {}
    }

    /// Everything the slices show, joined.
    fn shown(w: &WriteBuffer, room: usize) -> Vec<u8> {
        let mut slices = vec![IoSlice::new(&[]); room];
        let n = w.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// A quiet connection holds no read buffer: none is made before bytes
    /// come, the first read takes a few of them on the side, and every
    /// byte arrives, in order, with the buffer made again after it.
    #[tokio::test]
    async fn a_quiet_connection_reads_with_no_buffer_until_bytes_come() {
        let sent: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut rd: &[u8] = &sent;
        let mut input = ReadBuffer::new(BytesMut::new());
        input.prepare();
        let n = input.read(&mut rd).await.unwrap();
        assert_eq!(input.filled(Ok(n), &Nobody), Some(false));
        assert!(
            input.buf.capacity() >= READ_MIN,
            "a busy connection reads into room"
        );
        let mut got = input.buf.split().to_vec();

        input.quiet();
        assert_eq!(input.buf.capacity(), 0, "quiet: the buffer went back");
        assert!(!input.prepare(), "nothing to give back");
        assert_eq!(input.buf.capacity(), 0, "no room made before bytes come");
        assert!(!input.above_idle());
        let n = input.read(&mut rd).await.unwrap();
        assert_eq!(
            n, WAKE_READ,
            "the first read after quiet: a few bytes on the side"
        );
        assert_eq!(input.filled(Ok(n), &Nobody), Some(false));
        assert_eq!(input.size(), READ_MIN, "a small read asks for no more room");
        assert!(input.buf.capacity() >= READ_MIN, "the buffer is made again");
        loop {
            input.prepare();
            let n = input.read(&mut rd).await.unwrap();
            if input.filled(Ok(n), &Nobody) == Some(true) {
                break;
            }
            got.extend_from_slice(&input.buf.split());
        }
        got.extend_from_slice(&input.buf);
        assert_eq!(got, sent, "every byte, in order");

        // The end of the stream while quiet is the end, with no buffer made.
        let mut input = ReadBuffer::new(BytesMut::new());
        input.quiet();
        let mut empty: &[u8] = &[];
        let n = input.read(&mut empty).await.unwrap();
        assert_eq!(input.filled(Ok(n), &Nobody), Some(true));
        assert_eq!(input.buf.capacity(), 0);
    }

    /// Spliced data goes out where it was placed among the buffer's bytes,
    /// and a partial write resumes inside any piece.
    #[test]
    fn spliced_data_goes_out_in_place_and_resumes_after_partial_writes() {
        let mut out = BytesMut::new();
        let mut splices = Splices::default();
        out.extend_from_slice(b"ab");
        splices.push(&out, Bytes::from_static(b"CDE"));
        splices.push(&out, Bytes::from_static(b"FG"));
        out.extend_from_slice(b"hij");
        splices.push(&out, Bytes::from_static(b"K"));
        let mut w = WriteBuffer::default();
        w.take_spliced(&mut out, &mut splices);
        assert!(out.is_empty() && splices.bytes() == 0, "taken");
        let whole = b"abCDEFGhijK".to_vec();
        assert_eq!(shown(&w, 64), whole);
        assert_eq!(shown(&w, 2), b"abCDE".to_vec(), "as many slices as fit");
        let mut at = 0;
        for step in [1, 3, 2, 4, 1] {
            assert!(!w.flushed());
            assert!(w.wrote(Ok(step), &Nobody));
            at += step;
            assert_eq!(shown(&w, 64), whole[at..].to_vec(), "after {at} bytes");
        }
        assert!(w.flushed());
        w.settle(1024);
        assert!(shown(&w, 64).is_empty());
        assert_eq!(w.splices.bytes(), 0, "written data is dropped");
    }
}

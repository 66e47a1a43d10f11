//! A connection's two byte buffers, as every protocol that owns its
//! socket (baidu_std and HTTP/2 servers, the HTTP/2 client) keeps them: what was read and not yet cut
//! into frames, and the answers being written while the next ones collect.
//!
//! Both start empty and grow with the traffic, and both go back to their
//! idle footprint once the connection has been quiet for a moment (rule
//! R7): an idle connection costs a few KB however large its last message.
//!
//! Owns: sizing, growing and giving back these buffers. May not touch:
//! what is in them (the protocol's frames).

use bytes::BytesMut;

use crate::connections::Count;

/// Room offered to each read: small for a quiet connection (an idle
/// connection should cost little), doubled while reads fill it.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;
/// Buffers larger than this are given back once empty.
pub(crate) const KEEP_CAPACITY: usize = 64 * 1024;

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
        }
    }

    /// After the frames were cut: a buffer that went empty after a burst is
    /// given back; a small leftover of a large message is copied out rather
    /// than keeping the large allocation alive. Then room is made for the
    /// next read. Whether the buffer was given back after a burst.
    pub(crate) fn prepare(&mut self) -> bool {
        // The quiet trim reaches this thread's arena (a thread-local read
        // after the first time).
        keel_alloc::note_thread();
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
    /// partial frame.
    pub(crate) fn quiet(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.grown = false;
        }
        self.size = READ_MIN;
    }

    /// Room offered to reads now (for sizing the write buffer alike).
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// Answers being written (from `written` on) while the protocol collects
/// the next ones in its own buffer: reading goes on during a write, so a
/// client that sends while it receives cannot deadlock the server.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    writing: BytesMut,
    written: usize,
}

impl WriteBuffer {
    /// When everything was written, takes what `out` collected to write
    /// next (and gives `out` an empty buffer, a new one when it grew large).
    pub(crate) fn take(&mut self, out: &mut BytesMut) {
        if self.flushed() && !out.is_empty() {
            self.writing.clear();
            self.written = 0;
            std::mem::swap(out, &mut self.writing);
            if out.capacity() > KEEP_CAPACITY {
                *out = BytesMut::new();
            }
        }
    }

    /// Everything taken was written.
    pub(crate) fn flushed(&self) -> bool {
        self.written == self.writing.len()
    }

    /// The bytes still to write.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.writing[self.written..]
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

    /// Once written, a buffer larger than a few reads is given back.
    pub(crate) fn settle(&mut self, read_size: usize) {
        if self.flushed() {
            self.writing.clear();
            self.written = 0;
            if self.writing.capacity() > 4 * read_size {
                self.writing = BytesMut::new();
            }
        }
    }

    /// Whether it holds any memory.
    pub(crate) fn holds(&self) -> bool {
        self.writing.capacity() > 0
    }

    /// The connection went quiet: give the buffer back once written.
    pub(crate) fn quiet(&mut self) {
        if self.flushed() {
            self.writing = BytesMut::new();
            self.written = 0;
        }
    }
}

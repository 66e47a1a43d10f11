//! HTTP/2 frames on a blocking socket, for the frame-level tests of Keel's
//! HTTP/2 server and client (frames from `keel_wire::http2`).

use std::io::{Read, Write};
use std::net::TcpStream;

use keel_wire::http2::{self as frame, Head};

/// A frame as read.
pub struct Frame {
    pub head: Head,
    pub payload: Vec<u8>,
}

/// A connection's frames: what was read and not yet cut, and the socket.
pub struct Frames {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    pub fn new(stream: TcpStream) -> Frames {
        stream.set_nodelay(true).expect("nodelay");
        Frames {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads until `n` bytes are buffered and takes them (`None` at the
    /// end of the connection).
    pub fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The next frame, or `None` at the end of the connection.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(head) = frame::parse_head(&self.buf)
                && self.buf.len() >= frame::HEAD_LEN + head.len
            {
                let payload = self.buf[frame::HEAD_LEN..frame::HEAD_LEN + head.len].to_vec();
                self.buf.drain(..frame::HEAD_LEN + head.len);
                return Some(Frame { head, payload });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }
}

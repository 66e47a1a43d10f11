//! One port, several protocols: a new connection's first bytes say which
//! protocol module serves it (brpc does the same).
//!
//! ```text
//!   accept ─► read until keel_wire::sniff decides (at most 24 bytes)
//!               ├─ "PRPC"            ─► baidu_std::Connection (bytes read so far first)
//!               ├─ HTTP/2 preface    ─► grpc::serve (over Prefixed: those bytes replayed)
//!               └─ anything else     ─► closed, with one line on stderr
//! ```
//!
//! Owns: the choice of protocol, and replaying the bytes it read to the
//! protocol chosen. May not touch: any protocol's framing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use keel_wire::{SNIFF_MAX_LEN, Sniff, sniff};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::server::builder::ServerCore;

/// Counts a connection as open from accept until its task ends however it
/// ends (including being aborted before it first ran, or at the end of a
/// graceful shutdown).
pub(crate) struct OpenGuard(Arc<ServerCore>);

impl OpenGuard {
    pub(crate) fn new(shared: Arc<ServerCore>) -> OpenGuard {
        shared
            .dispatcher
            .stats
            .connections
            .fetch_add(1, Ordering::AcqRel);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .dispatcher
            .stats
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one accepted connection in whatever protocol it speaks.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = OpenGuard::new(shared.clone());
    // Answers are written as they are ready; Nagle's algorithm would hold
    // a small one back until the previous is acknowledged.
    let _ = stream.set_nodelay(true);
    let mut head = BytesMut::with_capacity(SNIFF_MAX_LEN);
    let protocol = loop {
        match sniff(&head) {
            Sniff::NeedMore => {}
            decided => break decided,
        }
        tokio::select! {
            read = stream.read_buf(&mut head) => match read {
                Ok(n) if n > 0 => {}
                // Closed or failed before saying anything.
                _ => return,
            },
            _ = shutdown.changed() => return,
        }
    };
    match protocol {
        Sniff::BaiduStd => {
            super::baidu_std::Connection::new(stream, peer, shared, shutdown, open)
                .run(head)
                .await;
        }
        Sniff::Http2 => {
            let io = Prefixed {
                head: head.freeze(),
                io: stream,
            };
            // Boxed: the HTTP/2 connection's future is large, and inline it
            // would make every connection's task that large, baidu_std's too.
            Box::pin(super::grpc::serve(io, peer, shared, shutdown, open)).await;
        }
        Sniff::Http1 | Sniff::Unknown | Sniff::NeedMore => {
            let what = if protocol == Sniff::Http1 {
                "HTTP/1, which this server does not serve"
            } else {
                "no protocol this server speaks (baidu_std, gRPC over HTTP/2)"
            };
            eprintln!(
                "keel: closing connection from {peer}: its first bytes {:?} are {what}",
                Bytes::copy_from_slice(&head)
            );
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub(crate) struct Prefixed<S> {
    head: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

//! One port, several protocols: a new connection's first bytes say which
//! protocol module serves it (brpc does the same).
//!
//! ```text
//!   accept ─► read until keel_wire::sniff decides (at most 24 bytes)
//!               ├─ "PRPC"            ─► baidu_std::Connection (bytes read so far first)
//!               ├─ HTTP/2 preface    ─► grpc::serve (over Prefixed: those bytes replayed)
//!               ├─ an HTTP/1 method  ─► http::serve (JSON calls, the console)
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

use crate::connections::{ConnectionInfo, Count, Counted, Registered, Side};
use crate::server::builder::{Port, ServerCore};
use crate::tls::Duplex;

/// Counts a connection as open from accept until its task ends however it
/// ends (including being aborted before it first ran, or at the end of a
/// graceful shutdown), lists it in the process's connections, and counts
/// its bytes.
pub(crate) struct OpenGuard {
    shared: Arc<ServerCore>,
    info: Registered,
}

impl OpenGuard {
    pub(crate) fn new(shared: Arc<ServerCore>, peer: SocketAddr) -> OpenGuard {
        shared
            .dispatcher
            .stats
            .connections
            .fetch_add(1, Ordering::AcqRel);
        OpenGuard {
            shared,
            info: Registered::new(Side::Server, peer, ""),
        }
    }

    /// Counts `n` bytes read from the connection.
    pub(crate) fn read(&self, n: usize) {
        self.info.read(n);
        let stats = &self.shared.dispatcher.stats;
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` bytes written to the connection.
    pub(crate) fn wrote(&self, n: usize) {
        self.info.wrote(n);
        let stats = &self.shared.dispatcher.stats;
        stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The connection's entry in the process's connections.
    pub(crate) fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl Count for OpenGuard {
    fn read(&self, n: usize) {
        OpenGuard::read(self, n);
    }

    fn wrote(&self, n: usize) {
        OpenGuard::wrote(self, n);
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.shared
            .dispatcher
            .stats
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one accepted connection in whatever protocol it speaks, until
/// it ends or breaks a time limit (see [`watchdog`](super::watchdog)).
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    shutdown: watch::Receiver<bool>,
    port: Port,
    open: OpenGuard,
) {
    let info = open.info.0.clone();
    tokio::select! {
        () = serve_protocol(stream, peer, shared.clone(), shutdown, port, open) => {}
        _ = super::watchdog::watch(&info, &shared.conn_limits, &shared.limit_counters) => {}
    }
}

async fn serve_protocol(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
    port: Port,
    open: OpenGuard,
) {
    // Answers are written as they are ready; Nagle's algorithm would hold
    // a small one back until the previous is acknowledged.
    let _ = stream.set_nodelay(true);
    let Some((protocol, head)) = read_head(&mut stream, &open, &mut shutdown, true).await else {
        return;
    };
    if protocol != Protocol::Tls {
        return serve_sniffed(protocol, head, stream, peer, shared, shutdown, port, open).await;
    }
    // Boxed: a TLS connection's state is large, and inline it would make
    // every connection's task that large, plain ones too.
    Box::pin(serve_tls(head, stream, peer, shared, shutdown, port, open)).await;
}

/// Handshakes a connection that started with a TLS ClientHello (`head`),
/// then serves what its decrypted bytes speak.
async fn serve_tls(
    head: BytesMut,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
    port: Port,
    open: OpenGuard,
) {
    let Some(tls) = shared.tls.as_ref() else {
        shared
            .limit_counters
            .tls_failures
            .fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "keel: closing connection from {peer}: it starts a TLS handshake, and this server has no TLS configured (ServerBuilder::tls)"
        );
        return;
    };
    // The bytes read so far are the start of the ClientHello: replayed.
    let replayed = Prefixed {
        head: head.freeze(),
        io: stream,
    };
    let mut stream = match tls.acceptor().accept(replayed).await {
        Ok(stream) => stream,
        Err(e) => {
            shared
                .limit_counters
                .tls_failures
                .fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "keel: TLS handshake with {peer} failed: {}",
                crate::tls::tls_reason(&e)
            );
            return;
        }
    };
    shared
        .limit_counters
        .tls_connections
        .fetch_add(1, Ordering::Relaxed);
    // Inside TLS, the protocol is told by its first bytes as outside.
    let Some((protocol, head)) = read_head(&mut stream, &open, &mut shutdown, false).await else {
        return;
    };
    serve_sniffed(protocol, head, stream, peer, shared, shutdown, port, open).await;
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tls,
    Wire(Sniff),
}

/// Reads until the first bytes tell the protocol (`tls`: a TLS
/// ClientHello counts as one). `None`: the connection closed or failed
/// first, or the server is stopping.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    open: &OpenGuard,
    shutdown: &mut watch::Receiver<bool>,
    tls: bool,
) -> Option<(Protocol, BytesMut)> {
    let mut head = BytesMut::with_capacity(SNIFF_MAX_LEN);
    loop {
        let hello = if tls {
            crate::tls::is_client_hello(&head)
        } else {
            Some(false)
        };
        match hello {
            Some(true) => return Some((Protocol::Tls, head)),
            Some(false) => match sniff(&head) {
                Sniff::NeedMore => {}
                decided => return Some((Protocol::Wire(decided), head)),
            },
            None => {}
        }
        tokio::select! {
            read = stream.read_buf(&mut head) => match read {
                Ok(n) if n > 0 => open.read(n),
                // Closed or failed before saying anything.
                _ => return None,
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// Serves `stream` (plain TCP, or TLS) in the protocol its first bytes
/// `head` told.
#[allow(clippy::too_many_arguments)] // one call site each: the plain and the TLS path
async fn serve_sniffed<S: Duplex>(
    protocol: Protocol,
    head: BytesMut,
    stream: S,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    shutdown: watch::Receiver<bool>,
    port: Port,
    open: OpenGuard,
) {
    match protocol {
        Protocol::Wire(Sniff::BaiduStd) => {
            open.info().set_protocol("baidu_std");
            super::baidu_std::Connection::new(stream, peer, shared, shutdown, open)
                .run(head)
                .await;
        }
        Protocol::Wire(Sniff::Http2) => {
            open.info().set_protocol("grpc");
            // Boxed: the HTTP/2 connection's future is large, and inline it
            // would make every connection's task that large, baidu_std's too.
            Box::pin(super::http2::serve(
                stream, head, peer, shared, shutdown, open,
            ))
            .await;
        }
        Protocol::Wire(Sniff::Http1) => {
            open.info().set_protocol("http");
            let open = Arc::new(open);
            let io = counted(head, stream, &open);
            Box::pin(super::http::serve(io, peer, shared, shutdown, open, port)).await;
        }
        Protocol::Tls | Protocol::Wire(Sniff::Unknown | Sniff::NeedMore) => {
            eprintln!(
                "keel: closing connection from {peer}: its first bytes {:?} are no protocol this server speaks (baidu_std, gRPC over HTTP/2, HTTP/1.1, each plain or in TLS)",
                Bytes::copy_from_slice(&head)
            );
        }
    }
}

/// `stream` with the bytes already read from it replayed first, and the
/// bytes read and written after those counted by `open`.
fn counted<S>(
    head: BytesMut,
    stream: S,
    open: &Arc<OpenGuard>,
) -> Counted<Prefixed<S>, Arc<OpenGuard>> {
    let io = Prefixed {
        head: head.freeze(),
        io: stream,
    };
    Counted::new(io, open.clone())
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

//! Every connection of the process, server and client side, for the
//! console's `/connections`: peer, protocol, age, bytes each way, calls in
//! flight and last activity.
//!
//! A connection owns its [`ConnectionInfo`] (an `Arc`); the registry holds
//! only a weak reference, removed when the owner's [`Registered`] guard
//! drops, so a closed connection leaves nothing behind (R1/R2). Counting
//! is a relaxed atomic add per read or write: no allocation after the
//! connection opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use std::time::{Duration, Instant};

/// Which end of the connection this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Accepted by a server.
    Server,
    /// Opened by a channel.
    Client,
}

impl Side {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// The protocols a connection may speak (`""` before a server knows).
const PROTOCOLS: [&str; 4] = ["", "baidu_std", "grpc", "http"];

fn protocol_index(protocol: &str) -> u8 {
    PROTOCOLS
        .iter()
        .position(|p| *p == protocol)
        .map_or(0, |i| i as u8)
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REGISTRY: Mutex<BTreeMap<u64, Weak<ConnectionInfo>>> = Mutex::new(BTreeMap::new());
/// Registered connections, readable without the registry's lock.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The counters of one connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    id: u64,
    side: Side,
    peer: SocketAddr,
    opened: Instant,
    /// An index into [`PROTOCOLS`].
    protocol: AtomicU8,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicU64,
    /// Requests received (calls started), ever.
    requests: AtomicU64,
    /// Milliseconds since the process's first connection.
    last_active_ms: AtomicU64,
}

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl ConnectionInfo {
    /// Counts `n` bytes read.
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
        self.last_active_ms.store(now_ms(), Relaxed);
    }

    /// Counts `n` bytes written.
    pub(crate) fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
        self.last_active_ms.store(now_ms(), Relaxed);
    }

    /// Counts a call in flight on this connection until the guard drops
    /// (and a request received).
    pub(crate) fn call(&self) -> CallGuard<'_> {
        self.request();
        self.in_flight.fetch_add(1, Relaxed);
        CallGuard(self)
    }

    /// Counts a request received (a protocol that counts calls in flight
    /// itself).
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// Requests received, ever.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// How long since a byte was last read or written.
    pub(crate) fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_active_ms.load(Relaxed)))
    }

    /// Sets the calls in flight (a protocol that counts them itself).
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Relaxed);
    }

    /// Names the protocol once it is known (a server sniffs it).
    pub(crate) fn set_protocol(&self, protocol: &'static str) {
        self.protocol.store(protocol_index(protocol), Relaxed);
    }

    /// A snapshot for the console.
    pub fn snapshot(&self) -> ConnectionSnapshot {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, at: Instant) -> ConnectionSnapshot {
        let now =
            u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX);
        ConnectionSnapshot {
            id: self.id,
            side: self.side,
            peer: self.peer,
            protocol: PROTOCOLS[usize::from(self.protocol.load(Relaxed)) % PROTOCOLS.len()],
            age: at.saturating_duration_since(self.opened),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            idle: Duration::from_millis(now.saturating_sub(self.last_active_ms.load(Relaxed))),
        }
    }
}

/// A call in flight on a connection (see [`ConnectionInfo::call`]).
pub(crate) struct CallGuard<'a>(&'a ConnectionInfo);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One connection as the console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSnapshot {
    /// Process-unique id.
    pub id: u64,
    /// Server or client side.
    pub side: Side,
    /// The other end.
    pub peer: SocketAddr,
    /// `baidu_std`, `grpc`, `http`, or `""` before a server knows.
    pub protocol: &'static str,
    /// Time since it opened.
    pub age: Duration,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Calls in flight on it.
    pub in_flight: u64,
    /// Time since it last read or wrote.
    pub idle: Duration,
}

/// Keeps a connection in the registry; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registered(pub(crate) Arc<ConnectionInfo>);

impl Registered {
    /// Registers a new connection.
    pub(crate) fn new(side: Side, peer: SocketAddr, protocol: &'static str) -> Registered {
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let info = Arc::new(ConnectionInfo {
            id,
            side,
            peer,
            opened: Instant::now(),
            protocol: AtomicU8::new(protocol_index(protocol)),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(now_ms()),
        });
        REGISTRY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::downgrade(&info));
        OPEN.fetch_add(1, Relaxed);
        Registered(info)
    }
}

impl std::ops::Deref for Registered {
    type Target = ConnectionInfo;
    fn deref(&self) -> &ConnectionInfo {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
        REGISTRY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0.id);
    }
}

/// What counts a connection's bytes.
pub(crate) trait Count {
    fn read(&self, n: usize);
    fn wrote(&self, n: usize);
}

impl<C: Count + ?Sized> Count for Arc<C> {
    fn read(&self, n: usize) {
        (**self).read(n);
    }

    fn wrote(&self, n: usize) {
        (**self).wrote(n);
    }
}

impl Count for Registered {
    fn read(&self, n: usize) {
        self.0.read(n);
    }

    fn wrote(&self, n: usize) {
        self.0.wrote(n);
    }
}

/// A stream whose bytes `C` counts (a [`Registered`] entry keeps the
/// connection listed while the stream lives).
pub(crate) struct Counted<S, C = Registered> {
    io: S,
    count: C,
}

impl<S, C> Counted<S, C> {
    pub(crate) fn new(io: S, count: C) -> Counted<S, C> {
        Counted { io, count }
    }
}

impl<S: tokio::io::AsyncRead + Unpin, C: Count + Unpin> tokio::io::AsyncRead for Counted<S, C> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.count.read(n);
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin, C: Count + Unpin> tokio::io::AsyncWrite for Counted<S, C> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            self.count.wrote(n);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            self.count.wrote(n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Every open connection of the process, oldest first.
pub fn connections() -> Vec<ConnectionSnapshot> {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut all = Vec::with_capacity(registry.len());
    let at = Instant::now();
    // Read in place: a snapshot runs no code but this module's, and an
    // entry whose connection is closing just now is skipped.
    for weak in registry.values() {
        if let Some(info) = weak.upgrade() {
            all.push(info.snapshot_at(at));
        }
    }
    all
}

/// How many connections are open in the process, without taking the
/// registry's lock (a relaxed load: may lag a connection opening or
/// closing on another thread).
pub(crate) fn open_count() -> usize {
    OPEN.load(Relaxed)
}

/// How many connections are open in the process.
pub fn connection_count() -> usize {
    REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_until_its_guard_drops() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let guard = Registered::new(Side::Client, peer, "grpc");
        guard.read(10);
        guard.wrote(7);
        let call = guard.call();
        let id = guard.0.id;
        let listed = connections().into_iter().find(|c| c.id == id).unwrap();
        assert_eq!(
            (listed.bytes_in, listed.bytes_out, listed.in_flight),
            (10, 7, 1)
        );
        assert_eq!((listed.side, listed.protocol), (Side::Client, "grpc"));
        drop(call);
        assert_eq!(guard.snapshot().in_flight, 0);
        drop(guard);
        assert!(connections().iter().all(|c| c.id != id));
    }
}

//! Transports: one attempt of one call over one connection. The bottom
//! layer of the client side.
//!
//! ```text
//!   channel (retry policy, deadline, stats)      <- crate::channel
//!     └─ cluster (pick a server, backup request)  <- crate::cluster
//!          └─ transport: one attempt, no retry    <- this module
//!               ├─ baidu_std: a multiplexed TCP connection (BaiduStd)
//!               │    └─ pending: the table of calls awaiting an answer
//!               ├─ grpc: streams of one HTTP/2 connection (Grpc)
//!               │    └─ http2: Keel's HTTP/2 client connection
//!               ├─ http: JSON over HTTP/1.1 keep-alive connections (Http)
//!               └─ in_process: the server's dispatch path, no socket
//! ```
//!
//! Owns: [`Call`] (what one attempt sends), [`Reply`] (what comes back), the
//! [`Transport`] trait (the extension point for transports of your own) and
//! the built-in transports. May not touch: retries, server choice, per-method
//! statistics or timeouts of the whole call; those belong to the layers
//! above, and nothing here imports them.

mod baidu_std;
mod grpc;
pub mod http;
pub(crate) mod http2;
mod in_process;
mod pending;
pub(crate) mod reconnect;

pub use baidu_std::BaiduStd;
pub use grpc::Grpc;
pub use http::Http;
pub use in_process::InProcess;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::time::Instant;

use crate::codec::Encode;
use crate::metadata::Metadata;
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::status::Status;

/// Carries one attempt of a call to a server: the extension point for
/// transports of your own ([`Channel::from_transport`](crate::Channel::from_transport)).
/// Keel's own ([`BaiduStd`], [`InProcess`]) are called without this trait's
/// boxed future.
///
/// Object-safe: a channel holds it as `dyn Transport`. The channel has
/// already applied its cross-cutting concerns (per-method stats, the
/// timeout, retries) around `call`, so a transport only moves bytes: encode
/// `call.request` with `call.options` (attachment, compression, log id,
/// metadata) and the deadline, send, await the matching response, hand back
/// its payload undecoded. It never retries.
pub trait Transport: Send + Sync + 'static {
    /// Sends one call and resolves to its response. Dropping the future
    /// abandons the call (timeout, cancellation): implementations must
    /// release whatever they registered for it (R1).
    fn call<'a>(&'a self, call: Call<'a>) -> TransportFuture<'a>;

    /// Calls sent and not yet answered (0 for transports that keep no
    /// table).
    fn pending_calls(&self) -> usize {
        0
    }
}

/// The future of [`Transport::call`].
pub type TransportFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send + 'a>>;

/// One outgoing call, borrowed from the caller for the duration of the call.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// What is called; also names the service and method on the wire.
    pub method: &'static MethodDescriptor,
    /// The client's options: attachment, compression, log id, hash key.
    pub options: &'a CallOptions,
    /// The request message, encoded on demand (e.g. straight into a frame).
    pub request: &'a (dyn Encode + Sync),
    /// When the caller gives up (from `options.timeout`); sent to the server
    /// as `timeout_ms`. The channel enforces it; a transport may also use it.
    pub deadline: Option<Instant>,
    /// The call's rpcz span (unsampled when the call is not traced). A
    /// transport that can carries its ids to the server (baidu_std:
    /// `RpcRequestMeta` fields 4-6) and marks it [`Sent`](crate::rpcz::Mark::Sent)
    /// once the request is queued for writing.
    pub span: &'a crate::rpcz::SpanHandle,
    /// Set by a transport whose wait for the answer will itself end at
    /// `deadline` (baidu_std's pending table: its connection fails calls
    /// whose deadline passed), each time that wait is left pending: the
    /// channel then needs no timer of its own for the call. The channel
    /// clears it before each poll; `None`: nobody asks.
    pub(crate) kept_deadline: Option<&'a std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &format_args!("{}", self.method))
            .field("options", self.options)
            .field("request_len", &self.request.encoded_len())
            .field("deadline", &self.deadline)
            .field("trace", &self.span.context())
            .finish()
    }
}

/// The protocol a channel speaks to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// brpc's baidu_std (the default): one multiplexed TCP connection.
    #[default]
    BaiduStd,
    /// gRPC over HTTP/2: streams of one HTTP/2 connection.
    Grpc,
    /// JSON over HTTP/1.1 (the proto3 JSON mapping): one call at a time
    /// per keep-alive connection. Unary methods only.
    Http,
}

/// Settings of one endpoint (a `host:port` a channel or an invoker calls).
#[derive(Debug, Clone)]
pub(crate) struct EndpointConfig {
    pub(crate) protocol: Protocol,
    pub(crate) connect_timeout: std::time::Duration,
    /// Largest response accepted (baidu_std body, gRPC message).
    pub(crate) max_body_size: usize,
    /// Sent as `authentication_data` on each baidu_std connection's first
    /// request, and as the `authorization` header of every gRPC stream
    /// (empty: none).
    pub(crate) credential: bytes::Bytes,
    /// TLS on every connection, when set.
    pub(crate) tls: Option<crate::tls::ClientTls>,
    /// How long a baidu_std connection with a lone caller polls for its
    /// answer before sleeping (see `busy_poll`); `None`: never.
    pub(crate) busy_poll: Option<std::time::Duration>,
}

/// The TLS of an endpoint at `addr` speaking `protocol`, if its channel
/// has TLS: `Err` says why it cannot be set up (reported on each call).
pub(crate) fn tls_for(
    config: &EndpointConfig,
    addr: &str,
) -> Option<Result<crate::tls::Connector, String>> {
    let tls = config.tls.as_ref()?;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    Some(
        tls.connector(crate::tls::alpn(config.protocol), host)
            .map_err(|e| e.to_string()),
    )
}

/// Makes `stream` a TLS stream with `tls` (the handshake), or fails with
/// `EFAILEDSOCKET`, marked unwritten.
pub(crate) async fn handshake_tls<IO>(
    tls: &Result<crate::tls::Connector, String>,
    stream: IO,
    addr: &str,
) -> Result<tokio_rustls::client::TlsStream<IO>, Status>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tls {
        Ok(connector) => connector.connect(stream, addr).await,
        Err(why) => Err(Status::new(
            crate::status::Code::EFAILEDSOCKET,
            format!("cannot connect {addr} over TLS: {why}"),
        )
        .with_request_unwritten()),
    }
}

/// One `host:port` in the protocol its configuration names.
#[derive(Debug)]
pub(crate) enum Remote {
    BaiduStd(BaiduStd),
    /// Boxed: its connection state is larger than baidu_std's handle.
    Grpc(Box<Grpc>),
    Http(Box<Http>),
}

impl Remote {
    pub(crate) fn new(addr: String, config: EndpointConfig) -> Remote {
        match config.protocol {
            Protocol::BaiduStd => Remote::BaiduStd(BaiduStd::new(addr, config)),
            Protocol::Grpc => Remote::Grpc(Box::new(Grpc::new(addr, config))),
            Protocol::Http => Remote::Http(Box::new(Http::new(addr, config))),
        }
    }

    pub(crate) fn pending_calls(&self) -> usize {
        match self {
            Remote::BaiduStd(t) => t.pending_calls(),
            Remote::Grpc(t) => t.pending_calls(),
            Remote::Http(t) => t.pending_calls(),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Remote::BaiduStd(t) => t.is_connected(),
            Remote::Grpc(t) => t.is_connected(),
            Remote::Http(t) => t.is_connected(),
        }
    }

    /// When this endpoint may be connected to again, while it waits after
    /// failures (see `reconnect.rs`).
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        match self {
            Remote::BaiduStd(t) => t.reconnect().waiting_until(),
            Remote::Grpc(t) => t.reconnect().waiting_until(),
            Remote::Http(t) => t.reconnect().waiting_until(),
        }
    }

    /// Opens a streaming call (gRPC only: baidu_std has no streams of
    /// messages). Failures wrote nothing.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        match self {
            Remote::Grpc(t) => t.open_stream(call).await,
            Remote::BaiduStd(t) => Err(no_streams(call, "a baidu_std", t.addr())),
            Remote::Http(t) => Err(no_streams(call, "an HTTP/1 (JSON)", t.addr())),
        }
    }

    /// One attempt of `call` (see [`BaiduStd::try_call`]).
    pub(crate) async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        match self {
            Remote::BaiduStd(t) => t.try_call(call).await,
            Remote::Grpc(t) => t.try_call(call).await,
            // In a pooled block: a JSON call over hyper is a future of
            // ~800 bytes, which inline would make every channel's call
            // future as large (baidu_std's attempt is 240).
            Remote::Http(t) => keel_pool::FutureBox::new(t.try_call(call)).await,
        }
    }
}

/// Why a streaming `call` cannot go over a channel of another protocol.
fn no_streams(call: &Call<'_>, protocol: &str, addr: &str) -> Status {
    Status::new(
        crate::status::Code::Unimplemented,
        format!(
            "{} is a {:?} method: streaming calls need gRPC, and {addr} is {protocol} channel (use grpc://host:port or Protocol::Grpc)",
            call.method, call.method.kind
        ),
    )
}

/// Answers clients could not read (a baidu_std meta that does not parse):
/// each failed its own call when its id could be read, never the
/// connection. On `/vars`.
pub(crate) static BAD_RESPONSES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Opens a TCP connection to `addr` within `timeout`, with Nagle off. A
/// failure is `EFAILEDSOCKET`, marked as a request that was not written
/// (no handler can have run it).
pub(crate) async fn connect(
    addr: &str,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, Status> {
    let failed = |why: String| {
        Status::new(
            crate::status::Code::EFAILEDSOCKET,
            format!("fail to connect {addr}: {why}"),
        )
        .with_request_unwritten()
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {timeout:?}"))),
    }
}

/// `stream`, listed among the process's connections (client side) while
/// it lives, its bytes counted.
pub(crate) fn counted(
    stream: tokio::net::TcpStream,
    protocol: &'static str,
) -> crate::connections::Counted<tokio::net::TcpStream> {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let listed =
        crate::connections::Registered::new(crate::connections::Side::Client, peer, protocol);
    crate::connections::Counted::new(stream, listed)
}

/// The callers a connection's last read woke and that have not queued a
/// request since: while some have, the connection's task, woken by the
/// first of them, yields once before it takes what is queued, so the rest
/// join the same write (each would otherwise wake it on its own, to be
/// written one request per write). A lone caller (one call in flight)
/// finds none and is written at once.
#[derive(Debug, Default)]
pub(crate) struct WokenCallers(std::sync::atomic::AtomicUsize);

impl WokenCallers {
    /// A read woke `n` callers (none: nothing changes).
    pub(crate) fn woke(&self, n: usize) {
        if n > 0 {
            self.0.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A caller queued a request.
    pub(crate) fn queued(&self) {
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| n.checked_sub(1),
        );
    }

    /// Yields once if callers woken by the last read have yet to queue
    /// their requests.
    pub(crate) async fn let_them_queue(&self) {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Counts a call as pending while it lives (the gRPC and HTTP transports'
/// `pending_calls`).
pub(crate) struct PendingGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl PendingGuard<'_> {
    pub(crate) fn new(pending: &std::sync::atomic::AtomicUsize) -> PendingGuard<'_> {
        pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PendingGuard(pending)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A successful response, still encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The response message's encoding.
    pub payload: Bytes,
    /// The raw bytes the server sent after the message.
    pub attachment: Bytes,
    /// What the server sent along (baidu_std `user_fields`).
    pub metadata: Metadata,
}

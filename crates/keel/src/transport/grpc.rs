//! The gRPC transport: calls to one endpoint as streams of one HTTP/2
//! connection (the `h2` crate), reconnected after failures.
//!
//! ```text
//!   try_call ─► sender (connect + handshake once; the connection runs as its own task)
//!     └─ ready ─► HEADERS (path, grpc-timeout, authorization, metadata, traceparent) + DATA (one message, END_STREAM)
//!          ◄─ HEADERS (or trailers-only: the status) ◄─ DATA (one message) ◄─ trailers (grpc-status)
//! ```
//!
//! A call whose future is dropped (timeout, cancellation) drops its stream
//! handles, and h2 resets the stream (RST_STREAM CANCEL): the server's
//! handler is cancelled and nothing stays behind (rule R1). The connection
//! task ends when the transport is dropped and its last stream ends
//! (rule R5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use tokio::time::Instant;

use super::EndpointConfig;
use super::reconnect::Reconnect;
use crate::codec::grpc as wire;
use crate::compression::Compression;
use crate::status::{Code, Status};
use crate::transport::{Call, Reply};

/// Per-stream and per-connection receive windows of the client.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Largest DATA frame the peer may send (HTTP/2's default is 16 KiB). h2
/// queues each received frame in a per-connection slab until the call
/// reads it, and that slab never shrinks: with 16 KiB frames a 1 MiB window
/// queues 64 frames and a connection kept about 30 KB per side after one
/// large message; 64 KiB frames queue a quarter as many.
const MAX_FRAME_SIZE: u32 = 64 * 1024;

/// Calls one `host:port` over gRPC.
pub struct Grpc {
    addr: String,
    authority: Option<Authority>,
    config: EndpointConfig,
    /// The connection's request handle and the address it reached, while
    /// it is up.
    sender: Mutex<Option<(SendRequest<Bytes>, Option<std::net::SocketAddr>)>>,
    connect_lock: tokio::sync::Mutex<()>,
    pending: AtomicUsize,
    /// The last `grpc-timeout` sent: calls with the same timeout reuse it
    /// rather than allocate a header value each.
    last_timeout: Mutex<Option<HeaderValue>>,
    /// The channel's credential as the `authorization` header each stream
    /// carries (made once).
    credential: Credential,
    /// TLS, when the channel has it.
    tls: Option<Result<crate::tls::Connector, String>>,
    /// When to connect again after failures.
    reconnect: Reconnect,
}

/// A channel's credential on gRPC: the value of every stream's
/// `authorization` header, which a server's authenticator checks on a
/// connection's first stream (baidu_std sends it as `authentication_data`).
#[derive(Debug)]
pub(super) enum Credential {
    /// The channel has none.
    None,
    Header(HeaderValue),
    /// Bytes no HTTP/2 header can carry (control characters): calls fail
    /// rather than go out without it.
    Unsendable,
}

impl Credential {
    /// Adds the `authorization` header to a request of `call`, unless the
    /// call carries its own (a client interceptor's token takes the place
    /// of the channel's credential).
    pub(super) fn insert(&self, call: &Call<'_>, headers: &mut HeaderMap) -> Result<(), Status> {
        let own_authorization = || {
            call.options
                .metadata
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(AUTHORIZATION.as_str()))
        };
        match self {
            Credential::None => {}
            Credential::Header(value) => {
                if !own_authorization() {
                    headers.insert(AUTHORIZATION, value.clone());
                }
            }
            Credential::Unsendable => {
                return Err(Status::new(
                    Code::EREQUEST,
                    "the channel's credential cannot be sent in an HTTP header: an authorization header cannot hold control characters",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn new(credential: &Bytes) -> Credential {
        if credential.is_empty() {
            return Credential::None;
        }
        match HeaderValue::from_maybe_shared(credential.clone()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Credential::Header(value)
            }
            Err(_) => Credential::Unsendable,
        }
    }
}

impl std::fmt::Debug for Grpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grpc")
            .field("addr", &self.addr)
            .field("pending", &self.pending_calls())
            .finish()
    }
}

impl Grpc {
    pub(crate) fn new(addr: String, config: EndpointConfig) -> Grpc {
        Grpc {
            tls: super::tls_for(&config, &addr),
            credential: Credential::new(&config.credential),
            authority: addr.parse().ok(),
            addr,
            config,
            sender: Mutex::new(None),
            connect_lock: tokio::sync::Mutex::new(()),
            pending: AtomicUsize::new(0),
            last_timeout: Mutex::new(None),
            reconnect: Reconnect::default(),
        }
    }

    /// Calls sent and not yet answered.
    pub fn pending_calls(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The `host:port` this transport connects to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    pub(crate) fn reconnect(&self) -> &Reconnect {
        &self.reconnect
    }

    fn current(&self) -> Option<(SendRequest<Bytes>, Option<std::net::SocketAddr>)> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the connection after a failure: the next call reconnects
    /// (after a wait, unless an answer came since the last failure).
    fn forget(&self) {
        let lost = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if lost.is_some() {
            self.reconnect.failed();
        }
    }

    async fn connect(&self) -> Result<(SendRequest<Bytes>, Option<std::net::SocketAddr>), Status> {
        let _one_at_a_time = self.connect_lock.lock().await;
        if let Some(up) = self.current() {
            return Ok(up);
        }
        self.reconnect.admit(&self.addr)?;
        let stream = super::connect(&self.addr, self.config.connect_timeout)
            .await
            .inspect_err(|_| self.reconnect.failed())?;
        let connected = self.set_up(stream).await;
        match &connected {
            Ok(_) => self.reconnect.connected(),
            Err(_) => self.reconnect.failed(),
        }
        connected
    }

    /// TLS when the channel has it, then the HTTP/2 handshake, over a new
    /// connection, whose task then runs.
    async fn set_up(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Result<(SendRequest<Bytes>, Option<std::net::SocketAddr>), Status> {
        let peer = stream.peer_addr().ok();
        let stream = super::counted(stream, "grpc");
        let sender = match &self.tls {
            None => self.handshake(stream).await?,
            Some(tls) => {
                let handshake = super::handshake_tls(tls, stream, &self.addr);
                let stream =
                    match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                        Ok(stream) => stream?,
                        Err(_) => {
                            return Err(unwritten("no TLS handshake within the connect timeout"));
                        }
                    };
                self.handshake(stream).await?
            }
        };
        *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some((sender.clone(), peer));
        Ok((sender, peer))
    }

    /// The HTTP/2 handshake over `io`; the connection then runs as its own
    /// task until the transport's sender and every stream are dropped, or
    /// it fails.
    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Bytes>, Status>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .handshake::<_, Bytes>(io);
        let (sender, connection) =
            match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(unwritten(format!("HTTP/2 handshake failed: {e}"))),
                Err(_) => return Err(unwritten("no HTTP/2 handshake within the connect timeout")),
            };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// A connection ready for a new stream: the one up, else a new one.
    /// One the server has closed since its last use (GOAWAY: the server is
    /// stopping, or refused the connection's credential) is replaced once
    /// by a new one: nothing was written on it, so this is still the same
    /// attempt.
    async fn ready(&self) -> Result<(SendRequest<Bytes>, Option<std::net::SocketAddr>), Status> {
        if let Some((sender, peer)) = self.current() {
            match sender.ready().await {
                Ok(sender) => return Ok((sender, peer)),
                Err(_) => self.forget(),
            }
        }
        let (sender, peer) = keel_pool::FutureBox::new(self.connect()).await?;
        match sender.ready().await {
            Ok(sender) => Ok((sender, peer)),
            Err(e) => {
                self.forget();
                Err(unwritten(format!("{}: {e}", self.addr)))
            }
        }
    }

    /// Opens a stream for `call` and sends its headers: the connection is
    /// made first if none is up. Failures here wrote nothing.
    async fn start(
        &self,
        call: &Call<'_>,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), Status> {
        if let Some(opened) = self.open_now(call)? {
            return Ok(opened);
        }
        let (mut sender, peer) = self.ready().await?;
        mark_span(call, peer);
        let request = self.request(call)?;
        sender.send_request(request, false).map_err(|e| {
            self.forget();
            unwritten(format!("{}: {e}", self.addr))
        })
    }

    /// Opens `call`'s stream on the connection that is up, when it can
    /// take one at once: the common case, with no handle cloned and no
    /// readiness awaited (each of those takes h2's connection lock once
    /// more). `None` when there is no connection, or it cannot open a
    /// stream now (one is still waiting to open, or the connection
    /// failed): [`start`](Self::start) then waits, or reconnects.
    fn open_now(
        &self,
        call: &Call<'_>,
    ) -> Result<Option<(h2::client::ResponseFuture, h2::SendStream<Bytes>)>, Status> {
        if self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Ok(None);
        }
        let request = self.request(call)?;
        let mut up = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((sender, peer)) = up.as_mut() else {
            return Ok(None);
        };
        let peer = *peer;
        let opened = match sender.send_request(request, false) {
            Ok(opened) => opened,
            Err(_) => {
                // A stream of this handle that waits to open (the server's
                // limit on streams was reached) refuses the next until the
                // handle is polled ready; a failed connection refuses them
                // all (`start` reconnects).
                let noop = &mut std::task::Context::from_waker(std::task::Waker::noop());
                if !matches!(sender.poll_ready(noop), std::task::Poll::Ready(Ok(()))) {
                    return Ok(None);
                }
                match sender.send_request(self.request(call)?, false) {
                    Ok(opened) => opened,
                    Err(_) => return Ok(None),
                }
            }
        };
        drop(up);
        mark_span(call, peer);
        Ok(Some(opened))
    }

    /// Opens a streaming call: the requests' sink and the responses'
    /// stream. Nothing is sent but the headers.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        let compress = request_encoding(call)?;
        let (response, send) = self.start(call).await?;
        call.span.mark(crate::rpcz::Mark::Sent);
        let send = crate::streaming::SendHalf::new(send);
        Ok((
            crate::streaming::Outgoing::client(send.clone(), compress),
            crate::streaming::Incoming::client(
                response,
                self.config.max_body_size,
                call.deadline,
                send,
            ),
        ))
    }

    /// Sends `call` once: no retry (the channel retries).
    pub async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        let body = encode(call)?;
        let _pending = super::PendingGuard::new(&self.pending);
        let (response, mut send) = self.start(call).await?;
        call.span.mark(crate::rpcz::Mark::Sent);
        // A server may answer before it read the request (an unknown
        // method: a trailers-only response, then RST_STREAM NO_ERROR), so a
        // failed send is not the call's outcome: the response says what
        // happened, and fails too if the stream or connection did.
        let _ = send.send_data(body, true);
        let response = response.await.map_err(|e| {
            if e.is_io() || e.is_go_away() {
                self.forget();
            }
            wire::stream_failed(&e)
        })?;
        self.reconnect.answered();
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::new(
                Code::from_http_status(parts.status.as_u16()),
                format!("the server answered HTTP status {}", parts.status),
            ));
        }
        // Trailers-only: a failure (or an empty success) with no body.
        if let Some(outcome) = wire::status_from(&parts.headers) {
            outcome?;
            return Err(Status::new(
                Code::Internal,
                "the server ended the call with no response message",
            ));
        }
        let encoding = wire::encoding_from(&parts.headers).map_err(|name| {
            Status::new(
                Code::Internal,
                format!("the server answered in grpc-encoding {name}, which Keel cannot read"),
            )
        })?;
        let message = wire::read_one(
            &mut body,
            self.config.max_body_size,
            encoding,
            Code::ERESPONSE,
        )
        .await;
        let message = match message {
            // Refused before the end of the body (a message over the limit,
            // announced by its prefix): the rest will never be read, so its
            // flow-control window never reopens and the trailers would never
            // come. Dropping the stream resets it.
            Err(refused) if !body.is_end_stream() => return Err(refused),
            message => message,
        };
        let trailers = body
            .trailers()
            .await
            .map_err(|e| wire::stream_failed(&e))?
            .unwrap_or_default();
        match wire::status_from(&trailers) {
            Some(Ok(())) => {}
            Some(Err(status)) => return Err(status),
            None => {
                return Err(Status::new(
                    Code::Internal,
                    "the server ended the call without grpc-status",
                ));
            }
        }
        let mut metadata = wire::metadata_from(&parts.headers);
        metadata.extend_from(&wire::metadata_from(&trailers));
        Ok(Reply {
            payload: message?,
            attachment: Bytes::new(),
            metadata,
        })
    }

    /// The request's headers.
    fn request(&self, call: &Call<'_>) -> Result<Request<()>, Status> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(PathAndQuery::from_static(call.method.path));
        let uri = Uri::from_parts(parts)
            .map_err(|e| Status::new(Code::EREQUEST, format!("bad request path: {e}")))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, wire::CONTENT_TYPE);
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(wire::GRPC_ACCEPT_ENCODING, wire::ACCEPT_ENCODING);
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut text = [0; keel_wire::grpc::TIMEOUT_MAX_LEN];
            let len = keel_wire::grpc::write_timeout(left, &mut text);
            let mut last = self
                .last_timeout
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let value = match &*last {
                Some(value) if value.as_bytes() == &text[..len] => Some(value.clone()),
                _ => HeaderValue::from_bytes(&text[..len]).ok(),
            };
            if let Some(value) = value {
                *last = Some(value.clone());
                drop(last);
                headers.insert(wire::GRPC_TIMEOUT, value);
            }
        }
        if let Some(name) = request_encoding(call)?.and_then(wire::encoding_name) {
            headers.insert(wire::GRPC_ENCODING, name);
        }
        if let Some(trace) = call.span.context() {
            headers.insert(wire::TRACEPARENT, wire::traceparent(trace));
        }
        self.credential.insert(call, headers)?;
        wire::metadata_into(&call.options.metadata, headers, Code::EREQUEST)?;
        Ok(request)
    }
}

/// Records where a sampled call went.
fn mark_span(call: &Call<'_>, peer: Option<std::net::SocketAddr>) {
    if call.span.is_sampled() {
        if let Some(peer) = peer {
            call.span.set_peer(peer);
        }
        call.span.set_protocol("grpc");
    }
}

const USER_AGENT_VALUE: &str = concat!("keel/", env!("CARGO_PKG_VERSION"));

fn unwritten(why: impl Into<String>) -> Status {
    Status::new(Code::EFAILEDSOCKET, why.into()).with_request_unwritten()
}

/// The compression of `call`'s request, if any: gzip and deflate (zlib)
/// have gRPC names; others cannot be sent over gRPC.
fn request_encoding(call: &Call<'_>) -> Result<Option<Compression>, Status> {
    match call.options.compression {
        Compression::None => Ok(None),
        kind if wire::encoding_name(kind).is_some() => Ok(Some(kind)),
        kind => Err(Status::new(
            Code::EREQUEST,
            format!("{kind} compression has no gRPC encoding (gzip and deflate do)"),
        )),
    }
}

/// The request message with its prefix, compressed when the call asks.
fn encode(call: &Call<'_>) -> Result<Bytes, Status> {
    wire::seal_message(call.request, request_encoding(call)?)
}

//! The gRPC transport: calls to one endpoint as streams of one HTTP/2
//! connection (Keel's own, [`super::http2`]), reconnected after failures.
//!
//! ```text
//!   try_call ─► connection (connect + preface once; the connection runs as its own task)
//!     └─ open ─► HEADERS (path, grpc-timeout, authorization, metadata, traceparent) + DATA (one message, END_STREAM)
//!          ◄─ HEADERS (or trailers-only: the status) ◄─ DATA (one message) ◄─ trailers (grpc-status)
//! ```
//!
//! A call whose future is dropped (timeout, cancellation) drops its stream,
//! which is reset (RST_STREAM CANCEL): the server's handler is cancelled
//! and nothing stays behind (rule R1). The connection task ends when the
//! transport is dropped and its last stream ends (rule R5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use keel_wire::hpack::{Encoder, Indexing};
use tokio::sync::watch;
use tokio::time::Instant;

use super::EndpointConfig;
use super::http2::{Connection, StreamRef};
use super::reconnect::Reconnect;
use crate::codec::grpc as wire;
use crate::compression::Compression;
use crate::status::{Code, Status};
use crate::streaming::Queued;
use crate::transport::{Call, Reply};

/// Calls one `host:port` over gRPC.
pub struct Grpc {
    addr: String,
    config: EndpointConfig,
    /// The connection, while one is up.
    conn: Mutex<Option<Arc<Connection>>>,
    connect_lock: tokio::sync::Mutex<()>,
    pending: AtomicUsize,
    /// The channel's credential as the `authorization` header each stream
    /// carries (made once).
    credential: Credential,
    /// TLS, when the channel has it.
    tls: Option<Result<crate::tls::Connector, String>>,
    /// When to connect again after failures.
    reconnect: Reconnect,
    /// Dropping the transport drops this sender, which ends the
    /// connection's task once its streams are done.
    _alive: watch::Sender<()>,
    alive_rx: watch::Receiver<()>,
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
        if let Some(value) = self.for_call(call)? {
            headers.insert(AUTHORIZATION, value.clone());
        }
        Ok(())
    }

    /// The `authorization` value `call` carries from the channel: none
    /// when the call carries its own.
    fn for_call(&self, call: &Call<'_>) -> Result<Option<&HeaderValue>, Status> {
        let own_authorization = || {
            call.options
                .metadata
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(AUTHORIZATION.as_str()))
        };
        match self {
            Credential::None => Ok(None),
            Credential::Header(value) => Ok((!own_authorization()).then_some(value)),
            Credential::Unsendable => Err(Status::new(
                Code::EREQUEST,
                "the channel's credential cannot be sent in an HTTP header: an authorization header cannot hold control characters",
            )),
        }
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
        let (alive, alive_rx) = watch::channel(());
        Grpc {
            tls: super::tls_for(&config, &addr),
            credential: Credential::new(&config.credential),
            addr,
            config,
            conn: Mutex::new(None),
            connect_lock: tokio::sync::Mutex::new(()),
            pending: AtomicUsize::new(0),
            reconnect: Reconnect::default(),
            _alive: alive,
            alive_rx,
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
        self.current().is_some_and(|conn| conn.is_open())
    }

    pub(crate) fn reconnect(&self) -> &Reconnect {
        &self.reconnect
    }

    fn current(&self) -> Option<Arc<Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets `conn` after it failed or closed: the next call connects
    /// again (after a failure, after a wait, unless an answer came since
    /// the last failure; at once after a graceful GOAWAY).
    fn forget(&self, conn: &Arc<Connection>) {
        let mut up = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if up.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *up = None;
            drop(up);
            if !conn.closed_gracefully() {
                self.reconnect.failed();
            }
        }
    }

    async fn connect(&self) -> Result<Arc<Connection>, Status> {
        let _one_at_a_time = self.connect_lock.lock().await;
        if let Some(up) = self.current().filter(|c| c.is_open()) {
            return Ok(up);
        }
        self.reconnect.admit(&self.addr)?;
        let stream = super::connect(&self.addr, self.config.connect_timeout)
            .await
            .inspect_err(|_| self.reconnect.failed())?;
        let connected = self.set_up(stream).await;
        match &connected {
            Ok(conn) => {
                self.reconnect.connected();
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
            }
            Err(_) => self.reconnect.failed(),
        }
        connected
    }

    /// TLS when the channel has it, then the connection's task, over a new
    /// connection.
    async fn set_up(&self, stream: tokio::net::TcpStream) -> Result<Arc<Connection>, Status> {
        let peer = stream.peer_addr().ok();
        let alive = self.alive_rx.clone();
        match &self.tls {
            None => Ok(Connection::start(stream, peer, alive)),
            Some(tls) => {
                let handshake = super::handshake_tls(tls, stream, &self.addr);
                match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                    Ok(stream) => Ok(Connection::start(stream?, peer, alive)),
                    Err(_) => Err(unwritten("no TLS handshake within the connect timeout")),
                }
            }
        }
    }

    /// Opens a stream for `call` and queues its headers and `body`: the
    /// connection is made first if none is up. A connection that closed
    /// since its last use (GOAWAY: the server is stopping, or refused the
    /// connection's credential) is replaced once by a new one: nothing was
    /// written on it, so this is still the same attempt. Failures here
    /// wrote nothing.
    async fn start(
        &self,
        call: &Call<'_>,
        body: &Queued<'_>,
        end: bool,
    ) -> Result<StreamRef, Status> {
        let fields = Fields::new(self, call)?;
        let mut encode =
            |encoder: &mut Encoder, block: &mut BytesMut| fields.encode(encoder, block);
        let mut retried = false;
        loop {
            let conn = match self.current() {
                Some(conn) => conn,
                None => keel_pool::FutureBox::new(self.connect()).await?,
            };
            match conn
                .open(&mut encode, body, end, self.config.max_body_size)
                .await
            {
                Ok(stream) => {
                    mark_span(call, stream.peer());
                    return Ok(stream);
                }
                Err(closed) => {
                    self.forget(&conn);
                    if retried {
                        return Err(closed);
                    }
                    retried = true;
                }
            }
        }
    }

    /// Opens a streaming call: the requests' sink and the responses'
    /// stream. Nothing is sent but the headers.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        let compress = request_encoding(call)?;
        let no_body = Queued::Sealed(Bytes::new());
        let stream = Arc::new(self.start(call, &no_body, false).await?);
        call.span.mark(crate::rpcz::Mark::Sent);
        Ok((
            crate::streaming::Outgoing::client(stream.clone(), compress),
            crate::streaming::Incoming::client(stream, self.config.max_body_size, call.deadline),
        ))
    }

    /// Sends `call` once: no retry (the channel retries).
    pub async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        // Uncompressed, the request is encoded straight into the
        // connection's output (no buffer of its own).
        let body = Queued::new(call.request, request_encoding(call)?)?;
        let _pending = super::PendingGuard::new(&self.pending);
        let mut stream = self.start(call, &body, true).await?;
        call.span.mark(crate::rpcz::Mark::Sent);
        let finished = std::future::poll_fn(|cx| stream.poll_finished(cx)).await;
        // A connection that failed is replaced by the next call.
        let finished = finished?;
        self.reconnect.answered();
        let mut head = finished.head;
        if head.http_status != 200 {
            return Err(Status::new(
                Code::from_http_status(head.http_status),
                format!("the server answered HTTP status {}", head.http_status),
            ));
        }
        // Trailers-only: a failure (or an empty success) with no body.
        if let Some(outcome) = head.status() {
            outcome?;
            return Err(Status::new(
                Code::Internal,
                "the server ended the call with no response message",
            ));
        }
        let encoding = head.encoding().map_err(|name| {
            Status::new(
                Code::Internal,
                format!("the server answered in grpc-encoding {name}, which Keel cannot read"),
            )
        })?;
        let message = message(finished.data.freeze(), self.config.max_body_size, encoding);
        let Some(trailers) = finished.trailers else {
            return Err(Status::new(
                Code::Internal,
                "the server ended the call without trailers",
            ));
        };
        match trailers.status() {
            Some(Ok(())) => {}
            Some(Err(status)) => return Err(status),
            None => {
                return Err(Status::new(
                    Code::Internal,
                    "the server ended the call without grpc-status",
                ));
            }
        }
        let mut metadata = std::mem::take(&mut head.metadata);
        metadata.extend_from(&trailers.metadata);
        Ok(Reply {
            payload: message?,
            attachment: Bytes::new(),
            metadata,
        })
    }
}

/// A unary response's one message, decompressed.
fn message(whole: Bytes, max: usize, encoding: Option<Compression>) -> Result<Bytes, Status> {
    let (compressed, message) = wire::unary_message(whole, max, Code::ERESPONSE)?;
    if !compressed {
        return Ok(message);
    }
    let Some(kind) = encoding else {
        return Err(Status::new(
            Code::ERESPONSE,
            "a compressed message on a stream with no grpc-encoding",
        ));
    };
    crate::compression::decompress(kind.as_i32(), message, max, Code::ERESPONSE)
}

/// A request's header fields, checked before the connection's lock is
/// taken (encoding them cannot fail).
struct Fields<'a> {
    call: &'a Call<'a>,
    scheme: &'static [u8],
    authority: &'a [u8],
    timeout: ([u8; keel_wire::grpc::TIMEOUT_MAX_LEN], usize),
    encoding: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    authorization: Option<&'a [u8]>,
    /// Metadata keys, lowercased.
    metadata: Vec<(std::borrow::Cow<'a, str>, &'a str)>,
}

impl<'a> Fields<'a> {
    fn new(grpc: &'a Grpc, call: &'a Call<'a>) -> Result<Fields<'a>, Status> {
        let mut timeout = ([0; keel_wire::grpc::TIMEOUT_MAX_LEN], 0);
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            timeout.1 = keel_wire::grpc::write_timeout(left, &mut timeout.0);
        }
        let authorization = grpc.credential.for_call(call)?.map(HeaderValue::as_bytes);
        let metadata = wire::checked_metadata(&call.options.metadata, Code::EREQUEST)?;
        Ok(Fields {
            call,
            scheme: if grpc.tls.is_some() {
                b"https"
            } else {
                b"http"
            },
            authority: grpc.addr.as_bytes(),
            timeout,
            encoding: request_encoding(call)?.and_then(wire::encoding_name),
            traceparent: call.span.context().map(wire::traceparent),
            authorization,
            metadata,
        })
    }

    fn encode(&self, encoder: &mut Encoder, block: &mut BytesMut) {
        use Indexing::{Never, No, Yes};
        let fixed = [
            (&b":method"[..], &b"POST"[..], Yes),
            (b":scheme", self.scheme, Yes),
            (b":path", self.call.method.path.as_bytes(), Yes),
            (b":authority", self.authority, Yes),
            (b"content-type", wire::CONTENT_TYPE_TEXT.as_bytes(), Yes),
            (b"te", b"trailers", Yes),
            (b"user-agent", USER_AGENT_VALUE.as_bytes(), Yes),
            (
                b"grpc-accept-encoding",
                wire::ACCEPT_ENCODING_TEXT.as_bytes(),
                Yes,
            ),
        ];
        let timeout = (self.timeout.1 > 0)
            .then(|| (&b"grpc-timeout"[..], &self.timeout.0[..self.timeout.1], No));
        let encoding = self
            .encoding
            .as_ref()
            .map(|v| (&b"grpc-encoding"[..], v.as_bytes(), Yes));
        let trace = self
            .traceparent
            .as_ref()
            .map(|v| (&b"traceparent"[..], v.as_bytes(), No));
        let authorization = self
            .authorization
            .map(|v| (&b"authorization"[..], v, Never));
        let metadata = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes(), No));
        encoder.encode(
            fixed
                .into_iter()
                .chain(timeout)
                .chain(encoding)
                .chain(trace)
                .chain(authorization)
                .chain(metadata),
            block,
        );
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

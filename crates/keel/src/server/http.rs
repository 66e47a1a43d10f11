//! One server connection speaking HTTP/1.1 (hyper's http1 server): JSON
//! calls of any method, and the builtin console.
//!
//! ```text
//!   hyper http1 connection (keep-alive, pipelining; this task drives it)
//!     └─ a request ─► body read up to the limit (413 past it)
//!          ├─ POST /package.Service/Method  ─► JSON call: JSON → message
//!          │    (proto3 JSON mapping, prost-reflect over the descriptors
//!          │    keel-build embeds) ─► Dispatcher::start ─► message → JSON
//!          └─ anything else                 ─► crate::console (when on)
//! ```
//!
//! Owns: HTTP/1 framing, the JSON mapping of calls, HTTP statuses of
//! errors. May not touch: routing, limits, handlers or statistics — the
//! dispatcher does those, as for every protocol.
//!
//! Bad input closes the connection after a 4xx: a header block over 64 KiB
//! (431, from hyper), a malformed request line or header (400, from hyper),
//! a body over the server's `max_body_size` (413).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request as HttpRequest, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost_reflect::DescriptorPool;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec::grpc as headers;
use crate::codec::json;
use crate::compression::Compression;
use crate::method::MethodKind;
use crate::server::builder::{Port, ServerCore};
use crate::server::dispatch::Request;
use crate::server::interceptor::authenticate;
use crate::server::sniff::OpenGuard;
use crate::status::{Code, Status};

/// The header a JSON call's timeout comes in, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-timeout-ms";

/// What an HTTP handler answers.
pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// Serves HTTP/1.1 on `io` until the client closes the connection, bad
/// input ends it, or a graceful shutdown lets the request in flight finish.
pub(crate) async fn serve<T>(
    io: T,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
    open: Arc<OpenGuard>,
    port: Port,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_head = shared.conn_limits.max_header_size;
    let conn = Arc::new(Conn {
        shared,
        peer,
        port,
        open,
        verdict: OnceLock::new(),
    });
    let service = hyper::service::service_fn(move |request: HttpRequest<Incoming>| {
        let conn = conn.clone();
        async move {
            let _in_flight = conn.open.info().call();
            Ok::<_, std::convert::Infallible>(handle(request, &conn).await)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(max_head).keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.changed() => {}
    }
    // Graceful: the request being answered finishes, then the connection
    // closes (the server's deadline cuts it otherwise).
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What the requests of one connection share.
struct Conn {
    shared: Arc<ServerCore>,
    peer: SocketAddr,
    port: Port,
    open: Arc<OpenGuard>,
    /// The authenticator's verdict on the connection, from its first
    /// request's `authorization` header (as gRPC does on its first stream).
    verdict: OnceLock<Result<(), Status>>,
}

/// The same response, closing the connection after it.
fn closing(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Answers one request.
async fn handle(request: HttpRequest<Incoming>, conn: &Conn) -> HttpResponse {
    let Conn {
        shared, peer, port, ..
    } = conn;
    let peer = *peer;
    let (parts, body) = request.into_parts();
    let limit = shared.wire_limits.max_body_size;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than this server's limit of {limit} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                )
            };
            return closing(text(status, message));
        }
    };
    let call = method_path(parts.uri.path()).filter(|(service, method)| {
        parts.method == Method::POST
            && (shared.dispatcher.table().lookup(service, method).is_ok() || service.contains('.'))
    });
    // A server with an authenticator checks every HTTP connection once,
    // console pages included, except the console on its internal port.
    if shared.authenticator.is_some() && (call.is_some() || *port != Port::Internal) {
        let verdict = conn.verdict.get_or_init(|| {
            let credential = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .map_or(&b""[..], HeaderValue::as_bytes);
            authenticate(shared.authenticator.as_deref(), credential, peer)
        });
        if let Err(status) = verdict {
            return closing(error_response(status));
        }
    }
    if let Some((service, method)) = call {
        return json_call(shared, &parts, service, method, body, peer)
            .await
            .unwrap_or_else(|status| error_response(&status));
    }
    if port.console() {
        return crate::console::respond(shared, &parts, &body);
    }
    text(
        StatusCode::NOT_FOUND,
        format!(
            "{} is not served here (the console is off)",
            parts.uri.path()
        ),
    )
}

/// `(service, method)` of `/package.Service/Method`.
fn method_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    respond(status, "text/plain; charset=utf-8", body.into())
}

/// An answer with a body of `content_type`.
pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The JSON answer of a failed call: its HTTP status from the one mapping
/// table ([`Code::http_status`]), and `{"code", "name", "message"}`.
pub(crate) fn error_response(status: &Status) -> HttpResponse {
    let code = status.code();
    let body = serde_json::json!({
        "code": code.value(),
        "name": code.name(),
        "message": status.message(),
    });
    let http =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = respond(http, "application/json", Bytes::from(body.to_string()));
    if let Ok(value) = HeaderValue::from_str(&code.value().to_string()) {
        response.headers_mut().insert(headers::KEEL_CODE, value);
    }
    response
}

/// The descriptors of every message the server's services use, decoded
/// once, on the first JSON call.
fn schema(shared: &ServerCore) -> Result<&DescriptorPool, Status> {
    shared
        .schema
        .get_or_init(|| {
            let services = shared.dispatcher.table().services();
            json::pool(services.flat_map(|s| s.files.iter().copied()))
        })
        .as_ref()
        .map_err(|e| Status::internal(format!("the services' {e}")))
}

/// A unary call with a JSON body (the proto3 JSON mapping both ways);
/// an `Err` is answered by [`error_response`].
async fn json_call(
    shared: &Arc<ServerCore>,
    parts: &http::request::Parts,
    service: &str,
    method: &str,
    body: Bytes,
    peer: SocketAddr,
) -> Result<HttpResponse, Status> {
    let dispatcher = &shared.dispatcher;
    let route = match dispatcher.table().lookup(service, method) {
        Ok(route) => route,
        Err(status) => {
            dispatcher.count_protocol_error();
            return Err(status);
        }
    };
    let descriptor = route.method;
    if descriptor.kind != MethodKind::Unary {
        return Err(Status::unimplemented(format!(
            "{descriptor} is a streaming method: call it over gRPC"
        )));
    }
    let pool = schema(shared)?;
    let request_type = json::message(pool, descriptor.request_type)?;
    let response_type = json::message(pool, descriptor.response_type)?;
    let payload = json::from_json(request_type, &body).map_err(|e| {
        dispatcher.refuse_method(
            route.table_index,
            Status::new(
                Code::EREQUEST,
                format!("the JSON body is not a {}: {e}", descriptor.request_type),
            ),
        )
    })?;
    let deadline = match parts.headers.get(TIMEOUT_HEADER) {
        None => None,
        Some(value) => {
            let ms: u64 = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    Status::new(
                        Code::EREQUEST,
                        format!("{TIMEOUT_HEADER} {value:?} is not a number of milliseconds"),
                    )
                })?;
            Some(Instant::now() + Duration::from_millis(ms.min(100 * 365 * 86_400_000)))
        }
    };
    let mut metadata = headers::metadata_from(&parts.headers);
    for hop in ["accept", "keep-alive", "transfer-encoding", TIMEOUT_HEADER] {
        metadata.remove(hop);
    }
    let call = Request {
        service,
        method,
        payload: Bytes::from(payload),
        stream: None,
        attachment: Bytes::new(),
        metadata,
        compression: Compression::None,
        peer: Some(peer),
        log_id: 0,
        deadline,
        trace: headers::trace_from(&parts.headers),
        protocol: "http",
    };
    let mut answer = dispatcher
        .start(call, BytesMut::new())
        .map_err(Status::from)?
        .await;
    answer.finish_span();
    answer.result?;
    let json = json::to_json(response_type, answer.body.freeze()).map_err(|e| {
        Status::internal(format!(
            "the handler's response is not a valid {}: {e}",
            descriptor.response_type
        ))
    })?;
    let mut http = respond(StatusCode::OK, "application/json", Bytes::from(json));
    answer.metadata.extend_from(&answer.trailers);
    // Metadata HTTP cannot carry is dropped rather than failing a call
    // that succeeded.
    let _ = headers::metadata_into(&answer.metadata, http.headers_mut(), Code::Internal);
    Ok(http)
}

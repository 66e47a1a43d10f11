//! One server connection speaking gRPC over HTTP/2 (the `h2` crate).
//!
//! ```text
//!   h2 connection (this task drives its I/O)
//!     └─ accept a stream ─► stream task (owned by the connection's JoinSet)
//!          (streaming methods: a ServerStream the handler reads and sends on, see crate::streaming)
//!          headers: path /pkg.Service/Method, grpc-timeout, grpc-encoding, metadata, traceparent
//!          data:    one length-prefixed message (flow control released as read)
//!          ─► Dispatcher::start ─► running call, raced against RST_STREAM
//!          ─► headers 200 + one message + trailers (grpc-status ...)
//!             or, when refused or failed, a trailers-only response
//! ```
//!
//! Owns: gRPC framing on the server side (messages in and out, their
//! compression, status in trailers) and the connection's authentication
//! state: the server's [`Authenticator`](crate::server::Authenticator)
//! checks the first stream's `authorization` header once per HTTP/2
//! connection; a connection that fails has each of its streams answered
//! `UNAUTHENTICATED` (`keel-code` `ERPCAUTH`) and is closed (GOAWAY, and
//! cut after a second if the client does not let it close). May not touch: routing, limits,
//! handlers, spans' contents or statistics — the dispatcher does those, the
//! same for every protocol.
//!
//! A client that resets a stream (RST_STREAM) or drops the connection
//! cancels its handler: the stream task is dropped with the running call.
//! Graceful shutdown sends GOAWAY: streams in flight finish, new ones are
//! refused by the client, and the connection closes when the last ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request as HttpRequest, Response, StatusCode};
use keel_pool::FutureBox;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::codec::grpc as wire;
use crate::compression::Compression;
use crate::metadata::Metadata;
use crate::method::MethodKind;
use crate::server::builder::ServerCore;
use crate::server::dispatch::{Answer, Request};
use crate::server::interceptor::authenticate;
use crate::server::sniff::OpenGuard;
use crate::status::{Code, Status};
use crate::streaming::{Incoming, Outgoing, ServerStream};

/// Per-stream receive window: how much a client may send ahead of the
/// handler (bounds what a stream buffers).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Largest DATA frame the peer may send (HTTP/2's default is 16 KiB). h2
/// queues each received frame in a per-connection slab until the call
/// reads it, and that slab never shrinks: with 16 KiB frames a 1 MiB window
/// queues 64 frames and a connection kept about 30 KB per side after one
/// large message; 64 KiB frames queue a quarter as many.
const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Streams a client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// How long a connection whose credential failed stays open to read its
/// refusals: then it is cut, whether or not the client took part in
/// closing it (one that never answers the GOAWAY's ping would keep it
/// open).
const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// Serves gRPC on `io` (the preface included) until the client closes the
/// connection or a graceful shutdown has let every stream finish.
pub(crate) async fn serve<T>(
    io: T,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
    open: Arc<OpenGuard>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(shared.conn_limits.max_calls_per_connection.map_or(
            MAX_CONCURRENT_STREAMS,
            |max| {
                u32::try_from(max)
                    .unwrap_or(u32::MAX)
                    .min(MAX_CONCURRENT_STREAMS)
            },
        ))
        .max_header_list_size(
            u32::try_from(shared.conn_limits.max_header_size).unwrap_or(u32::MAX),
        );
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        conn = handshake => match conn {
            Ok(conn) => conn,
            Err(_) => return,
        },
        _ = shutdown.changed() => return,
    };
    // Dropped with the connection task: a connection cut at the shutdown
    // deadline, or lost, cancels its handlers.
    let mut streams = JoinSet::new();
    let mut draining = false;
    if shared.dispatcher.is_draining() {
        conn.graceful_shutdown();
        draining = true;
    }
    // Keepalive: a ping every `interval`; a peer that does not answer
    // within `timeout` is gone, and its connection is closed.
    let keepalive = shared.grpc_keepalive;
    let mut ping_pong = keepalive.and_then(|_| conn.ping_pong());
    let far = Duration::from_secs(86_400 * 365);
    let next_ping = tokio::time::sleep(keepalive.map_or(far, |k| k.interval));
    tokio::pin!(next_ping);
    let mut awaiting_pong = false;
    // The authenticator's verdict on this connection, once its first
    // stream has been seen (always a pass when there is none).
    let mut admission: Option<Result<(), Status>> =
        shared.authenticator.is_none().then_some(Ok(()));
    let cut = tokio::time::sleep(far);
    tokio::pin!(cut);
    let mut refused = false;
    loop {
        tokio::select! {
            () = &mut next_ping, if ping_pong.is_some() => {
                let (Some(pings), Some(k)) = (ping_pong.as_mut(), keepalive) else { break };
                if awaiting_pong {
                    // No pong within the timeout: the peer is gone.
                    break;
                }
                if pings.send_ping(h2::Ping::opaque()).is_err() {
                    break;
                }
                shared.dispatcher.stats.keepalive_pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                awaiting_pong = true;
                next_ping.as_mut().reset(Instant::now() + k.timeout);
            }
            pong = std::future::poll_fn(|cx| match ping_pong.as_mut() {
                Some(pings) => pings.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if awaiting_pong => {
                if pong.is_err() {
                    break;
                }
                awaiting_pong = false;
                let interval = keepalive.map_or(far, |k| k.interval);
                next_ping.as_mut().reset(Instant::now() + interval);
            }
            accepted = conn.accept() => match accepted {
                Some(Ok((request, mut respond))) => {
                    // The first stream's credential decides for the whole
                    // connection; a connection that failed is answered
                    // on every stream it opened and closed (GOAWAY), as
                    // baidu_std closes one.
                    let verdict = admission.get_or_insert_with(|| {
                        authenticate(
                            shared.authenticator.as_deref(),
                            credential(request.headers()),
                            peer,
                        )
                    });
                    if let Err(status) = verdict {
                        shared.dispatcher.count_protocol_error();
                        let _ = respond.send_response(trailers_only(status, &[]), true);
                        if !refused {
                            refused = true;
                            cut.as_mut().reset(Instant::now() + REFUSED_LINGER);
                        }
                        if !draining {
                            draining = true;
                            conn.graceful_shutdown();
                        }
                        continue;
                    }
                    // First poll inline, as baidu_std does: a unary call
                    // whose message came with its headers and whose handler
                    // does not wait is answered here, with no task and no
                    // wakeup. Its future lives in a pooled block; one that
                    // waits becomes a task (polled again at once with a
                    // real waker).
                    let mut call = FutureBox::new(stream(request, respond, peer, shared.clone(), open.clone()));
                    let noop = &mut std::task::Context::from_waker(std::task::Waker::noop());
                    if std::pin::Pin::new(&mut call).poll(noop).is_pending() {
                        streams.spawn(call);
                    }
                }
                // Closed by the client, by an error, or drained.
                Some(Err(_)) | None => break,
            },
            changed = shutdown.changed(), if !draining => {
                let _ = changed;
                draining = true;
                conn.graceful_shutdown();
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            () = &mut cut, if refused => break,
        }
    }
    // Streams whose answers were queued finish writing with the connection
    // gone or closing; what remains is cancelled.
    streams.shutdown().await;
}

/// The credential a stream carries: its `authorization` header (empty
/// when it has none).
fn credential(headers: &HeaderMap) -> &[u8] {
    headers
        .get(AUTHORIZATION)
        .map_or(&[][..], HeaderValue::as_bytes)
}

/// What a stream's headers say about its call.
struct Head<'a> {
    service: &'a str,
    method: &'a str,
    kind: MethodKind,
    encoding: Option<Compression>,
    /// How answers are compressed: like the request, when the client takes it.
    compress: Option<Compression>,
    deadline: Option<Instant>,
}

/// Serves one stream: one call of any kind.
async fn stream(
    request: HttpRequest<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    shared: Arc<ServerCore>,
    open: Arc<OpenGuard>,
) {
    let _in_flight = open.info().call();
    let (parts, mut body) = request.into_parts();
    let headers = &parts.headers;
    let head = match read_head(&parts, &shared) {
        Ok(head) => head,
        Err(status) => {
            shared.dispatcher.count_protocol_error();
            let _ = respond.send_response(trailers_only(&status, &[]), true);
            return;
        }
    };
    let max = shared.grpc_max_message_size;
    let mut request = Request {
        service: head.service,
        method: head.method,
        payload: Bytes::new(),
        stream: None,
        attachment: Bytes::new(),
        metadata: wire::metadata_from(headers),
        compression: head.encoding.unwrap_or(Compression::None),
        peer: Some(peer),
        log_id: 0,
        deadline: head.deadline,
        trace: wire::trace_from(headers),
        protocol: "grpc",
    };
    if head.kind != MethodKind::Unary {
        request.stream = Some(Box::new(ServerStream::new(
            Incoming::server(body, max, head.encoding, head.deadline),
            Outgoing::server(respond, head.compress),
        )));
        let answer = match shared.dispatcher.start(request, BytesMut::new()) {
            Ok(running) => running.await,
            Err(refused) => {
                if let Some(stream) = refused.stream {
                    stream.finish(&Err(refused.status), &Metadata::new());
                }
                return;
            }
        };
        let Answer {
            result,
            mut metadata,
            trailers,
            stream,
            mut span,
            ..
        } = answer;
        metadata.extend_from(&trailers);
        if let Some(stream) = stream {
            stream.finish(&result, &metadata);
        }
        if span.is_sampled() {
            span.mark(crate::rpcz::Mark::Sent);
            let code = result.as_ref().err().map_or(0, |e| e.code().value());
            std::mem::take(&mut span).finish(code);
        }
        return;
    }
    let started = match wire::read_one(&mut body, max, head.encoding, Code::Internal).await {
        Ok(message) => {
            request.payload = message;
            shared
                .dispatcher
                .start(request, wire::answer_buffer())
                .map_err(Status::from)
        }
        Err(status) => {
            shared.dispatcher.count_protocol_error();
            Err(status)
        }
    };
    let mut running = match started {
        Ok(running) => running,
        Err(status) => {
            let _ = respond.send_response(trailers_only(&status, &[]), true);
            return;
        }
    };
    // The handler runs until it answers or the client resets the stream.
    let answer = tokio::select! {
        answer = &mut running => answer,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let compress = response_compression(answer.compression, head.compress, headers);
    send_answer(respond, answer, compress);
}

/// Checks a stream's headers and reads what they say about the call.
fn read_head<'a>(parts: &'a http::request::Parts, shared: &ServerCore) -> Result<Head<'a>, Status> {
    let headers = &parts.headers;
    let (service, method) = route(parts.uri.path())?;
    if !headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return Err(Status::new(
            Code::Unknown,
            "content-type is not application/grpc",
        ));
    }
    let encoding = wire::encoding_from(headers).map_err(|name| {
        Status::unimplemented(format!(
            "grpc-encoding {name} is not supported (gzip, deflate, identity are)"
        ))
    })?;
    let deadline = match headers.get(wire::GRPC_TIMEOUT) {
        None => None,
        Some(value) => {
            let timeout = value
                .to_str()
                .ok()
                .and_then(keel_wire::grpc::parse_timeout)
                .ok_or_else(|| {
                    Status::new(
                        Code::Internal,
                        format!("grpc-timeout {value:?} is malformed"),
                    )
                })?;
            Some(Instant::now() + timeout.min(Duration::from_secs(100 * 365 * 86_400)))
        }
    };
    // Unknown methods are refused by the dispatcher, as on every protocol.
    let kind = shared
        .dispatcher
        .table()
        .lookup(service, method)
        .map_or(MethodKind::Unary, |route| route.method.kind);
    Ok(Head {
        service,
        method,
        kind,
        encoding,
        compress: encoding.filter(|&kind| wire::accepts(headers, kind)),
        deadline,
    })
}

/// `(service, method)` of a gRPC path `/package.Service/Method`.
fn route(path: &str) -> Result<(&str, &str), Status> {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        .ok_or_else(|| Status::unimplemented(format!("{path:?} is not a gRPC method path")))
}

/// Headers of a trailers-only response carrying `status`, and whatever
/// response metadata the handler set (gRPC servers send it with failures
/// too; metadata that cannot be sent is left out).
fn trailers_only(status: &Status, metadata: &[&Metadata]) -> Response<()> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, wire::CONTENT_TYPE);
    headers.insert(wire::GRPC_ACCEPT_ENCODING, wire::ACCEPT_ENCODING);
    for metadata in metadata {
        let mut extra = HeaderMap::new();
        if wire::metadata_into(metadata, &mut extra, Code::EINTERNAL).is_ok() {
            headers.extend(extra);
        }
    }
    wire::status_into(status, headers);
    response
}

/// How an answer is compressed: as the handler chose when the client takes
/// it, else `default` (like the request).
fn response_compression(
    chosen: Option<Compression>,
    default: Option<Compression>,
    request: &HeaderMap,
) -> Option<Compression> {
    match chosen {
        Some(Compression::None) => None,
        Some(kind) if wire::accepts(request, kind) => Some(kind),
        _ => default,
    }
}

/// Writes the call's answer: headers (with the response metadata), the
/// message and trailers (status and trailing metadata), or a trailers-only
/// response when it failed.
fn send_answer(
    mut respond: SendResponse<Bytes>,
    mut answer: Answer,
    compress: Option<Compression>,
) {
    let result = std::mem::replace(&mut answer.result, Ok(()));
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, wire::CONTENT_TYPE);
    headers.insert(wire::GRPC_ACCEPT_ENCODING, wire::ACCEPT_ENCODING);
    let mut trailers = HeaderMap::new();
    let framed = result.and_then(|()| {
        wire::metadata_into(&answer.metadata, headers, Code::EINTERNAL)?;
        wire::metadata_into(&answer.trailers, &mut trailers, Code::EINTERNAL)?;
        if let Some(name) = compress.and_then(wire::encoding_name) {
            headers.insert(wire::GRPC_ENCODING, name);
        }
        wire::seal(std::mem::take(&mut answer.body), compress)
    });
    let message = match framed {
        Ok(message) => message,
        Err(status) => {
            let metadata = [&answer.metadata, &answer.trailers];
            let _ = respond.send_response(trailers_only(&status, &metadata), true);
            answer.finish_span();
            return;
        }
    };
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    let _ = send.send_data(message, false);
    trailers.insert(wire::GRPC_STATUS, HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
    answer.finish_span();
}

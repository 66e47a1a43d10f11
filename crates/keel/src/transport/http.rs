//! One `host:port` spoken to as HTTP/1.1 with JSON bodies (`http://`
//! channels): the generated clients work unchanged, their messages mapped
//! to JSON and back by the descriptors keel-build embeds.
//!
//! ```text
//!   Call ─► request message → JSON (codec::json, proto3 mapping)
//!        ─► an idle keep-alive connection, or a new one (hyper http1 client)
//!        ─► POST /pkg.Service/Method  (x-timeout-ms, traceparent,
//!                                      authorization, metadata as headers)
//!        ◄─ 200 + JSON → response message; else {"code","message"} → Status
//!        ─► the connection back to the idle list (at most MAX_IDLE)
//! ```
//!
//! HTTP/1.1 carries one call at a time per connection, so concurrent calls
//! use as many connections; the idle ones are kept for reuse, up to
//! [`MAX_IDLE`], and each connection's task ends when its handle is
//! dropped (R5). Owns: HTTP/1 on the client side. May not touch: retries,
//! server choice, statistics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::EndpointConfig;
use super::grpc::Credential;
use super::reconnect::Reconnect;
use crate::codec::grpc as wire;
use crate::codec::json;
use crate::status::{Code, Status};
use crate::transport::{Call, Reply};

/// Idle connections kept per endpoint.
pub const MAX_IDLE: usize = 16;

/// An HTTP/1.1 endpoint: JSON calls over keep-alive connections.
pub struct Http {
    addr: String,
    config: EndpointConfig,
    host: Option<HeaderValue>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pending: AtomicUsize,
    credential: Credential,
    /// TLS, when the channel has it.
    tls: Option<Result<crate::tls::Connector, String>>,
    /// When to connect again after failures.
    reconnect: Reconnect,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("addr", &self.addr)
            .field("pending", &self.pending_calls())
            .finish()
    }
}

fn unwritten(why: String) -> Status {
    Status::new(Code::EFAILEDSOCKET, why).with_request_unwritten()
}

impl Http {
    pub(crate) fn new(addr: String, config: EndpointConfig) -> Http {
        Http {
            tls: super::tls_for(&config, &addr),
            host: HeaderValue::from_str(&addr).ok(),
            credential: Credential::new(&config.credential),
            addr,
            config,
            idle: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
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

    /// Whether a connection is open now (idle or carrying a call).
    pub fn is_connected(&self) -> bool {
        self.pending_calls() > 0 || !self.lock().is_empty()
    }

    pub(crate) fn reconnect(&self) -> &Reconnect {
        &self.reconnect
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Full<Bytes>>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection still open, if any.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.lock();
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// A new connection, unless the endpoint waits after failures.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Status> {
        self.reconnect.admit(&self.addr)?;
        let stream = super::connect(&self.addr, self.config.connect_timeout)
            .await
            .inspect_err(|_| self.reconnect.failed())?;
        let stream = super::counted(stream, "http");
        let connected = match &self.tls {
            None => self.handshake(stream).await,
            Some(tls) => match super::handshake_tls(tls, stream, &self.addr).await {
                Ok(stream) => self.handshake(stream).await,
                Err(e) => Err(e),
            },
        };
        match &connected {
            Ok(_) => self.reconnect.connected(),
            Err(_) => self.reconnect.failed(),
        }
        connected
    }

    /// HTTP/1's handshake over `io`; the connection then runs as its own
    /// task, ending when it closes, which it does once the sender and its
    /// clones are dropped.
    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Full<Bytes>>, Status>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(io);
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| unwritten(format!("HTTP/1 handshake with {} failed: {e}", self.addr)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The request of `call`, its body `json`.
    fn request(&self, call: &Call<'_>, json: Bytes) -> Result<Request<Full<Bytes>>, Status> {
        let mut request = Request::new(Full::new(json));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = http::Uri::from_static(call.method.path);
        let headers = request.headers_mut();
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("keel/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
            headers.insert(crate::server::TIMEOUT_HEADER, HeaderValue::from(ms));
        }
        if let Some(trace) = call.span.context() {
            headers.insert(wire::TRACEPARENT, wire::traceparent(trace));
        }
        self.credential.insert(call, headers)?;
        wire::metadata_into(&call.options.metadata, headers, Code::EREQUEST)?;
        Ok(request)
    }

    /// One attempt of `call`.
    pub(crate) async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        let _pending = super::PendingGuard::new(&self.pending);
        let method = call.method;
        let pool = json::pool_of(method)?;
        let request_type = json::message(&pool, method.request_type)?;
        let response_type = json::message(&pool, method.response_type)?;
        let body = json::to_json(request_type, crate::codec::encode_to_bytes(call.request))
            .map_err(|e| {
                Status::new(
                    Code::EREQUEST,
                    format!("{method}'s request cannot be written as JSON: {e}"),
                )
            })?;
        let mut request = self.request(call, Bytes::from(body))?;
        // An idle connection the server closed meanwhile hands the request
        // back unsent: it goes out again on a new connection.
        let (mut sender, response) = loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                // In a pooled block: hyper's handshake (TLS too) is a
                // future of several KB, which inline would make every
                // call's future as large, over every protocol (a call
                // future is moved into place when it starts).
                None => (keel_pool::FutureBox::new(self.connect()).await?, false),
            };
            if std::future::poll_fn(|cx| sender.poll_ready(cx))
                .await
                .is_err()
            {
                if reused {
                    continue;
                }
                self.reconnect.failed();
                return Err(unwritten(format!("the connection to {} closed", self.addr)));
            }
            call.span.mark(crate::rpcz::Mark::Sent);
            match sender.try_send_request(request).await {
                Ok(response) => break (sender, response),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    Some(_) => {
                        self.reconnect.failed();
                        return Err(unwritten(format!(
                            "the connection to {} failed: {}",
                            self.addr,
                            failed.error()
                        )));
                    }
                    None => {
                        if !reused {
                            self.reconnect.failed();
                        }
                        return Err(Status::new(
                            Code::EFAILEDSOCKET,
                            format!(
                                "the connection to {} failed during the call: {}",
                                self.addr,
                                failed.error()
                            ),
                        ));
                    }
                },
            }
        };
        self.reconnect.answered();
        let (parts, body) = response.into_parts();
        let limit = self.config.max_body_size;
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                Status::new(
                    Code::ERESPONSE,
                    format!("the response of {method} could not be read (the limit is {limit} bytes): {e}"),
                )
            })?
            .to_bytes();
        let closing = parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing
            && std::future::poll_fn(|cx| sender.poll_ready(cx))
                .await
                .is_ok()
        {
            self.give_back(sender);
        }
        if parts.status != http::StatusCode::OK {
            return Err(error_status(parts.status, &body));
        }
        let payload = json::from_json(response_type, &body).map_err(|e| {
            Status::new(
                Code::ERESPONSE,
                format!(
                    "the response of {method} is not a {}: {e}",
                    method.response_type
                ),
            )
        })?;
        let mut metadata = wire::metadata_from(&parts.headers);
        metadata.remove("date");
        Ok(Reply {
            payload: Bytes::from(payload),
            attachment: Bytes::new(),
            metadata,
        })
    }
}

/// The status of a failed HTTP call: the Keel code and message of its
/// JSON body (see the server's answers), else the code gRPC reads in the
/// HTTP status.
fn error_status(status: http::StatusCode, body: &[u8]) -> Status {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code")?.as_i64())
        .and_then(|c| i32::try_from(c).ok());
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    match code {
        Some(code) => Status::new(Code::new(code), message),
        None => Status::new(
            Code::from_http_status(status.as_u16()),
            format!("HTTP {status}: {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_servers_code_or_read_the_http_status() {
        let keel = error_status(
            http::StatusCode::NOT_FOUND,
            br#"{"code":1002,"name":"ENOMETHOD","message":"no such method"}"#,
        );
        assert_eq!(
            (keel.code(), keel.message()),
            (Code::ENOMETHOD, "no such method")
        );
        let plain = error_status(http::StatusCode::SERVICE_UNAVAILABLE, b"busy");
        assert_eq!(plain.code(), Code::Unavailable);
        assert!(plain.message().contains("busy"));
    }
}

//! The one dispatch path: every call, whatever protocol brought it (baidu_std
//! over TCP, the in-process channel; gRPC and HTTP next), reaches its
//! handler through [`Dispatcher::start`] and the future it returns.
//!
//! ```text
//!   protocol decodes a call ──► Request { service, method, payload, attachment,
//!                                         metadata, peer, log_id, deadline, trace }
//!        │ Dispatcher::start
//!        ├─ draining?                     ELOGOFF
//!        ├─ MethodTable::lookup           ENOSERVICE / ENOMETHOD
//!        ├─ interceptors' before          their Status (e.g. ERPCAUTH)
//!        ├─ concurrency limits (Permit)   ELIMIT
//!        └─ server span (rpcz)
//!        ▼
//!   Running future: handler under catch_unwind (EINTERNAL), bounded by the
//!   deadline (ERPCTIMEDOUT), span as the task's current span; then
//!   interceptors' after, per-method and server statistics
//!        ▼
//!   Answer { result, body, attachment, metadata, span } ──► protocol frames it
//! ```
//!
//! Owns: admission (draining, routing, interceptors, limits), the handler's
//! run (panics, deadline, span scope) and the statistics. May not touch:
//! bytes on the wire, compression, sockets — the protocol modules do that
//! before `start` and after the answer. Refusals before the handler runs are
//! returned as `Err(Status)` for the protocol to frame like any answer.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use keel_pool::FutureBox;
use tokio::time::Instant;

use crate::context::Context;
use crate::metadata::Metadata;
use crate::metrics::MethodStats;
use crate::rpcz::{Mark, SpanHandle, TraceContext};
use crate::server::interceptor::Interceptors;
use crate::server::limit::{Limits, Permit};
use crate::server::method_table::MethodTable;
use crate::server::service::Service;
use crate::status::{Code, Status};
use crate::streaming::ServerStream;

/// One call as a protocol decoded it.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    /// The request message, decompressed (empty for a streaming call).
    pub(crate) payload: Bytes,
    /// A streaming call's stream (gRPC): the handler reads its requests
    /// from it and sends its responses to it.
    pub(crate) stream: Option<Box<ServerStream>>,
    pub(crate) attachment: Bytes,
    pub(crate) metadata: Metadata,
    /// How the request arrived compressed.
    pub(crate) compression: crate::compression::Compression,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) log_id: u64,
    pub(crate) deadline: Option<Instant>,
    /// The caller's trace ids, when it sent them.
    pub(crate) trace: Option<TraceContext>,
    pub(crate) protocol: &'static str,
}

/// A finished call, for the protocol to write.
pub(crate) struct Answer {
    /// `Ok`: the encoded response message is in `body`.
    pub(crate) result: Result<(), Status>,
    /// The response message (the buffer handed to `start`, reused).
    pub(crate) body: BytesMut,
    pub(crate) attachment: Bytes,
    pub(crate) metadata: Metadata,
    /// Metadata for after the response (gRPC trailers).
    pub(crate) trailers: Metadata,
    /// The response compression the handler chose, if it chose one.
    pub(crate) compression: Option<crate::compression::Compression>,
    /// A streaming call's stream, back from the handler, for the protocol
    /// to end with `result` and `metadata`.
    pub(crate) stream: Option<Box<ServerStream>>,
    /// The call's span when sampled: the protocol marks it sent and
    /// finishes it once the answer is framed.
    pub(crate) span: SpanHandle,
}

impl Answer {
    /// An answer that is only a failure: no message, no span.
    pub(crate) fn failed(status: Status) -> Answer {
        Answer {
            result: Err(status),
            body: BytesMut::new(),
            attachment: Bytes::new(),
            metadata: Metadata::new(),
            trailers: Metadata::new(),
            compression: None,
            stream: None,
            span: SpanHandle::none(),
        }
    }

    /// Marks the span sent and finishes it (when sampled).
    pub(crate) fn finish_span(&mut self) {
        if self.span.is_sampled() {
            self.span.mark(Mark::Sent);
            let status = self.result.as_ref().err().map_or(0, |e| e.code().value());
            std::mem::take(&mut self.span).finish(status);
        }
    }
}

/// An admitted call, running. Owns everything it uses, so it can move to a
/// task of its own when the handler waits. Its memory is a pooled block
/// (no allocation per call in steady state).
pub(crate) type Running = FutureBox<'static, Answer>;

/// Server-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// HTTP/2 keepalive pings sent (gRPC connections).
    pub(crate) keepalive_pings: AtomicU64,
    /// Bytes read from and written to connections.
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// What every connection of a server, and its in-process channels, share.
pub(crate) struct Dispatcher {
    table: MethodTable,
    limits: Arc<Limits>,
    interceptors: Interceptors,
    /// Per method table_index (see [`Route::table_index`](crate::server::Route::table_index)).
    methods: Vec<MethodStats>,
    draining: AtomicBool,
    pub(crate) stats: Counters,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("table", &self.table)
            .field("interceptors", &self.interceptors)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub(crate) fn new(
        table: MethodTable,
        limits: Limits,
        interceptors: Interceptors,
    ) -> Arc<Dispatcher> {
        let methods = (0..table.method_count())
            .map(|_| MethodStats::default())
            .collect();
        Arc::new(Dispatcher {
            table,
            limits: Arc::new(limits),
            interceptors,
            methods,
            draining: AtomicBool::new(false),
            stats: Counters::default(),
        })
    }

    /// A dispatcher for `table` with no limits and no interceptors.
    pub(crate) fn unlimited(table: MethodTable) -> Arc<Dispatcher> {
        let limits = Limits::new(None, Vec::new());
        Dispatcher::new(table, limits, Interceptors::default())
    }

    pub(crate) fn table(&self) -> &MethodTable {
        &self.table
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Refuse new calls from now on (graceful shutdown).
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Per-method counters: (method, calls, errors, total latency), for
    /// every method served.
    pub(crate) fn method_stats(&self) -> Vec<crate::metrics::MethodStatsSnapshot> {
        self.methods()
            .into_iter()
            .map(|(method, index)| self.methods[index].snapshot(method))
            .collect()
    }

    /// Every method served with its table index (see
    /// [`Route::table_index`](crate::server::Route::table_index)).
    pub(crate) fn methods(&self) -> Vec<(&'static crate::method::MethodDescriptor, usize)> {
        let mut all = Vec::with_capacity(self.methods.len());
        for service in self.table.services() {
            for m in service.methods {
                if let Ok(route) = self.table.lookup(m.service, m.method) {
                    all.push((route.method, route.table_index));
                }
            }
        }
        all
    }

    /// The counters of every method, by table index.
    pub(crate) fn method_stats_table(&self) -> &[MethodStats] {
        &self.methods
    }

    /// Counts an answer the protocol produced on its own (a frame it could
    /// not parse but could answer).
    pub(crate) fn count_protocol_error(&self) {
        self.count(true);
    }

    fn count(&self, failed: bool) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refuse(&self, status: Status) -> Status {
        self.count(true);
        status
    }

    /// A refusal of a routed call (an interceptor, a limit, a request the
    /// protocol could not decode): also counted as a failed call of its
    /// method.
    pub(crate) fn refuse_method(&self, table_index: usize, status: Status) -> Status {
        if let Some(stats) = self.methods.get(table_index) {
            stats.start();
            stats.finish(std::time::Duration::ZERO, Some(status.code().value()));
        }
        self.refuse(status)
    }

    /// Admits `request` and returns its running call, or the refusal to
    /// send back. `body` is an empty buffer the response is encoded into
    /// (the protocol's reused one).
    pub(crate) fn start(
        self: &Arc<Self>,
        mut request: Request<'_>,
        body: BytesMut,
    ) -> Result<Running, Refused> {
        if self.is_draining() {
            return Err(Refused {
                status: self.refuse(Status::new(Code::ELOGOFF, "server is shutting down")),
                stream: request.stream,
            });
        }
        let route = match self.table.lookup(request.service, request.method) {
            Ok(route) => route,
            Err(status) => {
                return Err(Refused {
                    status: self.refuse(status),
                    stream: request.stream,
                });
            }
        };
        let (method, table_index) = (route.method, route.table_index);
        let service = route.service.clone();
        let mut ctx = Context::new(method)
            .with_log_id(request.log_id)
            .with_attachment(request.attachment)
            .with_metadata(request.metadata)
            .with_compression(request.compression)
            .with_protocol(request.protocol);
        if let Some(peer) = request.peer {
            ctx = ctx.with_peer(peer);
        }
        if let Some(deadline) = request.deadline {
            ctx = ctx.with_deadline(deadline);
        }
        if !self.interceptors.is_empty() {
            if let Err(status) = self.interceptors.before(&mut ctx) {
                return Err(Refused {
                    status: self.refuse_method(table_index, status),
                    stream: request.stream.take(),
                });
            }
        }
        let permit = match self.limits.acquire(table_index) {
            Ok(p) => p,
            Err(which) => {
                let status = Status::new(
                    Code::ELIMIT,
                    format!("concurrency limit of {which} reached calling {method}"),
                );
                if !self.interceptors.is_empty() {
                    self.interceptors.after(&ctx, &Err(status.clone()));
                }
                return Err(Refused {
                    status: self.refuse_method(table_index, status),
                    stream: request.stream.take(),
                });
            }
        };
        let span =
            crate::rpcz::tracer().server(method.path, request.trace, std::time::Instant::now());
        if span.is_sampled() {
            if let Some(peer) = request.peer {
                span.set_peer(peer);
            }
            span.set_protocol(request.protocol);
            span.set_request_size(request.payload.len() as u64);
        }
        // Counted as started now: a call dropped before it ends counts in
        // `calls` only.
        if let Some(stats) = self.methods.get(table_index) {
            stats.start();
        }
        Ok(FutureBox::new(run(
            self.clone(),
            service,
            ctx,
            Body {
                payload: request.payload,
                stream: request.stream,
            },
            body,
            Admitted {
                permit,
                table_index,
            },
            span,
        )))
    }
}

/// A call the dispatcher did not admit: why, and its stream (a streaming
/// call's), for the protocol to end with that status.
pub(crate) struct Refused {
    pub(crate) status: Status,
    pub(crate) stream: Option<Box<ServerStream>>,
}

impl From<Refused> for Status {
    fn from(refused: Refused) -> Status {
        refused.status
    }
}

/// What a call brings to its handler: a message, or a stream.
struct Body {
    payload: Bytes,
    stream: Option<Box<ServerStream>>,
}

/// The places an admitted call holds, released when it ends.
struct Admitted {
    permit: Permit,
    table_index: usize,
}

/// Tells the interceptors a call ended without an answer (see `run`).
struct Cancelled<'a> {
    dispatcher: &'a Dispatcher,
    ctx: &'a Context,
    armed: bool,
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if self.armed && !self.dispatcher.interceptors.is_empty() {
            let status = Status::new(
                Code::ECANCELED,
                format!("{} was cancelled: its caller went away", self.ctx.method()),
            );
            self.dispatcher.interceptors.after(self.ctx, &Err(status));
        }
    }
}

/// Runs one admitted call to completion.
///
/// A function returning an `async move` block, not an `async fn`: rustc
/// lays out an `async fn`'s future with each argument twice (as passed,
/// and as the local it is moved into), and this future is in a pooled
/// block for every call in flight.
#[allow(clippy::manual_async_fn)]
fn run(
    dispatcher: Arc<Dispatcher>,
    service: Arc<dyn Service>,
    ctx: Context,
    request: Body,
    mut body: BytesMut,
    admitted: Admitted,
    span: SpanHandle,
) -> impl Future<Output = Answer> + Send {
    async move {
        let started = Instant::now();
        let method = ctx.method();
        // Runs the interceptors' `after` with ECANCELED if this future is
        // dropped before the call ends (declared before the handler's future,
        // so it runs after that is dropped).
        let mut cancelled = Cancelled {
            dispatcher: &dispatcher,
            ctx: &ctx,
            armed: true,
        };
        // A service (or handler) that panics answers EINTERNAL, whether it
        // panics making its future or polling it; the connection and its other
        // calls carry on (the panic is still reported by the panic hook).
        let panicked = || {
            Err(Status::new(
                Code::EINTERNAL,
                format!("the handler of {method} panicked"),
            ))
        };
        let Body {
            payload,
            mut stream,
        } = request;
        let mut call = std::panic::catch_unwind(AssertUnwindSafe(|| match stream.as_mut() {
            Some(stream) => service.call_stream(method.index, &ctx, stream),
            None => service.call(method.index, &ctx, payload, &mut body),
        }))
        .ok();
        let call = std::future::poll_fn(move |cx| {
            let Some(running) = call.as_mut() else {
                return Poll::Ready(panicked());
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| {
                std::pin::Pin::new(&mut *running).poll(cx)
            })) {
                Ok(poll) => poll,
                Err(_) => Poll::Ready(panicked()),
            }
        });
        // Past the deadline the client has given up: stop the handler rather
        // than let abandoned calls pile up.
        let deadline = ctx.deadline();
        let bounded = async move {
            match deadline {
                None => call.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                    Ok(result) => result,
                    Err(_) => Err(Status::new(
                        Code::ERPCTIMEDOUT,
                        format!("{method} did not finish before the client's deadline"),
                    )),
                },
            }
        };
        // A sampled call runs with its span as the task's current span, so
        // client calls the handler makes become its children.
        let (result, span) = if span.is_sampled() {
            span.mark(Mark::HandlerStart);
            let (result, span) = {
                let mut scoped = std::pin::pin!(crate::rpcz::scope(span, bounded));
                let result = scoped.as_mut().await;
                (result, scoped.as_mut().take_value())
            };
            let span = span.unwrap_or_else(SpanHandle::none);
            span.mark(Mark::HandlerEnd);
            span.set_response_size(body.len() as u64);
            (result, span)
        } else {
            (bounded.await, span)
        };
        let Admitted {
            permit,
            table_index,
        } = admitted;
        drop(permit);
        cancelled.armed = false;
        if !dispatcher.interceptors.is_empty() {
            dispatcher.interceptors.after(&ctx, &result);
        }
        let failed = result.is_err();
        if let Some(stats) = dispatcher.methods.get(table_index) {
            stats.finish(
                started.elapsed(),
                result.as_ref().err().map(|e| e.code().value()),
            );
        }
        dispatcher.count(failed);
        Answer {
            result,
            body,
            attachment: ctx.take_response_attachment(),
            metadata: ctx.take_response_metadata(),
            trailers: ctx.take_response_trailers(),
            compression: ctx.response_compression(),
            stream,
            span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call in flight keeps its dispatch future in a pooled block
    /// (the handler's own future is in a block of its own): one of 1 KiB,
    /// which holds the call's context, span and buffers once.
    #[test]
    fn a_call_in_flight_takes_a_1_kib_block() {
        let core = crate::server::Server::builder()
            .build_core()
            .expect("a server with the builtin services");
        let request = Request {
            service: "grpc.health.v1.Health",
            method: "Check",
            payload: Bytes::new(),
            stream: None,
            attachment: Bytes::new(),
            metadata: crate::metadata::Metadata::new(),
            compression: crate::compression::Compression::None,
            peer: None,
            log_id: 0,
            deadline: None,
            trace: None,
            protocol: "test",
        };
        let Ok(running) = core.dispatcher.start(request, BytesMut::new()) else {
            panic!("the builtin health service is routed");
        };
        assert_eq!(running.block_size(), 1024);
    }
}

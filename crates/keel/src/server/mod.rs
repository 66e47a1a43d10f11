//! The server side: the [`Service`] contract generated code implements, the
//! [`MethodTable`] that routes calls to services, the one dispatch path
//! every protocol shares, and the protocols' connection code.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//!   builder.rs      Server, ServerBuilder: bind, accept, shut down
//!   health.rs       builtin grpc.health.v1.Health; HealthReporter
//!   reflection.rs   builtin grpc.reflection.v1(alpha).ServerReflection
//!   sniff.rs        a new connection's first bytes pick its protocol
//!   watchdog.rs     connection limits: how many, first-request and idle timeouts
//!   memory.rs       memory back to the OS once the server goes quiet
//!   baidu_std.rs    one connection speaking baidu_std
//!   http2.rs        one connection speaking gRPC over HTTP/2 (Keel's own)
//!   http2_stream.rs a streaming call's stream, shared by its handler and the connection
//!   http.rs         one connection speaking HTTP/1.1: JSON calls, the console
//!   dispatch.rs     the one dispatch path: admission, handler run, stats
//!   interceptor.rs  Interceptor, Authenticator
//!   limit.rs        concurrency limits (Permit released by Drop)
//!   method_table.rs (service, method) -> route
//!   service.rs      the Service trait generated code implements
//! ```
//!
//! ```text
//!   frame/request ──(service name, method name)──► MethodTable::lookup
//!        │                                            │ ENOSERVICE / ENOMETHOD
//!        ▼                                            ▼
//!   Context (peer, log_id, attachment, deadline) ──► Route { service, method }
//!        │
//!        └──► service.call(method.index, &ctx, payload, &mut response_buf)
//!                 decode (EREQUEST) → user's async fn → encode
//! ```
//!
//! Every protocol (baidu_std and gRPC over TCP, the in-process channel) goes through
//! the dispatch path, so limits, deadlines, spans, panics, interceptors and
//! errors work the same whichever way a call arrives.

mod baidu_std;
pub(crate) mod builder;
pub(crate) mod dispatch;
mod done_queue;
mod health;
pub(crate) mod http;
pub(crate) mod http2;
pub(crate) mod http2_stream;
mod interceptor;
pub(crate) mod limit;
pub(crate) mod memory;
mod method_table;
mod reflection;
mod service;
pub(crate) mod sniff;
mod watchdog;

pub use builder::{Console, Keepalive, Server, ServerBuilder, ServerStats};
pub use health::{HealthReporter, ServingStatus};
pub use http::TIMEOUT_HEADER;
pub use interceptor::{Authenticator, Interceptor};
pub use limit::AdaptiveLimit;
pub use method_table::{MethodTable, MethodTableError, Route};
pub use service::{CallMessages, MessagePools, Service, ServiceFuture, unknown_method};

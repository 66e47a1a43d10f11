//! The server side: the [`Service`] contract generated code implements and
//! the [`MethodTable`] that routes calls to services.
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
//! Transports (the baidu_std [`Server`] over TCP and the in-process channel)
//! all go through this path, so errors look the same whichever way a call
//! arrives.

mod builder;
mod connection;
mod limit;
mod method_table;
mod service;

pub use builder::{Server, ServerBuilder, ServerStats};
pub use method_table::{MethodTable, MethodTableError, Route};
pub use service::{Service, ServiceFuture, unary, unknown_method};

//! Channels: where clients send calls.
//!
//! ```text
//!   Client { channel, options }            (a few words; no heap)
//!      │  unary(&'static METHOD, &req)
//!      ▼
//!   Channel ── Arc ──► Shared { method cache, transport: dyn Transport }
//!      │  1. method cache entry for METHOD (by address; created once)
//!      │  2. deadline from options.timeout, enforced here
//!      ▼
//!   Transport::call(Call { method, options, &req, deadline })
//!      │  in-process today; baidu_std / gRPC sockets later
//!      ▼
//!   Reply { payload, attachment } ── decoded by the client
//! ```
//!
//! A `Channel` is a handle: cloning it clones an `Arc`. All per-method state
//! lives in the shared part and is keyed by the method descriptor's address,
//! so it is bounded by the number of methods, however many clients and
//! option sets call through it.

mod in_process;
mod method_cache;
mod transport;

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::codec::Encode;
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::server::MethodTable;
use crate::status::{Code, Status};

pub use in_process::InProcess;
pub use method_cache::MethodStatsSnapshot;
pub use transport::{Call, Reply, Transport, TransportFuture};

use method_cache::MethodCache;

/// A handle to a destination (a transport) plus the per-method state of
/// calls to it. Clone it freely: clones share everything.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared<dyn Transport>>,
}

/// One allocation holds both the cache and the transport (unsized last
/// field), so a call follows a single pointer.
struct Shared<T: ?Sized> {
    methods: MethodCache,
    transport: T,
}

impl Channel {
    /// A channel sending calls through `transport`.
    pub fn new<T: Transport>(transport: T) -> Channel {
        let shared: Arc<Shared<dyn Transport>> = Arc::new(Shared {
            methods: MethodCache::default(),
            transport,
        });
        Channel { shared }
    }

    /// A channel to the services in `table`, in this process (see
    /// [`InProcess`]).
    pub fn in_process(table: MethodTable) -> Channel {
        Channel::new(InProcess::new(table))
    }

    /// Sends one call and returns its still-encoded reply. Clients use this;
    /// call it directly to send pre-encoded payloads
    /// ([`RawPayload`](crate::codec::RawPayload)).
    ///
    /// Records the call in the method's stats and enforces
    /// `options.timeout`: past it the transport future is dropped (which
    /// cancels the call) and the result is [`Code::ERPCTIMEDOUT`].
    pub async fn call(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
        request: &(dyn Encode + Sync),
    ) -> Result<Reply, Status> {
        let stats = self.shared.methods.entry(method);
        stats.start();
        let started = Instant::now();
        let deadline = options.timeout.and_then(|t| started.checked_add(t));
        let call = self.shared.transport.call(Call {
            method,
            options,
            request,
            deadline,
        });
        let result = match deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_elapsed) => Err(timed_out(method, options)),
            },
        };
        stats.finish(started.elapsed(), result.is_err());
        result
    }

    /// Per-method counters of this channel, one entry per method called
    /// through it so far (in no particular order).
    pub fn method_stats(&self) -> Vec<MethodStatsSnapshot> {
        self.shared.methods.snapshot()
    }

    /// Number of entries in the per-method table: the number of distinct
    /// methods called through this channel.
    pub fn method_cache_len(&self) -> usize {
        self.shared.methods.len()
    }

    /// The transport calls go through.
    pub fn transport(&self) -> &dyn Transport {
        &self.shared.transport
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("methods", &self.method_cache_len())
            .finish_non_exhaustive()
    }
}

fn timed_out(method: &MethodDescriptor, options: &CallOptions) -> Status {
    let millis = options.timeout.map_or(0, |t| t.as_millis());
    Status::new(
        Code::ERPCTIMEDOUT,
        format!("reached timeout={millis}ms calling {method}"),
    )
}

//! rpcz for Keel calls: every sampled server call gets a span, client calls
//! made while handling it get child spans, and the ids travel in baidu_std's
//! `RpcRequestMeta` (trace_id = 4, span_id = 5, parent_span_id = 6), so a
//! trace crosses Keel and brpc processes alike.
//!
//! ```text
//!   request (trace ids?) ─► server span ─► handler runs with it as the
//!                                │          task-local current span
//!                                │              │ client call
//!                                │              ▼
//!                                └── owns ── client span ─► ids in the request meta
//! ```
//!
//! One process-wide [`tracer`] samples toward a target rate (default
//! 1,000 spans/s, like brpc; 0 turns tracing off) and keeps recent finished
//! trees in a bounded store (the console will show it). A request that
//! arrives with a trace id is always traced. The store's bounds (trees and
//! bytes kept, spans per tree, annotation bytes per span) are
//! [`StoreConfig::DEFAULT`] unless [`set_store_config`] chose others before
//! the tracer was first used.

use std::sync::{Arc, OnceLock};

pub use keel_rpcz::{
    Mark, Query, Sampler, SpanHandle, Store, StoreConfig, TraceContext, Tracer, TreeSummary,
};

static TRACER: OnceLock<Tracer> = OnceLock::new();

fn new_tracer(config: StoreConfig) -> Tracer {
    Tracer::new(Sampler::new(1_000), Arc::new(Store::new(config)))
}

/// [`set_store_config`] came too late: the tracer was already made, with
/// the bounds it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the rpcz tracer is already in use with {in_use:?}; set its store's bounds before the first \
     call, server or span of the process"
)]
pub struct TracerInUse {
    /// The bounds the tracer's store has.
    pub in_use: StoreConfig,
}

/// Sets the bounds of the process-wide tracer's store: how many recent
/// trees and bytes it keeps, and how many spans and annotation bytes a tree
/// keeps while open ([`StoreConfig`]). Call it once, early in `main`,
/// before the first call, server or span: the tracer is made on first use
/// and its bounds are fixed from then on (an error says so, with the
/// bounds in use).
///
/// ```
/// use keel::rpcz::{StoreConfig, set_store_config, tracer};
///
/// let small = StoreConfig { max_trees: 64, max_bytes: 1 << 20, ..StoreConfig::DEFAULT };
/// set_store_config(small).expect("first use");
/// assert_eq!(tracer().store().config(), small);
/// assert!(set_store_config(StoreConfig::DEFAULT).is_err());
/// ```
pub fn set_store_config(config: StoreConfig) -> Result<(), TracerInUse> {
    let mut made = false;
    let tracer = TRACER.get_or_init(|| {
        made = true;
        new_tracer(config)
    });
    if made {
        Ok(())
    } else {
        Err(TracerInUse {
            in_use: tracer.store().config(),
        })
    }
}

tokio::task_local! {
    /// The span of the server call this task is handling, if sampled.
    static CURRENT: SpanHandle;
}

/// The process-wide tracer: its sampler (`tracer().sampler().set_target(n)`)
/// and its store of recent trees (bounds: [`set_store_config`]).
pub fn tracer() -> &'static Tracer {
    TRACER.get_or_init(|| new_tracer(StoreConfig::DEFAULT))
}

/// Adds a line to the current span (the sampled server call this task is
/// handling); does nothing, at the cost of one task-local lookup, otherwise.
pub fn annotate(text: &str) {
    let _ = CURRENT.try_with(|s| s.annotate(text));
}

/// Runs `f` with the current span (the sampled server call this task is
/// handling), or returns `None` when there is none.
pub fn with_current<R>(f: impl FnOnce(&SpanHandle) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// A client span for an outgoing call to `method`: a child of the current
/// span when this task is handling a traced server call, else a root of its
/// own when the sampler says so, else unsampled.
pub(crate) fn client_span(method: &'static str) -> SpanHandle {
    CURRENT
        .try_with(|current| tracer().client(Some(current), method))
        .unwrap_or_else(|_| tracer().client(None, method))
}

/// `fut` with `span` as the current span; `take_value` on it, pinned, hands
/// the span back once it is done (no allocation: the span lives in the
/// future meanwhile). The caller pins it where it awaits it, so that its
/// future holds `fut` once.
pub(crate) fn scope<F: std::future::Future>(
    span: SpanHandle,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<SpanHandle, F> {
    CURRENT.scope(span, fut)
}

/// The incoming trace context of a request, when it carries one.
pub(crate) fn incoming(trace_id: i64, span_id: i64, parent_span_id: i64) -> Option<TraceContext> {
    (trace_id != 0).then_some(TraceContext {
        trace_id: trace_id as u64,
        span_id: span_id as u64,
        parent_span_id: parent_span_id as u64,
    })
}

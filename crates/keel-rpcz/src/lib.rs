//! Pooled, tree-shaped tracing spans (Keel's rpcz).
//!
//! A sampled server call opens a **server span**; every call the handler
//! makes opens a **client span** under it. Together they form a **tree**
//! that, once its last span finishes, goes to a bounded [`Store`] of recent
//! trees, where the console finds it by trace id, latency, error or method
//! and renders it as [text](render::text) or [JSON](render::json).
//!
//! # Ownership: what brpc got wrong for years, by construction
//!
//! brpc links spans with raw pointers and frees the tree when the server
//! span ends; a client span that ends later (an async call nobody awaited,
//! brpc #630 and #1010), children ending on several threads at once (#2315)
//! and a client span with no server span (#3420) all caused use-after-free
//! or leaks. Here:
//!
//! ```text
//!   SpanHandle (root)      SpanHandle (child)     SpanHandle (child)
//!   span: Pooled<Span>     span: Pooled<Span>     span: Pooled<Span>
//!   tree: Arc ──────┐      tree: Arc ──┐          tree: Arc ──┐
//!                   ▼                  ▼                      ▼
//!            ┌─ TreeShared (in a pooled TreeCell) ────────────────────┐
//!            │ outstanding: AtomicU32 = 3                             │
//!            │ Mutex { root: None, children: [],                      │
//!            │         cell: Some(self), store: Some(Arc<Store>) }    │
//!            └────────────────────────────────────────────────────────┘
//!   child(): outstanding += 1 (one atomic add, no lock)
//!   finish(): push the span into the tree (short per-tree lock), then
//!   outstanding -= 1; the finisher that brings it to 0 takes `cell` and
//!   submits the tree:
//!            Store ring [tree tree tree ...]  ── evict oldest ──► pools
//! ```
//!
//! - A **tree owns its spans**. A live span is owned by its handle; when it
//!   finishes it moves into the tree. A child refers to its parent only by
//!   id (`parent_span_id`); there are no parent pointers, strong or weak.
//! - A tree is complete when its **last** span finishes, whichever that is:
//!   an atomic counter of unfinished spans decides; finished spans enter
//!   the tree under its own short, per-tree lock. Children outliving their server span, or finishing on
//!   many threads at once, are just the ordinary case.
//! - A tree is **bounded while open**, not only once stored: it keeps at
//!   most [`StoreConfig::max_spans_per_tree`] spans (default 512); a child
//!   that finishes when the tree is full is counted
//!   ([`TreeSummary::dropped_spans`], shown by both renderings) and goes
//!   back to the pool at once. A span keeps at most
//!   [`StoreConfig::max_annotation_bytes`] of annotations (default 1 KiB):
//!   the line that crosses the limit is cut, later lines are counted, and
//!   rendering marks the cut. A server span that makes 200,000 calls and
//!   writes 100,000 lines holds well under
//!   [`StoreConfig::max_tree_bytes`] (about 650 KB by default).
//! - Spans come from the [`SPANS`] pool and trees from the [`TREES`] pool;
//!   annotation buffers and the children vector keep their capacity across
//!   reuse up to 1 KiB ([`ANNOTATION_BYTES_KEPT`]), so one outsized span
//!   does not stay big in the pool; what free spans keep is counted in the
//!   pools' statistics (`heap_bytes`). A sampled span in the steady state
//!   allocates nothing.
//! - A tree leaving the store (eviction or [`Store::clear`]) returns its
//!   spans to the pool; the pools give the memory back once traffic is
//!   light (keel-pool's idle rule), or at once with `SPANS.trim()`.
//! - Not sampled is `SpanHandle::none()`: every method is one branch.
//! - A handle dropped without `finish` finishes itself (marked abandoned), so
//!   early returns and cancelled futures never lose or leak a tree.
//!
//! [`Sampler`] decides which calls are traced, adapting a probability every
//! 100 ms to a target of spans per second; a call that arrives with a trace
//! id is always traced.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use keel_rpcz::{Mark, Sampler, SpanHandle, Store, StoreConfig, Query};
//!
//! let store = Arc::new(Store::new(StoreConfig::default()));
//! let sampler = Sampler::new(1_000);
//!
//! // A request arrives without a trace id.
//! let server = if sampler.sample(false) {
//!     SpanHandle::server(&store, "example.EchoService.Echo", None, Instant::now())
//! } else {
//!     SpanHandle::none()
//! };
//! server.set_protocol("baidu_std");
//! server.mark(Mark::HandlerStart);
//! server.annotate("looking up the cache");
//!
//! // The handler calls a backend: a client span under the server span.
//! let client = server.child("example.Backend.Get");
//! let trace_id = server.context().unwrap().trace_id;
//! assert_eq!(client.context().unwrap().parent_span_id, server.context().unwrap().span_id);
//!
//! server.mark(Mark::HandlerEnd);
//! server.finish(0);       // the server span ends first...
//! assert!(store.is_empty());
//! client.finish(0);       // ...the tree is complete when the child ends.
//!
//! let found = store.query(&Query { trace_id: Some(trace_id), ..Query::default() });
//! assert_eq!(found[0].spans, 2);
//! assert!(store.render_text(trace_id).unwrap().contains("example.Backend.Get"));
//! store.clear(); // spans go back to the pool
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod id;
pub mod render;
mod sampler;
mod span;
mod store;
mod tracer;
mod tree;

pub use id::new_id;
pub use sampler::{Sampler, WINDOW};
pub use span::{
    ANNOTATION_BYTES, ANNOTATION_BYTES_KEPT, ANNOTATION_OVERHEAD, Kind, MAX_ANNOTATION_BYTES, Mark,
    Span,
};
pub use store::{Query, Store, StoreConfig, StoreStats, TreeSummary};
pub use tracer::Tracer;
pub use tree::{
    PooledSpan, SPANS, SpanCache, SpanHandle, TREES, TraceContext, TreeCache, TreeCell, TreeView,
};

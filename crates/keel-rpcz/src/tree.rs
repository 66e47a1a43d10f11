//! Span trees: [`SpanHandle`] (live spans), the pooled tree that owns them,
//! and [`TreeView`] (a finished tree, read-only).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use keel_pool::{Pool, PoolConfig, Pooled, Reset};

use crate::id::new_id;
use crate::span::{Kind, Mark, Span};
use crate::store::Store;

keel_pool::pool! {
    /// Every span comes from here and returns here when its tree leaves the
    /// store (or is dropped unstored). Its thread caches are a thread-local
    /// of its own ([`SpanCache`]), the pool's fast path.
    pub static SPANS: Pool<Span, SpanCache> =
        Pool::with_config("rpcz.spans", Span::fresh, PoolConfig::DEFAULT);

    /// Every tree (the shared owner of one root and its children) comes from
    /// here.
    ///
    /// A tree cell is a pointer in the pool's slot and about 400 bytes of heap
    /// (its shared state and children vector), so its blocks and thread caches
    /// are sized by that: 16 cells a block, so that a few live trees pin little
    /// free memory, and 64 a thread.
    pub static TREES: Pool<TreeCell, TreeCache> = Pool::with_config(
        "rpcz.trees",
        TreeCell::fresh,
        PoolConfig {
            block_objects: Some(16),
            local_capacity: Some(64),
            ..PoolConfig::DEFAULT
        },
    );
}

/// A span on loan from [`SPANS`].
pub type PooledSpan = Pooled<'static, Span, SpanCache>;

/// Children a fresh tree has room for without growing (kept across reuse).
const CHILD_CAPACITY: usize = 16;
/// A tree that grew past this many children shrinks back on reuse (rule R7:
/// 1 KiB of handles, like a span's annotation buffer).
pub(crate) const CHILD_CAPACITY_KEPT: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ids a span carries on the wire (`RpcRequestMeta` fields 4-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceContext {
    /// The trace (whole distributed call graph).
    pub trace_id: u64,
    /// This span.
    pub span_id: u64,
    /// The span that caused this one; 0 for none.
    pub parent_span_id: u64,
}

/// A pooled tree: the shared owner of a root span and its finished children.
///
/// Public only because it is the element type of [`TREES`]; it has no public
/// methods.
pub struct TreeCell {
    pub(crate) shared: Arc<TreeShared>,
}

pub(crate) struct TreeShared {
    /// Spans not finished yet (root included). Opening a child is one
    /// atomic add; the finisher that takes it to zero submits the tree.
    outstanding: AtomicU32,
    pub(crate) data: Mutex<TreeData>,
}

pub(crate) struct TreeData {
    /// The tree owns itself while any span is unfinished; the last span to
    /// finish takes it and hands it to the store.
    cell: Option<Pooled<'static, TreeCell, TreeCache>>,
    store: Option<Arc<Store>>,
    pub(crate) root: Option<PooledSpan>,
    pub(crate) children: Vec<PooledSpan>,
    /// Most spans kept, root included (from the store's config).
    max_spans: usize,
    /// Finished children counted but not kept (beyond `max_spans`).
    pub(crate) dropped: u64,
    /// Whether one of the dropped children failed.
    pub(crate) dropped_error: bool,
}

impl TreeCell {
    fn fresh() -> TreeCell {
        TreeCell {
            shared: Arc::new(TreeShared {
                outstanding: AtomicU32::new(0),
                data: Mutex::new(TreeData {
                    cell: None,
                    store: None,
                    root: None,
                    children: Vec::with_capacity(CHILD_CAPACITY),
                    max_spans: usize::MAX,
                    dropped: 0,
                    dropped_error: false,
                }),
            }),
        }
    }

    /// Bytes of a tree besides its spans and children vector: the cell and
    /// its shared state (with the `Arc`'s counts).
    pub(crate) const FIXED_BYTES: usize = std::mem::size_of::<TreeCell>()
        + std::mem::size_of::<TreeShared>()
        + 2 * std::mem::size_of::<usize>();

    /// Heap bytes the finished tree holds (spans, buffers, the cell itself).
    pub(crate) fn footprint(data: &TreeData) -> usize {
        Self::FIXED_BYTES
            + data.children.capacity() * std::mem::size_of::<PooledSpan>()
            + data.root.as_ref().map_or(0, |s| s.footprint())
            + data.children.iter().map(|s| s.footprint()).sum::<usize>()
    }
}

impl Reset for TreeCell {
    fn reset(&mut self) {
        // Spans go back to `SPANS` (another pool); the children vector keeps
        // its capacity.
        let mut d = lock(&self.shared.data);
        d.root = None;
        d.children.clear();
        if d.children.capacity() > CHILD_CAPACITY_KEPT {
            d.children.shrink_to(CHILD_CAPACITY);
        }
        d.store = None;
        d.max_spans = usize::MAX;
        d.dropped = 0;
        d.dropped_error = false;
        self.shared.outstanding.store(0, Ordering::Relaxed);
        // `cell` is already `None`: the finisher took it.
        debug_assert!(d.cell.is_none());
    }

    /// The shared state's allocation and the children vector's capacity.
    fn heap_bytes(&self) -> usize {
        let d = lock(&self.shared.data);
        2 * std::mem::size_of::<usize>() // Arc counts
            + std::mem::size_of::<TreeShared>()
            + d.children.capacity() * std::mem::size_of::<PooledSpan>()
    }
}

/// A live span: annotate it, mark its moments, then [`finish`](Self::finish)
/// it.
///
/// A handle is either *sampled* (it owns a pooled span inside a tree) or
/// *not sampled* ([`SpanHandle::none`]): then every method is a branch and a
/// return, and [`child`](Self::child) gives another unsampled handle.
///
/// A handle dropped without `finish` finishes itself, marked
/// [`abandoned`](Span::abandoned), so a tree is never lost to an early return.
#[derive(Default)]
pub struct SpanHandle {
    live: Option<Live>,
}

struct Live {
    /// Keeps the tree's memory alive; the tree's `outstanding` counter, not
    /// this `Arc`, decides when it is complete.
    tree: Arc<TreeShared>,
    span: Mutex<PooledSpan>,
    ctx: TraceContext,
    is_root: bool,
    /// The store's `max_annotation_bytes`, handed down to children.
    annotation_limit: usize,
}

impl SpanHandle {
    /// An unsampled handle: records nothing, costs nothing.
    pub const fn none() -> SpanHandle {
        SpanHandle { live: None }
    }

    /// Opens a server span as the root of a new tree that goes to `store`
    /// when its last span finishes. `incoming` is the caller's context when
    /// the request carried one (then this span joins that trace, with the
    /// caller's span as parent); `received` is when the request arrived.
    ///
    /// Call it only for sampled requests (see [`Sampler`](crate::Sampler)).
    pub fn server(
        store: &Arc<Store>,
        method: &'static str,
        incoming: Option<TraceContext>,
        received: Instant,
    ) -> SpanHandle {
        let (trace_id, parent) = match incoming {
            Some(c) if c.trace_id != 0 => (c.trace_id, c.span_id),
            _ => (new_id(), 0),
        };
        Self::root(store, Kind::Server, method, trace_id, parent, received)
    }

    /// Opens a client span that has no server span above it (a call made
    /// outside any handler): it is the root of its own tree.
    pub fn client_root(store: &Arc<Store>, method: &'static str, start: Instant) -> SpanHandle {
        Self::root(store, Kind::Client, method, new_id(), 0, start)
    }

    fn root(
        store: &Arc<Store>,
        kind: Kind,
        method: &'static str,
        trace_id: u64,
        parent_span_id: u64,
        start: Instant,
    ) -> SpanHandle {
        let config = store.config();
        let cell = TREES.get();
        let tree = cell.shared.clone();
        {
            let mut d = lock(&tree.data);
            debug_assert!(d.cell.is_none() && d.root.is_none() && d.children.is_empty());
            d.cell = Some(cell);
            d.store = Some(store.clone());
            d.max_spans = config.max_spans_per_tree;
        }
        tree.outstanding.store(1, Ordering::Relaxed);
        let ctx = TraceContext {
            trace_id,
            span_id: new_id(),
            parent_span_id,
        };
        SpanHandle {
            live: Some(Live {
                tree,
                span: Mutex::new(new_span(
                    kind,
                    method,
                    ctx,
                    start,
                    config.max_annotation_bytes,
                )),
                ctx,
                is_root: true,
                annotation_limit: config.max_annotation_bytes,
            }),
        }
    }

    /// Opens a client span under this span, starting now.
    #[inline]
    pub fn child(&self, method: &'static str) -> SpanHandle {
        match &self.live {
            None => SpanHandle::none(),
            Some(_) => self.child_at(method, Instant::now()),
        }
    }

    /// Opens a client span under this span, started at `start`.
    ///
    /// The child shares this span's tree: the tree is complete only when
    /// every span in it has finished, in whatever order and on whatever
    /// threads. The child knows its parent only by id.
    ///
    /// A child is always recorded while open (its ids travel to the callee,
    /// so the distributed trace stays whole), but a tree keeps at most
    /// [`StoreConfig::max_spans_per_tree`](crate::StoreConfig::max_spans_per_tree)
    /// spans: a child that finishes when the tree is full is counted and
    /// goes straight back to the pool.
    pub fn child_at(&self, method: &'static str, start: Instant) -> SpanHandle {
        let Some(live) = &self.live else {
            return SpanHandle::none();
        };
        // Relaxed is enough: this handle is itself outstanding, so the count
        // cannot reach zero concurrently.
        live.tree.outstanding.fetch_add(1, Ordering::Relaxed);
        let ctx = TraceContext {
            trace_id: live.ctx.trace_id,
            span_id: new_id(),
            parent_span_id: live.ctx.span_id,
        };
        SpanHandle {
            live: Some(Live {
                tree: live.tree.clone(),
                span: Mutex::new(new_span(
                    Kind::Client,
                    method,
                    ctx,
                    start,
                    live.annotation_limit,
                )),
                ctx,
                is_root: false,
                annotation_limit: live.annotation_limit,
            }),
        }
    }

    /// Whether this call is being traced.
    #[inline]
    pub fn is_sampled(&self) -> bool {
        self.live.is_some()
    }

    /// The ids to propagate to a callee, or `None` when not sampled.
    #[inline]
    pub fn context(&self) -> Option<TraceContext> {
        self.live.as_ref().map(|l| l.ctx)
    }

    #[inline]
    fn with(&self, f: impl FnOnce(&mut Span)) {
        if let Some(live) = &self.live {
            f(&mut lock(&live.span));
        }
    }

    /// Adds a timestamped text line. Allocates nothing while the span's
    /// buffer has room (its capacity survives reuse). Past the span's
    /// annotation limit the line is cut, and later lines are only counted
    /// (see [`Span`]).
    #[inline]
    pub fn annotate(&self, text: &str) {
        if self.live.is_some() {
            let now = Instant::now();
            self.with(|s| s.push_annotation(now, text));
        }
    }

    /// Adds a formatted line without building a `String` first:
    /// `span.annotate_fmt(format_args!("retry {n}"))`.
    #[inline]
    pub fn annotate_fmt(&self, args: fmt::Arguments<'_>) {
        if self.live.is_some() {
            let now = Instant::now();
            self.with(|s| s.push_annotation_fmt(now, args));
        }
    }

    /// Adds a text line stamped `at`.
    pub fn annotate_at(&self, at: Instant, text: &str) {
        self.with(|s| s.push_annotation(at, text));
    }

    /// Records that `mark` happened now.
    #[inline]
    pub fn mark(&self, mark: Mark) {
        if self.live.is_some() {
            self.mark_at(mark, Instant::now());
        }
    }

    /// Records that `mark` happened at `at`.
    pub fn mark_at(&self, mark: Mark, at: Instant) {
        self.with(|s| s.set_mark(mark, at));
    }

    /// Sets the peer address.
    pub fn set_peer(&self, peer: SocketAddr) {
        self.with(|s| s.peer = Some(peer));
    }

    /// Sets the protocol name, e.g. `baidu_std`.
    pub fn set_protocol(&self, protocol: &'static str) {
        self.with(|s| s.protocol = protocol);
    }

    /// Sets the request size in bytes.
    pub fn set_request_size(&self, bytes: u64) {
        self.with(|s| s.request_size = bytes);
    }

    /// Sets the response size in bytes.
    pub fn set_response_size(&self, bytes: u64) {
        self.with(|s| s.response_size = bytes);
    }

    /// Sets the status code without finishing (what a dropped handle
    /// reports).
    pub fn set_status(&self, status: i32) {
        self.with(|s| s.status = status);
    }

    /// Ends the span now with `status` (0 = ok).
    #[inline]
    pub fn finish(self, status: i32) {
        if self.live.is_some() {
            self.finish_at(status, Instant::now());
        }
    }

    /// Ends the span at `at` with `status`. If it was the tree's last
    /// unfinished span, the tree goes to its store.
    pub fn finish_at(mut self, status: i32, at: Instant) {
        if let Some(live) = self.live.take() {
            live.end(Some(status), at);
        }
    }
}

impl Live {
    fn end(self, status: Option<i32>, at: Instant) {
        let Live {
            tree,
            span,
            is_root,
            ..
        } = self;
        let mut span = span.into_inner().unwrap_or_else(|e| e.into_inner());
        match status {
            Some(s) => span.status = s,
            None => span.abandoned = true,
        }
        span.set_end(at);
        let over = {
            let mut d = lock(&tree.data);
            if is_root {
                d.root = Some(span);
                None
            } else if d.children.len() + 1 < d.max_spans {
                d.children.push(span);
                None
            } else {
                d.dropped += 1;
                d.dropped_error |= span.status != 0;
                Some(span)
            }
        };
        // A child beyond the tree's limit goes back to the pool now, outside
        // the tree's lock.
        drop(over);
        // AcqRel: the last finisher sees every other finisher's span (each
        // pushed before its own decrement).
        if tree.outstanding.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let done = {
            let mut d = lock(&tree.data);
            (d.cell.take(), d.store.take())
        };
        // The tree lock is released: the store reads the tree.
        if let (Some(cell), store) = done {
            match store {
                Some(store) => store.submit(cell),
                None => drop(cell),
            }
        }
    }
}

fn new_span(
    kind: Kind,
    method: &'static str,
    ctx: TraceContext,
    start: Instant,
    annotation_limit: usize,
) -> PooledSpan {
    let mut s = SPANS.get();
    s.set_annotation_limit(annotation_limit);
    s.trace_id = ctx.trace_id;
    s.span_id = ctx.span_id;
    s.parent_span_id = ctx.parent_span_id;
    s.kind = kind;
    s.method = method;
    s.start = start;
    s
}

impl Drop for SpanHandle {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.end(None, Instant::now());
        }
    }
}

impl fmt::Debug for SpanHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.live {
            None => f.write_str("SpanHandle(unsampled)"),
            Some(l) => f
                .debug_struct("SpanHandle")
                .field("trace_id", &format_args!("{:016x}", l.ctx.trace_id))
                .field("span_id", &format_args!("{:016x}", l.ctx.span_id))
                .field("root", &l.is_root)
                .finish(),
        }
    }
}

/// A finished tree, read-only: the root and its descendants.
pub struct TreeView<'a> {
    pub(crate) data: &'a TreeData,
}

impl<'a> TreeView<'a> {
    /// The root span (server span, or a client span with no server above).
    pub fn root(&self) -> &'a Span {
        self.data
            .root
            .as_deref()
            .expect("a finished tree has its root: the root counts as outstanding until it ends")
    }

    /// Every span kept but the root, in the order they finished.
    pub fn children(&self) -> &'a [PooledSpan] {
        &self.data.children
    }

    /// Children that finished after the tree was full
    /// ([`StoreConfig::max_spans_per_tree`](crate::StoreConfig::max_spans_per_tree)):
    /// counted, not kept.
    pub fn dropped_spans(&self) -> u64 {
        self.data.dropped
    }

    /// Whether a dropped child failed (non-zero status).
    pub fn dropped_error(&self) -> bool {
        self.data.dropped_error
    }

    /// Root first, then the others in finish order.
    pub fn spans(&self) -> impl Iterator<Item = &'a Span> + 'a {
        std::iter::once(self.root()).chain(self.data.children.iter().map(|s| &**s))
    }

    /// Number of spans kept, root included.
    pub fn len(&self) -> usize {
        1 + self.data.children.len()
    }

    /// Never true: a tree has a root. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

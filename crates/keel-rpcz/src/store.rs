//! [`Store`]: a bounded ring of recently finished trees, with queries.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use keel_pool::Pooled;

use crate::span::{ANNOTATION_BYTES_KEPT, Kind, MAX_ANNOTATION_BYTES, Span};
use crate::tree::{TreeCache, TreeCell, TreeView};

/// Bounds of a [`Store`] and of the trees that go to it.
///
/// A tree is bounded while it is still open, not only once stored: it keeps
/// at most `max_spans_per_tree` spans and each span at most
/// `max_annotation_bytes` of annotations, so a server span that makes a
/// million backend calls, or annotates in a loop, holds a bounded amount of
/// memory ([`max_tree_bytes`](Self::max_tree_bytes); about 650 KB with the
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most trees kept. Default 1024.
    pub max_trees: usize,
    /// Most bytes kept (spans, annotation buffers, tree cells). Default
    /// 16 MiB.
    pub max_bytes: usize,
    /// Most spans a tree keeps, root included. Children that finish when
    /// the tree is full are counted ([`TreeSummary::dropped_spans`]) and go
    /// back to the pool at once. Default 512.
    pub max_spans_per_tree: usize,
    /// Most bytes of annotations a span keeps: each line's text plus
    /// [`ANNOTATION_OVERHEAD`](crate::ANNOTATION_OVERHEAD) bytes. A line that
    /// does not fit is cut, later lines are counted, not kept, and rendering
    /// marks the cut. Default 1 KiB
    /// ([`MAX_ANNOTATION_BYTES`](crate::MAX_ANNOTATION_BYTES)).
    pub max_annotation_bytes: usize,
}

impl StoreConfig {
    /// The default configuration.
    pub const DEFAULT: StoreConfig = StoreConfig {
        max_trees: 1024,
        max_bytes: 16 << 20,
        max_spans_per_tree: 512,
        max_annotation_bytes: MAX_ANNOTATION_BYTES,
    };

    /// The most heap a tree under this configuration holds, open or
    /// finished: its spans (each with an annotation buffer of at most
    /// `max_annotation_bytes`, or the [`ANNOTATION_BYTES_KEPT`] a reused span
    /// may bring along), its children vector, its cell. What
    /// [`TreeSummary::bytes`] reports never exceeds it.
    pub fn max_tree_bytes(&self) -> usize {
        let spans = self.max_spans_per_tree.max(1);
        let span =
            std::mem::size_of::<Span>() + self.max_annotation_bytes.max(ANNOTATION_BYTES_KEPT);
        // The children vector grows by doubling up to the limit, from what
        // a reused tree kept.
        let children = (spans - 1)
            .next_power_of_two()
            .max(crate::tree::CHILD_CAPACITY_KEPT);
        spans.saturating_mul(span)
            + children * std::mem::size_of::<crate::tree::PooledSpan>()
            + TreeCell::FIXED_BYTES
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a store knows about one tree without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSummary {
    /// Trace id of the tree.
    pub trace_id: u64,
    /// Root span id.
    pub span_id: u64,
    /// Root span kind.
    pub kind: Kind,
    /// Root method.
    pub method: &'static str,
    /// Root latency.
    pub latency: Duration,
    /// Root status.
    pub status: i32,
    /// Whether any span in the tree, kept or dropped, has a non-zero status.
    pub error: bool,
    /// Spans kept in the tree, root included.
    pub spans: usize,
    /// Children counted but not kept: they finished when the tree already
    /// held [`StoreConfig::max_spans_per_tree`] spans.
    pub dropped_spans: u64,
    /// Bytes the tree holds.
    pub bytes: usize,
    /// Submission order (1 = first tree this store received).
    pub seq: u64,
}

/// A filter for [`Store::query`]; the default matches everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    /// Only trees of this trace.
    pub trace_id: Option<u64>,
    /// Only trees whose root took at least this long.
    pub min_latency: Option<Duration>,
    /// Only trees with a failed span.
    pub errors_only: bool,
    /// Only trees whose root method is this one.
    pub method: Option<&'a str>,
    /// At most this many results (0 = no limit).
    pub limit: usize,
}

impl Query<'_> {
    fn matches(&self, s: &TreeSummary) -> bool {
        self.trace_id.is_none_or(|t| t == s.trace_id)
            && self.min_latency.is_none_or(|l| s.latency >= l)
            && (!self.errors_only || s.error)
            && self.method.is_none_or(|m| m == s.method)
    }
}

/// Counters of a [`Store`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Trees held now.
    pub trees: usize,
    /// Bytes held now.
    pub bytes: usize,
    /// Trees ever submitted.
    pub submitted: u64,
    /// Trees evicted to make room.
    pub evicted: u64,
    /// Trees refused because one alone exceeds `max_bytes`.
    pub refused: u64,
}

struct Entry {
    tree: Pooled<'static, TreeCell, TreeCache>,
    summary: TreeSummary,
}

struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    submitted: u64,
    evicted: u64,
    refused: u64,
}

/// A bounded store of recent span trees, newest last in memory and first in
/// answers. Bounded by tree count and by bytes; the oldest trees leave first,
/// and a tree that leaves returns its spans to the pool.
///
/// Submission takes one short lock per tree (not per span).
pub struct Store {
    config: StoreConfig,
    ring: Mutex<Ring>,
}

/// Entries preallocated at most, so a huge `max_trees` costs nothing upfront.
const PREALLOC: usize = 4096;

impl Store {
    /// An empty store with these bounds. The ring is preallocated (up to
    /// 4096 entries) so steady-state submission does not allocate.
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(config.max_trees.min(PREALLOC)),
                bytes: 0,
                submitted: 0,
                evicted: 0,
                refused: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's bounds.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    pub(crate) fn submit(&self, tree: Pooled<'static, TreeCell, TreeCache>) {
        let summary = {
            let d = tree.shared.data.lock().unwrap_or_else(|e| e.into_inner());
            let view = TreeView { data: &d };
            let root = view.root();
            TreeSummary {
                trace_id: root.trace_id(),
                span_id: root.span_id(),
                kind: root.kind(),
                method: root.method(),
                latency: root.latency(),
                status: root.status(),
                error: view.dropped_error() || view.spans().any(|s| s.status() != 0),
                spans: view.len(),
                dropped_spans: view.dropped_spans(),
                bytes: TreeCell::footprint(&d),
                seq: 0,
            }
        };
        let mut ring = self.lock();
        ring.submitted += 1;
        if summary.bytes > self.config.max_bytes || self.config.max_trees == 0 {
            ring.refused += 1;
            drop(ring);
            drop(tree);
            return;
        }
        while ring.entries.len() >= self.config.max_trees
            || ring.bytes + summary.bytes > self.config.max_bytes
        {
            let Some(old) = ring.entries.pop_front() else {
                break;
            };
            ring.bytes -= old.summary.bytes;
            ring.evicted += 1;
            // Dropping returns the tree and its spans to their pools.
            drop(old);
        }
        ring.bytes += summary.bytes;
        let seq = ring.submitted;
        ring.entries.push_back(Entry {
            tree,
            summary: TreeSummary { seq, ..summary },
        });
    }

    /// Summaries of matching trees, newest first.
    pub fn query(&self, q: &Query<'_>) -> Vec<TreeSummary> {
        let ring = self.lock();
        let it = ring.entries.iter().rev().map(|e| e.summary);
        let it = it.filter(|s| q.matches(s));
        if q.limit == 0 {
            it.collect()
        } else {
            it.take(q.limit).collect()
        }
    }

    /// Runs `f` on the newest tree of `trace_id`, if the store has one.
    /// The store is locked while `f` runs (submissions wait): keep it short,
    /// e.g. render and return.
    pub fn with_tree<R>(&self, trace_id: u64, f: impl FnOnce(TreeView<'_>) -> R) -> Option<R> {
        let ring = self.lock();
        let e = ring
            .entries
            .iter()
            .rev()
            .find(|e| e.summary.trace_id == trace_id)?;
        let d = e.tree.shared.data.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(TreeView { data: &d }))
    }

    /// Runs `f` on the tree with submission number `seq` (see
    /// [`TreeSummary::seq`]).
    pub fn with_seq<R>(&self, seq: u64, f: impl FnOnce(TreeView<'_>) -> R) -> Option<R> {
        let ring = self.lock();
        let e = ring.entries.iter().rev().find(|e| e.summary.seq == seq)?;
        let d = e.tree.shared.data.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(TreeView { data: &d }))
    }

    /// The newest tree of `trace_id` as indented text.
    pub fn render_text(&self, trace_id: u64) -> Option<String> {
        self.with_tree(trace_id, |t| crate::render::text(&t))
    }

    /// The newest tree of `trace_id` as JSON.
    pub fn render_json(&self, trace_id: u64) -> Option<String> {
        self.with_tree(trace_id, |t| crate::render::json(&t))
    }

    /// Drops every tree (their spans return to the pool).
    pub fn clear(&self) {
        let old = {
            let mut ring = self.lock();
            ring.bytes = 0;
            std::mem::take(&mut ring.entries)
        };
        // Outside the lock; then the lock again to put the (now empty,
        // capacity-keeping) ring back, so clearing does not reallocate.
        let mut old = old;
        old.clear();
        let mut ring = self.lock();
        if ring.entries.is_empty() && ring.entries.capacity() < old.capacity() {
            ring.entries = old;
        }
    }

    /// Counters and current size.
    pub fn stats(&self) -> StoreStats {
        let ring = self.lock();
        StoreStats {
            trees: ring.entries.len(),
            bytes: ring.bytes,
            submitted: ring.submitted,
            evicted: ring.evicted,
            refused: ring.refused,
        }
    }

    /// Trees held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no tree.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreConfig::default())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_trees_stay_under_a_megabyte() {
        let c = StoreConfig::default();
        assert!(c.max_tree_bytes() < 1 << 20, "{}", c.max_tree_bytes());
        // Raising a limit raises the bound.
        let more = StoreConfig {
            max_annotation_bytes: 4 << 10,
            ..c
        };
        assert!(more.max_tree_bytes() > c.max_tree_bytes() + 511 * 3 * 1024);
    }
}

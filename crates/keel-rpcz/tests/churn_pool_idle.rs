//! Issue 16, row 6: pooled spans' annotation capacity is counted and comes
//! back without an explicit trim.
//!
//! 3,000 calls each annotate 12 KiB, then the store is cleared. Before, the
//! spans pool kept every 12 KiB buffer (+13.5 MB) while its statistics
//! reported 254 KB, and only `trim()` gave memory back. Now a span frees
//! annotation capacity above 1 KiB on reset, the pools report what their
//! free objects keep (`heap_bytes`, part of `bytes`) and the report matches
//! the live heap; and light traffic afterwards (10,000 small traced calls,
//! standing for "idle") lets the pools notice that nobody needs their free
//! blocks and give them back. `trim()` is never called after the warm-up.

use std::sync::Arc;
use std::time::Instant;

use keel_alloc::CountingAlloc;
use keel_rpcz::{ANNOTATION_BYTES, SPANS, SpanHandle, Store, StoreConfig, TREES};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const CALLS: usize = 3_000;
const LIGHT_CALLS: u64 = 10_000;
/// What may stay after the light traffic: the 16 small trees its store
/// keeps, this thread's caches, and the pool blocks that hold them.
const IDLE_BOUND: i64 = 128 << 10;
/// Memory the pools' reports leave out: live objects' own heap (the small
/// store's 16 trees: their shared state, children vectors and 32 spans'
/// annotation buffers, about 15 KB).
const REPORT_TOLERANCE: i64 = 32 << 10;

fn reported() -> i64 {
    (SPANS.stats().bytes + TREES.stats().bytes) as i64
}

fn light_call(store: &Arc<Store>) {
    let s = SpanHandle::server(store, "test.Svc.Ping", None, Instant::now());
    let c = s.child("test.Backend.Ping");
    c.annotate("ok");
    c.finish(0);
    s.finish(0);
}

#[test]
fn big_annotations_are_counted_and_given_back_when_idle() {
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 4096,
        max_bytes: 256 << 20,
        max_annotation_bytes: 16 << 10,
        ..StoreConfig::default()
    }));
    let light = Arc::new(Store::new(StoreConfig {
        max_trees: 16,
        ..StoreConfig::default()
    }));
    // Warm up: pools registered, caches built; then the baseline.
    light_call(&store);
    light_call(&light);
    store.clear();
    light.clear();
    SPANS.trim();
    TREES.trim();
    let base = keel_alloc::stats();
    let base_reported = reported();

    let kib = "k".repeat(1024 - 12);
    for _ in 0..CALLS {
        let s = SpanHandle::server(&store, "test.Svc.Verbose", None, Instant::now());
        for _ in 0..12 {
            s.annotate(&kib);
        }
        s.finish(0);
    }
    let stored = base.delta(&keel_alloc::stats()).live_bytes;
    assert_eq!(store.len(), CALLS);
    assert!(stored > (CALLS * 12 * 1024) as i64, "{stored}");

    store.clear();
    let spans = SPANS.stats();
    let held = base.delta(&keel_alloc::stats()).live_bytes;
    let report = reported() - base_reported;
    println!(
        "{CALLS} calls with 12 KiB of annotations: +{stored} B stored; cleared: +{held} B held, \
         pools report +{report} B (spans: {} cached keep {} B of buffers, {} B in all)",
        spans.cached, spans.heap_bytes, spans.bytes
    );
    assert_eq!(spans.live, 0);
    assert_eq!(
        spans.heap_bytes,
        spans.cached * ANNOTATION_BYTES as u64,
        "each free span keeps (and is counted with) a {ANNOTATION_BYTES}-byte buffer: {spans:?}"
    );
    assert!(
        (held - report).abs() <= REPORT_TOLERANCE,
        "pools report {report} B, the allocator sees {held} B"
    );

    for _ in 0..LIGHT_CALLS {
        light_call(&light);
    }
    let (spans, trees) = (SPANS.stats(), TREES.stats());
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    let report = reported() - base_reported;
    println!(
        "after {LIGHT_CALLS} light calls, no trim(): +{left} B held, pools report +{report} B; \
         spans {} blocks / {} cached / {} idle trims, trees {} blocks / {} idle trims",
        spans.blocks, spans.cached, spans.idle_trims, trees.blocks, trees.idle_trims
    );
    assert!(spans.idle_trims >= 1, "{spans:?}");
    assert!(
        left <= IDLE_BOUND,
        "idle pools still hold {left} B (bound {IDLE_BOUND} B): {spans:?} {trees:?}"
    );
    assert!(
        (left - report).abs() <= REPORT_TOLERANCE,
        "pools report {report} B, the allocator sees {left} B"
    );
    light.clear();
}

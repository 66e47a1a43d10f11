//! Rule R6: ten million sampled spans (one million trees of a server span
//! and nine client spans) through a byte-bounded store. The live heap stays
//! within the store's byte limit plus a constant, and after `clear` and
//! `trim` it is back at the baseline.

use std::sync::Arc;
use std::time::Instant;

use keel_alloc::CountingAlloc;
use keel_rpcz::{Mark, SPANS, SpanHandle, Store, StoreConfig, TREES};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const TREES_N: u64 = 1_000_000;
const MAX_BYTES: usize = 1 << 20;
/// What the pools may hold beyond the store: this thread's caches and the
/// global free lists below their high-water marks, and block rounding.
const SLACK: i64 = 512 << 10;
/// What may remain after `clear` + `trim`: registry entries, caches' vectors.
const BASELINE_TOLERANCE: i64 = 16 << 10;

fn call(store: &Arc<Store>, i: u64) {
    let server = SpanHandle::server(store, "test.Svc.Method", None, Instant::now());
    server.mark(Mark::HandlerStart);
    server.annotate("handler");
    for _ in 0..9 {
        let c = server.child("test.Backend.Get");
        c.annotate("sent");
        c.finish(0);
    }
    server.finish((i % 100 == 0) as i32);
}

#[test]
fn ten_million_spans_stay_bounded_and_return_to_baseline() {
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 100_000,
        max_bytes: MAX_BYTES,
        ..StoreConfig::default()
    }));
    // Warm up: pools registered, this thread's caches built.
    call(&store, 1);
    store.clear();
    SPANS.trim();
    TREES.trim();
    let base = keel_alloc::stats();

    let started = Instant::now();
    let mut worst = 0i64;
    for i in 0..TREES_N {
        call(&store, i);
        if i % 10_000 == 0 {
            worst = worst.max(base.delta(&keel_alloc::stats()).live_bytes);
        }
    }
    let elapsed = started.elapsed();
    let held = store.stats();
    let pools = (SPANS.stats(), TREES.stats());
    println!(
        "{} spans in {elapsed:?}; worst live {worst} B (store limit {MAX_BYTES} B, holds {} trees / {} B); spans pool: {:?}",
        TREES_N * 10,
        held.trees,
        held.bytes,
        pools.0
    );
    assert_eq!(held.submitted, TREES_N + 1);
    assert!(held.bytes <= MAX_BYTES);
    assert!(held.trees > 100, "the byte limit binds, not the count");
    assert!(
        worst <= MAX_BYTES as i64 + SLACK,
        "live heap {worst} B over store limit {MAX_BYTES} B + {SLACK} B"
    );

    store.clear();
    assert_eq!(SPANS.stats().live, 0);
    assert_eq!(TREES.stats().live, 0);
    SPANS.trim();
    TREES.trim();
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    println!("after clear + trim: {left} B over baseline");
    assert!(
        left <= BASELINE_TOLERANCE,
        "{left} B left after clear + trim"
    );
}

//! Issue 16, row 5: a sampled tree is bounded while it is still open.
//!
//! An open server span makes 200,000 backend calls (each a finished child
//! span) and writes 100,000 annotations of 100 bytes. Before trees had
//! limits this held +126 MB and +18.9 MB. Now the tree keeps at most
//! `max_spans_per_tree` spans and each span at most `max_annotation_bytes`
//! of annotations, so the live heap stays under the configured bound the
//! whole time; the finished tree says how many children it dropped; and
//! once the store is cleared and the pools trimmed the heap is back at the
//! baseline.

use std::sync::Arc;
use std::time::Instant;

use keel_alloc::CountingAlloc;
use keel_rpcz::{Query, SPANS, SpanHandle, Store, StoreConfig, TREES};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const CHILDREN: u64 = 200_000;
const ANNOTATIONS: u64 = 100_000;
/// Beyond the tree itself: the spans pool's blocks around the kept spans
/// and this thread's cache of free spans (up to 256 with their 256-byte
/// buffers), and the trees pool's first block.
const POOL_SLACK: i64 = 256 << 10;
const BASELINE_TOLERANCE: i64 = 64 << 10;

#[test]
fn open_tree_with_200k_children_and_100k_annotations_stays_bounded() {
    let config = StoreConfig::default();
    let store = Arc::new(Store::new(config));
    let bound = config.max_tree_bytes() as i64;
    // Warm up: pools registered, this thread's caches built.
    let warm = SpanHandle::server(&store, "warm.Up.Call", None, Instant::now());
    warm.child("warm.Up.Child").finish(0);
    warm.finish(0);
    store.clear();
    SPANS.trim();
    TREES.trim();
    let base = keel_alloc::stats();

    let root = SpanHandle::server(&store, "test.Svc.FanOut", None, Instant::now());
    let trace = root.context().expect("sampled").trace_id;
    let mut worst = 0i64;
    for i in 0..CHILDREN {
        let c = root.child("test.Backend.Get");
        c.annotate("sent");
        c.finish((i % 1000 == 999) as i32);
        if i % 1000 == 0 {
            worst = worst.max(base.delta(&keel_alloc::stats()).live_bytes);
        }
    }
    let after_children = base.delta(&keel_alloc::stats()).live_bytes;
    let line = "x".repeat(100);
    for i in 0..ANNOTATIONS {
        root.annotate(&line);
        if i % 1000 == 0 {
            worst = worst.max(base.delta(&keel_alloc::stats()).live_bytes);
        }
    }
    let open = base.delta(&keel_alloc::stats()).live_bytes;
    worst = worst.max(open);
    println!(
        "open root: +{after_children} B after {CHILDREN} children, +{open} B after {ANNOTATIONS} \
         annotations of 100 B; worst +{worst} B; configured tree bound {bound} B \
         (max_spans_per_tree {}, max_annotation_bytes {}) + pool slack {POOL_SLACK} B",
        config.max_spans_per_tree, config.max_annotation_bytes
    );
    assert!(
        worst <= bound + POOL_SLACK,
        "an open tree held {worst} B, over its bound {bound} B + {POOL_SLACK} B"
    );
    assert!(store.is_empty(), "the tree is still open");

    root.finish(0);
    let summary = store.query(&Query {
        trace_id: Some(trace),
        ..Query::default()
    })[0];
    let kept = config.max_spans_per_tree;
    println!("finished: {summary:?}");
    assert_eq!(summary.spans, kept);
    assert_eq!(summary.dropped_spans, CHILDREN - (kept as u64 - 1));
    assert!(summary.error, "dropped children failed; the tree says so");
    assert!(summary.bytes as i64 <= bound, "{summary:?}");
    let text = store.render_text(trace).expect("stored");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(&format!("dropped_spans={}", summary.dropped_spans))),
        "{}",
        &text[..200]
    );
    assert!(text.contains("[annotations truncated: "));
    let json = store.render_json(trace).expect("stored");
    assert!(json.contains(&format!("\"dropped_spans\":{},", summary.dropped_spans)));
    drop((text, json, line));

    store.clear();
    assert_eq!(SPANS.stats().live, 0);
    assert_eq!(TREES.stats().live, 0);
    SPANS.trim();
    TREES.trim();
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    println!("after clear + trim: {left} B over baseline");
    assert!(
        left.abs() <= BASELINE_TOLERANCE,
        "{left} B left over the baseline"
    );
}

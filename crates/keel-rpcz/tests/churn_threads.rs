//! Rule R6 across threads: trees opened on one thread, their client spans
//! finished on another (so trees complete, and old trees are evicted, on
//! either thread and spans return to either thread's pool cache). Live heap
//! stays bounded; after the threads end, `clear` and `trim`, it is back at
//! the baseline.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use keel_alloc::CountingAlloc;
use keel_rpcz::{SPANS, SpanHandle, Store, StoreConfig, TREES};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const TREES_N: u64 = 200_000;
const MAX_BYTES: usize = 1 << 20;
/// Beyond the store: the spans pool's global free list up to its high-water
/// mark (4096 spans of ~600 B with their annotation buffers), two thread
/// caches (256 spans each), and the spans in flight between the threads
/// (64 messages of 10).
const SLACK: i64 = (4096 + 2 * 256 + 640) * 600 + (64 << 10);
const BASELINE_TOLERANCE: i64 = 16 << 10;

#[test]
fn trees_finished_across_two_threads_leave_nothing_behind() {
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 100_000,
        max_bytes: MAX_BYTES,
        ..StoreConfig::default()
    }));
    // Warm up the pools' registrations on this thread.
    SpanHandle::server(&store, "warm.Up.Call", None, Instant::now()).finish(0);
    store.clear();
    SPANS.trim();
    TREES.trim();
    let base = keel_alloc::stats();

    let started = Instant::now();
    let (tx, rx) = sync_channel::<Vec<SpanHandle>>(64);
    let opener = {
        let store = store.clone();
        thread::spawn(move || {
            let mut worst = 0i64;
            for i in 0..TREES_N {
                let server = SpanHandle::server(&store, "test.Svc.Method", None, Instant::now());
                let children: Vec<SpanHandle> =
                    (0..9).map(|_| server.child("test.Backend.Get")).collect();
                tx.send(children).expect("finisher alive");
                // The server span often ends before its children.
                server.annotate("replied");
                server.finish(0);
                if i % 10_000 == 0 {
                    worst = worst.max(base.delta(&keel_alloc::stats()).live_bytes);
                }
            }
            worst
        })
    };
    let finisher = thread::spawn(move || {
        for children in rx {
            for c in children {
                c.annotate("response");
                c.finish(0);
            }
        }
    });
    let worst = opener.join().unwrap();
    finisher.join().unwrap();
    println!(
        "{} spans on 2 threads in {:?}; worst live {worst} B (store limit {MAX_BYTES} B)",
        TREES_N * 10,
        started.elapsed()
    );
    let st = store.stats();
    assert_eq!(st.submitted, TREES_N + 1);
    assert!(st.bytes <= MAX_BYTES);
    assert!(
        worst <= MAX_BYTES as i64 + SLACK,
        "live heap {worst} B over store limit {MAX_BYTES} B + {SLACK} B"
    );
    store.with_tree(store.query(&Default::default())[0].trace_id, |t| {
        assert_eq!(t.len(), 10)
    });

    store.clear();
    assert_eq!(SPANS.stats().live, 0);
    assert_eq!(TREES.stats().live, 0);
    // The worker threads' pool caches went back to the global lists when
    // they ended; trim frees every now-empty block.
    SPANS.trim();
    TREES.trim();
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    println!("after clear + trim: {left} B over baseline");
    assert!(
        left <= BASELINE_TOLERANCE,
        "{left} B left after clear + trim"
    );
}

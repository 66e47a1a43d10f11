//! Rule R3: in the steady state a sampled span allocates nothing — creating
//! it, annotating it within its buffer, finishing it, its tree reaching the
//! store and an old tree leaving it. Counted with keel-alloc.

use std::sync::Arc;
use std::time::Instant;

use keel_alloc::{CountingAlloc, churn_thread};
use keel_rpcz::{Mark, Sampler, SpanHandle, Store, StoreConfig};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// One server call with nine backend calls, all sampled and annotated.
fn call(store: &Arc<Store>, i: u64) {
    let server = SpanHandle::server(store, "test.Svc.Method", None, Instant::now());
    server.set_protocol("baidu_std");
    server.set_request_size(i);
    server.mark(Mark::HandlerStart);
    server.annotate("handler started");
    for _ in 0..9 {
        let c = server.child("test.Backend.Get");
        c.mark(Mark::Sent);
        c.annotate("request written");
        c.annotate_fmt(format_args!("attempt {} of {}", 1, 3));
        c.mark(Mark::ResponseReceived);
        c.finish(0);
    }
    server.mark(Mark::HandlerEnd);
    server.mark(Mark::Sent);
    server.finish(0);
}

#[test]
fn sampled_spans_allocate_nothing_in_steady_state() {
    // The store keeps 100 trees: in the steady state each new tree evicts
    // the oldest, whose spans the next tree reuses.
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 100,
        max_bytes: usize::MAX,
        ..StoreConfig::default()
    }));
    // The warm-up covers a few of the pools' idle checks (one per 1,024
    // puts), so their global lists have been used once before counting.
    let d = churn_thread(5_000, 20_000, |i| call(&store, i));
    println!(
        "sampled: {} allocs, {} bytes over {} trees ({} spans): {:.4} allocs/span",
        d.allocs,
        d.alloc_bytes,
        d.iters,
        d.iters * 10,
        d.allocs as f64 / (d.iters * 10) as f64
    );
    assert_eq!(d.allocs, 0, "{d:?}");
    assert_eq!(d.live_bytes, 0, "{d:?}");
    assert_eq!(store.stats().trees, 100);

    // Unsampled: the sampler says no, every call is a branch.
    let sampler = Sampler::new(0);
    let d = churn_thread(10, 100_000, |_| {
        let s = if sampler.should_sample() {
            SpanHandle::server(&store, "test.Svc.Method", None, Instant::now())
        } else {
            SpanHandle::none()
        };
        s.annotate("not recorded");
        s.child("test.Backend.Get").finish(0);
        s.finish(0);
    });
    assert_eq!(d.allocs, 0, "{d:?}");
}

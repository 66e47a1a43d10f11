//! Cost of rpcz on one thread: nanoseconds and allocations per span for the
//! unsampled path, the sampler's decision, and sampled trees of 1 and 10
//! spans through a bounded store. Prints a table; run it in release:
//!
//! ```text
//! cargo run -p keel-rpcz --release --example rpcz_bench
//! ```
//!
//! (A side-by-side with `tracing` + `tracing-subscriber` is still to come.)

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use keel_alloc::CountingAlloc;
use keel_rpcz::{Mark, SPANS, Sampler, SpanHandle, Store, StoreConfig};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Runs `f` `n` times (after a warm-up) and returns (ns per call, allocs
/// per call).
fn measure(n: u64, mut f: impl FnMut(u64)) -> (f64, f64) {
    for i in 0..n / 10 {
        f(i);
    }
    let a = keel_alloc::thread_stats();
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let allocs = a.delta(&keel_alloc::thread_stats()).allocs as f64 / n as f64;
    (ns, allocs)
}

fn main() {
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 1024,
        max_bytes: 16 << 20,
        ..StoreConfig::default()
    }));
    let off = Sampler::new(0);
    let on = Sampler::new(u64::MAX / 4);
    let n = 1_000_000;
    let mut rows: Vec<(&str, u64, (f64, f64))> = Vec::new();

    rows.push((
        "unsampled span (annotate + child + finish)",
        1,
        measure(n, |_| {
            let s = SpanHandle::none();
            s.annotate("x");
            s.child("b.B.Get").finish(0);
            s.finish(0);
        }),
    ));
    rows.push((
        "sampler.should_sample(), target 0",
        1,
        measure(n, |_| {
            black_box(off.should_sample());
        }),
    ));
    rows.push((
        "sampler.should_sample(), target on",
        1,
        measure(n, |_| {
            black_box(on.should_sample());
        }),
    ));
    rows.push((
        "sampled tree: 1 server span, 2 annotations",
        1,
        measure(n, |i| {
            let s = SpanHandle::server(&store, "a.Svc.Call", None, Instant::now());
            s.mark(Mark::HandlerStart);
            s.annotate("handler");
            s.annotate_fmt(format_args!("item {i}"));
            s.mark(Mark::HandlerEnd);
            s.finish(0);
        }),
    ));
    rows.push((
        "sampled tree: 1 server + 9 client spans",
        10,
        measure(n / 10, |_| {
            let s = SpanHandle::server(&store, "a.Svc.Call", None, Instant::now());
            s.annotate("handler");
            for _ in 0..9 {
                let c = s.child("b.Backend.Get");
                c.mark(Mark::Sent);
                c.annotate("sent");
                c.finish(0);
            }
            s.finish(0);
        }),
    ));

    println!(
        "{:<46} {:>12} {:>14}",
        "operation", "ns/span", "allocs/span"
    );
    for (name, spans, (ns, allocs)) in rows {
        println!(
            "{name:<46} {:>12.1} {:>14.4}",
            ns / spans as f64,
            allocs / spans as f64
        );
    }
    let st = store.stats();
    println!(
        "\nstore: {} trees, {} B; spans pool: live {}, blocks {}, {} B",
        st.trees,
        st.bytes,
        SPANS.stats().live,
        SPANS.stats().blocks,
        SPANS.stats().bytes
    );
}

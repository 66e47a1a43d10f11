//! brpc issues #1681 and #1136: after a peak, pool memory goes back. One
//! million live objects, all dropped, then `trim`: the live heap returns to
//! within a small constant of the baseline.

use keel_alloc::CountingAlloc;
use keel_pool::{Pool, Reset};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

struct Obj {
    payload: [u64; 8],
    text: String,
}

impl Reset for Obj {
    fn reset(&mut self) {
        self.text.clear();
    }
}

static POOL: Pool<Obj> = Pool::new("peak", || Obj {
    payload: [0; 8],
    text: String::with_capacity(16),
});

#[test]
fn one_million_live_then_trim_returns_to_baseline() {
    // Touch the pool once so its registration and this thread's cache exist.
    drop(POOL.get());
    POOL.trim();
    let base = keel_alloc::stats();
    let mut held: Vec<_> = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000u64 {
        let mut o = POOL.get();
        o.payload[0] = i;
        held.push(o);
    }
    let peak = base.delta(&keel_alloc::stats()).live_bytes;
    assert!(peak > 1_000_000 * 80, "peak {peak}");
    assert_eq!(POOL.stats().live, 1_000_000);
    drop(held);
    let s = POOL.stats();
    assert_eq!(s.live, 0);
    // The high-water mark already gave most blocks back automatically.
    assert!(s.cached < 8192, "auto-trim bounded the cache: {s:?}");
    let freed = POOL.trim();
    let s = POOL.stats();
    assert!(freed > 0 || s.blocks == 0, "{s:?}");
    assert_eq!(s.blocks, 0, "{s:?}");
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    assert!(
        left < 16 * 1024,
        "after trim, live heap is {left} bytes above baseline (peak was {peak})"
    );
}

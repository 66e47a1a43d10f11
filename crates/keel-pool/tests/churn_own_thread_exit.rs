//! 500 short-lived threads each take and return objects from a pool with a
//! thread-local cache of its own (`pool!`): every exiting thread hands its
//! cache back, so nothing grows and nothing is lost; the registry's trim
//! reaches the calling thread's cache.

use keel_alloc::CountingAlloc;
use keel_pool::{Pool, Reset};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

struct Obj(Vec<u8>);

impl Reset for Obj {
    fn reset(&mut self) {
        self.0.clear();
    }
}

keel_pool::pool! {
    static POOL: Pool<Obj, Cache> = Pool::new("own-thread-exit-churn", || Obj(Vec::with_capacity(64)));
}

fn one_thread() {
    std::thread::spawn(|| {
        let held: Vec<_> = (0..100).map(|_| POOL.get()).collect();
        drop(held);
        POOL.get().0.push(1);
    })
    .join()
    .expect("thread");
}

#[test]
fn short_lived_threads_leave_no_growth_and_lose_nothing() {
    for _ in 0..10 {
        one_thread();
    }
    let s0 = POOL.stats();
    let d = keel_alloc::churn(0, 500, |_| one_thread());
    let s = POOL.stats();
    assert_eq!(s.live, 0, "{s:?}");
    assert_eq!(s.gets - s0.gets, 50_500);
    assert_eq!(s.puts - s0.puts, 50_500);
    assert_eq!(s.thread_caches, 0, "every cache was handed back: {s:?}");
    assert_eq!(s.blocks, s0.blocks, "no new blocks: objects were reused");
    assert_eq!(s.blocks_allocated, s0.blocks_allocated);
    assert!(d.live_bytes.abs() < 16 * 1024, "live heap moved {d:?}");

    // This thread's own cache, then the registry's trim: everything goes.
    drop(POOL.get());
    assert_eq!(POOL.stats().thread_caches, 1);
    keel_pool::trim_all();
    let s = POOL.stats();
    assert_eq!((s.blocks, s.cached, s.cached_local), (0, 0, 0), "{s:?}");
}

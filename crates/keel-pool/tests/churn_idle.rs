//! Rule R7 for pools: capacity comes back without an explicit `trim`.
//!
//! 3,000 objects each grow a 12 KiB buffer and are returned. `reset` bounds
//! what a free object keeps (capacity above 1 KiB is freed), the pool
//! reports what they keep (`heap_bytes`, part of `bytes`) and the report
//! matches the live heap the counting allocator sees. Then light use stands
//! for "idle": a few thousand get/put pairs that never need the global free
//! list. The pool notices and gives its free blocks back; nobody calls
//! `trim`.

use keel_alloc::CountingAlloc;
use keel_pool::{Pool, PoolStats, Reset};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Buffer capacity a fresh object has, and what reset shrinks back to.
const DEFAULT_CAPACITY: usize = 32;
/// Capacity above this is freed on reset.
const KEPT_CAPACITY: usize = 1024;

struct Obj {
    buf: Vec<u8>,
}

impl Reset for Obj {
    fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEPT_CAPACITY {
            self.buf.shrink_to(DEFAULT_CAPACITY);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

static POOL: Pool<Obj> = Pool::new("idle", || Obj {
    buf: Vec::with_capacity(DEFAULT_CAPACITY),
});

const OBJECTS: usize = 3_000;
const GROWN: usize = 12 << 10;
/// What may stay after the idle stretch: one thread cache's few objects and
/// the block that holds them (256 slots of 40 bytes, each with a 32-byte
/// buffer), the free list's vector.
const IDLE_BOUND: i64 = 64 << 10;

fn reported(s: &PoolStats) -> i64 {
    s.bytes as i64
}

#[test]
fn retained_capacity_is_reported_and_given_back_when_idle() {
    drop(POOL.get());
    POOL.trim();
    let base = keel_alloc::stats();
    let base_reported = reported(&POOL.stats());

    let mut held = Vec::with_capacity(OBJECTS);
    for _ in 0..OBJECTS {
        let mut o = POOL.get();
        o.buf.resize(GROWN, 7);
        held.push(o);
    }
    let peak = base.delta(&keel_alloc::stats()).live_bytes;
    drop(held);

    let s = POOL.stats();
    let measured = base.delta(&keel_alloc::stats()).live_bytes;
    let reported_delta = reported(&s) - base_reported;
    println!(
        "burst: peak {peak} B; returned: live heap +{measured} B, pool reports +{reported_delta} B \
         (heap_bytes {} B of {} cached objects)",
        s.heap_bytes, s.cached
    );
    assert!(
        peak > (OBJECTS * GROWN) as i64,
        "the burst held its buffers: {peak}"
    );
    assert_eq!(s.live, 0, "{s:?}");
    assert_eq!(
        s.heap_bytes,
        s.cached * DEFAULT_CAPACITY as u64,
        "every cached object's kept buffer is counted, and no more: {s:?}"
    );
    assert!(
        (measured - reported_delta).abs() <= 4 << 10,
        "the pool's report ({reported_delta} B) is the live heap it holds ({measured} B)"
    );

    // Light use: get and put one object at a time, 10,000 times. The thread
    // cache serves it; the global free list is never drawn from.
    for i in 0..10_000u64 {
        let mut o = POOL.get();
        o.buf.extend_from_slice(&i.to_le_bytes());
    }

    let s = POOL.stats();
    let left = base.delta(&keel_alloc::stats()).live_bytes;
    let reported_delta = reported(&s) - base_reported;
    println!(
        "after 10,000 light operations, no trim(): live heap +{left} B, pool reports \
         +{reported_delta} B, {} idle trims, {} blocks, {} cached",
        s.idle_trims, s.blocks, s.cached
    );
    assert!(s.idle_trims >= 1, "{s:?}");
    assert!(
        left <= IDLE_BOUND,
        "idle pool still holds {left} B over the baseline (bound {IDLE_BOUND} B): {s:?}"
    );
    assert!(
        (left - reported_delta).abs() <= 4 << 10,
        "report {reported_delta} B vs live heap {left} B"
    );
}

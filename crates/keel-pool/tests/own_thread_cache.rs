//! Pools declared with `pool!` (a thread-local cache of their own): objects
//! come back from other threads, exiting threads hand their caches back,
//! statistics count every get and put, and trimming reaches the calling
//! thread's cache. Memory figures are in `churn_own_thread_exit.rs`.

use std::sync::mpsc;

use keel_pool::{Pool, PoolConfig, Pooled, Reset};

struct Buf(Vec<u8>);

impl Reset for Buf {
    fn reset(&mut self) {
        self.0.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.0.capacity()
    }
}

fn buf() -> Buf {
    Buf(Vec::with_capacity(32))
}

/// Small caches and blocks, so that the tests pass through every batch move.
const SMALL: PoolConfig = PoolConfig {
    high_water: 4096,
    local_capacity: Some(16),
    block_objects: Some(8),
};

keel_pool::pool! {
    static CROSS: Pool<Buf, CrossCache> = Pool::with_config("own: cross", buf, SMALL);
    static EXIT: Pool<Buf, ExitCache> = Pool::with_config("own: exit", buf, SMALL);
    static COUNTS: Pool<Buf, CountsCache> = Pool::new("own: counts", buf);
    static TRIM: Pool<Buf, TrimCache> = Pool::with_config("own: trim", buf, SMALL);
    static HEAP: Pool<Buf, HeapCache> = Pool::with_config("own: heap", buf, SMALL);
    static CHECKS: Pool<Buf, ChecksCache> = Pool::new("own: idle checks", buf);
}

#[test]
fn objects_dropped_on_other_threads_return_to_the_pool() {
    let (tx, rx) = mpsc::channel::<Vec<Pooled<'static, Buf, CrossCache>>>();
    let consumer = std::thread::spawn(move || {
        for batch in rx {
            for (i, b) in batch.iter().enumerate() {
                assert_eq!(b.0, [i as u8], "the object arrived intact");
            }
            drop(batch);
        }
    });
    for _ in 0..20 {
        let batch: Vec<_> = (0..100u8)
            .map(|i| {
                let mut b = CROSS.get();
                b.0.push(i);
                b
            })
            .collect();
        tx.send(batch).expect("consumer alive");
    }
    drop(tx);
    consumer.join().expect("consumer");

    let s = CROSS.stats();
    assert_eq!((s.gets, s.puts, s.live), (2000, 2000, 0), "{s:?}");
    assert_eq!(
        s.thread_caches, 1,
        "the consumer's cache went with it: {s:?}"
    );
    assert_eq!(s.cached, s.blocks * 8, "every object is free again: {s:?}");
    assert_eq!(s.heap_bytes, s.cached * 32, "{s:?}");

    // Every free object, the ones the consumer returned included, is
    // handed out again here without a new block.
    let held: Vec<_> = (0..s.cached).map(|_| CROSS.get()).collect();
    let after = CROSS.stats();
    assert_eq!(after.blocks_allocated, s.blocks_allocated, "{after:?}");
    assert_eq!((after.live, after.cached), (s.cached, 0), "{after:?}");
    drop(held);
}

#[test]
fn the_heap_a_free_object_keeps_follows_it_through_reuse() {
    // One object, returned each time keeping a different heap: 32 B, then
    // none (given up), then 100 B, then none again.
    let mut b = HEAP.get();
    drop(b);
    assert_eq!(HEAP.stats().heap_bytes, HEAP.stats().cached * 32);
    let others = HEAP.stats().cached - 1;
    b = HEAP.get();
    b.0 = Vec::new();
    drop(b);
    let s = HEAP.stats();
    assert_eq!(s.heap_bytes, others * 32, "returned keeping none: {s:?}");
    b = HEAP.get();
    assert_eq!(b.0.capacity(), 0, "the same object came back");
    b.0.reserve_exact(100);
    drop(b);
    let s = HEAP.stats();
    assert_eq!(s.heap_bytes, others * 32 + 100, "{s:?}");
    b = HEAP.get();
    b.0 = Vec::new();
    drop(b);
    let s = HEAP.stats();
    assert_eq!(
        s.heap_bytes,
        others * 32,
        "returned keeping none again: {s:?}"
    );
    // On another thread's cache and through the global list alike.
    std::thread::spawn(|| {
        let held: Vec<_> = (0..20).map(|_| HEAP.get()).collect();
        drop(held);
    })
    .join()
    .expect("thread");
    let s = HEAP.stats();
    assert_eq!(s.heap_bytes, (s.cached - 1) * 32, "{s:?}");
}

#[test]
fn a_thread_exiting_with_a_full_cache_hands_it_back() {
    let worker = std::thread::spawn(|| {
        let held: Vec<_> = (0..40).map(|_| EXIT.get()).collect();
        drop(held);
        let s = EXIT.stats();
        assert_eq!(s.cached_local, 16, "the cache is full: {s:?}");
        assert_eq!(s.thread_caches, 1, "{s:?}");
    });
    worker.join().expect("worker");

    let s = EXIT.stats();
    assert_eq!(s.thread_caches, 0, "{s:?}");
    assert_eq!((s.gets, s.puts, s.live), (40, 40, 0), "{s:?}");
    assert_eq!(s.cached_local, 0, "{s:?}");
    assert_eq!(
        s.cached_global,
        s.blocks * 8,
        "all back in the global list: {s:?}"
    );
    assert_eq!(EXIT.trim(), 5, "every block is free");
    let s = EXIT.stats();
    assert_eq!((s.blocks, s.cached, s.heap_bytes), (0, 0, 0), "{s:?}");
    assert_eq!(s.blocks_freed, s.blocks_allocated, "{s:?}");
    assert!(
        s.bytes_returned >= 5 * 8 * 32,
        "buffers counted as returned: {s:?}"
    );
}

#[test]
fn statistics_count_the_fast_path() {
    let mut held = Vec::new();
    for round in 1..=3u64 {
        held.extend((0..10).map(|_| COUNTS.get()));
        let s = COUNTS.stats();
        assert_eq!(s.live, 10 * round, "{s:?}");
        assert_eq!(s.gets, 10 * round + 100 * (round - 1), "{s:?}");
        for _ in 0..100 {
            drop(COUNTS.get());
        }
        let s = COUNTS.stats();
        assert_eq!((s.puts, s.live), (100 * round, 10 * round), "{s:?}");
    }
    drop(held);
    let s = COUNTS.stats();
    assert_eq!((s.live, s.gets, s.puts), (0, 330, 330), "{s:?}");
    assert_eq!(s.thread_caches, 1, "{s:?}");
    assert!(
        keel_pool::all_stats()
            .iter()
            .any(|p| p.name == "own: counts" && p.gets == 330),
        "listed in the registry"
    );
}

/// A cache counts its recent puts in the word that holds its length, and
/// moves them to a running total at every idle check (every 1,024 puts):
/// the totals stay exact through many checks, read between checks, on
/// puts that also hit a full cache, and after the thread's cache is gone.
#[test]
fn statistics_stay_exact_across_idle_checks() {
    let mut held = Vec::new();
    let mut made = 0u64;
    for (round, pairs) in [3_000u64, 1_023, 1, 5_555, 2_048].into_iter().enumerate() {
        for _ in 0..pairs {
            drop(CHECKS.get());
        }
        made += pairs;
        // A burst beyond the cache's capacity: puts that spill.
        held.extend((0..300).map(|_| CHECKS.get()));
        made += 300;
        let s = CHECKS.stats();
        assert_eq!((s.gets, s.puts), (made, made - 300), "round {round}: {s:?}");
        held.clear();
        let s = CHECKS.stats();
        assert_eq!(
            (s.gets, s.puts, s.live),
            (made, made, 0),
            "round {round}: {s:?}"
        );
    }
    // The same counts from a thread whose cache then goes away with it.
    std::thread::spawn(|| {
        for _ in 0..4_100 {
            drop(CHECKS.get());
        }
    })
    .join()
    .unwrap();
    let s = CHECKS.stats();
    assert_eq!(
        (s.gets, s.puts, s.live),
        (made + 4_100, made + 4_100, 0),
        "{s:?}"
    );
    assert_eq!(
        s.thread_caches, 1,
        "the other thread's cache is gone: {s:?}"
    );
}

#[test]
fn trim_takes_the_calling_threads_cache_first() {
    let held: Vec<_> = (0..24).map(|_| TRIM.get()).collect();
    drop(held);
    let s = TRIM.stats();
    assert_eq!(s.cached_local, 16, "{s:?}");
    assert_eq!(TRIM.trim(), 3);
    let s = TRIM.stats();
    assert_eq!((s.blocks, s.cached, s.live), (0, 0, 0), "{s:?}");
}

//! Functional behaviour of pools: reset, reuse, cross-thread return, thread
//! exit, statistics and the registry. Memory figures are in `churn_*.rs`.

use std::sync::mpsc;

use keel_pool::{Pool, PoolConfig, Reset};

#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    resets: u32,
}

impl Reset for Buf {
    fn reset(&mut self) {
        self.data.clear();
        self.resets += 1;
    }
}

#[test]
fn reset_runs_on_return_and_keeps_capacity() {
    let pool: Pool<Buf> = Pool::new("reset", Buf::default);
    let mut b = pool.get();
    b.data.extend_from_slice(&[1; 1000]);
    let ptr = b.data.as_ptr();
    drop(b);
    let b = pool.get();
    assert_eq!(b.resets, 1, "reset ran once on return");
    assert!(b.data.is_empty(), "reset cleared the object");
    assert!(b.data.capacity() >= 1000, "capacity kept");
    assert_eq!(b.data.as_ptr(), ptr, "same buffer reused, no reallocation");
}

#[test]
fn objects_are_distinct_while_live() {
    let pool: Pool<Buf> = Pool::new("distinct", Buf::default);
    let mut held: Vec<_> = (0..1000).map(|_| pool.get()).collect();
    for (i, b) in held.iter_mut().enumerate() {
        b.data.push(i as u8);
    }
    for (i, b) in held.iter().enumerate() {
        assert_eq!(b.data, [i as u8]);
    }
    let mut addrs: Vec<_> = held.iter().map(|b| &**b as *const Buf as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 1000);
    let s = pool.stats();
    assert_eq!(s.live, 1000);
    assert_eq!(s.gets, 1000);
    drop(held);
    let s = pool.stats();
    assert_eq!((s.live, s.puts), (0, 1000));
    assert_eq!(s.cached, s.blocks * (s.cached / s.blocks.max(1)));
}

#[test]
fn objects_freed_on_another_thread_come_back() {
    let pool: Pool<Buf> = Pool::new("cross", Buf::default);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..100_000u32 {
                let mut b = pool.get();
                b.data.push(i as u8);
                tx.send(b).expect("receiver alive");
            }
            drop(tx);
        });
        s.spawn(|| {
            let mut n = 0;
            for b in rx {
                assert_eq!(b.data.len(), 1);
                n += 1;
            }
            assert_eq!(n, 100_000);
        });
    });
    let s = pool.stats();
    assert_eq!(s.live, 0, "{s:?}");
    assert_eq!(s.gets, 100_000);
    assert_eq!(s.puts, 100_000);
    // Objects cycle through the global list instead of piling up: far fewer
    // objects exist than were handed out.
    assert!(s.blocks_allocated * 256 < 100_000, "{s:?}");
}

#[test]
fn trim_returns_free_blocks_and_keeps_live_ones() {
    let pool: Pool<Buf> = Pool::with_config(
        "trim",
        Buf::default,
        PoolConfig {
            high_water: usize::MAX,
            local_capacity: Some(16),
            block_objects: Some(32),
        },
    );
    let mut held: Vec<_> = (0..32 * 100).map(|_| pool.get()).collect();
    assert_eq!(pool.stats().blocks, 100);
    // Keep every other object from the first half; free the rest.
    let kept: Vec<_> = held.drain(..1600).step_by(2).collect();
    drop(held);
    let before = pool.stats();
    let freed = pool.trim();
    let s = pool.stats();
    assert_eq!(freed, 50, "the 50 untouched blocks are freed: {s:?}");
    // The blocks' bytes are given back (the free list's shrinking too, so
    // the pool holds at least that much less).
    let returned = s.bytes_returned;
    assert!(
        returned > 0 && returned <= before.bytes - s.bytes,
        "{before:?} {s:?}"
    );
    assert_eq!(s.blocks, 50);
    assert_eq!(s.live, 800);
    for b in &kept {
        assert!(b.data.is_empty()); // still valid memory
    }
    drop(kept);
    assert_eq!(pool.trim(), 50);
    let s = pool.stats();
    assert_eq!((s.blocks, s.live, s.cached), (0, 0, 0), "{s:?}");
    assert_eq!(s.blocks_freed, 100);
    assert_eq!(
        s.bytes_returned,
        2 * returned,
        "as many blocks again: {s:?}"
    );
}

#[test]
fn automatic_trim_bounds_the_cache() {
    let pool: Pool<Buf> = Pool::with_config(
        "auto-trim",
        Buf::default,
        PoolConfig {
            high_water: 1024,
            local_capacity: Some(64),
            block_objects: Some(64),
        },
    );
    let held: Vec<_> = (0..100_000).map(|_| pool.get()).collect();
    drop(held);
    let s = pool.stats();
    assert!(
        s.cached <= 1024 + 64,
        "cache bounded by the high-water mark: {s:?}"
    );
    assert!(s.blocks_freed > 1000, "{s:?}");
}

#[test]
fn pools_are_listed_while_alive() {
    let before = keel_pool::all_stats()
        .iter()
        .filter(|s| s.name == "listed")
        .count();
    {
        let pool: Pool<Buf> = Pool::new("listed", Buf::default);
        drop(pool.get());
        let listed = keel_pool::all_stats();
        let mine = listed.iter().find(|s| s.name == "listed").expect("listed");
        assert_eq!(mine.gets, 1);
    }
    let after = keel_pool::all_stats()
        .iter()
        .filter(|s| s.name == "listed")
        .count();
    assert_eq!(before, after, "a dropped pool leaves the registry");
}

#[test]
fn pooled_objects_can_hold_objects_of_the_same_pool() {
    // A span owns child spans from the same pool: dropping the parent returns
    // the children from inside reset.
    #[derive(Default)]
    struct Node {
        children: Vec<keel_pool::Pooled<'static, Node>>,
    }
    impl Reset for Node {
        fn reset(&mut self) {
            self.children.clear();
        }
    }
    static NODES: Pool<Node> = Pool::new("nodes", Node::default);
    for _ in 0..100 {
        let mut root = NODES.get();
        for _ in 0..10 {
            let mut child = NODES.get();
            child.children.push(NODES.get());
            root.children.push(child);
        }
        drop(root);
    }
    let s = NODES.stats();
    assert_eq!(s.live, 0, "{s:?}");
    assert_eq!(s.gets, 2100);
    assert_eq!(s.puts, 2100);
}

#[test]
fn raw_round_trip() {
    let pool: Pool<Buf> = Pool::new("raw", Buf::default);
    let mut b = pool.get();
    b.data.push(9);
    let raw = keel_pool::Pooled::into_raw(b);
    assert_eq!(pool.stats().live, 1);
    // SAFETY: `raw` came from `into_raw` on this pool and is used once.
    let b = unsafe { pool.from_raw(raw) };
    assert_eq!(b.data, [9]);
    drop(b);
    assert_eq!(pool.stats().live, 0);
}

#[test]
fn trim_idle_leaves_a_pool_in_use_alone_and_empties_an_idle_one() {
    let pool: Pool<Buf> = Pool::new("trim-idle", Buf::default);
    let burst: Vec<_> = (0..3_000).map(|_| pool.get()).collect();
    drop(burst);
    let after_burst = pool.stats();
    assert!(after_burst.blocks > 2, "{after_burst:?}");

    // Just drawn from: not idle for an hour.
    assert_eq!(pool.trim_idle(std::time::Duration::from_secs(3600)), 0);
    assert_eq!(pool.stats().blocks, after_burst.blocks);
    assert_eq!(pool.stats().idle_trims, 0);

    // The idle period this test is about.
    let idle = std::time::Duration::from_millis(20);
    std::thread::sleep(idle);
    let freed = pool.trim_idle(idle);
    let s = pool.stats();
    assert!(freed > 0, "{s:?}");
    assert_eq!(s.idle_trims, 1);
    // This thread's cache (the only one) came back first, so nothing pins
    // a block: every one went.
    assert_eq!((s.blocks, s.cached), (0, 0), "{s:?}");

    // A pool used again is busy again.
    drop(pool.get());
    let refill: Vec<_> = (0..1_000).map(|_| pool.get()).collect();
    drop(refill);
    assert_eq!(pool.trim_idle(std::time::Duration::from_secs(3600)), 0);
}

#[test]
fn statistics_read_while_a_thread_works_stay_within_its_operations() {
    // A small cache refills from the global list and spills back often, so
    // a reader on another thread sees the cache's length change between
    // its reads of the counts.
    static SNAPSHOT: Pool<Buf> = Pool::with_config(
        "snapshot",
        Buf::default,
        PoolConfig {
            local_capacity: Some(4),
            ..PoolConfig::DEFAULT
        },
    );
    const ROUNDS: u64 = 20_000;
    const HELD: usize = 9;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                let held: Vec<_> = (0..HELD).map(|_| SNAPSHOT.get()).collect();
                drop(held);
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let bound = ROUNDS * HELD as u64;
    let mut reads = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
        let stats = SNAPSHOT.stats();
        assert!(
            stats.gets <= bound,
            "{} gets of at most {bound}",
            stats.gets
        );
        assert!(
            stats.puts <= bound,
            "{} puts of at most {bound}",
            stats.puts
        );
        reads += 1;
    }
    worker.join().expect("worker");
    let stats = SNAPSHOT.stats();
    assert_eq!((stats.gets, stats.puts), (bound, bound));
}

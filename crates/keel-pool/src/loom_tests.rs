//! Model checks of the shared state under loom: the global list, objects
//! returned on another thread, thread-cache flushes and trimming, in every
//! interleaving loom explores.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p keel-pool --release --lib loom`.
//! Table caches are driven directly (loom threads are not OS threads), with
//! tiny caches and blocks so that every batch move and trim path is reached.
//! Pools with a thread cache of their own (`pool!`) are driven through the
//! public API: under loom their thread-locals are loom's, made per thread of
//! a model run and dropped when that thread ends. Loom drops them after
//! `join` returns, so a model waits for the hand-back (`until_caches`),
//! and the hand-back races with whatever the joining thread does meanwhile.

use std::ptr::NonNull;

use loom::thread;

use crate::local::LocalCache;
use crate::shared::{Shared, SlotPtr};
use crate::sync::{Arc, LocalKey};
use crate::thread_cache::LocalSlot;
use crate::{Pool, PoolConfig, Pooled, Reset, ThreadCache};

/// A value and a buffer whose capacity the pool accounts for.
struct Obj(u32, Vec<u8>);

/// Heap bytes every `Obj` keeps.
const OBJ_HEAP: u64 = 4;

impl Reset for Obj {
    fn reset(&mut self) {
        self.0 = 0;
        self.1.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.1.capacity()
    }
}

fn shared() -> Arc<Shared<Obj>> {
    Arc::new(new_shared())
}

/// Tiny caches and blocks: every batch move and trim path is reached.
const TINY: PoolConfig = PoolConfig {
    high_water: 2,
    local_capacity: Some(2),
    block_objects: Some(2),
};

fn obj() -> Obj {
    Obj(0, Vec::with_capacity(OBJ_HEAP as usize))
}

fn new_shared() -> Shared<Obj> {
    Shared::new(1, 0, "loom", obj, TINY)
}

/// A pool whose caches make an idle check on every put and whose global
/// list counts as idle after one quiet check.
fn eager_idle_shared() -> Arc<Shared<Obj>> {
    let mut s = new_shared();
    s.idle_check_puts = 1;
    s.idle_ticks = 1;
    Arc::new(s)
}

fn get(c: &mut LocalCache<Obj>) -> SlotPtr<Obj> {
    match c.get() {
        Some(p) => p,
        None => {
            let block = c.shared.new_block();
            c.adopt(block)
        }
    }
}

fn write(p: SlotPtr<Obj>, v: u32) {
    // SAFETY: the caller holds `p` exclusively (it came from `get`).
    unsafe { (*(*p.0.as_ptr()).value.get()).0 = v };
}

fn read(p: SlotPtr<Obj>) -> u32 {
    // SAFETY: as for `write`.
    unsafe { (*(*p.0.as_ptr()).value.get()).0 }
}

fn put(c: &mut LocalCache<Obj>, p: SlotPtr<Obj>) {
    // SAFETY: as for `write`; reset and record the kept heap before return,
    // like `Pooled::drop`.
    let heap = unsafe {
        let v = &mut *(*p.0.as_ptr()).value.get();
        v.reset();
        let heap = v.heap_bytes();
        p.set_heap(heap);
        heap
    };
    if let Err(p) = c.try_put(p, heap) {
        c.put_cold(p, heap).destroy();
    }
}

#[test]
fn loom_object_returned_on_another_thread() {
    loom::model(|| {
        let shared = shared();
        let mut a = LocalCache::new(shared.clone());
        let p = get(&mut a);
        write(p, 7);
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let mut b = LocalCache::new(s2);
            assert_eq!(read(p), 7);
            put(&mut b, p);
            // `b` drops: the thread's cache is handed back.
        });
        // Meanwhile this thread keeps using the pool.
        let q = get(&mut a);
        write(q, 9);
        let r = get(&mut a);
        assert_ne!(q.0, r.0, "one object handed out twice");
        put(&mut a, q);
        put(&mut a, r);
        t.join().expect("thread");
        drop(a);
        let s = shared.stats();
        assert_eq!(s.live, 0, "{s:?}");
        assert_eq!(s.gets, s.puts);
        assert_eq!(s.thread_caches, 0);
        let (_, doomed) = shared.trim(0);
        doomed.destroy();
        assert_eq!(shared.stats().blocks, 0);
    });
}

#[test]
fn loom_trim_races_with_spill_and_refill() {
    loom::model(|| {
        let shared = shared();
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let mut b = LocalCache::new(s2);
            let ps: Vec<_> = (0..3).map(|_| get(&mut b)).collect();
            for (i, p) in ps.iter().enumerate() {
                write(*p, i as u32 + 1);
            }
            for (i, p) in ps.iter().enumerate() {
                assert_eq!(read(*p), i as u32 + 1, "a trim freed a live object");
            }
            for p in ps {
                put(&mut b, p);
            }
        });
        let (_, doomed) = shared.trim(0);
        doomed.destroy();
        t.join().expect("thread");
        let (_, doomed) = shared.trim(0);
        doomed.destroy();
        let s = shared.stats();
        assert_eq!((s.live, s.blocks, s.cached), (0, 0, 0), "{s:?}");
        assert_eq!(s.blocks_allocated, s.blocks_freed);
    });
}

/// Takes `n` objects from `c`, then puts them all back.
fn get_then_put(c: &mut LocalCache<Obj>, n: usize) {
    let ps: Vec<_> = (0..n).map(|_| get(c)).collect();
    for p in ps {
        put(c, p);
    }
}

/// Reads `shared`'s statistics while `t` works: at most the `made` gets and
/// puts ever made, and exactly those once `t` is done.
fn read_while(shared: &Shared<Obj>, t: thread::JoinHandle<()>, made: u64) {
    let s = shared.stats();
    assert!(s.gets <= made && s.puts <= made, "{s:?}");
    t.join().expect("thread");
    let s = shared.stats();
    assert_eq!((s.gets, s.puts), (made, made), "{s:?}");
}

#[test]
fn loom_statistics_read_while_a_cache_spills_count_no_more_than_was_done() {
    loom::model(|| {
        let shared = shared();
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            // The third put finds the cache full and spills half of it.
            get_then_put(&mut LocalCache::new(s2), 3);
        });
        // A reader between the spill's move and the cache's new length
        // must still see at most the 3 gets and 3 puts ever made.
        read_while(&shared, t, 3);
    });
}

#[test]
fn loom_statistics_read_while_a_cache_refills_count_no_more_than_was_done() {
    // Caches of 4, so that a refill moves 2 objects and keeps one of them.
    const REFILLS_TWO: PoolConfig = PoolConfig {
        high_water: 8,
        local_capacity: Some(4),
        block_objects: Some(2),
    };
    loom::model(|| {
        let shared = Arc::new(Shared::new(1, 0, "loom", obj, REFILLS_TWO));
        // Four objects in the global list, as a thread that exits leaves
        // them.
        get_then_put(&mut LocalCache::new(shared.clone()), 4);
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            // The first get refills two objects and takes one.
            get_then_put(&mut LocalCache::new(s2), 1);
        });
        // A reader between the refill's move and the cache's new length
        // must still see at most the 5 gets and 5 puts ever made.
        read_while(&shared, t, 5);
    });
}

#[test]
fn loom_two_threads_share_the_global_list() {
    loom::model(|| {
        let shared = shared();
        let hs: Vec<_> = (0..2)
            .map(|k| {
                let s = shared.clone();
                thread::spawn(move || {
                    let mut c = LocalCache::new(s);
                    let p = get(&mut c);
                    let q = get(&mut c);
                    write(p, k * 10 + 1);
                    write(q, k * 10 + 2);
                    assert_eq!(read(p), k * 10 + 1);
                    assert_eq!(read(q), k * 10 + 2);
                    put(&mut c, p);
                    put(&mut c, q);
                })
            })
            .collect();
        for h in hs {
            h.join().expect("thread");
        }
        let s = shared.stats();
        assert_eq!(s.live, 0, "{s:?}");
        assert_eq!((s.gets, s.puts), (4, 4));
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
    });
}

#[test]
fn loom_idle_trim_races_with_use_on_another_thread() {
    loom::model(|| {
        let shared = eager_idle_shared();
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let mut b = LocalCache::new(s2);
            let p = get(&mut b);
            let q = get(&mut b);
            write(p, 1);
            write(q, 2);
            put(&mut b, q);
            assert_eq!(read(p), 1, "an idle trim freed a live object");
            put(&mut b, p);
            let r = get(&mut b);
            write(r, 3);
            assert_eq!(read(r), 3);
            put(&mut b, r);
        });
        // This thread idles: its puts make idle checks (every put here), which
        // hand unused objects to the global list and trim it.
        let mut a = LocalCache::new(shared.clone());
        let x = get(&mut a);
        write(x, 9);
        put(&mut a, x);
        let y = get(&mut a);
        write(y, 8);
        assert_eq!(read(y), 8);
        put(&mut a, y);
        t.join().expect("thread");
        let s = shared.stats();
        assert_eq!(s.live, 0, "{s:?}");
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
        assert_eq!(s.blocks * 2, s.cached, "{s:?}");
        drop(a);
        let s = shared.stats();
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
        let (_, doomed) = shared.trim(0);
        doomed.destroy();
        let s = shared.stats();
        assert_eq!((s.blocks, s.cached, s.heap_bytes), (0, 0, 0), "{s:?}");
    });
}

#[test]
fn loom_timed_idle_trim_races_with_use_on_another_thread() {
    loom::model(|| {
        let shared = shared();
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let mut b = LocalCache::new(s2);
            let p = get(&mut b);
            let q = get(&mut b);
            write(p, 1);
            write(q, 2);
            put(&mut b, q);
            put(&mut b, p);
            let r = get(&mut b);
            write(r, 3);
            assert_eq!(read(r), 3, "a timed idle trim freed a live object");
            put(&mut b, r);
        });
        // A timer: every pool counts as idle (no minimum), so each call
        // trims whatever is fully free at that moment.
        for _ in 0..2 {
            let (_, doomed) = shared.trim_idle(std::time::Duration::ZERO);
            doomed.destroy();
        }
        t.join().expect("thread");
        let s = shared.stats();
        assert_eq!(s.live, 0, "{s:?}");
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
        assert_eq!(s.blocks * 2, s.cached, "{s:?}");
    });
}

/// A thread cache of the pool's own, as `pool!` declares one.
enum OwnCache {}

// SAFETY: the thread-local is declared here for `own_pool`'s pool alone.
// Each model run makes one such pool and loom's thread-locals live for one
// run, so a cache in it never serves two pools.
unsafe impl ThreadCache<Obj> for OwnCache {
    fn key() -> Option<&'static LocalKey<LocalSlot<Obj>>> {
        crate::__pool_thread_local!(SLOT, Obj);
        Some(&SLOT)
    }
}

type OwnPool = std::sync::Arc<Pool<Obj, OwnCache>>;

fn own_pool() -> OwnPool {
    // SAFETY: see `OwnCache`. The pool drops at the end of the run, after
    // every thread that used it has been joined; the main thread's cache,
    // dropped after it with the run's thread-locals, sees the pool dead and
    // follows none of its pointers.
    std::sync::Arc::new(unsafe { Pool::with_thread_cache("loom own", obj, TINY) })
}

/// A `Pooled` detached from its pool, to move to a loom thread (which needs
/// `'static` values).
struct Loose(NonNull<Obj>);

// SAFETY: it stands for a `Pooled<Obj>`, which is `Send`.
unsafe impl Send for Loose {}

fn loosen(p: Pooled<'_, Obj, OwnCache>) -> Loose {
    Loose(Pooled::into_raw(p))
}

fn tighten(pool: &Pool<Obj, OwnCache>, l: Loose) -> Pooled<'_, Obj, OwnCache> {
    // SAFETY: `l` came from `loosen` on a `Pooled` of this pool, once.
    unsafe { pool.from_raw(l.0) }
}

/// Lets other threads run until `n` thread caches are left: joined threads
/// hand theirs back when loom drops their thread-locals.
fn until_caches(pool: &Pool<Obj, OwnCache>, n: u64) {
    while pool.stats().thread_caches > n {
        thread::yield_now();
    }
}

#[test]
fn loom_own_cache_object_returned_on_another_thread() {
    loom::model(|| {
        let pool = own_pool();
        let mut p = pool.get();
        p.0 = 7;
        p.1.push(1);
        let loose = loosen(p);
        let pool2 = pool.clone();
        let t = thread::spawn(move || {
            let p = tighten(&pool2, loose);
            assert_eq!(p.0, 7);
            // The put makes this thread's cache; the thread's end hands it
            // back.
            drop(p);
        });
        // Meanwhile this thread keeps using the pool through its own cache.
        let mut q = pool.get();
        let mut r = pool.get();
        q.0 = 9;
        r.0 = 10;
        assert_ne!(
            &*q as *const Obj, &*r as *const Obj,
            "one object handed out twice"
        );
        assert_eq!(q.0, 9);
        drop(q);
        drop(r);
        t.join().expect("thread");
        let s = pool.stats();
        assert_eq!(s.live, 0, "{s:?}");
        assert_eq!((s.gets, s.puts), (3, 3), "{s:?}");
        until_caches(&pool, 1);
        let s = pool.stats();
        assert_eq!((s.live, s.gets, s.puts), (0, 3, 3), "{s:?}");
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
        // The trim takes this thread's cache back first.
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.blocks, s.cached, s.live), (0, 0, 0), "{s:?}");
        assert_eq!(s.blocks_allocated, s.blocks_freed, "{s:?}");
    });
}

#[test]
fn loom_own_cache_thread_exit_races_with_trim() {
    loom::model(|| {
        let pool = own_pool();
        let pool2 = pool.clone();
        let t = thread::spawn(move || {
            let mut held: Vec<_> = (0..2).map(|_| pool2.get()).collect();
            for (i, p) in held.iter_mut().enumerate() {
                p.0 = i as u32 + 1;
            }
            for (i, p) in held.iter().enumerate() {
                assert_eq!(p.0, i as u32 + 1, "a trim freed a live object");
            }
            // Returned in turn: the cache is full when the thread exits.
            drop(held);
        });
        // Races with the thread's gets, puts and exit.
        pool.trim();
        t.join().expect("thread");
        until_caches(&pool, 0);
        let s = pool.stats();
        assert_eq!((s.live, s.gets, s.puts), (0, 2, 2), "{s:?}");
        assert_eq!(
            s.cached_local, 0,
            "the exiting thread's cache came back: {s:?}"
        );
        assert_eq!(s.heap_bytes, s.cached * OBJ_HEAP, "{s:?}");
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.blocks, s.cached, s.heap_bytes), (0, 0, 0), "{s:?}");
        assert_eq!(s.blocks_allocated, s.blocks_freed, "{s:?}");
    });
}

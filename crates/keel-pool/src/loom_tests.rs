//! Model checks of the shared state under loom: the global list, objects
//! returned on another thread, thread-cache flushes and trimming, in every
//! interleaving loom explores.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p keel-pool --release --lib loom`.
//! Thread caches are driven directly (loom threads are not OS threads), with
//! tiny caches and blocks so that every batch move and trim path is reached.

use loom::thread;

use crate::local::LocalCache;
use crate::shared::{Shared, SlotPtr};
use crate::sync::Arc;
use crate::{PoolConfig, Reset};

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

fn new_shared() -> Shared<Obj> {
    Shared::new(
        1,
        0,
        "loom",
        || Obj(0, Vec::with_capacity(OBJ_HEAP as usize)),
        PoolConfig {
            high_water: 2,
            local_capacity: Some(2),
            block_objects: Some(2),
        },
    )
}

/// A pool whose caches make an idle check on every put and whose global
/// list counts as idle after one quiet check.
fn eager_idle_shared() -> Arc<Shared<Obj>> {
    let mut s = new_shared();
    s.idle_check_puts = 1;
    s.idle_ticks = 1;
    Arc::new(s)
}

fn get(c: &mut Box<LocalCache<Obj>>) -> SlotPtr<Obj> {
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

fn put(c: &mut Box<LocalCache<Obj>>, p: SlotPtr<Obj>) {
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

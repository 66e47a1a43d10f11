//! Rule R6: 10 million get/put pairs across 2 threads, objects freed on the
//! other thread half the time, leave the live heap bounded by a constant that
//! does not depend on N.

use std::sync::mpsc;

use keel_alloc::CountingAlloc;
use keel_pool::{Pool, Reset};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

struct Obj {
    bytes: Vec<u8>,
}

impl Reset for Obj {
    fn reset(&mut self) {
        self.bytes.clear();
    }
}

static POOL: Pool<Obj> = Pool::new("churn", || Obj {
    bytes: Vec::with_capacity(32),
});

/// Runs `pairs` get/put pairs on each of two threads. Every other object is
/// sent to the other thread and dropped there.
fn run(pairs: u64) {
    let (tx_a, rx_a) = mpsc::sync_channel::<Vec<keel_pool::Pooled<'static, Obj>>>(4);
    let (tx_b, rx_b) = mpsc::sync_channel::<Vec<keel_pool::Pooled<'static, Obj>>>(4);
    let worker = |tx: mpsc::SyncSender<Vec<keel_pool::Pooled<'static, Obj>>>,
                  rx: mpsc::Receiver<Vec<keel_pool::Pooled<'static, Obj>>>| {
        move || {
            let mut batch = Vec::with_capacity(64);
            let mut spare: Vec<Vec<keel_pool::Pooled<'static, Obj>>> = Vec::new();
            for i in 0..pairs {
                let mut o = POOL.get();
                o.bytes.extend_from_slice(&i.to_le_bytes());
                if i % 2 == 0 {
                    drop(o);
                } else {
                    batch.push(o);
                    if batch.len() == 64 {
                        let next = spare.pop().unwrap_or_else(|| Vec::with_capacity(64));
                        tx.send(std::mem::replace(&mut batch, next))
                            .expect("peer alive");
                    }
                }
                while let Ok(mut got) = rx.try_recv() {
                    got.clear(); // dropped here: freed on the other thread
                    spare.push(got);
                }
            }
            drop(batch);
            drop(tx);
            for got in rx {
                drop(got);
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(worker(tx_a, rx_b));
        s.spawn(worker(tx_b, rx_a));
    });
}

#[test]
fn ten_million_pairs_across_two_threads_stay_flat() {
    // Warm-up: the pool, thread machinery and channels reach steady state.
    run(100_000);
    let s0 = POOL.stats();
    let before = keel_alloc::stats();
    run(5_000_000); // x 2 threads = 10 million pairs
    let after = keel_alloc::stats();
    let s1 = POOL.stats();
    let d = before.delta(&after);
    assert_eq!(s1.live, 0, "{s1:?}");
    assert_eq!(s1.gets - s0.gets, 10_000_000);
    assert_eq!(s1.puts - s0.puts, 10_000_000);
    // Bounded by a constant: a few blocks and channel buffers, not N.
    assert!(
        d.live_bytes < 256 * 1024,
        "live heap grew {} bytes",
        d.live_bytes
    );
    assert!(
        s1.blocks <= s0.blocks + 64,
        "blocks {} -> {}",
        s0.blocks,
        s1.blocks
    );
    // Amortised allocation per pair is far below one.
    assert!(d.allocs < 1_000_000, "{d:?}");
}

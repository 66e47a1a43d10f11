//! Rules R3 and R6 for `FutureBox`: once a thread's cache is warm, boxing,
//! running and dropping futures allocates nothing; a thread that fills its
//! cache and exits gives every block back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use keel_alloc::CountingAlloc;
use keel_pool::{FutureBox, future_box_stats, trim_future_boxes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// The tests read process-wide figures: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pending once, then ready: the boxed futures below are really suspended.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn run<T>(mut f: FutureBox<'_, T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = Pin::new(&mut f).poll(&mut cx) {
            return v;
        }
    }
}

/// A future of about `N` bytes, in the size class above `N`.
fn sized<const N: usize>(i: u64) -> FutureBox<'static, u64> {
    let data = [i as u8; N];
    FutureBox::new(async move {
        YieldOnce(false).await;
        data[N - 1] as u64 + i
    })
}

/// One box of each of four classes (64 B, 256 B, 2 KiB, 16 KiB), run to the end.
fn one_round(i: u64) -> u64 {
    run(sized::<8>(i)) + run(sized::<200>(i)) + run(sized::<2000>(i)) + run(sized::<16000>(i))
}

#[test]
fn warm_boxes_allocate_nothing() {
    let _serial = serial();
    let before = future_box_stats();
    let d = keel_alloc::churn_thread(100, 25_000, |i| {
        std::hint::black_box(one_round(i));
    });
    let after = future_box_stats();
    assert_eq!(d.iters * 4, 100_000);
    assert_eq!(d.allocs, 0, "a warm cache serves every box: {d:?}");
    assert_eq!(d.frees, 0, "{d:?}");
    assert!(
        after.blocks_reused - before.blocks_reused >= 100_000,
        "{before:?} -> {after:?}"
    );

    // Several in flight at once, up to the cache bound: still nothing.
    let d = keel_alloc::churn_thread(2, 1_000, |i| {
        let held: [FutureBox<'static, u64>; 8] =
            std::array::from_fn(|k| sized::<100>(i + k as u64));
        let sum: u64 = held.into_iter().map(run).sum();
        std::hint::black_box(sum);
    });
    assert_eq!(d.allocs, 0, "{d:?}");

    // Without the cache each box is one allocation: the test can fail.
    trim_future_boxes();
    let d = keel_alloc::churn_thread(0, 1, |i| {
        std::hint::black_box(one_round(i));
    });
    assert_eq!(d.allocs, 4, "a cold cache allocates each class once: {d:?}");
    trim_future_boxes(); // leave nothing for the other test to see
}

/// Fills this thread's cache in several classes (and spills past the bound),
/// then exits.
fn filling_thread() {
    std::thread::spawn(|| {
        let held: Vec<_> = (0..100)
            .flat_map(|i| [sized::<8>(i), sized::<1000>(i), sized::<10_000>(i)])
            .collect();
        let sum: u64 = held.into_iter().map(run).sum();
        std::hint::black_box(sum);
    })
    .join()
    .expect("thread");
}

#[test]
fn exiting_threads_give_their_cached_blocks_back() {
    let _serial = serial();
    for _ in 0..5 {
        filling_thread();
    }
    let s0 = future_box_stats();
    let d = keel_alloc::churn(0, 200, |_| filling_thread());
    let s1 = future_box_stats();
    // Each thread cached up to its bound in each class it used and then freed
    // them at exit; 200 threads would otherwise leave ~68 MB behind.
    assert!(d.live_bytes.abs() < 16 * 1024, "live heap moved {d:?}");
    assert_eq!(s1.blocks_cached, s0.blocks_cached, "{s0:?} -> {s1:?}");
    assert_eq!(s1.bytes_cached, s0.bytes_cached, "{s0:?} -> {s1:?}");
    assert_eq!(
        s1.blocks_allocated - s0.blocks_allocated,
        s1.blocks_freed - s0.blocks_freed,
        "every block allocated by the threads was freed: {s0:?} -> {s1:?}"
    );
}

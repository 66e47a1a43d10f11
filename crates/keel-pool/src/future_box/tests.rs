use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

use super::blocks::{MAX_BLOCK, thread_cached};
use super::{FutureBox, Home, future_box_stats, trim_future_boxes};

fn poll<T>(f: &mut FutureBox<'_, T>) -> Poll<T> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn run<T>(mut f: FutureBox<'_, T>) -> T {
    loop {
        if let Poll::Ready(v) = poll(&mut f) {
            return v;
        }
    }
}

/// Pending once, then ready.
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

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn home<T>(f: &FutureBox<'_, T>) -> Home {
    f.vtable.home
}

#[test]
fn outputs_come_through_for_every_size() {
    assert_eq!(run(FutureBox::new(async { 7u8 })), 7);
    let small = [3u8; 40];
    assert_eq!(run(FutureBox::new(async move { small.len() })), 40);
    let mid = [1u64; 100];
    let f = FutureBox::new(async move {
        YieldOnce(false).await;
        mid.iter().sum::<u64>()
    });
    assert!(matches!(home(&f), Home::Class(_)));
    assert_eq!(run(f), 100);
    let s = String::from("borrowed");
    let f: FutureBox<'_, &str> = FutureBox::new(async { s.as_str() });
    assert_eq!(run(f), "borrowed");
}

#[test]
fn a_half_polled_future_returns_pending_then_its_value() {
    let mut f = FutureBox::new(async {
        YieldOnce(false).await;
        "done"
    });
    assert_eq!(poll(&mut f), Poll::Pending);
    assert_eq!(poll(&mut f), Poll::Ready("done"));
}

#[test]
fn a_never_polled_future_is_dropped_once() {
    let drops = counter();
    let t = Tracked(drops.clone());
    let f = FutureBox::new(async move {
        let _t = t;
    });
    assert_eq!(drops.load(SeqCst), 0);
    drop(f);
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn a_half_polled_future_drops_its_live_locals_once() {
    let drops = counter();
    let (held, unmoved) = (Tracked(drops.clone()), Tracked(drops.clone()));
    let mut f = FutureBox::new(async move {
        let _local = Tracked(held.0.clone());
        let _held = held;
        YieldOnce(false).await;
        drop(unmoved);
    });
    assert_eq!(poll(&mut f), Poll::Pending);
    assert_eq!(drops.load(SeqCst), 0);
    drop(f);
    // `_local`, `_held` and the never-reached `unmoved`: each exactly once.
    assert_eq!(drops.load(SeqCst), 3);
}

#[test]
fn a_finished_future_drops_its_captures_once() {
    let drops = counter();
    let t = Tracked(drops.clone());
    let f = FutureBox::new(async move {
        YieldOnce(false).await;
        drop(t);
        5
    });
    assert_eq!(run(f), 5);
    assert_eq!(drops.load(SeqCst), 1);
}

static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);

#[repr(align(64))]
struct Zst;

impl Future for Zst {
    type Output = &'static str;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
        assert_eq!(&*self as *const Zst as usize % 64, 0, "aligned");
        Poll::Ready("zst")
    }
}

impl Drop for Zst {
    fn drop(&mut self) {
        ZST_DROPS.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_zero_sized_future_gets_no_memory_and_is_dropped_once() {
    let cached = thread_cached();
    let f = FutureBox::new(Zst);
    assert_eq!(home(&f), Home::Nowhere);
    assert_eq!(run(f), "zst");
    assert_eq!(ZST_DROPS.load(SeqCst), 1);
    let mut f = FutureBox::new(std::future::pending::<()>());
    assert_eq!(home(&f), Home::Nowhere);
    assert_eq!(poll(&mut f), Poll::Pending);
    drop(f);
    assert_eq!(thread_cached(), cached, "no block taken or returned");
}

#[test]
fn an_oversize_future_is_allocated_exactly_and_not_cached() {
    let before = future_box_stats().exact_allocations;
    let drops = counter();
    let t = Tracked(drops.clone());
    let big = [9u8; MAX_BLOCK + 1];
    let cached = thread_cached();
    let mut f = FutureBox::new(async move {
        let _t = t;
        YieldOnce(false).await;
        big.iter().map(|&b| b as usize).sum::<usize>()
    });
    assert!(matches!(home(&f), Home::Exact(l) if l.size() > MAX_BLOCK));
    assert_eq!(poll(&mut f), Poll::Pending);
    drop(f);
    assert_eq!(drops.load(SeqCst), 1);
    assert_eq!(thread_cached(), cached, "an exact allocation is not cached");
    assert!(future_box_stats().exact_allocations > before);
    let big = [1u8; MAX_BLOCK * 2];
    assert_eq!(run(FutureBox::new(async move { big.len() })), MAX_BLOCK * 2);
}

#[test]
fn an_over_aligned_future_is_allocated_exactly_and_aligned() {
    #[repr(align(128))]
    struct Aligned([u8; 128]);

    let data = Aligned([2; 128]);
    let f = FutureBox::new(async move {
        YieldOnce(false).await;
        let a = &data;
        (a as *const Aligned as usize % 128, a.0[127])
    });
    assert!(matches!(home(&f), Home::Exact(l) if l.align() == 128));
    assert_eq!(f.future.as_ptr() as usize % 128, 0);
    assert_eq!(run(f), (0, 2));
}

#[test]
fn a_future_made_on_one_thread_is_polled_and_dropped_on_another() {
    let drops = counter();
    let t = Tracked(drops.clone());
    let mut f = FutureBox::new(async move {
        let _t = t;
        YieldOnce(false).await;
        YieldOnce(false).await;
        11
    });
    assert_eq!(poll(&mut f), Poll::Pending);
    let out = std::thread::spawn(move || {
        assert_eq!(poll(&mut f), Poll::Pending);
        let cached = thread_cached();
        drop(f); // half-polled, dropped here: the block joins this thread's cache
        let after = thread_cached();
        assert_eq!(after.iter().sum::<u32>(), cached.iter().sum::<u32>() + 1);
        let g = FutureBox::new(async { 11 });
        run(g)
    })
    .join()
    .expect("thread");
    assert_eq!(out, 11);
    assert_eq!(drops.load(SeqCst), 1);

    // Many boxes made here, run and dropped on another thread.
    let drops = counter();
    let boxes: Vec<_> = (0..200)
        .map(|i| {
            let t = Tracked(drops.clone());
            FutureBox::new(async move {
                let _t = t;
                YieldOnce(false).await;
                i
            })
        })
        .collect();
    let sum = std::thread::spawn(move || {
        let sum: i32 = boxes.into_iter().map(run).sum();
        assert_eq!(thread_cached().iter().sum::<u32>(), 8, "bounded");
        sum
    })
    .join()
    .expect("thread");
    assert_eq!(sum, (0..200).sum());
    assert_eq!(drops.load(SeqCst), 200);
}

#[test]
fn blocks_are_reused_on_the_same_thread() {
    std::thread::spawn(|| {
        let x = [0u8; 200]; // class 256
        let f = FutureBox::new(async move { x[0] });
        let addr = f.future;
        drop(f);
        let g = FutureBox::new(async move { x[1] });
        assert_eq!(g.future, addr, "the cached block came back");
        drop(g);
        assert_eq!(trim_future_boxes(), 1);
        assert_eq!(thread_cached().iter().sum::<u32>(), 0);
    })
    .join()
    .expect("thread");
}

#[test]
fn a_panic_in_poll_leaves_the_box_droppable() {
    let drops = counter();

    // An async block: unwinding drops its locals, the box then drops nothing twice.
    let t = Tracked(drops.clone());
    let mut f = FutureBox::new(async move {
        let _t = t;
        YieldOnce(false).await;
        panic!("handler failed");
    });
    assert_eq!(poll(&mut f), Poll::Pending);
    assert!(catch_unwind(AssertUnwindSafe(|| poll(&mut f))).is_err());
    assert_eq!(drops.load(SeqCst), 1);
    drop(f);
    assert_eq!(drops.load(SeqCst), 1);

    // A hand-written future keeps its fields across the panic; the box drops them.
    struct Panics(#[allow(dead_code)] Tracked);
    impl Future for Panics {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            panic!("poll failed")
        }
    }
    let mut f = FutureBox::new(Panics(Tracked(drops.clone())));
    assert!(catch_unwind(AssertUnwindSafe(|| poll(&mut f))).is_err());
    assert_eq!(drops.load(SeqCst), 1);
    drop(f);
    assert_eq!(drops.load(SeqCst), 2);
}

#[test]
fn a_panic_in_the_futures_drop_still_returns_the_block() {
    #[allow(dead_code)]
    struct PanicsOnDrop(Tracked, [u8; 100]);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("drop failed")
        }
    }
    impl Future for PanicsOnDrop {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Ready(())
        }
    }
    std::thread::spawn(|| {
        let drops = counter();
        let f = FutureBox::new(PanicsOnDrop(Tracked(drops.clone()), [0; 100]));
        let before = thread_cached();
        assert!(catch_unwind(AssertUnwindSafe(|| drop(f))).is_err());
        assert_eq!(drops.load(SeqCst), 1, "the other fields were dropped");
        assert_eq!(
            thread_cached().iter().sum::<u32>(),
            before.iter().sum::<u32>() + 1,
            "the block came back"
        );
    })
    .join()
    .expect("thread");
}

#[test]
fn nested_boxes_work() {
    let inner = FutureBox::new(async { 3 });
    let outer = FutureBox::new(async move { inner.await + 1 });
    assert_eq!(run(outer), 4);
}

#[test]
fn box_is_send_and_unpin() {
    fn send_unpin<X: Send + Unpin>(_: &X) {}
    let f = FutureBox::new(async { 1 });
    send_unpin(&f);
    assert!(format!("{f:?}").starts_with("FutureBox"));
}

#[test]
fn a_box_tells_the_memory_it_holds() {
    assert_eq!(FutureBox::new(std::future::pending::<()>()).block_size(), 0);
    let forty = [3u8; 40];
    assert_eq!(FutureBox::new(async move { forty.len() }).block_size(), 64);
    let eight_hundred = [1u64; 100];
    let f = FutureBox::new(async move { eight_hundred.len() });
    assert_eq!(f.block_size(), 1024);
    let big = [0u8; 20_000];
    let f = FutureBox::new(async move { big.len() });
    assert_eq!(
        f.block_size(),
        std::mem::size_of_val(&async move { big.len() })
    );
    assert!(f.block_size() > 20_000);
}

//! Behaviour of the counting allocator when it is the global allocator.

use keel_alloc::{CountingAlloc, churn, churn_thread, stats, thread_stats};
use std::sync::Mutex;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// The process-wide assertions see every thread's allocations: every test
/// here takes this lock, so that none allocates or frees (megabytes, or a
/// kept vector allocated before another's window) inside another's window,
/// nor resets the peak under it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn counts_one_box_on_this_thread() {
    let _serial = serial();
    let before = thread_stats();
    let b = std::hint::black_box(Box::new([7u8; 100]));
    let mid = thread_stats();
    drop(b);
    let after = thread_stats();
    let d = before.delta(&mid);
    assert_eq!(d.allocs, 1);
    assert_eq!(d.alloc_bytes, 100);
    assert_eq!(d.live_bytes, 100);
    let d = before.delta(&after);
    assert_eq!((d.allocs, d.frees, d.live_bytes), (1, 1, 0));
    assert!(keel_alloc::is_installed());
}

#[test]
fn realloc_counts_as_alloc_and_free() {
    let _serial = serial();
    let mut v: Vec<u8> = Vec::with_capacity(16);
    v.push(1);
    let before = thread_stats();
    v.reserve_exact(1000);
    let d = before.delta(&thread_stats());
    assert_eq!((d.allocs, d.frees), (1, 1));
    assert_eq!(d.live_bytes, v.capacity() as i64 - 16);
}

#[test]
fn other_threads_are_not_attributed_to_this_one() {
    let _serial = serial();
    let before = thread_stats();
    let kept = std::thread::spawn(|| {
        let mut v = Vec::new();
        for i in 0..1000u32 {
            v.push(Box::new(i));
        }
        v
    })
    .join()
    .expect("thread");
    let d = before.delta(&thread_stats());
    // Spawning and joining a thread allocates a little here, but not the 1001
    // allocations the other thread made.
    assert!(d.allocs < 50, "{d:?}");
    // Freeing on this thread what the other allocated shows as negative live.
    let before = thread_stats();
    drop(kept);
    let d = before.delta(&thread_stats());
    assert_eq!(d.frees, 1001);
    assert!(d.live_bytes < -4000, "{d:?}");
}

#[test]
fn churn_thread_sees_flat_and_leaking_closures() {
    let _serial = serial();
    let flat = churn_thread(10, 10_000, |i| {
        let s = format!("{i}");
        std::hint::black_box(s);
    });
    assert_eq!(flat.iters, 10_000);
    assert_eq!(flat.allocs, 10_000);
    assert_eq!(flat.live_bytes, 0);
    assert!((flat.allocs_per_iter() - 1.0).abs() < 1e-9);

    let leak = churn_thread(0, 1_000, |_| {
        Box::leak(Box::new([0u64; 4]));
    });
    assert_eq!(leak.live_bytes, 32_000);
}

#[test]
fn process_wide_counts_and_peak_see_every_thread() {
    let _serial = serial();
    keel_alloc::reset_peak();
    let base_peak = keel_alloc::peak_bytes();
    // Four threads each hold 1 MiB at once, then free it.
    let d = churn(0, 1, |_| {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    let v = std::hint::black_box(vec![1u8; 1 << 20]);
                    b.wait();
                    drop(v);
                })
            })
            .collect();
        for h in hs {
            h.join().expect("thread");
        }
    });
    assert!(d.alloc_bytes >= 4 << 20, "{d:?}");
    assert!(d.live_bytes.abs() < 64 * 1024, "{d:?}");
    let peak = keel_alloc::peak_bytes();
    assert!(
        peak >= base_peak + (4 << 20) - 4 * keel_alloc::PEAK_GRANULE as u64,
        "peak {peak} base {base_peak}"
    );
    assert!(stats().live_bytes() > 0);
}

#[test]
fn a_large_free_does_not_hide_the_next_peak() {
    let _serial = serial();
    // On a thread of its own: its frees and allocations are what the
    // per-thread check sees.
    std::thread::spawn(|| {
        let big = vec![0u8; 8 << 20];
        drop(big);
        keel_alloc::reset_peak();
        let before = keel_alloc::live_bytes();
        // Growth far below what was just freed, far above the granule.
        let grown: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 16 * 1024]).collect();
        let top = keel_alloc::live_bytes();
        drop(grown);
        // Read after the growth is gone: only what the allocations reported
        // on their way up can account for the top.
        let reported = keel_alloc::peak_bytes();
        assert!(top >= before + 1024 * 1024);
        assert!(
            reported + keel_alloc::PEAK_GRANULE as u64 >= top,
            "peak {reported} B, top {top} B: growth after a free went unreported"
        );
    })
    .join()
    .expect("thread");
}

#[test]
fn process_counts_stay_exact_when_threads_outnumber_owned_sets() {
    let _serial = serial();
    // Three waves of 300 threads alive at once: more than the 256 counter
    // sets threads own, so some count in shared sets, and every wave's
    // threads take over the sets the last wave's gave back.
    const THREADS: usize = 300;
    const PAIRS: u64 = 1_000;
    let before = stats();
    let mut kept = Vec::new();
    for _ in 0..3 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    for i in 0..PAIRS {
                        drop(std::hint::black_box(Box::new(i)));
                    }
                    // Outlives the thread: its count must stay in the totals.
                    Box::new([0u8; 1000])
                })
            })
            .collect();
        kept.extend(hs.into_iter().map(|h| h.join().expect("thread")));
    }
    let d = before.delta(&stats());
    let threads = 3 * THREADS as u64;
    assert!(d.allocs >= threads * (PAIRS + 1), "{d:?}");
    assert!(d.frees >= threads * PAIRS, "{d:?}");
    // What the threads kept is live; spawning them left little else. The
    // test harness's own bookkeeping (its threads report other tests'
    // results meanwhile) may free a few bytes it allocated before.
    let kept_bytes = threads as i64 * 1000;
    assert!(d.live_bytes >= kept_bytes - 16 * 1024, "{d:?}");
    assert!(d.live_bytes < kept_bytes + 256 * 1024, "{d:?}");
    drop(kept);
    let d = before.delta(&stats());
    assert!(d.live_bytes.abs() < 256 * 1024, "{d:?}");
}

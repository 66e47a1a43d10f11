//! `release_free_memory` gives back what a burst freed in a thread's own
//! arena, once `keep_free_memory_releasable` has run and the thread noted
//! itself: glibc's `malloc_trim` alone never trims the top of an arena
//! other than the main one, and the bursts below leave their freed space
//! there (merged by the trim itself, or freed at the top of the heap).
//!
//! Alone in its binary, one test: resident size is the whole process's.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::alloc::{Layout, alloc, dealloc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

const PAIRS: usize = 4_000;
const LARGE: usize = 2_000;
const SMALL: usize = 48;
const BOUND: u64 = 1 << 20;

use keel_alloc::resident_bytes;

/// Allocates the burst on the calling thread, touching every byte, then
/// frees the large blocks and then the small ones, each in address order.
fn burst() -> u64 {
    let large = Layout::from_size_align(LARGE, 8).expect("layout");
    let small = Layout::from_size_align(SMALL, 8).expect("layout");
    let mut blocks: Vec<(*mut u8, *mut u8)> = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        // SAFETY: both layouts have a non-zero size.
        let (l, s) = unsafe { (alloc(large), alloc(small)) };
        assert!(!l.is_null() && !s.is_null(), "allocation failed");
        // SAFETY: each block is `LARGE` or `SMALL` bytes long.
        unsafe {
            l.write_bytes(0xa5, LARGE);
            s.write_bytes(0x5a, SMALL);
        }
        blocks.push((l, s));
    }
    let peak = resident_bytes();
    for &(l, _) in &blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { dealloc(l, large) };
    }
    for &(_, s) in &blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { dealloc(s, small) };
    }
    peak
}

/// One large block (under the 32 MiB mmap threshold, so from the heap),
/// touched, then freed: it ends as the top of the thread's arena.
fn large_block() -> u64 {
    let layout = Layout::from_size_align(8 << 20, 8).expect("layout");
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    assert!(!block.is_null(), "allocation failed");
    // SAFETY: the block is `layout.size()` bytes long.
    unsafe { block.write_bytes(0xa5, layout.size()) };
    let peak = resident_bytes();
    // SAFETY: allocated above with this layout, freed once.
    unsafe { dealloc(block, layout) };
    peak
}

/// Runs `burst` on a thread of its own (so in an arena other than the
/// main one) that noted itself, and releases free memory while that
/// thread still lives, or after it exited (`exit_first`); returns the RSS
/// before, at the burst's peak and after the release. The thread and the
/// test meet at a barrier, which allocates nothing on the thread.
fn run(burst: fn() -> u64, exit_first: bool) -> (u64, u64, u64) {
    let start = resident_bytes();
    let shared = Arc::new((Barrier::new(2), AtomicU64::new(0)));
    let theirs = Arc::clone(&shared);
    let thread = std::thread::spawn(move || {
        keel_alloc::note_thread();
        theirs.1.store(burst(), Ordering::Relaxed);
        theirs.0.wait();
        if !exit_first {
            // Alive until the release.
            theirs.0.wait();
        }
    });
    shared.0.wait();
    let peak = shared.1.load(Ordering::Relaxed);
    let mut thread = Some(thread);
    let mut join = || {
        if let Some(t) = thread.take() {
            t.join().expect("burst thread");
        }
    };
    if exit_first {
        join();
    }
    keel_alloc::release_free_memory();
    let after = resident_bytes();
    if !exit_first {
        shared.0.wait();
        join();
    }
    (start, peak, after)
}

#[test]
fn bursts_freed_in_a_noted_threads_arena_go_back() {
    assert!(keel_alloc::keep_free_memory_releasable());
    for exit_first in [false, true] {
        for (name, burst) in [
            (
                "small blocks with fastbins between them",
                burst as fn() -> u64,
            ),
            ("one 8 MiB block", large_block),
        ] {
            let (start, peak, after) = run(burst, exit_first);
            let name = format!("{name}, thread exited first: {exit_first}");
            println!("{name}: RSS start {start}, peak {peak}, after the release {after}");
            assert!(
                peak > start + 4 * BOUND,
                "{name}: the burst raised RSS (start {start}, peak {peak})"
            );
            assert!(
                after <= start + BOUND,
                "{name}: RSS {after} after the burst and the release, started at {start}"
            );
        }
    }
}

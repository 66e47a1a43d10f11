//! `release_free_memory` gives back what a burst freed in a thread's own
//! arena, once `keep_free_memory_releasable` has run: the burst below
//! leaves its freed space merged into that arena's top, which glibc's
//! `malloc_trim` alone never trims outside the main arena.
//!
//! Alone in its binary: resident size is the whole process's.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::alloc::{Layout, alloc, dealloc};

/// Blocks in the burst: each a large one (past the thread cache's sizes)
/// followed by a small one (a fastbin's size), about 8 MiB in all.
const PAIRS: usize = 4_000;
const LARGE: usize = 2_000;
const SMALL: usize = 48;
const BOUND: u64 = 1 << 20;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

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

#[test]
fn a_burst_freed_in_a_threads_arena_goes_back() {
    assert!(keel_alloc::keep_free_memory_releasable());
    let start = resident_bytes();
    // A thread of its own, so a fresh arena of its own (not the main one).
    let peak = std::thread::spawn(burst).join().expect("burst thread");
    keel_alloc::release_free_memory();
    let after = resident_bytes();
    println!("RSS start {start}, peak {peak}, after the release {after}");
    assert!(
        peak > start + 4 * BOUND,
        "the burst raised RSS (start {start}, peak {peak})"
    );
    assert!(
        after <= start + BOUND,
        "RSS {after} after the burst and the release, started at {start}"
    );
}

//! A fast per-thread random number generator and a 64-bit mixer.
//!
//! Random and power-of-two-choices balancers draw one or two numbers per
//! pick, from many threads at once: a shared generator would be a contended
//! cache line, so each thread has its own. The generator is wyrand (one
//! add and one 64×64→128 multiply per number; passes BigCrush and
//! PractRand), which is far more than load balancing needs and cheaper than
//! anything weaker worth having.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// wyrand's state; 0 until the thread's first draw seeds it.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// The next random 64-bit number of this thread's generator.
#[inline]
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = seed();
        }
        x = x.wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

/// A uniform number in `0..n` (`n > 0`), by Lemire's multiply-shift: the
/// bias is at most `n / 2^64`, far below anything a balancer could notice.
#[inline]
pub(crate) fn below(n: usize) -> usize {
    below_with(next_u64(), n as u64) as usize
}

/// A uniform number in `0..n` made from `r`, a uniform 64-bit number.
#[inline]
pub(crate) fn below_with(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

/// A seed that differs between threads and between processes: std's
/// per-process random hash keys, applied to a process-wide thread counter.
/// Never 0 (0 marks an unseeded thread).
#[cold]
fn seed() -> u64 {
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let n = THREADS.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one(n) | 1
}

/// splitmix64's finaliser: a bijection on `u64` in which every input bit
/// flips each output bit with probability close to 1/2. Spreads keys and
/// server hashes that differ in few bits (`1`, `2`, `3`; `10.0.0.1:80`,
/// `10.0.0.2:80`) over the whole ring.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [false; 7];
        for _ in 0..10_000 {
            let i = below(7);
            assert!(i < 7);
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
        assert_eq!(below_with(u64::MAX, 7), 6);
        assert_eq!(below_with(0, 7), 0);
    }

    #[test]
    fn threads_draw_different_streams() {
        let here: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| next_u64()).collect::<Vec<u64>>())
            .join()
            .expect("the drawing thread does not panic");
        assert_ne!(here, there);
    }

    #[test]
    fn mix64_spreads_neighbouring_inputs() {
        // Neighbouring inputs differ in about half of their output bits.
        for x in 0..1_000u64 {
            let d = (mix64(x) ^ mix64(x + 1)).count_ones();
            assert!((12..=52).contains(&d), "{x}: {d} bits differ");
        }
    }
}

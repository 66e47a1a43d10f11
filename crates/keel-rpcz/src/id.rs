//! Trace and span ids: a per-thread xorshift generator, no lock, no atomics.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

fn seed() -> u64 {
    // `RandomState` draws per-process random keys without allocating; mix in
    // the address of a thread-local so threads start apart.
    let mut h = RandomState::new().build_hasher();
    STATE.with(|s| h.write_usize(s as *const Cell<u64> as usize));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() | 1
}

/// A random `u64` from this thread's generator (xorshift64*).
#[inline]
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = seed();
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A fresh, non-zero id (0 means "none" on the wire).
#[inline]
pub fn new_id() -> u64 {
    loop {
        let v = next_u64();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = new_id();
            assert_ne!(id, 0);
            assert!(seen.insert(id));
        }
    }
}

//! The [`Reset`] hook: how a pooled object is cleaned on its way back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Clears an object for reuse while keeping what it allocated.
///
/// Runs every time a [`Pooled`](crate::Pooled) object returns to its pool, on
/// the thread that drops it, before the object becomes visible to anyone else.
/// A `Vec` clears its elements but keeps its capacity, so a span's annotation
/// buffer is reused without reallocating (like sharded-slab's `Clear`).
///
/// `reset` must leave the object holding no pooled objects of the same pool
/// (drop them here): a cached object is dropped for real when its block is
/// trimmed, and that must not need the pool.
///
/// Kept capacity is memory the pool holds on the object's behalf, so it is
/// bounded and counted (rule R7):
///
/// - `reset` should free capacity above what a typical use needs (a span
///   keeps at most 1 KiB of annotation buffer), so that one outsized use does
///   not stay big in the pool;
/// - [`heap_bytes`](Reset::heap_bytes) says how much heap the reset object
///   still owns beyond its slot, and the pool adds it to its statistics
///   ([`PoolStats::heap_bytes`](crate::PoolStats::heap_bytes)).
pub trait Reset {
    /// Makes `self` ready for the next user, keeping capacity (up to a bound
    /// of the type's choosing).
    fn reset(&mut self);

    /// Heap bytes this object owns beyond itself (buffer capacity), read
    /// once each time it returns to the pool, right after
    /// [`reset`](Reset::reset). Keep it O(1): the pool keeps a running sum of
    /// it over its free objects instead of walking them. The default, 0,
    /// suits objects that own no heap memory.
    fn heap_bytes(&self) -> usize {
        0
    }
}

impl<T> Reset for Vec<T> {
    fn reset(&mut self) {
        self.clear();
    }

    /// The buffer's capacity (elements' own heap memory is not counted: the
    /// vector is empty after `reset`).
    fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
    }
}

impl<T> Reset for VecDeque<T> {
    fn reset(&mut self) {
        self.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
    }
}

impl Reset for String {
    fn reset(&mut self) {
        self.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

impl<K, V, S> Reset for HashMap<K, V, S> {
    fn reset(&mut self) {
        self.clear();
    }

    /// An estimate: an entry and a control byte per bucket of capacity.
    fn heap_bytes(&self) -> usize {
        self.capacity() * (std::mem::size_of::<(K, V)>() + 1)
    }
}

impl<K, S> Reset for HashSet<K, S> {
    fn reset(&mut self) {
        self.clear();
    }

    /// An estimate, as for `HashMap`.
    fn heap_bytes(&self) -> usize {
        self.capacity() * (std::mem::size_of::<K>() + 1)
    }
}

impl<K, V> Reset for BTreeMap<K, V> {
    fn reset(&mut self) {
        self.clear();
    }
}

impl<T: Reset + ?Sized> Reset for Box<T> {
    fn reset(&mut self) {
        (**self).reset();
    }

    /// The box's own allocation and what the boxed value owns.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val::<T>(&**self) + (**self).heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_reset_keeps_capacity() {
        let mut v = Vec::with_capacity(100);
        v.extend(0..50);
        v.reset();
        assert!(v.is_empty());
        assert_eq!(v.capacity(), 100);
    }

    #[test]
    fn boxed_string_reset_keeps_capacity() {
        let mut s = Box::new(String::with_capacity(64));
        s.push_str("hello");
        s.reset();
        assert!(s.is_empty());
        assert!(s.capacity() >= 64);
        assert_eq!(s.heap_bytes(), std::mem::size_of::<String>() + s.capacity());
    }

    #[test]
    fn heap_bytes_counts_capacity() {
        let mut v: Vec<u32> = Vec::with_capacity(10);
        v.push(1);
        v.reset();
        assert_eq!(v.heap_bytes(), v.capacity() * 4);
        assert_eq!(BTreeMap::<u8, u8>::new().heap_bytes(), 0);
    }
}

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
pub trait Reset {
    /// Makes `self` ready for the next user, keeping capacity.
    fn reset(&mut self);
}

impl<T> Reset for Vec<T> {
    fn reset(&mut self) {
        self.clear();
    }
}

impl<T> Reset for VecDeque<T> {
    fn reset(&mut self) {
        self.clear();
    }
}

impl Reset for String {
    fn reset(&mut self) {
        self.clear();
    }
}

impl<K, V, S> Reset for HashMap<K, V, S> {
    fn reset(&mut self) {
        self.clear();
    }
}

impl<K, S> Reset for HashSet<K, S> {
    fn reset(&mut self) {
        self.clear();
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
    }
}

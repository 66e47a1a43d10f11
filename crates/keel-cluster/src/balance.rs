//! Load balancers: which server of a channel's current set a call goes to.
//!
//! PLACEHOLDER API (being implemented): the signatures below are the contract
//! the `keel` crate builds on.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What a balancer may know about one server. Implemented by keel's
/// invokers (and by plain structs in tests).
pub trait Candidate {
    /// Relative share under weighted balancers (0: never picked by them).
    fn weight(&self) -> u32;
    /// False while the server is isolated or closing: never picked then.
    fn usable(&self) -> bool;
    /// Calls in flight on the server now.
    fn in_flight(&self) -> u32;
    /// Recent average latency in microseconds (0 when unknown).
    fn latency_us(&self) -> u64;
    /// [`endpoint_hash`] of the server's address: the same in every
    /// process and channel, so consistent hashing agrees across them.
    fn hash(&self) -> u64;
}

/// Stable 64-bit hash of an endpoint address (the same in every process).
pub fn endpoint_hash(addr: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalancer {
    /// Each server in turn (`rr`).
    #[default]
    RoundRobin,
    /// In turn, in proportion to weights (`wrr`).
    WeightedRoundRobin,
    /// Uniformly at random (`random`).
    Random,
    /// At random, in proportion to weights (`wrandom`).
    WeightedRandom,
    /// Fewest calls in flight, ties broken by lower latency (`la`).
    LeastActive,
    /// The better of two random servers (`p2c`).
    PowerOfTwoChoices,
    /// Consistent hashing on the call's `hash_key` (`c_hash`).
    ConsistentHash,
}

/// A balancer built for one server set (rebuilt when the set changes).
#[derive(Debug)]
pub struct Picker {
    kind: LoadBalancer,
    next: AtomicUsize,
}

impl Picker {
    /// A picker of `kind` for `servers`.
    pub fn new<C: Candidate>(kind: LoadBalancer, servers: &[C]) -> Picker {
        let _ = servers;
        Picker {
            kind,
            next: AtomicUsize::new(0),
        }
    }

    /// The algorithm.
    pub fn kind(&self) -> LoadBalancer {
        self.kind
    }

    /// The index in `servers` (the same slice, in the same order, as given
    /// to [`Picker::new`]) of the server for the next call: never one that
    /// is not [`usable`](Candidate::usable) nor one for which
    /// `excluded(index)` is true; `None` when no server qualifies.
    /// `hash_key` matters only to consistent hashing.
    pub fn pick<C: Candidate>(
        &self,
        servers: &[C],
        hash_key: u64,
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let _ = hash_key;
        let n = servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| servers[i].usable() && !excluded(i))
    }

    /// `servers[index]`'s in-flight count or latency changed (called when
    /// a call on it starts and ends).
    pub fn feedback<C: Candidate>(&self, servers: &[C], index: usize) {
        let _ = (servers, index);
    }
}

//! Least active's index: a min segment tree of server loads.
//!
//! ```text
//!                       [1] min of all                 node k's children
//!                 /                 \                  are 2k and 2k+1;
//!           [2] min 0..4         [3] min 4..8          leaves are at
//!          /        \            /        \            size + i, padded
//!       [4]         [5]       [6]         [7]          to a power of two
//!      /   \       /   \     /   \       /   \         with u64::MAX
//!   [8]s0 [9]s1 [10]s2 [11]s3 [12]s4 [13]s5 [14]MAX [15]MAX
//! ```
//!
//! Each leaf holds a server's [`key`]: in-flight calls in the high 32 bits,
//! latency in the low 32, so comparing keys compares (in flight, latency)
//! lexicographically; `u64::MAX` for a server that is not usable. A pick
//! walks from the root towards the smaller child: log₂ n loads. Feedback
//! rewrites a leaf and the minima on its path to the root.
//!
//! Every node is an `AtomicU64` updated with relaxed loads and stores, with
//! no lock: two feedbacks racing on a common ancestor can leave it holding
//! a minimum one of them has already replaced, so the tree may briefly
//! point at a server that is no longer the least loaded. That costs one
//! slightly worse pick, never a wrong answer (the picked server is checked
//! to be usable and not excluded), and the next update on that path
//! recomputes the minima from the children again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Candidate;

/// A server's place in the tree: `(in_flight << 32) | latency_us`, the
/// latency capped at `u32::MAX - 1` µs (71 minutes) so that no usable
/// server's key equals the unusable mark, `u64::MAX`.
pub(super) fn key<C: Candidate>(server: &C) -> u64 {
    if !server.usable() {
        return u64::MAX;
    }
    let latency = server.latency_us().min(u64::from(u32::MAX) - 1);
    (u64::from(server.in_flight()) << 32) | latency
}

/// The tree (see the module documentation).
#[derive(Debug)]
pub(super) struct MinTree {
    /// Leaves: `servers.len()` rounded up to a power of two (at least 1).
    size: usize,
    /// `nodes[1]` is the root, `nodes[size + i]` server `i`'s leaf;
    /// `nodes[0]` is unused.
    nodes: Box<[AtomicU64]>,
}

impl MinTree {
    /// A tree of `servers`' current keys.
    pub(super) fn new<C: Candidate>(servers: &[C]) -> MinTree {
        let size = servers.len().next_power_of_two().max(1);
        let mut nodes = vec![u64::MAX; 2 * size];
        for (i, s) in servers.iter().enumerate() {
            nodes[size + i] = key(s);
        }
        for k in (1..size).rev() {
            nodes[k] = nodes[2 * k].min(nodes[2 * k + 1]);
        }
        MinTree {
            size,
            nodes: nodes.into_iter().map(AtomicU64::new).collect(),
        }
    }

    /// Sets leaf `i` (< the server count) to `key` and recomputes the
    /// minima on its path, storing only values that changed (so a
    /// feedback that changes nothing writes nothing shared).
    pub(super) fn set(&self, i: usize, key: u64) {
        let mut k = self.size + i;
        if self.nodes[k].load(Relaxed) != key {
            self.nodes[k].store(key, Relaxed);
        }
        while k > 1 {
            k /= 2;
            let min = self.nodes[2 * k]
                .load(Relaxed)
                .min(self.nodes[2 * k + 1].load(Relaxed));
            if self.nodes[k].load(Relaxed) != min {
                self.nodes[k].store(min, Relaxed);
            }
        }
    }

    /// The leaf with the smallest key, found from the root down; on equal
    /// children the bits of `coin` (one per level) choose, so that equally
    /// loaded servers share the calls rather than the leftmost taking them
    /// all. `None` when the root says no server is usable. The index may
    /// be a padding leaf (≥ the server count) if the tree is stale.
    pub(super) fn least(&self, mut coin: u64) -> Option<usize> {
        if self.nodes[1].load(Relaxed) == u64::MAX {
            return None;
        }
        let mut k = 1;
        while k < self.size {
            let left = self.nodes[2 * k].load(Relaxed);
            let right = self.nodes[2 * k + 1].load(Relaxed);
            let go_right = right < left || (right == left && coin & 1 == 1);
            k = 2 * k + usize::from(go_right);
            coin >>= 1;
        }
        Some(k - self.size)
    }

    /// Leaf `i`'s key as the tree has it.
    #[cfg(test)]
    pub(super) fn leaf(&self, i: usize) -> u64 {
        self.nodes[self.size + i].load(Relaxed)
    }

    /// The root: the smallest key in the tree.
    #[cfg(test)]
    pub(super) fn root(&self) -> u64 {
        self.nodes[1].load(Relaxed)
    }
}

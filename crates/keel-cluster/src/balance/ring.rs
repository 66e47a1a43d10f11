//! Consistent hashing's ring (ketama style).
//!
//! ```text
//!            0 ─────────────── point hashes, sorted ─────────────── 2^64
//!            │  b    a  c    a     b  a   c    b     a  c   b     │
//!                        ▲
//!            mix64(hash_key) lands here; the call goes to the first
//!            point at or after it (wrapping), here `c`, or on along the
//!            ring to the next server that is usable and not excluded
//! ```
//!
//! Each server of weight `w` owns `100 × w` points (scaled down when the
//! ring would exceed [`MAX_POINTS`]), at the outputs of a splitmix64
//! generator seeded with the server's [`hash`](super::Candidate::hash).
//! The points depend only on a server's own hash and weight, and the ring
//! is sorted by point (then by server hash), so the ring is the same
//! however the servers are ordered, and adding or removing one server only
//! moves the keys that fall on the arcs its points start: about `1/n`.

use super::Candidate;
use super::rng::mix64;

/// Points per unit of weight: enough for each server's share of keys to be
/// within about ±10% of its weight's share.
const POINTS_PER_WEIGHT: u64 = 100;

/// The ring's size limit: 2^18 points (4 MiB, plus a 256 KiB index). Weights
/// that would need more are scaled down in proportion, every nonzero-weight
/// server keeping at least one point. A server's points are the first `k`
/// outputs of its own generator, so when scaling changes `k` a little only
/// the few points gained or lost move keys.
pub(super) const MAX_POINTS: u64 = 1 << 18;

/// The `r`-th point of a server with hash `h`: the `r`-th output of a
/// splitmix64 generator seeded with `mix64(h)` (mixing the seed first keeps
/// the streams of servers whose hashes are close, even 1, 2, 3, apart).
fn point(h: u64, r: u64) -> u64 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    mix64(mix64(h).wrapping_add(GOLDEN.wrapping_mul(r + 1)))
}

/// One point of the ring and the index of the server owning it, side by
/// side so that a lookup touches one cache line, not two.
#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u64,
    owner: u32,
}

/// Most bits of a key the bucket index uses: 2^16 buckets (256 KiB) for
/// rings of 2^16 points and more.
const MAX_BUCKET_BITS: u32 = 16;

/// The ring: points sorted ascending, and an index of where each bucket
/// of the key space starts in it.
///
/// A lookup reads `buckets[key >> shift]` and `buckets[.. + 1]`, which
/// bound the points whose top bits equal the key's (about one per bucket:
/// there are about as many buckets as points), and binary-searches only
/// those: two or three cache misses at 2^18 points instead of a miss for
/// most of a full binary search's 18 steps.
#[derive(Debug)]
pub(super) struct Ring {
    points: Box<[Point]>,
    /// `buckets[b]`: the first position whose point's top `bits` bits are
    /// at least `b`; `buckets[2^bits] = points.len()`.
    buckets: Box<[u32]>,
    /// `64 - bits`, where `2^bits` is the number of buckets.
    shift: u32,
}

impl Ring {
    /// The ring of `servers` (servers of weight 0 get no points).
    pub(super) fn new<C: Candidate>(servers: &[C]) -> Ring {
        let wanted: u64 = servers
            .iter()
            .map(|s| u64::from(s.weight()) * POINTS_PER_WEIGHT)
            .sum();
        let count = |w: u32| -> u64 {
            if w == 0 {
                0
            } else if wanted <= MAX_POINTS {
                u64::from(w) * POINTS_PER_WEIGHT
            } else {
                let scaled = u128::from(w) * u128::from(POINTS_PER_WEIGHT) * u128::from(MAX_POINTS)
                    / u128::from(wanted);
                (scaled as u64).max(1)
            }
        };
        let total: u64 = servers.iter().map(|s| count(s.weight())).sum();
        let mut entries: Vec<(u64, u64, u32)> = Vec::with_capacity(total as usize);
        for (i, s) in servers.iter().enumerate() {
            let h = s.hash();
            let i = u32::try_from(i).expect("a server set has fewer than 2^32 servers");
            entries.extend((0..count(s.weight())).map(|r| (point(h, r), h, i)));
        }
        // Sorting by (point, server hash) makes the ring independent of the
        // servers' order; the index only breaks ties between duplicates.
        entries.sort_unstable();
        let points: Box<[Point]> = entries
            .iter()
            .map(|&(hash, _, owner)| Point { hash, owner })
            .collect();
        // About one point per bucket.
        let bits = (points.len().max(2) as u64)
            .next_power_of_two()
            .trailing_zeros()
            .min(MAX_BUCKET_BITS);
        let shift = 64 - bits;
        let mut buckets = Vec::with_capacity((1 << bits) + 1);
        let mut pos = 0;
        for b in 0..1u64 << bits {
            while pos < points.len() && points[pos].hash >> shift < b {
                pos += 1;
            }
            buckets.push(u32::try_from(pos).expect("at most MAX_POINTS points"));
        }
        buckets.push(u32::try_from(points.len()).expect("at most MAX_POINTS points"));
        Ring {
            points,
            buckets: buckets.into(),
            shift,
        }
    }

    /// Number of points.
    pub(super) fn len(&self) -> usize {
        self.points.len()
    }

    /// Where a walk for `key` (already mixed) starts: the first point at
    /// or after it, wrapping to 0 past the last. Requires a nonempty ring.
    pub(super) fn start(&self, key: u64) -> usize {
        let b = (key >> self.shift) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        // Points before `lo` are in lower buckets (< key); points from `hi`
        // on are in higher ones (> key): the answer is in lo..=hi.
        let i = lo + self.points[lo..hi].partition_point(|p| p.hash < key);
        if i == self.points.len() { 0 } else { i }
    }

    /// The server owning point `pos`.
    pub(super) fn owner(&self, pos: usize) -> usize {
        self.points[pos].owner as usize
    }

    /// The hash of point `pos`.
    #[cfg(test)]
    pub(super) fn point_hash(&self, pos: usize) -> u64 {
        self.points[pos].hash
    }

    /// Points per server index (for tests of the weight proportionality).
    #[cfg(test)]
    pub(super) fn points_of(&self, i: usize) -> usize {
        self.points.iter().filter(|p| p.owner as usize == i).count()
    }

    /// [`start`](Ring::start) by a binary search of the whole ring, to
    /// check the bucket index against.
    #[cfg(test)]
    pub(super) fn start_by_full_search(&self, key: u64) -> usize {
        let i = self.points.partition_point(|p| p.hash < key);
        if i == self.points.len() { 0 } else { i }
    }
}

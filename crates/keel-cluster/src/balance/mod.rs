//! Load balancers: which server of a channel's current set a call goes to.
//!
//! A [`Picker`] is built for one server set, when the set changes, and then
//! picks for every call, from many threads at once, through `&self`:
//!
//! ```text
//!   Picker::new(kind, &servers)      once per server set: precomputes the
//!        │                           schedule / prefix sums / tree / ring
//!        ▼
//!   Picker::pick(&servers, hash_key, excluded)        every call, any thread
//!   Picker::pick_again(..)          a retry or backup request of the call
//!        │  1. the balancer's choice: O(1) or O(log n), no allocation
//!        │  2. not usable or excluded? a few cheap alternatives
//!        │  3. still nothing? one pass over the servers
//!        ▼
//!   Some(index) ─ or None only when no server qualifies
//!
//!   Picker::feedback(&servers, index)   a call started or ended on a server
//!                                       (only least active keeps state)
//! ```
//!
//! | balancer | a pick | state |
//! |---|---|---|
//! | [`RoundRobin`](LoadBalancer::RoundRobin) | `counter % n` | one atomic counter |
//! | [`WeightedRoundRobin`](LoadBalancer::WeightedRoundRobin) | `cycle[counter % len]` | nginx's smooth order, precomputed |
//! | [`Random`](LoadBalancer::Random) | a uniform draw | none (a per-thread generator) |
//! | [`WeightedRandom`](LoadBalancer::WeightedRandom) | binary search of prefix sums | prefix sums of weights |
//! | [`LeastActive`](LoadBalancer::LeastActive) | descent of a min segment tree | a tree of `(in flight, latency)` keys |
//! | [`PowerOfTwoChoices`](LoadBalancer::PowerOfTwoChoices) | the better of two draws | none |
//! | [`ConsistentHash`](LoadBalancer::ConsistentHash) | binary search of a hash ring | a ketama ring, 100 points per unit of weight |
//!
//! Counters start at a random place, so clients rebuilt at the same moment
//! do not all send their first call to the same server.
//!
//! **Later attempts.** A call's first attempt takes the balancer's next
//! turn ([`Picker::pick`]); its retries and backup requests do not
//! ([`Picker::pick_again`]): round robin draws them uniformly, weighted
//! round robin draws a uniform place in its cycle (so in proportion to
//! weights), and the other balancers, which keep no sequence, choose as
//! for a first attempt. Were later attempts to take turns too, they would
//! skew the first ones: over two servers with backup requests on, a call
//! whose first attempt is slow takes two turns, so the next first attempt
//! goes to the same slow server, and then every one does.
//!
//! **Skipping.** A server that is not [`usable`](Candidate::usable), or
//! for which the caller's `excluded(index)` is true (a retry excluding the
//! servers already tried), is never picked. When the balancer's choice is
//! such a server, the picker tries a few alternatives the same balancer
//! would choose (the next entries of the cycle, further random draws, the
//! next servers clockwise on the ring), then scans every server starting
//! at a random one, so a pick returns `None` only when nothing qualifies.
//! Least active falls back to the least loaded qualifying server by a scan.
//!
//! **Weights.** The weighted balancers (weighted round robin, weighted
//! random, consistent hashing) never pick a server of weight 0, even when
//! every server has weight 0 (then they pick nothing: weight 0 is how an
//! operator drains a server, and draining them all means no calls). The
//! others ignore weights.
//!
//! **The slice.** `pick` and `feedback` must get the same servers, in the
//! same order, as `Picker::new` did. If the length differs anyway, `pick`
//! degrades to a uniform scan (still never an out-of-range index nor an
//! unqualified server) and `feedback` does nothing.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use keel_cluster::balance::{Candidate, LoadBalancer, Picker, endpoint_hash};
//!
//! struct Server { addr: &'static str, in_flight: AtomicU32 }
//!
//! impl Candidate for Server {
//!     fn weight(&self) -> u32 { 1 }
//!     fn usable(&self) -> bool { true }
//!     fn in_flight(&self) -> u32 { self.in_flight.load(Ordering::Relaxed) }
//!     fn latency_us(&self) -> u64 { 0 }
//!     fn hash(&self) -> u64 { endpoint_hash(self.addr) }
//! }
//!
//! let servers: Vec<Server> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
//!     .into_iter()
//!     .map(|addr| Server { addr, in_flight: AtomicU32::new(0) })
//!     .collect();
//! let picker = Picker::new(LoadBalancer::LeastActive, &servers);
//! servers[0].in_flight.store(5, Ordering::Relaxed);
//! servers[2].in_flight.store(1, Ordering::Relaxed);
//! picker.feedback(&servers, 0);
//! picker.feedback(&servers, 2);
//! assert_eq!(picker.pick(&servers, 0, |_| false), Some(1));
//! // A retry that excludes server 1 gets the next least loaded.
//! assert_eq!(picker.pick(&servers, 0, |i| i == 1), Some(2));
//! assert_eq!(picker.pick(&servers, 0, |_| true), None);
//! ```

mod ring;
mod rng;
mod schedule;
mod state;
mod tree;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use ring::Ring;
pub use state::ServerState;
use tree::MinTree;

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
///
/// FNV-1a over the address's bytes, finished with splitmix64's mixer:
/// FNV-1a alone leaves addresses that differ in one character (`...1:80`,
/// `...2:80`) close together. The function is part of the wire contract of
/// consistent hashing (every client must place a server at the same
/// points), so it must never change between releases.
pub fn endpoint_hash(addr: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    rng::mix64(h)
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

impl LoadBalancer {
    /// Every balancer, in declaration order.
    pub const ALL: [LoadBalancer; 7] = [
        LoadBalancer::RoundRobin,
        LoadBalancer::WeightedRoundRobin,
        LoadBalancer::Random,
        LoadBalancer::WeightedRandom,
        LoadBalancer::LeastActive,
        LoadBalancer::PowerOfTwoChoices,
        LoadBalancer::ConsistentHash,
    ];

    /// The short name used in configuration: `rr`, `wrr`, `random`,
    /// `wrandom`, `la`, `p2c` or `c_hash`.
    pub fn name(self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "rr",
            LoadBalancer::WeightedRoundRobin => "wrr",
            LoadBalancer::Random => "random",
            LoadBalancer::WeightedRandom => "wrandom",
            LoadBalancer::LeastActive => "la",
            LoadBalancer::PowerOfTwoChoices => "p2c",
            LoadBalancer::ConsistentHash => "c_hash",
        }
    }

    /// The balancer [`name`](LoadBalancer::name) names, if any.
    pub fn from_name(name: &str) -> Option<LoadBalancer> {
        LoadBalancer::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Alternatives tried, the same way the balancer chose, before scanning.
const PROBES: usize = 4;

/// Points consistent hashing walks past before checking that some server
/// qualifies at all (so that a set with none is not walked point by point).
const WALK_BEFORE_CHECK: usize = 32;

/// A counter on its own cache line(s): every pick writes it, and it must
/// not share a line with the read-mostly fields other threads read.
#[repr(align(128))]
#[derive(Debug)]
struct Counter(AtomicUsize);

impl Counter {
    /// A counter starting at a random place in `0..len`.
    fn random_start(len: usize) -> Counter {
        Counter(AtomicUsize::new(if len == 0 { 0 } else { rng::below(len) }))
    }

    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Whether a pick takes the balancer's turn (a first attempt) or leaves
/// the sequence where it is (a later attempt of the same call).
#[derive(Clone, Copy)]
enum Turn {
    Take,
    Leave,
}

/// Each balancer's precomputed state.
enum Algo {
    RoundRobin {
        next: Counter,
    },
    WeightedRoundRobin {
        next: Counter,
        /// One cycle of nginx's smooth order (empty when all weights are 0).
        cycle: Box<[u32]>,
        /// Indices of the servers of nonzero weight.
        members: Box<[u32]>,
    },
    Random,
    WeightedRandom {
        /// `prefix[k]`: the total weight of `members[..=k]`.
        prefix: Box<[u64]>,
        members: Box<[u32]>,
    },
    LeastActive {
        tree: MinTree,
    },
    PowerOfTwoChoices,
    ConsistentHash {
        ring: Ring,
        members: Box<[u32]>,
    },
}

/// A balancer built for one server set (rebuilt when the set changes).
///
/// `Send + Sync`: one picker serves every thread; picks never lock and
/// never allocate.
pub struct Picker {
    kind: LoadBalancer,
    /// The number of servers it was built for.
    len: usize,
    algo: Algo,
}

impl fmt::Debug for Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Picker");
        d.field("kind", &self.kind).field("servers", &self.len);
        match &self.algo {
            Algo::WeightedRoundRobin { cycle, .. } => d.field("cycle", &cycle.len()),
            Algo::ConsistentHash { ring, .. } => d.field("ring_points", &ring.len()),
            _ => &mut d,
        };
        d.finish()
    }
}

/// Indices of the servers of nonzero weight.
fn members<C: Candidate>(servers: &[C]) -> Box<[u32]> {
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.weight() > 0)
        .map(|(i, _)| u32::try_from(i).expect("a server set has fewer than 2^32 servers"))
        .collect()
}

impl Picker {
    /// A picker of `kind` for `servers`.
    ///
    /// Costs O(n) for most balancers, O(n log n) for least active's tree
    /// and consistent hashing's ring (100 points per unit of weight, at
    /// most 2^18), and O(cycle × n) for weighted round robin's cycle (the
    /// gcd-reduced total weight, at most 65,536).
    pub fn new<C: Candidate>(kind: LoadBalancer, servers: &[C]) -> Picker {
        let algo = match kind {
            LoadBalancer::RoundRobin => Algo::RoundRobin {
                next: Counter::random_start(servers.len()),
            },
            LoadBalancer::WeightedRoundRobin => {
                let weights: Vec<u32> = servers.iter().map(Candidate::weight).collect();
                let cycle: Box<[u32]> = schedule::smooth(&schedule::reduce(&weights)).into();
                Algo::WeightedRoundRobin {
                    next: Counter::random_start(cycle.len()),
                    cycle,
                    members: members(servers),
                }
            }
            LoadBalancer::Random => Algo::Random,
            LoadBalancer::WeightedRandom => {
                let members = members(servers);
                let prefix = members
                    .iter()
                    .scan(0u64, |sum, &i| {
                        *sum += u64::from(servers[i as usize].weight());
                        Some(*sum)
                    })
                    .collect();
                Algo::WeightedRandom { prefix, members }
            }
            LoadBalancer::LeastActive => Algo::LeastActive {
                tree: MinTree::new(servers),
            },
            LoadBalancer::PowerOfTwoChoices => Algo::PowerOfTwoChoices,
            LoadBalancer::ConsistentHash => Algo::ConsistentHash {
                ring: Ring::new(servers),
                members: members(servers),
            },
        };
        Picker {
            kind,
            len: servers.len(),
            algo,
        }
    }

    /// The algorithm.
    pub fn kind(&self) -> LoadBalancer {
        self.kind
    }

    /// The index in `servers` (the same slice, in the same order, as given
    /// to [`Picker::new`]) of the server for the next call's first attempt:
    /// never one that is not [`usable`](Candidate::usable) nor one for
    /// which `excluded(index)` is true; `None` when no server qualifies.
    /// `hash_key` matters only to consistent hashing. Takes the balancer's
    /// next turn (round robin's and weighted round robin's counter).
    pub fn pick<C: Candidate>(
        &self,
        servers: &[C],
        hash_key: u64,
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.choose(servers, hash_key, excluded, Turn::Take)
    }

    /// Like [`pick`](Picker::pick), for a later attempt of a call that
    /// already has one (a retry, a backup request; `excluded` usually
    /// names the servers it tried): chosen with the same weights, but
    /// without taking the balancer's turn, so that first attempts keep
    /// their sequence (see the [module docs](self)).
    pub fn pick_again<C: Candidate>(
        &self,
        servers: &[C],
        hash_key: u64,
        excluded: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.choose(servers, hash_key, excluded, Turn::Leave)
    }

    fn choose<C: Candidate>(
        &self,
        servers: &[C],
        hash_key: u64,
        excluded: impl Fn(usize) -> bool,
        turn: Turn,
    ) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        // Every index passed to `ok` is < n: the cycle, members, ring and
        // tree hold indices below `self.len`, which equals `n` past here.
        let ok = |i: usize| servers[i].usable() && !excluded(i);
        if n != self.len {
            return scan(n, &ok);
        }
        match &self.algo {
            Algo::RoundRobin { next } => {
                let i = match turn {
                    Turn::Take => next.next() % n,
                    Turn::Leave => rng::below(n),
                };
                if ok(i) {
                    return Some(i);
                }
                // Random alternatives rather than `i + 1`: the servers
                // after a skipped one do not inherit all of its share.
                (0..PROBES)
                    .map(|_| rng::below(n))
                    .find(|&i| ok(i))
                    .or_else(|| scan(n, &ok))
            }
            Algo::WeightedRoundRobin {
                next,
                cycle,
                members,
            } => {
                if cycle.is_empty() {
                    return None;
                }
                let c = match turn {
                    Turn::Take => next.next(),
                    Turn::Leave => rng::below(cycle.len()),
                };
                (0..=PROBES)
                    .map(|k| cycle[c.wrapping_add(k) % cycle.len()] as usize)
                    .find(|&i| ok(i))
                    .or_else(|| scan_members(members, &ok))
            }
            Algo::Random => (0..=PROBES)
                .map(|_| rng::below(n))
                .find(|&i| ok(i))
                .or_else(|| scan(n, &ok)),
            Algo::WeightedRandom { prefix, members } => {
                let &total = prefix.last()?;
                (0..=PROBES)
                    .map(|_| {
                        let r = rng::below_with(rng::next_u64(), total);
                        members[prefix.partition_point(|&p| p <= r)] as usize
                    })
                    .find(|&i| ok(i))
                    .or_else(|| scan_members(members, &ok))
            }
            Algo::LeastActive { tree } => least_active(tree, servers, &ok),
            Algo::PowerOfTwoChoices => two_choices(servers, &ok),
            Algo::ConsistentHash { ring, members } => {
                consistent_hash(ring, members, rng::mix64(hash_key), &ok)
            }
        }
    }

    /// `servers[index]`'s in-flight count or latency changed (called when
    /// a call on it starts and ends).
    ///
    /// Only least active keeps state: it recomputes the server's key and
    /// the minima above it, O(log n). Call it too when a server's
    /// usability changes (isolated, revived); if that is missed, picks
    /// still never return an unusable server, and one pick in eight
    /// refreshes a random server's key, so a revived server is found again
    /// within about 8n picks.
    pub fn feedback<C: Candidate>(&self, servers: &[C], index: usize) {
        if let Algo::LeastActive { tree } = &self.algo
            && servers.len() == self.len
            && let Some(server) = servers.get(index)
        {
            tree.set(index, tree::key(server));
        }
    }
}

/// The first qualifying server of a pass over `0..n` starting at a random
/// index (so that the fallback does not pile onto the lowest indices).
fn scan(n: usize, ok: &impl Fn(usize) -> bool) -> Option<usize> {
    let start = rng::below(n);
    (start..n).chain(0..start).find(|&i| ok(i))
}

/// [`scan`] over `members` only.
fn scan_members(members: &[u32], ok: &impl Fn(usize) -> bool) -> Option<usize> {
    if members.is_empty() {
        return None;
    }
    let start = rng::below(members.len());
    members[start..]
        .iter()
        .chain(&members[..start])
        .map(|&i| i as usize)
        .find(|&i| ok(i))
}

/// Least active: the tree's least loaded server, if it qualifies; a server
/// found no longer usable is marked so in the tree and the tree asked
/// again; otherwise (excluded, or a stale tree) the least loaded
/// qualifying server by a scan.
fn least_active<C: Candidate>(
    tree: &MinTree,
    servers: &[C],
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = servers.len();
    let coin = rng::next_u64();
    if coin >> 61 == 0 {
        // One pick in eight refreshes a random server's key (see
        // `Picker::feedback`); it writes only if the key changed.
        let j = rng::below(n);
        tree.set(j, tree::key(&servers[j]));
    }
    for attempt in 0..2 {
        match tree.least(coin >> attempt) {
            Some(i) if i < n => {
                if ok(i) {
                    return Some(i);
                }
                if servers[i].usable() {
                    break; // excluded: the tree cannot skip it
                }
                tree.set(i, u64::MAX);
            }
            _ => break,
        }
    }
    let start = rng::below(n);
    (start..n)
        .chain(0..start)
        .filter(|&i| ok(i))
        .min_by_key(|&i| tree::key(&servers[i]))
}

/// Power of two choices: two distinct random qualifying servers (replacing
/// draws that do not qualify a few times, then by a scan), the one with
/// fewer calls in flight, then lower latency; the first drawn on ties.
fn two_choices<C: Candidate>(servers: &[C], ok: &impl Fn(usize) -> bool) -> Option<usize> {
    let n = servers.len();
    if n == 1 {
        return ok(0).then_some(0);
    }
    let mut chosen = [usize::MAX; 2];
    let mut found = 0;
    for _ in 0..2 + PROBES {
        let i = if found == 0 {
            rng::below(n)
        } else {
            // Uniform over the others: skip the one already chosen.
            let j = rng::below(n - 1);
            j + usize::from(j >= chosen[0])
        };
        if ok(i) {
            chosen[found] = i;
            found += 1;
            if found == 2 {
                break;
            }
        }
    }
    if found < 2 {
        let start = rng::below(n);
        for i in (start..n).chain(0..start) {
            if i != chosen[0] && ok(i) {
                chosen[found] = i;
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
    }
    let load = |i: usize| (servers[i].in_flight(), servers[i].latency_us());
    match found {
        0 => None,
        1 => Some(chosen[0]),
        _ if load(chosen[1]) < load(chosen[0]) => Some(chosen[1]),
        _ => Some(chosen[0]),
    }
}

/// Consistent hashing: from the first point at or after `key`, clockwise,
/// the first server that qualifies.
fn consistent_hash(
    ring: &Ring,
    members: &[u32],
    key: u64,
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let len = ring.len();
    if len == 0 {
        return None;
    }
    let mut pos = ring.start(key);
    // A server owns runs of neighbouring points; ask about it once a run.
    let mut last_refused = usize::MAX;
    for step in 0..len {
        let i = ring.owner(pos);
        if i != last_refused {
            if ok(i) {
                return Some(i);
            }
            last_refused = i;
        }
        if step == WALK_BEFORE_CHECK && !members.iter().any(|&m| ok(m as usize)) {
            return None;
        }
        pos += 1;
        if pos == len {
            pos = 0;
        }
    }
    None
}

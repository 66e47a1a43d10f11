//! Balancer tests over fake servers: distributions, skipping, consistency.
//!
//! Tolerances are stated where they are used. Random balancers are checked
//! over 100,000 picks, where ±5% of an expected count of at least 10,000 is
//! five standard deviations or more (a false failure about once in a
//! million runs); consistent hashing is deterministic (fixed addresses and
//! keys), so its tolerances only say how far from the ideal it may be.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use super::*;

/// A server as a test controls it.
type Fake = ServerState;

fn addr(i: usize) -> String {
    format!("10.0.{}.{}:8000", i / 256, i % 256)
}

/// Servers `addr(0..)` with these weights.
fn weighted(weights: &[u32]) -> Vec<Fake> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Fake::new(&addr(i), w))
        .collect()
}

fn servers(n: usize) -> Vec<Fake> {
    weighted(&vec![1; n])
}

/// How often each index is picked in `picks` picks (keys 0, 1, 2, ...).
fn histogram(picker: &Picker, servers: &[Fake], picks: u64) -> Vec<u64> {
    let mut counts = vec![0u64; servers.len()];
    for key in 0..picks {
        let i = picker
            .pick(servers, key, |_| false)
            .expect("every server qualifies");
        counts[i] += 1;
    }
    counts
}

/// Asserts every count is within `tolerance` (relative) of its expected
/// share of the total.
fn assert_shares(counts: &[u64], shares: &[f64], tolerance: f64, what: &str) {
    let total: u64 = counts.iter().sum();
    let share_sum: f64 = shares.iter().sum();
    for (i, (&c, &s)) in counts.iter().zip(shares).enumerate() {
        let expected = total as f64 * s / share_sum;
        if expected == 0.0 {
            assert_eq!(c, 0, "{what}: server {i} has no share: {counts:?}");
        } else {
            let off = (c as f64 - expected).abs() / expected;
            assert!(
                off <= tolerance,
                "{what}: server {i} got {c}, expected {expected:.0} ±{:.0}%: {counts:?}",
                tolerance * 100.0
            );
        }
    }
}

/// A small deterministic generator for test scenarios (not the picker's).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const PICKS: u64 = 100_000;

// ---------------------------------------------------------------------------
// Names and hashes.
// ---------------------------------------------------------------------------

#[test]
fn names_round_trip() {
    let names: Vec<&str> = LoadBalancer::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(
        names,
        ["rr", "wrr", "random", "wrandom", "la", "p2c", "c_hash"]
    );
    for b in LoadBalancer::ALL {
        assert_eq!(LoadBalancer::from_name(b.name()), Some(b));
        assert_eq!(b.to_string(), b.name());
    }
    assert_eq!(LoadBalancer::from_name("RR"), None);
    assert_eq!(LoadBalancer::from_name(""), None);
}

#[test]
fn endpoint_hash_is_a_fixed_function_of_the_address() {
    // Pinned (value computed independently: FNV-1a 64, then splitmix64's
    // finaliser): consistent hashing agrees across processes and releases
    // only if this never changes.
    assert_eq!(endpoint_hash(""), rng::mix64(0xcbf2_9ce4_8422_2325));
    assert_eq!(endpoint_hash("10.0.0.1:8000"), 0x9201_c0ce_a293_f846);
    assert_eq!(
        endpoint_hash("10.0.0.1:8000"),
        endpoint_hash(&String::from("10.0.0.1:8000"))
    );
    // Neighbouring addresses are far apart.
    let (a, b) = (
        endpoint_hash("10.0.0.1:8000"),
        endpoint_hash("10.0.0.2:8000"),
    );
    assert!((a ^ b).count_ones() >= 16, "{a:x} {b:x}");
}

// ---------------------------------------------------------------------------
// Distributions.
// ---------------------------------------------------------------------------

#[test]
fn round_robin_is_exactly_even_and_in_turn() {
    for n in 2..=5 {
        let s = servers(n);
        let picker = Picker::new(LoadBalancer::RoundRobin, &s);
        let counts = histogram(&picker, &s, n as u64 * 20_000);
        assert!(counts.iter().all(|&c| c == 20_000), "n={n}: {counts:?}");
        let first = picker.pick(&s, 0, |_| false).expect("qualifies");
        for k in 1..3 * n {
            assert_eq!(picker.pick(&s, 0, |_| false), Some((first + k) % n));
        }
    }
}

/// The weight sets the weighted balancers are checked on (2 to 5 servers).
const WEIGHT_SETS: [&[u32]; 6] = [
    &[1, 1],
    &[3, 1],
    &[5, 1, 1],
    &[2, 3, 4],
    &[10, 20, 0, 40],
    &[1, 2, 3, 4, 5],
];

#[test]
fn weighted_round_robin_is_exact_per_cycle_and_smooth() {
    for weights in WEIGHT_SETS {
        let s = weighted(weights);
        let picker = Picker::new(LoadBalancer::WeightedRoundRobin, &s);
        let g = weights.iter().fold(0, |g, &w| schedule_gcd(g, w));
        let cycle_len: u32 = weights.iter().map(|w| w / g).sum();
        // Exact: any `cycles` whole cycles of picks, wherever the counter
        // starts, give each server weight/gcd picks per cycle.
        let cycles = 1_000;
        let counts = histogram(&picker, &s, u64::from(cycle_len) * cycles);
        let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w / g) * cycles).collect();
        assert_eq!(counts, expected, "weights {weights:?}");

        // Smooth: in every prefix of the cycle, each server's picks are
        // within one of its proportional share t·w/total (nginx's order;
        // the same cycle repeats, so no server waits long or bursts).
        let Algo::WeightedRoundRobin { cycle, .. } = &picker.algo else {
            unreachable!("a wrr picker")
        };
        assert_eq!(cycle.len(), cycle_len as usize);
        let total = f64::from(cycle_len);
        let mut seen = vec![0u32; weights.len()];
        for (t, &i) in cycle.iter().enumerate() {
            seen[i as usize] += 1;
            for (j, &w) in weights.iter().enumerate() {
                let share = (t + 1) as f64 * f64::from(w / g) / total;
                assert!(
                    (f64::from(seen[j]) - share).abs() < 1.0,
                    "weights {weights:?}: server {j} has {} picks after {} of {cycle:?}",
                    seen[j],
                    t + 1
                );
            }
        }
    }
}

#[test]
fn later_attempts_leave_first_attempts_in_turn() {
    // Every call's first attempt is followed by a later one (a backup
    // request or a retry) that avoids it: the first attempts still go
    // round exactly as without them.
    for weights in WEIGHT_SETS {
        let s = weighted(weights);
        let g = weights.iter().fold(0, |g, &w| schedule_gcd(g, w));
        for (kind, expected) in [
            (LoadBalancer::RoundRobin, vec![1_000; weights.len()]),
            (
                LoadBalancer::WeightedRoundRobin,
                weights.iter().map(|&w| u64::from(w / g) * 1_000).collect(),
            ),
        ] {
            let picker = Picker::new(kind, &s);
            let calls: u64 = expected.iter().sum();
            let mut first = vec![0u64; s.len()];
            let mut previous: Option<usize> = None;
            for key in 0..calls {
                let i = picker.pick(&s, key, |_| false).expect("qualifies");
                if kind == LoadBalancer::RoundRobin
                    && let Some(p) = previous
                {
                    assert_eq!(i, (p + 1) % s.len(), "{kind} {weights:?}: out of turn");
                }
                previous = Some(i);
                first[i] += 1;
                if let Some(again) = picker.pick_again(&s, key, |j| j == i) {
                    assert_ne!(again, i, "{kind} {weights:?}");
                }
            }
            assert_eq!(first, expected, "{kind} {weights:?}");
        }
    }
}

#[test]
fn later_attempts_follow_the_balancers_shares_within_5_percent() {
    for weights in WEIGHT_SETS {
        let s = weighted(weights);
        for (kind, shares) in [
            (LoadBalancer::RoundRobin, vec![1.0; weights.len()]),
            (
                LoadBalancer::WeightedRoundRobin,
                weights.iter().map(|&w| f64::from(w)).collect(),
            ),
        ] {
            let picker = Picker::new(kind, &s);
            let mut counts = vec![0u64; s.len()];
            for key in 0..PICKS {
                counts[picker.pick_again(&s, key, |_| false).expect("qualifies")] += 1;
            }
            assert_shares(&counts, &shares, 0.05, kind.name());
        }
    }
}

fn schedule_gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { schedule_gcd(b, a % b) }
}

#[test]
fn weighted_round_robin_scales_huge_weights() {
    let s = weighted(&[3_000_000, 1, 1_000_000]);
    let picker = Picker::new(LoadBalancer::WeightedRoundRobin, &s);
    let Algo::WeightedRoundRobin { cycle, .. } = &picker.algo else {
        unreachable!("a wrr picker")
    };
    assert!(
        cycle.len() as u64 <= schedule::MAX_CYCLE + 3,
        "{}",
        cycle.len()
    );
    let counts = histogram(&picker, &s, cycle.len() as u64);
    // The weight-1 server keeps a place; the others keep their 3:1.
    assert!(counts[1] >= 1, "{counts:?}");
    assert_shares(&[counts[0], counts[2]], &[3.0, 1.0], 0.001, "scaled wrr");
}

#[test]
fn random_is_uniform_within_5_percent() {
    for n in 2..=5 {
        let s = servers(n);
        let picker = Picker::new(LoadBalancer::Random, &s);
        let counts = histogram(&picker, &s, PICKS);
        assert_shares(&counts, &vec![1.0; n], 0.05, "random");
    }
}

#[test]
fn weighted_random_follows_weights_within_5_percent() {
    for weights in WEIGHT_SETS {
        let s = weighted(weights);
        let picker = Picker::new(LoadBalancer::WeightedRandom, &s);
        let counts = histogram(&picker, &s, PICKS);
        let shares: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
        assert_shares(&counts, &shares, 0.05, "wrandom");
    }
}

#[test]
fn weighted_balancers_never_pick_weight_zero_even_when_all_are_zero() {
    for kind in [
        LoadBalancer::WeightedRoundRobin,
        LoadBalancer::WeightedRandom,
        LoadBalancer::ConsistentHash,
    ] {
        let s = weighted(&[0, 2, 0]);
        let picker = Picker::new(kind, &s);
        for key in 0..1_000 {
            assert_eq!(picker.pick(&s, key, |_| false), Some(1), "{kind}");
            assert_eq!(picker.pick(&s, key, |i| i == 1), None, "{kind}");
        }
        let zero = weighted(&[0, 0]);
        let picker = Picker::new(kind, &zero);
        assert_eq!(picker.pick(&zero, 7, |_| false), None, "{kind}");
    }
}

/// Sets random loads with many ties (in flight and latency in 0..3) and
/// tells the picker.
fn scramble(s: &[Fake], picker: &Picker, rng: &mut Lcg) {
    for (i, server) in s.iter().enumerate() {
        server.load(rng.below(3) as u32, rng.below(3));
        picker.feedback(s, i);
    }
}

fn load_of(s: &Fake) -> (u32, u64) {
    (s.in_flight(), s.latency_us())
}

#[test]
fn least_active_always_picks_a_least_loaded_server() {
    let mut rng = Lcg(7);
    for n in [1, 2, 3, 5, 8, 13] {
        let s = servers(n);
        let picker = Picker::new(LoadBalancer::LeastActive, &s);
        for _ in 0..200 {
            scramble(&s, &picker, &mut rng);
            let best = s.iter().map(load_of).min().expect("n >= 1");
            for _ in 0..10 {
                let i = picker.pick(&s, 0, |_| false).expect("all usable");
                assert_eq!(load_of(&s[i]), best, "n={n}: picked {i} of {s:?}");
            }
        }
    }
}

#[test]
fn least_active_breaks_ties_by_latency_and_spreads_exact_ties() {
    let s = servers(4);
    let picker = Picker::new(LoadBalancer::LeastActive, &s);
    // Fewer in flight beats lower latency.
    for (i, (f, l)) in [(2, 10), (1, 900), (1, 500), (3, 1)]
        .into_iter()
        .enumerate()
    {
        s[i].load(f, l);
        picker.feedback(&s, i);
    }
    for _ in 0..100 {
        assert_eq!(picker.pick(&s, 0, |_| false), Some(2));
    }
    // Equal in flight: lower latency wins.
    s[1].load(1, 400);
    picker.feedback(&s, 1);
    assert_eq!(picker.pick(&s, 0, |_| false), Some(1));
    // Exact ties are shared out, not always the leftmost.
    for i in 0..4 {
        s[i].load(0, 0);
        picker.feedback(&s, i);
    }
    let counts = histogram(&picker, &s, 4_000);
    assert!(counts.iter().all(|&c| c > 500), "{counts:?}");
}

#[test]
fn least_active_tree_matches_the_servers_after_feedback() {
    let mut rng = Lcg(11);
    let s = servers(37);
    let picker = Picker::new(LoadBalancer::LeastActive, &s);
    let Algo::LeastActive { tree } = &picker.algo else {
        unreachable!("a la picker")
    };
    for _ in 0..50 {
        scramble(&s, &picker, &mut rng);
        let down = rng.below(37) as usize;
        s[down].usable.store(false, Relaxed);
        picker.feedback(&s, down);
        for (i, server) in s.iter().enumerate() {
            assert_eq!(tree.leaf(i), tree::key(server));
        }
        assert_eq!(tree.leaf(down), u64::MAX);
        assert_eq!(tree.root(), s.iter().map(tree::key).min().expect("37"));
        s[down].usable.store(true, Relaxed);
        picker.feedback(&s, down);
    }
}

#[test]
fn least_active_copes_with_missed_feedback() {
    let s = servers(4);
    let picker = Picker::new(LoadBalancer::LeastActive, &s);
    s[1].load(5, 0);
    s[2].load(5, 0);
    s[3].load(5, 0);
    for i in 1..4 {
        picker.feedback(&s, i);
    }
    assert_eq!(picker.pick(&s, 0, |_| false), Some(0));
    // Server 0 goes down and nobody says so: it is never picked.
    s[0].usable.store(false, Relaxed);
    for _ in 0..100 {
        assert_ne!(picker.pick(&s, 0, |_| false), Some(0));
    }
    // It comes back and nobody says so: the refresh sweep finds it
    // (one pick in eight refreshes one of 4 servers: ~32 picks).
    s[0].usable.store(true, Relaxed);
    let back = (0..10_000).position(|_| picker.pick(&s, 0, |_| false) == Some(0));
    assert!(back.is_some(), "server 0 never came back");
}

#[test]
fn p2c_never_picks_the_most_loaded_server() {
    let mut rng = Lcg(3);
    for n in 3..=6 {
        let s = servers(n);
        let picker = Picker::new(LoadBalancer::PowerOfTwoChoices, &s);
        for _ in 0..50 {
            let worst = rng.below(n as u64) as usize;
            for (i, server) in s.iter().enumerate() {
                let f = if i == worst { 10 } else { rng.below(10) as u32 };
                server.load(f, rng.below(100));
            }
            for _ in 0..200 {
                let i = picker.pick(&s, 0, |_| false).expect("all usable");
                assert_ne!(i, worst, "n={n}: {s:?}");
            }
        }
    }
}

#[test]
fn p2c_prefers_lower_load_in_the_expected_proportions() {
    // Loads 0 < 1 < 2 < 3 < 4 in flight. A uniformly random distinct pair
    // includes server k and a more loaded one in (4 - k) of the 10 pairs:
    // shares 40%, 30%, 20%, 10%, 0%; within ±5% relative.
    let s = servers(5);
    for (i, server) in s.iter().enumerate() {
        server.load(i as u32, 0);
    }
    let picker = Picker::new(LoadBalancer::PowerOfTwoChoices, &s);
    let counts = histogram(&picker, &s, PICKS);
    assert_shares(&counts, &[4.0, 3.0, 2.0, 1.0, 0.0], 0.05, "p2c");
    // Latency breaks ties in flight.
    s[0].load(1, 50);
    s[1].load(1, 10);
    let s2 = &s[..2];
    let picker = Picker::new(LoadBalancer::PowerOfTwoChoices, s2);
    assert!((0..100).all(|_| picker.pick(s2, 0, |_| false) == Some(1)));
}

// ---------------------------------------------------------------------------
// Consistent hashing.
// ---------------------------------------------------------------------------

/// The address each key maps to.
fn owners(s: &[Fake], keys: u64, exclude: impl Fn(usize) -> bool + Copy) -> Vec<u64> {
    let picker = Picker::new(LoadBalancer::ConsistentHash, s);
    (0..keys)
        .map(|k| s[picker.pick(s, k, exclude).expect("some server qualifies")].hash)
        .collect()
}

#[test]
fn consistent_hash_adding_one_server_moves_about_one_in_n_plus_1_keys() {
    // With 100 points per server each server's share is within about ±10%
    // of 1/n (one standard deviation); the moved fraction must be within
    // ±40% (relative) of the ideal 1/(N+1), and every moved key must move
    // to the new server.
    for n in 4..=10 {
        let before = owners(&servers(n), PICKS, |_| false);
        let grown = servers(n + 1);
        let after = owners(&grown, PICKS, |_| false);
        let newcomer = grown[n].hash;
        let mut moved = 0u64;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, newcomer, "n={n}: a key moved between old servers");
                moved += 1;
            }
        }
        let ideal = PICKS as f64 / (n + 1) as f64;
        let off = (moved as f64 - ideal).abs() / ideal;
        assert!(off <= 0.4, "n={n}: {moved} keys moved, ideal {ideal:.0}");
    }
}

#[test]
fn consistent_hash_removing_a_server_moves_only_its_keys() {
    for n in 4..=10 {
        let all = servers(n);
        let before = owners(&all, PICKS, |_| false);
        let gone = all[n / 2].hash;
        let rest: Vec<Fake> = (0..n)
            .filter(|&i| i != n / 2)
            .map(|i| Fake::new(&addr(i), 1))
            .collect();
        let after = owners(&rest, PICKS, |_| false);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == gone {
                moved += 1;
            } else {
                assert_eq!(b, a, "n={n}: a key of a kept server moved");
            }
        }
        assert!(moved > 0);
    }
}

#[test]
fn consistent_hash_ignores_the_order_of_the_servers() {
    let weights = [1, 3, 2, 1, 1, 2, 1];
    let forward = weighted(&weights);
    // The same endpoints and weights, reversed and rotated.
    let mut order: Vec<usize> = (0..weights.len()).rev().collect();
    order.rotate_left(3);
    let shuffled: Vec<Fake> = order
        .iter()
        .map(|&i| Fake::new(&addr(i), weights[i]))
        .collect();
    assert_eq!(
        owners(&forward, PICKS, |_| false),
        owners(&shuffled, PICKS, |_| false)
    );
    // Excluding the same endpoint in both excludes consistently too.
    let excluded_hash = forward[1].hash;
    let forward_excl = owners(&forward, 10_000, |i| i == 1);
    let pos = shuffled
        .iter()
        .position(|s| s.hash == excluded_hash)
        .expect("present");
    assert_eq!(forward_excl, owners(&shuffled, 10_000, |i| i == pos));
    assert!(!forward_excl.contains(&excluded_hash));
}

#[test]
fn consistent_hash_shares_follow_weights() {
    // 100 points per unit of weight; key shares within ±25% (relative) of
    // the weight shares for these (fixed) addresses.
    for weights in WEIGHT_SETS {
        let s = weighted(weights);
        let picker = Picker::new(LoadBalancer::ConsistentHash, &s);
        let Algo::ConsistentHash { ring, .. } = &picker.algo else {
            unreachable!("a c_hash picker")
        };
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(ring.points_of(i), 100 * w as usize);
        }
        let counts = histogram(&picker, &s, PICKS);
        let shares: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
        assert_shares(&counts, &shares, 0.25, "c_hash");
    }
}

#[test]
fn consistent_hash_falls_through_to_the_next_server_clockwise() {
    let s = servers(6);
    let picker = Picker::new(LoadBalancer::ConsistentHash, &s);
    let Algo::ConsistentHash { ring, .. } = &picker.algo else {
        unreachable!("a c_hash picker")
    };
    for key in 0..5_000u64 {
        let first = picker.pick(&s, key, |_| false).expect("all usable");
        // The next distinct owner clockwise from the key's point.
        let start = ring.start(rng::mix64(key));
        let next = (0..ring.len())
            .map(|k| ring.owner((start + k) % ring.len()))
            .find(|&o| o != first)
            .expect("6 servers");
        assert_eq!(picker.pick(&s, key, |i| i == first), Some(next));
        s[first].usable.store(false, Relaxed);
        assert_eq!(picker.pick(&s, key, |_| false), Some(next));
        s[first].usable.store(true, Relaxed);
    }
}

#[test]
fn ring_bucket_index_agrees_with_a_full_search() {
    for weights in [
        vec![1],
        vec![1, 2],
        vec![3; 10],
        vec![1; 700],
        vec![4; 1_000],
    ] {
        let s = weighted(&weights);
        let ring = Ring::new(&s);
        let mut keys = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
        for pos in [0, 1, ring.len() / 2, ring.len() - 1] {
            let p = ring.point_hash(pos);
            keys.extend([p, p.wrapping_sub(1), p.wrapping_add(1)]);
        }
        keys.extend((0..20_000).map(rng::mix64));
        for key in keys {
            assert_eq!(
                ring.start(key),
                ring.start_by_full_search(key),
                "{} points, key {key:x}",
                ring.len()
            );
        }
    }
}

#[test]
fn consistent_hash_rings_are_capped_in_proportion() {
    let s = weighted(&[u32::MAX, 1, u32::MAX / 2]);
    let picker = Picker::new(LoadBalancer::ConsistentHash, &s);
    let Algo::ConsistentHash { ring, .. } = &picker.algo else {
        unreachable!("a c_hash picker")
    };
    assert!(ring.len() as u64 <= ring::MAX_POINTS + 3, "{}", ring.len());
    assert_eq!(ring.points_of(1), 1);
    let (a, c) = (ring.points_of(0) as i64, ring.points_of(2) as i64);
    assert!((a - 2 * c).abs() <= 2, "{a} {c}");
}

// ---------------------------------------------------------------------------
// Skipping, for every balancer.
// ---------------------------------------------------------------------------

#[test]
fn unusable_and_excluded_servers_are_never_picked() {
    let mut rng = Lcg(42);
    for kind in LoadBalancer::ALL {
        for n in 1..=7 {
            let s = servers(n);
            let picker = Picker::new(kind, &s);
            for round in 0..300 {
                // Roughly half the servers down or excluded; sometimes all.
                let mut excluded = vec![false; n];
                for (i, server) in s.iter().enumerate() {
                    server.usable.store(rng.below(4) != 0, Relaxed);
                    excluded[i] = rng.below(3) == 0;
                    server.load(rng.below(4) as u32, rng.below(4));
                    picker.feedback(&s, i);
                }
                let qualifying: Vec<usize> =
                    (0..n).filter(|&i| s[i].usable() && !excluded[i]).collect();
                for key in 0..20 {
                    let key = key + round * 20;
                    let first = picker.pick(&s, key, |i| excluded[i]);
                    let again = picker.pick_again(&s, key, |i| excluded[i]);
                    for got in [first, again] {
                        match got {
                            Some(i) => assert!(
                                qualifying.contains(&i),
                                "{kind}, n={n}: picked {i}, qualifying {qualifying:?}"
                            ),
                            None => assert!(
                                qualifying.is_empty(),
                                "{kind}, n={n}: None, qualifying {qualifying:?}"
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn skipped_servers_are_found_even_among_many() {
    // One qualifying server among 1,000: found by every balancer (probes
    // fail, the fallback finds it).
    let s = servers(1_000);
    for server in &s {
        server.usable.store(false, Relaxed);
    }
    s[617].usable.store(true, Relaxed);
    s[618].usable.store(true, Relaxed);
    for kind in LoadBalancer::ALL {
        let picker = Picker::new(kind, &s);
        for key in 0..50 {
            assert_eq!(picker.pick(&s, key, |i| i == 618), Some(617), "{kind}");
            assert_eq!(picker.pick(&s, key, |i| i >= 617), None, "{kind}");
        }
    }
}

#[test]
fn one_server_and_no_servers() {
    let one = servers(1);
    let none: Vec<Fake> = Vec::new();
    for kind in LoadBalancer::ALL {
        let picker = Picker::new(kind, &one);
        assert_eq!(picker.kind(), kind);
        for key in 0..10 {
            assert_eq!(picker.pick(&one, key, |_| false), Some(0), "{kind}");
            assert_eq!(picker.pick(&one, key, |_| true), None, "{kind}");
        }
        picker.feedback(&one, 0);
        one[0].usable.store(false, Relaxed);
        picker.feedback(&one, 0);
        assert_eq!(picker.pick(&one, 1, |_| false), None, "{kind}");
        one[0].usable.store(true, Relaxed);
        picker.feedback(&one, 0);

        let empty = Picker::new(kind, &none);
        assert_eq!(empty.pick(&none, 1, |_| false), None, "{kind}");
        empty.feedback(&none, 0);
    }
}

#[test]
fn a_slice_of_another_length_is_still_answered_safely() {
    let three = servers(3);
    let five = servers(5);
    for kind in LoadBalancer::ALL {
        let picker = Picker::new(kind, &three);
        for key in 0..100 {
            let i = picker.pick(&five, key, |i| i == 0).expect("4 qualify");
            assert!((1..5).contains(&i), "{kind}: {i}");
        }
        picker.feedback(&five, 4);
        picker.feedback(&three, 99);
    }
}

// ---------------------------------------------------------------------------
// Concurrency.
// ---------------------------------------------------------------------------

#[test]
fn pickers_are_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Picker>();
}

#[test]
fn concurrent_calls_keep_least_active_sound() {
    // Two threads run calls (pick, in flight + 1, feedback, in flight - 1,
    // feedback) for a bounded number of iterations; picks stay valid, and
    // once quiet, feedback on every server leaves the tree exact.
    let s = servers(9);
    s[4].usable.store(false, Relaxed);
    let picker = Picker::new(LoadBalancer::LeastActive, &s);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut per_server: HashMap<usize, u32> = HashMap::new();
                for _ in 0..20_000 {
                    let i = picker.pick(&s, 0, |_| false).expect("8 usable");
                    assert_ne!(i, 4);
                    *per_server.entry(i).or_default() += 1;
                    s[i].in_flight.fetch_add(1, Relaxed);
                    picker.feedback(&s, i);
                    s[i].in_flight.fetch_sub(1, Relaxed);
                    picker.feedback(&s, i);
                }
                // Load was spread, not stuck on one server.
                assert!(per_server.len() >= 4, "{per_server:?}");
            });
        }
    });
    let Algo::LeastActive { tree } = &picker.algo else {
        unreachable!("a la picker")
    };
    for i in 0..s.len() {
        picker.feedback(&s, i);
    }
    for (i, server) in s.iter().enumerate() {
        assert_eq!(tree.leaf(i), tree::key(server));
    }
    assert_eq!(tree.root(), 0);
}

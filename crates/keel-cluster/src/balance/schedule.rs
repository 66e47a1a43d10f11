//! Weighted round robin's schedule: nginx's smooth order, computed once.
//!
//! nginx's smooth weighted round robin keeps a `current` value per server;
//! each step adds every server's weight to its `current`, picks the server
//! with the largest `current` (the first one on ties) and subtracts the
//! total weight from it. Over `total` steps each server is picked exactly
//! `weight` times, and the picks are spread out: weights 5, 1, 1 give
//! `a a b a c a a`, not `a a a a a b c`.
//!
//! The order depends only on the weights, so a [`Picker`](super::Picker)
//! computes one cycle when it is built and a pick is one array read at an
//! atomic counter, instead of a lock around the `current` values.

/// The longest cycle: weights whose (gcd-reduced) total is larger are
/// scaled down proportionally to fit.
pub(super) const MAX_CYCLE: u64 = 65_536;

/// The weights a schedule is built from: divided by their greatest common
/// divisor, then, if their total still exceeds [`MAX_CYCLE`], scaled down
/// proportionally with every nonzero weight kept at least 1 (and reduced
/// again). Zero stays zero.
pub(super) fn reduce(weights: &[u32]) -> Vec<u64> {
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x)).collect();
    divide_by_gcd(&mut w);
    let total: u64 = w.iter().sum();
    if total > MAX_CYCLE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            // u128: a weight times MAX_CYCLE can exceed u64 for huge sets.
            let scaled = u128::from(*x) * u128::from(MAX_CYCLE) / u128::from(total);
            *x = (scaled as u64).max(1);
        }
        divide_by_gcd(&mut w);
    }
    w
}

fn divide_by_gcd(w: &mut [u64]) {
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g > 1 {
        for x in w.iter_mut() {
            *x /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One cycle of nginx's smooth weighted round robin over `weights` (as
/// [`reduce`] returns them): `sum(weights)` server indices, each index `i`
/// appearing `weights[i]` times. Empty when every weight is 0.
///
/// Costs `sum(weights) × servers` steps: at most [`MAX_CYCLE`] × n, paid
/// once per server set, never per pick: about 2 ms for a thousand servers
/// of weights 1 to 4, about 40 ms in the worst case of a thousand servers
/// whose reduced weights total more than 65,536.
pub(super) fn smooth(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let total_i = i64::try_from(total).expect("reduce() keeps the total near MAX_CYCLE");
    let (ids, ws): (Vec<u32>, Vec<i64>) = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, &w)| {
            (
                u32::try_from(i).expect("a server set has fewer than 2^32 servers"),
                w as i64,
            )
        })
        .unzip();
    let mut current = vec![0i64; ws.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let (mut best, mut best_current) = (0, i64::MIN);
        for (k, (c, &w)) in current.iter_mut().zip(&ws).enumerate() {
            *c += w;
            // Strictly greater: the first server wins ties, as in nginx.
            if *c > best_current {
                (best, best_current) = (k, *c);
            }
        }
        current[best] -= total_i;
        cycle.push(ids[best]);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nginx_example() {
        // nginx's own example: weights 5, 1, 1.
        assert_eq!(smooth(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        assert_eq!(reduce(&[30, 20, 0, 10]), vec![3, 2, 0, 1]);
        assert_eq!(reduce(&[0, 0]), vec![0, 0]);
        assert_eq!(reduce(&[7]), vec![1]);
    }

    #[test]
    fn large_totals_are_scaled_down_keeping_every_server() {
        let w = reduce(&[1_000_000, 1, 500_000, 0]);
        let total: u64 = w.iter().sum();
        assert!(total <= MAX_CYCLE + 4, "{w:?}");
        assert!(w[1] >= 1 && w[3] == 0, "{w:?}");
        // The big weights keep their 2:1 ratio to within a unit.
        assert!((w[0] as i64 - 2 * w[2] as i64).abs() <= 2, "{w:?}");
        assert_eq!(smooth(&w).len() as u64, total);
    }
}

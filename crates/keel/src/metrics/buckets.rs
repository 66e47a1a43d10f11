//! A small lock-free latency histogram for per-method statistics: recorded
//! on every call by any thread, read by the console.
//!
//! Values are microseconds. Below 8 each value has its own bucket; above,
//! each power of two is split into 4 buckets, so a quantile is reported
//! within a quarter of itself. 144 counters (1,152 bytes) cover up to 2^36
//! µs (19 hours); longer latencies count in the last bucket. Recording is
//! two relaxed atomic adds (and a `fetch_max` for a new maximum); nothing
//! allocates.
//!
//! Bucket bounds that are powers of four are Prometheus's `le` buckets
//! ([`PROMETHEUS_BOUNDS`]), so the exposition is exact, not interpolated.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SUB: usize = 4;
const LINEAR: u64 = 2 * SUB as u64;
/// Buckets of a histogram.
pub const BUCKETS: usize = LINEAR as usize + 34 * SUB;

/// The bucket of `micros`.
fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let bits = 63 - micros.leading_zeros() as usize; // >= 3
    let shift = bits - 2;
    let mantissa = (micros >> shift) as usize; // 4..=7
    (LINEAR as usize + (shift - 1) * SUB + (mantissa - SUB)).min(BUCKETS - 1)
}

/// The largest value (µs) bucket `b` holds.
fn bucket_high(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let rel = b - LINEAR as usize;
    let shift = rel / SUB + 1;
    let mantissa = (rel % SUB + SUB) as u64;
    ((mantissa + 1) << shift) - 1
}

/// Upper bounds (µs, inclusive) of the cumulative buckets the Prometheus
/// exposition reports: 4^k µs from 4 µs to about 67 s. Each is the top of
/// a bucket here, so counts at them are exact.
pub const PROMETHEUS_BOUNDS: [u64; 13] = [
    3, 15, 63, 255, 1_023, 4_095, 16_383, 65_535, 262_143, 1_048_575, 4_194_303, 16_777_215,
    67_108_863,
];

/// Latencies of one method, recorded concurrently.
#[derive(Debug)]
pub struct AtomicBuckets {
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for AtomicBuckets {
    fn default() -> Self {
        AtomicBuckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl AtomicBuckets {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
        // A new maximum is rare: a load first keeps the line shared
        // between the threads recording, where `fetch_max` alone would
        // write it (a locked compare-exchange) every time.
        if micros > self.max_micros.load(Relaxed) {
            self.max_micros.fetch_max(micros, Relaxed);
        }
    }

    /// Copies the counts into `into` (no allocation when `into` is reused).
    pub fn snapshot_into(&self, into: &mut Buckets) {
        for (to, from) in into.counts.iter_mut().zip(&self.counts) {
            *to = from.load(Relaxed);
        }
        into.sum_micros = self.sum_micros.load(Relaxed);
        into.max_micros = self.max_micros.load(Relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> Buckets {
        let mut b = Buckets::default();
        self.snapshot_into(&mut b);
        b
    }
}

/// A point-in-time copy of an [`AtomicBuckets`], or the difference of two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    counts: [u64; BUCKETS],
    /// Sum of the recorded latencies, µs.
    pub sum_micros: u64,
    /// The largest recorded latency, µs (of all time: a difference keeps
    /// the later maximum).
    pub max_micros: u64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            counts: [0; BUCKETS],
            sum_micros: 0,
            max_micros: 0,
        }
    }
}

impl Buckets {
    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was recorded after `earlier` (an older snapshot of the same
    /// histogram), written into `into`.
    pub fn since_into(&self, earlier: &Buckets, into: &mut Buckets) {
        for ((to, now), then) in into
            .counts
            .iter_mut()
            .zip(&self.counts)
            .zip(&earlier.counts)
        {
            *to = now.saturating_sub(*then);
        }
        into.sum_micros = self.sum_micros.saturating_sub(earlier.sum_micros);
        // The maximum of the interval is the largest bucket that grew.
        into.max_micros = into
            .counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0, |b| bucket_high(b).min(self.max_micros));
    }

    /// The latency (µs) below which a fraction `q` of the recorded ones
    /// fall (reported as its bucket's upper bound, capped at the maximum);
    /// 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b).min(self.max_micros.max(1));
            }
        }
        self.max_micros
    }

    /// Counts at or below each of [`PROMETHEUS_BOUNDS`], cumulative.
    pub fn cumulative_at_bounds(&self) -> [u64; PROMETHEUS_BOUNDS.len()] {
        let mut out = [0; PROMETHEUS_BOUNDS.len()];
        let mut seen = 0;
        let mut next = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            while next < out.len() && bucket_high(b) >= PROMETHEUS_BOUNDS[next] {
                if bucket_high(b) == PROMETHEUS_BOUNDS[next] {
                    out[next] = seen;
                    next += 1;
                } else {
                    // Unreachable for the bounds chosen; keep it monotone.
                    out[next] = seen - c;
                    next += 1;
                }
            }
        }
        while next < out.len() {
            out[next] = seen;
            next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values_within_a_quarter() {
        let mut last_high = None;
        for b in 0..BUCKETS {
            let high = bucket_high(b);
            assert_eq!(bucket_of(high), b, "bucket {b}");
            if let Some(prev) = last_high {
                assert_eq!(bucket_of(prev + 1), b, "bucket {b} starts after {prev}");
                assert!((high - prev) as f64 <= (prev + 1) as f64 / 4.0 + 1.0);
            }
            last_high = Some(high);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn prometheus_bounds_are_bucket_tops() {
        for bound in PROMETHEUS_BOUNDS {
            assert_eq!(bucket_high(bucket_of(bound)), bound);
        }
    }

    #[test]
    fn quantiles_and_differences() {
        let h = AtomicBuckets::default();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let first = h.snapshot();
        assert_eq!(first.count(), 1000);
        let p50 = first.quantile(0.5);
        assert!((500..=640).contains(&p50), "p50 {p50}");
        assert_eq!(first.quantile(1.0), 1000);
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        let second = h.snapshot();
        let mut diff = Buckets::default();
        second.since_into(&first, &mut diff);
        assert_eq!(diff.count(), 10);
        assert!((40_000..=50_000).contains(&diff.quantile(0.5)));
        assert_eq!(diff.max_micros, 50_000);
        let cumulative = second.cumulative_at_bounds();
        assert_eq!(cumulative[0], 3, "1, 2, 3 µs");
        assert_eq!(cumulative[4], 1000, "all of 1..=1000 µs under 1,023");
        assert_eq!(*cumulative.last().unwrap(), 1010);
    }
}

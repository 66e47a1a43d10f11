//! A fixed-size log-linear latency histogram (HdrHistogram's idea, small).
//!
//! Values are microseconds. Below 64 every value has its own bucket; above,
//! each power of two is split into 32 buckets, so any recorded value is
//! reported within 1/32 (about 3%) of itself. The whole histogram is one
//! array of 1,920 counters: recording never allocates, merging is adding.

const SUB: u32 = 32; // buckets per power of two
const LINEAR: u64 = 2 * SUB as u64; // values below this are exact
const BUCKETS: usize = (LINEAR as usize) + (58 * SUB as usize);

/// Counts of latencies in microseconds, with quantiles.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max)
            .finish()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let bits = 63 - v.leading_zeros(); // >= 6
    let shift = bits - 5; // keep 6 significant bits: 32..63
    let mantissa = (v >> shift) as usize; // 32..=63
    LINEAR as usize + (shift as usize - 1) * SUB as usize + (mantissa - SUB as usize)
}

/// The largest value that falls in bucket `b`.
fn bucket_high(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let rel = b - LINEAR as usize;
    let shift = (rel / SUB as usize + 1) as u32;
    let mantissa = (rel % SUB as usize) as u64 + SUB as u64;
    ((mantissa + 1) << shift) - 1
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency in microseconds.
    pub fn record(&mut self, micros: u64) {
        let b = bucket_of(micros).min(BUCKETS - 1);
        self.counts[b] += 1;
        self.total += 1;
        self.sum += micros as u128;
        self.max = self.max.max(micros);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean in microseconds (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0), within about 3% above the true
    /// value; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            65_535,
            1 << 20,
            1 << 40,
            u64::MAX >> 2,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            let high = bucket_high(b);
            assert!(high >= v, "{v} above its bucket's top {high}");
            assert!(high - v <= v / 32 + 1, "{v} -> {high}: more than 1/32 off");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((5_000..=5_000 + 5_000 / 32 + 1).contains(&p50), "p50 {p50}");
        assert!((9_900..=9_900 + 9_900 / 32 + 1).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000);
        assert!((h.mean() - 5_000.5).abs() < 1e-9);
        let mut other = LatencyHistogram::new();
        other.record(20_000);
        h.merge(&other);
        assert_eq!(h.max(), 20_000);
        assert_eq!(h.count(), 10_001);
    }
}

//! [`Sampler`]: decides which calls are traced, adapting to a target rate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::id::next_u64;

/// How often the sampling probability is recomputed.
pub const WINDOW: Duration = Duration::from_millis(100);
const WINDOW_NS: u64 = 100_000_000;
/// Probability 1.0 as a threshold on a random `u32`.
const ONE: u64 = 1 << 32;
/// The largest target rate: far above any real call rate (it means "trace
/// everything") and small enough that the probability arithmetic cannot
/// overflow even for windows of hours.
pub const MAX_TARGET: u64 = 1 << 32;
/// Calls a thread counts locally before publishing them (see
/// [`Sampler::should_sample`]).
pub const BATCH: u32 = 32;

thread_local! {
    static LOCAL_SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Decides which calls are traced so that about `target` spans per second
/// are sampled, whatever the request rate.
///
/// Like brpc's collector speed limit: every [`WINDOW`] (100 ms) the
/// probability becomes `target × window ÷ calls seen in the last window`
/// (capped at 1), and within a window at most 1.5 × `target ÷ 10` calls (at
/// least one) are sampled, so a burst cannot overshoot much before the next
/// adjustment. [`should_sample`](Self::should_sample) is a few relaxed
/// atomics and a thread-local random number; no lock.
#[derive(Debug)]
pub struct Sampler {
    target: AtomicU64,
    /// Probability × 2³².
    threshold: AtomicU64,
    window_start_ns: AtomicU64,
    seen: AtomicU64,
    sampled: AtomicU64,
    epoch: Instant,
}

impl Sampler {
    /// The default target: 1,000 spans per second.
    pub const DEFAULT_TARGET: u64 = 1_000;

    /// A sampler aiming at `target_per_sec` sampled calls per second
    /// (0 = trace only calls that arrive with a trace id).
    pub fn new(target_per_sec: u64) -> Sampler {
        Sampler {
            target: AtomicU64::new(target_per_sec.min(MAX_TARGET)),
            threshold: AtomicU64::new(ONE),
            window_start_ns: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Changes the target rate; takes effect immediately.
    /// Targets above [`MAX_TARGET`] are treated as `MAX_TARGET` (trace
    /// everything).
    pub fn set_target(&self, target_per_sec: u64) {
        self.target.store(target_per_sec.min(MAX_TARGET), Relaxed);
    }

    /// The target rate in spans per second.
    pub fn target(&self) -> u64 {
        self.target.load(Relaxed)
    }

    /// The current sampling probability (0..=1).
    pub fn probability(&self) -> f64 {
        self.threshold.load(Relaxed) as f64 / ONE as f64
    }

    /// Whether to trace a call that arrived without a trace id.
    ///
    /// The hot path touches no shared counter and reads no clock: each
    /// thread counts its calls locally and, every [`BATCH`] calls, adds them
    /// to the shared count and checks whether the window ended. Only a
    /// sampled call does an atomic add.
    #[inline]
    pub fn should_sample(&self) -> bool {
        if self.target.load(Relaxed) == 0 {
            return false;
        }
        let due = LOCAL_SEEN.with(|c| {
            let n = c.get() + 1;
            c.set(if n >= BATCH { 0 } else { n });
            n >= BATCH
        });
        if due {
            self.tick(self.epoch.elapsed(), BATCH as u64);
        }
        self.decide()
    }

    /// Whether to trace a call: always when `forced` (the request carried a
    /// trace id: the caller is tracing, so this hop must be too), otherwise
    /// as [`should_sample`](Self::should_sample).
    #[inline]
    pub fn sample(&self, forced: bool) -> bool {
        forced || self.should_sample()
    }

    /// [`should_sample`](Self::should_sample) with an explicit clock and no
    /// batching: `now` is the time since an arbitrary fixed epoch, never
    /// decreasing much.
    pub fn should_sample_at(&self, now: Duration) -> bool {
        if self.target.load(Relaxed) == 0 {
            return false;
        }
        self.tick(now, 1);
        self.decide()
    }

    /// Counts `calls` seen at `now`, ending the window if it is over.
    fn tick(&self, now: Duration, calls: u64) {
        let now_ns = now.as_nanos() as u64;
        let start = self.window_start_ns.load(Relaxed);
        if now_ns >= start.saturating_add(WINDOW_NS) {
            self.roll(start, now_ns, self.target.load(Relaxed));
        }
        self.seen.fetch_add(calls, Relaxed);
    }

    /// Draws against the current probability and the window's budget.
    #[inline]
    fn decide(&self) -> bool {
        let threshold = self.threshold.load(Relaxed);
        if threshold < ONE && (next_u64() >> 32) >= threshold {
            return false;
        }
        // 1.5 × the window's share, so chance alone rarely hits the cap
        // (a cap at exactly the share would bias the rate low).
        let target = self.target.load(Relaxed);
        let budget = (target.saturating_mul(3) / 20).max(1);
        self.sampled.fetch_add(1, Relaxed) < budget
    }

    /// Ends the window that began at `start` (one thread wins the CAS) and
    /// sets the probability for the next one.
    #[cold]
    fn roll(&self, start: u64, now_ns: u64, target: u64) {
        if self
            .window_start_ns
            .compare_exchange(start, now_ns, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let seen = self.seen.swap(0, Relaxed);
        self.sampled.store(0, Relaxed);
        let elapsed = now_ns - start;
        let threshold = if seen == 0 {
            ONE
        } else {
            // Spans wanted in a window this long, over calls seen.
            let wanted = target as u128 * elapsed as u128 * ONE as u128 / 1_000_000_000;
            (wanted / seen as u128).clamp(1, ONE as u128) as u64
        };
        self.threshold.store(threshold, Relaxed);
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new(Self::DEFAULT_TARGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sampled calls between `from` and `to` seconds at `rate` calls/s.
    fn run(s: &Sampler, rate: u64, from_s: u64, to_s: u64) -> u64 {
        let step = 1_000_000_000 / rate;
        let mut n = 0;
        let mut t = from_s * 1_000_000_000;
        while t < to_s * 1_000_000_000 {
            if s.should_sample_at(Duration::from_nanos(t)) {
                n += 1;
            }
            t += step;
        }
        n
    }

    #[test]
    fn huge_targets_are_clamped_and_long_windows_do_not_overflow() {
        let s = Sampler::new(u64::MAX);
        assert_eq!(s.target(), MAX_TARGET);
        s.set_target(u64::MAX / 4);
        assert_eq!(s.target(), MAX_TARGET);
        // A first call after an hour of silence: one very long window.
        assert!(s.should_sample_at(Duration::from_secs(1)));
        assert!(s.should_sample_at(Duration::from_secs(3_600)));
        assert_eq!(s.probability(), 1.0);
    }

    #[test]
    fn converges_to_target_at_high_rate() {
        let s = Sampler::new(1_000);
        run(&s, 100_000, 0, 2); // settle
        let got = run(&s, 100_000, 2, 7) as f64 / 5.0;
        assert!((900.0..=1_100.0).contains(&got), "sampled {got}/s");
        assert!(s.probability() < 0.02, "p {}", s.probability());
    }

    #[test]
    fn samples_everything_below_target() {
        let s = Sampler::new(1_000);
        let got = run(&s, 200, 0, 5);
        assert_eq!(got, 1_000);
    }

    #[test]
    fn follows_a_rate_change() {
        let s = Sampler::new(500);
        run(&s, 10_000, 0, 2);
        let a = run(&s, 10_000, 2, 4) as f64 / 2.0;
        run(&s, 50_000, 4, 5); // settle on the new rate
        let c = run(&s, 50_000, 5, 8) as f64 / 3.0;
        for got in [a, c] {
            assert!((440.0..=560.0).contains(&got), "sampled {got}/s");
        }
    }

    #[test]
    fn a_burst_is_capped_within_its_first_window() {
        let s = Sampler::new(1_000);
        // 100,000 calls in the first millisecond: at most 150 are sampled.
        let mut n = 0;
        for i in 0..100_000u64 {
            if s.should_sample_at(Duration::from_nanos(i * 10)) {
                n += 1;
            }
        }
        assert_eq!(n, 150);
    }

    #[test]
    fn target_zero_samples_nothing_but_forced() {
        let s = Sampler::new(0);
        assert_eq!(run(&s, 10_000, 0, 1), 0);
        assert!(!s.should_sample());
        assert!(!s.sample(false));
        assert!(s.sample(true));
    }

    #[test]
    fn forced_is_always_sampled_even_over_budget() {
        let s = Sampler::new(10);
        let mut n = 0;
        for _ in 0..10_000 {
            if s.sample(true) {
                n += 1;
            }
        }
        assert_eq!(n, 10_000);
    }
}

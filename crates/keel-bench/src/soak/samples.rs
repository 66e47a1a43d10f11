//! Sampling and slopes: every second the floor of each metric (the
//! smallest of [`READS_PER_SAMPLE`] readings), and the least-squares lines
//! that tell a trend from a step.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Readings per sample (each sample keeps the smallest).
pub(super) const READS_PER_SAMPLE: u32 = 10;

/// One second's readings: seconds since the start, then one value per
/// [`METRICS`] entry (the smallest of the second's readings).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) at: f64,
    pub(super) values: [f64; 4],
    /// Not judged, for the CSV: what the heap is made of at the second's
    /// end (keel-pool bytes, rpcz store bytes).
    pub(super) parts: [f64; 2],
}

/// Bytes every keel-pool holds, and rpcz's store.
pub(super) fn heap_parts() -> [f64; 2] {
    let mut pools = 0;
    keel_pool::for_each_stats(|p| pools += p.bytes);
    let store = keel::rpcz::tracer().store().stats().bytes;
    [pools as f64, store as f64]
}

pub(super) fn read_metrics(tasks: &tokio::runtime::Handle) -> [f64; 4] {
    [
        keel_alloc::live_bytes() as f64,
        resident_bytes() as f64,
        open_fds() as f64,
        tasks.metrics().num_alive_tasks() as f64,
    ]
}

pub(super) use keel_alloc::resident_bytes;

/// Open file descriptors (entries of `/proc/self/fd`, less the one the
/// listing itself holds).
pub(super) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

/// Samples every second until `stop`, each sample the smallest of
/// [`READS_PER_SAMPLE`] readings over the second.
pub(super) fn sample_until(
    stop: &AtomicBool,
    start: Instant,
    tasks: &tokio::runtime::Handle,
    live: &Mutex<Vec<Sample>>,
) {
    let tick = Duration::from_secs(1) / READS_PER_SAMPLE;
    let mut next = start;
    'samples: loop {
        let mut floor = [f64::INFINITY; 4];
        for _ in 0..READS_PER_SAMPLE {
            if stop.load(Relaxed) {
                break 'samples;
            }
            next += tick;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            for (f, v) in floor.iter_mut().zip(read_metrics(tasks)) {
                *f = f.min(v);
            }
        }
        let sample = Sample {
            at: start.elapsed().as_secs_f64(),
            values: floor,
            parts: heap_parts(),
        };
        live.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
    }
}

/// The slopes of the first and the second half of the points.
pub(super) fn half_slopes(xs: &[f64], ys: &[f64]) -> [f64; 2] {
    let mid = xs.len().min(ys.len()) / 2;
    [slope(&xs[..mid], &ys[..mid]), slope(&xs[mid..], &ys[mid..])]
}

/// Whether a metric trends up: its slope over the whole window is above
/// `limit`, and each half's above `limit / 2`. A leak grows all the time,
/// so both halves rise; a long-lived table that reached a larger capacity
/// once (a new peak of calls in flight) steps up once and stays, which
/// tilts the whole line of a short run but leaves one half flat.
pub(super) fn trends_up(whole: f64, halves: [f64; 2], limit: f64) -> bool {
    whole > limit && halves.iter().all(|&h| h > limit / 2.0)
}

/// Least-squares slope of `ys` over `xs` (units per x unit); 0 with fewer
/// than two points.
pub(super) fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let mx = xs[..n].iter().sum::<f64>() / n as f64;
    let my = ys[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xs[..n].iter().zip(&ys[..n]) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let xs: Vec<f64> = (0..60).map(f64::from).collect();
        let ys: Vec<f64> = xs.iter().map(|x| 1000.0 + 17.0 * x).collect();
        assert!((slope(&xs, &ys) - 17.0).abs() < 1e-9);
        let flat: Vec<f64> = xs
            .iter()
            .map(|x| {
                if (*x as u64).is_multiple_of(2) {
                    5.0
                } else {
                    -5.0
                }
            })
            .collect();
        assert!(slope(&xs, &flat).abs() < 0.1);
        assert_eq!(slope(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn a_steady_rise_trends_up_and_a_single_step_does_not() {
        let xs: Vec<f64> = (0..48).map(f64::from).collect();
        let limit = 24.0 * 1024.0 / 60.0; // per second
        // 1 KB/s, with ±5 KB of noise.
        let leak: Vec<f64> = xs
            .iter()
            .map(|x| {
                2e6 + 1000.0 * x
                    + if (*x as u64).is_multiple_of(3) {
                        5e3
                    } else {
                        -5e3
                    }
            })
            .collect();
        let whole = slope(&xs, &leak);
        assert!(trends_up(whole, half_slopes(&xs, &leak), limit));
        // Flat, then 45 KB more for the last five seconds.
        let step: Vec<f64> = xs
            .iter()
            .map(|&x| if x >= 43.0 { 2.045e6 } else { 2e6 })
            .collect();
        let whole = slope(&xs, &step);
        assert!(whole > limit, "the step tilts the line: {whole}");
        assert!(!trends_up(whole, half_slopes(&xs, &step), limit));
    }
}

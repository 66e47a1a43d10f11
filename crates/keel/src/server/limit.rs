//! Concurrency limits: one for the whole server, one per method.
//!
//! ```text
//!   dispatch ── Limits::acquire(table_index) ──► global place ──► method place ──► Permit
//!                  │ either full: refused ("the server" / "the method"), nothing held
//!   Permit dropped (answered, failed, panicked, cancelled) ──► both places back
//!                  └─ last call in flight ended ──► `idle` wakes a graceful shutdown
//! ```
//!
//! A call holds a [`Permit`] from the moment it is admitted until its response
//! is encoded; the permit's `Drop` gives the places back on every path
//! (success, error, a handler that panics, a connection that dies with the
//! call still running).
//!
//! Owns: the counts of calls in flight (server-wide and per method), their
//! maximums, the refusals counted, the [`Permit`] that holds places, and
//! waiting until no call is in flight. May not touch: calls, statuses
//! (the dispatcher turns a refusal into `ELIMIT` and decides when to
//! acquire), handlers, connections or protocols; nothing here knows how a
//! call arrived.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Counts calls in flight against a maximum (`usize::MAX` = unlimited).
#[derive(Debug)]
pub(crate) struct Limiter {
    /// Settable at run time (the console's `/flags`).
    max: AtomicUsize,
    current: AtomicUsize,
    rejected: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(max: Option<usize>) -> Limiter {
        Limiter {
            max: AtomicUsize::new(max.unwrap_or(usize::MAX)),
            current: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn try_acquire(&self) -> bool {
        if self.current.fetch_add(1, Ordering::AcqRel) >= self.max.load(Ordering::Relaxed) {
            self.current.fetch_sub(1, Ordering::AcqRel);
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Releases one place; true if none is taken now.
    fn release(&self) -> bool {
        self.current.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The limit, `None` when unlimited.
    pub(crate) fn max(&self) -> Option<usize> {
        Some(self.max.load(Ordering::Relaxed)).filter(|&m| m != usize::MAX)
    }

    /// Changes the limit (`None`: unlimited); calls in flight keep their
    /// places.
    pub(crate) fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// An adaptive limit of calls in flight (the gradient method, as brpc's
/// `auto` limiter and Netflix's concurrency-limits do): the limit follows
/// how the latency of admitted calls compares with the latency the server
/// has without queueing.
///
/// Every `window` (at least `min_samples` calls), the mean latency of the
/// calls that ended in it is compared with the no-load latency:
/// `limit = limit * clamp(no_load / mean, 0.5, 1) + sqrt(limit)`, smoothed,
/// within `[min, max]`. Queueing raises the mean and the limit falls until
/// the queue is gone; with none the square root lets it grow. The no-load
/// latency is the lowest window mean since the last probe: every
/// [`PROBE_EVERY`] windows one window runs at a quarter of the limit, so the
/// queue drains and its mean is the latency without queueing (brpc's auto
/// limiter re-measures the same way), which also learns a service that
/// became slower or faster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    /// The limit at start.
    pub initial: usize,
    /// Never below this.
    pub min: usize,
    /// Never above this.
    pub max: usize,
    /// How often the limit is recomputed.
    pub window: Duration,
    /// Calls a window needs before the limit moves.
    pub min_samples: u32,
}

impl Default for AdaptiveLimit {
    fn default() -> AdaptiveLimit {
        AdaptiveLimit {
            initial: 40,
            min: 4,
            max: 10_000,
            window: Duration::from_millis(100),
            min_samples: 20,
        }
    }
}

/// Windows between two probes of the no-load latency.
pub const PROBE_EVERY: u32 = 50;

/// The adaptive limit's running state.
#[derive(Debug)]
struct Adaptive {
    config: AdaptiveLimit,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    samples: u32,
    total_us: u64,
    /// The lowest window mean since the last probe; 0 before the first.
    no_load_us: f64,
    limit: f64,
    /// Windows since the last probe.
    windows: u32,
    /// This window is a probe (at a quarter of the limit).
    probing: bool,
}

impl Adaptive {
    fn new(config: AdaptiveLimit) -> Adaptive {
        Adaptive {
            window: Mutex::new(Window {
                started: Instant::now(),
                samples: 0,
                total_us: 0,
                no_load_us: 0.0,
                limit: config.initial as f64,
                windows: 0,
                probing: false,
            }),
            config,
        }
    }

    /// Records one call's latency; the new limit when the window closed.
    fn record(&self, latency: Duration) -> Option<usize> {
        let c = &self.config;
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        w.samples += 1;
        w.total_us += u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if w.samples < c.min_samples || w.started.elapsed() < c.window {
            return None;
        }
        let mean = (w.total_us as f64 / f64::from(w.samples)).max(1.0);
        w.samples = 0;
        w.total_us = 0;
        w.started = Instant::now();
        if w.probing {
            // The queue drained at a quarter of the limit: this is the
            // latency without queueing. Back to the limit it had.
            w.probing = false;
            w.no_load_us = mean;
            return Some(w.limit.round() as usize);
        }
        w.no_load_us = if w.no_load_us == 0.0 {
            mean
        } else {
            w.no_load_us.min(mean)
        };
        let gradient = (w.no_load_us / mean).clamp(0.5, 1.0);
        let target = w.limit * gradient + w.limit.sqrt();
        w.limit = (0.8 * w.limit + 0.2 * target).clamp(c.min as f64, c.max as f64);
        w.windows += 1;
        if w.windows >= PROBE_EVERY {
            w.windows = 0;
            w.probing = true;
            return Some(((w.limit / 4.0).round() as usize).max(c.min));
        }
        Some(w.limit.round() as usize)
    }
}

/// The server's limits: a global one and one per method table_index (see
/// [`Route::table_index`](crate::server::Route::table_index)).
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) global: Limiter,
    pub(crate) methods: Vec<Limiter>,
    /// Moves the global limit, when adaptive.
    adaptive: Option<Adaptive>,
    /// Woken whenever the last call in flight ends (a graceful shutdown
    /// waits on it for calls no connection tracks: in-process ones).
    pub(crate) idle: tokio::sync::Notify,
}

impl Limits {
    /// A global limit and one per method.
    pub(crate) fn new(global: Option<usize>, methods: Vec<Limiter>) -> Limits {
        Limits {
            global: Limiter::new(global),
            methods,
            adaptive: None,
            idle: tokio::sync::Notify::new(),
        }
    }

    /// The same limits with the global one adaptive, starting at
    /// `config.initial`.
    pub(crate) fn adaptive(mut self, config: AdaptiveLimit) -> Limits {
        self.global.set_max(Some(config.initial));
        self.adaptive = Some(Adaptive::new(config));
        self
    }

    /// Whether the global limit is adaptive.
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Waits until no call is in flight, or `deadline`; true if none is.
    pub(crate) async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so an end in between is seen.
            idle.as_mut().enable();
            if self.global.current() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.global.current() == 0;
            }
        }
    }
}

impl Limits {
    /// Admits one call of method `table_index`, or says which limit refused it.
    pub(crate) fn acquire(self: &Arc<Self>, table_index: usize) -> Result<Permit, &'static str> {
        if !self.global.try_acquire() {
            return Err("the server");
        }
        if let Some(m) = self.methods.get(table_index) {
            if !m.try_acquire() {
                if self.global.release() {
                    self.idle.notify_waiters();
                }
                return Err("the method");
            }
        }
        Ok(Permit {
            limits: self.clone(),
            table_index,
            admitted: self.adaptive.as_ref().map(|_| Instant::now()),
        })
    }
}

/// One admitted call; dropping it releases its places.
#[derive(Debug)]
pub(crate) struct Permit {
    limits: Arc<Limits>,
    table_index: usize,
    /// When it was admitted, if the limit adapts to latency.
    admitted: Option<Instant>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let (Some(adaptive), Some(admitted)) = (&self.limits.adaptive, self.admitted)
            && let Some(limit) = adaptive.record(admitted.elapsed())
        {
            self.limits.global.set_max(Some(limit));
        }
        if let Some(m) = self.limits.methods.get(self.table_index) {
            m.release();
        }
        if self.limits.global.release() {
            self.limits.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_limit_falls_under_queueing_and_grows_without() {
        let config = AdaptiveLimit {
            initial: 100,
            min: 4,
            max: 1000,
            window: Duration::ZERO,
            min_samples: 10,
        };
        let adaptive = Adaptive::new(config);
        let window = |latency_us: u64| {
            (0..10)
                .filter_map(|_| adaptive.record(Duration::from_micros(latency_us)))
                .last()
                .expect("a window closed")
        };
        // The no-load latency learnt, then queueing: latency doubles.
        let start = window(1_000);
        let mut limit = start;
        for _ in 0..20 {
            limit = window(2_000);
        }
        assert!(limit < start / 2, "{start} -> {limit}");
        assert!(limit >= config.min);
        // The queue gone: latency back to no-load, the limit grows.
        let low = limit;
        for _ in 0..20 {
            limit = window(1_000);
        }
        assert!(limit > low, "{low} -> {limit}");
        assert!(limit <= config.max);
    }

    #[test]
    fn global_and_method_limits_refuse_and_release() {
        let limits = Arc::new(Limits::new(
            Some(3),
            vec![Limiter::new(Some(1)), Limiter::new(None)],
        ));
        let a = limits.acquire(0).expect("first call of method 0");
        assert_eq!(limits.acquire(0).unwrap_err(), "the method");
        let b = limits.acquire(1).expect("method 1");
        let c = limits.acquire(1).expect("method 1 again");
        assert_eq!(limits.acquire(1).unwrap_err(), "the server");
        assert_eq!(limits.global.current(), 3);
        drop((a, b, c));
        assert_eq!(limits.global.current(), 0);
        assert_eq!(limits.methods[0].current(), 0);
        assert_eq!(limits.global.rejected(), 1);
        assert_eq!(limits.methods[0].rejected(), 1);
        let _again = limits.acquire(0).expect("released places are reusable");
    }
}

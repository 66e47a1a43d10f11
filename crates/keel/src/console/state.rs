//! What the console remembers between page loads: a short history of every
//! variable (one point a second) and each method's windows (last second,
//! last minute), kept by a sampler task that lives as long as its server.
//!
//! Memory is fixed when the server starts: [`HISTORY`] points per variable,
//! and per method one cumulative histogram for the last second plus
//! [`MINUTE_SLOTS`] taken ten seconds apart for the minute; sampling reuses
//! them and allocates nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::console::vars;
use crate::metrics::buckets::Buckets;
use crate::server::builder::ServerCore;

/// Points kept per variable: three minutes at one a second.
pub(crate) const HISTORY: usize = 180;
/// Cumulative snapshots for the minute window, ten seconds apart.
const MINUTE_SLOTS: usize = 7;
/// Seconds between two minute snapshots.
const MINUTE_STEP: u64 = 10;

/// A window's summary of one method.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Window {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) qps: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) avg_us: u64,
}

impl Window {
    pub(crate) fn of(buckets: &Buckets, calls: u64, errors: u64, seconds: f64) -> Window {
        let ended = buckets.count();
        Window {
            calls,
            errors,
            qps: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            p50_us: buckets.quantile(0.5),
            p99_us: buckets.quantile(0.99),
            p999_us: buckets.quantile(0.999),
            max_us: buckets.max_micros,
            avg_us: buckets.sum_micros.checked_div(ended).unwrap_or(0),
        }
    }
}

/// Cumulative counters of a method at one instant.
#[derive(Debug, Clone, Default)]
struct Point {
    calls: u64,
    errors: u64,
    latency: Buckets,
    /// Seconds since the sampler started.
    at: u64,
}

/// One method's history.
#[derive(Debug, Default)]
struct MethodHistory {
    last: Point,
    minute: VecDeque<Point>,
    second: Window,
    minute_window: Window,
    /// Calls per second, oldest first.
    qps: VecDeque<u64>,
}

/// The console's memory of one server.
#[derive(Debug)]
pub(crate) struct ConsoleState {
    pub(crate) started: std::time::Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per method table index.
    methods: Vec<MethodHistory>,
    /// Per variable, in [`vars::all`]'s order.
    series: Vec<VecDeque<f64>>,
    ticks: u64,
    scratch: Point,
    diff: Buckets,
}

impl ConsoleState {
    /// The console's memory for a server of `methods` methods, allocated
    /// now, whole: sampling never allocates, so memory measured after a
    /// server starts does not move when the sampler first runs.
    pub(crate) fn new(methods: usize) -> ConsoleState {
        let methods = (0..methods)
            .map(|_| MethodHistory {
                minute: VecDeque::with_capacity(MINUTE_SLOTS),
                qps: VecDeque::with_capacity(HISTORY),
                ..MethodHistory::default()
            })
            .collect();
        let series = (0..vars::MAX)
            .map(|_| VecDeque::with_capacity(HISTORY))
            .collect();
        ConsoleState {
            started: std::time::Instant::now(),
            inner: Mutex::new(Inner {
                methods,
                series,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one sample of every variable and method.
    pub(crate) fn sample(&self, core: &ServerCore) {
        let values = vars::all(core);
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.ticks += 1;
        let now = inner.ticks;
        if inner.series.len() != values.len() {
            inner.series = (0..values.len())
                .map(|_| VecDeque::with_capacity(HISTORY))
                .collect();
        }
        for (series, var) in inner.series.iter_mut().zip(&values) {
            if series.len() == HISTORY {
                series.pop_front();
            }
            series.push_back(var.value);
        }
        let stats = core.dispatcher.method_stats_table();
        if inner.methods.len() != stats.len() {
            inner
                .methods
                .resize_with(stats.len(), MethodHistory::default);
        }
        for (history, method) in inner.methods.iter_mut().zip(stats) {
            let snap = method.snapshot_counts();
            inner.scratch.calls = snap.0;
            inner.scratch.errors = snap.1;
            inner.scratch.at = now;
            method.latency().snapshot_into(&mut inner.scratch.latency);
            let last = &history.last;
            inner
                .scratch
                .latency
                .since_into(&last.latency, &mut inner.diff);
            let calls = inner.scratch.calls.saturating_sub(last.calls);
            history.second = Window::of(
                &inner.diff,
                calls,
                inner.scratch.errors.saturating_sub(last.errors),
                1.0,
            );
            if history.minute.is_empty() {
                // The server's start: every call so far is in the window.
                history.minute.push_back(Point::default());
            }
            if history.qps.len() == HISTORY {
                history.qps.pop_front();
            }
            history.qps.push_back(calls);
            if let Some(oldest) = history.minute.front() {
                inner
                    .scratch
                    .latency
                    .since_into(&oldest.latency, &mut inner.diff);
                history.minute_window = Window::of(
                    &inner.diff,
                    inner.scratch.calls.saturating_sub(oldest.calls),
                    inner.scratch.errors.saturating_sub(oldest.errors),
                    (now - oldest.at).max(1) as f64,
                );
            }
            if now % MINUTE_STEP == 1 {
                let slot = if history.minute.len() == MINUTE_SLOTS {
                    history.minute.pop_front().unwrap_or_default()
                } else {
                    Point::default()
                };
                history.minute.push_back(slot);
                if let Some(slot) = history.minute.back_mut() {
                    slot.clone_from(&inner.scratch);
                }
            }
            std::mem::swap(&mut history.last, &mut inner.scratch);
        }
    }

    /// The history of variable number `index` (in [`vars::all`]'s order).
    pub(crate) fn series(&self, index: usize) -> Vec<f64> {
        self.lock()
            .series
            .get(index)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Last second's and last minute's windows, and the calls-per-second
    /// history, of method table index `index`.
    pub(crate) fn method(&self, index: usize) -> (Window, Window, Vec<u64>) {
        let inner = self.lock();
        inner.methods.get(index).map_or_else(Default::default, |m| {
            (m.second, m.minute_window, m.qps.iter().copied().collect())
        })
    }
}

/// Samples `core` every second until `shutdown` says stop (the server's
/// shutdown or drop): the task ends with its server.
pub(crate) async fn sampler(core: Arc<ServerCore>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => core.console.sample(&core),
            _ = shutdown.changed() => return,
        }
    }
}

//! Per-method call statistics: [`MethodStats`] (the counters of one method,
//! used by servers per method table index and by channels), and the channel's
//! [`MethodStatsTable`], keyed by method identity.
//!
//! A channel's entries are created on a method's first call and live as long
//! as the channel, so the table is bounded by the number of distinct methods
//! called through it — clients, option sets and calls add nothing
//! (`DESIGN.md` §1.3). The steady state is one load of a slot the method's
//! index in its service picks and a few relaxed atomic increments: no lock,
//! no reference count, no allocation (a method whose slot another took pays
//! a read lock, a hash of one pointer and a reference count).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::method::{MethodDescriptor, MethodKey};
use crate::metrics::buckets::AtomicBuckets;

/// Errors by code a method keeps apart; rarer codes count as "other".
const MAX_ERROR_CODES: usize = 32;

/// Counters of one method on one channel or server.
#[derive(Debug, Default)]
pub(crate) struct MethodStats {
    calls: AtomicU64,
    errors: AtomicU64,
    latency_nanos: AtomicU64,
    latency: AtomicBuckets,
    /// `(code, count)` of the errors, in the order codes first appeared;
    /// touched only when a call fails. `other_errors` past MAX_ERROR_CODES.
    error_codes: Mutex<Vec<(i32, u64)>>,
    other_errors: AtomicU64,
}

impl MethodStats {
    pub(crate) fn start(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    /// Ends a call started with [`start`](Self::start): `error` is its
    /// status code when it failed.
    pub(crate) fn finish(&self, latency: Duration, error: Option<i32>) {
        if let Some(code) = error {
            self.errors.fetch_add(1, Relaxed);
            let mut codes = self
                .error_codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = codes.iter_mut().find(|(c, _)| *c == code) {
                entry.1 += 1;
            } else if codes.len() < MAX_ERROR_CODES {
                codes.push((code, 1));
            } else {
                self.other_errors.fetch_add(1, Relaxed);
            }
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.fetch_add(nanos, Relaxed);
        self.latency.record(latency);
    }

    /// The latency histogram of the calls that ended.
    pub(crate) fn latency(&self) -> &AtomicBuckets {
        &self.latency
    }

    /// Errors by code, most frequent first; code `None` for the rare codes
    /// beyond the first 32 seen.
    pub(crate) fn errors_by_code(&self) -> Vec<(Option<i32>, u64)> {
        let mut out: Vec<(Option<i32>, u64)> = self
            .error_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|&(c, n)| (Some(c), n))
            .collect();
        let other = self.other_errors.load(Relaxed);
        if other > 0 {
            out.push((None, other));
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }

    /// `(calls, errors)` now.
    pub(crate) fn snapshot_counts(&self) -> (u64, u64) {
        (self.calls.load(Relaxed), self.errors.load(Relaxed))
    }

    pub(crate) fn snapshot(&self, method: &'static MethodDescriptor) -> MethodStatsSnapshot {
        MethodStatsSnapshot {
            method,
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            total_latency: Duration::from_nanos(self.latency_nanos.load(Relaxed)),
        }
    }
}

/// A point-in-time copy of one method's counters on a channel or server.
#[derive(Debug, Clone, Copy)]
pub struct MethodStatsSnapshot {
    /// The method.
    pub method: &'static MethodDescriptor,
    /// Calls started.
    pub calls: u64,
    /// Calls that ended with an error (timeouts included).
    pub errors: u64,
    /// Sum of the latencies of calls that ended; cancelled calls count in
    /// `calls` only.
    pub total_latency: Duration,
}

/// Slots of a table's lock-free path: a channel calls few methods, mostly
/// of one service.
const FAST_SLOTS: usize = 4;

/// A channel's counters, one entry per method called through it.
#[derive(Debug, Default)]
pub(crate) struct MethodStatsTable {
    entries: RwLock<HashMap<MethodKey, Arc<MethodStats>>>,
    /// The first method to call whose index in its service picks a slot
    /// keeps its entry there too, read with one load for as long as the
    /// table lives.
    fast: [OnceLock<(MethodKey, Arc<MethodStats>)>; FAST_SLOTS],
}

/// A method's counters, borrowed from its table's slot or, for a method
/// whose slot another method took, shared.
pub(crate) enum StatsRef<'a> {
    Slot(&'a MethodStats),
    Shared(Arc<MethodStats>),
}

impl Deref for StatsRef<'_> {
    type Target = MethodStats;

    fn deref(&self) -> &MethodStats {
        match self {
            StatsRef::Slot(stats) => stats,
            StatsRef::Shared(stats) => stats,
        }
    }
}

impl MethodStatsTable {
    /// The counters of `method`, created on first use: a call's path.
    pub(crate) fn get(&self, method: &'static MethodDescriptor) -> StatsRef<'_> {
        let key = MethodKey(method);
        // A channel mostly calls one service's methods: its first
        // FAST_SLOTS methods each have a slot of their own.
        let (k, stats) =
            self.fast[method.index % FAST_SLOTS].get_or_init(|| (key, self.entry(method)));
        if *k == key {
            StatsRef::Slot(stats)
        } else {
            StatsRef::Shared(self.entry(method))
        }
    }

    /// The entry of `method`, created on first use.
    pub(crate) fn entry(&self, method: &'static MethodDescriptor) -> Arc<MethodStats> {
        let key = MethodKey(method);
        // Counters stay valid whatever a panicking holder did: ignore poison.
        if let Some(stats) = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(stats);
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(entries.entry(key).or_default())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn snapshot(&self) -> Vec<MethodStatsSnapshot> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|(key, stats)| stats.snapshot(key.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static M: MethodDescriptor = MethodDescriptor::for_tests();
    static N: MethodDescriptor = MethodDescriptor::for_tests();

    #[test]
    fn one_entry_per_method_identity() {
        let cache = MethodStatsTable::default();
        for _ in 0..100 {
            cache.entry(&M).start();
        }
        assert_eq!(cache.len(), 1);
        // Same names, different descriptor: a different method.
        cache.entry(&N).start();
        cache.entry(&N).finish(Duration::from_millis(2), Some(1008));
        assert_eq!(cache.len(), 2);
        let snapshot = cache.snapshot();
        let m = snapshot
            .iter()
            .find(|s| s.method.is(&M))
            .expect("M present");
        assert_eq!((m.calls, m.errors), (100, 0));
        let n = snapshot
            .iter()
            .find(|s| s.method.is(&N))
            .expect("N present");
        assert_eq!((n.calls, n.errors), (1, 1));
        assert_eq!(cache.entry(&N).errors_by_code(), vec![(Some(1008), 1)]);
        assert_eq!(n.total_latency, Duration::from_millis(2));
    }

    /// One service's methods, more than the table has slots: each must get
    /// its own counters, through a slot or past a taken one.
    static MANY: [MethodDescriptor; 2 * FAST_SLOTS + 1] = {
        let mut all = [const { MethodDescriptor::for_tests() }; 2 * FAST_SLOTS + 1];
        let mut i = 0;
        while i < all.len() {
            all[i].index = i;
            i += 1;
        }
        all
    };

    #[test]
    fn the_lock_free_path_counts_in_the_table_and_keeps_methods_apart() {
        let table = MethodStatsTable::default();
        for (i, method) in MANY.iter().enumerate() {
            for _ in 0..=i {
                table.get(method).start();
            }
            table.get(method).finish(Duration::from_millis(1), None);
        }
        assert_eq!(table.len(), MANY.len());
        let snapshot = table.snapshot();
        for (i, method) in MANY.iter().enumerate() {
            let s = snapshot
                .iter()
                .find(|s| s.method.is(method))
                .expect("every method listed");
            assert_eq!((s.calls, s.errors), (i as u64 + 1, 0), "method {i}");
            // Both paths reach the same counters.
            assert_eq!(table.entry(method).snapshot_counts().0, i as u64 + 1);
        }
        // More methods than slots: the first FAST_SLOTS called took one
        // each, the others share.
        for (i, method) in MANY.iter().enumerate() {
            let slotted = matches!(table.get(method), StatsRef::Slot(_));
            assert_eq!(slotted, i < FAST_SLOTS, "method {i}");
        }
    }
}

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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// The server's limits: a global one and one per method table_index (see
/// [`Route::table_index`](crate::server::Route::table_index)).
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) global: Limiter,
    pub(crate) methods: Vec<Limiter>,
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
            idle: tokio::sync::Notify::new(),
        }
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
        })
    }
}

/// One admitted call; dropping it releases its places.
#[derive(Debug)]
pub(crate) struct Permit {
    limits: Arc<Limits>,
    table_index: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
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

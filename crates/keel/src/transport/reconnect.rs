//! When a transport may connect again to an endpoint whose connection
//! failed or broke: exponential backoff with jitter, shared by every
//! protocol's transport.
//!
//! ```text
//!   admit() before connecting: while waiting, the call fails at once
//!   an answer arrives ──► answered(): the endpoint works
//!   connecting fails, a connection made breaks, or its handshake fails
//!                                               ──► failed():
//!       an answer since the last failure,
//!       or the connection lived 1 s? ── yes ──► reconnect at once
//!                                    └─ no ───► wait 10 ms · 2^(n-1), at
//!                                               most 2 s, each drawn in its
//!                                               upper half
//! ```
//!
//! Without it, a server that accepts and then drops every connection costs
//! a connection per call: thousands a second from one busy client. With
//! it, a run of failures costs about ten connections in the first second,
//! then one every one to two seconds.
//!
//! A connection refused (or not made within the connect timeout) counts as
//! a failure too: a client calling a port nobody listens on in a loop
//! would otherwise try it some 17,000 times a second.
//!
//! Calls that arrive while the endpoint waits fail at once with
//! `EFAILEDSOCKET`, marked as not written, as brpc fails calls to a socket
//! it is still health-checking: nothing was sent, so the retry loop may
//! try another server (a cluster's breaker isolates this one meanwhile),
//! and a caller with one server learns at once that it is down rather than
//! waiting for it. Two exceptions wait instead (see
//! [`Reconnect::waiting_until`] and `cluster::invoker`): a breaker's
//! health-check probe, which is itself the paced reconnect attempt; and a
//! call a cluster sends to a server its breaker isolated, because no other
//! server is left, when the wait ends within 100 ms: the cluster chose it
//! as the server most likely back (a restarted one, say).
//!
//! A connection that carried an answer, or stayed up a second, proves the
//! endpoint works: its loss (a server's idle timeout, a restart)
//! reconnects at once and starts the count again.
//!
//! Owns: the backoff state of one endpoint and the process-wide counters
//! of reconnects (see [`STATS`]). May not touch: sockets or calls.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::status::{Code, Status};

/// The first wait after a failure.
const FIRST: Duration = Duration::from_millis(10);
/// The longest wait.
const MAX: Duration = Duration::from_secs(2);
/// A connection that stayed up this long worked, answer or not (a stream
/// that has sent nothing back yet, an idle connection): its loss
/// reconnects at once.
const WORKED: Duration = Duration::from_secs(1);

/// Process-wide reconnect counters, on `/vars`.
#[derive(Debug, Default)]
pub(crate) struct ReconnectStats {
    /// Connection attempts to an endpoint after its first.
    pub(crate) reconnects: AtomicU64,
    /// Waits begun before reconnecting (one per failure that was not
    /// preceded by an answer).
    pub(crate) backoffs: AtomicU64,
    /// Calls failed at once because their endpoint was waiting.
    pub(crate) refused: AtomicU64,
}

/// The counters of every transport in the process.
pub(crate) static STATS: ReconnectStats = ReconnectStats {
    reconnects: AtomicU64::new(0),
    backoffs: AtomicU64::new(0),
    refused: AtomicU64::new(0),
};

/// One endpoint's backoff state.
#[derive(Debug, Default)]
pub(crate) struct Reconnect {
    /// Failures in a row, with no answer in between (0: connect freely).
    failures: AtomicU32,
    /// Whether a connection was ever tried (later ones are reconnects).
    tried: AtomicBool,
    /// Whether an answer came since the last failure.
    answered: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Debug, Default)]
struct Times {
    /// No connection attempt before this instant.
    retry_at: Option<Instant>,
    /// When the last connection was made.
    connected_at: Option<Instant>,
}

impl Reconnect {
    /// Called before connecting: fails fast (`EFAILEDSOCKET`, not written)
    /// while the endpoint waits after a failure.
    pub(crate) fn admit(&self, addr: &str) -> Result<(), Status> {
        if self.failures.load(Ordering::Relaxed) > 0 {
            let retry_at = self.times().retry_at;
            if let Some(at) = retry_at {
                let now = Instant::now();
                if now < at {
                    STATS.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Status::new(
                        Code::EFAILEDSOCKET,
                        format!(
                            "fail to connect {addr}: its last {} connections broke with no answer; the next attempt in {} ms",
                            self.failures.load(Ordering::Relaxed),
                            (at - now).as_millis().max(1)
                        ),
                    )
                    .with_request_unwritten());
                }
            }
        }
        if self.tried.swap(true, Ordering::Relaxed) {
            STATS.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection was made (and its handshake, if any, done).
    pub(crate) fn connected(&self) {
        self.times().connected_at = Some(Instant::now());
    }

    /// An answer came from the endpoint: it works.
    /// Cheap when already known (one relaxed load), so it may be called
    /// for every answer.
    pub(crate) fn answered(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
    }

    /// When the endpoint may be tried again, if that is still to come.
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        if self.failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.times().retry_at.filter(|&at| at > Instant::now())
    }

    /// Connecting to the endpoint failed, a connection made to it broke,
    /// or its handshake failed.
    /// When an answer came since the last failure, or the connection
    /// stayed up a while ([`WORKED`]), the next attempt may come at once;
    /// otherwise it waits, twice as long as the last time.
    pub(crate) fn failed(&self) {
        let mut times = self.times();
        let lasted = times
            .connected_at
            .take()
            .is_some_and(|at| at.elapsed() >= WORKED);
        if self.answered.swap(false, Ordering::Relaxed) || lasted {
            self.failures.store(0, Ordering::Relaxed);
            times.retry_at = None;
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        STATS.backoffs.fetch_add(1, Ordering::Relaxed);
        times.retry_at = Some(Instant::now() + wait(failures));
    }
}

/// The wait after `failures` failures in a row: [`FIRST`] doubled each
/// time up to [`MAX`], then a uniform draw in its upper half, so clients
/// that lost the same server at once do not all come back at once.
fn wait(failures: u32) -> Duration {
    let full = FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX);
    let nanos = full.as_nanos() as u64;
    let draw = std::collections::hash_map::RandomState::new().hash_one(failures);
    Duration::from_nanos(nanos / 2 + draw % (nanos / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter() {
        for failures in 1..40 {
            let full = FIRST.saturating_mul(1 << (failures - 1).min(16)).min(MAX);
            let w = wait(failures);
            assert!(w >= full / 2 && w <= full, "{failures}: {w:?} of {full:?}");
        }
        assert_eq!(
            FIRST.saturating_mul(1 << 16).min(MAX),
            MAX,
            "the cap is reached"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_an_answer_resets_them() {
        let r = Reconnect::default();
        r.admit("a:1").expect("first connect");
        r.failed();
        let refused = r.admit("a:1").expect_err("waiting");
        assert_eq!(refused.code(), Code::EFAILEDSOCKET);
        assert!(refused.request_unwritten());
        tokio::time::advance(FIRST).await;
        r.admit("a:1").expect("waited long enough");
        r.failed();
        assert!(r.admit("a:1").is_err());
        tokio::time::advance(2 * FIRST).await;
        r.admit("a:1").expect("waited long enough");
        // A connection that answered: its loss reconnects at once.
        r.answered();
        r.failed();
        r.admit("a:1").expect("reconnects at once");
        assert_eq!(r.failures.load(Ordering::Relaxed), 0);
        // One that broke at once waits; one that stayed up a while not.
        r.connected();
        r.failed();
        assert!(r.admit("a:1").is_err());
        tokio::time::advance(FIRST).await;
        r.admit("a:1").expect("waited long enough");
        r.connected();
        tokio::time::advance(WORKED).await;
        r.failed();
        r.admit("a:1").expect("reconnects at once");
    }
}

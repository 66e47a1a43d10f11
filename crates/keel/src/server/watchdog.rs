//! Limits on a server's connections: how many may be open, how soon the
//! first request must arrive, how long one may sit idle, how many calls
//! one may have in flight, how large a request's head may be.
//!
//! ```text
//!   accept ─► over max_connections? ─► closed at once (counted)
//!     │
//!     ▼
//!   connection task ── select ──┬─ the protocol's connection
//!                               └─ watchdog: no request by first_request_timeout,
//!                                  or idle (no byte either way, no call) for
//!                                  idle_timeout ─► the connection is closed (counted)
//! ```
//!
//! Owns: these limits and their counters. May not touch: any protocol's
//! framing (each protocol applies `max_calls_per_connection` and the head
//! size its own way: an `ELIMIT` answer on baidu_std, HTTP/2's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and header list size on gRPC, a 431
//! on HTTP/1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::connections::ConnectionInfo;

/// The limits, as a [`ServerBuilder`](super::ServerBuilder) set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// A connection's first request must be complete within this time of
    /// its accept (`None`: no limit).
    pub(crate) first_request: Option<Duration>,
    /// A connection with no byte read or written and no call in flight for
    /// this long is closed (`None`: never).
    pub(crate) idle: Option<Duration>,
    /// Connections open at once, beyond which new ones are closed at once.
    pub(crate) max_connections: Option<usize>,
    /// Calls in flight on one connection.
    pub(crate) max_calls_per_connection: Option<usize>,
    /// Largest request head: an HTTP/1 request line and headers, an
    /// HTTP/2 header list.
    pub(crate) max_header_size: usize,
}

/// The default of [`ConnectionLimits::first_request`].
pub(crate) const DEFAULT_FIRST_REQUEST: Duration = Duration::from_secs(10);
/// The default of [`ConnectionLimits::max_header_size`].
pub(crate) const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;
/// The smallest head size accepted (hyper's own floor for HTTP/1).
pub(crate) const MIN_HEADER_SIZE: usize = 8 * 1024;

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            first_request: Some(DEFAULT_FIRST_REQUEST),
            idle: None,
            max_connections: None,
            max_calls_per_connection: None,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
        }
    }
}

/// What the limits did, ever.
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    /// Connections closed because no request came in time.
    pub(crate) first_request_timeouts: AtomicU64,
    /// Connections closed for being idle.
    pub(crate) idle_closes: AtomicU64,
    /// Connections closed at accept, over `max_connections`.
    pub(crate) refused_connections: AtomicU64,
    /// Calls refused for being over `max_calls_per_connection`.
    pub(crate) refused_calls: AtomicU64,
    /// TLS connections set up.
    pub(crate) tls_connections: AtomicU64,
    /// TLS handshakes that failed (or came to a server without TLS).
    pub(crate) tls_failures: AtomicU64,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    FirstRequest,
    Idle,
}

/// Returns when `info`'s connection breaks a time limit (never when
/// neither is set); counts the close in `counters`.
pub(crate) async fn watch(
    info: &ConnectionInfo,
    limits: &ConnectionLimits,
    counters: &LimitCounters,
) -> Closed {
    let closed = wait(info, limits).await;
    let counter = match closed {
        Closed::FirstRequest => &counters.first_request_timeouts,
        Closed::Idle => &counters.idle_closes,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    closed
}

async fn wait(info: &ConnectionInfo, limits: &ConnectionLimits) -> Closed {
    let accepted = tokio::time::Instant::now();
    let mut first_by = limits.first_request.map(|t| accepted + t);
    loop {
        let now = tokio::time::Instant::now();
        if let Some(by) = first_by {
            if info.requests() > 0 {
                first_by = None;
            } else if now >= by {
                return Closed::FirstRequest;
            }
        }
        let idle_check = match limits.idle {
            None => None,
            // Busy, however quiet the bytes: look again a period later.
            Some(idle) if info.in_flight() > 0 => Some(now + idle),
            Some(idle) => {
                let quiet = info.idle_for();
                if quiet >= idle {
                    return Closed::Idle;
                }
                // When the connection could next have been idle long
                // enough: one timer per idle period, whatever the traffic.
                Some(now + (idle - quiet))
            }
        };
        let next = match (first_by, idle_check) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return std::future::pending().await,
        };
        tokio::time::sleep_until(next.max(now + Duration::from_millis(1))).await;
    }
}

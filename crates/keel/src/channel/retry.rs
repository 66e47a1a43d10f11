//! The one retry loop of the code base, and where a call goes.
//!
//! ```text
//!   Destination::call(call, max_retry)      Destination::open_stream(call, max_retry)
//!     (a unary attempt, below)                (open a stream: Endpoint / Cluster only)
//!            └──────────────────┬──────────────────┘
//!   Destination::with_retries: the one loop
//!     loop:  attempt ──► Endpoint:  BaiduStd / Grpc try_call (one connection)
//!                    ├─► Cluster:   Cluster::attempt (pick a server not tried yet)
//!                    ├─► InProcess: the server's dispatch path
//!                    └─► Custom:    dyn Transport
//!            retryable failure, retries left, deadline not passed,
//!            budget allows (cluster; free when no handler can have run
//!            the request) ──► again
//! ```
//!
//! Owns: the retry decision. What is retryable depends on where the call
//! goes: one server is retried only when the request may not have reached
//! it (a broken connection), several servers also after the answers brpc's
//! default policy retries elsewhere (stopping, overloaded) — see
//! [`Cluster::retryable`]. May not touch: picking servers, connections,
//! timeouts (the channel bounds the whole loop by the call's deadline).
//!
//! ## What a retry costs
//!
//! A cluster's retry budget caps retries at a share of calls, so a sick
//! cluster is not hit by a retry storm on top of its load. A retry after a
//! failure that cannot have reached a handler cost the servers nothing and
//! spends no budget (it still counts against `max_retry`):
//!
//! | failed attempt                                            | handler may have run? | budget  |
//! |-----------------------------------------------------------|-----------------------|---------|
//! | connection refused or not made within the connect timeout | no                    | free    |
//! | connection lost before any byte of the request was written | no                   | free    |
//! | `ELOGOFF`: the server is stopping and refused the request | no                    | free    |
//! | `EHOSTDOWN`: no server could be picked                    | no                    | free    |
//! | connection lost after (part of) the request was written   | yes                   | spends  |
//! | a timeout (with an attempt timeout set)                   | yes                   | spends  |
//! | `ELIMIT`, `EOVERCROWDED`: overloaded                       | no, but retrying overload is the storm the budget stops | spends |
//!
//! The transport tells the first two apart from a connection lost later
//! (both are `EFAILEDSOCKET`) by an internal mark on the status
//! (`Status::request_unwritten`), never sent on the wire.

use keel_pool::FutureBox;
use tokio::time::Instant;

use crate::cluster::{Cluster, Tried};
use crate::status::{Code, Status};
use crate::streaming::{Incoming, Outgoing};
use crate::transport::{Call, InProcess, Remote, Reply, Transport};

/// Where a channel's calls go: one server, the servers of a naming URL,
/// services in this process, or a transport of the user's. (The server's
/// [`Route`](crate::server::Route) is a method a call is dispatched to.)
// One per channel, inside its `Arc`: the size of the largest variant costs
// nothing per call, and boxing it would add a pointer hop to every call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Destination {
    /// One `host:port` (baidu_std or gRPC).
    Endpoint(Remote),
    /// The servers of a naming URL.
    Cluster(Cluster),
    /// Services in this process.
    InProcess(InProcess),
    /// A transport of the user's (its future is boxed by the trait).
    Custom(Box<dyn Transport>),
}

impl Destination {
    /// Sends `call`, retrying retryable failures up to `max_retry` times
    /// within the call's deadline. `last_failure` keeps the failure of the
    /// latest attempt that was retried, for the channel to report if the
    /// deadline cuts the next one short.
    pub(crate) async fn call(
        &self,
        call: &Call<'_>,
        max_retry: u32,
        last_failure: &mut Option<Status>,
    ) -> Result<Reply, Status> {
        let attempt = |mut tried: Tried| async move {
            let result = match self {
                Destination::Endpoint(endpoint) => endpoint.try_call(call).await,
                // In a pooled block: the cluster's attempt (pick, backup,
                // breaker) is a large future, and inline it would make
                // every channel's call future as large, one-server
                // channels too.
                Destination::Cluster(cluster) => {
                    FutureBox::new(cluster.attempt(call, &mut tried)).await
                }
                Destination::InProcess(in_process) => in_process.try_call(call).await,
                Destination::Custom(transport) => transport.call(*call).await,
            };
            (result, tried)
        };
        self.with_retries(call, max_retry, last_failure, attempt)
            .await
    }

    /// Opens a streaming call (see [`Channel::open_stream`](crate::Channel)),
    /// retried as a unary call is: opening sends only headers, so what
    /// fails is a connection that was not made, and another try (another
    /// server, for a cluster) may open it. Once open, a stream stays on
    /// its server and is never retried.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
        max_retry: u32,
        last_failure: &mut Option<Status>,
    ) -> Result<(Outgoing, Incoming), Status> {
        let attempt = |mut tried: Tried| async move {
            let result = match self {
                Destination::Endpoint(endpoint) => endpoint.open_stream(call).await,
                Destination::Cluster(cluster) => cluster.open_stream(call, &mut tried).await,
                Destination::InProcess(_) | Destination::Custom(_) => Err(Status::new(
                    Code::Unimplemented,
                    format!(
                        "{} is a {:?} method: streaming calls need a gRPC channel",
                        call.method, call.method.kind
                    ),
                )),
            };
            (result, tried)
        };
        self.with_retries(call, max_retry, last_failure, attempt)
            .await
    }

    /// The retry loop: runs `attempt` (given the servers tried so far,
    /// which it hands back with its result) again after each retryable
    /// failure, up to `max_retry` times within the call's deadline and as
    /// the budget allows. Every retry in the code base is decided here.
    ///
    /// `Tried` goes in and out by value (it is a few words, `Copy`): an
    /// attempt borrowing it would make the call's future `Send` only for
    /// some lifetimes, which callers cannot use.
    async fn with_retries<T, F>(
        &self,
        call: &Call<'_>,
        max_retry: u32,
        last_failure: &mut Option<Status>,
        mut attempt: impl FnMut(Tried) -> F,
    ) -> Result<T, Status>
    where
        F: Future<Output = (Result<T, Status>, Tried)>,
    {
        let max_retry = match self {
            Destination::Cluster(cluster) => cluster.max_retry(max_retry),
            Destination::InProcess(_) => 0,
            _ => max_retry,
        };
        let mut tried = Tried::default();
        let mut retries = 0;
        loop {
            let (result, now_tried) = attempt(tried).await;
            tried = now_tried;
            match result {
                Err(status)
                    if retries < max_retry
                        && self.retryable(&status)
                        && call.deadline.is_none_or(|d| Instant::now() < d)
                        && self.may_retry(&status) =>
                {
                    retries += 1;
                    *last_failure = Some(status);
                }
                result => return result,
            }
        }
    }

    fn retryable(&self, status: &Status) -> bool {
        match self {
            Destination::Cluster(cluster) => cluster.retryable(status),
            // One server: only a request that may not have reached it.
            _ => status.code() == Code::EFAILEDSOCKET,
        }
    }

    /// Takes a retry after `failure` from the cluster's budget, if it
    /// keeps one and the failed attempt may have run (see the module docs).
    fn may_retry(&self, failure: &Status) -> bool {
        match self {
            Destination::Cluster(cluster) if !may_have_run(failure) => {
                cluster.free_retry();
                true
            }
            Destination::Cluster(cluster) => cluster.spend_retry(),
            _ => true,
        }
    }

    pub(crate) fn pending_calls(&self) -> usize {
        match self {
            Destination::Endpoint(endpoint) => endpoint.pending_calls(),
            Destination::Cluster(cluster) => cluster.pending_calls(),
            Destination::InProcess(_) => 0,
            Destination::Custom(transport) => transport.pending_calls(),
        }
    }
}

/// Whether a handler may have run the request of an attempt that failed
/// with `failure`, or retrying it may add to an overload: such retries
/// spend the retry budget (the table in the module docs).
fn may_have_run(failure: &Status) -> bool {
    match failure.code() {
        Code::EFAILEDSOCKET => !failure.request_unwritten(),
        Code::ELOGOFF | Code::EHOSTDOWN => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_have_run_spend_the_budget() {
        let refused = Status::new(Code::EFAILEDSOCKET, "refused").with_request_unwritten();
        let broken = Status::new(Code::EFAILEDSOCKET, "reset after the request was written");
        assert!(!may_have_run(&refused));
        assert!(may_have_run(&broken));
        assert!(!may_have_run(&Status::new(Code::ELOGOFF, "stopping")));
        assert!(!may_have_run(&Status::new(Code::EHOSTDOWN, "none")));
        for code in [Code::ERPCTIMEDOUT, Code::ELIMIT, Code::EOVERCROWDED] {
            assert!(may_have_run(&Status::new(code, "")), "{code}");
        }
    }
}

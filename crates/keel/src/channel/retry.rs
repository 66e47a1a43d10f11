//! The one retry loop of the code base, and where a call goes.
//!
//! ```text
//!   Route::call(call, max_retry)
//!     loop:  attempt ──► Endpoint:  BaiduStd::try_call (one connection)
//!                    ├─► Cluster:   Cluster::attempt (pick a server not tried yet)
//!                    ├─► InProcess: the server's dispatch path
//!                    └─► Custom:    dyn Transport
//!            retryable failure, retries left, deadline not passed,
//!            budget allows (cluster) ──► again
//! ```
//!
//! Owns: the retry decision. What is retryable depends on where the call
//! goes: one server is retried only when the request may not have reached
//! it (a broken connection), several servers also after the answers brpc's
//! default policy retries elsewhere (stopping, overloaded) — see
//! [`Cluster::retryable`]. May not touch: picking servers, connections,
//! timeouts (the channel bounds the whole loop by the call's deadline).

use tokio::time::Instant;

use crate::cluster::{Cluster, Tried};
use crate::status::{Code, Status};
use crate::transport::{BaiduStd, Call, InProcess, Reply, Transport};

/// Where a channel's calls go.
// One per channel, inside its `Arc`: the size of the largest variant costs
// nothing per call, and boxing it would add a pointer hop to every call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Route {
    /// One `host:port` over baidu_std.
    Endpoint(BaiduStd),
    /// The servers of a naming URL.
    Cluster(Cluster),
    /// Services in this process.
    InProcess(InProcess),
    /// A transport of the user's (its future is boxed by the trait).
    Custom(Box<dyn Transport>),
}

impl Route {
    /// Sends `call`, retrying retryable failures up to `max_retry` times
    /// within the call's deadline.
    pub(crate) async fn call(&self, call: &Call<'_>, max_retry: u32) -> Result<Reply, Status> {
        let max_retry = match self {
            Route::Cluster(cluster) => cluster.max_retry(max_retry),
            Route::InProcess(_) => 0,
            _ => max_retry,
        };
        let mut tried = Tried::default();
        let mut retries = 0;
        loop {
            let result = match self {
                Route::Endpoint(endpoint) => endpoint.try_call(call).await,
                Route::Cluster(cluster) => cluster.attempt(call, &mut tried).await,
                Route::InProcess(in_process) => in_process.try_call(call).await,
                Route::Custom(transport) => transport.call(*call).await,
            };
            match result {
                Err(status)
                    if retries < max_retry
                        && self.retryable(&status)
                        && call.deadline.is_none_or(|d| Instant::now() < d)
                        && self.may_retry() =>
                {
                    retries += 1;
                }
                result => return result,
            }
        }
    }

    fn retryable(&self, status: &Status) -> bool {
        match self {
            Route::Cluster(cluster) => cluster.retryable(status),
            // One server: only a request that may not have reached it.
            _ => status.code() == Code::EFAILEDSOCKET,
        }
    }

    /// Takes a retry from the cluster's budget, if it keeps one.
    fn may_retry(&self) -> bool {
        match self {
            Route::Cluster(cluster) => cluster.spend_retry(),
            _ => true,
        }
    }

    pub(crate) fn pending_calls(&self) -> usize {
        match self {
            Route::Endpoint(endpoint) => endpoint.pending_calls(),
            Route::Cluster(cluster) => cluster.pending_calls(),
            Route::InProcess(_) => 0,
            Route::Custom(transport) => transport.pending_calls(),
        }
    }
}

//! The builtin `grpc.health.v1.Health` service and the [`HealthReporter`]
//! that sets what it answers.
//!
//! ```text
//!   HealthReporter::set ──► watch::Sender<Statuses> ──► Check: the status now
//!   Server::shutdown ─────►   (one map, one version)  └► Watch: the status now, then
//!     (all NOT_SERVING,                                     each change, per stream
//!      later sets ignored)
//! ```
//!
//! One `tokio::sync::watch` channel holds every status: a change wakes each
//! `Watch` stream once, which sends only if its own service's status
//! changed. A stream costs one receiver (no allocation per change), and
//! nothing is kept per service but its status.
//!
//! Semantics follow grpc-go's health server: `""` is the server as a whole;
//! `Check` of a service never registered nor set answers `NOT_FOUND`, while
//! `Watch` answers `SERVICE_UNKNOWN` and keeps the stream open (the status
//! may be set later); once graceful shutdown starts every status is
//! `NOT_SERVING` and later changes are ignored. Keel then also ends each
//! `Watch` stream (after sending `NOT_SERVING`), so that watchers do not
//! hold the graceful shutdown until its deadline.
//!
//! A `Watch` stream is a call in flight for as long as it is open: it holds
//! a place under the server's concurrency limits
//! ([`max_concurrency`](crate::server::ServerBuilder::max_concurrency)) as
//! any streaming call does.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::builtin::health::v1::health_check_response::ServingStatus as WireStatus;
use crate::builtin::health::v1::{Health, HealthCheckRequest, HealthCheckResponse};
use crate::context::Context;
use crate::status::Status;
use crate::streaming::ResponseSink;

/// Whether a service (or the whole server, `""`) takes calls, as the
/// builtin health service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServingStatus {
    /// Taking calls (gRPC's `SERVING`).
    Serving,
    /// Not taking calls: draining, starting, or unhealthy (gRPC's
    /// `NOT_SERVING`); load balancers send its calls elsewhere.
    NotServing,
}

impl ServingStatus {
    fn wire(self) -> WireStatus {
        match self {
            ServingStatus::Serving => WireStatus::Serving,
            ServingStatus::NotServing => WireStatus::NotServing,
        }
    }
}

/// Every status the health service answers, and whether shutdown started.
#[derive(Debug, Default)]
struct Statuses {
    by_service: HashMap<String, ServingStatus>,
    shutting_down: bool,
}

impl Statuses {
    fn wire(&self, service: &str) -> WireStatus {
        self.by_service
            .get(service)
            .map_or(WireStatus::ServiceUnknown, |s| s.wire())
    }
}

/// Sets the statuses a server's builtin `grpc.health.v1.Health` service
/// reports; [`Server::health`](crate::Server::health) returns it. Cheap to
/// clone (one `Arc`); every clone sets the same statuses.
///
/// The server sets `""` (the whole server) and every service it serves to
/// [`Serving`](ServingStatus::Serving) when built, and everything to
/// [`NotServing`](ServingStatus::NotServing) when graceful shutdown starts;
/// after that, `set` changes nothing.
///
/// ```
/// use keel::server::ServingStatus;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let server = keel::Server::builder().bind("127.0.0.1:0").await?;
/// let health = server.health();
/// assert_eq!(health.get(""), Some(ServingStatus::Serving));
/// // A dependency went away: tell load balancers to send calls elsewhere.
/// health.set("", ServingStatus::NotServing);
/// assert_eq!(health.get(""), Some(ServingStatus::NotServing));
/// # Ok(())
/// # })
/// # }
/// ```
#[derive(Clone)]
pub struct HealthReporter {
    statuses: Arc<watch::Sender<Statuses>>,
}

impl fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses = self.statuses.borrow();
        f.debug_struct("HealthReporter")
            .field("statuses", &statuses.by_service)
            .field("shutting_down", &statuses.shutting_down)
            .finish()
    }
}

impl HealthReporter {
    /// A reporter that knows no service yet.
    pub(crate) fn new() -> HealthReporter {
        HealthReporter {
            statuses: Arc::new(watch::Sender::new(Statuses::default())),
        }
    }

    /// Reports `status` for `service` (a full name such as
    /// `example.EchoService`, or `""` for the whole server), waking the
    /// `Watch` streams of that service if it changed. Any name may be set,
    /// served or not. Ignored once graceful shutdown started.
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses.send_if_modified(|statuses| {
            if statuses.shutting_down {
                return false;
            }
            match statuses.by_service.get_mut(service) {
                Some(current) if *current == status => false,
                Some(current) => {
                    *current = status;
                    true
                }
                None => {
                    statuses.by_service.insert(service.to_owned(), status);
                    true
                }
            }
        });
    }

    /// The status reported for `service`, if it was ever set.
    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.statuses.borrow().by_service.get(service).copied()
    }

    /// Graceful shutdown started: everything is `NOT_SERVING` from now on.
    pub(crate) fn shutdown(&self) {
        self.statuses.send_if_modified(|statuses| {
            if statuses.shutting_down {
                return false;
            }
            statuses.shutting_down = true;
            for status in statuses.by_service.values_mut() {
                *status = ServingStatus::NotServing;
            }
            true
        });
    }
}

/// The builtin `grpc.health.v1.Health` implementation, answering from a
/// [`HealthReporter`].
pub(crate) struct HealthService {
    reporter: HealthReporter,
}

impl HealthService {
    pub(crate) fn new(reporter: HealthReporter) -> HealthService {
        HealthService { reporter }
    }
}

impl Health for HealthService {
    async fn check(
        &self,
        _ctx: &Context,
        request: &HealthCheckRequest,
        response: &mut HealthCheckResponse,
    ) -> Result<(), Status> {
        match self.reporter.get(&request.service) {
            Some(status) => {
                response.set_status(status.wire());
                Ok(())
            }
            None => Err(Status::not_found(format!(
                "unknown service {:?}",
                request.service
            ))),
        }
    }

    async fn watch(
        &self,
        _ctx: &Context,
        request: &HealthCheckRequest,
        responses: &mut ResponseSink<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let mut changes = self.reporter.statuses.subscribe();
        let mut sent = None;
        loop {
            let (status, ended) = {
                let statuses = changes.borrow_and_update();
                (statuses.wire(&request.service), statuses.shutting_down)
            };
            if sent != Some(status) {
                let mut response = HealthCheckResponse::default();
                response.set_status(status);
                responses.send(&response).await?;
                sent = Some(status);
            }
            // Changes while sending are seen by `changed` below: the
            // receiver was marked seen before the send, not after.
            if ended || changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_shutdown() {
        let health = HealthReporter::new();
        assert_eq!(health.get("a.B"), None);
        health.set("a.B", ServingStatus::Serving);
        health.set("", ServingStatus::Serving);
        assert_eq!(health.get("a.B"), Some(ServingStatus::Serving));

        let mut changes = health.statuses.subscribe();
        changes.mark_unchanged();
        health.set("a.B", ServingStatus::Serving);
        assert!(
            !changes.has_changed().unwrap(),
            "an unchanged status wakes nobody"
        );

        health.shutdown();
        assert!(changes.has_changed().unwrap());
        assert_eq!(health.get("a.B"), Some(ServingStatus::NotServing));
        assert_eq!(health.get(""), Some(ServingStatus::NotServing));
        health.set("a.B", ServingStatus::Serving);
        assert_eq!(
            health.get("a.B"),
            Some(ServingStatus::NotServing),
            "ignored after shutdown"
        );
        assert_eq!(
            health.statuses.borrow().wire("x.Y"),
            WireStatus::ServiceUnknown
        );
    }
}

//! Naming services: where a channel learns its servers.
//!
//! PLACEHOLDER API (being implemented): the signatures below are the contract
//! the `keel` crate builds on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::Endpoint;

/// Receives endpoint sets from a naming service (keel's directory
/// implements it).
pub trait SinkTarget: Send + Sync + 'static {
    /// The servers are now exactly `endpoints`. Returns false when nobody
    /// listens any more (the channel was dropped): the naming service
    /// should then return.
    fn update(&self, endpoints: Vec<Endpoint>) -> bool;
}

/// Where a naming service sends endpoint sets.
#[derive(Clone)]
pub struct NamingSink {
    target: Arc<dyn SinkTarget>,
}

impl NamingSink {
    /// A sink delivering to `target`.
    pub fn new(target: Arc<dyn SinkTarget>) -> NamingSink {
        NamingSink { target }
    }

    /// Sends the full, current endpoint set; false when the channel is gone.
    pub fn update(&self, endpoints: Vec<Endpoint>) -> bool {
        self.target.update(endpoints)
    }
}

/// A source of endpoint sets: a list, a file, DNS, etcd, or the user's own.
pub trait NamingService: Send + 'static {
    /// Sends the current endpoint set to `sink`, then every change, until
    /// the sink reports the channel gone or nothing more can change. Runs
    /// as the channel's background task; keel also drops it when the
    /// channel drops (rule R5). Ending keeps the last set.
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A naming URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid naming URL {url:?}: {reason}")]
pub struct NamingError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The naming service of `url`: `list://a:1,b:2 weight=3`,
/// `file:///path` (re-read every `interval`), `dns://host:port`
/// (re-resolved every `interval`). `Ok(None)` when `url` has no scheme
/// (a plain `host:port`).
pub fn from_url(
    url: &str,
    interval: Duration,
) -> Result<Option<Box<dyn NamingService>>, NamingError> {
    let _ = interval;
    let Some(list) = url.strip_prefix("list://") else {
        return Ok(None);
    };
    let endpoints = list
        .split(',')
        .map(Endpoint::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NamingError {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Some(Box::new(Static(endpoints))))
}

struct Static(Vec<Endpoint>);

impl NamingService for Static {
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            sink.update(self.0);
        })
    }
}

//! etcd v3 service discovery and registration, spoken with Keel's own gRPC
//! client (no etcd client library).
//!
//! ```text
//!   Server::builder().register(EtcdRegistration::new(url, ttl)?)     Channel::new("etcd://127.0.0.1:2379/services/echo")
//!     │ LeaseGrant(ttl), Put(key = /services/echo/<addr>, lease)        │ Range(/services/echo/…), then Watch from the next revision
//!     │ LeaseKeepAlive every ttl/3 (grant + put again if the lease     │ PUT and DELETE events ──► full sets ──► directory ──► invokers
//!     │ was lost); LeaseRevoke on graceful shutdown                    │ compaction: list and watch again
//!     ▼                                                                ▼
//!   etcd (any of the endpoints listed; on a failure the next one, with backoff)
//! ```
//!
//! # URLs
//!
//! `etcd://host:port[,host:port...]/prefix`: the etcd endpoints (gRPC,
//! plain text), then the key prefix. The endpoint set is every key under
//! `/prefix/` (a `/` is added when the prefix does not end with one, so
//! `/services/echo` does not also match `/services/echo2/...`).
//!
//! # Values
//!
//! Each key's value is one server, in either form:
//!
//! - `host:port`, optionally followed by ` weight=N` (what
//!   [`EtcdRegistration`] writes, and the syntax of `list://`);
//! - a JSON object `{"addr": "host:port", "weight": N}` (`weight` optional,
//!   default 1; other members are ignored), for registries other programs
//!   write.
//!
//! A value that is neither is skipped and reported on stderr with its key;
//! the other servers are kept.
//!
//! # When etcd is away
//!
//! A channel keeps the last set etcd gave while etcd cannot be reached: it
//! tries the listed endpoints in turn, waiting 50 ms after a failure, then
//! twice as long after each further one, up to 2 s. A set etcd itself
//! reports empty (every server deregistered) is applied. A registration
//! keeps its lease alive over a `LeaseKeepAlive` stream; after reconnecting
//! it keeps the same lease when etcd still has it, and grants a new one and
//! puts the key again when not (the lease expired while etcd was away, or
//! etcd lost its data).
//!
//! # In the console
//!
//! `/vars` (and `/metrics`) count watches open, registrations in place and
//! reconnections (`keel_etcd_*`); `/invokers` lists the channels' invokers
//! by their `etcd://` URL, and the process's registrations with their key,
//! lease and state.

mod naming;
mod registration;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use keel_cluster::naming::NamingError;
pub use naming::EtcdNaming;
pub use registration::{
    EtcdRegistration, Registration, RegistrationInfo, RegistrationState, registrations,
};

use crate::Channel;
use crate::status::{Code, Status};
use keel_cluster::Endpoint;

/// etcd's v3 API, the part Keel calls: generated from `proto/etcd` (etcd's
/// package names and field numbers). The clients call any etcd 3.x.
pub mod api {
    /// Package `mvccpb`: keys, values and watch events.
    #[allow(missing_docs)] // generated; see etcd's kv.proto
    pub mod mvccpb {
        crate::include_proto!("mvccpb");
    }

    /// Package `etcdserverpb`: the KV, Watch and Lease services.
    #[allow(missing_docs)] // generated; see etcd's rpc.proto
    pub mod etcdserverpb {
        crate::include_proto!("etcdserverpb");
    }
}

/// How long one unary request to etcd may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait after a failure; doubled after each further one.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An `etcd://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// The etcd endpoints, `host:port` each, in the order given.
    pub endpoints: Vec<String>,
    /// The key prefix, ending with `/`.
    pub prefix: String,
}

impl EtcdUrl {
    /// Parses `etcd://host:port[,host:port...]/prefix`.
    pub fn parse(url: &str) -> Result<EtcdUrl, NamingError> {
        let bad = |reason: String| NamingError {
            url: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix("etcd://") else {
            return Err(bad("expected etcd://host:port[,host:port...]/prefix".into()));
        };
        let Some((hosts, path)) = rest.split_once('/') else {
            return Err(bad(
                "no key prefix: expected etcd://host:port[,host:port...]/prefix".into(),
            ));
        };
        let mut endpoints = Vec::new();
        for (i, host) in hosts.split(',').enumerate() {
            keel_cluster::endpoint::check_addr(host).map_err(|why| {
                bad(format!(
                    "etcd endpoint {} ({host:?}): {why}, as in etcd://host:port/prefix",
                    i + 1
                ))
            })?;
            endpoints.push(host.to_owned());
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(bad(
                "the key prefix is empty: expected etcd://host:port/prefix".into(),
            ));
        }
        if path.contains(char::is_whitespace) {
            return Err(bad("the key prefix contains whitespace".into()));
        }
        Ok(EtcdUrl {
            endpoints,
            prefix: format!("/{path}/"),
        })
    }
}

/// The end of the key range of every key starting with `prefix`: the
/// prefix with its last byte below 0xff plus one (etcd's convention).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: the range to the end of the key space.
    vec![0]
}

/// Parses a key's value into a server: `host:port [weight=N]` or
/// `{"addr": "host:port", "weight": N}`.
pub(crate) fn parse_value(value: &[u8]) -> Result<Endpoint, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
    let text = text.trim();
    if text.starts_with('{') {
        let entry: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("bad JSON value {text:?}: {e}"))?;
        let Some(addr) = entry.get("addr").and_then(serde_json::Value::as_str) else {
            return Err(format!("the JSON value {text:?} has no \"addr\" string"));
        };
        keel_cluster::endpoint::check_addr(addr)
            .map_err(|why| format!("bad address {addr:?}: {why}"))?;
        let weight = match entry.get("weight") {
            None => 1,
            Some(w) => w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| {
                    format!("the weight in {text:?} is not a number from 0 to 4294967295")
                })?,
        };
        return Ok(Endpoint::new(addr).with_weight(weight));
    }
    Endpoint::parse(text).map_err(|e| e.to_string())
}

/// Process-wide etcd counters, shown by the console.
pub(crate) struct EtcdStats {
    /// Naming watches open now.
    pub(crate) watches: AtomicUsize,
    /// Registrations whose key is in etcd now.
    pub(crate) registered: AtomicUsize,
    /// Connections to etcd lost or refused, naming and registration alike.
    pub(crate) failures: AtomicU64,
    /// Endpoint sets sent to channels by etcd naming.
    pub(crate) updates: AtomicU64,
}

pub(crate) static STATS: EtcdStats = EtcdStats {
    watches: AtomicUsize::new(0),
    registered: AtomicUsize::new(0),
    failures: AtomicU64::new(0),
    updates: AtomicU64::new(0),
};

/// The process's etcd counters (what `/vars` shows as `keel_etcd_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EtcdCounters {
    /// Naming watches open now (one per channel on an `etcd://` URL whose
    /// naming is watching).
    pub watches: usize,
    /// Registrations whose key is in etcd now.
    pub registered: usize,
    /// Connections to etcd lost or refused, ever.
    pub failures: u64,
    /// Endpoint sets etcd naming sent to channels, ever.
    pub updates: u64,
}

/// The process's etcd counters now.
pub fn counters() -> EtcdCounters {
    EtcdCounters {
        watches: STATS.watches.load(Ordering::Relaxed),
        registered: STATS.registered.load(Ordering::Relaxed),
        failures: STATS.failures.load(Ordering::Relaxed),
        updates: STATS.updates.load(Ordering::Relaxed),
    }
}

/// Counts one open watch while it lives.
struct WatchOpen;

impl WatchOpen {
    fn new() -> WatchOpen {
        STATS.watches.fetch_add(1, Ordering::Relaxed);
        WatchOpen
    }
}

impl Drop for WatchOpen {
    fn drop(&mut self) {
        STATS.watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection to one of a list of etcd endpoints: the current one until
/// it fails, then the next, with a growing wait.
struct Etcd {
    endpoints: Vec<String>,
    next: usize,
    channel: Option<Channel>,
    backoff: Duration,
}

impl Etcd {
    fn new(endpoints: Vec<String>) -> Etcd {
        Etcd {
            endpoints,
            next: 0,
            channel: None,
            backoff: BACKOFF_FIRST,
        }
    }

    /// The endpoint in use (or to be used next).
    fn endpoint(&self) -> &str {
        &self.endpoints[self.next]
    }

    /// A gRPC channel to the current endpoint. Streams (watches,
    /// keepalives) have no deadline; unary requests get
    /// [`REQUEST_TIMEOUT`] each.
    fn channel(&mut self) -> Channel {
        let endpoint = &self.endpoints[self.next];
        self.channel
            .get_or_insert_with(|| {
                Channel::builder(endpoint)
                    .protocol(crate::Protocol::Grpc)
                    .timeout(None)
                    .connect_timeout(REQUEST_TIMEOUT)
                    .max_retry(0)
                    .build()
                    .expect("etcd endpoints were checked when the URL was parsed")
            })
            .clone()
    }

    /// The current endpoint failed: drop its connection and move to the
    /// next one.
    fn failed(&mut self) {
        STATS.failures.fetch_add(1, Ordering::Relaxed);
        self.channel = None;
        self.next = (self.next + 1) % self.endpoints.len();
    }

    /// Waits before the next attempt: the backoff, with up to a quarter of
    /// it added at random so that many channels do not retry in step.
    async fn pause(&mut self) {
        let jitter_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let quarter = (self.backoff.as_nanos() / 4).max(1) as u64;
        tokio::time::sleep(self.backoff + Duration::from_nanos(jitter_ns % quarter)).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The endpoint answered: the next failure waits the shortest time.
    fn succeeded(&mut self) {
        self.backoff = BACKOFF_FIRST;
    }
}

/// A stream etcd ended without an error.
fn ended(what: &str) -> Status {
    Status::new(Code::Unavailable, format!("etcd ended the {what} stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let url = EtcdUrl::parse("etcd://127.0.0.1:2379,[::1]:2380/services/echo").unwrap();
        assert_eq!(url.endpoints, ["127.0.0.1:2379", "[::1]:2380"]);
        assert_eq!(url.prefix, "/services/echo/");
        assert_eq!(
            EtcdUrl::parse("etcd://h:1/a/").unwrap().prefix,
            "/a/",
            "a trailing slash is not doubled"
        );
        for (url, why) in [
            ("etcd://h:1", "no key prefix"),
            ("etcd://h:1/", "prefix is empty"),
            ("etcd:///x", "etcd endpoint 1"),
            ("etcd://h:1,h/x", "etcd endpoint 2"),
            ("etcd://h:1/a b", "whitespace"),
            ("list://h:1", "expected etcd://"),
        ] {
            let e = EtcdUrl::parse(url).expect_err(url);
            assert!(e.reason.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn prefix_ends_are_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn values_are_host_port_with_a_weight_or_json() {
        assert_eq!(
            parse_value(b"10.0.0.1:80").unwrap(),
            Endpoint::new("10.0.0.1:80")
        );
        assert_eq!(
            parse_value(b" 10.0.0.1:80 weight=3\n").unwrap(),
            Endpoint::new("10.0.0.1:80").with_weight(3)
        );
        assert_eq!(
            parse_value(br#"{"addr": "[::1]:80", "weight": 5, "zone": "a"}"#).unwrap(),
            Endpoint::new("[::1]:80").with_weight(5)
        );
        assert_eq!(
            parse_value(br#"{"addr": "h:1"}"#).unwrap(),
            Endpoint::new("h:1")
        );
        for (value, why) in [
            (&b"nohost"[..], "host:port"),
            (b"h:1 weight=x", "weight"),
            (b"{\"weight\": 2}", "addr"),
            (b"{\"addr\": \"h\"}", "bad address"),
            (b"\xff", "UTF-8"),
        ] {
            let e = parse_value(value).expect_err("bad value");
            assert!(e.contains(why), "{value:?}: {e}");
        }
    }
}

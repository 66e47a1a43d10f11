//! Naming services: where a channel learns its servers.
//!
//! A channel is built on a naming URL. [`from_url`] turns the URL into a
//! [`NamingService`], and keel runs [`NamingService::run`] as the channel's
//! background task. The service sends the *full* endpoint set to a
//! [`NamingSink`] at start and every time the set changes:
//!
//! ```text
//!   list://a:1,b:2 weight=3 ──► ListNaming ─┐  watch channel: ListUpdater::set
//!   file:///etc/servers     ──► FileNaming ─┼─► Announcer ──► NamingSink::update(Vec<Endpoint>)
//!   dns://host:port         ──► DnsNaming  ─┘   sort by address, drop duplicate
//!                                               addresses, skip unchanged sets
//! ```
//!
//! | URL | source | refreshed |
//! |-----|--------|-----------|
//! | `list://127.0.0.1:8001,[::1]:8002 weight=3` | the URL itself | by a [`ListUpdater`], if any |
//! | `file:///path/to/servers` | one entry per line, `#` comments | re-read every `interval` |
//! | `dns://host:port` | `host` resolved to addresses | re-resolved every `interval` |
//!
//! Entries use [`Endpoint::parse`] syntax: `host:port`, optionally followed
//! by `weight=N`. A URL without `://` (a plain `host:port`) is not a naming
//! URL: [`from_url`] returns `Ok(None)` and keel connects to it directly.
//!
//! Problems that can be seen when the channel is built (an unknown scheme,
//! an empty list, a bad entry, a missing file, a bad line in it) are a
//! [`NamingError`] from [`from_url`]. Problems that appear while running (the
//! file becomes unreadable or gains a bad line, DNS fails or resolves to
//! nothing) keep the last good set: a half-edited file or a DNS hiccup never
//! empties a channel. Each distinct problem is reported once on stderr
//! (prefixed `keel naming <url>:`), and again only after the source was
//! good in between.
//!
//! Sets are sorted by address and duplicate addresses dropped (the first
//! entry for an address wins), so a set counts as changed only when its
//! contents change, not its order, and an unchanged set is never sent twice
//! in a row.
//!
//! # Your own naming service
//!
//! Anything that can produce endpoint sets (etcd, consul, a config server)
//! becomes a naming service by implementing [`NamingService`]: send full
//! sets, and return once [`NamingSink::update`] returns false.
//!
//! ```
//! use std::{future::Future, pin::Pin, time::Duration};
//! use keel_cluster::{Endpoint, NamingService, NamingSink};
//!
//! /// Two servers now, a third one an hour later.
//! struct Growing;
//!
//! impl NamingService for Growing {
//!     fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
//!         Box::pin(async move {
//!             let mut servers = vec![Endpoint::new("10.0.0.1:80"), Endpoint::new("10.0.0.2:80")];
//!             if !sink.update(servers.clone()) {
//!                 return; // the channel is gone
//!             }
//!             tokio::time::sleep(Duration::from_secs(3600)).await;
//!             servers.push(Endpoint::new("10.0.0.3:80"));
//!             sink.update(servers);
//!         })
//!     }
//! }
//!
//! let service: Box<dyn NamingService> = Box::new(Growing);
//! # drop(service);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::Endpoint;

mod dns;
mod file;
mod list;

pub use dns::DnsNaming;
pub use file::FileNaming;
pub use list::{ListNaming, ListUpdater};

/// The schemes [`from_url`] knows, and `etcd://` (served by keel itself),
/// for error messages.
pub const SCHEMES: &str = "list://host:port,host:port, file:///path, dns://host:port, \
                           etcd://host:port/prefix (or a plain host:port)";

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

impl NamingError {
    fn new(url: impl Into<String>, reason: impl Into<String>) -> NamingError {
        NamingError {
            url: url.into(),
            reason: reason.into(),
        }
    }

    /// The same error reported against `url` (the URL the user wrote rather
    /// than the one a constructor rebuilt).
    fn with_url(mut self, url: &str) -> NamingError {
        url.clone_into(&mut self.url);
        self
    }
}

/// The naming service of `url`: `list://a:1,b:2 weight=3`,
/// `file:///path` (re-read every `interval`), `dns://host:port`
/// (re-resolved every `interval`). `Ok(None)` when `url` has no scheme
/// (a plain `host:port`).
///
/// The file is read and parsed here, so a missing file or a bad line fails
/// now rather than in the background; DNS names are only checked for
/// `host:port` syntax (resolution happens in [`NamingService::run`]).
/// `interval` must be above zero for `file://` and `dns://`; `list://`
/// ignores it.
pub fn from_url(
    url: &str,
    interval: Duration,
) -> Result<Option<Box<dyn NamingService>>, NamingError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let service: Box<dyn NamingService> = match scheme {
        "list" => Box::new(ListNaming::new(
            list::parse_list(rest).map_err(|reason| NamingError::new(url, reason))?,
        )),
        "file" => Box::new(FileNaming::open(rest, interval).map_err(|e| e.with_url(url))?),
        "dns" => Box::new(DnsNaming::new(rest, interval).map_err(|e| e.with_url(url))?),
        _ => {
            return Err(NamingError::new(
                url,
                format!("unknown scheme {scheme:?}: supported are {SCHEMES}"),
            ));
        }
    };
    Ok(Some(service))
}

/// Checks a refresh interval for `file://` and `dns://`.
fn check_interval(url: &str, interval: Duration) -> Result<(), NamingError> {
    if interval.is_zero() {
        return Err(NamingError::new(
            url,
            "the refresh interval must be above zero",
        ));
    }
    Ok(())
}

/// Endpoints of capacity the announcer's copy of the last set may keep
/// beyond twice the set's size.
const MIN_KEPT: usize = 16;

/// Sends sets to a sink: normalised (sorted by address, duplicate addresses
/// dropped) and only when they differ from the last one sent. Every
/// built-in naming service sends through one; so can yours.
pub struct Announcer {
    sink: NamingSink,
    /// The last set sent, normalised; `None` before the first.
    last: Option<Vec<Endpoint>>,
}

impl Announcer {
    /// An announcer to `sink` that has sent nothing yet.
    pub fn new(sink: NamingSink) -> Announcer {
        Announcer { sink, last: None }
    }

    /// Sends `set` if it differs from the last set sent. False when the
    /// channel is gone: the naming service should return.
    pub fn offer(&mut self, mut set: Vec<Endpoint>) -> bool {
        normalize(&mut set);
        if self.last.as_ref() == Some(&set) {
            return true;
        }
        // Keep our copy in the allocation we already hold when it fits,
        // but not when a past, much larger set left it oversized: the copy
        // follows the current set, not the largest one ever sent (R7).
        match &mut self.last {
            Some(last) if last.capacity() <= 2 * set.len() + MIN_KEPT => last.clone_from(&set),
            _ => self.last = Some(set.clone()),
        }
        self.sink.update(set)
    }
}

/// Sorts `set` by address and drops duplicate addresses, keeping the first
/// entry given for each: the form the built-in services send, and the one
/// keel's directory brings every set to (a user's service may not).
pub fn normalize(set: &mut Vec<Endpoint>) {
    // A stable sort keeps equal addresses in input order, so `dedup_by`
    // keeps the entry that came first.
    set.sort_by(|a, b| a.addr.cmp(&b.addr));
    set.dedup_by(|later, first| later.addr == first.addr);
}

/// Reports problems of a running naming service on stderr, each distinct
/// problem once until the source is good again.
#[derive(Debug)]
pub struct Problems {
    url: String,
    last: Option<String>,
}

impl Problems {
    /// Problems of the naming service of `url` (named in each report).
    pub fn new(url: String) -> Problems {
        Problems { url, last: None }
    }

    /// The source has `problem` (the last good set stays in use).
    pub fn report(&mut self, problem: String) {
        if self.last.as_deref() != Some(problem.as_str()) {
            eprintln!(
                "keel naming {}: {problem}; keeping the last good set",
                self.url
            );
            self.last = Some(problem);
        }
    }

    /// The source is good again: a problem seen later is reported anew.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<Vec<Endpoint>>>);

    impl SinkTarget for Record {
        fn update(&self, endpoints: Vec<Endpoint>) -> bool {
            self.0.lock().unwrap().push(endpoints);
            true
        }
    }

    fn eps(entries: &[&str]) -> Vec<Endpoint> {
        entries
            .iter()
            .map(|e| Endpoint::parse(e).unwrap())
            .collect()
    }

    #[test]
    fn normalize_sorts_and_keeps_the_first_entry_per_address() {
        let mut set = eps(&["b:1", "a:1 weight=5", "b:1 weight=2", "a:1"]);
        normalize(&mut set);
        assert_eq!(set, eps(&["a:1 weight=5", "b:1"]));
    }

    #[test]
    fn announcer_skips_sets_that_only_differ_in_order() {
        let record = Arc::new(Record::default());
        let mut announcer = Announcer::new(NamingSink::new(record.clone()));
        assert!(announcer.offer(eps(&["b:1", "a:1"])));
        assert!(announcer.offer(eps(&["a:1", "b:1", "a:1"])));
        assert!(announcer.offer(eps(&["a:1"])));
        assert!(announcer.offer(eps(&["a:1 weight=2"])));
        assert!(announcer.offer(vec![]));
        assert!(announcer.offer(vec![]));
        assert_eq!(
            *record.0.lock().unwrap(),
            vec![
                eps(&["a:1", "b:1"]),
                eps(&["a:1"]),
                eps(&["a:1 weight=2"]),
                vec![]
            ]
        );
    }

    #[test]
    fn announcer_copy_shrinks_after_a_large_set() {
        let record = Arc::new(Record::default());
        let mut announcer = Announcer::new(NamingSink::new(record.clone()));
        let large: Vec<Endpoint> = (0..10_000)
            .map(|i| Endpoint::new(format!("10.0.{}.{}:80", i / 256, i % 256)))
            .collect();
        assert!(announcer.offer(large));
        assert!(announcer.offer(eps(&["a:1"])));
        let kept = announcer.last.as_ref().expect("a set was sent").capacity();
        assert!(
            kept <= 2 + MIN_KEPT,
            "the copy kept {kept} endpoints of room"
        );
        // A set of a similar size reuses the allocation.
        assert!(announcer.offer(eps(&["a:1", "b:1"])));
        assert_eq!(announcer.last.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn urls_without_a_scheme_are_not_naming_urls() {
        assert!(
            from_url("127.0.0.1:8000", Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let second = Duration::from_secs(1);
        for (url, why) in [
            ("zk://x:1", "unknown scheme \"zk\""),
            ("zk://x:1", "list://"),
            ("zk://x:1", "file://"),
            ("zk://x:1", "dns://"),
            ("zk://x:1", "etcd://"),
            ("list://", "the list is empty"),
            ("list://a:1,,b:2", "entry 2"),
            ("list://a:1,b", "entry 2"),
            ("list://a:1,b", "expected host:port"),
            ("list://a:1 weight=x", "weight"),
            ("file://", "no file path"),
            ("dns://", "host:port"),
            ("dns://nohost", "expected host:port"),
            ("dns://h:99999", "port"),
            ("dns://h:80 weight=2", "dns://host:port"),
            ("dns://h:80", ""),
        ] {
            let Err(e) = from_url(url, second) else {
                assert_eq!(why, "", "{url} was accepted");
                continue;
            };
            let text = e.to_string();
            assert!(text.contains(why), "{url}: {text}");
            assert!(text.contains(&format!("{url:?}")), "{url}: {text}");
        }
        for url in ["dns://h:80", "file:///nonexistent-but-checked-later"] {
            let e = from_url(url, Duration::ZERO).err().expect("zero interval");
            assert!(e.reason.contains("interval"), "{url}: {e}");
        }
    }
}

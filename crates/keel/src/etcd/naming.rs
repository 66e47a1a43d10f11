//! `etcd://` naming: a Range of the prefix, then a Watch from the next
//! revision, each change sent to the channel as a full set.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use keel_cluster::Endpoint;
use keel_cluster::naming::{Announcer, NamingError, NamingService, NamingSink, Problems};

use super::api::etcdserverpb::{
    KvClient, RangeRequest, WatchClient, WatchCreateRequest, WatchRequest, watch_request,
};
use super::api::mvccpb::event::EventType;
use super::{Etcd, EtcdUrl, REQUEST_TIMEOUT, STATS, WatchOpen, ended, parse_value, prefix_end};
use crate::status::Status;

/// The servers registered under an etcd key prefix (see [the module
/// docs](super) for the URL and the values).
///
/// Running, it lists the prefix (one `Range`), sends the set, then watches
/// the prefix from the next revision and sends the new set after each
/// batch of events: two round trips to etcd per channel start, besides
/// connecting. A watch etcd cancels because its revision was compacted
/// lists and watches again at once; a lost connection does the same on the
/// next endpoint after a backoff, keeping the last set meanwhile.
#[derive(Debug)]
pub struct EtcdNaming {
    url: String,
    parsed: EtcdUrl,
}

impl EtcdNaming {
    /// The naming service of `url`, `etcd://host:port[,host:port...]/prefix`.
    /// Only the syntax is checked here: etcd is first asked once running.
    pub fn new(url: &str) -> Result<EtcdNaming, NamingError> {
        Ok(EtcdNaming {
            parsed: EtcdUrl::parse(url)?,
            url: url.to_owned(),
        })
    }
}

/// How one listing-and-watching ended.
enum Ended {
    /// The channel is gone.
    Gone,
    /// etcd compacted past the watch's revision: list again now.
    Compacted,
    /// etcd failed or could not be reached.
    Failed(Status),
}

impl From<Status> for Ended {
    fn from(status: Status) -> Ended {
        Ended::Failed(status)
    }
}

/// The servers under the prefix, by key.
struct Keys {
    url: String,
    servers: BTreeMap<Vec<u8>, Endpoint>,
    /// Keys whose value could not be used, with the revision reported, so
    /// each bad value is reported once.
    bad: BTreeMap<Vec<u8>, i64>,
}

impl Keys {
    /// Records `key`'s value as of `revision`.
    fn put(&mut self, key: Vec<u8>, value: &[u8], revision: i64) {
        match parse_value(value) {
            Ok(endpoint) => {
                self.bad.remove(&key);
                self.servers.insert(key, endpoint);
            }
            Err(why) => {
                self.servers.remove(&key);
                if self.bad.get(&key) != Some(&revision) {
                    eprintln!(
                        "keel naming {}: skipping key {:?}: {why}",
                        self.url,
                        String::from_utf8_lossy(&key)
                    );
                }
                self.bad.insert(key, revision);
            }
        }
    }

    fn delete(&mut self, key: &[u8]) {
        self.servers.remove(key);
        self.bad.remove(key);
    }

    fn set(&self) -> Vec<Endpoint> {
        self.servers.values().cloned().collect()
    }
}

impl NamingService for EtcdNaming {
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let EtcdNaming { url, parsed } = *self;
        Box::pin(async move {
            let mut etcd = Etcd::new(parsed.endpoints);
            let mut announcer = Announcer::new(sink);
            let mut problems = Problems::new(url.clone());
            let mut keys = Keys {
                url,
                servers: BTreeMap::new(),
                bad: BTreeMap::new(),
            };
            let prefix = parsed.prefix.into_bytes();
            loop {
                match list_and_watch(&mut etcd, &prefix, &mut keys, &mut announcer, &mut problems)
                    .await
                {
                    Ended::Gone => return,
                    Ended::Compacted => {}
                    Ended::Failed(status) => {
                        problems.report(format!(
                            "etcd at {}: {}",
                            etcd.endpoint(),
                            status.message()
                        ));
                        etcd.failed();
                        etcd.pause().await;
                    }
                }
            }
        })
    }
}

/// Lists the prefix, sends the set, then watches it and sends each new
/// set, until the channel is gone or etcd fails.
async fn list_and_watch(
    etcd: &mut Etcd,
    prefix: &[u8],
    keys: &mut Keys,
    announcer: &mut Announcer,
    problems: &mut Problems,
) -> Ended {
    let channel = etcd.channel();
    let range_end = prefix_end(prefix);
    let listed = match KvClient::new(&channel)
        .range(&RangeRequest {
            key: prefix.to_vec(),
            range_end: range_end.clone(),
            ..RangeRequest::default()
        })
        .timeout(REQUEST_TIMEOUT)
        .await
    {
        Ok(listed) => listed,
        Err(status) => return Ended::Failed(status),
    };
    let revision = listed.header.as_ref().map_or(0, |h| h.revision);
    keys.servers.clear();
    for kv in listed.kvs {
        keys.put(kv.key, &kv.value, kv.mod_revision);
    }
    keys.bad
        .retain(|key, _| !keys.servers.contains_key(key.as_slice()));
    etcd.succeeded();
    problems.clear();
    STATS.updates.fetch_add(1, Ordering::Relaxed);
    if !announcer.offer(keys.set()) {
        return Ended::Gone;
    }
    match watch(&channel, prefix, range_end, revision + 1, keys, announcer).await {
        Ok(ended) | Err(ended) => ended,
    }
}

/// Watches the prefix from `start`, applying events to `keys` and sending
/// the set after each batch. Only returns how it ended.
async fn watch(
    channel: &crate::Channel,
    prefix: &[u8],
    range_end: Vec<u8>,
    start: i64,
    keys: &mut Keys,
    announcer: &mut Announcer,
) -> Result<Ended, Ended> {
    let (mut requests, mut responses) = WatchClient::new(channel).watch().await?;
    let _open = WatchOpen::new();
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: prefix.to_vec(),
                range_end,
                start_revision: start,
                ..WatchCreateRequest::default()
            },
        )),
    };
    requests.send(&create).await?;
    // `requests` stays open while watching: closing it ends the watch.
    loop {
        let Some(response) = responses.message().await? else {
            return Err(Ended::Failed(ended("watch")));
        };
        if response.compact_revision != 0 {
            return Ok(Ended::Compacted);
        }
        if response.canceled {
            return Err(Ended::Failed(Status::new(
                crate::Code::Unavailable,
                format!("etcd cancelled the watch: {}", response.cancel_reason),
            )));
        }
        if response.events.is_empty() {
            continue;
        }
        for event in response.events {
            let kind = event.r#type();
            let Some(kv) = event.kv else { continue };
            match kind {
                EventType::Put => keys.put(kv.key, &kv.value, kv.mod_revision),
                EventType::Delete => keys.delete(&kv.key),
            }
        }
        if response.fragment {
            // The rest of this revision's events follow.
            continue;
        }
        STATS.updates.fetch_add(1, Ordering::Relaxed);
        if !announcer.offer(keys.set()) {
            return Ok(Ended::Gone);
        }
    }
}

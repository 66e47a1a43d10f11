//! `list://`: servers given by the URL, or by the program through a
//! [`ListUpdater`].

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use super::{Announcer, NamingService, NamingSink};
use crate::endpoint::Endpoint;

/// A list of servers: fixed (`list://a:1,b:2 weight=3`), or replaced by the
/// program at any time through [`ListUpdater`]s.
///
/// The set lives in a [`tokio::sync::watch`] channel: an update replaces the
/// current set (nothing queues up per update, so a fast updater costs the
/// run task nothing but the latest set), and the run task sends each set it
/// sees that differs from the last one sent. Updates faster than the task
/// runs coalesce: intermediate sets may be skipped, the latest never is.
///
/// [`NamingService::run`] sends the current set, then each new one; it
/// returns when the channel is gone, or when no updater is left (this
/// `ListNaming` itself counts as one until it is run), since the set can no
/// longer change.
///
/// ```
/// use keel_cluster::Endpoint;
/// use keel_cluster::naming::ListNaming;
///
/// let naming = ListNaming::new(vec![Endpoint::new("127.0.0.1:8001")]);
/// let updater = naming.updater();
/// // ... hand `naming` to a channel, then later:
/// updater.set(vec![Endpoint::new("127.0.0.1:8002").with_weight(3)]);
/// ```
#[derive(Debug)]
pub struct ListNaming {
    tx: watch::Sender<Vec<Endpoint>>,
    rx: watch::Receiver<Vec<Endpoint>>,
}

/// Replaces the server set of a running [`ListNaming`]. Clones update the
/// same list.
#[derive(Debug, Clone)]
pub struct ListUpdater {
    tx: watch::Sender<Vec<Endpoint>>,
}

impl ListNaming {
    /// A list naming service starting with `endpoints`.
    pub fn new(endpoints: Vec<Endpoint>) -> ListNaming {
        let (tx, rx) = watch::channel(endpoints);
        ListNaming { tx, rx }
    }

    /// A handle that replaces the set, before or while the service runs.
    pub fn updater(&self) -> ListUpdater {
        ListUpdater {
            tx: self.tx.clone(),
        }
    }
}

impl ListUpdater {
    /// The servers are now exactly `endpoints` (order and duplicate
    /// addresses do not matter). Does nothing once the service has ended.
    pub fn set(&self, endpoints: Vec<Endpoint>) {
        // `send_replace` stores the set even when nobody receives (yet), and
        // hands back the old set, which is dropped here: nothing accumulates.
        drop(self.tx.send_replace(endpoints));
    }

    /// Whether the service has ended (its channel is gone): further sets
    /// go nowhere.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl NamingService for ListNaming {
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let ListNaming { tx, mut rx } = *self;
        // Our own sender must not keep the loop alive: with no updater
        // left, the set can never change again.
        drop(tx);
        Box::pin(async move {
            let mut announcer = Announcer::new(sink);
            loop {
                let set = rx.borrow_and_update().clone();
                if !announcer.offer(set) {
                    return;
                }
                // Err only once every sender is gone *and* the latest set
                // was seen, so the last update is never lost.
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// Parses the part of a `list://` URL after the scheme: comma-separated
/// entries. The reason when it cannot be used.
pub(super) fn parse_list(list: &str) -> Result<Vec<Endpoint>, String> {
    if list.trim().is_empty() {
        return Err("the list is empty: give servers as list://host:port,host:port".to_owned());
    }
    list.split(',')
        .enumerate()
        .map(|(i, entry)| Endpoint::parse(entry).map_err(|e| format!("entry {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_entries_with_weights() {
        assert_eq!(
            parse_list("127.0.0.1:8001, 127.0.0.1:8002 weight=3,[::1]:8003").unwrap(),
            vec![
                Endpoint::new("127.0.0.1:8001"),
                Endpoint::new("127.0.0.1:8002").with_weight(3),
                Endpoint::new("[::1]:8003"),
            ]
        );
    }

    #[test]
    fn bad_lists_name_the_entry() {
        assert!(parse_list(" ").unwrap_err().contains("empty"));
        let e = parse_list("a:1,b:2,c").unwrap_err();
        assert!(e.starts_with("entry 3: "), "{e}");
        assert!(e.contains("\"c\""), "{e}");
    }
}

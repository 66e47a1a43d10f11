//! The directory: one invoker per live endpoint of a cluster channel, and
//! the balancer built over them.
//!
//! ```text
//!   naming task ── update(endpoints) ──► Directory
//!                                          │ reuse invokers of kept endpoints,
//!                                          │ create new ones, destroy removed ones
//!                                          ▼
//!                     current: Arc<Snapshot { servers, picker }>
//!   call ── snapshot() ── picker.pick(..) ──► Arc<Invoker> (held for the attempt)
//!     (retries and backup requests: picker.pick_again(..), which leaves
//!      the balancer's turn to the next call's first attempt)
//! ```
//!
//! A snapshot is immutable: an update builds a new one and swaps it in, so a
//! pick never waits for an update and never sees a half-built list.
//!
//! Owns: the cluster's current servers (applying each endpoint set from
//! the naming service: which invokers are kept, created or destroyed),
//! the snapshot and its picker, the count of updates applied, and telling
//! the balancer when a server's load changes. May not touch: calls
//! (attempts, retries, backup requests and broadcast are
//! [`Cluster`](super::Cluster)'s), connections (each invoker's transport),
//! or an invoker's health (the breaker isolates and revives; the
//! directory only skips isolated servers in picks). It holds its invokers;
//! they never hold it back (their feedback reaches it through a weak
//! reference given at construction).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use keel_cluster::naming::SinkTarget;
use keel_cluster::{Endpoint, LoadBalancer, Picker};
use tokio::sync::watch;

use super::breaker::{self, Breaker};
use super::invoker::{Invoker, InvokerState};
use crate::transport::EndpointConfig;

/// One endpoint set and the balancer over it.
pub(crate) struct Snapshot {
    pub(crate) servers: Vec<Arc<Invoker>>,
    pub(crate) picker: Picker,
}

pub(crate) struct Directory {
    pub(crate) name: Arc<str>,
    kind: LoadBalancer,
    config: EndpointConfig,
    pub(crate) breaker: Arc<Breaker>,
    current: RwLock<Arc<Snapshot>>,
    /// One update at a time.
    updating: Mutex<()>,
    /// Whether a first endpoint set has arrived.
    ready: AtomicBool,
    /// How many endpoint sets have been applied.
    updates: watch::Sender<u64>,
}

impl Directory {
    pub(crate) fn new(
        name: Arc<str>,
        kind: LoadBalancer,
        config: EndpointConfig,
        breaker: Arc<Breaker>,
    ) -> Directory {
        let empty: [Arc<Invoker>; 0] = [];
        Directory {
            name,
            kind,
            config,
            breaker,
            current: RwLock::new(Arc::new(Snapshot {
                servers: Vec::new(),
                picker: Picker::new(kind, &empty),
            })),
            updating: Mutex::new(()),
            ready: AtomicBool::new(false),
            updates: watch::channel(0).0,
        }
    }

    /// Runs `f` on the current snapshot, under the read lock (cheaper than
    /// cloning it: the hot path of every call).
    pub(crate) fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The balancer's choice for a call's first attempt, for `hash_key`,
    /// among the usable servers for which `excluded` is false. Takes the
    /// balancer's turn.
    pub(crate) fn pick(
        &self,
        hash_key: u64,
        excluded: impl Fn(&Invoker) -> bool,
    ) -> Option<Arc<Invoker>> {
        self.choose(hash_key, excluded, false)
    }

    /// Like [`pick`](Self::pick), for a later attempt of the same call (a
    /// retry or a backup request): leaves the balancer's turn to the next
    /// first attempt, so later attempts do not skew where first attempts
    /// go.
    pub(crate) fn pick_again(
        &self,
        hash_key: u64,
        excluded: impl Fn(&Invoker) -> bool,
    ) -> Option<Arc<Invoker>> {
        self.choose(hash_key, excluded, true)
    }

    /// The picker's choice over the current servers: a first attempt's, or
    /// (`again`) a later one's.
    fn choose(
        &self,
        hash_key: u64,
        excluded: impl Fn(&Invoker) -> bool,
        again: bool,
    ) -> Option<Arc<Invoker>> {
        self.with_snapshot(|snapshot| {
            let servers = &snapshot.servers;
            let excluded = |i: usize| excluded(&servers[i]);
            let picked = if again {
                snapshot.picker.pick_again(servers, hash_key, excluded)
            } else {
                snapshot.picker.pick(servers, hash_key, excluded)
            };
            picked.map(|i| servers[i].clone())
        })
    }

    /// The isolated server most likely back (see
    /// [`revival_order`](breaker::revival_order)) among those for which
    /// `excluded` is false, if any.
    pub(crate) fn likely_back(&self, excluded: impl Fn(&Invoker) -> bool) -> Option<Arc<Invoker>> {
        self.with_snapshot(|snapshot| {
            snapshot
                .servers
                .iter()
                .filter(|s| s.state() == InvokerState::Isolated && !excluded(s))
                .min_by_key(|s| breaker::revival_order(s))
                .cloned()
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Endpoint sets applied so far.
    pub(crate) fn updates(&self) -> u64 {
        *self.updates.borrow()
    }

    /// Waits until at least `n` endpoint sets have been applied.
    pub(crate) async fn wait_for_updates(&self, n: u64) {
        let mut rx = self.updates.subscribe();
        // The sender lives in `self`, so it cannot be dropped meanwhile.
        let _ = rx.wait_for(|&applied| applied >= n).await;
    }

    /// The servers are now exactly `endpoints`.
    pub(crate) fn update(&self, mut endpoints: Vec<Endpoint>) {
        let _one = self.updating.lock().unwrap_or_else(PoisonError::into_inner);
        keel_cluster::naming::normalize(&mut endpoints);
        let old = self.snapshot();
        let mut kept: HashMap<&str, &Arc<Invoker>> = old
            .servers
            .iter()
            .filter(|i| i.state() != InvokerState::Closing)
            .map(|i| (i.endpoint().addr.as_str(), i))
            .collect();
        let mut servers = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let reuse = kept
                .get(endpoint.addr.as_str())
                .filter(|i| i.endpoint().weight == endpoint.weight)
                .map(|i| Arc::clone(i));
            match reuse {
                Some(invoker) => {
                    kept.remove(endpoint.addr.as_str());
                    servers.push(invoker);
                }
                None => servers.push(Invoker::new(
                    endpoint,
                    self.name.clone(),
                    self.config.clone(),
                    self.breaker.clone(),
                )),
            }
        }
        for (i, invoker) in servers.iter().enumerate() {
            invoker.set_position(i);
        }
        let removed: Vec<Arc<Invoker>> = kept.into_values().cloned().collect();
        let picker = Picker::new(self.kind, &servers);
        let fresh = Arc::new(Snapshot { servers, picker });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        drop(old);
        // Loads that changed while the picker was being built.
        if self.kind == LoadBalancer::LeastActive {
            for i in 0..fresh.servers.len() {
                fresh.picker.feedback(&fresh.servers, i);
            }
        }
        drop(fresh);
        // Removed servers stop being picked at once; calls in flight on
        // them hold them until they finish.
        for invoker in removed {
            invoker.destroy();
        }
        self.ready.store(true, Ordering::Release);
        self.updates.send_modify(|n| *n += 1);
    }

    /// Tells the balancer that `invoker`'s load changed (least active keeps
    /// a tree of loads); nothing for the other balancers.
    pub(crate) fn feedback(&self, invoker: &Invoker) {
        if self.kind != LoadBalancer::LeastActive {
            return;
        }
        let position = invoker.position();
        self.with_snapshot(|snapshot| {
            if snapshot
                .servers
                .get(position)
                .is_some_and(|s| s.id() == invoker.id())
            {
                snapshot.picker.feedback(&snapshot.servers, position);
            }
        });
    }
}

/// Hands a naming service's endpoint sets to a directory, while it lives.
pub(crate) struct Sink(pub(crate) Weak<Directory>);

impl SinkTarget for Sink {
    fn update(&self, endpoints: Vec<Endpoint>) -> bool {
        match self.0.upgrade() {
            Some(directory) => {
                directory.update(endpoints);
                true
            }
            None => false,
        }
    }
}

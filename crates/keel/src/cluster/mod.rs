//! The cluster layer: a channel over many servers (Dubbo's consumer path).
//!
//! ```text
//!   naming (list:// file:// dns:// etcd:// or your own) ──► Directory ──► invokers
//!                                                        │ snapshot
//!   channel's retry loop ──► Cluster::attempt ── pick (load balancer) ──► Invoker::call
//!     (failover: the next        │  backup request: a second server after a delay
//!      attempt avoids the        └  circuit breaker: isolate failing servers
//!      servers tried; then
//!      isolated ones likely
//!      back, see `pick`)
//! ```
//!
//! Owns: the directory, invokers, picks, backup requests, broadcast, the
//! breaker and the retry budget. May not touch: the retry loop itself
//! (`crate::channel` owns it and asks this layer whether a retry may go
//! on) or bytes on the wire (`crate::transport` below).
//!
//! Build one with `Channel::new("list://127.0.0.1:8001,127.0.0.1:8002")` or
//! [`Channel::builder`](crate::Channel::builder) (load balancer, strategy,
//! backup requests, breaker). The naming service runs as the channel's
//! background task and ends when the channel drops (rule R5). Invokers are
//! created for new endpoints and destroyed for removed ones; a destroyed
//! invoker serves the calls already on it and is then dropped whole (R1,
//! R2). [`invokers`] lists every live invoker of the process.

mod breaker;
mod budget;
mod directory;
mod invoker;
mod registry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use keel_cluster::naming::{NamingService, NamingSink};
use tokio::sync::watch;

use crate::status::{Code, Status};
use crate::transport::{Call, EndpointConfig, Reply};
use directory::{Directory, Sink};

pub use breaker::BreakerConfig;
pub use budget::RetryBudget;
pub use invoker::{Invoker, InvokerInfo, InvokerState};
use keel_cluster::Candidate as _;
pub use keel_cluster::{Endpoint, LoadBalancer, balance, naming};
pub use registry::{invokers, live_invokers};

/// What a cluster channel does when a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Retry on another server after a failure the request may not have
    /// been processed in (a broken or refused connection, a stopping or
    /// overloaded server; timeouts too when an attempt timeout is set), up
    /// to `max_retry` times, all within the call's one deadline.
    #[default]
    Failover,
    /// Never retry: the first failure is the call's.
    Failfast,
    /// Send the call to every available server, one after another (Dubbo's
    /// broadcast cluster: e.g. to invalidate every server's cache). It
    /// succeeds with the last server's reply when every server succeeds,
    /// else it fails with the first failure; the deadline covers them all.
    Broadcast,
}

/// How a cluster channel spreads and retries calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// Which server a call goes to (default round robin).
    pub load_balancer: LoadBalancer,
    /// Failover (default), failfast or broadcast.
    pub strategy: Strategy,
    /// Caps retries across all calls (default: 20% of calls, 100 saved up);
    /// `None`: only `max_retry` limits them.
    pub retry_budget: Option<RetryBudget>,
    /// Bounds each attempt; an attempt that runs out of it is retried on
    /// another server (failover). `None` (default): only the call's
    /// deadline bounds it, and a timeout is final.
    pub attempt_timeout: Option<Duration>,
    /// After this long without an answer, send the same call to a second
    /// server; the first success wins and the other is cancelled (brpc's
    /// `backup_request_ms`). `None` (default): no backup requests.
    pub backup_request: Option<Duration>,
    /// Circuit breaking and health checks.
    pub breaker: BreakerConfig,
    /// How often file and DNS naming look again (default 1 s).
    pub naming_interval: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            load_balancer: LoadBalancer::RoundRobin,
            strategy: Strategy::Failover,
            retry_budget: Some(RetryBudget::default()),
            attempt_timeout: None,
            backup_request: None,
            breaker: BreakerConfig::default(),
            naming_interval: Duration::from_secs(1),
        }
    }
}

/// Counters of a cluster channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Endpoint sets applied.
    pub updates: u64,
    /// Attempts retried on another server.
    pub retries: u64,
    /// Of those, retries after a failure that cannot have reached a
    /// handler, which cost no retry budget (see [`RetryBudget`]).
    pub free_retries: u64,
    /// Retries the retry budget refused (the call failed instead).
    pub retries_refused: u64,
    /// Backup requests sent.
    pub backup_requests: u64,
    /// Calls the backup request answered first.
    pub backup_wins: u64,
    /// Servers isolated by the circuit breaker.
    pub isolations: u64,
    /// Isolated servers revived (by a health check, or by answering a
    /// call).
    pub revivals: u64,
    /// Health-check probes sent to isolated servers.
    pub probes: u64,
}

/// The servers of a cluster channel: picks a server per attempt and
/// applies the strategy. Reach it through
/// [`Channel::cluster`](crate::Channel::cluster).
pub struct Cluster {
    directory: Arc<Directory>,
    options: ClusterOptions,
    budget: budget::Tokens,
    retries: AtomicU64,
    free_retries: AtomicU64,
    retries_refused: AtomicU64,
    backup_requests: AtomicU64,
    backup_wins: AtomicU64,
    /// The naming service, until its task starts (at build time inside a
    /// runtime, else at the first call).
    naming: Mutex<Option<Box<dyn NamingService>>>,
    started: AtomicBool,
    /// Dropped with the cluster, which ends the naming task.
    stop: watch::Sender<()>,
    /// How long a call waits for the naming service's first endpoint set.
    first_update_wait: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.directory.name)
            .field("servers", &self.directory.snapshot().servers.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Cluster {
    pub(crate) fn new(
        name: &str,
        naming: Box<dyn NamingService>,
        options: ClusterOptions,
        endpoint: EndpointConfig,
    ) -> Cluster {
        let first_update_wait = endpoint.connect_timeout;
        let directory = Arc::new_cyclic(|me: &Weak<Directory>| {
            // Invokers tell the balancer about changes through this, and
            // never hold the directory (it holds them).
            let me = me.clone();
            let feedback: breaker::Feedback = Arc::new(move |invoker: &Invoker| {
                if let Some(directory) = me.upgrade() {
                    directory.feedback(invoker);
                }
            });
            let breaker = Arc::new(breaker::Breaker::new(options.breaker, feedback));
            Directory::new(name.into(), options.load_balancer, endpoint, breaker)
        });
        let cluster = Cluster {
            first_update_wait,
            directory,
            budget: budget::Tokens::new(options.retry_budget),
            options,
            retries: AtomicU64::new(0),
            free_retries: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
            backup_requests: AtomicU64::new(0),
            backup_wins: AtomicU64::new(0),
            naming: Mutex::new(Some(naming)),
            started: AtomicBool::new(false),
            stop: watch::channel(()).0,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            cluster.start_naming();
        }
        cluster
    }

    fn start_naming(&self) {
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let naming = self
            .naming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(naming) = naming else { return };
        let sink = NamingSink::new(Arc::new(Sink(Arc::downgrade(&self.directory))));
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                // Only resolves when the cluster (the channel) is dropped.
                _ = stop.changed() => {}
                _ = naming.run(sink) => {}
            }
        });
    }

    /// The naming URL (or name) the channel was built on.
    pub fn name(&self) -> &str {
        &self.directory.name
    }

    /// The current servers.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.directory
            .snapshot()
            .servers
            .iter()
            .map(|i| i.endpoint().clone())
            .collect()
    }

    /// The current servers' invokers.
    pub fn invokers(&self) -> Vec<InvokerInfo> {
        self.directory
            .snapshot()
            .servers
            .iter()
            .map(|i| i.info())
            .collect()
    }

    /// The current invoker of the server at `addr`, if it is one of the
    /// channel's servers.
    pub fn invoker(&self, addr: &str) -> Option<InvokerInfo> {
        self.directory.with_snapshot(|snapshot| {
            snapshot
                .servers
                .iter()
                .find(|i| i.endpoint().addr == addr)
                .map(|i| i.info())
        })
    }

    /// Counters.
    pub fn stats(&self) -> ClusterStats {
        let breaker = &self.directory.breaker;
        ClusterStats {
            updates: self.directory.updates(),
            retries: self.retries.load(Ordering::Relaxed),
            free_retries: self.free_retries.load(Ordering::Relaxed),
            retries_refused: self.retries_refused.load(Ordering::Relaxed),
            backup_requests: self.backup_requests.load(Ordering::Relaxed),
            backup_wins: self.backup_wins.load(Ordering::Relaxed),
            isolations: breaker.isolations(),
            revivals: breaker.revivals(),
            probes: breaker.probes(),
        }
    }

    /// Waits until the naming service has delivered at least `n` endpoint
    /// sets (see [`ClusterStats::updates`]); starts it if needed.
    pub async fn wait_for_updates(&self, n: u64) {
        self.start_naming();
        self.directory.wait_for_updates(n).await;
    }

    /// The server for the call's next attempt. A first attempt takes the
    /// balancer's turn; a retry does not (it goes where the balancer would
    /// draw, leaving the sequence of first attempts alone).
    ///
    /// In order: an available server the call has not tried; once those
    /// are exhausted, an isolated one it has not tried, the one most likely
    /// back first (isolated for a broken connection, longest ago: under a
    /// rolling restart it is usually up again before its health check says
    /// so, while a server this call just saw fail is likely still down);
    /// then any available server (one may work now; brpc does the same);
    /// then any isolated one.
    fn pick(&self, call: &Call<'_>, tried: &Tried) -> Result<Arc<Invoker>, Status> {
        let key = call.options.hash_key;
        let directory = &self.directory;
        let tried_already = |invoker: &Invoker| tried.contains(invoker.id());
        let chosen = if tried.is_empty() {
            directory.pick(key, |_| false)
        } else {
            directory.pick_again(key, tried_already)
        };
        chosen
            .or_else(|| directory.likely_back(tried_already))
            .or_else(|| directory.pick_again(key, |_| false))
            .or_else(|| directory.likely_back(|_| false))
            .ok_or_else(|| {
                Status::new(
                    Code::EHOSTDOWN,
                    format!(
                        "no server of {} can take the call ({} known, none available)",
                        directory.name,
                        directory.with_snapshot(|s| s.servers.len())
                    ),
                )
            })
    }

    /// One attempt on `invoker`, counted in flight while it runs.
    async fn attempt_on(&self, invoker: &Arc<Invoker>, call: &Call<'_>) -> Result<Reply, Status> {
        let _in_flight = Attempt::new(&self.directory, invoker);
        let result = invoker.call(call, self.options.attempt_timeout).await;
        self.budget.earn(invoker.answered());
        result
    }

    /// An attempt on `first`, and after `after` without an answer one on a
    /// second server; the first success wins, and the other attempt is
    /// dropped, which removes its pending entry.
    async fn with_backup(
        &self,
        first: &Arc<Invoker>,
        call: &Call<'_>,
        after: Duration,
        tried: &mut Tried,
    ) -> Result<Reply, Status> {
        let primary = self.attempt_on(first, call);
        tokio::pin!(primary);
        tokio::select! {
            biased;
            result = &mut primary => return result,
            _ = tokio::time::sleep(after) => {}
        }
        // Not the balancer's turn: that belongs to the next call's first
        // attempt (taking it here would send every first attempt after a
        // slow one to the same server).
        let second = self.directory.pick_again(call.options.hash_key, |invoker| {
            invoker.id() == first.id() || tried.contains(invoker.id())
        });
        let Some(second) = second else {
            return primary.await;
        };
        // A failover after this call does not go back to either server.
        tried.push(second.id());
        self.backup_requests.fetch_add(1, Ordering::Relaxed);
        let backup = self.attempt_on(&second, call);
        tokio::pin!(backup);
        // The backup first: once counted it is sent, even when the primary
        // answers in the same poll (it is then dropped like any loser).
        tokio::select! {
            biased;
            result = &mut backup => match result {
                Ok(reply) => self.count_backup(Ok(reply)),
                Err(_) => primary.await,
            },
            result = &mut primary => match result {
                Ok(reply) => Ok(reply),
                Err(_) => self.count_backup(backup.await),
            },
        }
    }

    fn count_backup(&self, result: Result<Reply, Status>) -> Result<Reply, Status> {
        if result.is_ok() {
            self.backup_wins.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Whether `status` may be retried on another server: what brpc's
    /// default retry policy retries, plus timeouts of single attempts when
    /// an attempt timeout is set.
    pub(crate) fn retryable(&self, status: &Status) -> bool {
        matches!(
            status.code(),
            Code::EFAILEDSOCKET
                | Code::EHOSTDOWN
                | Code::ELOGOFF
                | Code::ELIMIT
                | Code::EOVERCROWDED
                // gRPC servers that are not Keel's say all of these so.
                | Code::Unavailable
        ) || (status.code() == Code::ERPCTIMEDOUT && self.options.attempt_timeout.is_some())
    }

    /// How many retries a call may make under this cluster's strategy,
    /// given the channel's count.
    pub(crate) fn max_retry(&self, channel_max: u32) -> u32 {
        match self.options.strategy {
            Strategy::Failfast => 0,
            Strategy::Failover | Strategy::Broadcast => channel_max,
        }
    }

    /// Counts a retry that costs no budget (its failure cannot have
    /// reached a handler).
    pub(crate) fn free_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.free_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget (and counts it); false, counted as
    /// refused, when the budget is spent.
    pub(crate) fn spend_retry(&self) -> bool {
        if self.budget.spend() {
            self.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.retries_refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Every available server in turn; see [`Strategy::Broadcast`].
    async fn broadcast(&self, call: &Call<'_>) -> Result<Reply, Status> {
        let servers: Vec<Arc<Invoker>> = self.directory.with_snapshot(|snapshot| {
            let servers = &snapshot.servers;
            servers.iter().filter(|s| s.usable()).cloned().collect()
        });
        if servers.is_empty() {
            return Err(Status::new(
                Code::EHOSTDOWN,
                format!(
                    "no server of {} is available to broadcast to",
                    self.directory.name
                ),
            ));
        }
        let mut last = None;
        let mut first_failure = None;
        for invoker in &servers {
            match self.attempt_on(invoker, call).await {
                Ok(reply) => last = Some(reply),
                Err(status) => {
                    first_failure.get_or_insert(status);
                }
            }
        }
        match (first_failure, last) {
            (Some(status), _) => Err(status),
            (None, Some(reply)) => Ok(reply),
            (None, None) => unreachable!("at least one server was called"),
        }
    }

    /// Waits (bounded) for the naming service's first endpoint set.
    async fn ready(&self) -> Result<(), Status> {
        self.start_naming();
        if self.directory.is_ready() {
            return Ok(());
        }
        // The first endpoint set has not arrived yet: wait for it, as long
        // as connecting may take (and within the call's deadline).
        let wait = self.wait_for_updates(1);
        match tokio::time::timeout(self.first_update_wait, wait).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Status::new(
                Code::EHOSTDOWN,
                format!(
                    "{} has delivered no servers within {:?}",
                    self.directory.name, self.first_update_wait
                ),
            )),
        }
    }

    /// One attempt of `call`: a server the call has not tried (recorded in
    /// `tried`), plus a backup request when configured; under the
    /// broadcast strategy, every server. The channel's retry loop calls
    /// this again after a retryable failure.
    pub(crate) async fn attempt(
        &self,
        call: &Call<'_>,
        tried: &mut Tried,
    ) -> Result<Reply, Status> {
        self.ready().await?;
        if self.options.strategy == Strategy::Broadcast {
            return self.broadcast(call).await;
        }
        let invoker = self.pick(call, tried)?;
        tried.push(invoker.id());
        match self.options.backup_request {
            // Boxed: its two attempts would otherwise triple the size of
            // every call's future, backup or not.
            Some(after) => Box::pin(self.with_backup(&invoker, call, after, tried)).await,
            None => self.attempt_on(&invoker, call).await,
        }
    }

    /// One attempt at opening a streaming call: on a server the call has
    /// not tried (recorded in `tried`), whatever the strategy (a stream
    /// has one server; no backup, no broadcast). The channel's retry loop
    /// calls this again when the server could not be reached. Once open, a
    /// stream stays on its server.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
        tried: &mut Tried,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        self.ready().await?;
        let invoker = self.pick(call, tried)?;
        tried.push(invoker.id());
        invoker.open_stream(call).await
    }

    /// Calls waiting for a response on any of this channel's invokers,
    /// including destroyed ones still finishing theirs.
    pub(crate) fn pending_calls(&self) -> usize {
        let mut pending = 0;
        registry::for_each(|invoker| {
            if invoker.shares(&self.directory.breaker) {
                pending += invoker.pending_calls();
            }
        });
        pending
    }
}

/// Keeps an attempt counted in flight on its invoker (and the balancer
/// told) however the attempt ends, including being dropped.
struct Attempt<'a> {
    directory: &'a Directory,
    invoker: &'a Invoker,
}

impl<'a> Attempt<'a> {
    fn new(directory: &'a Directory, invoker: &'a Invoker) -> Attempt<'a> {
        invoker.begin();
        directory.feedback(invoker);
        Attempt { directory, invoker }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.invoker.end();
        self.directory.feedback(self.invoker);
    }
}

/// Invokers a call already tried (by id), every one of them, so a retry
/// never returns to a server the call saw fail while another is left. The
/// first eight are kept inline (retries are few: `max_retry` is 3 by
/// default, and a backup request adds one server per attempt), so a call
/// allocates nothing for them; a call that tries more servers than that
/// keeps the rest in a vector, allocated then.
#[derive(Clone, Default)]
pub(crate) struct Tried {
    inline: [u64; 8],
    len: usize,
    /// Ids past the inline ones (empty, unallocated, for nearly every call).
    more: Vec<u64>,
}

impl Tried {
    fn push(&mut self, id: u64) {
        if self.contains(id) {
            return;
        }
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
            }
            None => self.more.push(id),
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.inline[..self.len].contains(&id) || self.more.contains(&id)
    }

    /// Whether the call has not made an attempt yet.
    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RawPayload;
    use crate::method::{MethodDescriptor, MethodKind};
    use crate::options::CallOptions;
    use crate::rpcz::SpanHandle;

    static METHOD: MethodDescriptor = MethodDescriptor {
        service: "test.Pick",
        method: "Order",
        path: "/test.Pick/Order",
        index: 0,
        request_type: "keel.Empty",
        response_type: "keel.Empty",
        kind: MethodKind::Unary,
        files: &[],
    };

    /// A cluster of `servers` ports nothing listens on (only picks are made
    /// on it, no call), with health checks too slow to revive anything.
    async fn unreachable(name: &str, servers: u16) -> Cluster {
        let endpoints = (1..=servers)
            .map(|port| Endpoint::new(format!("127.0.0.1:{port}")))
            .collect();
        let slow_checks = Duration::from_secs(600);
        let cluster = Cluster::new(
            name,
            Box::new(naming::ListNaming::new(endpoints)),
            ClusterOptions {
                breaker: BreakerConfig {
                    min_isolation: slow_checks,
                    max_isolation: slow_checks,
                    health_check_interval: slow_checks,
                    ..BreakerConfig::default()
                },
                ..ClusterOptions::default()
            },
            EndpointConfig {
                protocol: crate::transport::Protocol::BaiduStd,
                connect_timeout: Duration::from_millis(10),
                max_body_size: 1 << 20,
                credential: Default::default(),
                tls: None,
                busy_poll: None,
            },
        );
        cluster.wait_for_updates(1).await;
        cluster
    }

    #[test]
    fn tried_remembers_every_server_past_its_inline_ones() {
        let mut tried = Tried::default();
        assert!(tried.is_empty());
        for id in 100..120 {
            tried.push(id);
            tried.push(id); // once only
        }
        assert!((100..120).all(|id| tried.contains(id)));
        assert!(!tried.contains(99) && !tried.contains(120));
        assert_eq!(tried.len + tried.more.len(), 20);
    }

    #[tokio::test]
    async fn a_call_tries_each_of_many_servers_once_before_one_again() {
        let servers = 20;
        let cluster = unreachable("list://many", servers).await;
        let request = RawPayload::default();
        let span = SpanHandle::none();
        let options = CallOptions::new();
        let call = Call {
            method: &METHOD,
            options: &options,
            request: &request,
            deadline: None,
            span: &span,
            kept_deadline: None,
        };
        let mut tried = Tried::default();
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..servers {
            let next = cluster.pick(&call, &tried).expect("a pick");
            assert!(
                seen.insert(next.id()),
                "attempt {attempt} went back to a server it tried"
            );
            tried.push(next.id());
        }
        // Every server tried: one of them again.
        let again = cluster.pick(&call, &tried).expect("a pick");
        assert!(seen.contains(&again.id()));
    }

    #[tokio::test]
    async fn a_retry_tries_the_isolated_server_most_likely_back_before_one_it_saw_fail() {
        let cluster = unreachable("list://pick-order", 5).await;
        let servers = cluster.directory.snapshot().servers.clone();
        let [a, b, c, d, e] = &servers[..] else {
            panic!("five servers")
        };
        // d is isolated for its error rate first, then c and b for broken
        // connections (c first); a and e stay available.
        breaker::failed(d, Code::EINTERNAL, 1_000, 1.0);
        breaker::failed(c, Code::EFAILEDSOCKET, 1, 1.0);
        breaker::failed(b, Code::ELOGOFF, 1, 1.0);
        for isolated in [b, c, d] {
            assert_eq!(isolated.state(), InvokerState::Isolated);
        }
        let request = RawPayload::default();
        let span = SpanHandle::none();
        let options = CallOptions::new();
        let call = Call {
            method: &METHOD,
            options: &options,
            request: &request,
            deadline: None,
            span: &span,
            kept_deadline: None,
        };
        let mut tried = Tried::default();
        let first = cluster.pick(&call, &tried).expect("a first pick");
        assert!([a.id(), e.id()].contains(&first.id()), "available first");
        tried.push(a.id());
        tried.push(e.id());
        // Available servers exhausted: the isolated ones, broken
        // connections first, longest ago first, before any tried one.
        let mut order = Vec::new();
        for _ in 0..3 {
            let next = cluster.pick(&call, &tried).expect("a pick");
            tried.push(next.id());
            order.push(next.id());
        }
        assert_eq!(order, [c.id(), b.id(), d.id()]);
        // Every server tried: an available one again.
        let last = cluster.pick(&call, &tried).expect("a pick");
        assert!([a.id(), e.id()].contains(&last.id()));
    }
}

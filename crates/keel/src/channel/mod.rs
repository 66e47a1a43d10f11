//! Channels: where clients send calls.
//!
//! ```text
//!   Client { channel, options }            (a few words; no heap)
//!      │  unary(&'static METHOD, &req)
//!      ▼
//!   Channel ── Arc ──► Shared { method cache, transport: dyn Transport }
//!      │  1. method cache entry for METHOD (by address; created once)
//!      │  2. deadline from options.timeout, enforced here
//!      ▼
//!   Transport::call(Call { method, options, &req, deadline })
//!      │  baidu_std over TCP (`Channel::new("host:port")`) or in-process
//!      ▼
//!   Reply { payload, attachment } ── decoded by the client
//! ```
//!
//! A `Channel` is a handle: cloning it clones an `Arc`. All per-method state
//! lives in the shared part and is keyed by the method descriptor's address,
//! so it is bounded by the number of methods, however many clients and
//! option sets call through it.

mod baidu_std;
mod in_process;
mod method_cache;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{BreakerConfig, Cluster, ClusterOptions, RetryBudget, Strategy, naming};
use crate::codec::Encode;
use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::server::MethodTable;
use crate::status::{Code, Status};
use keel_cluster::LoadBalancer;
use naming::NamingService;

pub use baidu_std::BaiduStd;
pub(crate) use baidu_std::EndpointConfig;
pub use in_process::InProcess;
pub use method_cache::MethodStatsSnapshot;
pub use transport::{Call, Reply, Transport, TransportFuture};

use method_cache::MethodCache;

/// A handle to a destination (a transport) plus the per-method state of
/// calls to it. Clone it freely: clones share everything.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared<dyn Transport>>,
}

/// One allocation holds both the cache and the transport (unsized last
/// field), so a call follows a single pointer.
struct Shared<T: ?Sized> {
    methods: MethodCache,
    /// Used when a call's options carry no timeout.
    default_timeout: Option<Duration>,
    transport: T,
}

/// A channel address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel address {addr:?}: {reason}")]
pub struct InvalidAddress {
    /// The address given.
    pub addr: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Builds a [`Channel`] over baidu_std: to one `host:port`, or to the
/// servers of a naming URL (`list://`, `file://`, `dns://`) or of a
/// [`NamingService`] of your own, through the [cluster layer](crate::cluster).
///
/// The cluster options (load balancer, strategy, attempt timeout, backup
/// request, breaker, naming interval) apply to channels on a naming URL; a
/// plain `host:port` channel retries on its one connection and ignores
/// them (use `list://host:port` to get them for one server). A naming
/// service runs on the tokio runtime the channel is built in (or first
/// called from), so build long-lived channels on a long-lived runtime.
pub struct ChannelBuilder {
    addr: String,
    naming: Option<Box<dyn NamingService>>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    max_body_size: usize,
    cluster: ClusterOptions,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("addr", &self.addr)
            .field("own_naming", &self.naming.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_body_size", &self.max_body_size)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl ChannelBuilder {
    /// How long connecting may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeout of calls whose options set none (default 1 s; `None`
    /// waits forever).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries after connection failures, within the call's deadline
    /// (default 3, like brpc); a cluster channel retries on other servers.
    /// Options may override it per call.
    pub fn max_retry(mut self, retries: u32) -> Self {
        self.cluster.max_retry = retries;
        self
    }

    /// The load balancer of a cluster channel (default round robin).
    pub fn load_balancer(mut self, balancer: LoadBalancer) -> Self {
        self.cluster.load_balancer = balancer;
        self
    }

    /// Caps the retries of a cluster channel at a share of its calls
    /// (default 20%, 100 saved up; `None`: only `max_retry` limits them).
    pub fn retry_budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.cluster.retry_budget = budget;
        self
    }

    /// Failover (default), failfast or broadcast, for a cluster channel.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.cluster.strategy = strategy;
        self
    }

    /// Bounds each attempt of a cluster channel's calls; an attempt that
    /// runs out of it is retried on another server (see
    /// [`ClusterOptions::attempt_timeout`]).
    pub fn attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.cluster.attempt_timeout = timeout;
        self
    }

    /// Sends a backup request to a second server after `after` without an
    /// answer (cluster channels; brpc's `backup_request_ms`).
    pub fn backup_request(mut self, after: Option<Duration>) -> Self {
        self.cluster.backup_request = after;
        self
    }

    /// Circuit breaking and health checks of a cluster channel's servers.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.cluster.breaker = breaker;
        self
    }

    /// How often `file://` and `dns://` naming look again (default 1 s).
    pub fn naming_interval(mut self, interval: Duration) -> Self {
        self.cluster.naming_interval = interval;
        self
    }

    /// All cluster options at once.
    pub fn cluster_options(mut self, options: ClusterOptions) -> Self {
        self.cluster = options;
        self
    }

    /// Largest response body accepted (default 64 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// The channel. Nothing connects until the first call (like brpc,
    /// a channel can be made before its server is up). A naming service
    /// starts now when called inside a tokio runtime, else at the first
    /// call.
    pub fn build(self) -> Result<Channel, InvalidAddress> {
        let endpoint = EndpointConfig {
            connect_timeout: self.connect_timeout,
            max_retry: self.cluster.max_retry,
            max_body_size: self.max_body_size,
        };
        let naming = match self.naming {
            Some(naming) => naming,
            None => match naming::from_url(&self.addr, self.cluster.naming_interval) {
                Ok(Some(naming)) => naming,
                Ok(None) => {
                    keel_cluster::endpoint::check_addr(&self.addr).map_err(|reason| {
                        InvalidAddress {
                            addr: self.addr.clone(),
                            reason: reason.into(),
                        }
                    })?;
                    let transport = BaiduStd::new(self.addr, endpoint);
                    return Ok(Channel::build(transport, self.timeout));
                }
                Err(e) => {
                    return Err(InvalidAddress {
                        addr: self.addr,
                        reason: e.reason,
                    });
                }
            },
        };
        let cluster = Cluster::new(&self.addr, naming, self.cluster, endpoint);
        Ok(Channel::build(cluster, self.timeout))
    }
}

impl Channel {
    /// A channel over baidu_std with default options to `addr`: one
    /// `host:port`, or a naming URL whose servers the calls are spread over
    /// (`list://127.0.0.1:8001,127.0.0.1:8002 weight=3`, `file:///path`,
    /// `dns://host:port`; see [`cluster`](crate::cluster)). See
    /// [`Channel::builder`] for the options.
    pub fn new(addr: &str) -> Result<Channel, InvalidAddress> {
        Channel::builder(addr).build()
    }

    /// A builder for a channel to `addr` (`host:port` or a naming URL).
    pub fn builder(addr: &str) -> ChannelBuilder {
        ChannelBuilder {
            addr: addr.to_owned(),
            naming: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Some(Duration::from_secs(1)),
            max_body_size: keel_wire::baidu_std::Limits::DEFAULT_MAX_BODY_SIZE,
            cluster: ClusterOptions::default(),
        }
    }

    /// A builder for a cluster channel whose servers come from `naming`, a
    /// naming service of your own (or a [`ListNaming`](naming::ListNaming)
    /// you update from code); `name` labels it in listings.
    pub fn builder_with_naming(name: &str, naming: Box<dyn NamingService>) -> ChannelBuilder {
        ChannelBuilder {
            naming: Some(naming),
            ..Channel::builder(name)
        }
    }

    /// A channel sending calls through `transport`, with no default timeout.
    pub fn from_transport<T: Transport>(transport: T) -> Channel {
        Channel::build(transport, None)
    }

    fn build<T: Transport>(transport: T, default_timeout: Option<Duration>) -> Channel {
        let shared: Arc<Shared<dyn Transport>> = Arc::new(Shared {
            methods: MethodCache::default(),
            default_timeout,
            transport,
        });
        Channel { shared }
    }

    /// A channel to the services in `table`, in this process (see
    /// [`InProcess`]).
    pub fn in_process(table: MethodTable) -> Channel {
        Channel::from_transport(InProcess::new(table))
    }

    /// Sends one call and returns its still-encoded reply. Clients use this;
    /// call it directly to send pre-encoded payloads
    /// ([`RawPayload`](crate::codec::RawPayload)).
    ///
    /// Records the call in the method's stats and enforces
    /// `options.timeout`: past it the transport future is dropped (which
    /// cancels the call) and the result is [`Code::ERPCTIMEDOUT`].
    pub async fn call(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
        request: &(dyn Encode + Sync),
    ) -> Result<Reply, Status> {
        let stats = self.shared.methods.entry(method);
        stats.start();
        let started = Instant::now();
        let timeout = options.timeout.or(self.shared.default_timeout);
        let deadline = timeout.and_then(|t| started.checked_add(t));
        // A child of the server call being handled, if it is traced; else
        // a root of its own when the sampler says so.
        let span = crate::rpcz::client_span(method.path);
        let call = self.shared.transport.call(Call {
            method,
            options,
            request,
            deadline,
            span: &span,
        });
        let result = match deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_elapsed) => Err(timed_out(method, timeout)),
            },
        };
        stats.finish(started.elapsed(), result.is_err());
        if span.is_sampled() {
            span.set_request_size(request.encoded_len() as u64);
            span.mark(crate::rpcz::Mark::ResponseReceived);
            span.finish(result.as_ref().err().map_or(0, |e| e.code().value()));
        }
        result
    }

    /// Per-method counters of this channel, one entry per method called
    /// through it so far (in no particular order).
    pub fn method_stats(&self) -> Vec<MethodStatsSnapshot> {
        self.shared.methods.snapshot()
    }

    /// Number of entries in the per-method table: the number of distinct
    /// methods called through this channel.
    pub fn method_cache_len(&self) -> usize {
        self.shared.methods.len()
    }

    /// Calls sent and waiting for their response now (a table keyed by
    /// correlation id; every call leaves it when it completes, fails, times
    /// out or is dropped).
    pub fn pending_calls(&self) -> usize {
        self.shared.transport.pending_calls()
    }

    /// The cluster layer of a channel built on a naming URL: its servers,
    /// invokers and counters. `None` for a one-endpoint channel.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.shared.transport.cluster()
    }

    /// The transport calls go through.
    pub fn transport(&self) -> &dyn Transport {
        &self.shared.transport
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("methods", &self.method_cache_len())
            .finish_non_exhaustive()
    }
}

fn timed_out(method: &MethodDescriptor, timeout: Option<Duration>) -> Status {
    let millis = timeout.map_or(0, |t| t.as_millis());
    Status::new(
        Code::ERPCTIMEDOUT,
        format!("reached timeout={millis}ms calling {method}"),
    )
}

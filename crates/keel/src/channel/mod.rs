//! Channels: where clients send calls. The top layer of the client side.
//!
//! ```text
//!   Client { channel, options }            (a few words; no heap)
//!      │  unary(&'static METHOD, &req)
//!      ▼
//!   Channel ── Arc ──► ChannelCore { method stats, interceptors, destination }
//!      │  1. stats entry for METHOD (by address; created once)
//!      │  2. client interceptors (metadata, outcome)
//!      │  3. deadline from options.timeout or the channel's default
//!      ▼
//!   Destination::call / open_stream: the one retry loop (retry.rs)
//!      │  one attempt: BaiduStd / Cluster / InProcess / your Transport
//!      ▼
//!   Reply { payload, attachment, metadata } ── decoded by the client
//! ```
//!
//! Owns: the public channel API, the retry policy, per-method statistics
//! of calls sent, client interceptors and the call's deadline. Imports the
//! layers below (`cluster`, `transport`); neither imports it back.
//!
//! A `Channel` is a handle: cloning it clones an `Arc`. All per-method state
//! lives in the shared part and is keyed by the method descriptor's address,
//! so it is bounded by the number of methods, however many clients and
//! option sets call through it.

mod interceptor;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{BreakerConfig, Cluster, ClusterOptions, RetryBudget, Strategy, naming};
use crate::codec::Encode;
use crate::method::MethodDescriptor;
use crate::metrics::MethodStatsTable;
use crate::options::CallOptions;
use crate::server::MethodTable;
use crate::server::dispatch::Dispatcher;
use crate::status::{Code, Status};
use crate::transport::{Call, EndpointConfig, InProcess, Protocol, Remote, Reply, Transport};
use keel_cluster::LoadBalancer;
use naming::NamingService;

pub use crate::metrics::MethodStatsSnapshot;
use interceptor::ClientInterceptors;
pub use interceptor::{CallOutcome, ClientInterceptor};
use retry::Destination;

/// A handle to a destination (a server, a cluster of them, services in this
/// process) plus the per-method state of calls to it. Clone it freely:
/// clones share everything.
#[derive(Clone)]
pub struct Channel {
    core: Arc<ChannelCore>,
}

/// What every clone of a channel shares.
struct ChannelCore {
    methods: MethodStatsTable,
    /// Used when a call's options carry no timeout.
    default_timeout: Option<Duration>,
    /// Retries after retryable failures, unless a call's options say.
    max_retry: u32,
    interceptors: ClientInterceptors,
    destination: Destination,
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
    max_retry: u32,
    max_body_size: Option<usize>,
    protocol: Protocol,
    credential: bytes::Bytes,
    tls: Option<crate::tls::ClientTls>,
    busy_poll: Option<Duration>,
    cluster: ClusterOptions,
    interceptors: ClientInterceptors,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("addr", &self.addr)
            .field("own_naming", &self.naming.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_retry", &self.max_retry)
            .field("max_body_size", &self.max_body_size)
            .field("protocol", &self.protocol)
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
        self.max_retry = retries;
        self
    }

    /// Runs `interceptor` around every call of the channel (in the order
    /// added): it may add metadata (an auth token) and observes outcomes.
    /// See [`ClientInterceptor`].
    pub fn interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// How long a baidu_std connection with a lone caller (one call at a
    /// time) polls its socket for the answer before sleeping in the
    /// runtime (default 50 us; `None` never): the client's side of
    /// [`ServerBuilder::busy_poll`](crate::server::ServerBuilder::busy_poll),
    /// under the same rules (the process's only open connection, plain
    /// TCP, a multi-thread runtime, the last reads each bringing one
    /// answer, backing off when the answers come slower than the window).
    pub fn busy_poll(mut self, window: Option<Duration>) -> Self {
        self.busy_poll = window.filter(|w| !w.is_zero());
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

    /// TLS on every connection the channel opens (gRPC offers ALPN `h2`,
    /// HTTP `http/1.1`), verifying the server's certificate with `tls`'s
    /// roots and name. A certificate that does not verify fails the
    /// connection (`EFAILEDSOCKET`, before any request is written) with
    /// the reason. See [`crate::tls`].
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A credential for the server's
    /// [`Authenticator`](crate::server::Authenticator), which checks it
    /// once per connection: on baidu_std it is sent as
    /// `authentication_data` on the first request of every connection the
    /// channel opens (what a brpc or Keel server checks); on gRPC as the
    /// `authorization` header of every stream (a call's own
    /// `authorization` metadata takes its place). Default: none.
    pub fn credential(mut self, credential: impl Into<bytes::Bytes>) -> Self {
        self.credential = credential.into();
        self
    }

    /// Largest response accepted: a baidu_std body (default 64 MiB, like
    /// brpc) or a gRPC message (default 4 MiB, like grpc-go).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = Some(bytes);
        self
    }

    /// The protocol spoken to the servers (default baidu_std; a
    /// `grpc://host:port` address implies [`Protocol::Grpc`], and
    /// `http://host:port` [`Protocol::Http`], JSON over HTTP/1.1). Applies to
    /// one `host:port` and to every server of a naming URL alike.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The channel. Nothing connects until the first call (like brpc,
    /// a channel can be made before its server is up). A naming service
    /// starts now when called inside a tokio runtime, else at the first
    /// call.
    pub fn build(self) -> Result<Channel, InvalidAddress> {
        let mut protocol = self.protocol;
        let mut addr = self.addr;
        for (scheme, implied) in [("grpc://", Protocol::Grpc), ("http://", Protocol::Http)] {
            if let Some(rest) = addr.strip_prefix(scheme) {
                protocol = implied;
                addr = rest.trim_end_matches('/').to_owned();
            }
        }
        let endpoint = EndpointConfig {
            protocol,
            connect_timeout: self.connect_timeout,
            max_body_size: self.max_body_size.unwrap_or(match protocol {
                Protocol::Grpc => keel_wire::grpc::DEFAULT_MAX_MESSAGE_SIZE,
                _ => keel_wire::baidu_std::Limits::DEFAULT_MAX_BODY_SIZE,
            }),
            credential: self.credential,
            tls: self.tls,
            busy_poll: self.busy_poll,
        };
        let naming = match self.naming {
            Some(naming) => naming,
            None if addr.starts_with("etcd://") => match crate::etcd::EtcdNaming::new(&addr) {
                Ok(naming) => Box::new(naming),
                Err(e) => {
                    return Err(InvalidAddress {
                        addr,
                        reason: e.reason,
                    });
                }
            },
            None => match naming::from_url(&addr, self.cluster.naming_interval) {
                Ok(Some(naming)) => naming,
                Ok(None) => {
                    keel_cluster::endpoint::check_addr(&addr).map_err(|reason| InvalidAddress {
                        addr: addr.clone(),
                        reason: reason.into(),
                    })?;
                    let destination = Destination::Endpoint(Remote::new(addr, endpoint));
                    return Ok(Channel::build(
                        destination,
                        self.timeout,
                        self.max_retry,
                        self.interceptors,
                    ));
                }
                Err(e) => {
                    return Err(InvalidAddress {
                        addr,
                        reason: e.reason,
                    });
                }
            },
        };
        let cluster = Cluster::new(&addr, naming, self.cluster, endpoint);
        Ok(Channel::build(
            Destination::Cluster(cluster),
            self.timeout,
            self.max_retry,
            self.interceptors,
        ))
    }
}

impl Channel {
    /// A channel over baidu_std with default options to `addr`: one
    /// `host:port`, or a naming URL whose servers the calls are spread over
    /// (`list://127.0.0.1:8001,127.0.0.1:8002 weight=3`, `file:///path`,
    /// `dns://host:port`, `etcd://host:port/prefix`; see
    /// [`cluster`](crate::cluster) and [`etcd`](crate::etcd)). See
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
            max_retry: 3,
            max_body_size: None,
            protocol: Protocol::BaiduStd,
            credential: bytes::Bytes::new(),
            tls: None,
            busy_poll: Some(crate::busy_poll::DEFAULT_WINDOW),
            cluster: ClusterOptions::default(),
            interceptors: ClientInterceptors::default(),
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

    /// A channel sending calls through `transport` (one of your own), with
    /// no default timeout; connection failures (`EFAILEDSOCKET`) are retried
    /// up to 3 times.
    pub fn from_transport<T: Transport>(transport: T) -> Channel {
        Channel::build(
            Destination::Custom(Box::new(transport)),
            None,
            3,
            ClientInterceptors::default(),
        )
    }

    fn build(
        destination: Destination,
        default_timeout: Option<Duration>,
        max_retry: u32,
        interceptors: ClientInterceptors,
    ) -> Channel {
        Channel {
            core: Arc::new(ChannelCore {
                methods: MethodStatsTable::default(),
                default_timeout,
                max_retry,
                interceptors,
                destination,
            }),
        }
    }

    /// A channel to the services in `table`, in this process, with no
    /// default timeout: calls go through the same dispatch path as a
    /// server's (see [`InProcess`]). For limits and interceptors in process,
    /// build the channel with [`ServerBuilder::in_process`](crate::server::ServerBuilder::in_process)
    /// or [`Server::in_process`](crate::Server::in_process).
    pub fn in_process(table: MethodTable) -> Channel {
        Channel::from_in_process(InProcess::new(table))
    }

    pub(crate) fn from_dispatcher(dispatcher: Arc<Dispatcher>) -> Channel {
        Channel::from_in_process(InProcess::from_dispatcher(dispatcher))
    }

    fn from_in_process(in_process: InProcess) -> Channel {
        Channel::build(
            Destination::InProcess(in_process),
            None,
            0,
            ClientInterceptors::default(),
        )
    }

    /// Sends one call and returns its still-encoded reply. Clients use this;
    /// call it directly to send pre-encoded payloads
    /// ([`RawPayload`](crate::codec::RawPayload)).
    ///
    /// Records the call in the method's stats, runs the client
    /// interceptors, retries retryable failures, and enforces the timeout
    /// (`options.timeout`, else the channel's default): past it the attempt
    /// in flight is dropped (which cancels it) and the result is
    /// [`Code::ERPCTIMEDOUT`], whose message ends with the last failed
    /// attempt's error, if any (a call that fails at or after its deadline
    /// reports ERPCTIMEDOUT, whatever its last attempt said).
    pub async fn call(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
        request: &(dyn Encode + Sync),
    ) -> Result<Reply, Status> {
        let core = &*self.core;
        if !core.interceptors.is_empty() {
            // Interceptors may change the options (metadata): they work on
            // a copy, which only calls through an interceptor pay for.
            let mut options = options.clone();
            core.interceptors.before(method, &mut options)?;
            let result = self.call_with(method, &options, request).await;
            core.interceptors.after(method, &options, &result);
            return result;
        }
        self.call_with(method, options, request).await
    }

    async fn call_with(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
        request: &(dyn Encode + Sync),
    ) -> Result<Reply, Status> {
        let core = &*self.core;
        let stats = core.methods.get(method);
        stats.start();
        let started = Instant::now();
        let timeout = options.timeout.or(core.default_timeout);
        let deadline = timeout.and_then(|t| started.checked_add(t));
        // A child of the server call being handled, if it is traced; else
        // a root of its own when the sampler says so.
        let span = crate::rpcz::client_span(method.path);
        let kept_deadline = std::sync::atomic::AtomicBool::new(false);
        let attempt = Call {
            method,
            options,
            request,
            deadline,
            span: &span,
            kept_deadline: Some(&kept_deadline),
        };
        let max_retry = options.max_retry.unwrap_or(core.max_retry);
        let mut last_failure = None;
        let outcome = {
            // Pinned here, once: `until` borrows it, so the call's future
            // holds one copy of the attempt's state, not two. Dropped at
            // the end of this block, which cancels an attempt cut short.
            let mut call = std::pin::pin!(core.destination.call(
                &attempt,
                max_retry,
                &mut last_failure
            ));
            match deadline {
                None => Ok(call.await),
                Some(deadline) => until(deadline, &kept_deadline, call.as_mut()).await,
            }
        };
        let result = match outcome {
            // A failure at or past the deadline (the server stopping at the
            // same deadline, or an attempt's own failure coming in late) is
            // the caller's timeout; what failed goes in the message.
            Ok(Err(status)) if deadline.is_some_and(|d| Instant::now() >= d) => {
                // Its connection's own timeout (see `until`) says no more
                // than the channel's would: what failed before is told
                // instead.
                let failure = if status.code() == Code::ERPCTIMEDOUT {
                    last_failure.as_ref()
                } else {
                    Some(&status)
                };
                Err(timed_out(method, timeout, failure))
            }
            Ok(result) => result,
            Err(_elapsed) => Err(timed_out(method, timeout, last_failure.as_ref())),
        };
        stats.finish(
            started.elapsed(),
            result.as_ref().err().map(|e| e.code().value()),
        );
        if span.is_sampled() {
            span.set_request_size(request.encoded_len() as u64);
            span.mark(crate::rpcz::Mark::ResponseReceived);
            span.finish(result.as_ref().err().map_or(0, |e| e.code().value()));
        }
        result
    }

    /// Opens a streaming call of `method` (a gRPC channel's): its request
    /// headers carry `options` (metadata, compression, the timeout as
    /// `grpc-timeout`), client interceptors' `before` runs on them, and
    /// servers that cannot be reached are retried (nothing was sent). The
    /// deadline (`options.timeout`, else the channel's) bounds the whole
    /// stream. Generated clients' streaming methods call this through
    /// [`Client`](crate::Client).
    pub(crate) async fn open_stream(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        let core = &*self.core;
        let mut owned;
        let mut options = options;
        if !core.interceptors.is_empty() {
            owned = options.clone();
            core.interceptors.before(method, &mut owned)?;
            options = &owned;
        }
        let timeout = options.timeout.or(core.default_timeout);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let span = crate::rpcz::client_span(method.path);
        let no_request = crate::codec::RawPayload::default();
        let call = Call {
            method,
            options,
            request: &no_request,
            deadline,
            span: &span,
            kept_deadline: None,
        };
        let max_retry = options.max_retry.unwrap_or(core.max_retry);
        let mut last_failure = None;
        let opened = core
            .destination
            .open_stream(&call, max_retry, &mut last_failure)
            .await;
        let record = crate::streaming::StreamRecord::new(core.methods.entry(method), span);
        match opened {
            Ok((outgoing, mut incoming)) => {
                incoming.set_record(record);
                Ok((outgoing, incoming))
            }
            Err(status) => {
                record.finish(Some(status.code()));
                Err(status)
            }
        }
    }

    /// Per-method counters of this channel, one entry per method called
    /// through it so far (in no particular order).
    pub fn method_stats(&self) -> Vec<MethodStatsSnapshot> {
        self.core.methods.snapshot()
    }

    /// Number of entries in the per-method table: the number of distinct
    /// methods called through this channel.
    pub fn method_stats_len(&self) -> usize {
        self.core.methods.len()
    }

    /// Calls sent and waiting for their response now (a table keyed by
    /// correlation id; every call leaves it when it completes, fails, times
    /// out or is dropped).
    pub fn pending_calls(&self) -> usize {
        self.core.destination.pending_calls()
    }

    /// The cluster layer of a channel built on a naming URL: its servers,
    /// invokers and counters. `None` for any other channel.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.core.destination {
            Destination::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("methods", &self.method_stats_len())
            .finish_non_exhaustive()
    }
}

// In-process channels to a server's own dispatch path. Written here, not in
// `server`, so that the server does not import the channel (which imports
// the server's dispatch path through the in-process transport).
impl crate::server::ServerBuilder {
    /// A channel to these services in this process, through the same
    /// dispatch path as a bound server (limits, interceptors, statistics,
    /// panics answered `EINTERNAL`), with no socket.
    pub fn in_process(self) -> std::io::Result<Channel> {
        let core = self.build_core()?;
        Ok(Channel::from_dispatcher(core.dispatcher.clone()))
    }
}

impl crate::server::Server {
    /// A channel to this server's services in this process, through the
    /// server's own dispatch path: its limits, interceptors and statistics
    /// apply, and a graceful [`shutdown`](Self::shutdown) refuses its new
    /// calls with `ELOGOFF` too.
    pub fn in_process(&self) -> Channel {
        Channel::from_dispatcher(self.dispatcher().clone())
    }
}

/// `call`, or `Err(())` once `deadline` passes: [`tokio::time::timeout_at`],
/// with the timer made only while the call waits somewhere that does not
/// end at the deadline by itself (`kept`: see [`Call::kept_deadline`]).
/// Calls answered while waiting on a baidu_std connection, most of them,
/// never touch the runtime's timer.
async fn until<T>(
    deadline: Instant,
    kept: &std::sync::atomic::AtomicBool,
    mut call: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
) -> Result<T, ()> {
    use std::sync::atomic::Ordering::Relaxed;
    use std::task::Poll;
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        kept.store(false, Relaxed);
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(Ok(result));
        }
        if timer.is_none() && !kept.load(Relaxed) {
            timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// The status of a call whose deadline passed; `last_failure`: the
/// failure of its last attempt that failed, if one did.
fn timed_out(
    method: &MethodDescriptor,
    timeout: Option<Duration>,
    last_failure: Option<&Status>,
) -> Status {
    let millis = timeout.map_or(0, |t| t.as_millis());
    let message = match last_failure {
        // The server's own timeout at the same deadline adds nothing.
        Some(failure) if failure.code() != Code::ERPCTIMEDOUT => {
            format!("reached timeout={millis}ms calling {method}; last attempt: {failure}")
        }
        _ => format!("reached timeout={millis}ms calling {method}"),
    };
    Status::new(Code::ERPCTIMEDOUT, message)
}

//! [`Server`]: binds a port, accepts connections, and shuts down gracefully.
//!
//! ```text
//!   Server::builder().add_service(..).max_concurrency(..).bind(addr)
//!        │
//!        ▼
//!   accept loop ──spawn──► connection task (one per connection, see connection.rs)
//!        │                      reads frames, dispatches, writes responses
//!        │ shutdown(grace)
//!        ▼
//!   stop accepting; connections answer new requests with ELOGOFF, finish
//!   calls in flight, close; whatever still runs at the deadline is aborted
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::method::MethodDescriptor;
use crate::server::dispatch::Dispatcher;
use crate::server::interceptor::{Authenticator, Interceptor, Interceptors};
use crate::server::limit::{Limiter, Limits};
use crate::server::method_table::{MethodTable, MethodTableError};
use crate::server::service::Service;

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    table: MethodTable,
    error: Option<MethodTableError>,
    max_concurrency: Option<usize>,
    method_limits: HashMap<&'static str, usize>,
    max_body_size: Option<usize>,
    interceptors: Interceptors,
    authenticator: Option<Arc<dyn Authenticator>>,
    grpc_max_message_size: Option<usize>,
    grpc_keepalive: Option<Option<Keepalive>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("table", &self.table)
            .field("max_concurrency", &self.max_concurrency)
            .field("interceptors", &self.interceptors)
            .field("authenticator", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Serves `service` (usually a generated `FooServiceServer::new(impl)`).
    /// Adding the same service twice is reported by [`bind`](Self::bind).
    pub fn add_service(mut self, service: impl Service) -> Self {
        if let Err(e) = self.table.add(service) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Calls in flight over the whole server; beyond it calls are refused
    /// with `ELIMIT` (2004). Unlimited by default.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = Some(max);
        self
    }

    /// Calls of `method` in flight; beyond it calls of that method are
    /// refused with `ELIMIT` (2004).
    pub fn method_max_concurrency(mut self, method: &'static MethodDescriptor, max: usize) -> Self {
        self.method_limits.insert(method.path, max);
        self
    }

    /// Largest frame body accepted (meta + message + attachment), checked
    /// before the body is buffered. Default 64 MiB, like brpc.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = Some(bytes);
        self
    }

    /// Largest gRPC message accepted, compressed or not; a larger one is
    /// refused with `RESOURCE_EXHAUSTED` before it is buffered. Default
    /// 4 MiB, like grpc-go.
    pub fn max_grpc_message_size(mut self, bytes: usize) -> Self {
        self.grpc_max_message_size = Some(bytes);
        self
    }

    /// HTTP/2 keepalive of gRPC connections (default [`Keepalive::default`]:
    /// a ping every 2 hours, 20 s to answer, like grpc-go); `None` sends
    /// no pings.
    pub fn grpc_keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.grpc_keepalive = Some(keepalive);
        self
    }

    /// Runs `interceptor` before every call's handler (and its `after`
    /// once the call is answered), on every protocol and in process.
    /// Interceptors run in the order they were added; see
    /// [`Interceptor`].
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Checks each connection's credential on its first request (baidu_std
    /// `authentication_data`); see [`Authenticator`]. In-process calls have
    /// no connection and are not checked.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// The dispatch path this builder describes, and what the protocols
    /// need besides it.
    pub(crate) fn build_core(self) -> io::Result<Arc<ServerCore>> {
        if let Some(e) = self.error {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let mut methods: Vec<Limiter> = Vec::new();
        for service in self.table.services() {
            for m in service.methods {
                let route = self
                    .table
                    .lookup(m.service, m.method)
                    .map_err(|s| io::Error::other(s.to_string()))?;
                if methods.len() <= route.table_index {
                    methods.resize_with(route.table_index + 1, || Limiter::new(None));
                }
                methods[route.table_index] = Limiter::new(self.method_limits.get(m.path).copied());
            }
        }
        let limits = Limits::new(self.max_concurrency, methods);
        Ok(Arc::new(ServerCore {
            dispatcher: Dispatcher::new(self.table, limits, self.interceptors),
            wire_limits: keel_wire::baidu_std::Limits::new(
                self.max_body_size
                    .unwrap_or(keel_wire::baidu_std::Limits::DEFAULT_MAX_BODY_SIZE),
            ),
            authenticator: self.authenticator,
            grpc_max_message_size: self
                .grpc_max_message_size
                .unwrap_or(keel_wire::grpc::DEFAULT_MAX_MESSAGE_SIZE),
            grpc_keepalive: self.grpc_keepalive.unwrap_or(Some(Keepalive::default())),
        }))
    }

    /// Binds `addr` and starts serving in the background; the returned
    /// [`Server`] reports the bound address and shuts down gracefully.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let shared = self.build_core()?;
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        Ok(Server {
            local_addr,
            shared,
            shutdown_tx,
            accept: Some(accept),
        })
    }

    /// Binds `addr` and serves until the process ends.
    pub async fn serve(self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let mut server = self.bind(addr).await?;
        match server.accept.take() {
            Some(accept) => accept.await.map(drop).map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

/// What every connection of one server shares: the dispatch path, and
/// what the protocols check before it.
pub(crate) struct ServerCore {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) wire_limits: keel_wire::baidu_std::Limits,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    /// Largest gRPC message accepted (after decompression too).
    pub(crate) grpc_max_message_size: usize,
    /// HTTP/2 keepalive of gRPC connections (`None`: no pings).
    pub(crate) grpc_keepalive: Option<Keepalive>,
}

/// HTTP/2 keepalive of a server's gRPC connections: a PING every
/// `interval`, and a connection whose peer does not answer one within
/// `timeout` is closed (grpc-go's server `Time` and `Timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between pings (grpc-go's default: 2 hours).
    pub interval: Duration,
    /// How long a ping may go unanswered (grpc-go's default: 20 s).
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(2 * 3600),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted, ever.
    pub accepted: u64,
    /// HTTP/2 keepalive pings sent to gRPC clients, ever.
    pub keepalive_pings: u64,
    /// Calls answered, ever (successes and errors).
    pub calls: u64,
    /// Calls answered with an error code, ever.
    pub errors: u64,
    /// Calls being handled now.
    pub in_flight: usize,
    /// Calls refused by a concurrency limit, ever.
    pub rejected: u64,
}

/// A running server. Dropping it stops accepting and closes every
/// connection at once; [`shutdown`](Self::shutdown) does it gracefully.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<ServerCore>,
    shutdown_tx: watch::Sender<bool>,
    /// The accept loop; it returns the connection tasks still running.
    accept: Option<tokio::task::JoinHandle<JoinSet<()>>>,
}

impl std::fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCore")
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with no services.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The dispatch path of this server (for in-process channels to it).
    pub(crate) fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.shared.dispatcher
    }

    /// Per-method counters of every method served (calls over every
    /// protocol and in process).
    pub fn method_stats(&self) -> Vec<crate::metrics::MethodStatsSnapshot> {
        self.shared.dispatcher.method_stats()
    }

    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.dispatcher.stats;
        let limits = self.shared.dispatcher.limits();
        ServerStats {
            connections: c.connections.load(Ordering::Acquire),
            accepted: c.accepted.load(Ordering::Relaxed),
            keepalive_pings: c.keepalive_pings.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            in_flight: limits.global.current(),
            rejected: limits.global.rejected()
                + limits.methods.iter().map(Limiter::rejected).sum::<u64>(),
        }
    }

    /// Stops accepting, answers new requests on open connections (and
    /// in-process channels to this server) with `ELOGOFF` (2003), lets calls
    /// in flight finish for up to `grace`, then closes every connection.
    /// Returns the number of connections that had to be cut at the deadline.
    /// In-process calls run in their callers' tasks: shutdown waits for them
    /// up to the deadline but cannot cut them.
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        self.shared.dispatcher.drain();
        let _ = self.shutdown_tx.send(true);
        let Some(accept) = self.accept.take() else {
            return 0;
        };
        let deadline = tokio::time::Instant::now() + grace;
        let cut = match accept.await {
            Ok(mut connections) => {
                let mut cut = 0;
                while !connections.is_empty() {
                    if tokio::time::timeout_at(deadline, connections.join_next())
                        .await
                        .is_err()
                    {
                        cut = connections.len();
                        connections.shutdown().await;
                        break;
                    }
                }
                cut
            }
            Err(_) => 0,
        };
        // Calls no connection tracks (in process) finish too, or the
        // deadline passes.
        self.shared.dispatcher.limits().wait_idle(deadline).await;
        cut
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        if let Some(accept) = &self.accept {
            accept.abort();
        }
    }
}

/// Accepts until shutdown; returns the still-running connection tasks so a
/// graceful shutdown can wait for them. Finished tasks are reaped as we go,
/// so the set never holds closed connections.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ServerCore>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.dispatcher.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(super::sniff::serve(
                        stream,
                        peer,
                        shared.clone(),
                        shutdown.clone(),
                    ));
                }
                // Out of descriptors and similar: back off briefly rather
                // than spin; the listener stays open.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections
}

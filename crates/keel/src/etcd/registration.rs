//! Registration: a server's address under a key in etcd, attached to a
//! lease kept alive while the server runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use keel_cluster::naming::NamingError;
use tokio::sync::{oneshot, watch};

use super::api::etcdserverpb::{
    KvClient, LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
};
use super::{Etcd, EtcdUrl, REQUEST_TIMEOUT, STATS, ended};
use crate::status::{Code, Status};

/// Registers a server in etcd, for channels on the same `etcd://` URL to
/// find it: give it to
/// [`ServerBuilder::register`](crate::server::ServerBuilder::register), or
/// [`start`](Self::start) it yourself.
///
/// Running, it grants a lease of `ttl`, puts the server's address under the
/// key with the lease, and keeps the lease alive over a `LeaseKeepAlive`
/// stream (a keepalive every third of the TTL). When the lease is lost (it
/// expired while etcd was unreachable, or etcd lost it) it grants a new one
/// and puts the key again. [`Registration::deregister`] (and a server's
/// graceful shutdown, before it stops accepting) revokes the lease, which
/// deletes the key: watching channels drop the server at once. A process
/// that dies without deregistering leaves the key until the lease expires.
///
/// ```no_run
/// use std::time::Duration;
/// use keel::etcd::EtcdRegistration;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = keel::Server::builder()
///     // .add_service(...)
///     .register(EtcdRegistration::new("etcd://127.0.0.1:2379/services/echo", Duration::from_secs(10))?)
///     .bind("127.0.0.1:8000")
///     .await?;
/// // Clients: keel::Channel::new("etcd://127.0.0.1:2379/services/echo")
/// server.shutdown(Duration::from_secs(5)).await; // deregisters first
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdRegistration {
    url: String,
    parsed: EtcdUrl,
    ttl_secs: i64,
    key: Option<String>,
    address: Option<String>,
    weight: Option<u32>,
}

impl EtcdRegistration {
    /// Registers under `url`'s prefix (`etcd://host:port[,host:port...]/prefix`)
    /// with a lease of `ttl`, rounded up to whole seconds (etcd's unit; at
    /// least 1 s, and etcd may raise very short ones). The key is the
    /// prefix followed by the address, e.g. `/services/echo/127.0.0.1:8000`,
    /// unless set with [`key`](Self::key).
    pub fn new(url: &str, ttl: Duration) -> Result<EtcdRegistration, NamingError> {
        let parsed = EtcdUrl::parse(url)?;
        if ttl.is_zero() {
            return Err(NamingError {
                url: url.to_owned(),
                reason: "the lease TTL must be at least 1 s".into(),
            });
        }
        Ok(EtcdRegistration {
            url: url.to_owned(),
            parsed,
            ttl_secs: ttl.as_secs_f64().ceil() as i64,
            key: None,
            address: None,
            weight: None,
        })
    }

    /// The key to put (default: the URL's prefix and the address). Channels
    /// find it only if it is under the prefix they watch.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The `host:port` clients should call (default: the address the
    /// server is bound to, which must then not be `0.0.0.0` or `[::]`).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The weight weighted load balancers give this server (default 1;
    /// written as `host:port weight=N`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Starts registering, in the background, a server bound to `bound`
    /// (used when no [`address`](Self::address) was given). Must be called
    /// within a tokio runtime.
    pub fn start(self, bound: SocketAddr) -> std::io::Result<Registration> {
        let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
        let address = match self.address {
            Some(address) => {
                keel_cluster::endpoint::check_addr(&address).map_err(|why| {
                    invalid(format!("etcd registration address {address:?}: {why}"))
                })?;
                address
            }
            None if bound.ip().is_unspecified() => {
                return Err(invalid(format!(
                    "the server is bound to {bound}, which clients cannot call: give \
                     EtcdRegistration::address the host:port they should use"
                )));
            }
            None => bound.to_string(),
        };
        let value = match self.weight {
            Some(weight) => format!("{address} weight={weight}"),
            None => address.clone(),
        };
        let key = self
            .key
            .unwrap_or_else(|| format!("{}{address}", self.parsed.prefix));
        let shared = Arc::new(Shared {
            url: self.url,
            key,
            value,
            lease: AtomicI64::new(0),
            state: AtomicU8::new(RegistrationState::Registering as u8),
            grants: AtomicU64::new(0),
        });
        {
            let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
            // Entries of registrations gone go now, so the list follows
            // the live ones (R7).
            live.retain(|weak| weak.strong_count() > 0);
            live.push(Arc::downgrade(&shared));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let (state_tx, state_rx) = watch::channel(RegistrationState::Registering);
        let task = tokio::spawn(run(
            shared.clone(),
            Etcd::new(self.parsed.endpoints),
            self.ttl_secs,
            stop_rx,
            state_tx,
        ));
        Ok(Registration {
            shared,
            stop: Some(stop_tx),
            state: state_rx,
            task,
        })
    }
}

/// Where a registration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RegistrationState {
    /// Not in etcd yet, or again: connecting, granting, putting.
    Registering = 0,
    /// The key is in etcd, its lease kept alive.
    Registered = 1,
    /// Deregistered (the lease revoked) or stopped.
    Deregistered = 2,
}

impl RegistrationState {
    fn from_u8(value: u8) -> RegistrationState {
        match value {
            0 => RegistrationState::Registering,
            1 => RegistrationState::Registered,
            _ => RegistrationState::Deregistered,
        }
    }

    /// `registering`, `registered` or `deregistered`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationState::Registering => "registering",
            RegistrationState::Registered => "registered",
            RegistrationState::Deregistered => "deregistered",
        }
    }
}

/// A registration as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationInfo {
    /// The `etcd://` URL.
    pub url: String,
    /// The key put.
    pub key: String,
    /// The value put (`host:port`, with ` weight=N` when set).
    pub value: String,
    /// The lease the key is attached to (0 before the first grant).
    pub lease: i64,
    /// Where the registration is.
    pub state: RegistrationState,
    /// Leases granted so far: 1, plus one for each lease lost.
    pub grants: u64,
}

/// What a registration's task and its handle share.
struct Shared {
    url: String,
    key: String,
    value: String,
    lease: AtomicI64,
    state: AtomicU8,
    grants: AtomicU64,
}

impl Shared {
    fn info(&self) -> RegistrationInfo {
        // The count before the lease: a count seen brings its lease along.
        let grants = self.grants.load(Ordering::Acquire);
        RegistrationInfo {
            url: self.url.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            lease: self.lease.load(Ordering::Relaxed),
            state: RegistrationState::from_u8(self.state.load(Ordering::Relaxed)),
            grants,
        }
    }

    /// Moves to `state`, keeping the process's count of registered keys.
    fn set(&self, state: RegistrationState, tx: &watch::Sender<RegistrationState>) {
        let old = self.state.swap(state as u8, Ordering::Relaxed);
        let registered = RegistrationState::Registered as u8;
        if old != registered && state == RegistrationState::Registered {
            STATS.registered.fetch_add(1, Ordering::Relaxed);
        } else if old == registered && state != RegistrationState::Registered {
            STATS.registered.fetch_sub(1, Ordering::Relaxed);
        }
        tx.send_replace(state);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.state.load(Ordering::Relaxed) == RegistrationState::Registered as u8 {
            STATS.registered.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Every registration of the process, for the console.
static LIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// The process's registrations now.
pub fn registrations() -> Vec<RegistrationInfo> {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|weak| weak.strong_count() > 0);
    live.iter()
        .filter_map(Weak::upgrade)
        .map(|shared| shared.info())
        .collect()
}

/// A running registration. [`deregister`](Self::deregister) it to take
/// the server out of etcd at once; dropping it stops keeping the lease
/// alive, so the key goes when the lease expires (as when the process
/// dies).
#[derive(Debug)]
pub struct Registration {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    state: watch::Receiver<RegistrationState>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.info().fmt(f)
    }
}

impl Registration {
    /// The registration now.
    pub fn info(&self) -> RegistrationInfo {
        self.shared.info()
    }

    /// Waits until the key is in etcd (at once if it is).
    pub async fn registered(&mut self) {
        let _ = self
            .state
            .wait_for(|state| *state == RegistrationState::Registered)
            .await;
    }

    /// Revokes the lease (deleting the key) and stops; waits for etcd up to
    /// 4 s (connecting, then revoking, 2 s each). Returns whether etcd
    /// confirmed the revocation.
    pub async fn deregister(mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        if tokio::time::timeout(REQUEST_TIMEOUT * 2, task)
            .await
            .is_err()
        {
            self.task.abort();
            return false;
        }
        self.shared.state.load(Ordering::Relaxed) == RegistrationState::Deregistered as u8
            && self.shared.lease.load(Ordering::Relaxed) == 0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the key in etcd until stopped, then revokes the lease.
async fn run(
    shared: Arc<Shared>,
    mut etcd: Etcd,
    ttl: i64,
    mut stop: oneshot::Receiver<()>,
    state: watch::Sender<RegistrationState>,
) {
    let mut lease = None;
    let mut last_problem: Option<String> = None;
    loop {
        let failure = tokio::select! {
            _ = &mut stop => break,
            failure = keep_registered(&mut etcd, &shared, &state, &mut lease, ttl) => failure,
        };
        shared.set(RegistrationState::Registering, &state);
        let problem = format!("etcd at {}: {}", etcd.endpoint(), failure.message());
        if last_problem.as_deref() != Some(problem.as_str()) {
            eprintln!(
                "keel registration {} ({}): {problem}; registering again",
                shared.url, shared.key
            );
            last_problem = Some(problem);
        }
        if failure.code() == Code::NotFound {
            // The lease is gone but etcd answered: grant a new one now.
            continue;
        }
        etcd.failed();
        tokio::select! {
            _ = &mut stop => break,
            () = etcd.pause() => {}
        }
    }
    if let Some(id) = lease {
        let channel = etcd.channel();
        let revoked = LeaseClient::new(&channel)
            .lease_revoke(&LeaseRevokeRequest { id })
            .timeout(REQUEST_TIMEOUT)
            .await;
        match revoked {
            Ok(_) => shared.lease.store(0, Ordering::Relaxed),
            Err(status) => eprintln!(
                "keel registration {} ({}): cannot revoke lease {id:x}: {}; the key goes when it expires",
                shared.url,
                shared.key,
                status.message()
            ),
        }
    }
    shared.set(RegistrationState::Deregistered, &state);
}

/// Puts the key and keeps its lease alive; returns only on a failure.
async fn keep_registered(
    etcd: &mut Etcd,
    shared: &Shared,
    state: &watch::Sender<RegistrationState>,
    lease: &mut Option<i64>,
    ttl: i64,
) -> Status {
    match try_keep_registered(etcd, shared, state, lease, ttl).await {
        Ok(never) => match never {},
        Err(status) => status,
    }
}

async fn try_keep_registered(
    etcd: &mut Etcd,
    shared: &Shared,
    state: &watch::Sender<RegistrationState>,
    lease: &mut Option<i64>,
    ttl: i64,
) -> Result<Infallible, Status> {
    let channel = etcd.channel();
    let leases = LeaseClient::new(&channel);
    let (mut beats, mut answers) = leases.lease_keep_alive().await?;
    let mut keep_alive = async |id: i64| -> Result<i64, Status> {
        beats.send(&LeaseKeepAliveRequest { id }).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answers.message()).await {
            Ok(answer) => Ok(answer?.ok_or_else(|| ended("keepalive"))?.ttl),
            Err(_) => Err(Status::new(
                Code::DeadlineExceeded,
                format!("no keepalive answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    };
    // After a reconnection, the lease held may still be alive.
    let mut alive = None;
    if let Some(id) = *lease
        && keep_alive(id).await? > 0
    {
        alive = Some(id);
    }
    let id = match alive {
        Some(id) => id,
        None => {
            let granted = leases
                .lease_grant(&LeaseGrantRequest { ttl, id: 0 })
                .timeout(REQUEST_TIMEOUT)
                .await?;
            if !granted.error.is_empty() {
                return Err(Status::new(Code::Unavailable, granted.error));
            }
            // The lease first, then the count: whoever sees the new count
            // sees the new lease.
            shared.lease.store(granted.id, Ordering::Relaxed);
            shared.grants.fetch_add(1, Ordering::Release);
            *lease = Some(granted.id);
            granted.id
        }
    };
    KvClient::new(&channel)
        .put(&PutRequest {
            key: shared.key.as_bytes().to_vec(),
            value: shared.value.as_bytes().to_vec(),
            lease: id,
            ..PutRequest::default()
        })
        .timeout(REQUEST_TIMEOUT)
        .await?;
    shared.lease.store(id, Ordering::Relaxed);
    shared.set(RegistrationState::Registered, state);
    etcd.succeeded();
    let period = Duration::from_secs(ttl as u64) / 3;
    loop {
        tokio::time::sleep(period).await;
        if keep_alive(id).await? <= 0 {
            *lease = None;
            return Err(Status::new(Code::NotFound, format!("lease {id:x} expired")));
        }
    }
}

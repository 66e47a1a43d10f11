//! One server of a cluster channel: its connection, state and statistics.
//!
//! ```text
//!   Directory ──Arc──► Invoker ◄──Arc── calls in flight on it
//!                        │  state: available ⇄ isolated → closing
//!                        │  in-flight, latency (EWMA), errors (EWMA)
//!                        ├─ Remote (BaiduStd or Grpc: one connection)
//!                        ├─ BreakerState (its part of the channel's breaker)
//!                        └─ Registration (weak entry in the registry)
//! ```
//!
//! Owns: the connection, the state, the in-flight count, the statistics
//! (calls, errors, latency and error averages) and the registry entry. May
//! not touch: when a server is isolated or revived, or how it is checked
//! (the circuit breaker, `breaker.rs`, decides that and makes every state
//! change through [`swap_state`](Invoker::swap_state); see its docs for the
//! seam), nor the balancer (the directory's).
//!
//! `destroy()` only marks the invoker closing: it is not picked again, the
//! calls that hold it finish normally, and when the last holder lets go it
//! is dropped whole: its connection task ends (rule R5), its health checks
//! end, its registry entry leaves through the guard (R1). Nothing is
//! cleared to pretend (R2).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use keel_cluster::{Candidate, Endpoint};
use tokio::time::Instant;

/// The longest an isolated server picked as the last resort waits for its
/// endpoint's reconnect backoff to end (see [`Invoker::call`]).
const LAST_RESORT_WAIT: Duration = Duration::from_millis(100);

use super::breaker::{self, Breaker, BreakerState};
use super::registry::Registration;
use crate::status::{Code, Status};
use crate::transport::{Call, EndpointConfig, Remote, Reply};

/// Where an invoker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvokerState {
    /// Picked by the load balancer.
    Available,
    /// Failing: not picked until a health check revives it.
    Isolated,
    /// Removed from the channel (destroyed): never picked again; calls in
    /// flight on it finish.
    Closing,
}

const AVAILABLE: u8 = 0;
const ISOLATED: u8 = 1;
const CLOSING: u8 = 2;

impl InvokerState {
    fn from_u8(v: u8) -> InvokerState {
        match v {
            AVAILABLE => InvokerState::Available,
            ISOLATED => InvokerState::Isolated,
            _ => InvokerState::Closing,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            InvokerState::Available => AVAILABLE,
            InvokerState::Isolated => ISOLATED,
            InvokerState::Closing => CLOSING,
        }
    }

    /// `"available"`, `"isolated"` or `"closing"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokerState::Available => "available",
            InvokerState::Isolated => "isolated",
            InvokerState::Closing => "closing",
        }
    }
}

/// Fixed-point scale of the error average (1.0 = `EMA_ONE`).
const EMA_ONE: u32 = 1 << 16;
/// The average moves 1/16 of the way to each new sample.
const EMA_SHIFT: u32 = 4;

/// One server of a cluster channel. See the [module docs](self).
pub struct Invoker {
    id: u64,
    endpoint: Endpoint,
    hash: u64,
    channel: Arc<str>,
    transport: Remote,
    state: AtomicU8,
    in_flight: AtomicU32,
    latency_us: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    error_ema: AtomicU32,
    /// Index in the directory's newest server list (for balancer feedback).
    position: AtomicUsize,
    /// What the channel's breaker remembers of this server; dropped with
    /// it, which ends its health checks at once.
    breaker_state: BreakerState,
    _registration: Registration,
}

/// A snapshot of one invoker, as the registry and the console list it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokerInfo {
    /// Process-unique id.
    pub id: u64,
    /// The server.
    pub endpoint: Endpoint,
    /// The channel's naming URL.
    pub channel: String,
    /// Available, isolated or closing.
    pub state: InvokerState,
    /// Calls in flight on it now.
    pub in_flight: u32,
    /// Calls it has answered (successfully or not).
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Recent error rate, 0 to 1 (an exponential average over about the
    /// last 16 calls; what the circuit breaker watches).
    pub error_rate: f64,
    /// Recent average latency, in microseconds.
    pub latency_us: u64,
    /// Whether its connection is up.
    pub connected: bool,
    /// Calls waiting for a response on its connection.
    pub pending: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Invoker {
    pub(crate) fn new(
        endpoint: Endpoint,
        channel: Arc<str>,
        config: EndpointConfig,
        breaker: Arc<Breaker>,
    ) -> Arc<Invoker> {
        let breaker_state = BreakerState::new(breaker);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Arc::new_cyclic(|weak: &Weak<Invoker>| Invoker {
            id,
            hash: keel_cluster::balance::endpoint_hash(&endpoint.addr),
            transport: Remote::new(endpoint.addr.clone(), config),
            endpoint,
            channel,
            state: AtomicU8::new(AVAILABLE),
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_ema: AtomicU32::new(0),
            position: AtomicUsize::new(usize::MAX),
            breaker_state,
            _registration: Registration::new(id, weak.clone()),
        })
    }

    /// Process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The server.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Available, isolated or closing.
    pub fn state(&self) -> InvokerState {
        InvokerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Attempts it has answered (successfully or not).
    pub fn answered(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls in flight on it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Calls waiting for a response on its connection.
    pub fn pending_calls(&self) -> usize {
        self.transport.pending_calls()
    }

    pub(crate) fn position(&self) -> usize {
        self.position.load(Ordering::Relaxed)
    }

    pub(crate) fn set_position(&self, position: usize) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// One more attempt in flight.
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt fewer in flight.
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A snapshot for listings.
    pub fn info(&self) -> InvokerInfo {
        InvokerInfo {
            id: self.id,
            endpoint: self.endpoint.clone(),
            channel: self.channel.to_string(),
            state: self.state(),
            in_flight: self.in_flight(),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            error_rate: f64::from(self.error_ema.load(Ordering::Relaxed)) / f64::from(EMA_ONE),
            latency_us: self.latency_us.load(Ordering::Relaxed),
            connected: self.transport.is_connected(),
            pending: self.pending_calls(),
        }
    }

    /// Whether this invoker belongs to the channel whose breaker is
    /// `breaker`.
    pub(crate) fn shares(&self, breaker: &Arc<Breaker>) -> bool {
        self.breaker_state.is_of(breaker)
    }

    /// Stops picking this invoker, for good. Calls in flight on it finish;
    /// it is dropped (connection closed, registry entry gone) when the
    /// last of them lets go of it.
    pub fn destroy(&self) {
        breaker::close(self);
    }

    /// Sends one attempt of `call` to this server, keeping the in-flight
    /// count, latency and error statistics, and isolating the server when
    /// it fails too often.
    /// The caller counts the attempt in flight around it
    /// ([`begin`](Self::begin) / [`end`](Self::end)).
    /// `timeout` bounds this attempt alone (failover on timeouts): an
    /// attempt that runs out of it fails with ERPCTIMEDOUT and counts as a
    /// timeout of this server. An attempt that ends at the call's deadline
    /// (dropped by the channel, through a guard, so no second timer is
    /// armed for it; or answered ERPCTIMEDOUT by the server, which stopped
    /// at the same deadline) counts only when the server had a fair chance
    /// ([`BreakerConfig::fair_timeout`](super::BreakerConfig::fair_timeout)):
    /// a caller's short deadline says nothing about the server. One
    /// dropped before the deadline (a caller giving up, a backup request's
    /// loser) counts as nothing.
    pub(crate) async fn call(
        self: &Arc<Self>,
        call: &Call<'_>,
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
        // Sent here though isolated: the cluster has no other server left
        // and picked this one as the most likely back (a restarted server,
        // say). Its endpoint may still wait after its last failures, and
        // would refuse the call: when that wait is about to end, wait with
        // it instead. A longer one means the server has been down a while:
        // the call fails at once, as any call to it would.
        if self.state() == InvokerState::Isolated {
            if let Some(until) = self.transport.waiting_until() {
                if until <= Instant::now() + LAST_RESORT_WAIT {
                    tokio::time::sleep_until(until).await;
                }
            }
        }
        let mut outcome = Outcome {
            invoker: self,
            started: Instant::now(),
            deadline: call.deadline,
            recorded: false,
        };
        let attempt = self.transport.try_call(call);
        let result = match timeout {
            None => attempt.await,
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    outcome.record(Some(Code::ERPCTIMEDOUT));
                    return Err(Status::new(
                        Code::ERPCTIMEDOUT,
                        format!(
                            "{} did not answer within the attempt timeout of {t:?}",
                            self.endpoint.addr
                        ),
                    ));
                }
            },
        };
        match &result {
            Err(status) if status.code() == Code::ERPCTIMEDOUT => outcome.timed_out(),
            _ => outcome.record(result.as_ref().err().map(Status::code)),
        }
        result
    }

    /// Counts one answered attempt (`failure`: its error code, if any) and
    /// hands a failure to the breaker. (Crate-private for the breaker's
    /// tests, which drive it.)
    pub(super) fn record(self: &Arc<Self>, failure: Option<Code>, elapsed: Duration) {
        // Every atomic here is shared by all the threads calling this
        // server, so the common case (a healthy server answering) touches
        // as few as it can: the call count, and the latency 1 call in 4.
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = match failure {
            None if calls % 4 != 0 && self.latency_us.load(Ordering::Relaxed) != 0 => false,
            None => {
                // Latency of answers only: a server that fails fast must
                // not look fast to least active and p2c.
                let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
                let _ = self
                    .latency_us
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                        Some(if old == 0 {
                            us
                        } else {
                            old - (old >> EMA_SHIFT) + (us >> EMA_SHIFT)
                        })
                    });
                false
            }
            Some(code) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                // Overload answers say "busy", not "broken": isolating busy
                // servers would pile their load on the others.
                !matches!(code, Code::ELIMIT | Code::EOVERCROWDED)
            }
        };
        if failure.is_none() && self.state.load(Ordering::Relaxed) == ISOLATED {
            // A retry reached an isolated server, and it answered.
            breaker::succeeded_while_isolated(self);
        }
        if !failed && self.error_ema.load(Ordering::Relaxed) == 0 {
            return; // a healthy server stays at 0
        }
        let step =
            |ema: u32| ema - (ema >> EMA_SHIFT) + if failed { EMA_ONE >> EMA_SHIFT } else { 0 };
        let ema = match self
            .error_ema
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| Some(step(e)))
        {
            Ok(old) | Err(old) => step(old),
        };
        if let Some(code) = failure.filter(|_| failed) {
            breaker::failed(self, code, calls, f64::from(ema) / f64::from(EMA_ONE));
        }
    }

    // What the breaker (breaker.rs) may do to an invoker; nothing else
    // calls these.

    /// The breaker's record of this invoker.
    pub(super) fn breaker_state(&self) -> &BreakerState {
        &self.breaker_state
    }

    /// Sets the state, returning the one it left. Only the breaker calls
    /// it, under its transition lock, so its count of available invokers
    /// always matches the states.
    pub(super) fn swap_state(&self, to: InvokerState) -> InvokerState {
        InvokerState::from_u8(self.state.swap(to.as_u8(), Ordering::AcqRel))
    }

    /// Forgets the recent error rate (a revived server starts afresh); the
    /// error count stays.
    pub(super) fn reset_error_rate(&self) {
        self.error_ema.store(0, Ordering::Relaxed);
    }

    /// Opens a streaming call on this invoker's connection.
    pub(crate) async fn open_stream(
        &self,
        call: &Call<'_>,
    ) -> Result<(crate::streaming::Outgoing, crate::streaming::Incoming), Status> {
        self.transport.open_stream(call).await
    }

    /// Sends `call` over this invoker's connection (reconnecting if need
    /// be) without counting it anywhere: the breaker's probes must not
    /// move the statistics it judges the server by. A probe is the
    /// endpoint's next connection attempt, paced by the breaker: when the
    /// endpoint still waits after its last failures, the probe waits with
    /// it (if that ends before the probe's deadline) rather than be
    /// refused, so no probe is spent without trying the server.
    pub(super) async fn call_unrecorded(&self, call: &Call<'_>) -> Result<Reply, Status> {
        if let Some(until) = self.transport.waiting_until() {
            if call.deadline.is_none_or(|deadline| until < deadline) {
                tokio::time::sleep_until(until).await;
            }
        }
        self.transport.try_call(call).await
    }
}

/// Records an attempt's outcome exactly once: when it returns, or, when it
/// is dropped at or past the call's deadline, as a timeout if the server
/// had a fair chance.
struct Outcome<'a> {
    invoker: &'a Arc<Invoker>,
    started: Instant,
    deadline: Option<Instant>,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, failure: Option<Code>) {
        self.recorded = true;
        self.invoker.record(failure, self.started.elapsed());
    }

    /// The attempt timed out, not by its own attempt timeout (at the
    /// call's deadline, or the server gave up at it): a timeout of the
    /// server if it had a fair chance, else nothing.
    fn timed_out(&mut self) {
        if breaker::fair_timeout(self.invoker, self.started.elapsed()) {
            self.record(Some(Code::ERPCTIMEDOUT));
        }
        self.recorded = true;
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.timed_out();
        }
    }
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Candidate for Invoker {
    fn weight(&self) -> u32 {
        self.endpoint.weight
    }

    fn usable(&self) -> bool {
        self.state.load(Ordering::Relaxed) == AVAILABLE
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    fn hash(&self) -> u64 {
        self.hash
    }
}

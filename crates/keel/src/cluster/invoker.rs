//! One server of a cluster channel: its connection, state and statistics.
//!
//! ```text
//!   Directory ──Arc──► Invoker ◄──Arc── calls in flight on it
//!                        │  state: available ⇄ isolated → closing
//!                        │  in-flight, latency (EWMA), errors (EWMA)
//!                        ├─ BaiduStd (one multiplexed connection)
//!                        └─ Registration (weak entry in the registry)
//! ```
//!
//! `destroy()` only marks the invoker closing: it is not picked again, the
//! calls that hold it finish normally, and when the last holder lets go it
//! is dropped whole: its connection task ends (rule R5), its registry entry
//! leaves through the guard (R1). Nothing is cleared to pretend (R2).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use keel_cluster::{Candidate, Endpoint};
use tokio::sync::watch;
use tokio::time::Instant;

use super::registry::Registration;
use crate::codec::RawPayload;
use crate::method::{MethodDescriptor, MethodKind};
use crate::options::CallOptions;
use crate::rpcz::SpanHandle;
use crate::status::{Code, Status};
use crate::transport::{BaiduStd, Call, EndpointConfig, Reply};

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

    /// `"available"`, `"isolated"` or `"closing"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokerState::Available => "available",
            InvokerState::Isolated => "isolated",
            InvokerState::Closing => "closing",
        }
    }
}

/// Circuit breaking and health checking of a cluster channel's servers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Isolate failing servers at all (default true).
    pub enabled: bool,
    /// Isolate a server when its recent error rate (an exponential average
    /// over about the last 16 calls) passes this (default 0.5). A failed
    /// connection isolates at once.
    pub error_rate: f64,
    /// Calls a server must have answered since it was (re)admitted before
    /// its error rate can isolate it (default 16).
    pub min_calls: u32,
    /// Time between health checks of an isolated server (default 1 s, at
    /// least 10 ms): reconnect, then a probe call; any answer from the
    /// server revives it.
    pub health_check_interval: Duration,
    /// A server isolated for its error rate stays out at least this long
    /// before health checks may revive it (default 100 ms) ...
    pub min_isolation: Duration,
    /// ... and, isolated again within this long of its revival, twice as
    /// long as the time before, up to this (default 30 s; brpc's
    /// circuit breaker does the same), so a server failing one method does
    /// not flap in and out every interval.
    pub max_isolation: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            error_rate: 0.5,
            min_calls: 16,
            health_check_interval: Duration::from_secs(1),
            min_isolation: Duration::from_millis(100),
            max_isolation: Duration::from_secs(30),
        }
    }
}

/// What a cluster channel's invokers share: how many are available (so
/// isolation never takes out the last one) and the breaker settings.
pub(crate) struct Health {
    pub(crate) breaker: BreakerConfig,
    available: AtomicUsize,
    /// Serialises state changes, which are rare (isolate, revive, destroy),
    /// so `available` always matches the states.
    transitions: Mutex<()>,
    pub(crate) isolations: AtomicU64,
    pub(crate) revivals: AtomicU64,
    /// Tells the balancer a server's usability changed (given by the
    /// directory at construction; the invoker knows nothing of it).
    feedback: Feedback,
}

/// How an invoker tells its balancer that its load or usability changed.
pub(crate) type Feedback = Arc<dyn Fn(&Invoker) + Send + Sync>;

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("breaker", &self.breaker)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(breaker: BreakerConfig, feedback: Feedback) -> Health {
        Health {
            breaker,
            available: AtomicUsize::new(0),
            transitions: Mutex::new(()),
            isolations: AtomicU64::new(0),
            revivals: AtomicU64::new(0),
            feedback,
        }
    }

    /// Tells the balancer that `invoker` became usable or unusable.
    fn changed(&self, invoker: &Invoker) {
        (self.feedback)(invoker);
    }

    fn transition(&self) -> std::sync::MutexGuard<'_, ()> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fixed-point scale of the error average (1.0 = `EMA_ONE`).
const EMA_ONE: u32 = 1 << 16;
/// The average moves 1/16 of the way to each new sample.
const EMA_SHIFT: u32 = 4;

/// The method a health check calls. Any answer from the server, even
/// "no such service", shows it is up and reading requests.
static PROBE: MethodDescriptor = MethodDescriptor {
    service: "keel.Health",
    method: "Check",
    path: "/keel.Health/Check",
    index: 0,
    request_type: "keel.Empty",
    response_type: "keel.Empty",
    kind: MethodKind::Unary,
};
static PROBE_OPTIONS: CallOptions = CallOptions::new();

/// One server of a cluster channel. See the [module docs](self).
pub struct Invoker {
    id: u64,
    endpoint: Endpoint,
    hash: u64,
    channel: Arc<str>,
    transport: BaiduStd,
    state: AtomicU8,
    in_flight: AtomicU32,
    latency_us: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    error_ema: AtomicU32,
    /// `calls` when the invoker was last revived: the breaker judges only
    /// calls answered since.
    admitted_at: AtomicU64,
    /// The last error-rate isolation's length, in ms (0: none yet).
    isolation_ms: AtomicU64,
    /// When it was last revived (ms since the process's epoch; 0: never).
    revived_at_ms: AtomicU64,
    /// Index in the directory's newest server list (for balancer feedback).
    slot: AtomicUsize,
    health: Arc<Health>,
    /// Dropped with the invoker, which ends its health checks at once.
    alive: watch::Sender<()>,
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
        health: Arc<Health>,
    ) -> Arc<Invoker> {
        let _t = health.transition();
        health.available.fetch_add(1, Ordering::AcqRel);
        Arc::new_cyclic(|weak: &Weak<Invoker>| Invoker {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            hash: keel_cluster::balance::endpoint_hash(&endpoint.addr),
            transport: BaiduStd::new(endpoint.addr.clone(), config),
            endpoint,
            channel,
            state: AtomicU8::new(AVAILABLE),
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_ema: AtomicU32::new(0),
            admitted_at: AtomicU64::new(0),
            isolation_ms: AtomicU64::new(0),
            revived_at_ms: AtomicU64::new(0),
            slot: AtomicUsize::new(usize::MAX),
            health: health.clone(),
            alive: watch::channel(()).0,
            _registration: Registration::new(weak.clone()),
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

    pub(crate) fn slot(&self) -> usize {
        self.slot.load(Ordering::Relaxed)
    }

    pub(crate) fn set_slot(&self, slot: usize) {
        self.slot.store(slot, Ordering::Relaxed);
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

    /// Whether this invoker belongs to the directory whose health is
    /// `health`.
    pub(crate) fn shares(&self, health: &Arc<Health>) -> bool {
        Arc::ptr_eq(&self.health, health)
    }

    /// Stops picking this invoker, for good. Calls in flight on it finish;
    /// it is dropped (connection closed, registry entry gone) when the
    /// last of them lets go of it.
    pub fn destroy(&self) {
        let _t = self.health.transition();
        if self.state.swap(CLOSING, Ordering::AcqRel) == AVAILABLE {
            self.health.available.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends one attempt of `call` to this server, keeping the in-flight
    /// count, latency and error statistics, and isolating the server when
    /// it fails too often.
    /// The caller counts the attempt in flight around it
    /// ([`begin`](Self::begin) / [`end`](Self::end)).
    /// `timeout` bounds this attempt alone (failover on timeouts): an
    /// attempt that runs out of it fails with ERPCTIMEDOUT. An attempt the
    /// channel drops at the call's deadline counts as a timeout of this
    /// server too (through a guard, so no second timer is armed for it);
    /// one dropped earlier (a backup request's loser) counts as nothing.
    pub(crate) async fn call(
        self: &Arc<Self>,
        call: &Call<'_>,
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
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
                Err(_elapsed) => Err(Status::new(
                    Code::ERPCTIMEDOUT,
                    format!(
                        "{} did not answer within the attempt timeout of {t:?}",
                        self.endpoint.addr
                    ),
                )),
            },
        };
        outcome.record(result.as_ref().err().map(Status::code));
        result
    }

    /// Counts one answered attempt (`failure`: its error code, if any).
    fn record(self: &Arc<Self>, failure: Option<Code>, elapsed: Duration) {
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
        let breaker = &self.health.breaker;
        if !failed || !breaker.enabled {
            return;
        }
        let samples = calls.saturating_sub(self.admitted_at.load(Ordering::Relaxed));
        if failure == Some(Code::EFAILEDSOCKET) {
            self.isolate(false);
        } else if samples >= u64::from(breaker.min_calls)
            && f64::from(ema) / f64::from(EMA_ONE) > breaker.error_rate
        {
            self.isolate(true);
        }
    }

    /// Takes this invoker out of rotation until a health check revives it,
    /// unless it is the channel's last available one. `for_errors`:
    /// isolated by its error rate (it stays out a while, see
    /// [`BreakerConfig::min_isolation`]) rather than by a broken connection
    /// (checked again from the next interval on).
    fn isolate(self: &Arc<Self>, for_errors: bool) {
        // Only a runtime can check it later (an attempt dropped after its
        // runtime is gone records outside one): no runtime, no isolation.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        {
            let _t = self.health.transition();
            if self.state.load(Ordering::Acquire) != AVAILABLE
                || self.health.available.load(Ordering::Acquire) <= 1
            {
                return;
            }
            self.state.store(ISOLATED, Ordering::Release);
            self.health.available.fetch_sub(1, Ordering::AcqRel);
            self.health.isolations.fetch_add(1, Ordering::Relaxed);
        }
        self.health.changed(self);
        let breaker = &self.health.breaker;
        let first_wait = if for_errors {
            let revived = self.revived_at_ms.load(Ordering::Relaxed);
            let last = self.isolation_ms.load(Ordering::Relaxed);
            let min = breaker.min_isolation.as_millis() as u64;
            let max = (breaker.max_isolation.as_millis() as u64).max(min);
            let recently = revived != 0 && now_ms().saturating_sub(revived) < max;
            let ms = if recently && last > 0 {
                last.saturating_mul(2).clamp(min, max)
            } else {
                min
            };
            self.isolation_ms.store(ms, Ordering::Relaxed);
            Duration::from_millis(ms)
        } else {
            health_check_interval(breaker)
        };
        self.spawn_health_check(first_wait);
    }

    fn revive(&self) -> bool {
        let _t = self.health.transition();
        if self.state.load(Ordering::Acquire) != ISOLATED {
            return false;
        }
        self.error_ema.store(0, Ordering::Relaxed);
        self.admitted_at
            .store(self.calls.load(Ordering::Relaxed), Ordering::Relaxed);
        self.state.store(AVAILABLE, Ordering::Release);
        self.health.available.fetch_add(1, Ordering::AcqRel);
        self.health.revivals.fetch_add(1, Ordering::Relaxed);
        self.revived_at_ms.store(now_ms().max(1), Ordering::Relaxed);
        true
    }

    /// Checks an isolated invoker every interval until it answers (then
    /// revives it), is destroyed, or is dropped. Holds it only weakly
    /// between checks, so it never keeps a removed server alive.
    fn spawn_health_check(self: &Arc<Self>, first_wait: Duration) {
        let weak = Arc::downgrade(self);
        let mut alive = self.alive.subscribe();
        let interval = health_check_interval(&self.health.breaker);
        tokio::spawn(async move {
            let mut wait = first_wait;
            loop {
                tokio::select! {
                    // Only ever resolves when the invoker is dropped.
                    _ = alive.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = interval;
                let Some(invoker) = weak.upgrade() else {
                    return;
                };
                if invoker.state() != InvokerState::Isolated {
                    return;
                }
                if invoker
                    .probe(interval.max(Duration::from_millis(100)))
                    .await
                {
                    if invoker.revive() {
                        invoker.health.changed(&invoker);
                    }
                    return;
                }
            }
        });
    }

    /// Reconnects if needed and sends a probe call: true when the server
    /// answered anything (even "no such service") within `timeout`.
    async fn probe(&self, timeout: Duration) -> bool {
        let span = SpanHandle::none();
        let request = RawPayload::default();
        let call = Call {
            method: &PROBE,
            options: &PROBE_OPTIONS,
            request: &request,
            deadline: Instant::now().checked_add(timeout),
            span: &span,
        };
        match tokio::time::timeout(timeout, self.transport.try_call(&call)).await {
            Err(_elapsed) => false,
            Ok(Ok(_)) => true,
            Ok(Err(status)) => !matches!(
                status.code(),
                Code::EFAILEDSOCKET | Code::ERPCTIMEDOUT | Code::EOVERCROWDED | Code::ELOGOFF
            ),
        }
    }
}

/// Records an attempt's outcome exactly once: when it returns, or, when it
/// is dropped at or past the call's deadline, as a timeout.
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
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.record(Some(Code::ERPCTIMEDOUT));
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

/// The health-check interval, at least 10 ms (0 would spin).
fn health_check_interval(breaker: &BreakerConfig) -> Duration {
    breaker.health_check_interval.max(Duration::from_millis(10))
}

/// Milliseconds since the first call of this function in the process.
fn now_ms() -> u64 {
    static EPOCH: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoker(health: &Arc<Health>, port: u16) -> Arc<Invoker> {
        Invoker::new(
            Endpoint::new(format!("127.0.0.1:{port}")),
            "list://test".into(),
            EndpointConfig {
                connect_timeout: Duration::from_millis(10),
                max_body_size: 1 << 20,
            },
            health.clone(),
        )
    }

    fn fail_until_isolated(invoker: &Arc<Invoker>) -> u32 {
        let mut failures = 0;
        while invoker.state() == InvokerState::Available {
            invoker.record(Some(Code::EINTERNAL), Duration::from_millis(1));
            failures += 1;
            assert!(failures < 1_000, "never isolated");
        }
        failures
    }

    #[tokio::test(start_paused = true)]
    async fn error_isolations_back_off_while_a_server_keeps_failing() {
        let health = Arc::new(Health::new(
            BreakerConfig {
                min_isolation: Duration::from_millis(100),
                max_isolation: Duration::from_millis(800),
                ..BreakerConfig::default()
            },
            Arc::new(|_: &Invoker| {}),
        ));
        let failing = invoker(&health, 1);
        let _other = invoker(&health, 2);
        let mut lengths = Vec::new();
        for round in 0..6 {
            let failures = fail_until_isolated(&failing);
            assert!(failures >= 16 || round > 0, "min_calls first: {failures}");
            lengths.push(failing.isolation_ms.load(Ordering::Relaxed));
            assert!(failing.revive(), "isolated, so revivable");
        }
        assert_eq!(lengths, [100, 200, 400, 800, 800, 800]);
        assert_eq!(health.isolations.load(Ordering::Relaxed), 6);
        assert_eq!(health.revivals.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_answers_never_isolate_and_the_last_server_stays() {
        let health = Arc::new(Health::new(
            BreakerConfig::default(),
            Arc::new(|_: &Invoker| {}),
        ));
        let a = invoker(&health, 1);
        let b = invoker(&health, 2);
        for _ in 0..100 {
            a.record(Some(Code::ELIMIT), Duration::from_millis(1));
            a.record(Some(Code::EOVERCROWDED), Duration::from_millis(1));
        }
        assert_eq!(a.state(), InvokerState::Available);
        assert_eq!(a.info().errors, 200, "still counted as errors");
        fail_until_isolated(&a);
        // b is now the last available server: failures cannot isolate it.
        for _ in 0..100 {
            b.record(Some(Code::EFAILEDSOCKET), Duration::from_millis(1));
        }
        assert_eq!(b.state(), InvokerState::Available);
        // Destroying the isolated one leaves the counts consistent.
        a.destroy();
        assert_eq!(a.state(), InvokerState::Closing);
        assert!(!a.revive(), "a closing invoker is never revived");
        assert_eq!(health.available.load(Ordering::Relaxed), 1);
    }
}

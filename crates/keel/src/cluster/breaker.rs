//! The circuit breaker of a cluster channel: isolates failing servers,
//! health-checks them, and revives the ones that answer again.
//!
//! ```text
//!   Breaker (one per channel, shared by its invokers through an Arc)
//!     config · available count · transitions lock · counters · wake
//!     feedback ──► the balancer (given by the directory at construction)
//!        ▲
//!        │ Arc
//!   BreakerState (one per invoker, a field of it; its fields private here)
//!     admitted at · why and when isolated · last isolation's length ·
//!     revived at · alive
//!
//!   Invoker::record ── failure ──► failed ──► isolate ──► health-check task
//!                                                           │ probe after min_isolation,
//!                                                           │ then backing off up to
//!                                                           │ health_check_interval
//!                                                           ▼
//!                       feedback ◄── revive ◄── the first probe answered,
//!                                          or a call answered (when isolated
//!                                          for a broken connection)
//! ```
//!
//! Why a server is out decides how it comes back. A broken or refused
//! connection, or a server saying it is stopping (`ELOGOFF`), isolates it
//! at once: such a server is usually restarting and back within moments,
//! so it is probed after [`BreakerConfig::min_isolation`] (100 ms), then
//! less and less often while it stays down, and the first answer revives
//! it, as does any call that reaches it meanwhile (the cluster sends a
//! retry to an isolated server rather than back to one the call saw fail).
//! A server isolated for its error rate answers probes even while one of
//! its methods fails, so its first probe comes later each time it is
//! isolated again soon after a revival (up to
//! [`BreakerConfig::max_isolation`], 1 s), which keeps it from flapping;
//! no back-off keeps a healthy server out longer than that plus one probe.
//!
//! When the channel's last available server (which is never isolated)
//! refuses a connection, the isolated servers' health checks are woken to
//! probe at once: the last server is likely down too, and one of them is
//! likely back.
//!
//! Owns: the breaker settings, the count of available invokers (so
//! isolation never takes out the last one) and the lock that keeps it
//! matching their states, the isolation back-off, health checks and the
//! probe. May not touch: the invoker's fields, its connection, its
//! statistics, and the balancer (told only through the feedback).
//!
//! The seam with `invoker.rs`: what the breaker remembers of each invoker
//! lives in a [`BreakerState`] the invoker owns (so it is dropped with the
//! invoker, which ends its health checks) but cannot look into, and the
//! invoker gives the breaker a small crate-private API: `swap_state` (the
//! breaker makes every state change, under its lock), `reset_error_rate`
//! and `answered` (its error EWMA and call count, the breaker's inputs),
//! `call_unrecorded` (a probe that moves no statistics) and
//! `breaker_state` (to find its own part). The invoker calls in when
//! created ([`BreakerState::new`]), when destroyed ([`close`]), when an
//! attempt failed ([`failed`]) or succeeded while isolated
//! ([`succeeded_while_isolated`]), and to ask whether a timeout counts
//! ([`fair_timeout`]); the directory asks which isolated server is most
//! likely back ([`revival_order`]). The two files name each other's types;
//! neither reads the other's fields.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::invoker::{Invoker, InvokerState};
use crate::codec::RawPayload;
use crate::method::{MethodDescriptor, MethodKind};
use crate::options::CallOptions;
use crate::rpcz::SpanHandle;
use crate::status::Code;
use crate::transport::Call;

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
    /// The longest time between health checks of an isolated server
    /// (default 1 s, at least 10 ms): reconnect, then a probe call; any
    /// answer from the server revives it. Checks start sooner (see
    /// `min_isolation`) and back off to this while the server stays down.
    pub health_check_interval: Duration,
    /// An isolated server is first health-checked after this (default
    /// 100 ms; at most `health_check_interval` for a broken connection) ...
    pub min_isolation: Duration,
    /// ... and one isolated for its error rate again within this long of
    /// its revival after twice as long as the time before, up to this
    /// (default 1 s), so a server failing one method does not flap in and
    /// out at every check. It bounds how long a healthy server stays out
    /// after faults stop: keep it short.
    pub max_isolation: Duration,
    /// A timeout counts against a server (its error rate, its error count)
    /// only when the server had a fair chance: the attempt's own timeout
    /// (`ClusterOptions::attempt_timeout`) expired, or the attempt lasted at
    /// least this (default 50 ms). A caller's short deadline or a caller
    /// giving up says nothing about the server.
    pub fair_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            error_rate: 0.5,
            min_calls: 16,
            health_check_interval: Duration::from_secs(1),
            min_isolation: Duration::from_millis(100),
            max_isolation: Duration::from_secs(1),
            fair_timeout: Duration::from_millis(50),
        }
    }
}

/// How the breaker tells the balancer that an invoker became usable or
/// unusable.
pub(crate) type Feedback = Arc<dyn Fn(&Invoker) + Send + Sync>;

/// The circuit breaker of one cluster channel, shared by its invokers: how
/// many are available (so isolation never takes out the last one), the
/// settings and the counters.
pub(crate) struct Breaker {
    config: BreakerConfig,
    available: AtomicUsize,
    /// Serialises state changes, which are rare (isolate, revive, destroy),
    /// so `available` always matches the states.
    transitions: Mutex<()>,
    isolations: AtomicU64,
    revivals: AtomicU64,
    probes: AtomicU64,
    /// Wakes the health checks of isolated servers to probe now (the last
    /// available server refused a connection): each check holds a receiver
    /// made when its server was isolated, so it sees every wake since, even
    /// one sent before the check's task first ran or while it was probing.
    wake: watch::Sender<()>,
    /// Tells the balancer a server's usability changed (given by the
    /// directory at construction; the breaker knows nothing else of it).
    feedback: Feedback,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.config)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, feedback: Feedback) -> Breaker {
        Breaker {
            config,
            available: AtomicUsize::new(0),
            transitions: Mutex::new(()),
            isolations: AtomicU64::new(0),
            revivals: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            wake: watch::Sender::new(()),
            feedback,
        }
    }

    /// Servers isolated so far.
    pub(crate) fn isolations(&self) -> u64 {
        self.isolations.load(Ordering::Relaxed)
    }

    /// Isolated servers revived so far.
    pub(crate) fn revivals(&self) -> u64 {
        self.revivals.load(Ordering::Relaxed)
    }

    /// Health-check probes sent so far.
    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Tells the balancer that `invoker` became usable or unusable.
    fn changed(&self, invoker: &Invoker) {
        (self.feedback)(invoker);
    }

    fn transition(&self) -> MutexGuard<'_, ()> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the breaker remembers of one invoker. The invoker owns it; only
/// this module reads or writes it.
pub(crate) struct BreakerState {
    breaker: Arc<Breaker>,
    /// The invoker's answered calls when it was last revived: the breaker
    /// judges only calls answered since.
    admitted_at: AtomicU64,
    /// Whether its current (or last) isolation was for its error rate
    /// rather than a broken connection.
    for_errors: AtomicBool,
    /// The channel's isolation count when it was last isolated: a lower one
    /// was isolated longer ago.
    isolated_as: AtomicU64,
    /// The last error-rate isolation's length, in ms (0: none yet).
    isolation_ms: AtomicU64,
    /// When it was last revived (ms since the process's epoch; 0: never).
    revived_at_ms: AtomicU64,
    /// Dropped with the invoker, which ends its health checks at once.
    alive: watch::Sender<()>,
}

impl BreakerState {
    /// The state of a new invoker of `breaker`'s channel, which counts it
    /// available (invokers start available).
    pub(crate) fn new(breaker: Arc<Breaker>) -> BreakerState {
        {
            let _t = breaker.transition();
            breaker.available.fetch_add(1, Ordering::AcqRel);
        }
        BreakerState {
            breaker,
            admitted_at: AtomicU64::new(0),
            for_errors: AtomicBool::new(false),
            isolated_as: AtomicU64::new(0),
            isolation_ms: AtomicU64::new(0),
            revived_at_ms: AtomicU64::new(0),
            alive: watch::channel(()).0,
        }
    }

    /// Whether this is an invoker of the channel whose breaker is `breaker`.
    pub(crate) fn is_of(&self, breaker: &Arc<Breaker>) -> bool {
        Arc::ptr_eq(&self.breaker, breaker)
    }
}

/// Closes `invoker` for good (see [`Invoker::destroy`]), keeping the count
/// of available invokers.
pub(super) fn close(invoker: &Invoker) {
    let breaker = &invoker.breaker_state().breaker;
    let _t = breaker.transition();
    if invoker.swap_state(InvokerState::Closing) == InvokerState::Available {
        breaker.available.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Judges a failed attempt of `invoker` (not an overload answer), its
/// `calls`-th answer, after which its recent error rate is `error_rate`:
/// a failed connection or a stopping server isolates it at once, an error
/// rate above the limit once it has answered enough calls since it was
/// admitted.
pub(super) fn failed(invoker: &Arc<Invoker>, code: Code, calls: u64, error_rate: f64) {
    let state = invoker.breaker_state();
    let config = &state.breaker.config;
    if !config.enabled {
        return;
    }
    let samples = calls.saturating_sub(state.admitted_at.load(Ordering::Relaxed));
    if matches!(code, Code::EFAILEDSOCKET | Code::ELOGOFF) {
        isolate(invoker, false);
    } else if samples >= u64::from(config.min_calls) && error_rate > config.error_rate {
        isolate(invoker, true);
    }
}

/// A call on `invoker` succeeded: if it is isolated for a broken
/// connection, the connection works again, so it is revived at once
/// (without waiting for its health check). One isolated for its error rate
/// waits for its check: one success says little about its errors.
pub(super) fn succeeded_while_isolated(invoker: &Invoker) {
    let state = invoker.breaker_state();
    if !state.for_errors.load(Ordering::Relaxed) && revive(invoker) {
        state.breaker.changed(invoker);
    }
}

/// How likely an isolated `invoker` is to be back, for the cluster's pick
/// of an isolated server (lower first): isolated for a broken connection
/// before isolated for errors, and then the one isolated longest ago.
pub(super) fn revival_order(invoker: &Invoker) -> (bool, u64) {
    let state = invoker.breaker_state();
    (
        state.for_errors.load(Ordering::Relaxed),
        state.isolated_as.load(Ordering::Relaxed),
    )
}

/// Whether an attempt that timed out after `elapsed` (not by its own
/// attempt timeout) counts against `invoker`: see
/// [`BreakerConfig::fair_timeout`].
pub(super) fn fair_timeout(invoker: &Invoker, elapsed: Duration) -> bool {
    elapsed >= invoker.breaker_state().breaker.config.fair_timeout
}

/// Takes `invoker` out of rotation until a health check revives it, unless
/// it is the channel's last available one (then, for a broken connection,
/// wakes the isolated servers' health checks instead). `for_errors`:
/// isolated by its error rate (first checked later each time it flaps, see
/// [`BreakerConfig::max_isolation`]) rather than by a broken connection
/// (first checked after `min_isolation`).
fn isolate(invoker: &Arc<Invoker>, for_errors: bool) {
    // Only a runtime can check it later (an attempt dropped after its
    // runtime is gone records outside one): no runtime, no isolation.
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let state = invoker.breaker_state();
    let breaker = &state.breaker;
    let wakes = {
        let _t = breaker.transition();
        if invoker.state() != InvokerState::Available {
            return;
        }
        if breaker.available.load(Ordering::Acquire) <= 1 {
            if !for_errors {
                // The last server is down too, likely: an isolated one may
                // be back already.
                breaker.wake.send_replace(());
            }
            return;
        }
        invoker.swap_state(InvokerState::Isolated);
        breaker.available.fetch_sub(1, Ordering::AcqRel);
        let count = breaker.isolations.fetch_add(1, Ordering::Relaxed);
        state.for_errors.store(for_errors, Ordering::Relaxed);
        state.isolated_as.store(count, Ordering::Relaxed);
        // Under the lock the wakes are sent under: the check sees every
        // wake from the moment the server is isolated.
        breaker.wake.subscribe()
    };
    breaker.changed(invoker);
    let config = &breaker.config;
    let first_wait = if for_errors {
        let revived = state.revived_at_ms.load(Ordering::Relaxed);
        let last = state.isolation_ms.load(Ordering::Relaxed);
        let min = config.min_isolation.as_millis() as u64;
        let max = (config.max_isolation.as_millis() as u64).max(min);
        let recently = revived != 0 && now_ms().saturating_sub(revived) < max;
        let ms = if recently && last > 0 {
            last.saturating_mul(2).clamp(min, max)
        } else {
            min
        };
        state.isolation_ms.store(ms, Ordering::Relaxed);
        Duration::from_millis(ms)
    } else {
        config.min_isolation.min(health_check_interval(config))
    };
    spawn_health_check(invoker, first_wait, wakes);
}

/// Puts an isolated `invoker` back into rotation, its error rate and call
/// count judged afresh; false when it was not isolated (available, or
/// closing: a destroyed invoker is never revived).
fn revive(invoker: &Invoker) -> bool {
    let state = invoker.breaker_state();
    let breaker = &state.breaker;
    let _t = breaker.transition();
    if invoker.state() != InvokerState::Isolated {
        return false;
    }
    invoker.reset_error_rate();
    state
        .admitted_at
        .store(invoker.answered(), Ordering::Relaxed);
    invoker.swap_state(InvokerState::Available);
    breaker.available.fetch_add(1, Ordering::AcqRel);
    breaker.revivals.fetch_add(1, Ordering::Relaxed);
    state
        .revived_at_ms
        .store(now_ms().max(1), Ordering::Relaxed);
    true
}

/// Checks an isolated invoker until it answers (then revives it), is
/// revived otherwise, destroyed, or dropped: first after `first_wait`, then
/// twice as long after each failed probe, up to the health-check interval;
/// at once when the breaker wakes the checks (`wakes`, subscribed when the
/// server was isolated, so no wake is missed), though never sooner than
/// [`MIN_PROBE_GAP`] after its previous probe. Holds the invoker only
/// weakly between checks, so it never keeps a removed server alive.
fn spawn_health_check(
    invoker: &Arc<Invoker>,
    first_wait: Duration,
    mut wakes: watch::Receiver<()>,
) {
    let weak = Arc::downgrade(invoker);
    let state = invoker.breaker_state();
    let mut alive = state.alive.subscribe();
    let breaker = state.breaker.clone();
    let interval = health_check_interval(&breaker.config);
    tokio::spawn(async move {
        // The back-off step, and when the next probe is due.
        let mut wait = first_wait;
        let mut due = Instant::now() + wait;
        let mut last_probe: Option<Instant> = None;
        loop {
            tokio::select! {
                // Only ever resolves when the invoker is dropped.
                _ = alive.changed() => return,
                _ = tokio::time::sleep_until(due) => {}
                woken = wakes.changed() => {
                    if woken.is_err() {
                        // The breaker is gone; this task holds it, so
                        // this cannot happen, but nothing wakes it now.
                        return;
                    }
                    let earliest = last_probe.map(|at| at + MIN_PROBE_GAP);
                    if let Some(earliest) = earliest.filter(|&e| e > Instant::now()) {
                        due = due.min(earliest);
                        continue;
                    }
                }
            }
            let Some(invoker) = weak.upgrade() else {
                return;
            };
            if invoker.state() != InvokerState::Isolated {
                return;
            }
            breaker.probes.fetch_add(1, Ordering::Relaxed);
            last_probe = Some(Instant::now());
            if probe(&invoker, interval.max(Duration::from_millis(100))).await {
                if revive(&invoker) {
                    breaker.changed(&invoker);
                }
                return;
            }
            drop(invoker);
            wait = wait.saturating_mul(2).min(interval);
            due = Instant::now() + wait;
        }
    });
}

/// The shortest time between two probes of a server, however often the
/// breaker wakes its checks.
const MIN_PROBE_GAP: Duration = Duration::from_millis(10);

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
    files: &[],
};
static PROBE_OPTIONS: CallOptions = CallOptions::new();

/// Reconnects `invoker` if needed and sends it a probe call: true when the
/// server answered anything (even "no such service") within `timeout`.
async fn probe(invoker: &Invoker, timeout: Duration) -> bool {
    let span = SpanHandle::none();
    let request = RawPayload::default();
    let call = Call {
        method: &PROBE,
        options: &PROBE_OPTIONS,
        request: &request,
        deadline: Instant::now().checked_add(timeout),
        span: &span,
        kept_deadline: None,
    };
    match tokio::time::timeout(timeout, invoker.call_unrecorded(&call)).await {
        Err(_elapsed) => false,
        Ok(Ok(_)) => true,
        Ok(Err(status)) => !matches!(
            status.code(),
            Code::EFAILEDSOCKET | Code::ERPCTIMEDOUT | Code::EOVERCROWDED | Code::ELOGOFF
        ),
    }
}

/// The health-check interval, at least 10 ms (0 would spin).
fn health_check_interval(config: &BreakerConfig) -> Duration {
    config.health_check_interval.max(Duration::from_millis(10))
}

/// Milliseconds since the first call of this function in the process.
fn now_ms() -> u64 {
    static EPOCH: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use keel_cluster::Endpoint;

    use super::*;
    use crate::transport::EndpointConfig;

    fn invoker(breaker: &Arc<Breaker>, port: u16) -> Arc<Invoker> {
        Invoker::new(
            Endpoint::new(format!("127.0.0.1:{port}")),
            "list://test".into(),
            EndpointConfig {
                protocol: crate::transport::Protocol::BaiduStd,
                connect_timeout: Duration::from_millis(10),
                max_body_size: 1 << 20,
                credential: Default::default(),
                tls: None,
                busy_poll: None,
            },
            breaker.clone(),
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
        let breaker = Arc::new(Breaker::new(
            BreakerConfig {
                min_isolation: Duration::from_millis(100),
                max_isolation: Duration::from_millis(800),
                ..BreakerConfig::default()
            },
            Arc::new(|_: &Invoker| {}),
        ));
        let failing = invoker(&breaker, 1);
        let _other = invoker(&breaker, 2);
        let mut lengths = Vec::new();
        for round in 0..6 {
            let failures = fail_until_isolated(&failing);
            assert!(failures >= 16 || round > 0, "min_calls first: {failures}");
            lengths.push(failing.breaker_state().isolation_ms.load(Ordering::Relaxed));
            assert!(revive(&failing), "isolated, so revivable");
        }
        assert_eq!(lengths, [100, 200, 400, 800, 800, 800]);
        assert_eq!(breaker.isolations(), 6);
        assert_eq!(breaker.revivals(), 6);
    }

    #[tokio::test]
    async fn a_wake_sent_before_a_health_check_first_runs_still_wakes_it() {
        // Checks a minute apart: only a wake makes them probe.
        let minute = Duration::from_secs(60);
        let breaker = Arc::new(Breaker::new(
            BreakerConfig {
                min_isolation: minute,
                max_isolation: minute,
                health_check_interval: minute,
                ..BreakerConfig::default()
            },
            Arc::new(|_: &Invoker| {}),
        ));
        let last = invoker(&breaker, 1);
        let isolated = invoker(&breaker, 2);
        // Isolated, and its check spawned; on this one-thread runtime the
        // check has not run yet when the last available server fails.
        isolated.record(Some(Code::EFAILEDSOCKET), Duration::from_millis(1));
        assert_eq!(isolated.state(), InvokerState::Isolated);
        last.record(Some(Code::EFAILEDSOCKET), Duration::from_millis(1));
        assert_eq!(last.state(), InvokerState::Available, "the last one stays");
        // The check runs now and probes at once (its probe counts before
        // it connects anywhere).
        for _ in 0..100 {
            if breaker.probes() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(breaker.probes(), 1, "the wake was missed");
    }

    #[tokio::test(start_paused = true)]
    async fn overload_answers_never_isolate_and_the_last_server_stays() {
        let breaker = Arc::new(Breaker::new(
            BreakerConfig::default(),
            Arc::new(|_: &Invoker| {}),
        ));
        let a = invoker(&breaker, 1);
        let b = invoker(&breaker, 2);
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
        assert!(!revive(&a), "a closing invoker is never revived");
        assert_eq!(breaker.available.load(Ordering::Relaxed), 1);
    }
}

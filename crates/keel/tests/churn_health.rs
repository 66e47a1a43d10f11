//! Rules R6 and R5 for health checks: 500 cluster channels over a live
//! server and a failing one, each dropped while the failing server's
//! invoker is isolated and health-checked, leave nothing behind: after
//! each channel the registry lists no invoker and no task is left (the
//! health-check task ends with its invoker), and after all of them the
//! live heap is back at its baseline.
//!
//! Two kinds of failing server:
//!
//! - a stopped server (its port held closed, so connecting is refused):
//!   the channel drops while the health check waits for its first probe,
//!   due a minute later;
//! - a peer that closes every connection, except that it holds the
//!   connection of a probe open without answering: the channel drops
//!   while that probe is in flight (the health check then holds the
//!   invoker until the probe fails).
//!
//! Each test runs alone on a runtime of its own (`support::alone`): the
//! counting allocator sees the whole process.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keel::Channel;
use keel::cluster::{BreakerConfig, InvokerState, live_invokers};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, Fixture, alone, eventually, request, start};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Channels made and dropped in the measured part of each test.
const ROUNDS: usize = 500;
/// Rounds before the baseline, so that what is built once (the runtime's
/// tables, pools) is in it.
const WARM_UP: usize = 20;
/// Live heap a test may leave behind: a constant, whatever `ROUNDS` is.
const TOLERANCE: i64 = 8 * 1024;
/// Bounds every call, so that a bug fails the test rather than hanging it.
const BOUND: Duration = Duration::from_secs(5);

/// A cluster channel over `live` and `failing` that checks isolated
/// servers every `interval`.
fn channel(live: &Fixture, failing: &str, interval: Duration) -> Channel {
    Channel::builder(&format!("list://{},{failing}", live.addr()))
        .breaker(BreakerConfig {
            health_check_interval: interval,
            ..BreakerConfig::default()
        })
        .timeout(Some(BOUND))
        .build()
        .expect("valid")
}

/// Calls until `failing` is isolated: round robin sends one of the first
/// two calls there, whose connection fails, which isolates the server at
/// once; the call fails over to the live server.
async fn isolate(channel: &Channel, failing: &str) {
    let client = EchoServiceClient::new(channel);
    for _ in 0..2 {
        let reply = client.echo(&request("hi")).await;
        assert_eq!(reply.expect("failover to the live server").message, "hi");
    }
    let cluster = channel.cluster().expect("a list channel is a cluster");
    let invoker = cluster
        .invoker(failing)
        .expect("the failing server's invoker");
    assert_eq!(invoker.state, InvokerState::Isolated, "{invoker:?}");
    assert_eq!(cluster.stats().isolations, 1);
    assert_eq!(channel.pending_calls(), 0);
}

/// Waits until a dropped channel has left nothing running: no invoker,
/// no connection to the live server, no task of its own (naming,
/// connections, health checks).
async fn quiet(live: &Fixture, tasks: usize) {
    eventually("the channel's invokers to be dropped", || {
        live_invokers() == 0
    })
    .await;
    eventually("the channel's connection to close", || {
        live.server.stats().connections == 0
    })
    .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    eventually("the channel's tasks (health check included) to end", || {
        metrics.num_alive_tasks() == tasks
    })
    .await;
}

/// Runs `WARM_UP` rounds, takes the baseline, runs `ROUNDS` rounds
/// (checking after each that the channel left nothing running) and checks
/// the live heap.
async fn churn<F: Future<Output = ()>>(what: &str, live: &Fixture, mut round: impl FnMut() -> F) {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(live_invokers(), 0);
    for _ in 0..WARM_UP {
        round().await;
        quiet(live, tasks).await;
    }
    let before = keel_alloc::stats();
    for _ in 0..ROUNDS {
        round().await;
        quiet(live, tasks).await;
    }
    let d = before.delta(&keel_alloc::stats());
    eprintln!("{ROUNDS} channels dropped {what}: {d:?}");
    assert!(
        d.live_bytes.abs() < TOLERANCE,
        "{ROUNDS} channels dropped {what} moved the live heap by {} B: {d:?}",
        d.live_bytes
    );
}

#[test]
fn channels_dropped_while_a_stopped_server_is_isolated_leave_nothing_behind() {
    alone(async {
        keel::rpcz::tracer().sampler().set_target(0);
        let live = start(|b| b).await;
        let stopped = start(|b| b).await;
        let addr = stopped.server.local_addr();
        assert_eq!(stopped.server.shutdown(Duration::ZERO).await, 0);
        // Hold the stopped server's port, bound but not listening, so that
        // connecting to it is refused for the whole test (no other socket
        // can take the port meanwhile).
        let held = TcpSocket::new_v4().expect("socket");
        held.set_reuseaddr(true).expect("SO_REUSEADDR");
        held.bind(addr).expect("hold the stopped server's port");
        let stopped = addr.to_string();
        churn("while health checks wait", &live, || async {
            // The first probe would come after a minute, longer than
            // `eventually` waits: the health check must end when its
            // invoker drops, not when it next wakes up.
            let channel = channel(&live, &stopped, Duration::from_secs(60));
            isolate(&channel, &stopped).await;
        })
        .await;
    });
}

/// A peer that accepts connections and closes them at once, or, while
/// `hold` is set, keeps them open without a word until `release`.
struct Closing {
    addr: String,
    accepted: Arc<AtomicU64>,
    hold: Arc<AtomicBool>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Closing {
    async fn start() -> Closing {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (accepted, hold, release) = (accepted.clone(), hold.clone(), release.clone());
            async move {
                let mut held = Vec::new();
                loop {
                    tokio::select! {
                        conn = listener.accept() => {
                            let (stream, _) = conn.expect("accept");
                            if hold.load(Ordering::Acquire) {
                                held.push(stream);
                            }
                            accepted.fetch_add(1, Ordering::Release);
                        }
                        () = release.notified() => held = Vec::new(),
                    }
                }
            }
        });
        Closing {
            addr,
            accepted,
            hold,
            release,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn channels_dropped_while_a_health_check_probes_leave_nothing_behind() {
    alone(async {
        keel::rpcz::tracer().sampler().set_target(0);
        let live = start(|b| b).await;
        let peer = Closing::start().await;
        churn("while a probe is in flight", &live, || async {
            let channel = channel(&live, &peer.addr, Duration::from_millis(10));
            isolate(&channel, &peer.addr).await;
            // The next connection is a probe's: held open, unanswered.
            let before = peer.accepted();
            peer.hold.store(true, Ordering::Release);
            eventually("a health check to connect", || peer.accepted() > before).await;
            drop(channel);
            // The probe fails when its connection closes; then its
            // invoker (held by the probe) drops, and the health check
            // ends.
            peer.hold.store(false, Ordering::Release);
            peer.release.notify_one();
        })
        .await;
    });
}

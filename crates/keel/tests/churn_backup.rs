//! Rule R6 (and R1) for backup requests: 200 cluster channels with backup
//! requests over a slow server and a fast one, each making 20 calls (half
//! of them answered by their backup) and then dropped, leave nothing
//! behind: no pending call once the calls return (the losing attempts
//! left the table), no call in flight on either server once the channel
//! is gone, no invoker, connection or task, and the live heap back at its
//! baseline.
//!
//! The slow server holds its calls at a gate. In every other round the
//! gate lets the held calls through before the channel drops, so the
//! slow server answers attempts the client has given up on (late answers
//! for correlation ids no longer pending); in the others the held calls
//! are still waiting when the channel drops, and the server cancels them
//! when their connection closes.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel::Channel;
use keel::cluster::live_invokers;
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, Fixture, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Channels made and dropped in the measured part.
const ROUNDS: usize = 200;
/// Rounds before the baseline, so that what is built once (the runtime's
/// tables, pools) is in it.
const WARM_UP: usize = 20;
/// Calls per channel, one at a time: round robin sends every other first
/// attempt to the slow server.
const CALLS: u64 = 20;
/// Live heap the test may leave behind: a constant, whatever `ROUNDS` is.
/// Besides noise it covers the servers' request and response pools, which
/// keep one more pair of messages (124 B) for each new peak of calls held:
/// when a first attempt on the fast server takes over 2 ms, its backup
/// goes to the slow server, which then holds 11 calls instead of 10.
const TOLERANCE: i64 = 8 * 1024;
/// Bounds every call, so that a bug fails the test rather than hanging
/// it. Longer than `eventually` waits (10 s): the slow server stops a held
/// call at its deadline, which must not hide a call outliving its
/// connection.
const BOUND: Duration = Duration::from_secs(60);

/// One channel's life: `CALLS` calls with backup requests after 2 ms,
/// then (when `answer_late`) the slow server answers the attempts it
/// held, and the channel drops.
async fn round(slow: &Fixture, fast: &Fixture, answer_late: bool) {
    let channel = Channel::builder(&format!("list://{},{}", slow.addr(), fast.addr()))
        .backup_request(Some(Duration::from_millis(2)))
        .timeout(Some(BOUND))
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    let fast_calls = fast.calls.load(Ordering::Relaxed);
    let slow_calls = slow.calls.load(Ordering::Relaxed);
    for _ in 0..CALLS {
        let reply = client.echo(&request("gate")).await;
        assert_eq!(
            reply.expect("answered, by the backup if need be").message,
            "gate"
        );
    }
    let cluster = channel.cluster().expect("a list channel is a cluster");
    let stats = cluster.stats();
    // Every first attempt on the slow server was answered by its backup.
    assert_eq!(stats.backup_wins, CALLS / 2, "{stats:?}");
    assert!(stats.backup_requests >= stats.backup_wins, "{stats:?}");
    assert_eq!(fast.calls.load(Ordering::Relaxed) - fast_calls, CALLS);
    // The losing attempts left the pending table when they were dropped.
    assert_eq!(channel.pending_calls(), 0);
    for invoker in cluster.invokers() {
        assert_eq!((invoker.pending, invoker.in_flight), (0, 0), "{invoker:?}");
    }
    // Every attempt sent to the slow server is held there: the first
    // attempts round robin gave it, each answered by a backup on the fast
    // one, and the backups of first attempts the fast one took over 2 ms
    // to answer. A backup may still be on its way when the calls return.
    eventually("every attempt sent to the slow server to arrive", || {
        slow.calls.load(Ordering::Relaxed) - slow_calls == stats.backup_requests
    })
    .await;
    let held = slow.server.stats().in_flight;
    assert!(held >= (CALLS / 2) as usize, "the slow server holds {held}");
    if answer_late {
        slow.gate.add_permits(held);
        eventually("the slow server to answer what it held", || {
            slow.server.stats().in_flight == 0
        })
        .await;
        assert_eq!(channel.pending_calls(), 0);
    }
}

/// Waits until a dropped channel has left nothing running: no call in
/// flight on either server, no invoker, no connection, no task.
async fn quiet(servers: [&Fixture; 2], tasks: usize) {
    for s in servers {
        eventually("the server to cancel what the channel left", || {
            s.server.stats().in_flight == 0
        })
        .await;
        eventually("the channel's connections to close", || {
            s.server.stats().connections == 0
        })
        .await;
    }
    eventually("the channel's invokers to be dropped", || {
        live_invokers() == 0
    })
    .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    eventually("the channel's tasks and the handlers to end", || {
        metrics.num_alive_tasks() == tasks
    })
    .await;
}

#[tokio::test]
async fn channels_with_backup_requests_leave_nothing_behind() {
    keel::rpcz::tracer().sampler().set_target(0);
    let slow = start(|b| b).await;
    let fast = start(|b| b).await;
    // The fast server's gate is open for every call of the test.
    fast.gate.add_permits(1 << 20);
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for i in 0..WARM_UP {
        round(&slow, &fast, i % 2 == 0).await;
        quiet([&slow, &fast], tasks).await;
    }
    let before = keel_alloc::stats();
    let slow_before = slow.calls.load(Ordering::Relaxed);
    for i in 0..ROUNDS {
        round(&slow, &fast, i % 2 == 0).await;
        quiet([&slow, &fast], tasks).await;
    }
    let d = before.delta(&keel_alloc::stats());
    let slow_attempts = slow.calls.load(Ordering::Relaxed) - slow_before;
    eprintln!(
        "{ROUNDS} channels, {} calls, {slow_attempts} attempts held by the slow server: {d:?}",
        ROUNDS as u64 * CALLS
    );
    assert!(
        d.live_bytes.abs() < TOLERANCE,
        "{ROUNDS} channels with backup requests moved the live heap by {} B: {d:?}",
        d.live_bytes
    );
}

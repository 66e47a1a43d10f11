//! Rule R6 for servers: 500 servers, each bound on loopback, serving a few
//! calls and then stopped while a handler is in flight, leave no task and
//! no heap behind. A server is stopped in one of the ways
//! [`Server::shutdown`] and `Drop for Server` document:
//!
//! - `shutdown(grace)` whose call in flight finishes within the grace:
//!   new requests are answered `ELOGOFF`, the call gets its answer, and
//!   no connection is cut (`shutdown` returns 0);
//! - `shutdown(grace)` whose call in flight outlives the grace: its
//!   connection is cut at the deadline (`shutdown` returns 1) and the
//!   call fails on the client;
//! - dropped: every connection closes at once and the call fails on the
//!   client.
//!
//! After each cycle the service (the handler's state) is freed with the
//! server, which shows that no connection or handler task holds it.
//!
//! Each test runs alone on a runtime of its own (`support::alone`): the
//! counting allocator sees the whole process.

mod support;

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use keel::{Channel, Code, Server};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, alone, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Servers started and stopped in the measured part of each test.
const SERVERS: usize = 500;
/// Cycles before the baseline, so that what is built once (the runtime's
/// tables, the method tables' statics, pools) is in it.
const WARM_UP: usize = 20;
/// Live heap a test may leave behind: a constant, whatever `SERVERS` is.
/// A cycle allocates about 24 KB; keeping 17 B of it per cycle passes this.
const TOLERANCE: i64 = 8 * 1024;
/// Bounds every call, so that a bug fails the test rather than hanging
/// it. Longer than `eventually` waits (10 s): the server stops a call at
/// its deadline, which must not hide a handler outliving its connection.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How a cycle stops its server.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// `shutdown(grace)`, and the gated call is let through meanwhile.
    GracefulFinished,
    /// `shutdown(grace)`, and the gate stays shut past the grace.
    GracefulCut,
    /// `drop(server)`.
    Dropped,
}

/// Polls `future` once.
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// One server's life: bind, serve three calls, take a gated call, stop
/// with that call in flight (as `stop` says), and check what the client
/// saw and that the service went with the server.
async fn cycle(stop: Stop) {
    let f = start(|b| b).await;
    let channel = Channel::builder(&f.addr())
        .timeout(Some(CALL_TIMEOUT))
        // What the client sees of the stop, not of a reconnection.
        .max_retry(0)
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..3 {
        let reply = client.echo(&request("hi")).await.expect("served");
        assert_eq!(reply.message, "hi");
    }
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    let stats = f.server.stats();
    assert_eq!((stats.in_flight, stats.connections), (1, 1), "{stats:?}");
    // The gate is the service's state, shared with the handler: its count
    // shows when the server's dispatch path (and every task holding it) is
    // gone.
    let support::Fixture { server, gate, .. } = f;
    match stop {
        Stop::GracefulFinished => {
            let mut shutdown = pin!(server.shutdown(CALL_TIMEOUT));
            // The first poll stops accepting and starts draining.
            assert!(poll_once(shutdown.as_mut()).await.is_pending());
            let late = client.echo(&request("late")).await;
            assert_eq!(
                late.expect_err("a draining server refuses new calls")
                    .code(),
                Code::ELOGOFF
            );
            gate.add_permits(1);
            let reply = in_flight.await.expect("call task");
            assert_eq!(reply.expect("finished within the grace").message, "gate");
            assert_eq!(shutdown.await, 0, "no connection was cut");
        }
        Stop::GracefulCut => {
            let cut = server.shutdown(Duration::from_millis(10)).await;
            assert_eq!(cut, 1, "the connection of the call in flight is cut");
            let failed = in_flight.await.expect("call task");
            assert_eq!(
                failed.expect_err("cut at the deadline").code(),
                Code::EFAILEDSOCKET
            );
        }
        Stop::Dropped => {
            drop::<Server>(server);
            let failed = in_flight.await.expect("call task");
            assert_eq!(
                failed.expect_err("the server is gone").code(),
                Code::EFAILEDSOCKET
            );
        }
    }
    assert_eq!(channel.pending_calls(), 0);
    drop((client, channel));
    eventually("the service to go with its server", || {
        Arc::strong_count(&gate) == 1
    })
    .await;
}

/// Warms up, then runs `SERVERS` cycles and checks that tasks and live
/// heap are back at their baseline.
async fn churn(stop: Stop) {
    keel::rpcz::tracer().sampler().set_target(0);
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..WARM_UP {
        cycle(stop).await;
    }
    let tasks = metrics.num_alive_tasks();
    let before = keel_alloc::stats();
    for _ in 0..SERVERS {
        cycle(stop).await;
    }
    eventually("every server and connection task to end", || {
        metrics.num_alive_tasks() == tasks
    })
    .await;
    let d = before.delta(&keel_alloc::stats());
    eprintln!("{SERVERS} servers, {stop:?}: {d:?}");
    assert!(
        d.live_bytes.abs() < TOLERANCE,
        "{SERVERS} servers ({stop:?}) moved the live heap by {} B: {d:?}",
        d.live_bytes
    );
}

#[test]
fn servers_shut_down_gracefully_after_their_call_in_flight_leave_nothing_behind() {
    alone(churn(Stop::GracefulFinished));
}

#[test]
fn servers_whose_call_in_flight_outlives_the_grace_leave_nothing_behind() {
    alone(churn(Stop::GracefulCut));
}

#[test]
fn servers_dropped_with_a_call_in_flight_leave_nothing_behind() {
    alone(churn(Stop::Dropped));
}

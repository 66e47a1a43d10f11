//! Rule R1/R6 for the pending-call table: 100,000 calls that time out and
//! 100,000 whose futures are dropped mid-flight leave the table empty and
//! the live heap flat on both sides.

mod support;

use std::time::Duration;

use keel::{Channel, Code};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const BATCH: usize = 1_000;

/// `n` calls of `message`, `BATCH` at a time, each run through `call`.
async fn batches<F, Fut>(n: usize, call: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for _ in 0..n / BATCH {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..BATCH {
            set.spawn(call());
        }
        while let Some(r) = set.join_next().await {
            r.expect("call task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_and_dropped_calls_leave_nothing_behind() {
    // This test is about the pending-call table; rpcz (on by default) keeps recent traces
    // in a bounded store, which has churn tests of its own in keel-rpcz.
    keel::rpcz::tracer().sampler().set_target(0);
    let f = start(|b| b).await;
    let channel = Channel::builder(&f.addr())
        .timeout(Some(Duration::from_millis(5)))
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);

    let timing_out = || {
        let client = client.clone();
        async move {
            // The handler waits forever; the client gives up after 5 ms and
            // the server drops the handler at the deadline it was sent.
            let err = client.echo(&request("stall")).await.expect_err("stalls");
            assert_eq!(err.code(), Code::ERPCTIMEDOUT);
        }
    };
    let dropped = || {
        let client = client.clone();
        async move {
            // Poll once (the request is queued), then drop the call.
            let r = tokio::time::timeout(Duration::ZERO, client.echo(&request("x"))).await;
            drop(r);
        }
    };
    batches(10 * BATCH, timing_out).await;
    batches(10 * BATCH, dropped).await;
    let settle = || async {
        eventually("server handlers to finish", || {
            f.server.stats().in_flight == 0
        })
        .await;
        eventually("the pending table to empty", || {
            channel.pending_calls() == 0
        })
        .await;
        // At rest: connections give back what a burst grew (buffers, the
        // server's answer channel) once quiet for 250 ms, so both figures
        // are taken at the idle footprint, not at whatever size the last
        // batch left (which varies with the machine's load). This is the
        // idle period the bound is about; nothing else waits on it.
        tokio::time::sleep(Duration::from_millis(600)).await;
    };
    settle().await;

    let before = keel_alloc::stats();
    batches(100_000, timing_out).await;
    settle().await;
    let after_timeouts = keel_alloc::stats();
    batches(100_000, dropped).await;
    settle().await;
    let after_drops = keel_alloc::stats();

    assert_eq!(channel.pending_calls(), 0);
    let d1 = before.delta(&after_timeouts);
    let d2 = after_timeouts.delta(&after_drops);
    assert!(d1.live_bytes.abs() < 128 * 1024, "timeouts: {d1:?}");
    assert!(d2.live_bytes.abs() < 128 * 1024, "drops: {d2:?}");
}

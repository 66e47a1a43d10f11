//! Rules R6/R7 for a burst: 50,000 calls in flight together on one TCP
//! channel grow the client's pending-call table, the connection's buffers
//! and the server's per-call state; once they are answered and the process
//! has been idle a second, the live heap is back at its baseline. The same
//! holds while one call sent after the burst (so the newest entry of the
//! table) is still waiting: the table's memory follows the calls pending,
//! not the position of the last one.
//!
//! Client and server share this process, so the figure covers both sides.

mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use keel::Channel;
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const CALLS: usize = 50_000;
/// Calls spawned at a time; the next batch is spawned once this one waits
/// in the server's handler.
const BATCH: usize = 1_000;
/// What the live heap may differ from the baseline by.
const TOLERANCE: i64 = 64 * 1024;

/// Waits (bounded by `within`) until `cond` holds, yielding to the runtime
/// in between, like `support::eventually` with room for a burst in a debug
/// build.
async fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn a_burst_of_concurrent_calls_leaves_the_heap_at_its_baseline() {
    support::alone_on(2, burst(false));
}

#[test]
fn a_burst_leaves_the_heap_at_its_baseline_while_a_later_call_still_waits() {
    support::alone_on(2, burst(true));
}

/// The burst, and with `long` one more call sent after it that waits in
/// its handler until the measurement is done.
async fn burst(long: bool) {
    // This test is about the pending-call table and connection buffers;
    // rpcz (on by default) keeps recent traces in a bounded store, which
    // has churn tests of its own in keel-rpcz.
    keel::rpcz::tracer().sampler().set_target(0);
    let f = start(|b| b).await;
    let channel = Channel::builder(&f.addr())
        .timeout(Some(Duration::from_secs(300)))
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let limit = Duration::from_secs(120);

    // Warm-up: the connection, and the server's way back for calls that
    // wait in their handler (made on the first such call).
    client.echo(&request("warm-up")).await.expect("warm-up");
    let warm = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    f.gate.add_permits(1);
    warm.await.expect("task").expect("gated warm-up");
    let settled = || channel.pending_calls() == 0 && f.server.stats().in_flight == 0;
    within(limit, "the warm-up to settle", settled).await;
    let handled = f.calls.load(SeqCst) as usize;
    let baseline = keel_alloc::live_bytes();

    let peak = {
        let mut calls = tokio::task::JoinSet::new();
        for batch in 1..=CALLS / BATCH {
            for _ in 0..BATCH {
                let client = client.clone();
                calls.spawn(async move { client.echo(&request("gate")).await });
            }
            let arrived = handled + batch * BATCH;
            within(limit, "a batch to wait in the handler", || {
                f.calls.load(SeqCst) as usize >= arrived
            })
            .await;
        }
        assert_eq!(channel.pending_calls(), CALLS, "all in flight together");
        assert_eq!(f.server.stats().in_flight, CALLS);
        // The long call: the newest entry of the pending table.
        let stalled = long.then(|| {
            let client = client.clone();
            tokio::spawn(async move { client.echo(&request("stall")).await })
        });
        let total = CALLS + usize::from(long);
        within(limit, "the long call to reach its handler", || {
            f.calls.load(SeqCst) as usize >= handled + total
        })
        .await;
        let peak = keel_alloc::live_bytes();
        f.gate.add_permits(CALLS);
        while let Some(done) = calls.join_next().await {
            let reply = done.expect("call task").expect("gated call");
            assert_eq!(reply.message, "gate");
        }
        (peak, stalled)
    };
    let (peak, stalled) = peak;
    let still = usize::from(long);
    within(limit, "the burst to settle", || {
        channel.pending_calls() == still && f.server.stats().in_flight == still
    })
    .await;
    assert_eq!(f.server.stats().connections, 1, "one connection throughout");
    // The idle period the burst is followed by (not a synchronisation).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = keel_alloc::live_bytes();

    let delta = after as i64 - baseline as i64;
    println!(
        "baseline {baseline} B, peak {peak} B (+{} B in flight), after burst and 1 s idle \
         ({still} call still waiting) {after} B: {delta:+} B",
        peak as i64 - baseline as i64
    );
    assert!(
        delta.abs() <= TOLERANCE,
        "{CALLS} calls left the live heap at {delta:+} B of its baseline with {still} call \
         still waiting (tolerance {TOLERANCE} B)"
    );
    if let Some(stalled) = stalled {
        assert_eq!(channel.pending_calls(), 1, "the long call still waits");
        stalled.abort();
        within(limit, "the long call to be abandoned", || {
            channel.pending_calls() == 0
        })
        .await;
    }
}

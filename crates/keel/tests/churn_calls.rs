//! Rule R6 for calls: 100,000 calls on one connection after warm-up leave
//! the live heap flat on both sides (client and server share this process
//! and its counting allocator), with rpcz tracing at its default rate.

mod support;

use keel::Channel;
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

#[tokio::test]
async fn hundred_thousand_calls_leave_the_heap_flat() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let req = request("0123456789abcdef");
    for _ in 0..10_000 {
        client.echo(&req).await.expect("warm-up call");
    }
    // rpcz stays on at its default rate: traced calls fill a bounded store
    // of recent trees; emptied and trimmed, everything comes back.
    let settle = || {
        keel::rpcz::tracer().store().clear();
        keel_rpcz::SPANS.trim();
        keel_rpcz::TREES.trim();
    };
    settle();
    let before = keel_alloc::stats();
    for _ in 0..100_000 {
        let resp = client.echo(&req).await.expect("call");
        assert_eq!(resp.message.len(), 16);
    }
    let traced = keel::rpcz::tracer().store().stats().submitted;
    settle();
    let d = before.delta(&keel_alloc::stats());
    assert!(traced > 0, "rpcz traced some of the calls");
    assert_eq!(channel.pending_calls(), 0);
    assert_eq!(f.server.stats().in_flight, 0);
    println!(
        "100,000 calls: {:.2} allocations per call (both sides), live heap {:+} bytes",
        d.allocs as f64 / 100_000.0,
        d.live_bytes
    );
    assert!(d.live_bytes.abs() < 32 * 1024, "live heap moved {d:?}");
}

//! Rule R6 for channels and connections: 10,000 channels each connect, call
//! and drop. Afterwards the server holds no connection, no connection task
//! is left on either side, and the live heap is back at its baseline.

mod support;

use keel::Channel;
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

async fn one_channel(addr: &str) {
    let channel = Channel::new(addr).expect("valid address");
    let resp = EchoServiceClient::new(&channel)
        .echo(&request("hi"))
        .await
        .expect("call");
    assert_eq!(resp.message, "hi");
}

#[tokio::test]
async fn ten_thousand_channels_leave_nothing_behind() {
    // This test is about channels and connections; rpcz (on by default) keeps recent traces
    // in a bounded store, which has churn tests of its own in keel-rpcz.
    keel::rpcz::tracer().sampler().set_target(0);
    let f = start(|b| b).await;
    let addr = f.addr();
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..100 {
        one_channel(&addr).await;
    }
    eventually("warm-up connections to close", || {
        f.server.stats().connections == 0
    })
    .await;
    let tasks = metrics.num_alive_tasks();
    let before = keel_alloc::stats();
    for _ in 0..10_000 {
        one_channel(&addr).await;
    }
    eventually("the server to close every connection", || {
        f.server.stats().connections == 0
    })
    .await;
    eventually("every connection task to end", || {
        metrics.num_alive_tasks() == tasks
    })
    .await;
    let d = before.delta(&keel_alloc::stats());
    assert_eq!(f.server.stats().accepted, 10_100);
    assert!(d.live_bytes.abs() < 64 * 1024, "live heap moved {d:?}");
}

//! Rule R6 for invokers: 100,000 cycles of adding and removing endpoints
//! through list naming updates, with servers on loopback and calls along
//! the way. Afterwards the live heap is back at its baseline, the registry
//! lists only the current invokers, and no task or connection is left.

mod support;

use std::time::Duration;

use keel::Channel;
use keel::cluster::Endpoint;
use keel::cluster::live_invokers;
use keel::cluster::naming::ListNaming;
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const CYCLES: u64 = 100_000;
/// One cycle in this many also calls (and so connects) through the new set.
const CALL_EVERY: u64 = 200;

#[tokio::test]
async fn hundred_thousand_endpoint_changes_leave_nothing_behind() {
    keel::rpcz::tracer().sampler().set_target(0);
    let servers = [start(|b| b).await, start(|b| b).await, start(|b| b).await];
    let eps: Vec<Endpoint> = servers.iter().map(|s| Endpoint::new(s.addr())).collect();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_without_channel = metrics.num_alive_tasks();
    let naming = ListNaming::new(eps[..2].to_vec());
    let updater = naming.updater();
    let channel = Channel::builder_with_naming("list://churn", Box::new(naming))
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let client = EchoServiceClient::new(&channel);
    // Each cycle replaces one endpoint of the two: one invoker created, one
    // destroyed.
    let mut applied = 1;
    let mut cycle = |i: u64| {
        let set = vec![
            eps[(i % 3) as usize].clone(),
            eps[((i + 1) % 3) as usize].clone(),
        ];
        updater.set(set);
        applied += 1;
        applied
    };
    let settle = || async {
        for s in &servers {
            eventually("connections of removed invokers to close", || {
                s.server.stats().connections <= 1
            })
            .await;
        }
    };
    cluster.wait_for_updates(1).await;
    for i in 1..1_000 {
        cluster.wait_for_updates(cycle(i)).await;
        if i % CALL_EVERY == 0 {
            client.echo(&request("warm")).await.expect("call");
        }
    }
    settle().await;
    let tasks = metrics.num_alive_tasks();
    let before = keel_alloc::stats();
    for i in 1_000..1_000 + CYCLES {
        cluster.wait_for_updates(cycle(i)).await;
        if i % CALL_EVERY == 0 {
            client.echo(&request("churn")).await.expect("call");
        }
    }
    settle().await;
    eventually("connection tasks of removed invokers to end", || {
        metrics.num_alive_tasks() <= tasks
    })
    .await;
    let d = before.delta(&keel_alloc::stats());
    eprintln!("{CYCLES} endpoint changes: {d:?}");
    assert_eq!(cluster.stats().updates, applied);
    assert_eq!(cluster.invokers().len(), 2);
    assert_eq!(
        live_invokers(),
        2,
        "the registry lists only current invokers"
    );
    assert_eq!(channel.pending_calls(), 0);
    assert!(d.live_bytes.abs() < 64 * 1024, "live heap moved {d:?}");
    drop(client);
    drop(channel);
    eventually("the channel's invokers to go with it", || {
        live_invokers() == 0
    })
    .await;
    for s in &servers {
        eventually("every connection to close", || {
            s.server.stats().connections == 0
        })
        .await;
    }
    eventually("the naming task and connection tasks to end", || {
        metrics.num_alive_tasks() == tasks_without_channel
    })
    .await;
}

//! Rules R5 and R6 with a real etcd (see `support/etcd.rs`):
//!
//! - 10,000 channels on an `etcd://` URL (1,000 in debug builds), each
//!   built, called once and dropped: no watch left open, in Keel's count
//!   and in etcd's own (`etcd_debugging_mvcc_watcher_total` on its
//!   `/metrics`), no task left, no invoker, no connection, and the live
//!   heap back at its baseline;
//! - 1,000 register/deregister cycles of one server under a watching
//!   channel: 1,000 invokers created and destroyed, none left, the heap
//!   flat.
//!
//! rpcz's store of recent traces is emptied before each heap reading: it
//! is bounded on purpose, and etcd's own calls are traced like any other.
//!
//! Each test runs alone on a runtime of its own (`support::alone`): the
//! counting allocator sees the whole process.

mod support;

use std::time::Duration;

use keel::Channel;
use keel::cluster::live_invokers;
use keel::etcd::EtcdRegistration;
use keel_alloc::CountingAlloc;
use support::etcd::Etcd;
use support::{EchoServiceClient, alone, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Channels built and dropped: the count in an optimized build (CI
/// runs this test with `--release`), fewer in debug builds.
const CHANNELS: usize = if cfg!(debug_assertions) {
    1_000
} else {
    10_000
};
/// Register/deregister cycles.
const CYCLES: usize = 1_000;
/// Rounds before the baseline, so what is built once is in it.
const WARM_UP: usize = 20;
/// Live heap a test may leave behind, whatever the counts.
const TOLERANCE: i64 = 16 * 1024;

/// The live heap, after emptying what rpcz keeps on purpose (a bounded
/// store of recent traces, which etcd's calls fill too).
fn live() -> i64 {
    keel::rpcz::tracer().store().clear();
    keel_rpcz::SPANS.trim();
    keel_rpcz::TREES.trim();
    keel_alloc::live_bytes() as i64
}

fn tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (bounded) until etcd's own count of watchers is `n`.
async fn etcd_watchers_reach(etcd: &Etcd, n: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = etcd.metric("etcd_debugging_mvcc_watcher_total");
        if now == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd counts {now} watchers, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn etcd_channels_by_the_thousand_leave_nothing() {
    alone(async {
        let etcd = Etcd::start().await;
        let url = etcd.url("services/churn");
        let server = start(|b| {
            b.register(EtcdRegistration::new(&url, Duration::from_secs(10)).expect("a URL"))
        })
        .await;
        eventually("the server to register", || {
            keel::etcd::counters().registered == 1
        })
        .await;
        let one_channel = || async {
            let channel = Channel::builder(&url)
                .timeout(Some(Duration::from_secs(5)))
                .build()
                .expect("a valid URL");
            EchoServiceClient::new(&channel)
                .echo(&request("churn"))
                .await
                .expect("a call through etcd naming");
            assert_eq!(keel::etcd::counters().watches, 1);
        };
        // Waits until dropped channels left nothing running.
        let server = &server;
        let quiet = |tasks_before: usize| async move {
            eventually("the watches to close", || {
                keel::etcd::counters().watches == 0
            })
            .await;
            eventually("invokers to go", || live_invokers() == 0).await;
            eventually("connections to close", || {
                server.server.stats().connections == 0
            })
            .await;
            eventually("tasks to end", || tasks() == tasks_before).await;
        };
        let tasks_before = tasks();
        for _ in 0..WARM_UP {
            one_channel().await;
        }
        quiet(tasks_before).await;
        let etcd_watchers = etcd.metric("etcd_debugging_mvcc_watcher_total");
        {
            // A channel alive is a watcher etcd counts: the count is the
            // right one to watch.
            let channel = Channel::new(&url).expect("a valid URL");
            EchoServiceClient::new(&channel)
                .echo(&request("counted"))
                .await
                .expect("a call");
            etcd_watchers_reach(&etcd, etcd_watchers + 1.0).await;
        }
        quiet(tasks_before).await;
        let requests = |method: &str| {
            etcd.metric_where(
                "grpc_server_started_total",
                &format!("grpc_method=\"{method}\""),
            )
        };
        let (ranges, watches) = (requests("Range"), requests("Watch"));
        let base = live();
        for _ in 0..CHANNELS {
            one_channel().await;
        }
        quiet(tasks_before).await;
        let grown = live() - base;
        // etcd ends a watch when its stream is reset; its count follows.
        etcd_watchers_reach(&etcd, etcd_watchers).await;
        let per_channel = |before: f64, method: &str| (requests(method) - before) / CHANNELS as f64;
        println!(
            "{CHANNELS} etcd:// channels: heap {grown:+} B, etcd watchers {} (before {etcd_watchers}); \
             etcd requests per channel start: {:.2} Range, {:.2} Watch",
            etcd.metric("etcd_debugging_mvcc_watcher_total"),
            per_channel(ranges, "Range"),
            per_channel(watches, "Watch"),
        );
        assert!(
            grown <= TOLERANCE,
            "{CHANNELS} channels left {grown} B of live heap"
        );
    });
}

#[test]
fn register_deregister_cycles_leave_nothing() {
    alone(async {
        let etcd = Etcd::start().await;
        let url = etcd.url("services/cycles");
        let server = start(|b| b).await;
        let addr = server.server.local_addr();
        let channel = Channel::new(&url).expect("a valid URL");
        let cluster = channel.cluster().expect("a cluster channel");
        cluster.wait_for_updates(1).await;
        // Ids of the invokers created, one per cycle: each a new one.
        let mut invokers = Vec::with_capacity(WARM_UP + CYCLES);
        let mut cycle = async || {
            let mut registration = EtcdRegistration::new(&url, Duration::from_secs(10))
                .expect("a URL")
                .start(addr)
                .expect("registering starts");
            registration.registered().await;
            eventually("the invoker to come", || live_invokers() == 1).await;
            invokers.push(cluster.invokers()[0].id);
            assert!(registration.deregister().await, "revoked");
            eventually("the invoker to go", || live_invokers() == 0).await;
        };
        for _ in 0..WARM_UP {
            cycle().await;
        }
        let base = live();
        for _ in 0..CYCLES {
            cycle().await;
        }
        let grown = live() - base;
        invokers.sort_unstable();
        invokers.dedup();
        assert_eq!(
            invokers.len(),
            WARM_UP + CYCLES,
            "an invoker created for each registration"
        );
        assert!(keel::cluster::invokers().is_empty());
        assert!(keel::etcd::registrations().is_empty());
        assert_eq!(keel::etcd::counters().registered, 0);
        println!("{CYCLES} register/deregister cycles: heap {grown:+} B");
        assert!(
            grown <= TOLERANCE,
            "{CYCLES} cycles left {grown} B of live heap"
        );
    });
}

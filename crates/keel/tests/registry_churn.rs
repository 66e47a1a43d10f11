//! Rules R6 and R7 for the process-wide invoker registry: a burst of 10,000
//! invokers, dropped while an invoker created after all of them lives on,
//! gives back what it took. The registry and the channel that held the
//! burst (its naming service's copy of the last set) end up sized by what
//! is alive now, not by the burst: a table that only gave back its
//! trailing entries would hold the burst's room until the later invoker
//! dropped.
//!
//! Alone in its binary: the registry is process-wide, and the counting
//! allocator sees every thread.

mod support;

use keel::Channel;
use keel::cluster::naming::{ListNaming, ListUpdater};
use keel::cluster::{Cluster, Endpoint, invokers, live_invokers};
use keel_alloc::CountingAlloc;
use support::eventually;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const BURST: usize = 10_000;
/// Live heap the measured round may leave behind: the later invoker itself
/// (its transport, endpoint and statistics) and the one-entry sets of its
/// channel, a few KB, far less than the burst's entries (10,000 × 16 B in
/// the registry alone).
const TOLERANCE: i64 = 64 * 1024;

/// A channel over a list the test sets, and the count of sets it applied.
struct Listed {
    channel: Channel,
    updater: ListUpdater,
    applied: u64,
}

impl Listed {
    async fn new(name: &str) -> Listed {
        let naming = ListNaming::new(Vec::new());
        let updater = naming.updater();
        let channel = Channel::builder_with_naming(name, Box::new(naming))
            .build()
            .expect("valid");
        let listed = Listed {
            channel,
            updater,
            applied: 1,
        };
        listed.cluster().wait_for_updates(1).await;
        listed
    }

    fn cluster(&self) -> &Cluster {
        self.channel.cluster().expect("a list channel is a cluster")
    }

    /// Sets the servers (a set that differs from the current one) and waits
    /// until the channel has applied it.
    async fn set(&mut self, endpoints: Vec<Endpoint>) {
        self.updater.set(endpoints);
        self.applied += 1;
        self.cluster().wait_for_updates(self.applied).await;
    }
}

/// Endpoints nobody connects to: invokers connect at their first call, and
/// this test makes none.
fn burst_endpoints(round: usize) -> Vec<Endpoint> {
    (0..BURST)
        .map(|i| Endpoint::new(format!("127.{round}.{}.{}:9", i / 256, i % 256)))
        .collect()
}

/// One round: `burst` gets 10,000 servers, then `lasting` its one server
/// (the newest invoker), then `burst` drops all of its own. Returns the id
/// of the newest burst invoker.
async fn round(burst: &mut Listed, lasting: &mut Listed, round: usize) -> u64 {
    burst.set(burst_endpoints(round)).await;
    assert_eq!(live_invokers(), BURST);
    let newest_of_burst = burst
        .cluster()
        .invokers()
        .iter()
        .map(|i| i.id)
        .max()
        .expect("the burst is there");
    lasting
        .set(vec![Endpoint::new(format!("127.0.0.{round}:9"))])
        .await;
    burst.set(Vec::new()).await;
    eventually("the burst's invokers to be dropped", || {
        live_invokers() == 1
    })
    .await;
    newest_of_burst
}

#[tokio::test]
async fn a_burst_of_invokers_gives_back_its_memory_while_a_later_one_lives() {
    keel::rpcz::tracer().sampler().set_target(0);
    let mut lasting = Listed::new("list://lasting").await;
    // A first round on a channel dropped afterwards, so that what is built
    // once per process (runtime, registry) is in the baseline, but nothing
    // a burst grew in a channel: the measured burst goes through a channel
    // that never saw one.
    let mut warm = Listed::new("list://warm").await;
    round(&mut warm, &mut lasting, 1).await;
    lasting.set(Vec::new()).await;
    drop(warm);
    assert_eq!(live_invokers(), 0);
    let mut burst = Listed::new("list://burst").await;

    let before = keel_alloc::stats();
    let newest_of_burst = round(&mut burst, &mut lasting, 2).await;
    let d = before.delta(&keel_alloc::stats());
    eprintln!("{BURST} invokers dropped under a later one: {d:?}");

    // The invoker registered after the whole burst is the one left, alive.
    let left = invokers();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].channel, "list://lasting");
    assert!(left[0].id > newest_of_burst, "{left:?}");
    assert!(
        d.live_bytes.abs() < TOLERANCE,
        "live heap moved {} B after the burst: {d:?}",
        d.live_bytes
    );

    drop(burst);
    drop(lasting);
    eventually("every invoker to go with its channel", || {
        live_invokers() == 0
    })
    .await;
}

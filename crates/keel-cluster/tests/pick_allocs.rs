//! A pick (for a first or a later attempt) allocates nothing, for every
//! balancer, at 10 and 1,000 servers: counted by keel-alloc's counting
//! allocator, installed for this test binary only. Counts are this
//! thread's own (`churn_thread`), so tests running in parallel threads do
//! not disturb each other.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use keel_alloc::{CountingAlloc, churn_thread};
use keel_cluster::balance::{LoadBalancer, Picker, ServerState, endpoint_hash};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// A server as the balancers see it: what keel's invoker exposes.
type Server = ServerState;

/// `n` servers of assorted weights, loads and latencies.
fn servers(n: usize) -> Vec<Server> {
    (0..n)
        .map(|i| Server {
            weight: 1 + (i % 4) as u32,
            usable: AtomicBool::new(true),
            in_flight: AtomicU32::new((i % 7) as u32),
            latency_us: AtomicU64::new(100 + (i % 13) as u64),
            hash: endpoint_hash(&format!("10.1.{}.{}:9000", i / 256, i % 256)),
        })
        .collect()
}

const PICKS: u64 = 20_000;

#[test]
fn picks_allocate_nothing() {
    // The counter is live in this binary: an allocation per iteration shows.
    let d = churn_thread(0, 10, |i| drop(std::hint::black_box(Box::new(i))));
    assert_eq!(d.allocs, 10);
    for n in [10, 1_000] {
        let s = servers(n);
        for kind in LoadBalancer::ALL {
            let picker = Picker::new(kind, &s);
            let d = churn_thread(1_000, PICKS, |i| {
                let key = i.wrapping_mul(0x9e37_79b9);
                let got = picker.pick(&s, key, |_| false);
                assert!(got.is_some());
                // A retry's or backup request's pick, avoiding the first.
                let again = picker.pick_again(&s, key, |j| Some(j) == got);
                assert!(again.is_some());
            });
            assert_eq!(d.allocs, 0, "{kind} at {n} servers: {d:?}");
        }
    }
}

#[test]
fn skipping_and_feedback_allocate_nothing() {
    for n in [10, 1_000] {
        let s = servers(n);
        // A third of the servers down, and every call excludes another
        // third: probes fail often and fallbacks run.
        for (i, server) in s.iter().enumerate() {
            server.usable.store(i % 3 != 0, Relaxed);
        }
        for kind in LoadBalancer::ALL {
            let picker = Picker::new(kind, &s);
            let d = churn_thread(1_000, PICKS, |i| {
                let got = picker.pick(&s, i, |j| j % 3 == 1);
                let j = got.expect("a third qualify");
                s[j].in_flight.fetch_add(1, Relaxed);
                picker.feedback(&s, j);
                s[j].in_flight.fetch_sub(1, Relaxed);
                picker.feedback(&s, j);
            });
            assert_eq!(d.allocs, 0, "{kind} at {n} servers: {d:?}");
            // Nothing qualifies: still no allocation, and None.
            let d = churn_thread(10, 1_000, |i| {
                assert_eq!(picker.pick(&s, i, |_| true), None);
            });
            assert_eq!(d.allocs, 0, "{kind} at {n} servers, none: {d:?}");
        }
    }
}

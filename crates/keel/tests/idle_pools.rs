//! Rule R7 for a process that goes quiet: pools give their memory back
//! although nobody uses them any more.
//!
//! A pool notices idleness by itself only while it is used (it counts its
//! own puts), so a pool a burst grew and nobody touches afterwards would
//! keep its blocks. A server's idle-trim timer gives them back: each period
//! it trims every pool nobody drew from during the period. These tests
//! really idle (no call, no pool use) and poll, bounded, for the pools'
//! bytes to fall back. A pool's bytes include the heap its free objects
//! keep, and match the live heap it holds (keel-pool's `churn_idle` test);
//! the process's live heap is not compared here because the timer trims
//! every pool of the process, including what earlier tests left.

mod support;

use std::time::Duration;

use keel::Channel;
use keel_alloc::CountingAlloc;
use keel_pool::{Pool, Reset};
use support::{EchoServiceClient, alone, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// The servers' idle-trim period in these tests.
const PERIOD: Duration = Duration::from_millis(100);
/// Longest wait for the timer to act: many periods, bounded.
const PATIENCE: Duration = Duration::from_secs(10);

/// An object with a buffer; reset frees capacity above 1 KiB.
struct Obj {
    buf: Vec<u8>,
}

impl Reset for Obj {
    fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > 1024 {
            self.buf = Vec::with_capacity(32);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

static BURST: Pool<Obj> = Pool::new("test.burst", || Obj {
    buf: Vec::with_capacity(32),
});

/// Polls (bounded by [`PATIENCE`], no work in between) until `cond` holds;
/// returns whether it did.
async fn idles_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[test]
fn a_pool_nobody_uses_gives_its_blocks_back_through_the_servers_timer() {
    alone(async {
        let f = start(|b| b.idle_trim(Some(PERIOD))).await;
        drop(BURST.get());
        BURST.trim();
        let base = BURST.stats();

        // A burst: 3,000 objects at once, each growing a 12 KiB buffer (freed
        // on reset), then all returned.
        let held: Vec<_> = (0..3_000)
            .map(|_| {
                let mut o = BURST.get();
                o.buf.resize(12 << 10, 1);
                o
            })
            .collect();
        drop(held);
        let after_burst = BURST.stats();
        println!(
            "after the burst: {} blocks, {} B ({} cached)",
            after_burst.blocks, after_burst.bytes, after_burst.cached
        );
        assert!(
            after_burst.bytes > base.bytes + (64 << 10),
            "the burst's objects are cached (below the high-water mark, so no count-based trim): \
         {after_burst:?}"
        );

        // Quiet: nobody touches the pool. The server's timer gives it all
        // back: it runs on this runtime's one thread, so it takes back that
        // thread's cached objects first and no block stays pinned.
        let started = tokio::time::Instant::now();
        let back = idles_until(|| BURST.stats().bytes <= base.bytes).await;
        let s = BURST.stats();
        println!(
            "after {:?} idle: {} blocks, {} B ({} B over the baseline), {} idle trims",
            started.elapsed(),
            s.blocks,
            s.bytes,
            s.bytes - base.bytes,
            s.idle_trims
        );
        assert!(
            back,
            "an idle pool kept {} B over its baseline for {PATIENCE:?}: {s:?}",
            s.bytes - base.bytes
        );
        assert!(s.idle_trims > after_burst.idle_trims, "{s:?}");
        drop(f);
    });
}

#[test]
fn without_the_timer_a_quiet_pool_keeps_its_blocks() {
    alone(async {
        let f = start(|b| b.idle_trim(None)).await;
        static QUIET: Pool<Obj> = Pool::new("test.quiet", || Obj {
            buf: Vec::with_capacity(32),
        });
        let held: Vec<_> = (0..3_000).map(|_| QUIET.get()).collect();
        drop(held);
        let after_burst = QUIET.stats();
        // The idle period this test is about: ten of the other test's periods.
        tokio::time::sleep(PERIOD * 10).await;
        let s = QUIET.stats();
        assert_eq!(
            s.blocks, after_burst.blocks,
            "nothing trimmed the pool: {s:?}"
        );
        assert_eq!(s.idle_trims, 0);
        drop(f);
    });
}

#[test]
fn span_pools_give_back_a_traced_burst_once_the_server_is_quiet() {
    alone(async {
        let f = start(|b| b.idle_trim(Some(PERIOD))).await;
        let channel = Channel::new(&f.addr()).expect("addr");
        let client = EchoServiceClient::new(&channel);
        let tracer = keel::rpcz::tracer();
        tracer.sampler().set_target(1_000_000);
        client.echo(&request("warm")).await.expect("warm-up");
        tracer.store().clear();
        keel_pool::trim_all();
        let spans = || {
            keel_pool::all_stats()
                .into_iter()
                .filter(|s| s.name.starts_with("rpcz."))
                .map(|s| s.bytes as i64)
                .sum::<i64>()
        };
        let base = spans();

        // 2,000 traced calls at once: 2,000 open trees.
        let calls: Vec<_> = (0..2_000)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.echo(&request(&format!("call {i}"))).await })
            })
            .collect();
        for call in calls {
            call.await.expect("joined").expect("echoed");
        }
        tracer.sampler().set_target(0);
        // The recent-tree store lets go of them: the spans go back to the pools.
        tracer.store().clear();
        let after_burst = spans();
        println!("rpcz pools: base {base} B, after the burst {after_burst} B");
        assert!(
            after_burst > base + (256 << 10),
            "the burst left spans cached"
        );

        // Everything goes: the timer runs on this runtime's one thread,
        // whose cache it takes back first.
        let freed = |name: &str| {
            keel_pool::all_stats()
                .into_iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.blocks_freed)
        };
        let spans_freed = freed("rpcz.spans");
        let bound = base;
        let back = idles_until(|| freed("rpcz.spans") > spans_freed && spans() <= bound).await;
        let left = spans();
        println!("rpcz pools after idling: {left} B");
        assert!(
            back,
            "rpcz pools kept {} B of the burst's {} B while the server idled: {:?}",
            left - base,
            after_burst - base,
            keel_pool::all_stats()
        );
        drop(f);
    });
}

//! Rule R6 for gRPC: a million unary calls and a hundred thousand streams
//! on one connection, ten thousand gRPC channels (fewer in debug builds),
//! and a stream whose reader stops, all under the counting allocator: the
//! live heap comes back.

mod support;

use std::time::Duration;

use keel::streaming::{ResponseSink, Streaming};
use keel::{Channel, Context, Status};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, alone, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

mod streams {
    keel::include_proto!("streams");
}
use streams::{CountRequest, Counter, CounterClient, CounterServer, Number};

struct Numbers;

impl Counter for Numbers {
    async fn count(
        &self,
        _ctx: &Context,
        request: &CountRequest,
        responses: &mut ResponseSink<Number>,
    ) -> Result<(), Status> {
        for i in 0..request.count {
            let n = Number {
                value: request.from + i,
                pad: vec![1; request.pad as usize],
            };
            responses.send(&n).await?;
        }
        Ok(())
    }

    async fn sum(
        &self,
        _ctx: &Context,
        requests: &mut Streaming<Number>,
        response: &mut Number,
    ) -> Result<(), Status> {
        while let Some(n) = requests.message().await? {
            response.value += n.value;
        }
        Ok(())
    }

    async fn double(
        &self,
        _ctx: &Context,
        requests: &mut Streaming<Number>,
        responses: &mut ResponseSink<Number>,
    ) -> Result<(), Status> {
        while let Some(n) = requests.message().await? {
            responses
                .send(&Number {
                    value: n.value * 2,
                    pad: n.pad,
                })
                .await?;
        }
        Ok(())
    }

    async fn negate(
        &self,
        _ctx: &Context,
        request: &Number,
        response: &mut Number,
    ) -> Result<(), Status> {
        response.value = -request.value;
        Ok(())
    }
}

/// Empties what rpcz and the pools keep on purpose (bounded caches).
fn settle() {
    keel::rpcz::tracer().store().clear();
    keel_rpcz::SPANS.trim();
    keel_rpcz::TREES.trim();
}

/// The full counts in an optimized build (CI runs this test with
/// `--release`); fewer in the debug build `cargo test` makes, where h2 runs
/// some twenty times slower.
const UNARY_CALLS: usize = if cfg!(debug_assertions) {
    30_000
} else {
    1_000_000
};
const STREAMS: usize = if cfg!(debug_assertions) {
    3_000
} else {
    100_002
};
const CHANNELS: usize = if cfg!(debug_assertions) {
    3_000
} else {
    10_000
};

#[test]
fn unary_calls_and_streams_on_one_connection_leave_the_heap_flat() {
    alone(async {
        let f = start(|b| b.add_service(CounterServer::new(Numbers))).await;
        let channel = Channel::new(&format!("grpc://{}", f.addr())).expect("addr");
        let echo = EchoServiceClient::new(&channel);
        let counter = CounterClient::new(&channel);
        let req = request("0123456789abcdef");
        let three = CountRequest {
            from: 1,
            count: 3,
            pad: 0,
        };
        let one_stream_of_each = || async {
            let mut numbers = counter.count(&three).await.expect("opened");
            while numbers.message().await.expect("number").is_some() {}
            let mut sum = counter.sum().await.expect("opened");
            sum.send(&Number {
                value: 2,
                pad: Vec::new(),
            })
            .await
            .expect("sent");
            assert_eq!(sum.finish().await.expect("sum").message.value, 2);
            // Dropped after one answer: the stream is reset, not finished.
            let (mut tx, mut rx) = counter.double().await.expect("opened");
            tx.send(&Number {
                value: 1,
                pad: Vec::new(),
            })
            .await
            .expect("sent");
            assert_eq!(rx.message().await.expect("answer").unwrap().value, 2);
        };
        for _ in 0..UNARY_CALLS.min(10_000) / 2 {
            echo.echo(&req).await.expect("warm-up call");
        }
        for _ in 0..STREAMS.min(3_000) / 3 {
            one_stream_of_each().await;
        }
        settle();
        let before = keel_alloc::stats();
        for _ in 0..UNARY_CALLS {
            let resp = echo.echo(&req).await.expect("call");
            assert_eq!(resp.message.len(), 16);
        }
        settle();
        let unary = before.delta(&keel_alloc::stats());
        for _ in 0..STREAMS / 3 {
            one_stream_of_each().await;
        }
        // The server notices the last reset streams on its own tasks.
        eventually("the server's calls end", || f.server.stats().in_flight == 0).await;
        settle();
        let all = before.delta(&keel_alloc::stats());
        assert_eq!(channel.pending_calls(), 0);
        println!(
            "{UNARY_CALLS} unary gRPC calls: {:.1} allocations per call (both sides), live heap {:+} B; \
             then {STREAMS} streams: live heap {:+} B",
            unary.allocs as f64 / UNARY_CALLS as f64,
            unary.live_bytes,
            all.live_bytes
        );
        assert!(unary.live_bytes.abs() < 64 * 1024, "unary calls: {unary:?}");
        assert!(all.live_bytes.abs() < 64 * 1024, "streams: {all:?}");
    });
}

#[test]
fn grpc_channels_by_the_thousand_leave_no_connection_and_no_heap() {
    alone(async {
        let f = start(|b| b).await;
        let addr = format!("grpc://{}", f.addr());
        let req = request("hello");
        let one_channel = || async {
            let channel = Channel::new(&addr).expect("addr");
            let reply = EchoServiceClient::new(&channel)
                .echo(&req)
                .await
                .expect("call");
            assert_eq!(reply.message, "hello");
        };
        for _ in 0..200 {
            one_channel().await;
        }
        eventually("warm-up connections closed", || {
            f.server.stats().connections == 0
        })
        .await;
        settle();
        let before = keel_alloc::stats();
        for _ in 0..CHANNELS {
            one_channel().await;
        }
        eventually("every connection closed", || {
            f.server.stats().connections == 0
        })
        .await;
        settle();
        let d = before.delta(&keel_alloc::stats());
        println!(
            "{CHANNELS} gRPC channels: {:.1} allocations each, live heap {:+} B",
            d.allocs as f64 / CHANNELS as f64,
            d.live_bytes
        );
        assert!(d.live_bytes.abs() < 64 * 1024, "{d:?}");
    });
}

/// A server of `Counter`, and a client on a gRPC channel to it whose
/// deadline (30 s) outlasts a long stream.
async fn counter_server() -> (support::Fixture, CounterClient) {
    let f = start(|b| b.add_service(CounterServer::new(Numbers))).await;
    let channel = Channel::builder(&format!("grpc://{}", f.addr()))
        .timeout(Some(Duration::from_secs(30)))
        .build()
        .expect("addr");
    let counter = CounterClient::new(&channel);
    (f, counter)
}

/// Waits until the live heap is back within 16 KiB of `before`; the
/// difference then.
async fn heap_back_to(before: &keel_alloc::Stats, what: &str) -> keel_alloc::Delta {
    eventually(what, || {
        before.delta(&keel_alloc::stats()).live_bytes.abs() < 16 * 1024
    })
    .await;
    before.delta(&keel_alloc::stats())
}

#[test]
fn a_reader_that_stops_holds_the_server_to_its_window() {
    alone(async {
        let (f, counter) = counter_server().await;
        // Warm the connection up.
        let mut warm = counter
            .count(&CountRequest {
                from: 0,
                count: 2,
                pad: 10,
            })
            .await
            .expect("opened");
        while warm.message().await.expect("number").is_some() {}
        settle();
        let before = keel_alloc::stats();
        // 1,000 responses of 64 KiB (64 MiB) to a reader that takes one.
        let big = CountRequest {
            from: 0,
            count: 1_000,
            pad: 64 * 1024,
        };
        let mut numbers = counter.count(&big).await.expect("opened");
        assert!(numbers.message().await.expect("first").is_some());
        // The handler runs until the windows are full, then waits in send.
        // Whatever it holds is bounded by the windows (1 MiB for the
        // stream, 2 MiB for the connection) and a message in hand.
        let mut peak = 0;
        for _ in 0..2_000 {
            tokio::task::yield_now().await;
            peak = peak.max(before.delta(&keel_alloc::stats()).live_bytes);
        }
        assert_eq!(f.server.stats().in_flight, 1, "the handler waits in send");
        drop(numbers);
        eventually("the handler ends after the reset", || {
            f.server.stats().in_flight == 0
        })
        .await;
        settle();
        let at_reset = before.delta(&keel_alloc::stats());
        // The connection stays open, and `warm`, a finished stream, is
        // still held: the buffers the transfer grew (a 64 KiB read buffer)
        // go back to their idle footprint once the connection has been
        // quiet a moment (rule R7), open streams or not.
        let after = heap_back_to(&before, "the connection's buffers back to idle").await;
        println!(
            "a stalled 64 MiB stream: peak live heap {:+} B (both sides), at the reset {:+} B, once quiet {:+} B",
            peak, at_reset.live_bytes, after.live_bytes
        );
        assert!(peak < 4 * 1024 * 1024, "peak {peak} B");
        drop(warm);
    });
}

/// A stream that goes quiet after a burst and stays open (its handler
/// waits for the next request): once the connection has been quiet a
/// moment, neither side holds the burst's buffers, the handler's response
/// queue and the request queues on both sides among them (rule R7).
#[test]
fn a_stream_open_and_quiet_after_a_burst_holds_no_buffers() {
    alone(async {
        let (f, counter) = counter_server().await;
        let (mut tx, mut rx) = counter.double().await.expect("opened");
        let mut exchange = async |value: i64, pad: usize| {
            tx.send(&Number {
                value,
                pad: vec![7; pad],
            })
            .await
            .expect("sent");
            let n = rx.message().await.expect("answer").expect("one");
            assert_eq!((n.value, n.pad.len()), (2 * value, pad));
        };
        exchange(1, 0).await;
        settle();
        let before = keel_alloc::stats();
        // 1 MiB each way, in messages of 64 KiB.
        for i in 0..16 {
            exchange(i, 64 * 1024).await;
        }
        let burst = before.delta(&keel_alloc::stats());
        // What the burst grew, held until the connection goes quiet.
        assert!(burst.live_bytes > 64 * 1024, "{burst:?}");
        let after =
            heap_back_to(&before, "the burst's buffers back while the stream is open").await;
        println!(
            "a stream quiet after a 1 MiB burst each way: live heap {:+} B after it, {:+} B once quiet",
            burst.live_bytes, after.live_bytes
        );
        assert_eq!(f.server.stats().in_flight, 1, "the stream is still open");
        drop((tx, rx));
    });
}

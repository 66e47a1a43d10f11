//! Overload: clients offering ten times what a server with a concurrency
//! limit admits. Every call is either answered or refused at once with
//! `ELIMIT`: none times out or fails otherwise;
//! the server's live heap is the same after a second round as after the
//! first (under the counting allocator); and an adaptive limit falls when
//! admitted calls start to queue, then refuses the excess itself.
//!
//! Latencies are measured by `keel-bench overload`, not asserted here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel::server::AdaptiveLimit;
use keel::{Channel, Code, Context, Protocol, Server, Status};
use keel_alloc::CountingAlloc;
use tokio::sync::Semaphore;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

mod support;

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// A service that can do `workers` calls at once, each taking a
/// millisecond: beyond that, calls queue for a worker (as calls queue for
/// a CPU), so their latency grows with the calls in flight.
struct Busy {
    workers: Arc<Semaphore>,
    handled: Arc<AtomicU64>,
}

impl EchoService for Busy {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        let _worker = self.workers.acquire().await.expect("open");
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.handled.fetch_add(1, Ordering::Relaxed);
        response.message.clone_from(&req.message);
        Ok(())
    }
}

/// Callers offering load: ten per place the server admits.
const CALLERS: usize = 80;
/// Calls each caller makes per round.
const CALLS: usize = 25;

struct Outcome {
    ok: u64,
    refused: u64,
    other: Vec<Status>,
}

async fn round(channel: &Channel, refused_code: Code) -> Outcome {
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = EchoServiceClient::new(channel);
            tokio::spawn(async move {
                let mut outcome = (0u64, 0u64, Vec::new());
                for _ in 0..CALLS {
                    let request = EchoRequest {
                        message: "load".into(),
                    };
                    match client.echo(&request).await {
                        Ok(_) => outcome.0 += 1,
                        Err(e) if e.code() == refused_code => outcome.1 += 1,
                        Err(e) => outcome.2.push(e),
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome {
        ok: 0,
        refused: 0,
        other: Vec::new(),
    };
    for task in tasks {
        let (ok, refused, other) = task.await.expect("a caller");
        total.ok += ok;
        total.refused += refused;
        total.other.extend(other);
    }
    total
}

async fn server(
    configure: impl FnOnce(keel::server::ServerBuilder) -> keel::server::ServerBuilder,
) -> (Server, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let busy = Busy {
        workers: Arc::new(Semaphore::new(4)),
        handled: handled.clone(),
    };
    let server = configure(Server::builder().add_service(EchoServiceServer::new(busy)))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    (server, handled)
}

fn channel(server: &Server, protocol: Protocol) -> Channel {
    Channel::builder(&server.local_addr().to_string())
        .protocol(protocol)
        .max_retry(0)
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("channel")
}

/// The live heap, after emptying what rpcz keeps on purpose (a bounded
/// store of recent traces, which a round of calls fills further).
fn live() -> i64 {
    keel::rpcz::tracer().store().clear();
    keel_rpcz::SPANS.trim();
    keel_rpcz::TREES.trim();
    keel_alloc::live_bytes() as i64
}

#[test]
fn a_fixed_limit_refuses_the_excess_at_once_with_a_flat_heap() {
    support::alone_on(2, async {
        let (server, handled) = server(|b| b.max_concurrency(8)).await;
        // Keel's gRPC client reads brpc's code from the trailers (a peer
        // that is not Keel sees `UNAVAILABLE`, see status::mapping).
        for (protocol, refused) in [
            (Protocol::BaiduStd, Code::ELIMIT),
            (Protocol::Grpc, Code::ELIMIT),
        ] {
            let channel = channel(&server, protocol);
            let first = round(&channel, refused).await;
            let after_first = live();
            let second = round(&channel, refused).await;
            let grown = live() - after_first;
            for outcome in [&first, &second] {
                assert!(
                    outcome.other.is_empty(),
                    "{protocol:?}: {} other failures, first {:?}",
                    outcome.other.len(),
                    outcome.other.first()
                );
                assert!(outcome.ok > 0, "{protocol:?}: some calls admitted");
                assert!(outcome.refused > 0, "{protocol:?}: the excess refused");
                assert_eq!(outcome.ok + outcome.refused, (CALLERS * CALLS) as u64);
            }
            assert!(
                grown < 256 * 1024,
                "{protocol:?}: a second round of overload left {grown} B more live heap"
            );
        }
        let stats = server.stats();
        assert!(stats.rejected > 0);
        assert_eq!(stats.in_flight, 0);
        assert!(handled.load(Ordering::Relaxed) > 0);
    });
}

#[test]
fn an_adaptive_limit_falls_when_calls_queue() {
    support::alone_on(2, async {
        let adaptive = AdaptiveLimit {
            initial: 64,
            min: 2,
            max: 1000,
            window: Duration::from_millis(20),
            min_samples: 8,
        };
        let (server, _handled) = server(|b| b.adaptive_max_concurrency(adaptive)).await;
        let channel = channel(&server, Protocol::BaiduStd);
        // Four workers; eighty callers: admitted calls queue for a worker
        // until the limit comes down to about what the workers do.
        let mut refused = 0;
        for _ in 0..4 {
            let outcome = round(&channel, Code::ELIMIT).await;
            assert!(
                outcome.other.is_empty(),
                "{} other failures, first {:?}",
                outcome.other.len(),
                outcome.other.first()
            );
            refused += outcome.refused;
        }
        assert!(refused > 0, "the adaptive limit refused the excess");
        let mut http = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        let status = get_json(&mut http, "/status?format=json").await;
        assert_eq!(status["adaptive_concurrency"], true);
        let limit = status["max_concurrency"].as_u64().expect("a limit");
        assert!(
            (2..64).contains(&limit),
            "the limit fell from 64 to {limit}"
        );
    });
}

/// One HTTP/1.0 GET, its body as JSON.
async fn get_json(stream: &mut tokio::net::TcpStream, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    let body = text.split_once("\r\n\r\n").expect("a body").1;
    serde_json::from_str(body).expect("JSON")
}

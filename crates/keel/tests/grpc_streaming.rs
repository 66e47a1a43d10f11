//! Streaming calls over gRPC between Keel's client and server, generated
//! from `proto/streams.proto`: server-, client- and bidirectional
//! streaming, statuses mid-stream, cancellation by either side, flow
//! control as backpressure, and streams over a baidu_std channel refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use keel::streaming::{ResponseSink, Streaming};
use keel::{Channel, Code, Context, Server, Status};

mod streams {
    keel::include_proto!("streams");
}
use streams::{CountRequest, Counter, CounterClient, CounterServer, Number};

/// Counts handlers running and responses sent.
#[derive(Default, Clone)]
struct Gauges {
    running: Arc<AtomicUsize>,
    sent: Arc<AtomicI64>,
}

struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(gauges: &Gauges) -> Running {
        gauges.running.fetch_add(1, Ordering::SeqCst);
        Running(gauges.running.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Service(Gauges);

fn number(value: i64) -> Number {
    Number {
        value,
        pad: Vec::new(),
    }
}

impl Counter for Service {
    async fn count(
        &self,
        ctx: &Context,
        request: &CountRequest,
        responses: &mut ResponseSink<Number>,
    ) -> Result<(), Status> {
        let _running = Running::new(&self.0);
        responses.header("count-from", &request.from.to_string())?;
        ctx.set_response_metadata("counted", request.count.abs().to_string());
        for i in 0..request.count.abs() {
            let mut n = number(request.from + i);
            n.pad = vec![7; request.pad as usize];
            responses.send(&n).await?;
            self.0.sent.fetch_add(1, Ordering::SeqCst);
        }
        if request.count < 0 {
            return Err(Status::failed_precondition(
                "a negative count, after the numbers",
            ));
        }
        Ok(())
    }

    async fn sum(
        &self,
        _ctx: &Context,
        requests: &mut Streaming<Number>,
        response: &mut Number,
    ) -> Result<(), Status> {
        let _running = Running::new(&self.0);
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
        let _running = Running::new(&self.0);
        while let Some(n) = requests.message().await? {
            responses.send(&number(n.value * 2)).await?;
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

/// (calls, errors) of `method` in `channel`'s statistics.
fn stats_of(channel: &Channel, method: &str) -> (u64, u64) {
    channel
        .method_stats()
        .iter()
        .find(|s| s.method.method == method)
        .map_or((0, 0), |s| (s.calls, s.errors))
}

async fn serve() -> (Server, Gauges, CounterClient) {
    let gauges = Gauges::default();
    let server = Server::builder()
        .add_service(CounterServer::new(Service(gauges.clone())))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("addr");
    (server, gauges, CounterClient::new(&channel))
}

/// Waits (yielding, bounded) until no handler runs.
async fn handlers_end(gauges: &Gauges) {
    for _ in 0..1_000_000 {
        if gauges.running.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "{} handlers still run",
        gauges.running.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn server_streaming_delivers_every_message_then_the_trailers() {
    let (_server, gauges, client) = serve().await;
    let request = CountRequest {
        from: 10,
        count: 1000,
        pad: 0,
    };
    let mut numbers = client.count(&request).await.expect("opened");
    let mut expected = 10;
    while let Some(n) = numbers.message().await.expect("a number") {
        assert_eq!(n.value, expected);
        expected += 1;
    }
    assert_eq!(expected, 1010);
    assert_eq!(numbers.metadata().get("count-from"), Some("10"));
    assert_eq!(numbers.trailers().get("counted"), Some("1000"));
    // A plain call on the same service and connection.
    let negated = client.negate(&number(5)).await.expect("unary");
    assert_eq!(negated.value, -5);
    handlers_end(&gauges).await;
}

#[tokio::test]
async fn a_status_after_messages_reaches_the_caller() {
    let (_server, _gauges, client) = serve().await;
    let request = CountRequest {
        from: 0,
        count: -3,
        pad: 0,
    };
    let mut numbers = client.count(&request).await.expect("opened");
    for i in 0..3 {
        assert_eq!(numbers.message().await.expect("a number").unwrap().value, i);
    }
    let err = numbers.message().await.expect_err("the handler's status");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "a negative count, after the numbers");
    // Zero messages and an error: a trailers-only answer.
    let none = CountRequest {
        from: 0,
        count: 0,
        pad: 0,
    };
    let mut empty = client.count(&none).await.expect("opened");
    assert_eq!(empty.message().await.expect("clean end"), None);
    // Streams count in the channel's statistics like calls: two streams,
    // the first of them failed.
    assert_eq!(stats_of(client.client().channel(), "Count"), (2, 1));
}

#[tokio::test]
async fn client_streaming_sums_what_was_sent() {
    let (_server, gauges, client) = serve().await;
    let mut call = client.sum().await.expect("opened");
    for i in 1..=100 {
        call.send(&number(i)).await.expect("sent");
    }
    let total = call.finish().await.expect("summed");
    assert_eq!(total.message.value, 5050);
    // No request at all is a sum of zero.
    let call = client.sum().await.expect("opened");
    assert_eq!(call.finish().await.expect("summed").message.value, 0);
    handlers_end(&gauges).await;
}

#[tokio::test]
async fn bidirectional_streams_interleave() {
    let (_server, gauges, client) = serve().await;
    let (mut requests, mut responses) = client.double().await.expect("opened");
    for i in 0..50 {
        requests.send(&number(i)).await.expect("sent");
        let doubled = responses.message().await.expect("answer").expect("one");
        assert_eq!(doubled.value, i * 2);
    }
    requests.close();
    assert_eq!(responses.message().await.expect("clean end"), None);
    // Sending from one task while receiving in another.
    let (mut requests, mut responses) = client.double().await.expect("opened");
    let sender = tokio::spawn(async move {
        for i in 0..500 {
            requests.send(&number(i)).await.expect("sent");
        }
        requests.close();
    });
    let mut seen = 0;
    while let Some(n) = responses.message().await.expect("answer") {
        assert_eq!(n.value, seen * 2);
        seen += 1;
    }
    assert_eq!(seen, 500);
    sender.await.expect("sender");
    handlers_end(&gauges).await;
}

#[tokio::test]
async fn dropping_either_side_cancels_the_handler() {
    let (_server, gauges, client) = serve().await;
    // A caller that stops reading a long stream and drops it.
    let request = CountRequest {
        from: 0,
        count: 1_000_000,
        pad: 0,
    };
    let mut numbers = client.count(&request).await.expect("opened");
    assert!(numbers.message().await.expect("first").is_some());
    drop(numbers);
    handlers_end(&gauges).await;
    // A bidirectional caller that drops its sink without closing it.
    let (mut requests, mut responses) = client.double().await.expect("opened");
    requests.send(&number(1)).await.expect("sent");
    assert_eq!(responses.message().await.expect("answer").unwrap().value, 2);
    drop(requests);
    let err = responses.message().await.expect_err("cancelled");
    assert_eq!(err.code(), Code::Cancelled, "{err}");
    handlers_end(&gauges).await;
    // A bidirectional caller that drops the responses and keeps its sink:
    // the stream is reset all the same, and the sink says so.
    let (mut requests, mut responses) = client.double().await.expect("opened");
    requests.send(&number(1)).await.expect("sent");
    assert_eq!(responses.message().await.expect("answer").unwrap().value, 2);
    drop(responses);
    handlers_end(&gauges).await;
    let mut failed = false;
    for i in 0..1_000 {
        if requests.send(&number(i)).await.is_err() {
            failed = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(failed, "sending on a reset stream fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_handler_back() {
    let (_server, gauges, client) = serve().await;
    // 64 KiB messages: without flow control the handler would run far
    // ahead of this slow reader; with it, at most the windows' worth
    // (1 MiB per stream) plus the message in hand is outstanding.
    let request = CountRequest {
        from: 0,
        count: 200,
        pad: 64 * 1024,
    };
    let mut numbers = client.count(&request).await.expect("opened");
    let mut received = 0i64;
    let mut widest = 0;
    while let Some(n) = numbers.message().await.expect("a number") {
        assert_eq!(n.value, received);
        received += 1;
        let ahead = gauges.sent.load(Ordering::SeqCst) - received;
        widest = widest.max(ahead);
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(received, 200);
    assert!(
        widest <= 40,
        "the handler ran {widest} messages ahead of the reader"
    );
}

#[tokio::test]
async fn streams_need_a_grpc_channel() {
    let (server, _gauges, _client) = serve().await;
    let baidu = Channel::new(&server.local_addr().to_string()).expect("addr");
    let err = CounterClient::new(&baidu)
        .sum()
        .await
        .expect_err("no streams over baidu_std");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("grpc://"), "{err}");
    // The deadline bounds a whole stream.
    let (_server, _gauges, client) = serve().await;
    let slow = client.with_options(keel::CallOptions {
        timeout: Some(Duration::from_millis(100)),
        ..keel::CallOptions::default()
    });
    let (_requests, mut responses) = slow.double().await.expect("opened");
    let err = responses.message().await.expect_err("deadline");
    assert!(
        matches!(err.code(), Code::ERPCTIMEDOUT | Code::DeadlineExceeded),
        "{err}"
    );
}

/// Many small messages to a reader slower than the handler: they travel
/// joined into few DATA frames, so the reader's h2 never takes them for a
/// flood of small frames (which it answers by closing the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_messages_reaches_a_slow_reader() {
    let (_server, _gauges, client) = serve().await;
    let request = CountRequest {
        from: 0,
        count: 100_000,
        pad: 0,
    };
    let mut numbers = client
        .with_options(keel::CallOptions {
            timeout: Some(Duration::from_secs(60)),
            ..keel::CallOptions::default()
        })
        .count(&request)
        .await
        .expect("opened");
    let mut received = 0;
    while let Some(n) = numbers.message().await.expect("every number, no GOAWAY") {
        assert_eq!(n.value, received);
        received += 1;
        if received % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(received, 100_000);
}

/// The same burst to a plain h2 client with h2's default windows (as
/// hyper and tonic use them: a 64 KiB connection window, so a budget of
/// about a hundred small DATA frames it has not read): it reads them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_do_not_flood_a_plain_h2_client() {
    use keel::bytes::{BufMut, Bytes, BytesMut};
    use prost::Message;

    let (server, _gauges, _client) = serve().await;
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut sender = sender.ready().await.expect("ready");
    let request = http::Request::post("http://localhost/streams.Counter/Count")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = sender.send_request(request, false).expect("sent");
    let message = CountRequest {
        from: 0,
        count: 20_000,
        pad: 0,
    }
    .encode_to_vec();
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(message.len() as u32);
    body.extend_from_slice(&message);
    send.send_data(body.freeze(), true).expect("request body");
    let response = response.await.expect("response headers");
    let mut data = response.into_body();
    let mut bytes = 0usize;
    let mut frames = 0usize;
    // Frames under 256 bytes are what h2 budgets: a handler and the
    // stream's flusher on two workers must not make one of each message.
    let mut small = 0usize;
    let mut budget = UnreadBudget::new();
    while let Some(chunk) = data.data().await {
        let chunk: Bytes = chunk.expect("data, not a GOAWAY for too many small frames");
        bytes += chunk.len();
        frames += 1;
        small += usize::from(chunk.len() < 256);
        budget.receive(chunk.len());
        let _ = data.flow_control().release_capacity(chunk.len());
        // A slow reader.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
    let trailers = data.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    // Every message arrived: 5 bytes of prefix and its encoding each.
    let expected: usize = (0..20_000i64)
        .map(|v| {
            5 + Number {
                value: v,
                pad: Vec::new(),
            }
            .encoded_len()
        })
        .sum();
    assert_eq!(bytes, expected);
    assert!(frames < 2_000, "{frames} DATA frames for 20,000 messages");
    assert!(
        budget.lowest > 0,
        "an h2 client that read none of these frames would have closed the \
         connection: {small} DATA frames under 256 bytes of {frames} ran its \
         budget of small frames down to {}",
        budget.lowest
    );
}

/// h2's guard against floods of small DATA frames (h2 0.4.16 and later,
/// `proto/streams/counts.rs`), for a client that reads none of them: a
/// frame under 256 bytes costs 256 less its length, a larger one gives
/// back its length less 256 up to the whole budget (25,600 bytes with h2's
/// default windows), and at 0 the client sends GOAWAY ENHANCE_YOUR_CALM.
/// A reader gets a small frame's cost back when it reads it; this counts
/// as if it never did, the case a slow client comes to.
struct UnreadBudget {
    left: i64,
    lowest: i64,
}

impl UnreadBudget {
    const THRESHOLD: i64 = 256;
    const BUDGET: i64 = 100 * Self::THRESHOLD;

    fn new() -> UnreadBudget {
        UnreadBudget {
            left: Self::BUDGET,
            lowest: Self::BUDGET,
        }
    }

    fn receive(&mut self, len: usize) {
        let len = len as i64;
        self.left = (self.left + len - Self::THRESHOLD).min(Self::BUDGET);
        self.lowest = self.lowest.min(self.left);
    }
}

/// Opening a stream on a cluster goes through the channel's one retry
/// loop: a server that cannot be reached is replaced by another (a free
/// retry: nothing was sent), and with retries off its failure is the
/// caller's.
#[tokio::test]
async fn opening_a_stream_fails_over_from_a_server_that_is_down() {
    let (server, gauges, _client) = serve().await;
    // A port nothing listens on any more: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = format!("list://{dead},{}", server.local_addr());
    let channel = Channel::builder(&url)
        .protocol(keel::Protocol::Grpc)
        .build()
        .expect("url");
    let client = CounterClient::new(&channel);
    let request = CountRequest {
        from: 1,
        count: 2,
        pad: 0,
    };
    for _ in 0..4 {
        let mut numbers = client.count(&request).await.expect("opened");
        assert_eq!(
            numbers.message().await.expect("a number").map(|n| n.value),
            Some(1)
        );
        assert_eq!(
            numbers.message().await.expect("a number").map(|n| n.value),
            Some(2)
        );
        assert_eq!(numbers.message().await.expect("the end"), None);
    }
    let stats = channel.cluster().expect("a cluster").stats();
    assert!(stats.retries >= 1, "{stats:?}");
    assert_eq!(stats.free_retries, stats.retries, "{stats:?}");

    let no_retry = Channel::builder(&format!("list://{dead}"))
        .protocol(keel::Protocol::Grpc)
        .max_retry(0)
        .build()
        .expect("url");
    let err = CounterClient::new(&no_retry)
        .count(&request)
        .await
        .expect_err("nothing listens");
    assert_eq!(err.code(), Code::EFAILEDSOCKET, "{err}");
    handlers_end(&gauges).await;
}

//! A server that breaks every connection, or a port nobody listens on,
//! costs a client a handful of connection attempts, not one per call:
//! after a connection fails or breaks without an answer, the endpoint
//! waits (10 ms doubling to 2 s, with jitter) before the next attempt, and
//! calls meanwhile fail at once with EFAILEDSOCKET, marked as not written. Once the server answers again, calls succeed
//! again. Counted on `/vars`. The same for baidu_std, gRPC and HTTP/1
//! channels.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http1::Http1;
use keel::{Channel, Code};
use support::fake_baidu;
use support::{EchoServiceClient, request};
use tokio::time::Instant;

/// Connections a client may open to a broken server in one second: the
/// waits of 10, 20, 40, ... ms (each drawn in its upper half) allow about
/// ten; without them a client calling in a loop opened thousands.
const MOST_CONNECTIONS: u64 = 20;

/// Calls `client` in a loop for one second (at most 100,000 calls);
/// returns how many failed with EFAILEDSOCKET.
async fn call_for_a_second(client: &EchoServiceClient) -> u64 {
    let end = Instant::now() + Duration::from_secs(1);
    let mut failed = 0;
    for _ in 0..100_000 {
        if Instant::now() >= end {
            break;
        }
        match client.echo(&request("hello")).await {
            Ok(reply) => panic!("the broken server answered {reply:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::EFAILEDSOCKET, "{status}");
                failed += 1;
            }
        }
        // Lets the runtime breathe between fast failures.
        tokio::task::yield_now().await;
    }
    failed
}

/// Polls (bounded) until a call succeeds; then ten more all succeed.
async fn calls_succeed_again(client: &EchoServiceClient) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match client.echo(&request("back")).await {
            Ok(reply) => {
                assert_eq!(reply.message, "back");
                break;
            }
            Err(status) => assert!(
                Instant::now() < end,
                "the server is good again, yet calls still fail: {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..10 {
        client
            .echo(&request("again"))
            .await
            .expect("the endpoint works");
    }
}

fn var(vars: &serde_json::Value, name: &str) -> u64 {
    vars["vars"]
        .as_array()
        .expect("vars")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in /vars"))["value"]
        .as_f64()
        .expect("a number") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_breaks_every_connection_gets_a_handful_of_attempts_per_second() {
    let server = fake_baidu::start(fake_baidu::echo).await;
    server.close_at_once.store(true, Ordering::Relaxed);
    let channel = Channel::builder(&server.addr)
        .timeout(Some(Duration::from_secs(2)))
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&channel);
    // A Keel server only for its console.
    let console = support::start(|b| b).await;
    let mut http = Http1::connect(console.server.local_addr()).await;
    let before = http.get("/vars?format=json").await.json();

    let failed = call_for_a_second(&client).await;

    let accepts = server.accepts.load(Ordering::Relaxed);
    assert!(failed > 0);
    assert!(
        (1..=MOST_CONNECTIONS).contains(&accepts),
        "{accepts} connections in a second for {failed} failed calls"
    );
    let after = http.get("/vars?format=json").await.json();
    let grew = |name| var(&after, name) - var(&before, name);
    // Other tests of this binary may count too: at least ours.
    assert!(grew("keel_client_reconnects_total") >= accepts - 1);
    assert!(grew("keel_client_reconnect_backoffs_total") >= accepts);
    assert!(grew("keel_client_backoff_refusals_total") > 0);

    server.close_at_once.store(false, Ordering::Relaxed);
    calls_succeed_again(&client).await;
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_tried_a_handful_of_times_per_second() {
    // A port just released: connections to it are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let channel = Channel::builder(&addr.to_string())
        .timeout(Some(Duration::from_secs(2)))
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&channel);
    let console = support::start(|b| b).await;
    let mut http = Http1::connect(console.server.local_addr()).await;
    let before = http.get("/vars?format=json").await.json();

    let failed = call_for_a_second(&client).await;

    let after = http.get("/vars?format=json").await.json();
    let grew = |name| var(&after, name) - var(&before, name);
    let attempts = grew("keel_client_reconnects_total");
    // Other tests of this binary may count too: bound ours by twice the
    // budget (without the waits: some 17,000 attempts).
    assert!(
        attempts <= 2 * MOST_CONNECTIONS,
        "{attempts} connection attempts in a second for {failed} failed calls"
    );
    assert!(grew("keel_client_reconnect_backoffs_total") >= 1);
    assert!(grew("keel_client_backoff_refusals_total") > 0);
}

/// The gRPC and HTTP/1 transports wait the same way: a server that accepts
/// and closes every connection at once gets a handful of attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_channels_back_off_too() {
    for scheme in ["grpc://", "http://"] {
        let server = fake_baidu::start(fake_baidu::echo).await;
        server.close_at_once.store(true, Ordering::Relaxed);
        let channel = Channel::builder(&format!("{scheme}{}", server.addr))
            .timeout(Some(Duration::from_secs(2)))
            .build()
            .expect("addr");
        let client = EchoServiceClient::new(&channel);
        let end = Instant::now() + Duration::from_secs(1);
        let mut calls = 0;
        while Instant::now() < end && calls < 100_000 {
            let status = client
                .echo(&request("hello"))
                .await
                .expect_err("broken server");
            assert_eq!(status.code(), Code::EFAILEDSOCKET, "{scheme}: {status}");
            calls += 1;
            tokio::task::yield_now().await;
        }
        let accepts = server.accepts.load(Ordering::Relaxed);
        assert!(
            (1..=MOST_CONNECTIONS).contains(&accepts),
            "{scheme}: {accepts} connections in a second for {calls} calls"
        );
    }
}

/// In a cluster, the breaker isolates the breaking server and its health
/// checks probe it; the probes reconnect no faster than the endpoint's
/// backoff allows, and every call succeeds on the good server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_breaking_server_keeps_calling_the_good_one() {
    let breaking = fake_baidu::start(fake_baidu::echo).await;
    breaking.close_at_once.store(true, Ordering::Relaxed);
    let good = support::start(|b| b).await;
    let channel = Channel::builder(&format!("list://{},{}", breaking.addr, good.addr()))
        .timeout(Some(Duration::from_secs(2)))
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&channel);
    let end = Instant::now() + Duration::from_secs(1);
    let mut calls = 0;
    while Instant::now() < end && calls < 100_000 {
        let reply = client.echo(&request("hello")).await;
        assert_eq!(reply.expect("the good server answers").message, "hello");
        calls += 1;
        tokio::task::yield_now().await;
    }
    let accepts = breaking.accepts.load(Ordering::Relaxed);
    assert!(
        (1..=MOST_CONNECTIONS).contains(&accepts),
        "{accepts} connections to the breaking server in a second of {calls} calls"
    );
    breaking.close_at_once.store(false, Ordering::Relaxed);
    // Once it answers, a health check revives it and it takes calls again.
    let before = breaking.requests.load(Ordering::Relaxed);
    let end = Instant::now() + Duration::from_secs(10);
    while breaking.requests.load(Ordering::Relaxed) == before {
        assert!(Instant::now() < end, "the repaired server never came back");
        client
            .echo(&request("hello"))
            .await
            .expect("a server answers");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(channel.pending_calls(), 0);
}

//! The server's connection limits, each from outside and on `/vars`:
//! connections that send half a header (or nothing) are closed when their
//! first request does not come in time, idle connections close after the
//! idle timeout (not while a call is in flight), connections over the
//! maximum are closed at accept, calls over the maximum in flight on one
//! connection are refused with `ELIMIT`, and request heads over the
//! maximum are refused (431 on HTTP/1, the stream on gRPC) without hurting
//! other calls.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel::{Channel, Code};
use support::{EchoServiceClient, eventually, request, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (bounded).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn connections_without_a_first_request_are_closed() {
    let fixture = start(|b| b.first_request_timeout(Some(Duration::from_millis(200)))).await;
    let addr = fixture.server.local_addr();
    // A channel calling at once is never cut: its connection lives past
    // the timeout, calls again on the same connection.
    let channel = Channel::new(&fixture.addr()).expect("channel");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("early")).await.expect("a call");
    let mut silent = Vec::new();
    for i in 0..60 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        match i % 3 {
            // Two bytes of a baidu_std header, then nothing.
            0 => stream.write_all(b"PR").await.expect("write"),
            // The magic and part of the sizes.
            1 => stream.write_all(b"PRPC\0\0").await.expect("write"),
            // Nothing at all.
            _ => {}
        }
        silent.push(stream);
    }
    for stream in &mut silent {
        assert!(closed_by_server(stream).await, "a silent connection closed");
    }
    eventually("only the channel's connection open", || {
        fixture.server.stats().connections == 1
    })
    .await;
    assert_eq!(
        http1::var(
            fixture.server.local_addr(),
            "keel_server_first_request_timeouts_total"
        )
        .await,
        60.0
    );
    client.echo(&request("later")).await.expect("a call");
    assert_eq!(
        fixture.server.stats().accepted,
        62,
        "the channel kept its connection (plus the /vars one)"
    );
}

#[tokio::test]
async fn idle_connections_close_but_not_with_a_call_in_flight() {
    let idle = Duration::from_millis(300);
    let fixture = start(|b| b.idle_timeout(Some(idle))).await;
    let channel = Channel::builder(&fixture.addr())
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("channel");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("hi")).await.expect("a call");
    assert_eq!(fixture.server.stats().connections, 1);
    eventually("the idle connection to close", || {
        fixture.server.stats().connections == 0
    })
    .await;
    // A call held in its handler for three idle periods, on a connection
    // where nothing moves meanwhile: not idle.
    let gated = fixture.gated.notified();
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    gated.await;
    tokio::time::sleep(idle * 3).await;
    assert_eq!(fixture.server.stats().connections, 1, "kept while busy");
    fixture.gate.add_permits(1);
    assert_eq!(
        held.await.expect("task").expect("the held call").message,
        "gate"
    );
    eventually("closed once idle again", || {
        fixture.server.stats().connections == 0
    })
    .await;
    assert_eq!(
        http1::var(fixture.server.local_addr(), "keel_server_idle_closes_total").await,
        2.0
    );
}

#[tokio::test]
async fn connections_over_the_maximum_are_closed_at_accept() {
    let fixture = start(|b| b.max_connections(Some(5))).await;
    let addr = fixture.server.local_addr();
    let mut kept = Vec::new();
    for _ in 0..5 {
        kept.push(TcpStream::connect(addr).await.expect("connect"));
    }
    eventually("five connections open", || {
        fixture.server.stats().connections == 5
    })
    .await;
    for _ in 0..5 {
        let mut over = TcpStream::connect(addr).await.expect("connect");
        assert!(closed_by_server(&mut over).await, "closed at accept");
    }
    assert_eq!(fixture.server.stats().connections, 5);
    drop(kept);
    eventually("the five to close", || {
        fixture.server.stats().connections == 0
    })
    .await;
    let channel = Channel::new(&fixture.addr()).expect("channel");
    EchoServiceClient::new(&channel)
        .echo(&request("room again"))
        .await
        .expect("a call once there is room");
    assert_eq!(
        http1::var(
            fixture.server.local_addr(),
            "keel_server_refused_connections_total"
        )
        .await,
        5.0
    );
}

#[tokio::test]
async fn calls_over_the_maximum_per_connection_get_elimit() {
    let fixture = start(|b| b.max_calls_per_connection(Some(2))).await;
    let channel = Channel::builder(&fixture.addr())
        .max_retry(0)
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("channel");
    let client = EchoServiceClient::new(&channel);
    let mut held = Vec::new();
    for _ in 0..2 {
        let gated = fixture.gated.notified();
        let client = client.clone();
        held.push(tokio::spawn(
            async move { client.echo(&request("gate")).await },
        ));
        gated.await;
    }
    let err = client
        .echo(&request("third"))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ELIMIT, "{err}");
    assert!(err.message().contains("2 calls"), "{err}");
    fixture.gate.add_permits(2);
    for call in held {
        call.await.expect("task").expect("held calls finish");
    }
    client
        .echo(&request("room"))
        .await
        .expect("room on the connection again");
    assert_eq!(
        fixture.calls.load(Ordering::Relaxed),
        3,
        "the third never ran"
    );
    assert_eq!(
        http1::var(
            fixture.server.local_addr(),
            "keel_server_refused_calls_total"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn heads_over_the_maximum_are_refused() {
    let fixture = start(|b| b.max_header_size(8 * 1024)).await;
    // HTTP/1: 431, the connection closed.
    let mut http = http1::Http1::connect(fixture.server.local_addr()).await;
    let big = "x".repeat(10 * 1024);
    let reply = http
        .request("GET", "/status", &[("x-big", big.as_str())], b"")
        .await;
    assert_eq!(reply.status, 431);
    // gRPC: the call with too much metadata fails; the next one works.
    let channel = Channel::new(&format!("grpc://{}", fixture.addr())).expect("channel");
    let client = EchoServiceClient::new(&channel);
    let err = client
        .echo(&request("big"))
        .metadata("x-big", big.as_str())
        .await
        .expect_err("metadata over the limit");
    assert_ne!(err.code(), Code::Ok);
    client
        .echo(&request("small"))
        .metadata("x-small", "1")
        .await
        .expect("a call within the limit");
    assert_eq!(
        fixture.calls.load(Ordering::Relaxed),
        1,
        "the big one never ran"
    );
}

//! The same generated client over `http://` (JSON over HTTP/1.1) as over
//! baidu_std and gRPC: answers, status codes, deadlines, concurrent calls
//! on keep-alive connections, and streaming methods refused clearly.

mod support;

use std::time::Duration;

use keel::{CallOptions, Channel, Code, MethodDescriptor, MethodKind};
use support::{EchoServiceClient, request, start};

#[tokio::test]
async fn one_client_speaks_every_protocol_alike() {
    let fixture = start(|b| b).await;
    let addr = fixture.addr();
    for url in [
        addr.clone(),
        format!("grpc://{addr}"),
        format!("http://{addr}"),
    ] {
        let channel = Channel::new(&url).expect("addr");
        let client = EchoServiceClient::new(&channel);
        let reply = client.echo(&request("hello")).await.expect("echo");
        assert_eq!(reply.message, "hello", "{url}");
        let err = client.echo(&request("fail")).await.expect_err("fails");
        assert_eq!(err.code(), Code::new(4242), "{url}: {err}");
        assert!(err.message().contains("refusing to echo"), "{url}: {err}");
        let timed = client
            .with_options(CallOptions {
                timeout: Some(Duration::from_millis(50)),
                ..CallOptions::default()
            })
            .echo(&request("deadline"))
            .await
            .expect("answers");
        assert_eq!(
            timed.message, "deadline=true",
            "{url}: the deadline reached the server"
        );
        let err = client
            .with_options(CallOptions {
                timeout: Some(Duration::from_millis(30)),
                ..CallOptions::default()
            })
            .echo(&request("stall"))
            .await
            .expect_err("times out");
        assert_eq!(err.code(), Code::ERPCTIMEDOUT, "{url}: {err}");
        assert_eq!(channel.pending_calls(), 0, "{url}");
    }
}

#[tokio::test]
async fn concurrent_http_calls_use_keep_alive_connections() {
    let fixture = start(|b| b).await;
    let channel = Channel::new(&format!("http://{}", fixture.addr())).expect("addr");
    let client = EchoServiceClient::new(&channel);
    for round in 0..3 {
        let calls: Vec<_> = (0..32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.echo(&request(&format!("m{i}"))).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let reply = call.await.expect("task").expect("echo");
            assert_eq!(reply.message, format!("m{i}"), "round {round}");
        }
    }
    let stats = fixture.server.stats();
    // 32 connections for the first round; each later round reuses the
    // MAX_IDLE kept and opens the rest.
    let idle = keel::transport::http::MAX_IDLE as u64;
    assert!(
        stats.accepted <= 32 + 2 * (32 - idle),
        "idle connections are reused: {} accepted for 96 calls",
        stats.accepted
    );
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test]
async fn unknown_methods_and_unreachable_servers_fail_clearly() {
    static NOPE: MethodDescriptor = MethodDescriptor {
        service: "example.EchoService",
        method: "Nope",
        path: "/example.EchoService/Nope",
        index: 0,
        request_type: "example.EchoRequest",
        response_type: "example.EchoResponse",
        kind: MethodKind::Unary,
        files: support::example::echo_service::SERVICE.files,
    };
    let fixture = start(|b| b).await;
    let channel = Channel::new(&format!("http://{}", fixture.addr())).expect("addr");
    let err = channel
        .call(&NOPE, &CallOptions::default(), &request("x"))
        .await
        .expect_err("no such method");
    assert_eq!(err.code(), Code::ENOMETHOD, "{err}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = listener.local_addr().expect("addr");
    drop(listener);
    let channel = Channel::builder(&format!("http://{dead}"))
        .max_retry(0)
        .build()
        .expect("addr");
    let err = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect_err("nobody listens");
    assert_eq!(err.code(), Code::EFAILEDSOCKET, "{err}");
}

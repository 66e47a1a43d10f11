//! gRPC over HTTP/2 between Keel's own client and server, on the port that
//! also serves baidu_std: unary calls, metadata both ways, status codes
//! exactly (named, brpc's and applications'), deadlines that cancel the
//! handler, compression, size limits, and a bad first line closed cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel::{CallOptions, Channel, Code, Compression, Context, Protocol, Server, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echoes; a message `fail CODE` fails with that code, `hang` waits until
/// cancelled (counting cancellations), and metadata comes back `seen-`.
#[derive(Default)]
struct Echo {
    hanging: Arc<Notify>,
    dropped: Arc<AtomicUsize>,
    /// `wait` answers once this is notified.
    release: Arc<Notify>,
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        for (k, v) in ctx.metadata().iter() {
            ctx.set_response_metadata(format!("seen-{k}"), v);
        }
        if let Some(code) = req.message.strip_prefix("fail ") {
            let code = Code::new(code.parse().expect("a number"));
            return Err(Status::new(
                code,
                format!("failed with {code}: 100% on purpose"),
            ));
        }
        if req.message == "details" {
            return Err(Status::failed_precondition("see the details")
                .with_details(&b"\x08\x09\x12\x0fsee the details"[..]));
        }
        if req.message == "wait" {
            self.hanging.notify_one();
            self.release.notified().await;
        }
        if req.message == "hang" {
            let _count = CountDrop(self.dropped.clone());
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        resp.message = format!("{} via {}", req.message, ctx.protocol());
        Ok(())
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

async fn serve(echo: Echo) -> Server {
    Server::builder()
        .add_service(EchoServiceServer::new(echo))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
}

#[tokio::test]
async fn one_port_serves_baidu_std_and_grpc() {
    let server = serve(Echo::default()).await;
    let addr = server.local_addr().to_string();
    let grpc = Channel::new(&format!("grpc://{addr}")).expect("addr");
    let baidu = Channel::new(&addr).expect("addr");
    for _ in 0..3 {
        let reply = EchoServiceClient::new(&grpc)
            .echo(&request("hi"))
            .await
            .expect("grpc");
        assert_eq!(reply.message, "hi via grpc");
        let reply = EchoServiceClient::new(&baidu)
            .echo(&request("hi"))
            .await
            .expect("baidu_std");
        assert_eq!(reply.message, "hi via baidu_std");
    }
    // The builder's protocol option does the same as the scheme.
    let built = Channel::builder(&addr)
        .protocol(Protocol::Grpc)
        .build()
        .expect("addr");
    let reply = EchoServiceClient::new(&built)
        .echo(&request("again"))
        .await
        .expect("grpc");
    assert_eq!(reply.message, "again via grpc");
    // Every call multiplexes over one gRPC connection.
    assert_eq!(server.stats().connections, 3);
}

#[tokio::test]
async fn metadata_travels_both_ways() {
    let server = serve(Echo::default()).await;
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let reply = client
        .echo(&request("hi"))
        .metadata("request-id", "r-1")
        .metadata("Tenant", "acme")
        .metadata("blob-bin", "AAEC")
        .full()
        .await
        .expect("echoed");
    assert_eq!(reply.metadata.get("seen-request-id"), Some("r-1"));
    assert_eq!(reply.metadata.get("seen-tenant"), Some("acme"));
    assert_eq!(reply.metadata.get("seen-blob-bin"), Some("AAEC"));
    assert_eq!(reply.metadata.len(), 3, "{:?}", reply.metadata);
    // A key gRPC reserves is refused before anything is sent.
    let err = client
        .echo(&request("hi"))
        .metadata("grpc-status", "0")
        .await
        .expect_err("reserved key");
    assert_eq!(err.code(), Code::EREQUEST);
}

#[tokio::test]
async fn status_codes_come_back_exactly() {
    let server = serve(Echo::default()).await;
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("addr");
    let client = EchoServiceClient::new(&channel);
    for code in [
        Code::NotFound,
        Code::ELIMIT,
        Code::new(40_001),
        Code::Unauthenticated,
    ] {
        let err = client
            .echo(&request(&format!("fail {}", code.value())))
            .await
            .expect_err("fails");
        assert_eq!(err.code(), code);
        assert_eq!(
            err.message(),
            format!("failed with {code}: 100% on purpose")
        );
    }
    // Structured details (grpc-status-details-bin) come through as sent.
    let err = client.echo(&request("details")).await.expect_err("fails");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.details(), b"\x08\x09\x12\x0fsee the details");
    // Unknown service and method: the dispatcher's codes.
    static MISSING: keel::MethodDescriptor = keel::MethodDescriptor {
        service: "example.Nope",
        method: "Echo",
        path: "/example.Nope/Echo",
        index: 0,
        request_type: "example.EchoRequest",
        response_type: "example.EchoResponse",
        kind: keel::MethodKind::Unary,
        files: &[],
    };
    let err = keel::Client::new(&channel)
        .unary::<EchoRequest, EchoResponse>(&MISSING, &request("x"), None)
        .await
        .expect_err("no such service");
    assert_eq!(err.code(), Code::ENOSERVICE);
}

#[tokio::test]
async fn the_deadline_travels_and_cancels_the_handler() {
    let echo = Echo::default();
    let (hanging, dropped) = (echo.hanging.clone(), echo.dropped.clone());
    let server = serve(echo).await;
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let hang = request("hang");
    let started = hanging.notified();
    let call = client.echo(&hang).timeout(Duration::from_millis(200));
    let (result, ()) = tokio::join!(call, started);
    assert_eq!(result.expect_err("times out").code(), Code::ERPCTIMEDOUT);
    // The server's handler is dropped (deadline or reset), not left running.
    while dropped.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // A caller that drops its call resets the stream: cancelled too.
    let started = hanging.notified();
    let mut call = Box::pin(client.echo(&hang).timeout(Duration::from_secs(30)));
    tokio::select! {
        _ = &mut call => panic!("hang answered"),
        () = started => {}
    }
    drop(call);
    while dropped.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn compressed_and_large_messages() {
    let server = serve(Echo::default()).await;
    let addr = server.local_addr().to_string();
    let channel = Channel::new(&format!("grpc://{addr}")).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let long = "x".repeat(300_000);
    for compression in [Compression::Gzip, Compression::Zlib, Compression::None] {
        let reply = client
            .echo(&request(&long))
            .compression(compression)
            .await
            .expect("echoed");
        assert_eq!(reply.message.len(), long.len() + " via grpc".len());
    }
    // Snappy has no gRPC name: refused before sending.
    let err = client
        .echo(&request("x"))
        .compression(Compression::Snappy)
        .await
        .expect_err("no grpc encoding");
    assert_eq!(err.code(), Code::EREQUEST);
    // Over the server's 4 MiB default: RESOURCE_EXHAUSTED, the channel lives on.
    let huge = "y".repeat(5 << 20);
    let err = client.echo(&request(&huge)).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let reply = client.echo(&request("after")).await.expect("still serving");
    assert_eq!(reply.message, "after via grpc");
    // The client's own limit applies to responses.
    let small = Channel::builder(&format!("grpc://{addr}"))
        .max_body_size(1000)
        .build()
        .expect("addr");
    let err = EchoServiceClient::new(&small)
        .with_options(CallOptions::default())
        .echo(&request(&"z".repeat(2000)))
        .await
        .expect_err("response too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
}

#[tokio::test]
async fn a_connection_in_no_known_protocol_is_closed() {
    let server = serve(Echo::default()).await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    stream.write_all(b"HELLO THERE\r\n").await.expect("write");
    let mut buf = Vec::new();
    let n = stream.read_to_end(&mut buf).await.expect("closed cleanly");
    assert_eq!(n, 0);
    // The server still serves gRPC.
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("addr");
    let reply = EchoServiceClient::new(&channel)
        .echo(&request("ok"))
        .await
        .expect("served");
    assert_eq!(reply.message, "ok via grpc");
}

#[tokio::test]
async fn graceful_shutdown_lets_a_call_in_flight_finish() {
    let echo = Echo::default();
    let (hanging, release) = (echo.hanging.clone(), echo.release.clone());
    let server = serve(echo).await;
    let addr = server.local_addr();
    let channel = Channel::new(&format!("grpc://{addr}")).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let started = hanging.notified();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .echo(&request("wait"))
                .timeout(Duration::from_secs(10))
                .await
        }
    });
    started.await;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    // GOAWAY: new calls stop being served (the listener is closed too).
    let mut refused = None;
    for _ in 0..10_000 {
        match client.echo(&request("new")).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("new calls are refused once shutdown began");
    assert!(
        matches!(refused.code(), Code::EFAILEDSOCKET | Code::ELOGOFF),
        "{refused}"
    );
    // The call in flight still gets its answer, and nothing was cut.
    release.notify_one();
    let reply = in_flight
        .await
        .expect("task")
        .expect("answered during shutdown");
    assert_eq!(reply.message, "wait via grpc");
    assert_eq!(shutdown.await.expect("shutdown"), 0, "no connection cut");
}

#[tokio::test]
async fn keepalive_pings_keep_a_live_peer_and_drop_a_silent_one() {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .grpc_keepalive(Some(keel::server::Keepalive {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
        }))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr();
    // A live client answers every ping (h2 does it for Keel's client).
    let channel = Channel::new(&format!("grpc://{addr}")).expect("addr");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("first")).await.expect("served");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats().keepalive_pings < 5 {
        assert!(tokio::time::Instant::now() < deadline, "no pings sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.echo(&request("later")).await.expect("still served");
    assert_eq!(server.stats().accepted, 1, "the same connection all along");
    // A peer that speaks HTTP/2's preface and then reads nothing never
    // answers: the server closes its connection after the timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface and SETTINGS");
    let mut sink = Vec::new();
    // Read until the server closes (or resets) the connection.
    let _closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink))
        .await
        .expect("closed by the server within the bound");
    assert!(
        !sink.is_empty(),
        "the server spoke HTTP/2 (SETTINGS, PING) first"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats().connections != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent connection kept"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_cluster_channel_spreads_grpc_calls_and_fails_over() {
    let first = serve(Echo::default()).await;
    let second = serve(Echo::default()).await;
    let url = format!("list://{},{}", first.local_addr(), second.local_addr());
    let channel = Channel::builder(&url)
        .protocol(Protocol::Grpc)
        .build()
        .expect("url");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..20 {
        let reply = client.echo(&request("spread")).await.expect("served");
        assert_eq!(reply.message, "spread via grpc");
    }
    assert!(
        first.stats().calls > 0 && second.stats().calls > 0,
        "both served"
    );
    // One server goes away: its calls fail over to the other.
    drop(first);
    for _ in 0..20 {
        let reply = client.echo(&request("after")).await.expect("failed over");
        assert_eq!(reply.message, "after via grpc");
    }
}

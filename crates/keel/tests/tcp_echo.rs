//! The echo service over TCP with baidu_std: server, channel, generated
//! client, and the errors brpc defines.

mod support;

use std::time::Duration;

use keel::bytes::Bytes;
use keel::{CallOptions, Channel, Code, Compression};
use support::{EchoServiceClient, eventually, request, start};

#[tokio::test]
async fn echo_round_trip_with_attachments_and_compression() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let resp = client.echo(&request("hello")).await.expect("echo");
    assert_eq!(resp.message, "hello");

    for compression in [Compression::None, Compression::Snappy, Compression::Gzip] {
        let c = client.with_options(CallOptions {
            attachment: Bytes::from_static(b"abc"),
            compression,
            ..CallOptions::default()
        });
        let big = "x".repeat(10_000);
        let big_request = request(&big);
        let resp = c
            .echo(&big_request)
            .full()
            .await
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert_eq!(resp.message.message, big);
        assert_eq!(&resp.attachment[..], b"cba", "{compression:?}");
    }
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test]
async fn handler_errors_and_routing_errors_carry_brpc_codes() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let err = client
        .echo(&request("fail"))
        .await
        .expect_err("handler error");
    assert_eq!(err.code(), Code::new(4242));
    assert!(err.message().contains("refusing"), "{err}");

    static NO_SERVICE: keel::MethodDescriptor = keel::MethodDescriptor {
        service: "example.NoSuchService",
        method: "Echo",
        path: "/example.NoSuchService/Echo",
        index: 0,
        request_type: "example.EchoRequest",
        response_type: "example.EchoResponse",
        kind: keel::MethodKind::Unary,
        files: &[],
    };
    static NO_METHOD: keel::MethodDescriptor = keel::MethodDescriptor {
        service: "example.EchoService",
        method: "NoSuchMethod",
        path: "/example.EchoService/NoSuchMethod",
        index: 0,
        request_type: "example.EchoRequest",
        response_type: "example.EchoResponse",
        kind: keel::MethodKind::Unary,
        files: &[],
    };
    let raw = keel::Client::new(&channel);
    let err = raw
        .unary_raw(&NO_SERVICE, Bytes::new())
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::ENOSERVICE);
    let err = raw
        .unary_raw(&NO_METHOD, Bytes::new())
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::ENOMETHOD);
    let err = raw
        .unary_raw(
            &support::example::echo_service::ECHO,
            Bytes::from_static(b"\xff\xff\xff"),
        )
        .await
        .expect_err("garbage request");
    assert_eq!(err.code(), Code::EREQUEST);
    // The connection survived all of that.
    assert_eq!(
        client.echo(&request("still")).await.expect("echo").message,
        "still"
    );
    assert_eq!(f.server.stats().accepted, 1);
}

#[tokio::test]
async fn responses_return_out_of_order_on_one_connection() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await; // the slow call is in its handler
    // A later call on the same connection completes first.
    assert_eq!(
        client.echo(&request("fast")).await.expect("fast").message,
        "fast"
    );
    assert!(!slow.is_finished());
    f.gate.add_permits(1);
    assert_eq!(slow.await.expect("task").expect("slow").message, "gate");
    assert_eq!(f.server.stats().accepted, 1, "one multiplexed connection");
}

#[tokio::test]
async fn timeouts_answer_erpctimedout_and_send_timeout_ms() {
    let f = start(|b| b).await;
    let channel = Channel::builder(&f.addr())
        .timeout(Some(Duration::from_millis(50)))
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let resp = client.echo(&request("deadline")).await.expect("echo");
    assert_eq!(
        resp.message, "deadline=true",
        "timeout_ms reached the server"
    );
    let err = client.echo(&request("stall")).await.expect_err("stalls");
    assert_eq!(err.code(), Code::ERPCTIMEDOUT);
    assert_eq!(channel.pending_calls(), 0, "timed-out call left the table");
    let no_timeout = Channel::builder(&f.addr())
        .timeout(None)
        .build()
        .expect("valid address");
    let resp = EchoServiceClient::new(&no_timeout)
        .echo(&request("deadline"))
        .await
        .expect("echo");
    assert_eq!(resp.message, "deadline=false");
}

/// With one call held in its handler, a second call is refused with
/// ELIMIT; once the first finishes there is room again.
async fn assert_limit_of_one(f: support::Fixture) {
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    let err = client
        .echo(&request("x"))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ELIMIT);
    f.gate.add_permits(1);
    held.await.expect("task").expect("held call completes");
    client.echo(&request("x")).await.expect("room again");
    assert_eq!(f.server.stats().rejected, 1);
}

#[tokio::test]
async fn concurrency_limits_answer_elimit() {
    assert_limit_of_one(start(|b| b.max_concurrency(1)).await).await;
    let echo = &support::example::echo_service::ECHO;
    assert_limit_of_one(start(|b| b.method_max_concurrency(echo, 1)).await).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_calls() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    let gate = f.gate.clone();
    let server = f.server;
    let shutdown = tokio::spawn(async move { server.shutdown(Duration::from_secs(10)).await });
    // A new call on the open connection is refused with ELOGOFF while the
    // in-flight one is still running.
    let mut refused = None;
    for _ in 0..1000 {
        match client.echo(&request("late")).await {
            Err(e) if e.code() == Code::ELOGOFF => {
                refused = Some(e);
                break;
            }
            Ok(_) => tokio::task::yield_now().await, // shutdown not seen yet
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused.is_some(), "no ELOGOFF seen");
    assert!(!in_flight.is_finished());
    gate.add_permits(1);
    assert_eq!(
        in_flight
            .await
            .expect("task")
            .expect("in-flight call")
            .message,
        "gate"
    );
    assert_eq!(shutdown.await.expect("task"), 0, "nothing had to be cut");
    // Closed: new connections fail.
    let err = client
        .echo(&request("after"))
        .await
        .expect_err("server gone");
    assert_eq!(err.code(), Code::EFAILEDSOCKET, "{err}");
}

#[tokio::test]
async fn channel_reconnects_after_the_server_comes_back() {
    let f = start(|b| b).await;
    let addr = f.server.local_addr();
    let channel = Channel::builder(&addr.to_string())
        .max_retry(0)
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("one")).await.expect("first server");
    assert_eq!(f.server.shutdown(Duration::from_secs(5)).await, 0);
    let err = client.echo(&request("two")).await.expect_err("no server");
    assert_eq!(err.code(), Code::EFAILEDSOCKET);
    // The same port again.
    let again = keel::Server::builder()
        .add_service(support::EchoServiceServer::new(support::Echo::default()))
        .bind(addr)
        .await
        .expect("rebind");
    assert_eq!(
        client
            .echo(&request("three"))
            .await
            .expect("reconnected")
            .message,
        "three"
    );
    assert_eq!(channel.pending_calls(), 0);
    drop(again);
}

#[tokio::test]
async fn bad_addresses_are_refused_clearly() {
    for bad in ["", "localhost", ":80", "host:http", "host:70000"] {
        let err = Channel::new(bad).expect_err(bad);
        assert!(err.to_string().contains("invalid channel address"), "{err}");
    }
}

#[tokio::test]
async fn closed_connections_leave_no_server_state() {
    let f = start(|b| b).await;
    for i in 0..20 {
        let channel = Channel::new(&f.addr()).expect("valid address");
        let msg = format!("m{i}");
        let resp = EchoServiceClient::new(&channel)
            .echo(&request(&msg))
            .await
            .expect("echo");
        assert_eq!(resp.message, msg);
    }
    eventually("the server to see every connection close", || {
        f.server.stats().connections == 0
    })
    .await;
    assert_eq!(f.server.stats().accepted, 20);
}

#[tokio::test]
async fn a_panicking_handler_answers_einternal_and_the_connection_lives_on() {
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    for message in ["panic", "panic-later"] {
        let err = client.echo(&request(message)).await.expect_err(message);
        assert_eq!(err.code(), Code::EINTERNAL, "{message}: {err}");
        assert!(err.message().contains("panicked"), "{err}");
    }
    assert_eq!(
        client.echo(&request("after")).await.expect("echo").message,
        "after"
    );
    assert_eq!(f.server.stats().accepted, 1, "same connection throughout");
    assert_eq!(f.server.stats().in_flight, 0, "permits released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_calls_in_both_directions_at_once_do_not_deadlock() {
    // Each side sends megabytes while the other answers: neither may stop
    // reading while it writes.
    let f = start(|b| b).await;
    let channel = Channel::builder(&f.addr())
        .timeout(Some(Duration::from_secs(60)))
        .build()
        .expect("valid address");
    let big = "y".repeat(1 << 20);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = EchoServiceClient::new(&channel);
        let req = request(&big);
        calls.spawn(async move { client.echo(&req).await.map(|r| r.message.len()) });
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.expect("task").expect("large echo"), 1 << 20);
    }
    assert_eq!(channel.pending_calls(), 0);
}

/// A call registers the task that first polls it when its request is
/// queued; polled afterwards from another task (a future handed over, as
/// join sets and spawned wrappers do), it is that task that its answer
/// wakes, whether the answer came before the hand-over or after.
#[tokio::test]
async fn a_call_handed_to_another_task_after_its_first_poll_is_answered() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    /// A waker that says when it is woken.
    struct Signal(tokio::sync::Notify);
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            self.0.notify_one();
        }
    }

    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    // Connected: the next call's first poll queues its request.
    client.echo(&request("warm")).await.expect("warm-up call");
    for answered_before in [false, true] {
        let mut call = Box::pin({
            let client = client.clone();
            async move { client.echo(&request("gate")).await }
        });
        let signal = Arc::new(Signal(tokio::sync::Notify::new()));
        let waker = Waker::from(signal.clone());
        let first = call.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(first.is_pending(), "the answer cannot be there yet");
        f.gated.notified().await; // in the handler
        if answered_before {
            f.gate.add_permits(1);
            // The answer reached the call: it woke the first poller.
            tokio::time::timeout(Duration::from_secs(5), signal.0.notified())
                .await
                .expect("the first poller is woken by the answer");
        }
        // The new task says when it has polled the call once.
        let (polled, polled_rx) = tokio::sync::oneshot::channel();
        let handed_over = tokio::spawn(async move {
            let mut polled = Some(polled);
            std::future::poll_fn(|cx| {
                let poll = call.as_mut().poll(cx);
                if let Some(polled) = polled.take() {
                    let _ = polled.send(());
                }
                poll
            })
            .await
        });
        polled_rx.await.expect("the new task polled the call");
        if !answered_before {
            f.gate.add_permits(1);
        }
        let reply = tokio::time::timeout(Duration::from_secs(5), handed_over)
            .await
            .expect("the call completes in its new task")
            .expect("task");
        assert_eq!(reply.expect("answered").message, "gate");
    }
}

/// Calls waiting on a connection have their deadline kept by the
/// connection itself (one timer for its pending calls, not one per call):
/// against a server that reads requests and never answers, calls with
/// deadlines later and earlier than the ones already waiting each fail
/// with ERPCTIMEDOUT, none before its deadline, none left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_of_waiting_calls_are_kept_by_their_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let read = Arc::new(AtomicUsize::new(0));
    let counted = read.clone();
    let silent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            counted.fetch_add(n, Ordering::SeqCst);
        }
    });
    let channel = Channel::new(&addr.to_string()).expect("valid address");
    let within = |ms: u64| {
        let client = EchoServiceClient::new(&channel).with_options(CallOptions {
            timeout: Some(Duration::from_millis(ms)),
            ..CallOptions::default()
        });
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            let err = client.echo(&request("x")).await.expect_err("no answer");
            (ms, err, started.elapsed())
        })
    };
    // The first call's request written: its connection keeps deadlines
    // from then on.
    let first = within(100);
    eventually("the first request read", || read.load(Ordering::SeqCst) > 0).await;
    let calls = [first, within(400), within(50), within(700), within(400)];
    for call in calls {
        let (ms, err, elapsed) = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("every call ended")
            .expect("the call's task");
        assert_eq!(err.code(), Code::ERPCTIMEDOUT, "{ms} ms: {err}");
        assert!(
            elapsed >= Duration::from_millis(ms),
            "{ms} ms call failed early, at {elapsed:?}"
        );
    }
    drop(channel);
    silent.abort();
}

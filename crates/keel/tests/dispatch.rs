//! The one dispatch path (`server/dispatch.rs`) seen from outside: panics,
//! concurrency limits, draining and per-method statistics apply to
//! in-process calls exactly as to calls over TCP, and both share one set of
//! places and counters.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::Poll;
use std::time::Duration;

use keel::bytes::{Bytes, BytesMut};
use keel::server::{MethodTable, Service, ServiceFuture};
use keel::{Channel, Code, Context, MethodDescriptor, Server, ServiceDescriptor, Status};
use support::example::echo_service::ECHO;
use support::{Echo, EchoServiceClient, EchoServiceServer, eventually, request, start};
use tokio::sync::{Notify, Semaphore};

mod greeting {
    keel::include_proto!("keel.greeter");
}
use greeting::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};

/// Greets; an empty name is a bad request.
struct Polite;

impl Greeter for Polite {
    async fn say_hello(
        &self,
        _: &Context,
        req: &HelloRequest,
        reply: &mut HelloReply,
    ) -> Result<(), Status> {
        if req.name.is_empty() {
            return Err(Status::bad_request("name is empty"));
        }
        reply.message = format!("hello, {}", req.name);
        Ok(())
    }

    async fn say_goodbye(
        &self,
        _: &Context,
        req: &HelloRequest,
        reply: &mut HelloReply,
    ) -> Result<(), Status> {
        reply.message = format!("goodbye, {}", req.name);
        Ok(())
    }
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
    }
}

/// The handles of a gated echo handler (`request("gate")` waits in its
/// handler until a permit is added).
#[derive(Clone)]
struct Gate {
    gate: Arc<Semaphore>,
    gated: Arc<Notify>,
}

impl Gate {
    fn of(f: &support::Fixture) -> Gate {
        Gate {
            gate: f.gate.clone(),
            gated: f.gated.clone(),
        }
    }
}

#[tokio::test]
async fn in_process_handler_panics_answer_einternal_and_the_channel_lives_on() {
    let f = start(|b| b).await;
    let table = MethodTable::new()
        .with(EchoServiceServer::new(Echo::default()))
        .expect("one service");
    for (name, channel) in [
        ("Server::in_process", f.server.in_process()),
        ("Channel::in_process", Channel::in_process(table)),
    ] {
        let client = EchoServiceClient::new(&channel);
        for message in ["panic", "panic-later"] {
            let err = client
                .echo(&request(message))
                .await
                .expect_err("the handler panicked");
            assert_eq!(err.code(), Code::EINTERNAL, "{name}, {message}: {err}");
            assert!(err.message().contains("panicked"), "{name}: {err}");
        }
        let reply = client.echo(&request("after")).await.expect("echo");
        assert_eq!(reply.message, "after", "{name}");
    }
    let stats = f.server.stats();
    assert_eq!(
        stats.in_flight, 0,
        "the panicked calls released their places"
    );
    assert_eq!((stats.calls, stats.errors), (3, 2), "{stats:?}");
    assert_eq!(stats.accepted, 0, "no socket involved");
}

/// A hand-written echo service whose `call` panics before it returns a
/// future (on its first call only); later calls answer an empty response.
struct PanicsInCall {
    armed: AtomicBool,
}

impl PanicsInCall {
    fn armed() -> PanicsInCall {
        PanicsInCall {
            armed: AtomicBool::new(true),
        }
    }
}

static ECHO_ONLY: ServiceDescriptor = ServiceDescriptor {
    name: "example.EchoService",
    methods: &[&ECHO],
    files: &[],
};

impl Service for PanicsInCall {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &ECHO_ONLY
    }

    fn call<'a>(
        &'a self,
        _method: usize,
        _ctx: &'a Context,
        _request: Bytes,
        response: &'a mut BytesMut,
    ) -> ServiceFuture<'a> {
        if self.armed.swap(false, SeqCst) {
            panic!("the test asked Service::call to panic before returning a future");
        }
        // An EchoResponse { message: "x" } (its one field is required).
        response.extend_from_slice(b"\x0a\x01x");
        ServiceFuture::new(std::future::ready(Ok(())))
    }
}

#[tokio::test]
async fn a_service_panicking_before_its_future_exists_answers_einternal_in_process() {
    let channel = Channel::in_process(
        MethodTable::new()
            .with(PanicsInCall::armed())
            .expect("one service"),
    );
    let client = EchoServiceClient::new(&channel);
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("x")).await }
    })
    .await
    .expect("the panic reached the caller's task instead of becoming EINTERNAL");
    let err = first.expect_err("the service panicked");
    assert_eq!(err.code(), Code::EINTERNAL, "{err}");
    client.echo(&request("x")).await.expect("the next call");
}

#[tokio::test]
async fn a_service_panicking_before_its_future_exists_answers_einternal_over_tcp() {
    let server = Server::builder()
        .add_service(PanicsInCall::armed())
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let channel = Channel::builder(&server.local_addr().to_string())
        .max_retry(0)
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);
    let err = client
        .echo(&request("x"))
        .await
        .expect_err("the service panicked");
    assert_eq!(err.code(), Code::EINTERNAL, "{err}");
    client.echo(&request("x")).await.expect("the next call");
    assert_eq!(
        server.stats().accepted,
        1,
        "the connection outlived the panic"
    );
}

/// `holder` holds the one place with a gated call; a call from `other`
/// (and another from `holder`) is refused with ELIMIT; once the gated call
/// ends there is room again.
async fn assert_one_place(what: &str, gate: &Gate, holder: &Channel, other: &Channel) {
    let held = tokio::spawn({
        let client = EchoServiceClient::new(holder);
        async move { client.echo(&request("gate")).await }
    });
    gate.gated.notified().await;
    for (side, channel) in [("other", other), ("holder", holder)] {
        let err = EchoServiceClient::new(channel)
            .echo(&request("x"))
            .await
            .expect_err("over the limit");
        assert_eq!(err.code(), Code::ELIMIT, "{what}, {side}: {err}");
    }
    gate.gate.add_permits(1);
    let reply = held.await.expect("task").expect("the held call completes");
    assert_eq!(reply.message, "gate", "{what}");
    EchoServiceClient::new(other)
        .echo(&request("x"))
        .await
        .unwrap_or_else(|e| panic!("{what}: room again, but {e}"));
}

#[tokio::test]
async fn concurrency_limits_apply_in_process_and_across_transports() {
    type Configure = fn(keel::server::ServerBuilder) -> keel::server::ServerBuilder;
    let configs: [(&str, Configure); 2] = [
        ("max_concurrency", |b| b.max_concurrency(1)),
        ("method_max_concurrency", |b| {
            b.method_max_concurrency(&ECHO, 1)
        }),
    ];
    for (name, configure) in configs {
        let f = start(configure).await;
        let gate = Gate::of(&f);
        let in_process = f.server.in_process();
        let tcp = Channel::new(&f.addr()).expect("valid address");
        assert_one_place(
            &format!("{name}, in process"),
            &gate,
            &in_process,
            &in_process,
        )
        .await;
        assert_one_place(
            &format!("{name}, in process holds"),
            &gate,
            &in_process,
            &tcp,
        )
        .await;
        assert_one_place(&format!("{name}, TCP holds"), &gate, &tcp, &in_process).await;
        let stats = f.server.stats();
        assert_eq!(stats.rejected, 6, "{name}: {stats:?}");
        assert_eq!(stats.in_flight, 0, "{name}: {stats:?}");
    }
}

#[tokio::test]
async fn server_builder_in_process_applies_the_limits() {
    for (name, max, method) in [("server", 1, usize::MAX), ("method", usize::MAX, 1)] {
        let echo = Echo::default();
        let gate = Gate {
            gate: echo.gate.clone(),
            gated: echo.gated.clone(),
        };
        let channel = Server::builder()
            .add_service(EchoServiceServer::new(echo))
            .max_concurrency(max)
            .method_max_concurrency(&ECHO, method)
            .in_process()
            .expect("valid server");
        assert_one_place(name, &gate, &channel, &channel).await;
    }
}

/// Polls `future` once: whatever it does synchronously on its first poll
/// has happened when this returns.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))).await
}

#[tokio::test]
async fn graceful_shutdown_refuses_new_in_process_calls_and_finishes_those_in_flight() {
    let f = start(|b| b).await;
    let channel = f.server.in_process();
    let client = EchoServiceClient::new(&channel);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    let mut shutdown = Box::pin(f.server.shutdown(Duration::from_secs(10)));
    // Shutdown starts draining on its first poll.
    let early = poll_once(&mut shutdown).await;
    let err = client
        .echo(&request("late"))
        .await
        .expect_err("the server is draining");
    assert_eq!(err.code(), Code::ELOGOFF, "{err}");
    assert!(
        !in_flight.is_finished(),
        "the in-flight call waits in its handler"
    );
    // Shutdown waits for the in-process call too: with the gate closed it
    // cannot have finished, however often it is polled.
    let early = match early {
        Poll::Pending => {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            poll_once(&mut shutdown).await
        }
        ready => ready,
    };
    assert!(
        early.is_pending(),
        "shutdown finished with an in-process call in flight"
    );
    f.gate.add_permits(1);
    let reply = in_flight
        .await
        .expect("task")
        .expect("the in-flight call finishes");
    assert_eq!(reply.message, "gate");
    let cut = match early {
        Poll::Ready(cut) => cut,
        Poll::Pending => shutdown.await,
    };
    assert_eq!(cut, 0, "nothing had to be cut");
    let err = client.echo(&request("after")).await.expect_err("shut down");
    assert_eq!(err.code(), Code::ELOGOFF, "{err}");
    assert_eq!(
        f.calls.load(SeqCst),
        1,
        "refused calls never reach the handler"
    );
}

fn stats_of(server: &Server, method: &MethodDescriptor) -> (u64, u64) {
    let all = server.method_stats();
    let s = all
        .iter()
        .find(|s| s.method.is(method))
        .unwrap_or_else(|| panic!("{method} missing from {all:?}"));
    (s.calls, s.errors)
}

#[tokio::test]
async fn method_stats_count_calls_and_errors_over_tcp_and_in_process_together() {
    let f = start(|b| b.add_service(GreeterServer::new(Polite))).await;
    let tcp = Channel::new(&f.addr()).expect("valid address");
    let in_process = f.server.in_process();

    // Over TCP: Echo 3 ok + 1 error, SayHello 2 ok + 1 error.
    let echo = EchoServiceClient::new(&tcp);
    let greeter = GreeterClient::new(&tcp);
    for m in ["a", "b", "c"] {
        echo.echo(&request(m)).await.expect("echo");
    }
    echo.echo(&request("fail")).await.expect_err("fails");
    greeter.say_hello(&hello("ann")).await.expect("hello");
    greeter.say_hello(&hello("bob")).await.expect("hello");
    greeter.say_hello(&hello("")).await.expect_err("empty name");

    // In process: Echo 2 ok + 1 panic, SayGoodbye 1 ok.
    let echo = EchoServiceClient::new(&in_process);
    echo.echo(&request("d")).await.expect("echo");
    echo.echo(&request("e")).await.expect("echo");
    echo.echo(&request("panic")).await.expect_err("panics");
    GreeterClient::new(&in_process)
        .say_goodbye(&hello("cy"))
        .await
        .expect("goodbye");

    assert_eq!(stats_of(&f.server, &ECHO), (7, 2), "Echo");
    assert_eq!(
        stats_of(&f.server, &greeting::greeter::SAY_HELLO),
        (3, 1),
        "SayHello"
    );
    assert_eq!(
        stats_of(&f.server, &greeting::greeter::SAY_GOODBYE),
        (1, 0),
        "SayGoodbye"
    );
    // Plus the builtin health and reflection methods, never called here.
    let stats = f.server.method_stats();
    let builtin = |m: &keel::MethodDescriptor| m.service.starts_with("grpc.");
    assert_eq!(stats.len(), 3 + 4, "one entry per method");
    assert!(
        stats
            .iter()
            .filter(|s| builtin(s.method))
            .all(|s| s.calls == 0),
        "{stats:?}"
    );
    let stats = f.server.stats();
    assert_eq!((stats.calls, stats.errors), (11, 3), "{stats:?}");
}

#[tokio::test]
async fn a_cancelled_in_process_call_counts_as_a_call_without_an_error() {
    // MethodStatsSnapshot: "cancelled calls count in `calls` only".
    let f = start(|b| b).await;
    let channel = f.server.in_process();
    let call = tokio::spawn({
        let client = EchoServiceClient::new(&channel);
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    eventually("the cancelled call to give its place back", || {
        f.server.stats().in_flight == 0
    })
    .await;
    assert_eq!(stats_of(&f.server, &ECHO), (1, 0));
}

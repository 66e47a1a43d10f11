//! Server interceptors (`server/interceptor.rs`) and client interceptors
//! (`channel/interceptor.rs`): refusal, values handed to the handler,
//! ordering, outcomes, the peer a server interceptor sees, the same on
//! every protocol (in process, baidu_std, gRPC), and no cost when none is
//! installed. Metadata over baidu_std is covered in tests/metadata.rs.

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use keel::server::{Interceptor, MethodTable};
use keel::{
    CallOptions, CallOutcome, Channel, ClientInterceptor, Code, Context, Metadata,
    MethodDescriptor, Server, Status,
};
use support::example::echo_service::ECHO;
use support::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer, request, start,
};

#[global_allocator]
static ALLOC: keel_alloc::CountingAlloc = keel_alloc::CountingAlloc::system();

/// What interceptors and handlers did, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: String) {
    log.lock().expect("not poisoned").push(entry);
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("not poisoned").clone()
}

/// The code of a result, 0 for success.
fn code<T>(result: &Result<T, Status>) -> i32 {
    result.as_ref().err().map_or(0, |e| e.code().value())
}

/// The user a token belongs to, attached by [`RequireToken`].
struct User(&'static str);

/// Lets a call through only with `authorization: Bearer let-me-in`, and
/// tells the handler who called.
struct RequireToken;

impl Interceptor for RequireToken {
    fn before(&self, ctx: &mut Context) -> Result<(), Status> {
        match ctx.metadata().get("authorization") {
            Some("Bearer let-me-in") => {
                ctx.extensions_mut().insert(User("alice"));
                Ok(())
            }
            _ => Err(Status::new(Code::ERPCAUTH, "a valid token is required")),
        }
    }
}

/// Echoes the message and the user an interceptor attached; counts and
/// logs its calls.
#[derive(Default)]
struct Guarded {
    calls: Arc<AtomicU64>,
    log: Log,
}

impl EchoService for Guarded {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, SeqCst);
        push(&self.log, "handler".into());
        let user = ctx.extensions().get::<User>().map_or("nobody", |u| u.0);
        resp.message = format!("{}:{user}", req.message);
        Ok(())
    }
}

fn with_token(token: &str) -> CallOptions {
    CallOptions {
        metadata: Metadata::new().with("authorization", format!("Bearer {token}")),
        ..CallOptions::default()
    }
}

#[tokio::test]
async fn a_server_interceptor_refuses_calls_without_a_token_in_process() {
    let guarded = Guarded::default();
    let calls = guarded.calls.clone();
    let channel = Server::builder()
        .add_service(EchoServiceServer::new(guarded))
        .interceptor(RequireToken)
        .in_process()
        .expect("valid server");
    let client = EchoServiceClient::new(&channel);
    for (name, client) in [
        ("no token", client.clone()),
        ("wrong token", client.with_options(with_token("guess"))),
    ] {
        let err = client.echo(&request("x")).await.expect_err(name);
        assert_eq!(err.code(), Code::ERPCAUTH, "{name}: {err}");
        assert_eq!(err.message(), "a valid token is required", "{name}");
    }
    assert_eq!(
        calls.load(SeqCst),
        0,
        "refused calls never reach the handler"
    );

    let reply = client
        .with_options(with_token("let-me-in"))
        .echo(&request("x"))
        .await
        .expect("the token lets the call in");
    assert_eq!(
        reply.message, "x:alice",
        "the handler saw the attached user"
    );
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test]
async fn a_server_interceptor_refuses_calls_over_tcp() {
    let guarded = Guarded::default();
    let calls = guarded.calls.clone();
    let server = Server::builder()
        .add_service(EchoServiceServer::new(guarded))
        .interceptor(RequireToken)
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let channel = Channel::new(&server.local_addr().to_string()).expect("valid address");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..2 {
        let err = client.echo(&request("x")).await.expect_err("no token");
        assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    }
    assert_eq!(
        calls.load(SeqCst),
        0,
        "refused calls never reach the handler"
    );
    let stats = server.stats();
    assert_eq!(stats.accepted, 1, "a refusal keeps the connection");
    assert_eq!((stats.calls, stats.errors), (2, 2), "{stats:?}");
}

/// Logs `NAME.before` and `NAME.after:CODE`; refuses with ERPCAUTH when
/// told to.
struct Recorder {
    name: &'static str,
    log: Log,
    refuse: bool,
}

impl Interceptor for Recorder {
    fn before(&self, _: &mut Context) -> Result<(), Status> {
        push(&self.log, format!("{}.before", self.name));
        if self.refuse {
            return Err(Status::new(
                Code::ERPCAUTH,
                format!("{} refuses", self.name),
            ));
        }
        Ok(())
    }

    fn after(&self, _: &Context, result: &Result<(), Status>) {
        push(&self.log, format!("{}.after:{}", self.name, code(result)));
    }
}

/// A server (builder) with `Guarded` behind interceptors a, b, c logging
/// into one log; `refusing` names the one that refuses, if any.
fn recorded(refusing: Option<&str>) -> (keel::server::ServerBuilder, Log) {
    let log = Log::default();
    let guarded = Guarded {
        log: log.clone(),
        ..Guarded::default()
    };
    let mut builder = Server::builder().add_service(EchoServiceServer::new(guarded));
    for name in ["a", "b", "c"] {
        builder = builder.interceptor(Recorder {
            name,
            log: log.clone(),
            refuse: refusing == Some(name),
        });
    }
    (builder, log)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn server_interceptors_run_before_in_order_and_after_in_reverse() {
    let expected = strings(&[
        "a.before",
        "b.before",
        "c.before",
        "handler",
        "c.after:0",
        "b.after:0",
        "a.after:0",
    ]);

    let (builder, log) = recorded(None);
    let channel = builder.in_process().expect("valid server");
    EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect("echo");
    assert_eq!(entries(&log), expected, "in process");

    let (builder, log) = recorded(None);
    let server = builder.bind("127.0.0.1:0").await.expect("bind loopback");
    let channel = Channel::new(&server.local_addr().to_string()).expect("valid address");
    EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect("echo");
    assert_eq!(entries(&log), expected, "over TCP");
}

#[tokio::test]
async fn the_first_refusing_server_interceptor_stops_the_rest() {
    let (builder, log) = recorded(Some("b"));
    let server = builder.bind("127.0.0.1:0").await.expect("bind loopback");
    let tcp = Channel::new(&server.local_addr().to_string()).expect("valid address");
    let in_process = server.in_process();
    for (name, channel) in [("over TCP", &tcp), ("in process", &in_process)] {
        log.lock().expect("not poisoned").clear();
        let err = EchoServiceClient::new(channel)
            .echo(&request("x"))
            .await
            .expect_err("b refuses");
        assert_eq!(err.code(), Code::ERPCAUTH, "{name}: {err}");
        assert_eq!(err.message(), "b refuses", "{name}");
        let log = entries(&log);
        assert_eq!(log[..2], strings(&["a.before", "b.before"]), "{name}");
        assert!(
            !log.iter().any(|e| e.starts_with("c.") || e == "handler"),
            "{name}: nothing after the refusal may run: {log:?}"
        );
    }
}

#[tokio::test]
async fn server_interceptors_see_a_limit_refusal_in_after() {
    let log = Log::default();
    let recorder = Recorder {
        name: "a",
        log: log.clone(),
        refuse: false,
    };
    let f = start(|b| b.max_concurrency(1).interceptor(recorder)).await;
    let channel = f.server.in_process();
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
    assert_eq!(
        entries(&log),
        strings(&[
            "a.before",
            "a.before",
            &format!("a.after:{}", Code::ELIMIT.value())
        ])
    );
    f.gate.add_permits(1);
    held.await.expect("task").expect("held call");
    assert_eq!(entries(&log).last().map(String::as_str), Some("a.after:0"));
}

#[tokio::test]
async fn a_cancelled_in_process_call_still_runs_the_server_interceptors_after() {
    // "`after` runs, in reverse order, for every call whose `before`
    // passed": a caller that gives up (drops the call) is one such call;
    // an interceptor pairing before/after (an in-flight gauge, a quota)
    // must see it end.
    let log = Log::default();
    let recorder = Recorder {
        name: "a",
        log: log.clone(),
        refuse: false,
    };
    let f = start(|b| b.interceptor(recorder)).await;
    let channel = f.server.in_process();
    let call = tokio::spawn({
        let client = EchoServiceClient::new(&channel);
        async move { client.echo(&request("gate")).await }
    });
    f.gated.notified().await;
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    support::eventually("the cancelled call to give its place back", || {
        f.server.stats().in_flight == 0
    })
    .await;
    let log = entries(&log);
    assert_eq!(log.first().map(String::as_str), Some("a.before"));
    assert_eq!(
        log.len(),
        2,
        "before ran, so after must run too (the call was cancelled): {log:?}"
    );
}

/// Client side: logs `NAME.before` and `NAME.after:ok:LEN` /
/// `NAME.after:err:CODE`, adds metadata `NAME: 1`, records the metadata each
/// `after` saw; refuses with ERPCAUTH when told to.
struct ClientRecorder {
    name: &'static str,
    log: Log,
    seen: Arc<Mutex<Vec<Metadata>>>,
    refuse: bool,
}

impl ClientRecorder {
    fn new(name: &'static str, log: &Log, refuse: bool) -> ClientRecorder {
        ClientRecorder {
            name,
            log: log.clone(),
            seen: Arc::default(),
            refuse,
        }
    }
}

impl ClientInterceptor for ClientRecorder {
    fn before(
        &self,
        method: &'static MethodDescriptor,
        options: &mut CallOptions,
    ) -> Result<(), Status> {
        assert!(method.is(&ECHO));
        push(&self.log, format!("{}.before", self.name));
        if self.refuse {
            return Err(Status::new(
                Code::ERPCAUTH,
                format!("{} refuses", self.name),
            ));
        }
        options.metadata.insert(self.name, "1");
        Ok(())
    }

    fn after(&self, outcome: &CallOutcome<'_>) {
        assert!(outcome.method.is(&ECHO));
        let entry = match outcome.result {
            Ok(reply) => format!("{}.after:ok:{}", self.name, reply.payload.len()),
            Err(e) => format!("{}.after:err:{}", self.name, e.code().value()),
        };
        push(&self.log, entry);
        self.seen
            .lock()
            .expect("not poisoned")
            .push(outcome.options.metadata.clone());
    }
}

#[tokio::test]
async fn client_interceptors_run_in_order_and_after_sees_the_outcome() {
    let f = start(|b| b).await;
    let log = Log::default();
    let a = ClientRecorder::new("a", &log, false);
    let seen_by_a = a.seen.clone();
    let channel = Channel::builder(&f.addr())
        .interceptor(a)
        .interceptor(ClientRecorder::new("b", &log, false))
        .build()
        .expect("valid address");
    let client = EchoServiceClient::new(&channel);

    let reply = client.echo(&request("hello")).await.expect("echo");
    assert_eq!(reply.message, "hello");
    // EchoResponse { message: "hello" } encodes to 7 bytes.
    assert_eq!(
        entries(&log),
        strings(&["a.before", "b.before", "b.after:ok:7", "a.after:ok:7"])
    );
    let expected = Metadata::new().with("a", "1").with("b", "1");
    assert_eq!(
        seen_by_a.lock().expect("not poisoned").last(),
        Some(&expected),
        "after sees the options with every interceptor's changes"
    );
    assert!(
        client.options().metadata.is_empty(),
        "the caller's options are not changed"
    );

    log.lock().expect("not poisoned").clear();
    let err = client.echo(&request("fail")).await.expect_err("fails");
    assert_eq!(err.code(), Code::new(4242));
    assert_eq!(
        entries(&log),
        strings(&[
            "a.before",
            "b.before",
            "b.after:err:4242",
            "a.after:err:4242"
        ])
    );
    assert_eq!(f.calls.load(SeqCst), 2);
}

#[tokio::test]
async fn a_refusing_client_interceptor_sends_nothing() {
    let f = start(|b| b).await;
    let log = Log::default();
    let channel = Channel::builder(&f.addr())
        .interceptor(ClientRecorder::new("a", &log, false))
        .interceptor(ClientRecorder::new("b", &log, true))
        .interceptor(ClientRecorder::new("c", &log, false))
        .build()
        .expect("valid address");
    let err = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect_err("b refuses");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert_eq!(err.message(), "b refuses");
    assert_eq!(f.calls.load(SeqCst), 0, "the handler never ran");
    let stats = f.server.stats();
    assert_eq!(
        (stats.accepted, stats.calls),
        (0, 0),
        "nothing reached the server: {stats:?}"
    );
    let log = entries(&log);
    assert_eq!(log[..2], strings(&["a.before", "b.before"]));
    assert!(!log.contains(&"c.before".to_owned()), "{log:?}");
    let refused = format!("a.after:err:{}", Code::ERPCAUTH.value());
    assert_eq!(
        log.last(),
        Some(&refused),
        "a's after sees b's refusal, last"
    );
}

#[tokio::test]
async fn client_after_runs_only_for_interceptors_whose_before_ran() {
    // ClientInterceptor::after: "After the call ended (success, failure, or
    // refusal by a *later* interceptor's `before`)". c comes after the
    // refusing b: its before never ran, so neither may its after.
    let f = start(|b| b).await;
    let log = Log::default();
    let channel = Channel::builder(&f.addr())
        .interceptor(ClientRecorder::new("a", &log, false))
        .interceptor(ClientRecorder::new("b", &log, true))
        .interceptor(ClientRecorder::new("c", &log, false))
        .build()
        .expect("valid address");
    EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect_err("b refuses");
    let log = entries(&log);
    assert!(
        !log.iter().any(|e| e.starts_with("c.")),
        "c's before never ran, yet: {log:?}"
    );
}

/// A call's protocol and peer, as a server interceptor saw them.
type Seen = (&'static str, Option<std::net::SocketAddr>);

/// Records the protocol and peer of every call it sees.
#[derive(Default, Clone)]
struct PeerRecorder(Arc<Mutex<Vec<Seen>>>);

impl Interceptor for PeerRecorder {
    fn before(&self, ctx: &mut Context) -> Result<(), Status> {
        let seen = (ctx.protocol(), ctx.peer());
        self.0.lock().expect("not poisoned").push(seen);
        Ok(())
    }
}

impl PeerRecorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// A server interceptor sees the address the call came from: exactly the
/// caller's end of the TCP connection, on baidu_std and on gRPC; in
/// process there is none.
#[tokio::test]
async fn a_server_interceptor_sees_the_peer_over_tcp() {
    use keel::bytes::{Bytes, BytesMut};
    use keel_wire::baidu_std::{Limits, RpcMeta, RpcRequestMeta, decode_frame, encode_frame};
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let peers = PeerRecorder::default();
    let f = start(|b| b.interceptor(peers.clone())).await;
    let payload = request("peer").encode_to_vec();

    // baidu_std, from a socket whose address the test knows.
    let mut tcp = tokio::net::TcpStream::connect(f.server.local_addr())
        .await
        .expect("connect");
    let caller = tcp.local_addr().expect("local address");
    let meta = RpcMeta {
        request: Some(RpcRequestMeta {
            service_name: "example.EchoService".into(),
            method_name: "Echo".into(),
            ..RpcRequestMeta::default()
        }),
        correlation_id: 1,
        ..RpcMeta::default()
    };
    let mut frame = BytesMut::new();
    encode_frame(
        &mut frame,
        &meta,
        payload.len(),
        |b| b.extend_from_slice(&payload),
        &[],
    )
    .expect("encodes");
    tcp.write_all(&frame).await.expect("send");
    let mut buf = BytesMut::new();
    let answer = loop {
        if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("a valid answer") {
            break frame;
        }
        assert!(tcp.read_buf(&mut buf).await.expect("read") > 0, "closed");
    };
    assert_eq!(answer.meta.response.map_or(-1, |r| r.error_code), 0);
    assert_eq!(peers.take(), [("baidu_std", Some(caller))]);

    // gRPC, the same way.
    let tcp = tokio::net::TcpStream::connect(f.server.local_addr())
        .await
        .expect("connect");
    let caller = tcp.local_addr().expect("local address");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut sender = sender.ready().await.expect("ready");
    let call = http::Request::post("http://localhost/example.EchoService/Echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = sender.send_request(call, false).expect("sent");
    let mut message = vec![0];
    message.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    message.extend_from_slice(&payload);
    send.send_data(Bytes::from(message), true).expect("body");
    let mut body = response.await.expect("an answer").into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("data");
    }
    let trailers = body.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(peers.take(), [("grpc", Some(caller))]);

    // In process: no socket, no peer.
    EchoServiceClient::new(&f.server.in_process())
        .echo(&request("peer"))
        .await
        .expect("echo");
    assert_eq!(peers.take(), [("in-process", None)]);
}

/// The same order over gRPC as in process and over baidu_std: the
/// client's `before`s, the server's `before`s, the handler, the server's
/// `after`s in reverse, the client's `after`s in reverse.
#[tokio::test]
async fn server_and_client_interceptors_run_over_grpc() {
    use prost::Message;

    let (builder, log) = recorded(None);
    let server = builder.bind("127.0.0.1:0").await.expect("bind loopback");
    let channel = Channel::builder(&format!("grpc://{}", server.local_addr()))
        .interceptor(ClientRecorder::new("x", &log, false))
        .interceptor(ClientRecorder::new("y", &log, false))
        .build()
        .expect("valid address");
    let reply = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect("echo");
    assert_eq!(reply.message, "x:nobody");
    let len = reply.encoded_len();
    assert_eq!(
        entries(&log),
        strings(&[
            "x.before",
            "y.before",
            "a.before",
            "b.before",
            "c.before",
            "handler",
            "c.after:0",
            "b.after:0",
            "a.after:0",
            &format!("y.after:ok:{len}"),
            &format!("x.after:ok:{len}"),
        ])
    );

    // A refusal by a server interceptor reaches the client's `after`s.
    let (builder, log) = recorded(Some("b"));
    let server = builder.bind("127.0.0.1:0").await.expect("bind loopback");
    let channel = Channel::builder(&format!("grpc://{}", server.local_addr()))
        .interceptor(ClientRecorder::new("x", &log, false))
        .build()
        .expect("valid address");
    let err = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect_err("b refuses");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert_eq!(err.message(), "b refuses");
    let refused = Code::ERPCAUTH.value();
    assert_eq!(
        entries(&log),
        strings(&[
            "x.before",
            "a.before",
            "b.before",
            &format!("a.after:{refused}"),
            &format!("x.after:err:{refused}"),
        ])
    );
}

/// Adds `authorization: Bearer <token>` to every call.
struct Token(&'static str);

impl ClientInterceptor for Token {
    fn before(
        &self,
        _: &'static MethodDescriptor,
        options: &mut CallOptions,
    ) -> Result<(), Status> {
        options
            .metadata
            .insert("authorization", format!("Bearer {}", self.0));
        Ok(())
    }
}

#[tokio::test]
async fn a_client_interceptors_token_passes_a_server_interceptor_over_grpc() {
    let guarded = Guarded::default();
    let calls = guarded.calls.clone();
    let server = Server::builder()
        .add_service(EchoServiceServer::new(guarded))
        .interceptor(RequireToken)
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("grpc://{}", server.local_addr());
    let anonymous = Channel::new(&url).expect("valid address");
    let err = EchoServiceClient::new(&anonymous)
        .echo(&request("x"))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert_eq!(
        calls.load(SeqCst),
        0,
        "refused calls never reach the handler"
    );

    let signed = Channel::builder(&url)
        .interceptor(Token("let-me-in"))
        .build()
        .expect("valid address");
    let reply = EchoServiceClient::new(&signed)
        .echo(&request("x"))
        .await
        .expect("the token lets the call in");
    assert_eq!(
        reply.message, "x:alice",
        "the handler saw the attached user"
    );
    assert_eq!(calls.load(SeqCst), 1);
}

/// Echoes without allocating anything itself (as in tests/call_allocs.rs).
struct NoAllocEcho;

impl EchoService for NoAllocEcho {
    async fn echo(
        &self,
        _: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

/// An interceptor that looks at every call and allocates nothing.
struct Passive;

impl Interceptor for Passive {
    fn before(&self, ctx: &mut Context) -> Result<(), Status> {
        black_box(ctx.metadata().is_empty());
        Ok(())
    }
}

/// Allocations per in-process call that tests/call_allocs.rs asserts
/// (framework 3 + messages 1) for a plain channel.
const CALL_ALLOCS: u64 = 4;

#[test]
fn in_process_calls_without_interceptors_allocate_what_call_allocs_asserts() {
    keel::rpcz::tracer().sampler().set_target(0);
    assert!(keel_alloc::is_installed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let table = MethodTable::new()
        .with(EchoServiceServer::new(NoAllocEcho))
        .expect("one service");
    let channels = [
        ("Channel::in_process", Channel::in_process(table)),
        (
            "ServerBuilder::in_process",
            Server::builder()
                .add_service(EchoServiceServer::new(NoAllocEcho))
                .in_process()
                .expect("valid server"),
        ),
        (
            "one passive interceptor",
            Server::builder()
                .add_service(EchoServiceServer::new(NoAllocEcho))
                .interceptor(Passive)
                .in_process()
                .expect("valid server"),
        ),
    ];
    let request = request("hello");
    println!("{:>26} | allocs/call | live delta", "channel");
    for (name, channel) in &channels {
        let client = EchoServiceClient::new(channel);
        let d = keel_alloc::churn_thread(1_000, 10_000, |_| {
            let reply = rt.block_on(client.echo(&request)).expect("echoed");
            black_box(reply);
        });
        println!(
            "{name:>26} | {:>11.2} | {}",
            d.allocs_per_iter(),
            d.live_bytes
        );
        // A few more over the whole run, not per call: the message pools'
        // idle trims give back blocks a later call then takes again.
        assert!(d.allocs <= CALL_ALLOCS * d.iters + 8, "{name}: {d:?}");
        assert!(d.live_bytes <= 64, "{name}: calls leaked: {d:?}");
    }
}

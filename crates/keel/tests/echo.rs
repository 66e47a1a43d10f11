//! brpc's echo service (proto2), implemented with the generated trait and
//! called with the generated client through the in-process channel: the same
//! MethodTable -> Service path the TCP server will use.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel::bytes::{Bytes, BytesMut};
use keel::server::{MethodTable, Service, ServiceFuture};
use keel::{
    CallOptions, Channel, Code, Context, MethodDescriptor, MethodKind, ServiceDescriptor, Status,
};
use tokio::sync::Notify;
use tokio::time::Instant;

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// What the handler saw of the last call.
#[derive(Debug, Default)]
struct Seen {
    log_id: AtomicU64,
    deadline: Mutex<Option<Instant>>,
}

/// Sets a flag when dropped: shows a handler future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[derive(Default)]
struct Echo {
    seen: Arc<Seen>,
    /// Never notified: "stall" waits on it forever.
    never: Notify,
    stalled_dropped: Arc<AtomicBool>,
}

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.seen.log_id.store(ctx.log_id(), SeqCst);
        *self.seen.deadline.lock().expect("not poisoned") = ctx.deadline();
        match req.message.as_str() {
            "fail" => Err(Status::new(Code::new(4242), "refusing to echo `fail`")),
            "stall" => {
                let _flag = DropFlag(Arc::clone(&self.stalled_dropped));
                self.never.notified().await;
                Err(Status::internal("the never-notified Notify fired"))
            }
            message => {
                if !ctx.attachment().is_empty() {
                    let mut reversed = ctx.attachment().to_vec();
                    reversed.reverse();
                    ctx.set_response_attachment(reversed.into());
                }
                response.message = message.to_owned();
                Ok(())
            }
        }
    }
}

struct Fixture {
    channel: Channel,
    seen: Arc<Seen>,
    stalled_dropped: Arc<AtomicBool>,
}

fn fixture() -> Fixture {
    let echo = Echo::default();
    let seen = Arc::clone(&echo.seen);
    let stalled_dropped = Arc::clone(&echo.stalled_dropped);
    let table = MethodTable::new()
        .with(EchoServiceServer::new(echo))
        .expect("one service");
    Fixture {
        channel: Channel::in_process(table),
        seen,
        stalled_dropped,
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

#[tokio::test]
async fn message_round_trip() {
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel);
    let reply = client.echo(&request("hello brpc")).await.expect("echoed");
    assert_eq!(reply.message, "hello brpc");

    let stats = f.channel.method_stats();
    assert_eq!(stats.len(), 1);
    assert!(stats[0].method.is(&example::echo_service::ECHO));
    assert_eq!((stats[0].calls, stats[0].errors), (1, 0));
}

#[tokio::test]
async fn attachments_travel_both_ways_with_log_id() {
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel).with_options(CallOptions {
        attachment: Bytes::from_static(b"abc"),
        log_id: 77,
        ..CallOptions::default()
    });
    let x = request("x");
    let response = client.echo(&x).full().await.expect("echoed");
    assert_eq!(response.message.message, "x");
    assert_eq!(response.attachment, &b"cba"[..], "server reversed it");
    assert_eq!(f.seen.log_id.load(SeqCst), 77);
    assert_eq!(*f.seen.deadline.lock().expect("not poisoned"), None);
}

#[tokio::test]
async fn handler_error_code_and_text_reach_the_client() {
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel);
    let err = client
        .echo(&request("fail"))
        .await
        .expect_err("handler fails");
    assert_eq!(err.code(), Code::new(4242));
    assert_eq!(err.message(), "refusing to echo `fail`");
    assert_eq!(err.to_string(), "E4242: refusing to echo `fail`");
    assert_eq!(f.channel.method_stats()[0].errors, 1);
}

static NOPE: MethodDescriptor = MethodDescriptor {
    service: "example.EchoService",
    method: "Nope",
    path: "/example.EchoService/Nope",
    index: 1,
    request_type: "example.EchoRequest",
    response_type: "example.EchoResponse",
    kind: MethodKind::Unary,
    files: &[],
};

static MISSING_SERVICE: MethodDescriptor = MethodDescriptor {
    service: "example.Missing",
    method: "Echo",
    path: "/example.Missing/Echo",
    index: 0,
    request_type: "example.EchoRequest",
    response_type: "example.EchoResponse",
    kind: MethodKind::Unary,
    files: &[],
};

#[tokio::test]
async fn unknown_method_and_service() {
    let f = fixture();
    let client = keel::Client::new(&f.channel);
    let err = client
        .unary::<_, EchoResponse>(&NOPE, &request("x"), None)
        .await
        .expect_err("no such method");
    assert_eq!(err.code(), Code::ENOMETHOD);
    assert!(err.message().contains("Nope"), "{err}");

    let err = client
        .unary::<_, EchoResponse>(&MISSING_SERVICE, &request("x"), None)
        .await
        .expect_err("no such service");
    assert_eq!(err.code(), Code::ENOSERVICE);
    assert!(err.message().contains("example.Missing"), "{err}");
}

#[tokio::test]
async fn garbage_payload_is_erequest() {
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel);
    // 0xff.. is a varint that never ends: not a protobuf message.
    let err = client
        .client()
        .unary_raw(
            &example::echo_service::ECHO,
            Bytes::from_static(&[0xff, 0xff, 0xff]),
        )
        .await
        .expect_err("undecodable");
    assert_eq!(err.code(), Code::EREQUEST);
    assert!(err.message().contains("example.EchoRequest"), "{err}");

    // A well-formed raw payload goes through and comes back undecoded.
    let payload = keel::codec::encode_to_bytes(&request("raw"));
    let reply = client
        .client()
        .unary_raw(&example::echo_service::ECHO, payload.clone())
        .await
        .expect("echoed");
    assert_eq!(reply.message, payload, "echo returns the same encoding");
}

#[tokio::test(start_paused = true)]
async fn timeout_is_erpctimedout_and_cancels_the_handler() {
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel).with_options(CallOptions {
        timeout: Some(Duration::from_millis(50)),
        ..CallOptions::default()
    });
    let start = Instant::now();
    let err = client
        .echo(&request("stall"))
        .await
        .expect_err("handler never answers");
    assert_eq!(err.code(), Code::ERPCTIMEDOUT);
    assert!(err.message().contains("timeout=50ms"), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(50), "paused clock");
    assert_eq!(
        *f.seen.deadline.lock().expect("not poisoned"),
        Some(start + Duration::from_millis(50)),
        "the handler saw the caller's deadline"
    );
    assert!(
        f.stalled_dropped.load(SeqCst),
        "the stalled handler future was dropped"
    );
    let stats = f.channel.method_stats();
    assert_eq!((stats[0].calls, stats[0].errors), (1, 1));
}

/// A hand-written service answering with bytes that are not an EchoResponse.
struct Garbled;

static GARBLED: ServiceDescriptor = ServiceDescriptor {
    name: "example.EchoService",
    methods: &[&example::echo_service::ECHO],
    files: &[],
};

impl Service for Garbled {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &GARBLED
    }

    fn call<'a>(
        &'a self,
        _method: usize,
        _ctx: &'a Context,
        _request: Bytes,
        response: &'a mut BytesMut,
    ) -> ServiceFuture<'a> {
        response.extend_from_slice(&[0xff, 0xff]);
        ServiceFuture::new(std::future::ready(Ok(())))
    }
}

#[tokio::test]
async fn undecodable_response_is_eresponse() {
    let channel = Channel::in_process(MethodTable::new().with(Garbled).expect("adds"));
    let err = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect_err("garbled");
    assert_eq!(err.code(), Code::ERESPONSE);
    assert!(err.message().contains("example.EchoResponse"), "{err}");
}

#[test]
fn handles_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Channel>();
    assert_send_sync::<EchoServiceClient>();
    assert_send_sync::<EchoServiceServer<Echo>>();
    let f = fixture();
    let client = EchoServiceClient::new(&f.channel);
    let req = request("x");
    // Spawnable on a multi-threaded runtime.
    let call = client.echo(&req);
    assert_send(&call);
}

#[test]
fn duplicate_service_is_rejected() {
    let mut table = MethodTable::new();
    table
        .add(EchoServiceServer::new(Echo::default()))
        .expect("first");
    let err = table
        .add(EchoServiceServer::new(Echo::default()))
        .expect_err("second is a duplicate");
    assert_eq!(
        err.to_string(),
        "service example.EchoService is already in the method table"
    );
}

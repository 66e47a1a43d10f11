//! Call metadata and credentials over baidu_std (TCP): request metadata
//! reaches the handler and interceptors, response metadata comes back, a
//! client interceptor's token passes a server interceptor, and a connection
//! authenticator checks the credential on the first request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel::server::Authenticator;
use keel::{
    CallOptions, Channel, ClientInterceptor, Code, Context, MethodDescriptor, Server, Status,
};

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echoes the message; answers with every request metadata entry prefixed
/// `seen-`, and the user an interceptor attached, if any.
#[derive(Default)]
struct Echo {
    calls: Arc<AtomicU64>,
}

struct User(String);

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        for (k, v) in ctx.metadata().iter() {
            ctx.set_response_metadata(format!("seen-{k}"), v);
        }
        if let Some(User(name)) = ctx.extensions().get::<User>() {
            ctx.set_response_metadata("user", name.as_str());
        }
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

#[tokio::test]
async fn metadata_travels_both_ways_over_tcp() {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&server.local_addr().to_string()).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let hi = request("hi");
    let reply = client
        .echo(&hi)
        .metadata("request-id", "r-1")
        .metadata("tenant", "acme")
        .full()
        .await
        .expect("echoed");
    assert_eq!(reply.message.message, "hi");
    assert_eq!(reply.metadata.get("seen-request-id"), Some("r-1"));
    assert_eq!(reply.metadata.get("seen-tenant"), Some("acme"));
    assert_eq!(reply.metadata.len(), 2);
    // Options set on a client carry their metadata to every call.
    let tagged = client.with_options(CallOptions {
        metadata: keel::Metadata::new().with("tenant", "globex"),
        ..CallOptions::default()
    });
    let reply = tagged.echo(&hi).full().await.expect("echoed");
    assert_eq!(reply.metadata.get("seen-tenant"), Some("globex"));
    // None sent, none back.
    let reply = client.echo(&hi).full().await.expect("echoed");
    assert!(reply.metadata.is_empty(), "{:?}", reply.metadata);
}

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

fn require_token(ctx: &mut Context) -> Result<(), Status> {
    let user = match ctx.metadata().get("authorization") {
        Some("Bearer ada-token") => "ada",
        _ => return Err(Status::new(Code::ERPCAUTH, "a valid token is required")),
    };
    ctx.extensions_mut().insert(User(user.to_owned()));
    Ok(())
}

#[tokio::test]
async fn a_client_interceptors_token_passes_a_server_interceptor_over_tcp() {
    let echo = Echo::default();
    let calls = echo.calls.clone();
    let server = Server::builder()
        .add_service(EchoServiceServer::new(echo))
        .interceptor(require_token)
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().to_string();

    let anonymous = Channel::new(&addr).expect("addr");
    let err = EchoServiceClient::new(&anonymous)
        .echo(&request("x"))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::ERPCAUTH);
    assert_eq!(calls.load(Ordering::Relaxed), 0, "the handler never ran");

    let signed = Channel::builder(&addr)
        .interceptor(Token("ada-token"))
        .build()
        .expect("addr");
    let reply = EchoServiceClient::new(&signed)
        .echo(&request("x"))
        .full()
        .await
        .expect("token accepted");
    assert_eq!(
        reply.metadata.get("user"),
        Some("ada"),
        "the handler saw the interceptor's value"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    let wrong = Channel::builder(&addr)
        .interceptor(Token("eve-token"))
        .build()
        .expect("addr");
    let err = EchoServiceClient::new(&wrong)
        .echo(&request("x"))
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::ERPCAUTH);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

/// Accepts `open-sesame` and counts the checks.
#[derive(Default, Clone)]
struct Sesame(Arc<AtomicU64>);

impl Authenticator for Sesame {
    fn verify(&self, credential: &[u8], peer: Option<std::net::SocketAddr>) -> Result<(), Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        assert!(peer.is_some_and(|p| p.ip().is_loopback()));
        if credential == b"open-sesame" {
            Ok(())
        } else {
            Err(Status::new(Code::ERPCAUTH, "unknown credential"))
        }
    }
}

#[tokio::test]
async fn the_authenticator_checks_each_connection_once() {
    let checks = Sesame::default();
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .authenticator(checks.clone())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().to_string();

    let good = Channel::builder(&addr)
        .credential(&b"open-sesame"[..])
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&good);
    for i in 0..5 {
        let reply = client
            .echo(&request(&format!("m{i}")))
            .await
            .expect("authenticated");
        assert_eq!(reply.message, format!("m{i}"));
    }
    assert_eq!(checks.0.load(Ordering::Relaxed), 1, "once per connection");

    let bad = Channel::builder(&addr)
        .credential(&b"guess"[..])
        .max_retry(0)
        .build()
        .expect("addr");
    let err = EchoServiceClient::new(&bad)
        .echo(&request("x"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    let none = Channel::builder(&addr).max_retry(0).build().expect("addr");
    let err = EchoServiceClient::new(&none)
        .echo(&request("x"))
        .await
        .expect_err("no credential");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    // The good channel's connection is still fine.
    client.echo(&request("again")).await.expect("still served");
}

/// What a brpc 1.17 client sends for `cntl.request_user_fields()` and
/// `cntl.set_request_id()`: a frame built with brpc's own meta layout
/// (`RpcMeta.user_fields`, field 9; `RpcRequestMeta.request_id`, field 7).
/// The handler reads both as metadata, and the answer's user_fields carry
/// what it sent back.
#[tokio::test]
async fn metadata_from_a_brpc_clients_frame() {
    use keel::bytes::BytesMut;
    use keel_wire::baidu_std::{Limits, RpcMeta, RpcRequestMeta, decode_frame, encode_frame};
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let meta = RpcMeta {
        request: Some(RpcRequestMeta {
            service_name: "example.EchoService".into(),
            method_name: "Echo".into(),
            request_id: "req-7".into(),
            ..RpcRequestMeta::default()
        }),
        correlation_id: 11,
        user_fields: [("tenant".to_owned(), "acme".to_owned())].into(),
        ..RpcMeta::default()
    };
    let payload = request("brpc").encode_to_vec();
    let mut frame = BytesMut::new();
    encode_frame(
        &mut frame,
        &meta,
        payload.len(),
        |b| b.extend_from_slice(&payload),
        &[],
    )
    .expect("encodes");
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    stream.write_all(&frame).await.expect("send");
    let mut buf = BytesMut::new();
    let answer = loop {
        if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("a valid answer") {
            break frame;
        }
        assert!(stream.read_buf(&mut buf).await.expect("read") > 0, "closed");
    };
    assert_eq!(answer.meta.correlation_id, 11);
    let fields = &answer.meta.user_fields;
    assert_eq!(fields.get("seen-tenant").map(String::as_str), Some("acme"));
    assert_eq!(
        fields.get("seen-x-request-id").map(String::as_str),
        Some("req-7"),
        "{fields:?}"
    );
    let reply = EchoResponse::decode(answer.payload).expect("a response");
    assert_eq!(reply.message, "brpc");
}

/// Keel's client sends an `x-request-id` entry in brpc's own field too.
#[tokio::test]
async fn x_request_id_travels_as_brpcs_request_id() {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&server.local_addr().to_string()).expect("addr");
    let reply = EchoServiceClient::new(&channel)
        .echo(&request("hi"))
        .metadata("x-request-id", "r-99")
        .full()
        .await
        .expect("echoed");
    assert_eq!(reply.metadata.get("seen-x-request-id"), Some("r-99"));
}

#[tokio::test]
async fn metadata_travels_both_ways_as_http_headers() {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&format!("http://{}", server.local_addr())).expect("addr");
    let reply = EchoServiceClient::new(&channel)
        .echo(&request("hi"))
        .metadata("tenant", "acme")
        .metadata("request-id", "r-9")
        .full()
        .await
        .expect("echoed over HTTP");
    assert_eq!(reply.message.message, "hi");
    assert_eq!(reply.metadata.get("seen-tenant"), Some("acme"));
    assert_eq!(reply.metadata.get("seen-request-id"), Some("r-9"));
}

#[tokio::test]
async fn the_authenticator_checks_each_http_connection_once() {
    let checks = Sesame::default();
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo::default()))
        .authenticator(checks.clone())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", server.local_addr());
    let good = Channel::builder(&addr)
        .credential(&b"open-sesame"[..])
        .build()
        .expect("addr");
    let client = EchoServiceClient::new(&good);
    for i in 0..5 {
        let reply = client
            .echo(&request(&format!("m{i}")))
            .await
            .expect("authenticated");
        assert_eq!(reply.message, format!("m{i}"));
    }
    assert_eq!(
        checks.0.load(Ordering::Relaxed),
        1,
        "once per keep-alive connection"
    );
    let bad = Channel::builder(&addr)
        .credential(&b"guess"[..])
        .max_retry(0)
        .build()
        .expect("addr");
    let err = EchoServiceClient::new(&bad)
        .echo(&request("x"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    client.echo(&request("again")).await.expect("still served");
}

//! A server's authenticator over gRPC: the credential is the first
//! stream's `authorization` header, checked once per HTTP/2 connection; a
//! connection that fails is answered `UNAUTHENTICATED` (`ERPCAUTH` to a
//! Keel client) and closed, and none of its streams reaches a handler. A
//! Keel channel's credential passes the same server on both protocols.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel::server::Authenticator;
use keel::{Channel, Code, Context, Server, Status};

mod example {
    keel::include_proto!("example");
}
mod streams {
    keel::include_proto!("streams");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};
use streams::{CountRequest, Counter, CounterClient, CounterServer, Number};

/// Echoes and counts the calls that reached it.
#[derive(Default, Clone)]
struct Echo(Arc<AtomicU64>);

impl EchoService for Echo {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

/// Counts `count` numbers up from `from`; the rest is unused here.
struct Count;

impl Counter for Count {
    async fn count(
        &self,
        _ctx: &Context,
        request: &CountRequest,
        responses: &mut keel::streaming::ResponseSink<Number>,
    ) -> Result<(), Status> {
        for i in 0..request.count {
            let n = Number {
                value: request.from + i,
                pad: Vec::new(),
            };
            responses.send(&n).await?;
        }
        Ok(())
    }

    async fn sum(
        &self,
        _ctx: &Context,
        _requests: &mut keel::streaming::Streaming<Number>,
        _response: &mut Number,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not used"))
    }

    async fn double(
        &self,
        _ctx: &Context,
        _requests: &mut keel::streaming::Streaming<Number>,
        _responses: &mut keel::streaming::ResponseSink<Number>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not used"))
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

/// Accepts `open-sesame`, records every credential it was shown.
#[derive(Default, Clone)]
struct Sesame(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Sesame {
    fn checks(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl Authenticator for Sesame {
    fn verify(&self, credential: &[u8], peer: Option<std::net::SocketAddr>) -> Result<(), Status> {
        self.0
            .lock()
            .expect("not poisoned")
            .push(credential.to_vec());
        assert!(peer.is_some_and(|p| p.ip().is_loopback()), "{peer:?}");
        if credential == b"open-sesame" {
            Ok(())
        } else {
            Err(Status::new(Code::ERPCAUTH, "unknown credential"))
        }
    }
}

struct Fixture {
    server: Server,
    sesame: Sesame,
    calls: Arc<AtomicU64>,
}

impl Fixture {
    async fn start() -> Fixture {
        let sesame = Sesame::default();
        let echo = Echo::default();
        let calls = echo.0.clone();
        let server = Server::builder()
            .add_service(EchoServiceServer::new(echo))
            .add_service(CounterServer::new(Count))
            .authenticator(sesame.clone())
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        Fixture {
            server,
            sesame,
            calls,
        }
    }

    fn grpc(&self, credential: Option<&'static [u8]>) -> Channel {
        let mut builder =
            Channel::builder(&format!("grpc://{}", self.server.local_addr())).max_retry(0);
        if let Some(credential) = credential {
            builder = builder.credential(credential);
        }
        builder.build().expect("addr")
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

#[tokio::test]
async fn grpc_calls_without_a_credential_or_with_a_wrong_one_are_refused() {
    let fixture = Fixture::start().await;

    let anonymous = fixture.grpc(None);
    let err = EchoServiceClient::new(&anonymous)
        .echo(&request("x"))
        .await
        .expect_err("no credential");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert!(err.message().contains("unknown credential"), "{err}");
    assert_eq!(fixture.sesame.seen(), vec![Vec::<u8>::new()]);

    let wrong = fixture.grpc(Some(b"guess"));
    let err = EchoServiceClient::new(&wrong)
        .echo(&request("x"))
        .await
        .expect_err("wrong credential");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    // Streams are refused the same way.
    let counting = CounterClient::new(&wrong);
    let opened = counting
        .count(&CountRequest {
            from: 0,
            count: 3,
            pad: 0,
        })
        .await;
    let err = match opened {
        Err(err) => err,
        Ok(mut numbers) => numbers.message().await.expect_err("refused"),
    };
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 0, "no handler ran");
}

#[tokio::test]
async fn the_right_credential_passes_once_per_grpc_connection() {
    let fixture = Fixture::start().await;
    let good = fixture.grpc(Some(b"open-sesame"));
    let echo = EchoServiceClient::new(&good);
    for i in 0..5 {
        let reply = echo
            .echo(&request(&format!("m{i}")))
            .await
            .expect("authenticated");
        assert_eq!(reply.message, format!("m{i}"));
    }
    // A stream on the same connection: no second check.
    let mut numbers = CounterClient::new(&good)
        .count(&CountRequest {
            from: 7,
            count: 3,
            pad: 0,
        })
        .await
        .expect("opened");
    let mut got = Vec::new();
    while let Some(n) = numbers.message().await.expect("a number") {
        got.push(n.value);
    }
    assert_eq!(got, [7, 8, 9]);
    assert_eq!(fixture.sesame.checks(), 1, "once per connection");
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 5);

    // Another channel is another connection: checked again.
    let other = fixture.grpc(Some(b"open-sesame"));
    EchoServiceClient::new(&other)
        .echo(&request("other"))
        .await
        .expect("authenticated");
    assert_eq!(fixture.sesame.checks(), 2);
    // A refused connection leaves the good one serving.
    let wrong = fixture.grpc(Some(b"guess"));
    EchoServiceClient::new(&wrong)
        .echo(&request("x"))
        .await
        .expect_err("refused");
    echo.echo(&request("again")).await.expect("still served");
    assert_eq!(fixture.sesame.checks(), 3);
}

#[tokio::test]
async fn one_credential_passes_both_protocols() {
    let fixture = Fixture::start().await;
    let addr = fixture.server.local_addr();
    let baidu_std = Channel::builder(&addr.to_string())
        .credential(&b"open-sesame"[..])
        .build()
        .expect("addr");
    let grpc = fixture.grpc(Some(b"open-sesame"));
    for channel in [&baidu_std, &grpc] {
        let reply = EchoServiceClient::new(channel)
            .echo(&request("both"))
            .await
            .expect("authenticated");
        assert_eq!(reply.message, "both");
    }
    assert_eq!(
        fixture.sesame.seen(),
        vec![b"open-sesame".to_vec(), b"open-sesame".to_vec()]
    );
}

#[tokio::test]
async fn a_calls_own_authorization_takes_the_credentials_place() {
    let fixture = Fixture::start().await;
    let channel = fixture.grpc(Some(b"open-sesame"));
    let err = EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .metadata("authorization", "Bearer someone-else")
        .await
        .expect_err("the call's token is checked, and fails");
    assert_eq!(err.code(), Code::ERPCAUTH, "{err}");
    assert_eq!(fixture.sesame.seen(), vec![b"Bearer someone-else".to_vec()]);
}

/// What any gRPC client sees: `UNAUTHENTICATED` on the first stream, the
/// same on a stream opened beside it (not checked again, never run), and
/// then the server closes the connection.
#[tokio::test]
async fn a_failed_grpc_connection_is_answered_unauthenticated_and_closed() {
    let fixture = Fixture::start().await;
    let tcp = tokio::net::TcpStream::connect(fixture.server.local_addr())
        .await
        .expect("connect");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("handshake");
    let connection = tokio::spawn(connection);
    let mut sender = sender.ready().await.expect("ready");
    let message = {
        use prost::Message;
        let encoded = request("x").encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        keel::bytes::Bytes::from(framed)
    };
    let mut responses = Vec::new();
    for _ in 0..2 {
        let request = http::Request::post("http://localhost/example.EchoService/Echo")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", "guess")
            .body(())
            .expect("request");
        let (response, mut send) = sender.send_request(request, false).expect("sent");
        let _ = send.send_data(message.clone(), true);
        responses.push(response);
    }
    let first = responses.remove(0).await.expect("an answer");
    assert_eq!(
        first.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"16"[..]),
        "{:?}",
        first.headers()
    );
    assert_eq!(
        first.headers().get("keel-code").map(|v| v.as_bytes()),
        Some(&b"1004"[..])
    );
    // The stream opened beside it: refused the same way, or not let in.
    match responses.remove(0).await {
        Ok(second) => assert_eq!(
            second.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"16"[..])
        ),
        Err(e) => assert!(e.is_go_away() || e.is_reset(), "{e}"),
    }
    // The server ends the connection (GOAWAY, then close), though this
    // client still holds its handle and would open more streams.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the server kept the connection open");
    drop(sender);
    assert_eq!(fixture.sesame.checks(), 1, "checked once per connection");
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 0, "no handler ran");
}

/// A client that never takes part in closing (it answers no PING, so the
/// GOAWAY handshake never ends) is still cut off soon after its refusal:
/// a refused connection cannot be held open.
#[tokio::test]
async fn a_refused_client_that_ignores_the_goaway_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/2 frame: 9-byte header, then `payload`.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
    /// An HPACK literal header field without indexing, new name.
    fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }

    let fixture = Fixture::start().await;
    let mut tcp = tokio::net::TcpStream::connect(fixture.server.local_addr())
        .await
        .expect("connect");
    // :method POST, :scheme http (static table), :path (indexed name).
    let mut block = vec![0x83, 0x86, 0x04];
    let path = "/example.EchoService/Echo";
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    literal(&mut block, "authorization", "guess");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    hello.extend(frame(0x1, 0x4 | 0x1, 1, &block)); // HEADERS, END_HEADERS | END_STREAM
    tcp.write_all(&hello).await.expect("send");
    // Read (never answering anything) until the server closes.
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the refused connection was left open");
    // Before the cut, the refusal was answered: a HEADERS frame (the
    // trailers-only response) on stream 1.
    let mut at = 0;
    let mut headers_on_stream_1 = false;
    while at + 9 <= received.len() {
        let len =
            u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]) as usize;
        let (kind, stream) = (
            received[at + 3],
            u32::from_be_bytes(received[at + 5..at + 9].try_into().expect("4 bytes")) & 0x7fff_ffff,
        );
        headers_on_stream_1 |= kind == 0x1 && stream == 1;
        at += 9 + len;
    }
    assert!(
        headers_on_stream_1,
        "the refusal was answered before the cut"
    );
    assert_eq!(fixture.sesame.checks(), 1);
    assert_eq!(fixture.calls.load(Ordering::SeqCst), 0, "no handler ran");
}

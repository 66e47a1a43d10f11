//! A Keel echo server in the test's process, on a free loopback port with
//! the builtin console on it, and a plain HTTP/1.1 client for its pages.
//!
//! The server runs on a runtime of its own, so the test itself is plain
//! blocking code: it can wait on child processes (a Python peer, a
//! browser) while the server goes on answering them.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keel::{Channel, Code, Context, Server, Status};
use keel_examples::example::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer,
};
use tokio::runtime::Runtime;

/// The method path every call of these tests goes to.
pub const ECHO_PATH: &str = "/example.EchoService/Echo";

/// How long one HTTP exchange with the console may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// brpc's echo, except that a message `fail:CODE` fails with that code:
/// how the tests make errors of the codes they choose.
struct EchoOrFail;

impl EchoService for EchoOrFail {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        if let Some(code) = req.message.strip_prefix("fail:") {
            let code = code.parse().expect("fail:CODE takes a number");
            return Err(Status::new(Code::new(code), "failing as asked"));
        }
        response.message.clone_from(&req.message);
        Ok(())
    }
}

/// The server, its runtime and a baidu_std client of it.
pub struct EchoServer {
    runtime: Runtime,
    server: Server,
    client: EchoServiceClient,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (server, client) = runtime.block_on(async {
            let server = Server::builder()
                .add_service(EchoServiceServer::new(EchoOrFail))
                .bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let channel = Channel::new(&server.local_addr().to_string()).expect("loopback");
            let client = EchoServiceClient::new(&channel);
            (server, client)
        });
        EchoServer {
            runtime,
            server,
            client,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// One echo call over baidu_std.
    pub fn echo(&self, message: &str) -> Result<EchoResponse, Status> {
        let request = EchoRequest {
            message: message.to_owned(),
        };
        self.runtime.block_on(self.client.echo(&request))
    }

    /// A call that must succeed.
    pub fn echo_ok(&self, message: &str) {
        let response = self
            .echo(message)
            .unwrap_or_else(|e| panic!("echo {message:?}: {e}"));
        assert_eq!(response.message, message);
    }

    /// A call that must fail with `code`.
    pub fn echo_fail(&self, code: i32) {
        let err = self
            .echo(&format!("fail:{code}"))
            .expect_err("a fail:CODE call fails");
        assert_eq!(err.code(), Code::new(code), "{err}");
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http(self.addr(), "GET", path, "")
    }

    /// A POST of a form body (`name=value&...`).
    pub fn post_form(&self, path: &str, form: &str) -> HttpResponse {
        http(self.addr(), "POST", path, form)
    }
}

/// One answer of the console.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on its own connection (`Connection: close`, so the answer
/// ends where the connection does).
fn http(addr: SocketAddr, method: &str, path: &str, form: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).expect("connect");
    tcp.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    tcp.set_write_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method == "POST" {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", form.len()));
    }
    request.push_str("\r\n");
    request.push_str(form);
    tcp.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no end of head in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    assert!(
        header("transfer-encoding").is_none(),
        "{method} {path}: a chunked answer; this client reads only whole bodies"
    );
    HttpResponse {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: body.to_owned(),
    }
}

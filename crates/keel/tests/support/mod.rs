//! An echo service on a real TCP server for the baidu_std tests.
#![allow(dead_code, unused_imports)] // each test binary uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel::{Code, Context, Server, Status};
use tokio::sync::{Notify, Semaphore};

pub mod example {
    keel::include_proto!("example");
}
pub use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echo with a few behaviours picked by the message:
/// - `fail`: error 4242 with a text;
/// - `stall`: waits forever (until the call is cancelled);
/// - `gate`: waits until the test adds a permit to `gate`;
/// - `deadline`: answers whether the call carried a deadline;
/// - `panic` / `panic-later`: the handler panics (at once / after a wait);
/// - anything else: echoed, attachment reversed.
pub struct Echo {
    pub gate: Arc<Semaphore>,
    pub gated: Arc<Notify>,
    pub calls: Arc<AtomicU64>,
    never: Notify,
}

impl Default for Echo {
    fn default() -> Self {
        Echo {
            gate: Arc::new(Semaphore::new(0)),
            gated: Arc::default(),
            calls: Arc::default(),
            never: Notify::new(),
        }
    }
}

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match req.message.as_str() {
            "fail" => Err(Status::new(Code::new(4242), "refusing to echo `fail`")),
            "stall" => {
                self.never.notified().await;
                Err(Status::internal("unreachable"))
            }
            "gate" => {
                self.gated.notify_one();
                let permit = self.gate.acquire().await.expect("gate open");
                permit.forget();
                response.message = "gate".into();
                Ok(())
            }
            "panic" => panic!("the test asked this handler to panic"),
            "panic-later" => {
                tokio::task::yield_now().await;
                panic!("the test asked this handler to panic after waiting")
            }
            "deadline" => {
                response.message = format!("deadline={}", ctx.deadline().is_some());
                Ok(())
            }
            _ => {
                if !ctx.attachment().is_empty() {
                    let mut reversed = ctx.attachment().to_vec();
                    reversed.reverse();
                    ctx.set_response_attachment(reversed.into());
                }
                response.message.clone_from(&req.message);
                Ok(())
            }
        }
    }
}

/// A running echo server on an ephemeral loopback port and handles to its
/// echo implementation.
pub struct Fixture {
    pub server: Server,
    pub gate: Arc<Semaphore>,
    pub gated: Arc<Notify>,
    pub calls: Arc<AtomicU64>,
}

impl Fixture {
    pub fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }
}

pub async fn start(
    configure: impl FnOnce(keel::server::ServerBuilder) -> keel::server::ServerBuilder,
) -> Fixture {
    let echo = Echo::default();
    let (gate, gated, calls) = (echo.gate.clone(), echo.gated.clone(), echo.calls.clone());
    let builder = Server::builder().add_service(EchoServiceServer::new(echo));
    let server = configure(builder)
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    Fixture {
        server,
        gate,
        gated,
        calls,
    }
}

pub fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

/// Polls `per_connection` (bounded: 10 s) until it is at most `bound`, as
/// a server gives its quiet connections' buffers back; returns its last
/// figure, for the caller to assert on and print.
pub async fn settle_below(bound: f64, per_connection: impl Fn() -> f64) -> f64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while per_connection() > bound && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    per_connection()
}

/// Waits (bounded) until `cond` holds, yielding to the runtime in between.
/// Used for effects that complete on another task, such as a server noticing
/// a closed connection; panics if it never happens.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Waits (bounded, as [`eventually`]) until the process lists `open` Keel
/// connections (`keel::connections::connection_count`): those a test
/// closed are gone on the other side too.
pub async fn connections_listed(open: usize) {
    eventually(&format!("{open} connections listed"), || {
        keel::connections::connection_count() == open
    })
    .await;
}

/// Runs `test` alone in the process, on a current-thread runtime that is
/// shut down (its tasks ended, its blocking threads joined) before the
/// next test of the binary may start. For churn tests with several tests
/// in one binary: the counting allocator sees the whole process, so a
/// test must not measure while another runs or its runtime is torn down.
pub fn alone<F: std::future::Future>(test: F) -> F::Output {
    run_alone(tokio::runtime::Builder::new_current_thread(), test)
}

/// [`alone`], on a multi-thread runtime of `workers` threads. Dropping it
/// joins its threads, which free their caches (pooled objects, future
/// blocks) as they exit, before the next test takes its baseline; also
/// for tests that count the process's connections.
pub fn alone_on<F: std::future::Future>(workers: usize, test: F) -> F::Output {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    run_alone(builder, test)
}

fn run_alone<F: std::future::Future>(mut builder: tokio::runtime::Builder, test: F) -> F::Output {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = builder.enable_all().build().expect("a runtime");
    let output = runtime.block_on(test);
    drop(runtime);
    output
}

pub mod etcd;
pub mod fake_baidu;
pub mod frames;

/// One echo call of `message` over a plain blocking socket (no client-side
/// framework: the server's connection is the process's only Keel one),
/// leaving the connection open; panics unless the answer is a success for
/// call `id`.
pub fn raw_echo(stream: &mut std::net::TcpStream, id: i64, message: &[u8]) {
    use keel::bytes::BytesMut;
    use keel_wire::baidu_std::{Limits, RequestHeader, decode_frame, encode_request};
    use std::io::{Read, Write};
    let mut out = BytesMut::new();
    // EchoRequest { message = 1 }: tag, varint length, bytes.
    let mut payload = vec![0x0a];
    let mut len = message.len();
    while len >= 0x80 {
        payload.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    payload.push(len as u8);
    payload.extend_from_slice(message);
    let payload = &payload[..];
    encode_request(
        &mut out,
        &RequestHeader::new("example.EchoService", "Echo", id),
        payload.len(),
        |dst| dst.extend_from_slice(payload),
        &[],
    )
    .expect("frame");
    stream.write_all(&out).expect("write");
    drop(out);
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; if message.len() > 4096 { 64 << 10 } else { 256 }];
    loop {
        if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("response") {
            assert_eq!(frame.meta.correlation_id, id);
            assert_eq!(frame.meta.error_code(), 0);
            return;
        }
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

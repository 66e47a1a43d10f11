//! Heap allocations per unary call over TCP, counted per thread: the server
//! runs on a thread of its own (a current-thread runtime), the client on the
//! test's thread. The server's steady state allocates nothing per call; the
//! client allocates the response message's string and nothing else. The
//! service is the tests' echo (`support`), answering by copying the request
//! into the pooled response.

use std::time::Duration;

use keel::{Channel, Server};
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static ALLOC: keel_alloc::CountingAlloc = keel_alloc::CountingAlloc::system();

mod support;
use support::{EchoRequest, EchoServiceClient, EchoServiceServer};

/// Allocations per gzip-compressed call, as measured: flate2's deflate
/// state (six allocations, about 320 KB) and inflate state (one, about
/// 43 KB), made per call inside keel-wire, with no intermediate buffer
/// besides (the compression buffers are the thread's, reused), and the
/// decompressed payload, copied out of the thread's buffer at its exact
/// size; the client also decodes the response's string.
const GZIP_SERVER: u64 = 9;
const GZIP_CLIENT: u64 = 10;

/// Allocations per unary gRPC call. The client: the response's string and
/// the buffer its bytes arrive in. The server: none, as on baidu_std (a
/// request whole in one DATA frame is cut out of the read buffer, and its
/// handler is done with it before the next read). Call heads, response
/// heads and call futures come from pools; requests are encoded straight
/// into the connection's output, and answers from the thread's reused
/// buffer.
const GRPC_CLIENT: u64 = 2;
const GRPC_SERVER: u64 = 0;

/// Asks the server thread for its allocation counters.
type Probe = mpsc::Sender<oneshot::Sender<keel_alloc::Stats>>;

/// Starts the server on its own thread; returns its address and a probe.
fn server_thread() -> (String, Probe, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (probe_tx, mut probe_rx) = mpsc::channel::<oneshot::Sender<keel_alloc::Stats>>(4);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let server = Server::builder()
                .add_service(EchoServiceServer::new(support::Echo::default()))
                .bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(server.local_addr().to_string())
                .expect("test waits");
            while let Some(reply) = probe_rx.recv().await {
                let _ = reply.send(keel_alloc::thread_stats());
            }
            server.shutdown(Duration::from_secs(1)).await;
        });
    });
    let addr = addr_rx.recv().expect("server started");
    (addr, probe_tx, thread)
}

async fn probe(probe: &Probe) -> keel_alloc::Stats {
    let (tx, rx) = oneshot::channel();
    probe.send(tx).await.expect("server thread runs");
    rx.await.expect("server thread answers")
}

/// The server's and the client's allocations over `calls` calls of
/// `echo`, after a warm-up of a fifth as many; printed as `name`'s.
async fn count(
    name: &str,
    echo: &EchoServiceClient,
    probe_tx: &Probe,
    calls: u64,
) -> (keel_alloc::Delta, keel_alloc::Delta) {
    let request = EchoRequest {
        message: "hello, allocation counter".to_owned(),
    };
    for _ in 0..calls / 5 {
        echo.echo(&request).await.expect("warm-up");
    }
    let server_before = probe(probe_tx).await;
    let client_before = keel_alloc::thread_stats();
    for _ in 0..calls {
        let reply = echo.echo(&request).await.expect("echoed");
        assert_eq!(reply.message.len(), request.message.len());
    }
    let client = client_before.delta(&keel_alloc::thread_stats());
    let server = server_before.delta(&probe(probe_tx).await);
    println!(
        "{name}, per call over {calls} calls: server {:.3} allocations, client {:.3}",
        server.allocs as f64 / calls as f64,
        client.allocs as f64 / calls as f64
    );
    (server, client)
}

/// At most `per_call` allocations per call over `calls` calls, and a
/// constant: the probe's own message and the odd timer-wheel level the
/// runtime grows.
fn at_most(who: &str, delta: &keel_alloc::Delta, calls: u64, per_call: u64) {
    assert!(
        delta.allocs <= calls * per_call + 8,
        "{who} allocated {} times in {calls} calls (at most {per_call} a call): {delta:?}",
        delta.allocs
    );
}

#[test]
fn a_tcp_call_allocates_nothing_on_the_server_and_one_string_on_the_client() {
    keel::rpcz::tracer().sampler().set_target(0);
    assert!(keel_alloc::is_installed());
    let (addr, probe_tx, thread) = server_thread();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let channel = Channel::new(&addr).expect("addr");
        let echo = EchoServiceClient::new(&channel);
        const CALLS: u64 = 10_000;
        let (server, client) = count("baidu_std", &echo, &probe_tx, CALLS).await;
        at_most("the server", &server, CALLS, 0);
        // The response's string, once per call; nothing else.
        at_most("the client", &client, CALLS, 1);

        // Compressed both ways (gzip): the compression buffers are reused
        // on both sides; what remains per call is the decompressed payload
        // each side receives, and the decoded string on the client.
        let gzip = echo.with_options(keel::CallOptions {
            compression: keel::Compression::Gzip,
            ..keel::CallOptions::default()
        });
        const ZIPPED: u64 = 2_000;
        let (server, client) = count("gzip", &gzip, &probe_tx, ZIPPED).await;
        at_most("the gzip server", &server, ZIPPED, GZIP_SERVER);
        at_most("the gzip client", &client, ZIPPED, GZIP_CLIENT);

        // gRPC on the same port (see GRPC_CLIENT, GRPC_SERVER).
        let grpc = Channel::new(&format!("grpc://{addr}")).expect("grpc url");
        let echo = EchoServiceClient::new(&grpc);
        let (server, client) = count("gRPC", &echo, &probe_tx, CALLS).await;
        at_most("the gRPC server", &server, CALLS, GRPC_SERVER);
        at_most("the gRPC client", &client, CALLS, GRPC_CLIENT);
    });
    drop(probe_tx);
    thread.join().expect("server thread");
}

//! `keel demo`: everything embedded, nothing to set up.
//!
//! The server runs on its own thread with a single-threaded runtime, the
//! client on this thread with another, so the counting allocator's
//! per-thread counters tell each side's allocations apart.

use std::io::Write;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use keel::metrics::LatencyHistogram;
use keel::{CallOptions, Channel, Server};
use keel_examples::Echo;
use keel_examples::example::{EchoRequest, EchoServiceClient, EchoServiceServer};
use tokio::sync::{mpsc, oneshot};

/// Requests to the server thread.
enum ToServer {
    /// Report this thread's allocation counters.
    Stats(oneshot::Sender<keel_alloc::Stats>),
}

/// The flags of `keel demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds of load, in (0, 600]
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    duration: f64,
    /// Calls in flight on the one connection
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// rpcz sampling target, spans per second (0 turns tracing off)
    #[arg(long, default_value_t = keel::rpcz::Sampler::DEFAULT_TARGET)]
    rpcz: u64,
    /// Where the server listens (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
    addr: String,
    /// Keep the server (and its console) up after the run, until Ctrl-C
    #[arg(long)]
    serve: bool,
}

impl Default for DemoArgs {
    fn default() -> DemoArgs {
        DemoArgs {
            duration: 3.0,
            concurrency: 128,
            rpcz: keel::rpcz::Sampler::DEFAULT_TARGET,
            addr: "127.0.0.1:0".to_owned(),
            serve: false,
        }
    }
}

fn seconds(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(d) if d > 0.0 && d <= 600.0 => Ok(d),
        _ => Err("needs a number of seconds in (0, 600]".into()),
    }
}

struct Settings {
    duration: Duration,
    concurrency: usize,
    rpcz: u64,
    /// Where the server listens (default: an ephemeral loopback port).
    addr: String,
    /// Keep serving (and the console up) after the run.
    serve: bool,
}

fn settings(a: &DemoArgs) -> Settings {
    Settings {
        duration: Duration::from_secs_f64(a.duration),
        concurrency: a.concurrency as usize,
        rpcz: a.rpcz,
        addr: a.addr.clone(),
        serve: a.serve,
    }
}

/// Starts the echo server thread; returns its address and a line to it.
fn start_server(
    addr: String,
) -> Result<(std::net::SocketAddr, mpsc::UnboundedSender<ToServer>), String> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (to_server, mut inbox) = mpsc::unbounded_channel::<ToServer>();
    std::thread::Builder::new()
        .name("keel-demo-server".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let server = Server::builder()
                    .add_service(EchoServiceServer::new(Echo))
                    .bind(addr.as_str())
                    .await;
                let server = match server {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot listen on {addr}: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(server.local_addr()));
                // Serve until the demo hangs up.
                while let Some(ToServer::Stats(reply)) = inbox.recv().await {
                    let _ = reply.send(keel_alloc::thread_stats());
                }
                server.shutdown(Duration::from_secs(1)).await;
            });
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    let addr = ready_rx
        .recv()
        .map_err(|_| "the server thread ended early".to_string())??;
    Ok((addr, to_server))
}

async fn server_stats(
    to_server: &mpsc::UnboundedSender<ToServer>,
) -> Result<keel_alloc::Stats, String> {
    let (tx, rx) = oneshot::channel();
    to_server
        .send(ToServer::Stats(tx))
        .map_err(|_| "the server thread is gone".to_string())?;
    rx.await
        .map_err(|_| "the server thread is gone".to_string())
}

/// The rpcz span pool's counters: spans taken and returned, ever.
fn span_counts() -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    keel_pool::for_each_stats(|p| {
        if p.name == "rpcz.spans" {
            counts = (p.gets, p.puts, p.live);
        }
    });
    counts
}

/// Waits (bounded) until `done` holds; whether it did.
async fn settle(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// Channels created per churn round, and cluster channels (one invoker
/// each).
const CHURN_CHANNELS: usize = 2_000;
const CHURN_INVOKERS: usize = 500;

/// Creates and drops channels (each connects and makes a call) and cluster
/// channels (each creates an invoker), then shows that connections,
/// invokers, spans and the live heap come back.
async fn churn(
    addr: &str,
    req: &EchoRequest,
    (span_gets, span_puts, _): (u64, u64, u64),
) -> Result<(), String> {
    let connections_before = keel::connections::connection_count();
    let live_before = keel_alloc::live_bytes();
    let started = Instant::now();
    for _ in 0..CHURN_CHANNELS {
        let channel = Channel::new(addr).map_err(|e| e.to_string())?;
        EchoServiceClient::new(&channel)
            .echo(req)
            .await
            .map_err(|e| format!("churn call failed: {e}"))?;
    }
    let list = format!("list://{addr}");
    for _ in 0..CHURN_INVOKERS {
        let channel = Channel::new(&list).map_err(|e| e.to_string())?;
        EchoServiceClient::new(&channel)
            .echo(req)
            .await
            .map_err(|e| format!("churn call through a cluster channel failed: {e}"))?;
    }
    let connections_back =
        settle(|| keel::connections::connection_count() <= connections_before).await;
    let invokers_back = settle(|| keel::cluster::live_invokers() == 0).await;
    let (gets, puts, live_spans) = span_counts();
    let live_after = keel_alloc::live_bytes();
    let back = |yes: bool| if yes { "back" } else { "NOT back" };
    println!();
    println!(
        "  churn ({:.1} s): created and dropped during the run",
        started.elapsed().as_secs_f64()
    );
    println!(
        "    channels           {:>12} created and dropped, each connected and called once; connections {} to {} ({})",
        CHURN_CHANNELS + CHURN_INVOKERS,
        connections_before,
        keel::connections::connection_count(),
        back(connections_back)
    );
    println!(
        "    invokers           {:>12} created and destroyed (list:// channels); live now {} ({})",
        CHURN_INVOKERS,
        keel::cluster::live_invokers(),
        back(invokers_back)
    );
    println!(
        "    rpcz spans         {:>12} taken from the pool during the run, {} returned; {} live (the store's recent trees)",
        // Snapshots of a busy pool may undercount (`PoolStats`).
        gets.saturating_sub(span_gets),
        puts.saturating_sub(span_puts),
        live_spans
    );
    println!("    live heap before   {live_before:>12} bytes");
    println!("    live heap after    {live_after:>12} bytes");
    Ok(())
}

/// Runs the demo; the error is a message for the user.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let s = settings(args);
    keel::rpcz::tracer().sampler().set_target(s.rpcz);
    let (addr, to_server) = start_server(s.addr.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(drive(s, addr, to_server))
}

async fn drive(
    s: Settings,
    addr: std::net::SocketAddr,
    to_server: mpsc::UnboundedSender<ToServer>,
) -> Result<(), String> {
    println!(
        "keel demo: echo server on {addr} (baidu_std, gRPC and HTTP on one port), client with {} calls in flight on one connection",
        s.concurrency
    );
    println!(
        "  console: http://{addr}/  (status, vars, metrics, rpcz, pools, memory, connections, invokers)"
    );
    let spans_at_start = span_counts();
    let channel = Channel::new(&addr.to_string()).map_err(|e| e.to_string())?;
    let client = EchoServiceClient::new(&channel);
    let req = EchoRequest {
        message: "0123456789abcdef".into(), // 16 bytes, like the benchmarks
    };
    // Warm up: connection, buffers, pools.
    for _ in 0..2_000 {
        client
            .echo(&req)
            .await
            .map_err(|e| format!("warm-up call failed: {e}"))?;
    }

    let client_before = keel_alloc::thread_stats();
    let server_before = server_stats(&to_server).await?;
    let started = Instant::now();
    let until = started + s.duration;
    let mut workers = tokio::task::JoinSet::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..s.concurrency {
        let client = client.clone();
        let req = req.clone();
        let done = done.clone();
        workers.spawn(async move {
            let mut hist = LatencyHistogram::new();
            let mut first_error = None;
            while Instant::now() < until {
                let t = Instant::now();
                match client.echo(&req).await {
                    Ok(_) => {
                        hist.record(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        break;
                    }
                }
            }
            (hist, first_error)
        });
    }
    // Progress, twice a second, on one line.
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(std::sync::atomic::Ordering::Relaxed);
                let t = started.elapsed().as_secs_f64();
                print!("\r  {t:4.1}s  {n:>10} calls  {:>9.0} QPS", n as f64 / t);
                let _ = std::io::stdout().flush();
            }
        })
    };
    let mut hist = LatencyHistogram::new();
    let mut first_error = None;
    while let Some(w) = workers.join_next().await {
        let (h, e) = w.map_err(|e| format!("a client task failed: {e}"))?;
        hist.merge(&h);
        if first_error.is_none() {
            first_error = e;
        }
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let client_after = keel_alloc::thread_stats();
    let server_after = server_stats(&to_server).await?;
    println!();
    if let Some(e) = first_error {
        return Err(format!("a call failed: {e}"));
    }
    let calls = hist.count().max(1);
    let per_call = |before: &keel_alloc::Stats, after: &keel_alloc::Stats| {
        before.delta(after).allocs as f64 / calls as f64
    };
    println!();
    println!("  calls                {:>12}", hist.count());
    println!(
        "  QPS                  {:>12.0}",
        hist.count() as f64 / elapsed
    );
    println!("  latency p50          {:>10} us", hist.quantile(0.5));
    println!("  latency p99          {:>10} us", hist.quantile(0.99));
    let traced = keel::rpcz::tracer().store().stats();
    println!(
        "  rpcz                 {:>12} trees stored ({} submitted; sampling target {}/s)",
        traced.trees, traced.submitted, s.rpcz
    );
    println!(
        "  allocations per call {:>12.2} on the server",
        per_call(&server_before, &server_after)
    );
    println!(
        "  allocations per call {:>12.2} on the client",
        per_call(&client_before, &client_after)
    );

    // A million clients on one channel: they cost nothing.
    let live_before = keel_alloc::live_bytes();
    let allocs_before = keel_alloc::thread_stats();
    let options = CallOptions {
        timeout: Some(Duration::from_millis(250)),
        log_id: 7,
        ..CallOptions::default()
    };
    for _ in 0..1_000_000 {
        let c = EchoServiceClient::new(&channel);
        let derived = c.with_options(options.clone());
        std::hint::black_box((&c, &derived));
    }
    let allocs = allocs_before.delta(&keel_alloc::thread_stats()).allocs;
    let live_after = keel_alloc::live_bytes();
    println!();
    println!("  1,000,000 clients + with_options on one channel:");
    println!("    live heap before   {:>12} bytes", live_before);
    println!("    live heap after    {:>12} bytes", live_after);
    println!("    allocations        {:>12}", allocs);
    println!(
        "    channel method table {:>10} entries (bounded by methods, not clients)",
        channel.method_stats_len()
    );
    churn(&addr.to_string(), &req, spans_at_start).await?;
    if s.serve {
        println!();
        println!("  serving on {addr} until interrupted (Ctrl-C); console: http://{addr}/");
        println!("  try: curl -d '{{\"message\":\"hi\"}}' http://{addr}/example.EchoService/Echo");
        // The server thread serves while `to_server` lives.
        std::future::pending::<()>().await;
    }
    drop(to_server);
    Ok(())
}

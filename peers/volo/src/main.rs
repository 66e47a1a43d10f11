//! volo-grpc's side of `keel-bench volo`: brpc's echo over gRPC with
//! volo-grpc's server and its generated client, driven over stdin by
//! keel-bench (which measures CPU from /proc and asks for allocations).
//!
//! ```text
//! keel-volo-peer server
//!     prints `port N` (127.0.0.1, a free port), then answers each line:
//!     `stats` -> `stats ALLOCS LIVE_BYTES`; exits at end of input
//! keel-volo-peer client HOST:PORT CONNECTIONS CALLS_PER_CONNECTION
//!     one client (one HTTP/2 connection) per connection; prints `ready`,
//!     then answers each line:
//!     `run MILLIS` -> `done CALLS ERRORS NANOS P50_US P99_US ALLOCS`
//!     (a closed loop of CONNECTIONS x CALLS_PER_CONNECTION callers for
//!     MILLIS ms); exits at end of input
//! ```
//!
//! Both run on a 2-worker tokio runtime, as keel-bench's own servers and
//! clients do; each load task stops at its deadline or after
//! `MAX_CALLS_PER_TASK` calls.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_alloc::CountingAlloc;
use pilota::FastStr;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new(std::alloc::System);

mod generated {
    include!(concat!(env!("OUT_DIR"), "/proto_gen.rs"));
}

use generated::proto_gen::example::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceClientBuilder,
    EchoServiceServer,
};

/// Worker threads, as keel-bench's servers and clients have.
const WORKERS: usize = 2;
/// The message every call sends: 16 bytes, as in brpc's benchmarks.
const MESSAGE: &str = "0123456789abcdef";
/// A bound on each load task's calls, besides its deadline.
const MAX_CALLS_PER_TASK: u64 = 100_000_000;
/// Longest run a `run` line may ask for.
const MAX_RUN: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["server"] => server(),
        ["client", addr, connections, per_connection] => {
            match (addr.parse(), connections.parse(), per_connection.parse()) {
                (Ok(addr), Ok(c), Ok(n)) if c > 0 && n > 0 => client(addr, c, n),
                _ => Err(format!("bad client arguments: {args:?}")),
            }
        }
        _ => Err(
            "usage: keel-volo-peer server | client HOST:PORT CONNECTIONS CALLS_PER_CONNECTION"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-volo-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// The echo handler: the response carries the request's message, as
/// Keel's and tonic's echo servers in keel-bench do.
struct Echo;

impl EchoService for Echo {
    async fn echo(
        &self,
        req: volo_grpc::Request<EchoRequest>,
    ) -> Result<volo_grpc::Response<EchoResponse>, volo_grpc::Status> {
        let message = req.into_inner().message;
        Ok(volo_grpc::Response::new(EchoResponse {
            message,
            ..Default::default()
        }))
    }
}

fn server() -> Result<(), String> {
    let rt = runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("the listener has no address: {e}"))?
        .port();
    let incoming = volo::net::incoming::DefaultIncoming::from(listener);
    rt.spawn(async move {
        let served = volo_grpc::server::Server::new()
            .add_service(
                volo_grpc::server::ServiceBuilder::new(EchoServiceServer::new(Echo)).build(),
            )
            .run(incoming)
            .await;
        if let Err(e) = served {
            eprintln!("keel-volo-peer server: {e}");
        }
    });
    say(&format!("port {port}"))?;
    answer_lines(|line| match line {
        "stats" => Ok(stats_line()),
        other => Err(format!("unknown command {other:?}")),
    })
}

fn client(addr: SocketAddr, connections: usize, per_connection: usize) -> Result<(), String> {
    let rt = runtime()?;
    // One client per connection: each keeps its own HTTP/2 connection.
    let clients: Vec<EchoServiceClient> = (0..connections)
        .map(|i| {
            let _guard = rt.enter();
            EchoServiceClientBuilder::new(format!("echo-{i}"))
                .address(addr)
                .build()
        })
        .collect();
    say("ready")?;
    answer_lines(|line| {
        let millis = line
            .strip_prefix("run ")
            .and_then(|m| m.parse::<u64>().ok())
            .ok_or_else(|| format!("unknown command {line:?}"))?;
        let length = Duration::from_millis(millis).min(MAX_RUN);
        let allocs = keel_alloc::stats().allocs;
        let run = rt.block_on(load(&clients, per_connection, length));
        let allocs = keel_alloc::stats().allocs - allocs;
        Ok(format!(
            "done {} {} {} {} {} {allocs}",
            run.calls,
            run.errors,
            run.elapsed.as_nanos(),
            run.histogram.quantile(0.5),
            run.histogram.quantile(0.99),
        ))
    })
}

/// What one closed-loop run did.
struct Run {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    histogram: Histogram,
}

async fn load(clients: &[EchoServiceClient], per_connection: usize, length: Duration) -> Run {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::with_capacity(clients.len() * per_connection);
    for client in clients {
        for _ in 0..per_connection {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut histogram = Histogram::default();
                let mut errors = 0u64;
                let mut calls = 0u64;
                while calls < MAX_CALLS_PER_TASK {
                    let start = Instant::now();
                    if start >= deadline {
                        break;
                    }
                    let request = EchoRequest {
                        message: FastStr::from_static_str(MESSAGE),
                        ..Default::default()
                    };
                    match client.echo(request).await {
                        Ok(_) => histogram.record(start.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                    calls += 1;
                }
                (histogram, errors)
            }));
        }
    }
    let mut run = Run {
        calls: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        histogram: Histogram::default(),
    };
    for task in tasks {
        if let Ok((histogram, errors)) = task.await {
            run.histogram.merge(&histogram);
            run.errors += errors;
        }
    }
    run.elapsed = started.elapsed();
    run.calls = run.histogram.count();
    run
}

fn stats_line() -> String {
    format!(
        "stats {} {}",
        keel_alloc::stats().allocs,
        keel_alloc::live_bytes()
    )
}

fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to keel-bench: {e}"))
}

/// Answers each line of standard input with `answer`'s line, until the
/// input ends.
fn answer_lines(mut answer: impl FnMut(&str) -> Result<String, String>) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut line = String::with_capacity(64);
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => say(&answer(line.trim())?)?,
        }
    }
}

/// Latencies in microseconds, 16 buckets per power of two (within 1/16).
struct Histogram {
    counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; Histogram::BUCKETS],
        }
    }
}

impl Histogram {
    const LINEAR: u64 = 32;
    const BUCKETS: usize = 32 + 60 * 16;

    fn index(v: u64) -> usize {
        if v < Self::LINEAR {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() as u64 - 4;
        (Self::LINEAR + (shift - 1) * 16 + ((v >> shift) - 16)) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::LINEAR {
            return i;
        }
        let k = i - Self::LINEAR;
        let shift = k / 16 + 1;
        ((k % 16 + 16) << shift) + (1 << shift) / 2
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn quantile(&self, q: f64) -> u64 {
        let rank = (q * self.count() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        0
    }
}

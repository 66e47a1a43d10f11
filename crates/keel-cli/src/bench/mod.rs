//! `keel bench ADDR package.Service/Method -d JSON`: load on one method,
//! like ghz or brpc's rpc_press, over baidu_std, gRPC or HTTP.
//!
//! ```text
//!   K channels (one connection each) ◄── N workers, worker i on channel i % K
//!   closed loop: send, wait, record (now - sent), send again
//!   open loop (--qps R): call n is due at start + n/R; a worker takes the
//!     next n, waits until it is due, sends, records (now - due): a server
//!     that falls behind shows as latency, not as fewer samples
//!   warm-up (same load, not counted) ─► measured run ─► report
//! ```
//!
//! Latencies go to an HDR histogram (the `hdrhistogram` crate: exact
//! percentiles at 3 significant digits, merged once every few hundred
//! calls per worker, so no lock is taken per call). Keel's own lock-free
//! [`LatencyHistogram`](keel::metrics::LatencyHistogram) stays on the
//! framework's call path, where it records into per-method buckets without
//! a lock; here the report wants exact percentiles and a text histogram,
//! and the merge is off the call path.

mod report;
mod server;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use keel::{Client, MethodKind};
use tokio::time::Instant;

use crate::failure::Failure;
use crate::schema::{SchemaArgs, keel_method};
use crate::target::{ProtocolArg, Target, TargetArgs, duration};

pub use report::Report;

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table and a histogram, for people
    Text,
    /// One JSON object, for scripts
    Json,
}

/// The flags of `keel bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server: host:port (baidu_std), grpc://host:port or http://host:port
    pub addr: String,
    /// The method: package.Service/Method (unary)
    pub method: String,
    /// The request: JSON, @FILE or @-; several (one a line) are sent in turn
    #[arg(short = 'd', long = "data", value_name = "JSON|@FILE|@-")]
    pub data: Option<String>,
    /// Calls in flight
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Connections (one channel each); workers are spread over them
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: u64,
    /// How long to load, e.g. 10s, 1m [default: 10s unless --total]
    #[arg(short = 'z', long, value_parser = duration, conflicts_with = "total")]
    pub duration: Option<Duration>,
    /// How many calls to make (instead of --duration)
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,
    /// Open loop: start calls at this rate (calls per second), latency
    /// counted from when each call was due
    #[arg(long, value_parser = rate)]
    pub qps: Option<f64>,
    /// Load before the measured run, not counted (0s: none)
    #[arg(long, default_value = "1s", value_parser = duration_or_zero)]
    pub warmup: Duration,
    /// The report's format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Threads driving the load [default: one per core; over gRPC one per
    /// connection, up to one per core: an HTTP/2 connection is driven by
    /// one task, and waking callers on other threads costs it more than
    /// they help]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub schema: SchemaArgs,
}

fn rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1e8 => Ok(r),
        _ => Err("needs a rate in (0, 1e8] calls per second".into()),
    }
}

fn duration_or_zero(v: &str) -> Result<Duration, String> {
    if v.trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<f64>()
        == Ok(0.0)
    {
        return Ok(Duration::ZERO);
    }
    duration(v)
}

/// What one phase (warm-up or the measured run) does.
#[derive(Debug, Clone, Copy)]
struct Load {
    until: Option<Instant>,
    total: Option<u64>,
    /// Seconds between due times (open loop).
    interval: Option<f64>,
}

/// What the workers share: counters for the progress line, and the
/// histogram they merge into.
struct Shared {
    /// Call numbers handed out.
    issued: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Microseconds.
    histogram: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            issued: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            histogram: Mutex::new(new_histogram()),
        })
    }

    fn merge(&self, batch: &mut Vec<u64>) {
        let mut h = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &us in batch.iter() {
            h.saturating_record(us.max(1));
        }
        batch.clear();
    }
}

/// Latencies from 1 µs to an hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Failed calls by code: how many, and the first message.
type Errors = BTreeMap<i32, (u64, String)>;

/// Calls a worker merges at once into the shared histogram.
const BATCH: usize = 256;

async fn worker(
    client: Client,
    method: &'static keel::MethodDescriptor,
    requests: Arc<Vec<Bytes>>,
    shared: Arc<Shared>,
    load: Load,
    start: Instant,
) -> Errors {
    let mut batch = Vec::with_capacity(BATCH);
    let mut errors = Errors::new();
    loop {
        let n = shared.issued.fetch_add(1, Relaxed);
        if load.total.is_some_and(|t| n >= t) {
            break;
        }
        let sent = match load.interval {
            Some(interval) => {
                let due = start + Duration::from_secs_f64(n as f64 * interval);
                if load.until.is_some_and(|u| due >= u) {
                    break;
                }
                tokio::time::sleep_until(due).await;
                due
            }
            None => {
                let now = Instant::now();
                if load.until.is_some_and(|u| now >= u) {
                    break;
                }
                now
            }
        };
        let request = requests[(n % requests.len() as u64) as usize].clone();
        match client.unary_raw(method, request).await {
            Ok(_) => {
                batch.push(sent.elapsed().as_micros() as u64);
                shared.ok.fetch_add(1, Relaxed);
                if batch.len() == BATCH {
                    shared.merge(&mut batch);
                }
            }
            Err(status) => {
                shared.errors.fetch_add(1, Relaxed);
                let entry = errors
                    .entry(status.code().value())
                    .or_insert_with(|| (0, status.message().to_owned()));
                entry.0 += 1;
            }
        }
    }
    shared.merge(&mut batch);
    errors
}

/// What the load needs to run.
struct Setup {
    clients: Vec<Client>,
    method: &'static keel::MethodDescriptor,
    requests: Arc<Vec<Bytes>>,
    concurrency: u64,
}

/// Runs one phase; returns the errors and the time it took.
async fn phase(
    setup: &Setup,
    load_for: Option<Duration>,
    total: Option<u64>,
    qps: Option<f64>,
    progress: &Progress,
    label: &'static str,
) -> (Arc<Shared>, Errors, Duration) {
    let shared = Shared::new();
    let start = Instant::now();
    let load = Load {
        until: load_for.map(|d| start + d),
        total,
        interval: qps.map(|r| 1.0 / r),
    };
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..setup.concurrency {
        let client = setup.clients[(i % setup.clients.len() as u64) as usize].clone();
        workers.spawn(worker(
            client,
            setup.method,
            setup.requests.clone(),
            shared.clone(),
            load,
            start,
        ));
    }
    let ticker = progress.start(label, shared.clone(), start, load_for, total);
    let mut errors = Errors::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(e) = done {
            for (code, (n, message)) in e {
                let entry = errors.entry(code).or_insert((0, message));
                entry.0 += n;
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    progress.finish();
    (shared, errors, elapsed)
}

/// The live progress line: indicatif's on a terminal, a plain line a
/// second otherwise (on standard error, so `--format json` stays clean).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        Progress { bar }
    }

    fn start(
        &self,
        label: &'static str,
        shared: Arc<Shared>,
        start: Instant,
        length: Option<Duration>,
        total: Option<u64>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let bar = self.bar.clone();
        let every = if bar.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + every, every);
            loop {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                let ok = shared.ok.load(Relaxed);
                let errors = shared.errors.load(Relaxed);
                let p99 = shared
                    .histogram
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .value_at_quantile(0.99);
                let of = match (length, total) {
                    (Some(l), _) => format!("/{:.0}s", l.as_secs_f64()),
                    (None, Some(n)) => {
                        format!(" ({:.0}%)", 100.0 * (ok + errors) as f64 / n as f64)
                    }
                    _ => String::new(),
                };
                let line = format!(
                    "{label} {t:5.1}s{of}  {:>10} calls  {:>9.0} QPS  {errors} errors  p99 {}",
                    ok + errors,
                    (ok + errors) as f64 / t,
                    report::micros(p99)
                );
                match &bar {
                    Some(bar) => {
                        bar.set_message(line);
                        bar.tick();
                    }
                    None => eprintln!("{line}"),
                }
            }
        }))
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Task polls between two looks of a busy worker at its sockets (tokio's
/// default is 61). Callers woken by one read then queue their next
/// requests before the worker reads again, so each write carries more of
/// them, and the server reads them in fewer reads. At 2 connections x 64
/// calls in flight (`scripts/bench-syscalls.sh`), client syscalls per call
/// are 0.23-0.26 against 0.28-0.33 with the default (alternating runs),
/// the server's 0.13 against 0.20, at the same QPS; at 4 x 128, the
/// client's are 0.16-0.17 against 0.31, at 0.89-1.06M QPS against
/// 0.85-0.87M. One call at a time (1x1) is not affected: its worker has
/// no other task to poll.
const EVENT_INTERVAL: u32 = 255;

/// Runs `keel bench`.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let grpc = Target::parse(&args.addr, args.target.protocol)?.protocol == ProtocolArg::Grpc;
    let threads = match args.threads {
        Some(n) => n as usize,
        None if grpc => cores.min(args.connections as usize),
        None => cores,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .event_interval(EVENT_INTERVAL)
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("cannot start a runtime: {e}")))?;
    let report = rt.block_on(bench(&args))?;
    match args.format {
        Format::Json => println!("{}", report.json()),
        Format::Text => print!("{}", report.text()),
    }
    Ok(())
}

async fn bench(args: &BenchArgs) -> Result<Report, Failure> {
    let target = Target::parse(&args.addr, args.target.protocol)?;
    let options = args.target.call_options()?;
    let service = args
        .method
        .trim_start_matches('/')
        .rsplit_once('/')
        .map_or(args.method.as_str(), |(s, _)| s);
    let schema = args
        .schema
        .load(&target, args.target.timeout, &[service])
        .await?;
    let method = schema.method(&args.method)?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::usage(format!(
            "{} is a streaming method; keel bench loads unary methods",
            args.method
        )));
    }
    let text = crate::json::request_text(args.data.as_deref())?;
    let mut requests = Vec::new();
    for v in crate::json::values(&text)? {
        requests.push(crate::json::encode(&method.input(), &v)?);
    }
    if requests.is_empty() {
        requests.push(Bytes::new());
    }
    let descriptor = keel_method(&schema.pool, &method);
    debug_assert_eq!(descriptor.kind, MethodKind::Unary);
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients
            .push(Client::new(&target.channel(args.target.timeout)?).with_options(options.clone()));
    }
    // One call first: a server that cannot be reached, or refuses the
    // method, is an error now rather than a run of failures.
    for client in &clients {
        client
            .unary_raw(descriptor, requests[0].clone())
            .await
            .map_err(|s| Failure::from_status(&descriptor.to_string(), &target.host_port, &s))?;
    }
    let setup = Setup {
        clients,
        method: descriptor,
        requests: Arc::new(requests),
        concurrency: args.concurrency,
    };
    let progress = Progress::new();
    let length = match (args.duration, args.total) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    if !args.warmup.is_zero() {
        phase(
            &setup,
            Some(args.warmup),
            None,
            args.qps,
            &progress,
            "warm-up",
        )
        .await;
    }
    let server_before = server::Counters::read(&target.host_port).await;
    let client_before = keel_alloc::stats();
    let (shared, errors, elapsed) =
        phase(&setup, length, args.total, args.qps, &progress, "bench").await;
    let client_after = keel_alloc::stats();
    let server_after = server::Counters::read(&target.host_port).await;
    let histogram = std::mem::replace(
        &mut *shared
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        new_histogram(),
    );
    let ok = shared.ok.load(Relaxed);
    let failed = shared.errors.load(Relaxed);
    let calls = ok + failed;
    let server_allocs = match (server_before, server_after) {
        (Some(b), Some(a)) => a.allocs_per_call(&b),
        _ => None,
    };
    Ok(Report {
        target: format!("{} {}", target.protocol.name(), target.host_port),
        method: descriptor.to_string(),
        concurrency: args.concurrency,
        connections: args.connections,
        qps_target: args.qps,
        calls,
        ok,
        errors,
        elapsed,
        histogram,
        client_allocs_per_call: (calls > 0)
            .then(|| client_before.delta(&client_after).allocs as f64 / calls as f64),
        server_allocs_per_call: server_allocs,
    })
}

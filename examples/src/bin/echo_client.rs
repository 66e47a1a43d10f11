//! brpc's echo client, in Keel:
//! `echo_client [--server HOST:PORT] [--concurrency N] [--duration SECS]`
//! (defaults 127.0.0.1:8000, 16, 5). Keeps N calls in flight on one
//! multiplexed connection for the duration, then prints QPS and latency.

use std::time::{Duration, Instant};

use keel::Channel;
use keel::metrics::LatencyHistogram;
use keel_examples::example::{EchoRequest, EchoServiceClient};

fn parse() -> Result<(String, usize, f64), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = keel_examples::flag(&args, "server", "127.0.0.1:8000".to_string())?;
    let concurrency = keel_examples::flag(&args, "concurrency", 16usize)?;
    let duration = keel_examples::flag(&args, "duration", 5.0f64)?;
    if concurrency == 0 || !(duration > 0.0 && duration <= 3600.0) {
        return Err("--concurrency must be > 0 and --duration in (0, 3600]".into());
    }
    Ok((server, concurrency, duration))
}

#[tokio::main]
async fn main() {
    let (server, concurrency, duration) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("echo_client: {e}");
            std::process::exit(2);
        }
    };
    let channel = match Channel::new(&server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("echo_client: {e}");
            std::process::exit(2);
        }
    };
    let until = Instant::now() + Duration::from_secs_f64(duration);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = EchoServiceClient::new(&channel);
        workers.spawn(async move {
            let req = EchoRequest {
                message: "hello world, keel".into(),
            };
            let mut hist = LatencyHistogram::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < until {
                let t = Instant::now();
                match client.echo(&req).await {
                    Ok(_) => hist.record(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, errors, first_error)
        });
    }
    let mut hist = LatencyHistogram::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(done) = workers.join_next().await {
        let (h, e, f) = done.expect("worker task");
        hist.merge(&h);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "echo_client -> {server}: {} calls in {secs:.1}s, {:.0} QPS, latency p50 {}us p99 {}us max {}us, {errors} errors",
        hist.count(),
        hist.count() as f64 / secs,
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.max(),
    );
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
        std::process::exit(1);
    }
}

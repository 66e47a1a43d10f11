//! brpc's echo client, in Keel:
//! `echo_client [--server HOST:PORT] [--concurrency N] [--duration SECS]`
//! (defaults 127.0.0.1:8000, 16, 5). Keeps N calls in flight on one
//! multiplexed connection for the duration, then prints QPS and latency.

use std::time::{Duration, Instant};

use clap::Parser;
use keel::Channel;
use keel::metrics::LatencyHistogram;
use keel_examples::example::{EchoRequest, EchoServiceClient};

/// brpc's echo client, in Keel: keeps N calls in flight on one multiplexed
/// connection for the duration, then prints QPS and latency.
#[derive(Debug, Parser)]
#[command(name = "echo_client")]
struct Flags {
    /// The echo server
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "HOST:PORT")]
    server: String,
    /// Calls in flight
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Seconds to run, in (0, 3600]
    #[arg(long, default_value_t = 5.0, value_parser = duration)]
    duration: f64,
}

fn duration(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(d) if d > 0.0 && d <= 3600.0 => Ok(d),
        _ => Err("needs a number of seconds in (0, 3600]".into()),
    }
}

#[tokio::main]
async fn main() {
    let Flags {
        server,
        concurrency,
        duration,
    } = Flags::parse();
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

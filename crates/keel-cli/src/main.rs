//! The `keel` command.
//!
//! - `keel demo`: the main job. Starts an echo server on an ephemeral
//!   loopback port, drives it with Keel's client for a few seconds, and
//!   reports throughput, latency, allocations per call on each side, and the
//!   live heap around creating a million clients on one channel.

#![forbid(unsafe_code)]

mod demo;

use keel_alloc::CountingAlloc;

/// Counting allocator over the system allocator: the figures `keel demo`
/// prints (allocations per call, live heap) come from it.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const USAGE: &str = "usage: keel <command> [options]

commands:
  demo [--duration SECS] [--concurrency N] [--rpcz SPANS_PER_SEC]
       [--addr HOST:PORT] [--serve]
        run an echo server and client on loopback and report QPS, latency,
        allocations per call and heap use (defaults: 3 s, 128 in flight,
        rpcz sampling toward 1000 spans/s; 0 turns tracing off); the
        server's console is at http://ADDR/, and --serve keeps the server
        (and its console) up after the run
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("demo") => demo::run(args.get(1..).unwrap_or_default()),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = code {
        eprintln!("keel: {e}");
        std::process::exit(2);
    }
}

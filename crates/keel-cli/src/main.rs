//! The `keel` command.
//!
//! - `keel demo`: the main job. Starts an echo server on an ephemeral
//!   loopback port, drives it with Keel's client for a few seconds, and
//!   reports throughput, latency, allocations per call on each side, the
//!   live heap around creating a million clients on one channel, and what
//!   the run created and dropped.
//! - `keel call`, `keel list`, `keel describe`: call any method of any
//!   server from JSON (baidu_std, gRPC or HTTP), with schemas from
//!   `.proto` files or the server's reflection service, like grpcurl.
//! - `keel bench`: load on any method, closed or open loop, with a live
//!   progress line and an HDR latency report, like ghz or brpc's
//!   rpc_press.
//!
//! Exit codes tell failures apart for scripts: see [`failure::exit`].

#![forbid(unsafe_code)]

mod bench;
mod call;
mod demo;
mod failure;
mod inspect;
mod json;
mod schema;
mod target;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use keel_alloc::CountingAlloc;

use failure::Failure;

/// Counting allocator over the system allocator: the figures `keel demo`
/// and `keel bench` print (allocations per call, live heap) come from it.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Keel's command: a demo of the framework, and grpcurl's and ghz's jobs
/// for every protocol Keel speaks (baidu_std, gRPC, HTTP/JSON).
#[derive(Debug, Parser)]
#[command(name = "keel", version, after_help = failure::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an echo server and client on loopback; report QPS, latency,
    /// allocations per call, heap use and churn (the default command)
    Demo(demo::DemoArgs),
    /// Call a method with a JSON request and print the response as JSON
    #[command(after_help = CALL_EXAMPLES)]
    Call(call::CallArgs),
    /// List a server's services, or a service's methods
    List(inspect::ListArgs),
    /// Describe a service, method, message or enum
    Describe(inspect::DescribeArgs),
    /// Load a method and report QPS, errors, latency percentiles and allocations
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(bench::BenchArgs),
    /// Print a shell completion script (e.g. `keel completions bash > /etc/bash_completion.d/keel`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const CALL_EXAMPLES: &str = "\
Examples:
  keel call 127.0.0.1:8000 example.EchoService/Echo '{\"message\":\"hi\"}'
  keel call grpc://127.0.0.1:8000 example.EchoService/Echo -d @request.json
  keel call http://127.0.0.1:8000 example.EchoService/Echo -d @- < request.json
  keel call 10.0.0.2:8000 shop.v1.Orders/Get '{\"id\":\"7\"}' --proto shop/v1/orders.proto -I proto
  keel call grpc://127.0.0.1:8000 grpc.testing.TestService/FullDuplexCall -d @- < requests.jsonl";

const BENCH_EXAMPLES: &str = "\
Examples:
  keel bench 127.0.0.1:8000 example.EchoService/Echo -d '{\"message\":\"hi\"}' --concurrency 128 --duration 10s
  keel bench grpc://127.0.0.1:8000 example.EchoService/Echo -d '{\"message\":\"hi\"}' --connections 2 --total 100000
  keel bench 127.0.0.1:8000 example.EchoService/Echo -d '{\"message\":\"hi\"}' --qps 20000 --duration 30s --format json";

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("cannot start a runtime: {e}")))
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Demo(a) => demo::run(&a).map_err(Failure::other),
        Command::Call(a) => runtime()?.block_on(call::run(a)),
        Command::List(a) => runtime()?.block_on(inspect::list(a)),
        Command::Describe(a) => runtime()?.block_on(inspect::describe(a)),
        Command::Bench(a) => bench::run(a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "keel", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Demo(demo::DemoArgs::default()));
    match run(command) {
        Ok(()) => ExitCode::from(failure::exit::OK),
        Err(e) => {
            eprintln!("keel: {e}");
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

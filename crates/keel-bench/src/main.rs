//! `keel-bench`: Keel's benchmark programs.
//!
//! Each benchmark is a subcommand that runs Keel and its peers side by side in
//! this one process and prints a table with ratios (see `STYLE.md`: benchmarks
//! are programs that print a table, never timed assertions in tests).
//!
//! ```text
//! cargo run --release -p keel-bench -- pool            # full run, ~30 s
//! cargo run --release -p keel-bench -- pool --quick    # smoke run, a few s
//! cargo run --release -p keel-bench -- echo            # Keel vs tonic, ~80 s
//! cargo run --release -p keel-bench -- echo --quick    # smoke run, ~15 s
//! cargo run --release -p keel-bench -- scaling         # echo QPS, p99 on 1-8 conns x 1-1,024 in flight; SVG, ~3.5 min
//! cargo run --release -p keel-bench -- scaling --quick # smoke run, ~25 s
//! cargo run --release -p keel-bench -- pingpong        # 1x1 echo vs a raw TCP ping-pong, ~30 s
//! cargo run --release -p keel-bench -- grpc            # Keel vs tonic over gRPC, ~2 min
//! cargo run --release -p keel-bench -- grpc --quick    # smoke run, ~25 s
//! cargo run --release -p keel-bench -- rpcz            # span cost + echo QPS vs sampling, ~35 s
//! cargo run --release -p keel-bench -- lb              # load balancer pick cost, ~5 s
//! cargo run --release -p keel-bench -- cluster         # echo through cluster channels vs a plain one, ~45 s
//! cargo run --release -p keel-bench -- http            # JSON over HTTP vs baidu_std and gRPC; console pages, ~45 s
//! cargo run --release -p keel-bench -- overload        # no limit vs fixed vs adaptive under 10x load, ~20 s
//! cargo run --release -p keel-bench -- rss             # RSS after bursts and QPS per allocator choice, ~2 min
//! cargo run --release -p keel-bench -- soak --minutes 30 # mixed traffic; fails if memory, fds or tasks trend up
//! cargo run --release -p keel-bench -- --help          # list subcommands
//! ```
//!
//! Adding a benchmark: write a module with a `pub fn main(args: &Args) ->
//! ExitCode` whose `Args` derive `clap::Args` (or take the shared
//! [`args::RunArgs`]), and a `//!` doc saying what it measures and why it is
//! fair, then add a variant to [`Command`]. Table printing is shared in
//! [`table`], medians and the machine's load in [`summary`].
//!
//! The global allocator is keel-alloc's [`CountingAlloc`] over
//! `std::alloc::System`: `echo` reports allocations per call and live heap
//! bytes, which only a counting allocator can tell. It adds a few atomic
//! adds to every allocation, for every peer alike. Benchmarks that compare
//! *allocators* must not pay for it: `pool` calls `System` and `MiMalloc`
//! through their `GlobalAlloc` methods directly, so its "system allocator"
//! is exactly glibc's malloc. Under the counting allocator is glibc's
//! malloc, or mimalloc in the server processes `rss` starts to compare
//! allocators ([`alloc`]).

use std::process::ExitCode;

use keel_alloc::CountingAlloc;

mod alloc;
mod args;
mod child;
mod cluster;
mod echo;
mod grpc;
mod http;
mod interop;
mod lb;
mod overload;
mod pingpong;
mod plot;
mod pool;
mod rpcz;
mod rss;
mod scaling;
mod soak;
mod summary;
mod table;
mod volo;

#[global_allocator]
static GLOBAL: CountingAlloc<alloc::Switch> = CountingAlloc::new(alloc::Switch);

/// Keel's benchmark programs: each runs Keel and its peers side by side and
/// prints a table with ratios.
#[derive(Debug, clap::Parser)]
#[command(name = "keel-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every benchmark, in the order `--help` lists them.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// get+put cost of keel-pool vs Box, mimalloc, sharded-slab, lockfree-object-pool, opool
    #[command(long_about = pool::ABOUT)]
    Pool(pool::Args),
    /// echo RPC over loopback: Keel (baidu_std) vs tonic (gRPC), QPS, latency, CPU, allocations
    #[command(long_about = echo::ABOUT)]
    Echo(echo::Args),
    /// echo QPS and p99, Keel vs tonic, on a grid of 1-8 connections x 1-1,024 calls in flight; table and SVG plot
    #[command(long_about = scaling::ABOUT)]
    Scaling(scaling::Args),
    /// 1x1 echo QPS of Keel and tonic as a share of a raw TCP ping-pong's round trips/s
    #[command(long_about = pingpong::ABOUT)]
    Pingpong(args::RunArgs),
    /// gRPC: Keel vs tonic servers and clients, echo QPS, allocations, idle heap, streaming msgs/s
    #[command(long_about = grpc::ABOUT)]
    Grpc(grpc::Args),
    /// gRPC echo: Keel's server and client vs volo-grpc's (a peer program built by scripts/bench-volo.sh)
    #[command(long_about = volo::ABOUT)]
    Volo(volo::Args),
    /// JSON over HTTP/1.1 vs baidu_std and gRPC echo QPS; console page loads with 10,000 connections, 1,000 invokers
    #[command(long_about = http::ABOUT)]
    Http(args::RunArgs),
    /// rpcz span cost vs tracing + Registry, and echo QPS with sampling off / default / 100%
    #[command(long_about = rpcz::ABOUT)]
    Rpcz(args::RunArgs),
    /// ns and allocations per pick of every load balancer (rr, wrr, random, wrandom, la, p2c, c_hash)
    #[command(long_about = lb::ABOUT)]
    Lb(lb::Args),
    /// echo QPS through list:// cluster channels (1 and 3 endpoints) vs a plain host:port channel
    #[command(long_about = cluster::ABOUT)]
    Cluster(args::RunArgs),
    /// a server offered many times what it can do: no limit vs fixed max_concurrency vs adaptive
    #[command(long_about = overload::ABOUT)]
    Overload(overload::Args),
    /// RSS back to the OS after bursts, and echo QPS: glibc, glibc + quiet trim, mimalloc
    #[command(long_about = rss::ABOUT)]
    Rss(args::RunArgs),
    /// mixed traffic for N minutes; fails if live heap, RSS, fds or tasks trend up
    #[command(long_about = soak::ABOUT)]
    Soak(soak::Args),
    /// (internal) holds HTTP connections open for `http`
    #[command(name = http::HOLD_SUBCOMMAND, hide = true)]
    HoldConnections {
        /// The server's address
        addr: String,
        /// How many connections
        n: usize,
    },
    /// (internal) one Keel echo server process for `rss`
    #[command(name = rss::SERVER_SUBCOMMAND, hide = true)]
    RssServer {
        /// `trim` (quiet trim on) or `no-trim`
        #[arg(value_parser = ["trim", "no-trim"])]
        trim: String,
    },
    /// (internal) the raw TCP ping-pong server process for `pingpong`
    #[command(name = pingpong::SERVER_SUBCOMMAND, hide = true)]
    PingpongServer,
    /// (internal) one echo server process for `echo`, `grpc`, `rpcz`
    #[command(name = echo::SERVER_SUBCOMMAND, hide = true)]
    EchoServer {
        /// `keel` or `tonic`
        #[arg(value_parser = ["keel", "tonic"])]
        framework: String,
        /// Keel only: the rpcz sampler's target, spans per second (0 = off)
        rpcz_target: Option<u64>,
        /// Keel only: turn busy-polling off (`ServerBuilder::busy_poll(None)`)
        #[arg(long)]
        no_busy_poll: bool,
    },
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    match &cli.command {
        Command::Pool(a) => pool::main(a),
        Command::Echo(a) => echo::main(a),
        Command::Scaling(a) => scaling::main(a),
        Command::Pingpong(a) => pingpong::main(a),
        Command::Grpc(a) => grpc::main(a),
        Command::Volo(a) => volo::main(a),
        Command::Http(a) => http::main(a),
        Command::Rpcz(a) => rpcz::main(a),
        Command::Lb(a) => lb::main(a),
        Command::Cluster(a) => cluster::main(a),
        Command::Overload(a) => overload::main(a),
        Command::Rss(a) => rss::main(a),
        Command::Soak(a) => soak::main(a),
        Command::PingpongServer => pingpong::server_main(),
        Command::RssServer { trim } => rss::server_main(trim),
        Command::HoldConnections { addr, n } => http::hold_main(addr, *n),
        Command::EchoServer {
            framework,
            rpcz_target,
            no_busy_poll,
        } => echo::server_main(framework, *rpcz_target, !no_busy_poll),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}

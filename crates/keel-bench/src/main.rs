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
//! cargo run --release -p keel-bench -- grpc            # Keel vs tonic over gRPC, ~2 min
//! cargo run --release -p keel-bench -- grpc --quick    # smoke run, ~25 s
//! cargo run --release -p keel-bench -- rpcz            # span cost + echo QPS vs sampling, ~35 s
//! cargo run --release -p keel-bench -- lb              # load balancer pick cost, ~5 s
//! cargo run --release -p keel-bench -- cluster         # echo through cluster channels vs a plain one, ~45 s
//! cargo run --release -p keel-bench -- http            # JSON over HTTP vs baidu_std and gRPC; console pages, ~45 s
//! cargo run --release -p keel-bench -- --help          # list subcommands
//! ```
//!
//! Adding a benchmark: write a module with a `pub fn main(args: &[String]) ->
//! ExitCode` (and a `//!` doc saying what it measures and why it is fair),
//! then add a line to [`SUBCOMMANDS`]. Table printing is shared in [`table`],
//! medians and the machine's load in [`summary`].
//!
//! The global allocator is keel-alloc's [`CountingAlloc`] over
//! `std::alloc::System`: `echo` reports allocations per call and live heap
//! bytes, which only a counting allocator can tell. It adds a few atomic
//! adds to every allocation, for every peer alike. Benchmarks that compare
//! *allocators* must not pay for it: `pool` calls `System` and `MiMalloc`
//! through their `GlobalAlloc` methods directly, so its "system allocator"
//! is exactly glibc's malloc.

use std::process::ExitCode;

use keel_alloc::CountingAlloc;

mod args;
mod cluster;
mod echo;
mod grpc;
mod http;
mod interop;
mod lb;
mod pool;
mod rpcz;
mod summary;
mod table;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::system();

/// Exit code for a command line that could not be understood.
const USAGE_ERROR: u8 = 2;

/// One benchmark program.
struct Subcommand {
    /// What the user types.
    name: &'static str,
    /// One line for `--help`.
    summary: &'static str,
    /// Runs it with the arguments after the subcommand's name.
    run: fn(&[String]) -> ExitCode,
    /// Whether `--help` lists it (internal subcommands, such as the server
    /// processes a benchmark starts, are not listed).
    listed: bool,
}

/// Every benchmark, in the order `--help` lists them.
const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "pool",
        summary: "get+put cost of keel-pool vs Box, mimalloc, sharded-slab, lockfree-object-pool, opool",
        run: pool::main,
        listed: true,
    },
    Subcommand {
        name: "echo",
        summary: "echo RPC over loopback: Keel (baidu_std) vs tonic (gRPC), QPS, latency, CPU, allocations",
        run: echo::main,
        listed: true,
    },
    Subcommand {
        name: "grpc",
        summary: "gRPC: Keel vs tonic servers and clients, echo QPS, allocations, idle heap, streaming msgs/s",
        run: grpc::main,
        listed: true,
    },
    Subcommand {
        name: "http",
        summary: "JSON over HTTP/1.1 vs baidu_std and gRPC echo QPS; console page loads with 10,000 connections, 1,000 invokers",
        run: http::main,
        listed: true,
    },
    Subcommand {
        name: "rpcz",
        summary: "rpcz span cost vs tracing + Registry, and echo QPS with sampling off / default / 100%",
        run: rpcz::main,
        listed: true,
    },
    Subcommand {
        name: "lb",
        summary: "ns and allocations per pick of every load balancer (rr, wrr, random, wrandom, la, p2c, c_hash)",
        run: lb::main,
        listed: true,
    },
    Subcommand {
        name: "cluster",
        summary: "echo QPS through list:// cluster channels (1 and 3 endpoints) vs a plain host:port channel",
        run: cluster::main,
        listed: true,
    },
    Subcommand {
        name: http::HOLD_SUBCOMMAND,
        summary: "(internal) holds HTTP connections open for `http`",
        run: http::hold_main,
        listed: false,
    },
    Subcommand {
        name: echo::SERVER_SUBCOMMAND,
        summary: "(internal) one echo server process for `echo`",
        run: echo::server_main,
        listed: false,
    },
];

fn usage() -> String {
    let mut s = String::from(
        "usage: keel-bench <subcommand> [options]\n       keel-bench <subcommand> --help\n\nsubcommands:\n",
    );
    for c in SUBCOMMANDS.iter().filter(|c| c.listed) {
        s.push_str(&format!("  {:<8} {}\n", c.name, c.summary));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(first) = args.first() else {
        eprint!("keel-bench: no subcommand given\n\n{}", usage());
        return ExitCode::from(USAGE_ERROR);
    };
    if matches!(first.as_str(), "-h" | "--help" | "help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    match SUBCOMMANDS.iter().find(|c| c.name == first) {
        Some(c) => (c.run)(&args[1..]),
        None => {
            eprint!("keel-bench: unknown subcommand `{first}`\n\n{}", usage());
            ExitCode::from(USAGE_ERROR)
        }
    }
}

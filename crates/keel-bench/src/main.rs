//! `keel-bench`: Keel's benchmark programs.
//!
//! Each benchmark is a subcommand that runs Keel and its peers side by side in
//! this one process and prints a table with ratios (see `STYLE.md`: benchmarks
//! are programs that print a table, never timed assertions in tests).
//!
//! ```text
//! cargo run --release -p keel-bench -- pool            # full run, ~30 s
//! cargo run --release -p keel-bench -- pool --quick    # smoke run, a few s
//! cargo run --release -p keel-bench -- --help          # list subcommands
//! ```
//!
//! Adding a benchmark: write a module with a `pub fn main(args: &[String]) ->
//! ExitCode` (and a `//!` doc saying what it measures and why it is fair),
//! then add a line to [`SUBCOMMANDS`]. Table printing is shared in [`table`].
//!
//! The global allocator is `std::alloc::System`, named explicitly so that the
//! "system allocator" every benchmark compares against is exactly that and
//! not a counting or replacement allocator slipped in later.

use std::process::ExitCode;

mod pool;
mod table;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

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
}

/// Every benchmark, in the order `--help` lists them.
const SUBCOMMANDS: &[Subcommand] = &[Subcommand {
    name: "pool",
    summary: "get+put cost of keel-pool vs Box, mimalloc, sharded-slab, lockfree-object-pool, opool",
    run: pool::main,
}];

fn usage() -> String {
    let mut s = String::from(
        "usage: keel-bench <subcommand> [options]\n       keel-bench <subcommand> --help\n\nsubcommands:\n",
    );
    for c in SUBCOMMANDS {
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

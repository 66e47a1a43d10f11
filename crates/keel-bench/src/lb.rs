//! `keel-bench lb`: what a load balancer's pick costs.
//!
//! # What is measured
//!
//! For each of Keel's seven balancers (`keel_cluster::LoadBalancer::ALL`),
//! over 10 and over 1,000 servers:
//!
//! - **ns per pick, one thread**: `Picker::pick` in a loop, every server
//!   usable, nothing excluded, a different `hash_key` each call.
//! - **ns per pick, two threads**: both threads pick from the same picker
//!   at once (the counters and the tree are shared); wall time of the
//!   slower thread / picks per thread, so contention shows as a higher
//!   figure than one thread's.
//! - **ns per call**: what a call adds around its pick in one thread: the
//!   pick, in flight + 1, `feedback`, in flight − 1, `feedback` (only least
//!   active does work in `feedback`).
//! - **µs per build**: `Picker::new` for the server set, paid once each
//!   time the set changes (precomputing the cycle, tree or ring).
//! - **allocations per pick**: this thread's allocations through the
//!   counting global allocator (`keel_alloc::thread_stats`) over the
//!   one-thread run; Keel promises 0.
//!
//! Each figure is the median over rounds; balancers rotate their order
//! every round.
//!
//! # Why it is fair
//!
//! There is no external peer: balancers live inside RPC frameworks, not in
//! crates of their own. The baseline is round robin (one atomic add and a
//! modulo), the cheapest balancer there is; the ratio columns say what
//! each balancer costs relative to it under identical conditions (same
//! servers, same loop, same thread). The servers have assorted weights
//! (1 to 4), loads and latencies, so least active and power of two
//! choices compare real numbers, and the picker is built before timing
//! (its cost is paid once per server set).

use std::fmt::Write as _;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use keel_cluster::balance::{LoadBalancer, Picker, ServerState, endpoint_hash};

use crate::args;
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// Server counts measured.
const SIZES: [usize; 2] = [10, 1_000];

/// Picks per run, full and `--quick`, and rounds.
const PICKS: u64 = 1_000_000;
const QUICK_PICKS: u64 = 100_000;
const DEFAULT_ROUNDS: usize = 5;
const QUICK_ROUNDS: usize = 3;

/// What `keel-bench lb --help` says about the subcommand.
pub const ABOUT: &str = "\
ns per pick of every Keel load balancer (rr, wrr, random, wrandom, la, p2c,
c_hash) over 10 and 1,000 servers: one thread, two threads sharing the
picker, and a whole call's balancer work (pick + 2 feedbacks); allocations
per pick. Ratios against round robin. Medians over rounds (a full run takes
~5 s).";

/// The flags of `keel-bench lb`.
#[derive(Debug, Clone, PartialEq, Default, clap::Args)]
pub struct Args {
    /// Rounds, balancers rotating (default 5)
    #[arg(long, value_name = "R", value_parser = args::rounds)]
    rounds: Option<usize>,
    /// 100,000 picks per run and 3 rounds: a smoke run of < 1 s
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Options {
    picks: u64,
    rounds: usize,
}

impl Options {
    fn from_args(a: &Args) -> Options {
        let (picks, default_rounds) = if a.quick {
            (QUICK_PICKS, QUICK_ROUNDS)
        } else {
            (PICKS, DEFAULT_ROUNDS)
        };
        Options {
            picks,
            rounds: a.rounds.unwrap_or(default_rounds),
        }
    }
}

/// A server as the balancers see it: what keel's invoker exposes.
type Server = ServerState;

/// `n` servers with assorted weights (1..=4), loads (0..7 in flight) and
/// latencies (200..1,500 µs).
fn servers(n: usize) -> Vec<Server> {
    (0..n)
        .map(|i| Server {
            weight: 1 + (i * 7 % 4) as u32,
            usable: AtomicBool::new(true),
            in_flight: AtomicU32::new((i * 5 % 7) as u32),
            latency_us: AtomicU64::new(200 + (i * 37 % 1_300) as u64),
            hash: endpoint_hash(&format!("10.2.{}.{}:8000", i / 256, i % 256)),
        })
        .collect()
}

/// A call's hash key: spread over the ring like real request codes.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `picks` picks in this thread: (ns per pick, allocations per pick).
fn one_thread(picker: &Picker, s: &[Server], picks: u64) -> (f64, f64) {
    let allocs = keel_alloc::thread_stats().allocs;
    let t = Instant::now();
    for i in 0..picks {
        black_box(picker.pick(s, key(i), |_| false));
    }
    let ns = t.elapsed().as_nanos() as f64 / picks as f64;
    let allocs = keel_alloc::thread_stats().allocs - allocs;
    (ns, allocs as f64 / picks as f64)
}

/// `picks` picks in each of two threads at once: wall time of the slower
/// thread per pick.
fn two_threads(picker: &Picker, s: &[Server], picks: u64) -> f64 {
    let start = Barrier::new(2);
    let elapsed: Vec<f64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let begun = Instant::now();
                    for i in 0..picks {
                        black_box(picker.pick(s, key(i + t * picks), |_| false));
                    }
                    begun.elapsed().as_nanos() as f64
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a picking thread does not panic"))
            .collect()
    });
    elapsed.into_iter().fold(0.0, f64::max) / picks as f64
}

/// `calls` calls' balancer work in this thread: ns per call.
fn calls(picker: &Picker, s: &[Server], calls: u64) -> f64 {
    let t = Instant::now();
    for i in 0..calls {
        if let Some(j) = picker.pick(s, key(i), |_| false) {
            s[j].in_flight.fetch_add(1, Relaxed);
            picker.feedback(s, j);
            s[j].in_flight.fetch_sub(1, Relaxed);
            picker.feedback(s, j);
        }
    }
    t.elapsed().as_nanos() as f64 / calls as f64
}

/// One cell's samples.
#[derive(Default)]
struct Samples {
    one: Vec<f64>,
    allocs: Vec<f64>,
    two: Vec<f64>,
    call: Vec<f64>,
    build: Vec<f64>,
}

/// Medians of one cell.
struct Cell {
    one: f64,
    allocs: f64,
    two: f64,
    call: f64,
    build: f64,
}

fn med(xs: &[f64]) -> f64 {
    median(xs).unwrap_or(f64::NAN)
}

/// Every balancer at `n` servers: cells in `LoadBalancer::ALL` order.
fn measure(opts: &Options, n: usize) -> Vec<Cell> {
    let s = servers(n);
    let pickers: Vec<Picker> = LoadBalancer::ALL
        .iter()
        .map(|&kind| Picker::new(kind, &s))
        .collect();
    // Warm-up: caches, the per-thread generators, the branch predictors.
    for p in &pickers {
        one_thread(p, &s, opts.picks / 10);
    }
    let k = pickers.len();
    let mut samples: Vec<Samples> = (0..k).map(|_| Samples::default()).collect();
    for round in 0..opts.rounds {
        for r in 0..k {
            let i = (round + r) % k;
            eprint!(
                "\r  {n} servers, round {}/{}  {:<8}",
                round + 1,
                opts.rounds,
                LoadBalancer::ALL[i].name()
            );
            let (ns, allocs) = one_thread(&pickers[i], &s, opts.picks);
            samples[i].one.push(ns);
            samples[i].allocs.push(allocs);
            samples[i]
                .two
                .push(two_threads(&pickers[i], &s, opts.picks));
            samples[i].call.push(calls(&pickers[i], &s, opts.picks));
            let t = Instant::now();
            black_box(Picker::new(LoadBalancer::ALL[i], &s));
            samples[i].build.push(t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    eprintln!();
    samples
        .iter()
        .map(|x| Cell {
            one: med(&x.one),
            allocs: med(&x.allocs),
            two: med(&x.two),
            call: med(&x.call),
            build: med(&x.build),
        })
        .collect()
}

/// Entry point of `keel-bench lb`.
pub fn main(a: &Args) -> ExitCode {
    args::main("lb", &Options::from_args(a), run)
}

fn run(opts: &Options) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    eprintln!(
        "keel-bench lb: {} rounds x 7 balancers x {} picks, at {SIZES:?} servers",
        opts.rounds, opts.picks
    );
    let results: Vec<(usize, Vec<Cell>)> = SIZES.iter().map(|&n| (n, measure(opts, n))).collect();
    let load_end = load_average();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench lb: keel-cluster {} load balancers, Picker::pick",
        env!("CARGO_PKG_VERSION")
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&load_start, &load_end),
        started.elapsed().as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "  medians of {} rounds x {} picks per cell, balancers rotating; servers of weights 1-4,",
        opts.rounds, opts.picks
    );
    let _ = writeln!(
        out,
        "  0-6 in flight, 200-1,499 us latency, all usable; x rr = ns / round robin's ns"
    );
    out.push('\n');
    let mut t = Table::new()
        .column("servers", Align::Right)
        .column("balancer", Align::Left)
        .column_after_rule("ns/pick", Align::Right)
        .column("x rr", Align::Right)
        .column_after_rule("ns/pick", Align::Right)
        .column("x rr", Align::Right)
        .column_after_rule("ns/call", Align::Right)
        .column("x rr", Align::Right)
        .column_after_rule("allocs/pick", Align::Right)
        .column("us/build", Align::Right)
        .group(2, 3, "1 thread")
        .group(4, 5, "2 threads")
        .group(6, 7, "pick+2 fb");
    for (n, cells) in &results {
        let rr = &cells[0];
        for (kind, c) in LoadBalancer::ALL.iter().zip(cells) {
            t.row(vec![
                format!("{n}"),
                kind.name().to_string(),
                format!("{:.1}", c.one),
                format!("{:.2}x", c.one / rr.one),
                format!("{:.1}", c.two),
                format!("{:.2}x", c.two / rr.two),
                format!("{:.1}", c.call),
                format!("{:.2}x", c.call / rr.call),
                format!("{:.2}", c.allocs),
                format!("{:.1}", c.build),
            ]);
        }
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "  2 threads: both pick from one picker at once; ns = slower thread's wall time / its picks.\n  \
         pick+2 fb: pick, in flight +1, feedback, in flight -1, feedback (only la's feedback works).\n  \
         us/build: Picker::new for the set, once per change of the server set.\n",
    );
    let allocating: Vec<String> = results
        .iter()
        .flat_map(|(n, cells)| {
            LoadBalancer::ALL
                .iter()
                .zip(cells)
                .filter(|(_, c)| c.allocs > 0.0)
                .map(move |(k, c)| format!("{k} at {n}: {:.3}", c.allocs))
        })
        .collect();
    let _ = if allocating.is_empty() {
        writeln!(out, "  met      0 allocations per pick, every balancer")
    } else {
        writeln!(
            out,
            "  NOT met  0 allocations per pick: {}",
            allocating.join(", ")
        )
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(line: &str) -> Result<Options, clap::Error> {
        args::parse::<Args>(line).map(|a| Options::from_args(&a))
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            options("").expect("parses"),
            Options {
                picks: PICKS,
                rounds: DEFAULT_ROUNDS
            }
        );
        assert_eq!(
            options("--quick --rounds 2").expect("parses"),
            Options {
                picks: QUICK_PICKS,
                rounds: 2
            }
        );
        assert!(options("--bogus").is_err());
        assert!(options("--rounds 0").is_err());
    }

    #[test]
    fn a_tiny_run_reports_every_balancer() {
        let report = run(&Options {
            picks: 200,
            rounds: 1,
        })
        .expect("runs");
        for kind in LoadBalancer::ALL {
            assert!(report.contains(kind.name()), "{report}");
        }
        assert!(report.contains("met      0 allocations"), "{report}");
    }
}

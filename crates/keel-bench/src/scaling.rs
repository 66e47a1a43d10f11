//! `keel-bench scaling`: echo QPS and p99 latency of Keel (baidu_std) and
//! tonic (gRPC) over a grid of connections x calls in flight, as a table
//! and as a plot, so that a regression in any cell shows.
//!
//! # What is measured
//!
//! The grid is 1, 2, 4 and 8 connections by 1, 4, 16, 64, 256 and 1,024
//! calls in flight in all, spread evenly over the connections (a cell needs
//! at least one call per connection, so 8 connections start at 16). Each
//! cell is one of `keel-bench echo`'s scenarios, run by the very same code
//! ([`echo::run_scenario`]): each framework's server in its own process,
//! its own generated client here, the 16-byte echo message, QPS as calls
//! over the wall time and p99 from the client's latency histogram.
//!
//! The table has QPS, keel/tonic and p99 per cell; the plot (SVG, written
//! under the target directory) has QPS and p99 against calls in flight on a
//! log2 axis, a line per framework and connection count.
//!
//! # Why it is fair
//!
//! Everything `keel-bench echo` says about fairness holds, as it is the same
//! code: same messages and work, same runtimes (2 workers per process),
//! loopback with `TCP_NODELAY`, each framework as shipped. Each cell is
//! warmed up on fresh connections, then runs alternate keel, tonic, keel,
//! tonic, ... for `--rounds` rounds and every figure is a median. Cells
//! whose QPS spreads more than 10% across rounds are listed, with the load
//! average before and after, so that a noisy cell is not read as a
//! regression.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::args;
use crate::echo::{self, Framework, Scenario, ScenarioResult, ServerProcess};
use crate::plot::{self, Panel, Scale, Series};
use crate::summary::load_average;
use crate::table::{Align, Table};

/// Connections of the grid.
const CONNECTIONS: [u64; 4] = [1, 2, 4, 8];
/// Calls in flight (in all, over the connections) of the grid.
const IN_FLIGHT: [u64; 6] = [1, 4, 16, 64, 256, 1024];
/// Seconds per run in a full run and with `--quick`.
const DEFAULT_SECONDS: f64 = 1.5;
const QUICK_SECONDS: f64 = 0.4;
/// Rounds in a full run; `--quick` makes it one unless `--rounds` is given.
const DEFAULT_ROUNDS: usize = 3;
/// Bounds on the flags' values: connections and calls in flight.
const MAX_CONNECTIONS: u64 = 64;
const MAX_IN_FLIGHT: u64 = 4096;
/// Cells whose QPS across rounds spreads more than this are listed.
const NOISY_SPREAD: f64 = 0.10;
/// One colour per connection count (then round again).
const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// What `keel-bench scaling --help` says about the subcommand.
pub const ABOUT: &str = "\
brpc's echo RPC (16-byte message) on loopback, Keel over baidu_std and tonic
over gRPC, on a grid: 1, 2, 4, 8 connections x 1, 4, 16, 64, 256, 1,024 calls
in flight in all (spread evenly; at least one per connection). Prints QPS,
keel/tonic and p99 per cell, and writes a plot of QPS and p99 against calls in
flight to target/keel-bench/scaling.svg (under $CARGO_TARGET_DIR when set).

Defaults: --seconds 1.5, --rounds 3 (runs of each framework per cell,
alternating; a full run takes ~3.5 min); --quick: 0.4 s runs, one round, ~25 s.";

/// The flags of `keel-bench scaling`.
#[derive(Debug, Clone, PartialEq, Default, clap::Args)]
pub struct Args {
    #[command(flatten)]
    runs: args::RunArgs,
    /// Connections, e.g. `1,8` (default 1,2,4,8; each in 1..=64)
    #[arg(long, value_name = "LIST", value_parser = connection_list)]
    connections: Option<Counts>,
    /// Calls in flight in all, e.g. `1,64` (default 1,4,16,64,256,1024;
    /// each in 1..=4096)
    #[arg(long, value_name = "LIST", value_parser = in_flight_list)]
    in_flight: Option<Counts>,
    /// Where to write the plot (default: <target dir>/keel-bench/scaling.svg)
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
}

/// A list of counts given as one flag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(Vec<u64>);

fn counts(list: &str, max: u64) -> Result<Counts, String> {
    let mut v = Vec::new();
    for n in list.split(',') {
        match args::positive(n)? {
            n if n <= max => v.push(n),
            _ => return Err(format!("`{n}` is above {max}")),
        }
    }
    v.sort_unstable();
    v.dedup();
    Ok(Counts(v))
}

fn connection_list(list: &str) -> Result<Counts, String> {
    counts(list, MAX_CONNECTIONS)
}

fn in_flight_list(list: &str) -> Result<Counts, String> {
    counts(list, MAX_IN_FLIGHT)
}

#[derive(Debug, Clone)]
struct Options {
    runs: args::Runs,
    cells: Vec<Scenario>,
    svg: PathBuf,
}

impl Options {
    fn from_args(a: &Args) -> Options {
        let defaults = args::RunDefaults {
            seconds: DEFAULT_SECONDS,
            quick_seconds: QUICK_SECONDS,
            rounds: if a.runs.quick { 1 } else { DEFAULT_ROUNDS },
        };
        let connections = a.connections.clone().map_or(CONNECTIONS.to_vec(), |c| c.0);
        let in_flight = a.in_flight.clone().map_or(IN_FLIGHT.to_vec(), |c| c.0);
        Options {
            runs: a.runs.runs(defaults),
            cells: cells(&connections, &in_flight),
            svg: a
                .svg
                .clone()
                .unwrap_or_else(|| target_dir().join("keel-bench").join("scaling.svg")),
        }
    }
}

/// The grid: every connection count with every in-flight count it can
/// spread evenly (at least one call per connection, the same on each).
fn cells(connections: &[u64], in_flight: &[u64]) -> Vec<Scenario> {
    let mut cells = Vec::new();
    for &c in connections {
        for &n in in_flight {
            if n >= c && n % c == 0 {
                cells.push(Scenario {
                    connections: c as usize,
                    per_connection: (n / c) as usize,
                });
            }
        }
    }
    cells
}

/// `$CARGO_TARGET_DIR` if set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap_or(Path::new("."))
            .join("target"),
    }
}

/// Entry point of `keel-bench scaling`.
pub fn main(a: &Args) -> ExitCode {
    args::main("scaling", &Options::from_args(a), run)
}

/// Everything `run` found, for the report.
struct Results {
    cells: Vec<ScenarioResult>,
    load_start: String,
    load_end: String,
    elapsed: Duration,
}

fn run(opts: &Options) -> Result<String, String> {
    if opts.cells.is_empty() {
        return Err("no cell: every in-flight count is below every connection count".into());
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    let rt = echo::runtime("client")?;
    let mut servers = [
        ServerProcess::start(Framework::Keel, None)?,
        ServerProcess::start(Framework::Tonic, None)?,
    ];
    eprintln!(
        "keel-bench scaling: {} cells x {} rounds x 2 frameworks x {:.1} s",
        opts.cells.len(),
        opts.runs.rounds,
        opts.runs.seconds
    );
    let mut cells = Vec::with_capacity(opts.cells.len());
    for &cell in &opts.cells {
        cells.push(echo::run_scenario(
            &rt,
            &mut servers,
            cell,
            &opts.runs,
            ticks_per_us,
        )?);
    }
    eprintln!();
    drop(servers);
    let results = Results {
        cells,
        load_start,
        load_end: load_average(),
        elapsed: started.elapsed(),
    };
    let svg = chart(opts, &results);
    if let Some(dir) = opts.svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&opts.svg, svg)
        .map_err(|e| format!("cannot write {}: {e}", opts.svg.display()))?;
    Ok(report(opts, cores, &results))
}

/// Calls in flight in all, in a cell.
fn in_flight(s: &Scenario) -> usize {
    s.connections * s.per_connection
}

fn report(opts: &Options, cores: usize, r: &Results) -> String {
    use Framework::{Keel, Tonic};
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench scaling: brpc's echo (16-byte message) on 127.0.0.1, keel {} (baidu_std) vs {} (gRPC)",
        env!("CARGO_PKG_VERSION"),
        crate::summary::TONIC
    );
    crate::summary::runtimes_line(&mut out);
    let _ = writeln!(
        out,
        "  calls in flight in all, spread evenly over the connections; medians of {} rounds of {:.1} s per framework, alternating",
        opts.runs.rounds, opts.runs.seconds
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&r.load_start, &r.load_end),
        r.elapsed.as_secs_f64(),
    );
    out.push('\n');
    let int = crate::summary::count_cell;
    let mut t = Table::new()
        .column("conns", Align::Right)
        .column("in flight", Align::Right)
        .column("per conn", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel/tonic", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel/tonic", Align::Right)
        .group(3, 5, "QPS")
        .group(6, 8, "p99 us");
    for c in &r.cells {
        let (kq, tq) = (c.median(Keel, |x| x.qps), c.median(Tonic, |x| x.qps));
        let (kp, tp) = (c.median(Keel, |x| x.p99_us), c.median(Tonic, |x| x.p99_us));
        t.row(vec![
            c.scenario.connections.to_string(),
            echo::group_thousands(in_flight(&c.scenario) as u64),
            c.scenario.per_connection.to_string(),
            int(kq),
            int(tq),
            format!("{:.2}x", kq / tq),
            int(kp),
            int(tp),
            format!("{:.2}x", kp / tp),
        ]);
    }
    let _ = write!(out, "{t}");
    let mut noisy = Vec::new();
    for c in &r.cells {
        for f in [Keel, Tonic] {
            let spread = c.qps_spread(f);
            if spread > NOISY_SPREAD {
                noisy.push(format!(
                    "{} {} {:.0}%",
                    c.scenario.name(),
                    if f == Keel { "keel" } else { "tonic" },
                    spread * 100.0
                ));
            }
        }
    }
    out.push('\n');
    crate::summary::spread_line(&mut out, "QPS", &noisy, r.cells.len() * 2, NOISY_SPREAD);
    let _ = writeln!(out, "plot: {}", opts.svg.display());
    out
}

/// The plot: QPS (linear) and p99 (log10) against calls in flight (log2),
/// a colour per connection count, keel solid and tonic dashed.
fn chart(opts: &Options, r: &Results) -> String {
    let mut connections: Vec<usize> = r.cells.iter().map(|c| c.scenario.connections).collect();
    connections.dedup();
    let series = |field: fn(&echo::Sample) -> f64| {
        let mut series = Vec::new();
        for (i, &conns) in connections.iter().enumerate() {
            for (f, name) in [(Framework::Keel, "keel"), (Framework::Tonic, "tonic")] {
                let points = r
                    .cells
                    .iter()
                    .filter(|c| c.scenario.connections == conns)
                    .map(|c| (in_flight(&c.scenario) as f64, c.median(f, field)))
                    .collect();
                series.push(Series {
                    name: format!(
                        "{name}, {conns} connection{}",
                        if conns == 1 { "" } else { "s" }
                    ),
                    color: COLORS[i % COLORS.len()],
                    dashed: f == Framework::Tonic,
                    points,
                });
            }
        }
        series
    };
    let x_label = "calls in flight (in all, spread over the connections)".to_string();
    let panels = [
        Panel {
            title: "QPS".into(),
            x_label: x_label.clone(),
            y_label: "calls per second".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Linear,
            series: series(|x| x.qps),
        },
        Panel {
            title: "p99 latency".into(),
            x_label,
            y_label: "p99 latency, us (log scale)".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Log10,
            series: series(|x| x.p99_us),
        },
    ];
    let title = format!(
        "keel-bench scaling: echo on 127.0.0.1, keel {} (baidu_std, solid) vs {} (gRPC, dashed); medians of {} x {:.1} s; load {} / {}",
        env!("CARGO_PKG_VERSION"),
        crate::summary::TONIC,
        opts.runs.rounds,
        opts.runs.seconds,
        r.load_start,
        r.load_end
    );
    plot::figure(&title, &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_spreads_calls_evenly_and_skips_cells_below_one_per_connection() {
        let grid = cells(&CONNECTIONS, &IN_FLIGHT);
        let names: Vec<String> = grid.iter().map(Scenario::name).collect();
        assert_eq!(grid.len(), 6 + 5 + 5 + 4);
        assert_eq!(names[0], "1x1");
        assert!(names.contains(&"8x128".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("4x") && n.ends_with("x0"))
        );
        assert!(grid.iter().all(|s| s.per_connection >= 1));
        // 3 connections cannot share 4 calls evenly.
        assert!(cells(&[3], &[4]).is_empty());
    }

    #[test]
    fn options() {
        let parse = |s: &str| args::parse::<Args>(s).map(|a| Options::from_args(&a));
        let full = parse("").expect("parses");
        assert_eq!(
            (full.runs.seconds, full.runs.rounds, full.cells.len()),
            (DEFAULT_SECONDS, DEFAULT_ROUNDS, 20)
        );
        assert!(full.svg.ends_with("keel-bench/scaling.svg"));
        let quick = parse("--quick").expect("parses");
        assert_eq!((quick.runs.seconds, quick.runs.rounds), (QUICK_SECONDS, 1));
        let o = parse("--quick --rounds 2 --connections 2,1 --in-flight 4 --svg x.svg")
            .expect("parses");
        assert_eq!(o.runs.rounds, 2);
        let names: Vec<String> = o.cells.iter().map(Scenario::name).collect();
        assert_eq!(names, ["1x4", "2x2"]);
        assert_eq!(o.svg, PathBuf::from("x.svg"));
        for bad in ["--connections 0", "--connections 65", "--in-flight 1,x"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains("--"), "{err}");
        }
    }
}

//! `keel-bench volo`: brpc's echo over gRPC, Keel against volo-grpc
//! (CloudWeGo's Rust RPC framework), in one run.
//!
//! # What is measured
//!
//! The four scenarios of `keel-bench grpc` (1x1, 1x16, 1x128 and 2x64
//! connections x calls in flight), for two pairs:
//!
//! - **keel**: Keel's server process called by Keel's generated client on a
//!   `grpc://` channel in this process, as in `keel-bench grpc`;
//! - **volo**: volo-grpc's server process called by volo-grpc's generated
//!   client in a process of its own (`peers/volo`, see there), one client
//!   (one HTTP/2 connection) per connection.
//!
//! ```text
//!   keel-bench volo
//!     ├─ keel client ──grpc──► server process (Keel)    `keel-bench echo-server keel`
//!     └─ tells the volo client process to run:
//!          keel-volo-peer client ──grpc──► keel-volo-peer server
//! ```
//!
//! Per run: QPS, p50/p99 latency, server and client CPU per call (whole
//! processes, from /proc), and allocations per call on both sides (every
//! process counts with keel-alloc's allocator).
//!
//! # Why it is fair
//!
//! Every server and client runs on a 2-worker tokio runtime, sends the same
//! 16-byte message with the framework's own generated code and defaults,
//! and the echo handlers return the request's message. Runs alternate
//! keel, volo, keel, ... for `--rounds` rounds and every figure is the
//! median of its rounds. The volo client measures its own latencies (16
//! buckets per power of two; Keel's histogram is finer), and keel-bench
//! reads its CPU before and after each run, so its start-up and connecting
//! are not counted.
//!
//! # Why volo is a program of its own
//!
//! volo-grpc, volo-build and what they pull in are about 270 crates and
//! 3 to 6 minutes of release build on 2 cores. In a program of their own,
//! outside the workspace, the tests and `keel-bench`'s other benchmarks
//! never build them; `scripts/bench-volo.sh` builds the peer and runs this.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::args;
use crate::child::ChildServer;
use crate::echo::{self, Clients, Framework, SCENARIOS, Sample, Scenario, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

const DEFAULT_SECONDS: f64 = 2.0;
const QUICK_SECONDS: f64 = 0.3;
const DEFAULT_ROUNDS: usize = 3;
/// Where `scripts/bench-volo.sh` builds the peer.
const DEFAULT_PEER: &str = "target/volo-peer/release/keel-volo-peer";
/// The issue's target at 1x128 (printed as a fact, never asserted).
const TARGET_RATIO_AT_128: f64 = 1.5;

/// What `keel-bench volo --help` says about the subcommand.
pub const ABOUT: &str = "\
brpc's echo RPC (16-byte message) over gRPC on loopback: Keel's server and
client against volo-grpc's server and client (peers/volo, a program of its
own, built by scripts/bench-volo.sh), each server in its own process.
Scenarios: 1 connection x 1, 16, 128 calls in flight, and 2 connections x 64.
Prints medians of QPS, p50/p99 latency, CPU and allocations per call on each
side, and keel/volo.

Defaults: --seconds 2, --rounds 3 (a full run takes ~1 min); --quick: 0.3 s
runs.";

/// The flags of `keel-bench volo`.
#[derive(Debug, Clone, PartialEq, Default, clap::Args)]
pub struct Args {
    #[command(flatten)]
    runs: args::RunArgs,
    /// The volo-grpc peer program
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PEER)]
    peer: PathBuf,
}

struct Options {
    runs: args::Runs,
    peer: PathBuf,
}

/// Entry point of `keel-bench volo`.
pub fn main(a: &Args) -> ExitCode {
    let runs = a.runs.runs(args::RunDefaults {
        seconds: DEFAULT_SECONDS,
        quick_seconds: QUICK_SECONDS,
        rounds: DEFAULT_ROUNDS,
    });
    let opts = Options {
        runs,
        peer: a.peer.clone(),
    };
    args::main("volo", &opts, run)
}

/// volo-grpc's client process for one scenario.
struct VoloClient {
    process: ChildServer,
}

impl VoloClient {
    fn start(peer: &std::path::Path, server: &ChildServer, s: Scenario) -> Result<Self, String> {
        let args = [
            "client".to_string(),
            server.addr.to_string(),
            s.connections.to_string(),
            s.per_connection.to_string(),
        ];
        let process = ChildServer::spawn("volo client", peer, &args)?;
        let line = process.next_line(crate::child::REPLY_WAIT)?;
        if line != "ready" {
            return Err(format!("the volo client said {line:?}"));
        }
        Ok(VoloClient { process })
    }

    /// One closed-loop run of `length`: calls, errors, elapsed, p50, p99
    /// (us), allocations.
    fn run(&mut self, length: Duration) -> Result<VoloRun, String> {
        let wait = length + echo::RUN_GRACE;
        let line = self
            .process
            .ask_within(&format!("run {}", length.as_millis()), wait)?;
        parse_run(&line).ok_or_else(|| format!("the volo client said {line:?}"))
    }
}

#[derive(Debug, PartialEq)]
struct VoloRun {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
    allocs: u64,
}

/// `done CALLS ERRORS NANOS P50_US P99_US ALLOCS`, as the peer prints it.
fn parse_run(line: &str) -> Option<VoloRun> {
    let mut f = line.strip_prefix("done ")?.split_whitespace();
    let mut next = || f.next()?.parse::<u64>().ok();
    Some(VoloRun {
        calls: next()?,
        errors: next()?,
        elapsed: Duration::from_nanos(next()?),
        p50_us: next()?,
        p99_us: next()?,
        allocs: next()?,
    })
}

/// The volo server's allocation count now.
fn volo_allocs(server: &mut ChildServer) -> Result<u64, String> {
    let line = server.ask("stats")?;
    echo::parse_counters(&line)
        .map(|c| c.allocs)
        .ok_or_else(|| format!("the volo server said {line:?}"))
}

/// One volo run, taken as `echo::run_once` takes Keel's.
fn volo_once(
    server: &mut ChildServer,
    client: &mut VoloClient,
    length: Duration,
    ticks_per_us: f64,
) -> Result<Sample, String> {
    let server_allocs = volo_allocs(server)?;
    let server_ticks = server.cpu_ticks()?;
    let client_ticks = client.process.cpu_ticks()?;
    let run = client.run(length)?;
    let client_ticks = client.process.cpu_ticks()? - client_ticks;
    let server_ticks = server.cpu_ticks()? - server_ticks;
    let server_allocs = volo_allocs(server)? - server_allocs;
    if run.errors > 0 {
        return Err(format!("{} volo calls failed", run.errors));
    }
    let calls = run.calls.max(1) as f64;
    Ok(Sample {
        qps: run.calls as f64 / run.elapsed.as_secs_f64(),
        p50_us: run.p50_us as f64,
        p99_us: run.p99_us as f64,
        server_cpu_us: server_ticks as f64 / ticks_per_us / calls,
        client_cpu_us: client_ticks as f64 / ticks_per_us / calls,
        server_allocs: server_allocs as f64 / calls,
        client_allocs: run.allocs as f64 / calls,
    })
}

/// A scenario's samples: Keel's, then volo's.
struct ScenarioResult {
    scenario: Scenario,
    samples: [Vec<Sample>; 2],
}

impl ScenarioResult {
    fn median(&self, pair: usize, field: fn(&Sample) -> f64) -> f64 {
        let xs: Vec<f64> = self.samples[pair].iter().map(field).collect();
        median(&xs).unwrap_or(f64::NAN)
    }
}

const KEEL: usize = 0;
const VOLO: usize = 1;

fn run(opts: &Options) -> Result<String, String> {
    if !opts.peer.is_file() {
        return Err(format!(
            "no volo-grpc peer at {}: build it with scripts/bench-volo.sh (or give --peer PATH)",
            opts.peer.display()
        ));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    let rt = echo::runtime("client")?;
    let mut keel_server = ServerProcess::start(Framework::Keel, None)?;
    let mut volo_server = ChildServer::start_program("volo", &opts.peer, &["server".into()])?;
    let runs = &opts.runs;
    eprintln!(
        "keel-bench volo: {} scenarios x {} rounds x 2 pairs x {:.1} s",
        SCENARIOS.len(),
        runs.rounds,
        runs.seconds
    );
    let mut scenarios = Vec::with_capacity(SCENARIOS.len());
    for scenario in SCENARIOS {
        let keel = rt.block_on(async {
            Clients::keel(
                &format!("grpc://{}", keel_server.addr),
                scenario.connections,
            )
        })?;
        keel.arm(&rt, scenario.per_connection)
            .fire(&rt, runs.warm_up())
            .map_err(|e| format!("{} keel: {e}", scenario.name()))?;
        let mut volo = VoloClient::start(&opts.peer, &volo_server, scenario)?;
        volo.run(runs.warm_up())?;
        let mut samples: [Vec<Sample>; 2] = Default::default();
        for round in 0..runs.rounds {
            eprint!(
                "\r  {:<6} round {}/{}",
                scenario.name(),
                round + 1,
                runs.rounds
            );
            samples[KEEL].push(
                echo::run_once(
                    &rt,
                    &mut keel_server,
                    &keel,
                    scenario,
                    runs.run_length(),
                    ticks_per_us,
                )
                .map_err(|e| format!("{} keel: {e}", scenario.name()))?,
            );
            samples[VOLO].push(
                volo_once(&mut volo_server, &mut volo, runs.run_length(), ticks_per_us)
                    .map_err(|e| format!("{} volo: {e}", scenario.name()))?,
            );
        }
        rt.block_on(async move { drop(keel) });
        drop(volo);
        scenarios.push(ScenarioResult { scenario, samples });
    }
    eprintln!();
    drop(volo_server);
    drop(keel_server);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench volo: brpc's echo (16-byte message) over gRPC on 127.0.0.1, keel {} vs volo-grpc 0.12",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "  keel = Keel server + Keel client (grpc://, this process); volo = volo-grpc server + volo-grpc client\n  \
         (processes of peers/volo); every server and client on tokio multi-thread x{}",
        echo::WORKERS
    );
    let _ = writeln!(
        out,
        "  medians of {} rounds of {:.1} s per pair, pairs alternating; allocations from keel_alloc::CountingAlloc",
        runs.rounds, runs.seconds
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&load_start, &load_average()),
        started.elapsed().as_secs_f64(),
    );
    out.push('\n');
    out.push_str(&report(&scenarios));
    Ok(out)
}

fn report(scenarios: &[ScenarioResult]) -> String {
    let int = crate::summary::count_cell;
    let one = |x: f64| format!("{x:.1}");
    let mut t = Table::new()
        .column("scenario", Align::Left)
        .column("keel", Align::Right)
        .column("volo", Align::Right)
        .column("keel/volo", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("volo", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("volo", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("volo", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("volo", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("volo", Align::Right)
        .group(1, 3, "QPS")
        .group(4, 5, "p50 / p99 us")
        .group(6, 7, "server CPU us")
        .group(8, 9, "client CPU us")
        .group(10, 11, "server allocs")
        .group(12, 13, "client allocs");
    for s in scenarios {
        let m = |pair, f: fn(&Sample) -> f64| s.median(pair, f);
        let lat = |pair| {
            format!(
                "{} / {}",
                int(m(pair, |x| x.p50_us)),
                int(m(pair, |x| x.p99_us))
            )
        };
        t.row(vec![
            s.scenario.name(),
            int(m(KEEL, |x| x.qps)),
            int(m(VOLO, |x| x.qps)),
            format!("{:.2}x", m(KEEL, |x| x.qps) / m(VOLO, |x| x.qps)),
            lat(KEEL),
            lat(VOLO),
            one(m(KEEL, |x| x.server_cpu_us)),
            one(m(VOLO, |x| x.server_cpu_us)),
            one(m(KEEL, |x| x.client_cpu_us)),
            one(m(VOLO, |x| x.client_cpu_us)),
            one(m(KEEL, |x| x.server_allocs)),
            one(m(VOLO, |x| x.server_allocs)),
            one(m(KEEL, |x| x.client_allocs)),
            one(m(VOLO, |x| x.client_allocs)),
        ]);
    }
    let mut out = format!("{t}");
    out.push_str(
        "  per call, per side, whole processes over a run; CPU from /proc/<pid>/stat\n\ntarget:\n",
    );
    if let Some(s) = scenarios
        .iter()
        .find(|s| s.scenario.connections == 1 && s.scenario.per_connection == 128)
    {
        let (keel, volo) = (s.median(KEEL, |x| x.qps), s.median(VOLO, |x| x.qps));
        let ratio = keel / volo;
        let _ = writeln!(
            out,
            "  {}  1x128: keel QPS >= {TARGET_RATIO_AT_128}x volo-grpc's: {} / {} = {ratio:.2}x",
            if ratio >= TARGET_RATIO_AT_128 {
                "met    "
            } else {
                "NOT met"
            },
            int(keel),
            int(volo),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_line_is_read_back() {
        assert_eq!(
            parse_run("done 1200 0 2000000000 340 610 2400"),
            Some(VoloRun {
                calls: 1200,
                errors: 0,
                elapsed: Duration::from_secs(2),
                p50_us: 340,
                p99_us: 610,
                allocs: 2400,
            })
        );
        assert_eq!(parse_run("done 1200 0"), None);
        assert_eq!(parse_run("port 80"), None);
    }

    #[test]
    fn a_missing_peer_is_a_clear_error() {
        let opts = Options {
            runs: args::Runs {
                seconds: 0.1,
                rounds: 1,
                quick: true,
            },
            peer: PathBuf::from("/nonexistent/keel-volo-peer"),
        };
        let e = run(&opts).expect_err("no peer");
        assert!(e.contains("scripts/bench-volo.sh"), "{e}");
    }
}

//! `keel-bench grpc`: brpc's echo RPC over gRPC on loopback, Keel against
//! tonic 0.14, in one run; then messages per second on one server-streaming
//! call ([`stream`]).
//!
//! # What is measured
//!
//! The same servers and load as `keel-bench echo` (see there), with every
//! call over gRPC (HTTP/2). Three pairs, each on the four scenarios 1x1,
//! 1x16, 1x128 and 2x64 (connections x calls in flight):
//!
//! - **keel**: Keel's server (it answers gRPC on its baidu_std port) called
//!   by Keel's generated client on a `grpc://` channel;
//! - **tonic**: tonic's server called by tonic's generated client;
//! - **keel srv**: Keel's server called by tonic's client, so that against
//!   the tonic pair only the server differs.
//!
//! ```text
//!   keel-bench grpc (clients, 2-worker tokio runtime)
//!     ├─ keel client  ──grpc──► server process A (Keel)   `keel-bench echo-server keel`
//!     ├─ tonic client ──grpc──► server process A (Keel)
//!     └─ tonic client ──grpc──► server process B (tonic)  `keel-bench echo-server tonic`
//! ```
//!
//! Per run: QPS, p50/p99 latency, server and client CPU and allocations per
//! call (whole processes; the server's from its own counting allocator,
//! the client's from this process's), all as `echo` takes them
//! ([`echo::run_once`]). Before the load, each server's live heap per idle
//! gRPC connection: [`IDLE_CONNECTIONS`] tonic channels that made one call
//! each and stay open, the same client for both servers. After the unary
//! scenarios, the same pairs each receive one server-streaming call per run
//! from the same server processes (see [`stream`]).
//!
//! # Why it is fair
//!
//! Both servers are separate processes with 2-worker runtimes, serving the
//! same prost messages with the same handler body; each client is the
//! framework's generated client with its defaults (Keel's includes a 1 s
//! deadline per call, which it sends as `grpc-timeout`; tonic's sends none).
//! Runs alternate keel, tonic, keel srv, ... for `--rounds` rounds and every
//! figure is the median of its rounds.
//!
//! # volo-grpc: `keel-bench volo`
//!
//! volo-grpc (CloudWeGo), the third peer, is measured by `keel-bench volo`
//! (`scripts/bench-volo.sh`), against a program of its own (`peers/volo`):
//! its crates (about 270, 3 to 6 minutes of release build on 2 cores) stay out
//! of this binary and of the workspace's tests.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

mod stream;

use crate::args;
use crate::echo::{self, Clients, Framework, SCENARIOS, Sample, Scenario, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// Seconds per run in a full run and with `--quick`.
const DEFAULT_SECONDS: f64 = 2.0;
const QUICK_SECONDS: f64 = 0.3;
const DEFAULT_ROUNDS: usize = 3;
/// Idle connections opened to each server (fewer with `--quick`).
const IDLE_CONNECTIONS: usize = 1_000;
const QUICK_IDLE_CONNECTIONS: usize = 100;

/// Cells whose QPS across rounds spreads more than this are listed.
const NOISY_SPREAD: f64 = 0.10;

// The issue's targets (printed as facts, never asserted).
const TARGET_QPS_RATIO_AT_128: f64 = 2.0;
const TARGET_ALLOCS_FRACTION: f64 = 1.0 / 3.0;
const TARGET_IDLE_BYTES: f64 = 16.0 * 1024.0;

/// What `keel-bench grpc --help` says about the subcommand.
pub const ABOUT: &str = "\
brpc's echo RPC (16-byte message) over gRPC on loopback: Keel's server and
client, tonic's server and client, and Keel's server called by tonic's
client; each server in its own process. Scenarios: 1 connection x 1, 16,
128 calls in flight, and 2 connections x 64. Prints medians of QPS, p50/p99
latency, CPU and allocations per call on each side, and server heap per
idle gRPC connection. Then, for each pair, one server-streaming call per run
(grpc.testing.TestService/StreamingOutputCall, 600,000 responses of 16 B,
300,000 of 1 KiB): messages/s at the client, CPU and allocations per message,
server heap peak.

Defaults: --seconds 2 (each unary run; a full run takes ~2 min), --rounds 3
(runs of each pair per scenario, alternating); --quick: 0.3 s runs, 100 idle
connections, streams of 20,000 and 10,000, a smoke run of ~25 s; --streaming: the
streaming runs alone (no unary scenarios, no idle connections).";

/// The flags of `keel-bench grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Default, clap::Args)]
pub struct Args {
    #[command(flatten)]
    runs: args::RunArgs,
    /// Only the streaming runs (no unary scenarios, no idle connections)
    #[arg(long)]
    streaming: bool,
}

type Options = args::Runs;

const DEFAULTS: args::RunDefaults = args::RunDefaults {
    seconds: DEFAULT_SECONDS,
    quick_seconds: QUICK_SECONDS,
    rounds: DEFAULT_ROUNDS,
};

/// A server and the client that drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// Keel's server, Keel's client.
    Keel,
    /// tonic's server, tonic's client.
    Tonic,
    /// Keel's server, tonic's client.
    KeelServer,
}

impl Pair {
    const ALL: [Pair; 3] = [Pair::Keel, Pair::Tonic, Pair::KeelServer];

    fn name(self) -> &'static str {
        match self {
            Pair::Keel => "keel",
            Pair::Tonic => "tonic",
            Pair::KeelServer => "keel srv",
        }
    }

    /// Which server process it calls: 0 is Keel's, 1 tonic's.
    fn server(self) -> usize {
        match self {
            Pair::Keel | Pair::KeelServer => 0,
            Pair::Tonic => 1,
        }
    }

    async fn connect(self, server: &ServerProcess, connections: usize) -> Result<Clients, String> {
        match self {
            Pair::Keel => Clients::keel(&format!("grpc://{}", server.addr), connections),
            Pair::Tonic | Pair::KeelServer => {
                Clients::connect(Framework::Tonic, server.addr, connections).await
            }
        }
    }
}

/// A scenario's samples, per pair (in [`Pair::ALL`] order).
struct ScenarioResult {
    scenario: Scenario,
    samples: [Vec<Sample>; 3],
}

impl ScenarioResult {
    fn samples(&self, p: Pair) -> &[Sample] {
        &self.samples[p as usize]
    }

    /// The median over rounds of one figure.
    fn median(&self, p: Pair, field: fn(&Sample) -> f64) -> f64 {
        let xs: Vec<f64> = self.samples(p).iter().map(field).collect();
        median(&xs).unwrap_or(f64::NAN)
    }

    /// (max - min) / median of the QPS over rounds.
    fn qps_spread(&self, p: Pair) -> f64 {
        let xs: Vec<f64> = self.samples(p).iter().map(|s| s.qps).collect();
        crate::summary::spread(&xs)
    }
}

fn run_scenario(
    rt: &tokio::runtime::Runtime,
    servers: &mut [ServerProcess; 2],
    scenario: Scenario,
    opts: &Options,
    ticks_per_us: f64,
) -> Result<ScenarioResult, String> {
    let mut clients = Vec::with_capacity(Pair::ALL.len());
    for pair in Pair::ALL {
        let c = rt.block_on(pair.connect(&servers[pair.server()], scenario.connections))?;
        // Warm-up: connections, buffers, pools, the allocator's caches.
        c.arm(rt, scenario.per_connection)
            .fire(rt, opts.warm_up())
            .map_err(|e| format!("{} {}: {e}", scenario.name(), pair.name()))?;
        clients.push(c);
    }
    let mut samples: [Vec<Sample>; 3] = Default::default();
    for round in 0..opts.rounds {
        for (pair, c) in Pair::ALL.into_iter().zip(&clients) {
            eprint!(
                "\r  {:<6} round {}/{}  {:<8}",
                scenario.name(),
                round + 1,
                opts.rounds,
                pair.name()
            );
            let server = &mut servers[pair.server()];
            let sample = echo::run_once(rt, server, c, scenario, opts.run_length(), ticks_per_us)
                .map_err(|e| format!("{} {}: {e}", scenario.name(), pair.name()))?;
            samples[pair as usize].push(sample);
        }
    }
    // Close the connections inside the runtime their tasks live on.
    rt.block_on(async move { drop(clients) });
    Ok(ScenarioResult { scenario, samples })
}

/// Entry point of `keel-bench grpc`.
pub fn main(a: &Args) -> ExitCode {
    args::main("grpc", &a.runs.runs(DEFAULTS), |opts| {
        run(opts, a.streaming)
    })
}

/// What the unary part of a run found.
struct Unary {
    scenarios: Vec<ScenarioResult>,
    idle_connections: usize,
    keel_idle: echo::IdleBytes,
    tonic_idle: echo::IdleBytes,
}

/// Everything `run` found, for the report.
struct Results {
    /// `None` with `--streaming`.
    unary: Option<Unary>,
    streams: Vec<stream::CaseResult>,
    load_start: String,
    load_end: String,
    elapsed: std::time::Duration,
}

fn run(opts: &Options, streaming_only: bool) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    let rt = echo::runtime("client")?;
    let mut servers = [
        ServerProcess::start(Framework::Keel, None)?,
        ServerProcess::start(Framework::Tonic, None)?,
    ];
    let unary = if streaming_only {
        None
    } else {
        Some(run_unary(&rt, &mut servers, opts, ticks_per_us)?)
    };
    eprintln!(
        "keel-bench grpc: streaming, {} payload sizes x {} rounds x {} pairs, one call each",
        stream::CASES.len(),
        opts.rounds,
        Pair::ALL.len()
    );
    let streams = stream::run(&rt, &mut servers, opts.rounds, opts.quick, ticks_per_us)?;
    eprintln!();
    drop(servers);
    let results = Results {
        unary,
        streams,
        load_start,
        load_end: load_average(),
        elapsed: started.elapsed(),
    };
    Ok(report(opts, cores, &results))
}

/// The idle connections' heap, then every unary scenario.
fn run_unary(
    rt: &tokio::runtime::Runtime,
    servers: &mut [ServerProcess; 2],
    opts: &Options,
    ticks_per_us: f64,
) -> Result<Unary, String> {
    let idle_connections = if opts.quick {
        QUICK_IDLE_CONNECTIONS
    } else {
        IDLE_CONNECTIONS
    };
    eprintln!(
        "keel-bench grpc: {idle_connections} idle gRPC connections to each server (keel on {}, tonic on {})",
        servers[0].addr, servers[1].addr
    );
    let keel_idle = echo::grpc_idle_bytes(rt, &mut servers[0], idle_connections)?;
    let tonic_idle = echo::grpc_idle_bytes(rt, &mut servers[1], idle_connections)?;
    eprintln!(
        "keel-bench grpc: {} scenarios x {} rounds x {} pairs x {:.1} s",
        SCENARIOS.len(),
        opts.rounds,
        Pair::ALL.len(),
        opts.seconds
    );
    let mut scenarios = Vec::with_capacity(SCENARIOS.len());
    for scenario in SCENARIOS {
        scenarios.push(run_scenario(rt, servers, scenario, opts, ticks_per_us)?);
    }
    eprintln!();
    Ok(Unary {
        scenarios,
        idle_connections,
        keel_idle,
        tonic_idle,
    })
}

fn report(opts: &Options, cores: usize, r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench grpc: brpc's echo (16-byte message) over gRPC on 127.0.0.1, keel {} vs {}",
        env!("CARGO_PKG_VERSION"),
        crate::summary::TONIC
    );
    let _ = writeln!(
        out,
        "  keel = Keel server + Keel client (grpc://); tonic = tonic server + tonic client;\n  \
         keel srv = Keel server + tonic client (only the server differs from tonic)"
    );
    crate::summary::runtimes_line(&mut out);
    let _ = writeln!(
        out,
        "  medians of {} rounds of {:.1} s per pair, pairs alternating; allocations from keel_alloc::CountingAlloc",
        opts.rounds, opts.seconds
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&r.load_start, &r.load_end),
        r.elapsed.as_secs_f64(),
    );
    out.push('\n');
    if let Some(u) = &r.unary {
        report_unary(&mut out, u);
    }
    stream::report(&mut out, &r.streams, opts.rounds);

    // The issue's targets, stated as facts.
    let verdict = |met: bool| if met { "met    " } else { "NOT met" };
    out.push_str("\ntargets (issue 10):\n");
    if let Some(u) = &r.unary {
        unary_targets(&mut out, u, verdict);
    }
    stream::targets(&mut out, &r.streams, verdict);
    out
}

/// The unary scenarios' tables and the idle connections' heap.
fn report_unary(out: &mut String, r: &Unary) {
    use Pair::{Keel, KeelServer, Tonic};
    let int = crate::summary::count_cell;
    let one = |x: f64| format!("{x:.1}");
    let ratio = |x: f64| format!("{x:.2}x");

    let mut t = Table::new()
        .column("scenario", Align::Left)
        .column("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .group(1, 3, "QPS")
        .group(4, 5, "QPS / tonic")
        .group(6, 8, "p50 / p99 us");
    for s in &r.scenarios {
        let q = |p| s.median(p, |x| x.qps);
        let lat = |p| {
            format!(
                "{} / {}",
                int(s.median(p, |x| x.p50_us)),
                int(s.median(p, |x| x.p99_us))
            )
        };
        t.row(vec![
            s.scenario.name(),
            int(q(Keel)),
            int(q(Tonic)),
            int(q(KeelServer)),
            ratio(q(Keel) / q(Tonic)),
            ratio(q(KeelServer) / q(Tonic)),
            lat(Keel),
            lat(Tonic),
            lat(KeelServer),
        ]);
    }
    let _ = writeln!(out, "{t}");

    let mut t = Table::new()
        .column("scenario", Align::Left)
        .column("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .group(1, 3, "server allocs/call")
        .group(4, 6, "client allocs/call")
        .group(7, 9, "server CPU us/call")
        .group(10, 12, "client CPU us/call");
    for s in &r.scenarios {
        let m = |p, f: fn(&Sample) -> f64| s.median(p, f);
        t.row(vec![
            s.scenario.name(),
            one(m(Keel, |x| x.server_allocs)),
            one(m(Tonic, |x| x.server_allocs)),
            one(m(KeelServer, |x| x.server_allocs)),
            one(m(Keel, |x| x.client_allocs)),
            one(m(Tonic, |x| x.client_allocs)),
            one(m(KeelServer, |x| x.client_allocs)),
            one(m(Keel, |x| x.server_cpu_us)),
            one(m(Tonic, |x| x.server_cpu_us)),
            one(m(KeelServer, |x| x.server_cpu_us)),
            one(m(Keel, |x| x.client_cpu_us)),
            one(m(Tonic, |x| x.client_cpu_us)),
            one(m(KeelServer, |x| x.client_cpu_us)),
        ]);
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "  whole processes over a run, divided by its calls; tonic's client allocations include one\n  \
         request clone per call (its echo takes the request by value)\n\n",
    );

    let mut t = Table::new()
        .column("server heap per idle gRPC connection", Align::Left)
        .column("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("tonic/keel", Align::Right);
    let what = format!(
        "{} tonic channels, one call each",
        echo::group_thousands(r.idle_connections as u64)
    );
    for row in echo::IdleBytes::rows(&what, r.keel_idle, r.tonic_idle) {
        t.row(row);
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "  (live bytes after - before) / connections, from each server's counting allocator\n",
    );

    let mut noisy = Vec::new();
    for s in &r.scenarios {
        for p in Pair::ALL {
            let spread = s.qps_spread(p);
            if spread > NOISY_SPREAD {
                noisy.push(format!(
                    "{} {} {:.0}%",
                    s.scenario.name(),
                    p.name(),
                    spread * 100.0
                ));
            }
        }
    }
    out.push('\n');
    crate::summary::spread_line(
        out,
        "QPS",
        &noisy,
        r.scenarios.len() * Pair::ALL.len(),
        NOISY_SPREAD,
    );
    out.push('\n');
}

/// The unary targets of issue 10, as facts.
fn unary_targets(out: &mut String, r: &Unary, verdict: impl Fn(bool) -> &'static str) {
    use Pair::{Keel, KeelServer, Tonic};
    let int = crate::summary::count_cell;
    if let Some(s) = r.scenarios.iter().find(|s| s.scenario.name() == "1x128") {
        let q = |p| s.median(p, |x| x.qps);
        let _ = writeln!(
            out,
            "  {}  1x128: keel QPS >= {TARGET_QPS_RATIO_AT_128}x tonic: {} / {} = {:.2}x (keel srv under tonic's client: {:.2}x)",
            verdict(q(Keel) / q(Tonic) >= TARGET_QPS_RATIO_AT_128),
            int(q(Keel)),
            int(q(Tonic)),
            q(Keel) / q(Tonic),
            q(KeelServer) / q(Tonic),
        );
        for (side, field) in [
            (
                "server",
                (|x: &Sample| x.server_allocs) as fn(&Sample) -> f64,
            ),
            ("client", |x: &Sample| x.client_allocs),
        ] {
            let (k, g) = (s.median(Keel, field), s.median(Tonic, field));
            let _ = writeln!(
                out,
                "  {}  1x128: keel {side} allocations/call <= 1/3 of tonic's: {k:.1} vs {g:.1} ({:.2} of tonic's)",
                verdict(k <= g * TARGET_ALLOCS_FRACTION),
                k / g
            );
        }
        let _ = writeln!(
            out,
            "  -        1x128: keel QPS >= 1.5x volo-grpc's: see `keel-bench volo` (scripts/bench-volo.sh)"
        );
    }
    let _ = writeln!(
        out,
        "  {}  keel server heap per idle gRPC connection <= 16 KB ({TARGET_IDLE_BYTES} B): {} B (tonic {} B)",
        verdict(r.keel_idle.busy <= TARGET_IDLE_BYTES),
        int(r.keel_idle.busy),
        int(r.tonic_idle.busy)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_pairs() {
        let full = args::parse::<args::RunArgs>("")
            .expect("parses")
            .runs(DEFAULTS);
        assert_eq!(
            (full.seconds, full.rounds),
            (DEFAULT_SECONDS, DEFAULT_ROUNDS)
        );
        let quick = args::parse::<args::RunArgs>("--quick")
            .expect("parses")
            .runs(DEFAULTS);
        assert!(quick.quick && quick.seconds == QUICK_SECONDS);
        let streaming = args::parse::<Args>("--streaming --rounds 5").expect("parses");
        assert!(streaming.streaming && streaming.runs.runs(DEFAULTS).rounds == 5);
        assert!(!args::parse::<Args>("").expect("parses").streaming);
        // Samples are stored by the pair's position in `ALL`.
        for (i, p) in Pair::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i);
        }
        assert_eq!(Pair::KeelServer.server(), Pair::Keel.server());
        assert_ne!(Pair::Tonic.server(), Pair::Keel.server());
    }
}

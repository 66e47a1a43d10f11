//! `keel-bench cluster`: what the cluster layer costs a call.
//!
//! Three Keel echo servers run as child processes on loopback (rpcz off).
//! One client runtime in this process drives 128 calls in flight through
//! each kind of channel in turn, rounds alternating:
//!
//! - `host:port`: a plain one-endpoint channel (no cluster layer), the
//!   baseline;
//! - `list://` with that one endpoint: the cluster layer (naming snapshot,
//!   pick, in-flight accounting, failover bookkeeping) around the same
//!   connection;
//! - three plain `host:port` channels, the callers split among them: the
//!   cost of spreading over three connections and processes without the
//!   cluster layer;
//! - `list://` with all three endpoints, round robin and p2c: calls spread
//!   over three connections and three server processes.
//!
//! Reported per channel: QPS, p50/p99 latency, client CPU µs and client
//! allocations per call, and QPS relative to the baseline. On a 2-core
//! machine the three servers and the client share the same cores, so the
//! 3-endpoint rows show the layer's cost, not a scale-out.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel::Channel;
use keel::cluster::LoadBalancer;
use keel_examples::example::EchoServiceClient;

use crate::args;
use crate::echo::{self, Clients, Framework, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

const DEFAULT_SECONDS: f64 = 3.0;
const QUICK_SECONDS: f64 = 0.5;
const DEFAULT_ROUNDS: usize = 3;
const IN_FLIGHT: usize = 128;

/// What `keel-bench cluster --help` says about the subcommand.
pub const ABOUT: &str = "\
Echo QPS with 128 calls in flight through a plain host:port channel, a
list:// channel of that one endpoint, and list:// channels of three
endpoints (round robin, p2c); three Keel servers in child processes.

Defaults: --seconds 3 (a full run takes ~55 s), --rounds 3 (runs per
channel, alternating); --quick: 0.5 s runs, a smoke run of ~12 s.";

type Options = args::Runs;

const DEFAULTS: args::RunDefaults = args::RunDefaults {
    seconds: DEFAULT_SECONDS,
    quick_seconds: QUICK_SECONDS,
    rounds: DEFAULT_ROUNDS,
};

/// One kind of channel under test.
struct Setup {
    name: &'static str,
    clients: Clients,
    /// Calls in flight per client (all setups total about 128).
    per_client: usize,
}

/// What one run measured, client side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) qps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) cpu_us: f64,
    pub(crate) allocs: f64,
}

fn setups(addrs: &[String]) -> Result<Vec<Setup>, String> {
    let keel = |channel: Channel| Clients::Keel(vec![EchoServiceClient::new(&channel)]);
    let plain = |addr: &String| {
        Channel::new(addr)
            .map(|c| EchoServiceClient::new(&c))
            .map_err(|e| e.to_string())
    };
    let list = |addrs: &[String], lb: LoadBalancer| {
        Channel::builder(&format!("list://{}", addrs.join(",")))
            .load_balancer(lb)
            .build()
            .map_err(|e| e.to_string())
    };
    Ok(vec![
        Setup {
            name: "host:port (baseline)",
            clients: keel(Channel::new(&addrs[0]).map_err(|e| e.to_string())?),
            per_client: IN_FLIGHT,
        },
        Setup {
            name: "list://, 1 endpoint",
            clients: keel(list(&addrs[..1], LoadBalancer::RoundRobin)?),
            per_client: IN_FLIGHT,
        },
        Setup {
            name: "3 x host:port, callers split",
            clients: Clients::Keel(addrs.iter().map(plain).collect::<Result<_, _>>()?),
            per_client: IN_FLIGHT.div_ceil(3),
        },
        Setup {
            name: "list://, 3 endpoints, rr",
            clients: keel(list(addrs, LoadBalancer::RoundRobin)?),
            per_client: IN_FLIGHT,
        },
        Setup {
            name: "list://, 3 endpoints, p2c",
            clients: keel(list(addrs, LoadBalancer::PowerOfTwoChoices)?),
            per_client: IN_FLIGHT,
        },
    ])
}

/// One run of `clients` with `per_client` calls in flight on each, for
/// `length`: client-side figures.
pub(crate) fn run_once(
    rt: &tokio::runtime::Runtime,
    clients: &Clients,
    per_client: usize,
    length: Duration,
    ticks_per_us: f64,
) -> Result<Sample, String> {
    let armed = clients.arm(rt, per_client);
    let ticks = echo::own_cpu_ticks()?;
    let allocs = keel_alloc::stats().allocs;
    let (hist, elapsed) = armed.fire(rt, length)?;
    let allocs = keel_alloc::stats().allocs - allocs;
    let ticks = echo::own_cpu_ticks()? - ticks;
    let calls = hist.count().max(1) as f64;
    Ok(Sample {
        qps: hist.count() as f64 / elapsed.as_secs_f64(),
        p50_us: hist.quantile(0.5) as f64,
        p99_us: hist.quantile(0.99) as f64,
        cpu_us: ticks as f64 / ticks_per_us / calls,
        allocs: allocs as f64 / calls,
    })
}

/// Warms each of `runs` (name, clients, calls in flight per client) up,
/// then runs them `opts.rounds` times, alternating (a progress line on
/// stderr); the samples of each, in `runs`' order.
pub(crate) fn measure(
    rt: &tokio::runtime::Runtime,
    runs: &[(&str, &Clients, usize)],
    opts: &args::Runs,
    ticks_per_us: f64,
) -> Result<Vec<Vec<Sample>>, String> {
    for (_, clients, per_client) in runs {
        clients.arm(rt, *per_client).fire(rt, opts.warm_up())?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); runs.len()];
    for round in 0..opts.rounds {
        for k in 0..runs.len() {
            let i = (round + k) % runs.len();
            let (name, clients, per_client) = runs[i];
            eprint!("\r  round {}/{}  {name:<28}", round + 1, opts.rounds);
            samples[i].push(run_once(
                rt,
                clients,
                per_client,
                opts.run_length(),
                ticks_per_us,
            )?);
        }
    }
    eprintln!();
    Ok(samples)
}

/// The table of medians of `samples` (one row per name), with QPS
/// relative to the first row in the column titled `ratio`.
pub(crate) fn samples_table(
    first: &str,
    names: &[&str],
    samples: &[Vec<Sample>],
    ratio: &str,
) -> Table {
    let med = |i: usize, f: fn(&Sample) -> f64| {
        let xs: Vec<f64> = samples[i].iter().map(f).collect();
        median(&xs).unwrap_or(f64::NAN)
    };
    let mut t = Table::new()
        .column(first, Align::Left)
        .column("QPS", Align::Right)
        .column("p50 µs", Align::Right)
        .column("p99 µs", Align::Right)
        .column("client CPU µs/call", Align::Right)
        .column("client allocs/call", Align::Right)
        .column_after_rule(ratio, Align::Right);
    let base = med(0, |s| s.qps);
    for (i, name) in names.iter().enumerate() {
        let qps = med(i, |s| s.qps);
        t.row(vec![
            name.to_string(),
            echo::group_thousands(qps.round() as u64),
            format!("{:.0}", med(i, |s| s.p50_us)),
            format!("{:.0}", med(i, |s| s.p99_us)),
            format!("{:.2}", med(i, |s| s.cpu_us)),
            format!("{:.2}", med(i, |s| s.allocs)),
            format!("{:.2}x", qps / base),
        ]);
    }
    t
}

/// Entry point of `keel-bench cluster`.
pub fn main(a: &args::RunArgs) -> ExitCode {
    args::main("cluster", &a.runs(DEFAULTS), run)
}

fn run(opts: &Options) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    keel::rpcz::tracer().sampler().set_target(0);
    let rt = echo::runtime("client")?;
    let servers = (0..3)
        .map(|_| ServerProcess::start(Framework::Keel, Some(0)))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    // Channels are built inside the runtime, where their naming starts.
    let setups = rt.block_on(async { setups(&addrs) })?;
    eprintln!(
        "keel-bench cluster: echo 1x{IN_FLIGHT}, {} rounds x {} channels x {:.1} s",
        opts.rounds,
        setups.len(),
        opts.seconds
    );
    let runs: Vec<(&str, &Clients, usize)> = setups
        .iter()
        .map(|s| (s.name, &s.clients, s.per_client))
        .collect();
    let samples = measure(&rt, &runs, opts, ticks_per_us)?;
    let names: Vec<&str> = setups.iter().map(|s| s.name).collect();
    // Close the connections inside the runtime their tasks live on.
    rt.block_on(async move { drop(setups) });
    drop(servers);
    let load_end = load_average();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench cluster: keel {} cluster channels vs a plain channel",
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
        "  echo, 1 client x {IN_FLIGHT} in flight; 3 Keel servers in child processes; medians of {} runs of {:.1} s",
        opts.rounds, opts.seconds
    );
    let t = samples_table("channel", &names, &samples, "QPS / baseline");
    let _ = write!(out, "{t}");
    out.push_str(
        "  The 3-endpoint rows share 2 cores among 3 server processes and the client:\n  \
         they show what spreading costs, not a scale-out; compare the list:// rows with\n  \
         `3 x host:port` for the cluster layer's own share of it.\n",
    );
    Ok(out)
}

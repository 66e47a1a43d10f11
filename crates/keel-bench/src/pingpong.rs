//! `keel-bench pingpong`: the floor under a 1x1 echo. A raw TCP ping-pong
//! of 16-byte messages over loopback, and Keel's and tonic's 1x1 echo (one
//! connection, one call in flight), in one run, with each framework's rate
//! as a share of the raw one.
//!
//! # What is measured
//!
//! - **raw**: this process's thread writes 16 bytes to a blocking
//!   `std::net::TcpStream` (`TCP_NODELAY`) and reads 16 back, one round trip
//!   at a time; the server process (`keel-bench pingpong-server`) reads 16
//!   bytes and writes them back, a blocking thread per connection. Round
//!   trips per second, p50/p99 in microseconds, and the server's CPU per
//!   round trip. No framing, no runtime, no codec: what the kernel's
//!   loopback and two context switches cost.
//! - **keel**, **tonic**: `keel-bench echo`'s 1x1 scenario, run by the same
//!   code ([`echo::run_once`]): brpc's echo (16-byte message) on each
//!   framework's server process and its own client here, Keel over
//!   baidu_std, tonic over gRPC; QPS, p50/p99 and the server's CPU per call.
//!
//! The target of issue 15, Keel's 1x1 at 95% or more of the raw rate, is
//! printed as a fact, never asserted.
//!
//! # Why it is fair
//!
//! - **Same path.** All the servers are separate processes on 127.0.0.1
//!   with `TCP_NODELAY`, called over one connection from this process; all
//!   send the same 16 bytes of payload (the frameworks add their
//!   headers, which is what they cost).
//! - **Same moment.** Runs alternate raw, keel, keel without polling,
//!   tonic, raw, ... for `--rounds` rounds after a warm-up of each, every figure is the median of
//!   its rounds, and the ratios are of medians; each round's keel/raw is
//!   listed too, with the load average before and after, so noise shows.
//! - **A floor, not a peer.** The raw client and server block in `read`,
//!   which is the cheapest way to wait for one reply; a framework on an async
//!   runtime also pays for waking a task. That is the gap the target bounds.
//!   Keel's server and client busy-poll by default and skip the wakeups
//!   the raw ones pay, so they can beat this floor, at the CPU cost printed.
//! - **A lone caller.** Each Keel run has a channel of its own, made and
//!   warmed up before it and closed after it: a Keel connection polls only
//!   while it is the one open connection of its process, as a lone
//!   caller's is.
//!
//! # What the gap is made of, and busy-polling
//!
//! On a 2-core virtual machine, most of a 1x1 round trip is waking an idle
//! CPU (a halt and an interrupt), on both sides: the same Keel 1x1 echo ran
//! at 64,630 calls/s (p50 9 us) while other work kept both CPUs busy, and
//! at 16-18k when they were idle. Keel therefore busy-polls a lone
//! caller's connection (`ServerBuilder::busy_poll`,
//! `ChannelBuilder::busy_poll`, see `busy_poll.rs` in keel): the server
//! reads its socket with non-blocking `recv`s for up to 50 us for the next
//! request, the client for the answer, before sleeping, so neither waits
//! for a CPU to wake. The row "keel, no polling" is the same server with
//! that off (`--no-busy-poll`) and a channel with it off, so what polling
//! gains and what CPU it costs show side by side.
//!
//! While a window polls, the socket's read low-water mark is raised, so
//! the request's arrival does not also wake the server's other worker,
//! asleep in `epoll_wait`: before that, it woke for every call (measured
//! at about 30k calls/s: one context switch and one `epoll_wait` per call,
//! a third of a core) only to find the connection's task already running.
//!
//! The CPU cell (polling's server CPU per call at most half of the server's
//! without it) depends on the client polling too, and the last line of the
//! report says why: a polling server is busy through most of each call's
//! period (80-90% here), so its CPU per call is about that share of the
//! period, and half the unpolled CPU needs a period short enough for it.
//! With only the server polling, the client's wakeup kept the period at
//! 26-39 us (25-39k calls/s, the server at 85-95% of its unpolled CPU);
//! with the client polling as well it is about 16-18 us (54-62k calls/s,
//! the server at 43-51%), and about 15 us once the read mark stays up
//! between windows that read (65-67k calls/s, the server at 38-40%). A
//! server that sleeps instead pays at least what the raw server, which
//! only blocks in `read`, pays for each wakeup.
//!
//! Polling that goes through the runtime does not work: an earlier attempt
//! yielded to tokio while a read was not ready, and was slower (17.9k ->
//! 15.6k, 9.6k, 6.2k calls/s at 20, 50, 100 us): on a multi-thread runtime
//! the I/O driver belongs to whichever worker sleeps in it, so the spinning
//! worker found no new readiness. Client polling was slower in an earlier
//! attempt (63-84% of raw), and in the first version of the current one
//! (11.8-13.7k calls/s against 25-29k without it), which also polled after
//! the answer came, while the answered call had not yet taken it (the
//! pending table counted such calls as waiting): the spinning connection
//! held the worker that call needed. A client polls only while a call
//! waits for its answer.
//!
//! Every load loop stops at its deadline and after
//! [`echo::MAX_CALLS_PER_TASK`] calls, every raw read and write gives up
//! after 5 s, and the server processes end when their stdin closes (or are
//! killed by PID).

use std::fmt::Write as _;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel::metrics::LatencyHistogram;

use crate::args;
use crate::child::ChildServer;
use crate::echo::{self, Clients, Framework, Sample, Scenario, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// The hidden subcommand that runs the raw ping-pong server process.
pub const SERVER_SUBCOMMAND: &str = "pingpong-server";

/// Bytes of each ping and pong: as many as the echo's message.
const MESSAGE_BYTES: usize = echo::MESSAGE.len();
/// Seconds per run in a full run and with `--quick`.
const DEFAULT_SECONDS: f64 = 2.0;
const QUICK_SECONDS: f64 = 0.5;
/// Rounds (the median is reported).
const DEFAULT_ROUNDS: usize = 5;
/// Keel's 1x1 QPS over the raw round trips/s that issue 15 asks for.
const TARGET_SHARE_OF_RAW: f64 = 0.95;
/// One call in flight on one connection.
const ONE_BY_ONE: Scenario = Scenario {
    connections: 1,
    per_connection: 1,
};

/// What `keel-bench pingpong --help` says about the subcommand.
pub const ABOUT: &str = "\
The floor under a 1x1 echo: a raw TCP ping-pong of 16-byte messages (blocking
sockets, TCP_NODELAY, the server in its own process) against Keel's (baidu_std)
and tonic's (gRPC) 1x1 echo, each with its own client, alternating in one run.
Prints round trips or calls per second, p50/p99, server CPU per call, each
framework's share of the raw rate, and whether Keel reaches 95% of it.

Defaults: --seconds 2, --rounds 5 (a run takes ~35 s); --quick: 0.5 s runs,
~10 s.";

/// Entry point of the hidden `keel-bench pingpong-server`: binds
/// 127.0.0.1:0, prints `port N`, answers every 16 bytes read on a
/// connection with the same 16 bytes (a thread per connection), and exits
/// when stdin closes.
pub fn server_main() -> ExitCode {
    let listener = match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{SERVER_SUBCOMMAND}: cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("{SERVER_SUBCOMMAND}: the listener has no address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if crate::child::announce_port(&mut out, port).is_err() {
        return ExitCode::FAILURE;
    }
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || pong(stream));
        }
    });
    // This thread waits for the parent to hang up; the process then ends,
    // connection threads and all.
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    while matches!(stdin.read_line(&mut line), Ok(n) if n > 0) {
        line.clear();
    }
    ExitCode::SUCCESS
}

/// Sends back every message read on `stream` until it closes.
fn pong(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = [0u8; MESSAGE_BYTES];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            return;
        }
    }
}

/// The raw client: one connection to the ping-pong server.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Result<RawClient, String> {
        let stream = echo::idle_socket(addr)?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        Ok(RawClient { stream })
    }

    /// Round trips, one at a time, until `length` has passed (or
    /// [`echo::MAX_CALLS_PER_TASK`] of them); their latencies and the time
    /// they took.
    fn run(&mut self, length: Duration) -> Result<(LatencyHistogram, Duration), String> {
        let mut hist = LatencyHistogram::new();
        let ping = *b"0123456789abcdef";
        let mut pong = [0u8; MESSAGE_BYTES];
        let started = Instant::now();
        let until = started + length;
        for _ in 0..echo::MAX_CALLS_PER_TASK {
            let t = Instant::now();
            if t >= until {
                break;
            }
            self.stream
                .write_all(&ping)
                .map_err(|e| format!("raw: cannot send: {e}"))?;
            self.stream
                .read_exact(&mut pong)
                .map_err(|e| format!("raw: cannot read the reply: {e}"))?;
            hist.record(t.elapsed().as_micros() as u64);
        }
        if pong != ping {
            return Err(format!("raw: the reply came back as {pong:?}"));
        }
        Ok((hist, started.elapsed()))
    }
}

/// One raw run, measured as `echo` measures a framework's (its allocation
/// figures are not: the raw server's allocator is not asked).
fn raw_once(
    client: &mut RawClient,
    server: &ChildServer,
    length: Duration,
    ticks_per_us: f64,
) -> Result<Sample, String> {
    let server_ticks = server.cpu_ticks()?;
    let client_ticks = echo::own_cpu_ticks()?;
    let (hist, elapsed) = client.run(length)?;
    let client_ticks = echo::own_cpu_ticks()? - client_ticks;
    let server_ticks = server.cpu_ticks()? - server_ticks;
    let calls = hist.count().max(1) as f64;
    Ok(Sample {
        qps: hist.count() as f64 / elapsed.as_secs_f64(),
        p50_us: hist.quantile(0.5) as f64,
        p99_us: hist.quantile(0.99) as f64,
        server_cpu_us: server_ticks as f64 / ticks_per_us / calls,
        client_cpu_us: client_ticks as f64 / ticks_per_us / calls,
        server_allocs: f64::NAN,
        client_allocs: f64::NAN,
    })
}

/// How long closing a run's Keel connection may take.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// One Keel run on a connection of its own, busy-polling on both sides or
/// on neither (`server` was started to match): the channel is made, warmed
/// up, measured, dropped, and its connection closed before the next run.
/// A Keel connection polls only while it is the one open connection of its
/// process (see keel's `busy_poll`), as a lone caller's is.
fn keel_once(
    rt: &tokio::runtime::Runtime,
    server: &mut ServerProcess,
    busy_poll: bool,
    runs: &args::Runs,
    ticks_per_us: f64,
) -> Result<Sample, String> {
    let clients = Clients::keel_with(&server.addr.to_string(), 1, busy_poll)?;
    let sample = clients.arm(rt, 1).fire(rt, runs.warm_up()).and_then(|_| {
        echo::run_once(
            rt,
            server,
            &clients,
            ONE_BY_ONE,
            runs.run_length(),
            ticks_per_us,
        )
    });
    // Dropped inside the runtime its connection's task lives on, whatever
    // the run gave.
    rt.block_on(async move {
        drop(clients);
        let closing = async {
            while keel::connections::connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(CLOSE_BOUND, closing)
            .await
            .map_err(|_| format!("keel's connection was not closed within {CLOSE_BOUND:?}"))
    })?;
    sample
}

/// Entry point of `keel-bench pingpong`.
pub fn main(a: &args::RunArgs) -> ExitCode {
    let runs = a.runs(args::RunDefaults {
        seconds: DEFAULT_SECONDS,
        quick_seconds: QUICK_SECONDS,
        rounds: DEFAULT_ROUNDS,
    });
    args::main("pingpong", &runs, run)
}

/// The rows of the report, in their order.
const ROWS: [&str; 4] = ["raw", "keel", "keel, no polling", "tonic"];
/// The row of Keel as configured by default, and of tonic.
const KEEL: usize = 1;
const TONIC: usize = 3;

/// Everything `run` found, for the report.
struct Results {
    /// Samples per row of [`ROWS`], a sample per round.
    samples: [Vec<Sample>; ROWS.len()],
    clk_tck: f64,
    load_start: String,
    load_end: String,
    elapsed: Duration,
}

fn run(runs: &args::Runs) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let clk_tck = echo::clock_ticks_per_second();
    let ticks_per_us = clk_tck / 1e6;
    let rt = echo::runtime("client")?;
    let raw_server = ChildServer::start("raw ping-pong", &[SERVER_SUBCOMMAND.to_string()])?;
    let mut keel_server = ServerProcess::start(Framework::Keel, None)?;
    let mut unpolled_server =
        ServerProcess::start_with(Framework::Keel, None, &["--no-busy-poll"])?;
    let mut tonic_server = ServerProcess::start(Framework::Tonic, None)?;
    let mut raw = RawClient::connect(raw_server.addr)?;
    raw.run(runs.warm_up())?;
    let tonic = rt.block_on(Clients::connect(Framework::Tonic, tonic_server.addr, 1))?;
    tonic.arm(&rt, 1).fire(&rt, runs.warm_up())?;
    eprintln!(
        "keel-bench pingpong: {} rounds x (raw, keel, keel without polling, tonic) x {:.1} s",
        runs.rounds, runs.seconds
    );
    let mut samples: [Vec<Sample>; ROWS.len()] = Default::default();
    for round in 0..runs.rounds {
        eprint!("\r  round {}/{}", round + 1, runs.rounds);
        samples[0].push(raw_once(
            &mut raw,
            &raw_server,
            runs.run_length(),
            ticks_per_us,
        )?);
        samples[KEEL].push(keel_once(&rt, &mut keel_server, true, runs, ticks_per_us)?);
        samples[KEEL + 1].push(keel_once(
            &rt,
            &mut unpolled_server,
            false,
            runs,
            ticks_per_us,
        )?);
        samples[TONIC].push(echo::run_once(
            &rt,
            &mut tonic_server,
            &tonic,
            ONE_BY_ONE,
            runs.run_length(),
            ticks_per_us,
        )?);
    }
    eprintln!();
    rt.block_on(async move { drop(tonic) });
    drop(raw);
    drop((keel_server, unpolled_server, tonic_server));
    drop(raw_server);
    let results = Results {
        samples,
        clk_tck,
        load_start,
        load_end: load_average(),
        elapsed: started.elapsed(),
    };
    Ok(report(runs, cores, &results))
}

fn report(runs: &args::Runs, cores: usize, r: &Results) -> String {
    let med = |row: usize, field: fn(&Sample) -> f64| {
        let xs: Vec<f64> = r.samples[row].iter().map(field).collect();
        median(&xs).unwrap_or(f64::NAN)
    };
    let int = crate::summary::count_cell;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench pingpong: 1 connection, 1 call in flight, 16-byte messages on 127.0.0.1: raw TCP vs keel {} (baidu_std) vs {} (gRPC)",
        env!("CARGO_PKG_VERSION"),
        crate::summary::TONIC
    );
    let _ = writeln!(
        out,
        "  raw: blocking std::net sockets, TCP_NODELAY, server thread in its own process; keel (busy-polling on both sides, and on neither; a channel per run), tonic: `echo`'s 1x1, each server in its own process"
    );
    let _ = writeln!(
        out,
        "  medians of {} rounds of {:.1} s, the rows alternating; CPU from /proc/<pid>/stat at {} ticks/s",
        runs.rounds, runs.seconds, r.clk_tck
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&r.load_start, &r.load_end),
        r.elapsed.as_secs_f64(),
    );
    out.push('\n');
    let raw_qps = med(0, |x| x.qps);
    let mut t = Table::new()
        .column("", Align::Left)
        .column("per second", Align::Right)
        .column("of raw", Align::Right)
        .column_after_rule("p50 us", Align::Right)
        .column("p99 us", Align::Right)
        .column_after_rule("server CPU us/call", Align::Right);
    for (row, name) in ROWS.iter().enumerate() {
        let qps = med(row, |x| x.qps);
        t.row(vec![
            name.to_string(),
            int(qps),
            format!("{:.1}%", qps / raw_qps * 100.0),
            int(med(row, |x| x.p50_us)),
            int(med(row, |x| x.p99_us)),
            format!("{:.1}", med(row, |x| x.server_cpu_us)),
        ]);
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "  per second: raw round trips, or echo calls; server CPU: the whole server process over a run, divided by its calls\n",
    );
    let per_round: Vec<String> = r.samples[0]
        .iter()
        .zip(&r.samples[KEEL])
        .map(|(raw, keel)| format!("{:.1}%", keel.qps / raw.qps * 100.0))
        .collect();
    let _ = writeln!(out, "\nkeel/raw per round: {}", per_round.join(", "));
    let (keel_qps, tonic_qps) = (med(KEEL, |x| x.qps), med(TONIC, |x| x.qps));
    let _ = writeln!(
        out,
        "ratios of medians: keel/raw {:.1}%, tonic/raw {:.1}%, keel/tonic {:.2}x",
        keel_qps / raw_qps * 100.0,
        tonic_qps / raw_qps * 100.0,
        keel_qps / tonic_qps
    );
    let share = keel_qps / raw_qps;
    let _ = writeln!(
        out,
        "\ntarget:\n  1x1: keel >= {:.0}% of raw ping-pong: {} / {} = {:.1}%  {}",
        TARGET_SHARE_OF_RAW * 100.0,
        int(keel_qps),
        int(raw_qps),
        share * 100.0,
        if share >= TARGET_SHARE_OF_RAW {
            "met"
        } else {
            "NOT met"
        }
    );
    let (cpu, cpu_unpolled) = (
        med(KEEL, |x| x.server_cpu_us),
        med(KEEL + 1, |x| x.server_cpu_us),
    );
    let _ = writeln!(
        out,
        "  1x1: keel's server CPU per call <= half of keel's without polling: {cpu:.1} / {cpu_unpolled:.1} us = {:.0}%  {}",
        cpu / cpu_unpolled * 100.0,
        if cpu <= cpu_unpolled / 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    // What bounds that cell: a polling server is busy between calls, so
    // its CPU per call follows the call's period; a sleeping one pays the
    // wakeup the raw server pays.
    let period = 1e6 / keel_qps;
    let busy = cpu / period;
    let half = cpu_unpolled / 2.0;
    let _ = writeln!(
        out,
        "    bound: keel's call period (1/QPS) is {period:.1} us and its polling server is busy {:.0}% of it; \
         half the unpolled CPU ({half:.1} us) at that share needs {} calls/s; \
         the raw server, which sleeps, spends {:.1} us per round trip",
        busy * 100.0,
        int(1e6 * busy / half),
        med(0, |x| x.server_cpu_us),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_client_and_server_exchange_the_message() {
        let listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("one connection");
            pong(stream);
        });
        let mut client = RawClient::connect(addr).expect("connects");
        let (hist, _) = client.run(Duration::from_millis(20)).expect("round trips");
        assert!(hist.count() > 0);
        drop(client);
        server
            .join()
            .expect("the server thread ends when the client closes");
    }
}

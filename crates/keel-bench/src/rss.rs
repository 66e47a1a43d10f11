//! `keel-bench rss`: how much resident memory a Keel server gives back to
//! the operating system after a burst, and what that costs in QPS, for
//! each way of giving it back.
//!
//! # What is measured
//!
//! Each candidate is a Keel echo server in its own process (an allocator
//! is chosen per process, see [`crate::alloc`]):
//!
//! - **glibc**: glibc's malloc as is, the server's quiet trim off;
//! - **glibc + quiet trim**: Keel's default, `malloc_trim(0)` once the
//!   server has been quiet for a second ([`keel::server::ServerBuilder::quiet_trim`]);
//! - **mimalloc**: mimalloc with its default purging (freed pages are
//!   decommitted after a delay), quiet trim off;
//! - **mimalloc, purge 0**: mimalloc purging at once (`MIMALLOC_PURGE_DELAY=0`).
//!
//! For each, from this process: a warm-up of 1,200 traced calls (rpcz's
//! store of recent traces, a bounded cache, is full from then on), 2 s to
//! settle, **RSS at start** (`/proc/<pid>/statm`); a burst of 3,000 connections (plain
//! sockets, each makes one baidu_std echo call and stays open until all
//! 3,000 have answered, then all close); a burst of 50,000 concurrent calls
//! (one Keel client task per call over 16 connections); four echo calls of
//! 8 MiB, one after the other; then 5 s of quiet
//! (the issue's definition) and **RSS after**. **Peak** is the kernel's
//! high-water mark (`VmHWM`). Then the speed side: echo at 1 connection ×
//! 128 calls in flight (QPS), and 64 echo calls of 1 MiB one after the
//! other (MiB/s each way: large messages are where the allocator's
//! thresholds show), runs alternating between the candidates for
//! `--rounds` rounds, the medians reported.
//!
//! The bound the issue sets: RSS after the quiet within 2 MB of the start.
//!
//! ```text
//!   keel-bench rss ──spawns── keel-bench rss-server <candidate>   (x4)
//!        │                         stdout: "port N allocator A"
//!        │                         stdin closed ──► exits
//!        └── reads /proc/<pid>/statm and /proc/<pid>/status (VmHWM)
//! ```

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use keel::bytes::BytesMut;
use keel_examples::example::{EchoRequest, EchoServiceClient};
use keel_wire::baidu_std::{Limits, RequestHeader, decode_frame, encode_request};
use prost::Message as _;

use crate::args;
use crate::echo::{Clients, MESSAGE, idle_socket, keel_raw_call};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// The hidden subcommand that runs one candidate's server.
pub const SERVER_SUBCOMMAND: &str = "rss-server";

/// What `keel-bench rss --help` says about the subcommand.
pub const ABOUT: &str = "\
RSS given back to the OS after a burst, and echo QPS, for each way of giving
it back: glibc malloc as is, glibc with Keel's quiet trim (malloc_trim once
the server is quiet; the default), mimalloc, and mimalloc purging at once.
Each is a Keel echo server in its own process. Per candidate: RSS at start, a
burst of 3,000 connections (one call each), one of 50,000 concurrent calls and
four 8 MiB calls, 5 s of quiet, RSS after (bound: within 2 MB of the start),
peak RSS; then echo QPS at 1 connection x 128, and MiB/s of 1 MiB echo calls
one at a time, alternating between candidates.

Defaults: --seconds 3 per QPS run, --rounds 3 (a full run takes ~2 min);
--quick: 0.5 s runs.";

/// Connections of the first burst.
const BURST_CONNECTIONS: usize = 3_000;
/// Calls in flight at once in the second burst, and the connections
/// they share.
const BURST_CALLS: usize = 50_000;
const BURST_CALL_CONNECTIONS: usize = 16;
/// The issue's quiet period, and its bound.
const QUIET: Duration = Duration::from_secs(5);
const BOUND: u64 = 2 << 20;
/// Time for a fresh server to settle before RSS at start.
const SETTLE: Duration = Duration::from_secs(2);
/// Deadline of each call of the bursts.
const BURST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a server's first line.
const START_WAIT: Duration = Duration::from_secs(10);
/// Calls in flight on the one connection of the QPS runs.
const QPS_IN_FLIGHT: usize = 128;
/// The large calls of the bursts: their message, and how many.
const LARGE_MESSAGE: usize = 8 << 20;
const LARGE_CALLS: usize = 4;
/// The large-message speed runs: their message, and the calls of a run.
const SPEED_MESSAGE: usize = 1 << 20;
const SPEED_CALLS: usize = 64;

/// One way of giving memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    name: &'static str,
    /// `quiet_trim` of the server.
    quiet_trim: bool,
    /// Environment of the server process.
    env: &'static [(&'static str, &'static str)],
}

const CANDIDATES: [Candidate; 4] = [
    Candidate {
        name: "glibc",
        quiet_trim: false,
        env: &[],
    },
    Candidate {
        name: "glibc + quiet trim",
        quiet_trim: true,
        env: &[],
    },
    Candidate {
        name: "mimalloc",
        quiet_trim: false,
        env: &[(crate::alloc::VARIABLE, crate::alloc::MIMALLOC_VALUE)],
    },
    Candidate {
        name: "mimalloc, purge 0",
        quiet_trim: false,
        env: &[
            (crate::alloc::VARIABLE, crate::alloc::MIMALLOC_VALUE),
            ("MIMALLOC_PURGE_DELAY", "0"),
        ],
    },
];

/// `keel-bench rss-server <trim|no-trim>`: a Keel echo server on
/// 127.0.0.1:0 with the quiet trim on or off; prints `port N allocator A`
/// and exits when stdin closes.
pub fn server_main(trim: &str) -> ExitCode {
    let quiet_trim = match trim {
        "trim" => true,
        "no-trim" => false,
        _ => {
            eprintln!(
                "usage: keel-bench {SERVER_SUBCOMMAND} trim|no-trim  (started by `keel-bench rss`)"
            );
            return ExitCode::from(2);
        }
    };
    let rt = match crate::echo::runtime("server") {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{SERVER_SUBCOMMAND}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = rt.block_on(
        keel::Server::builder()
            .add_service(keel_examples::example::EchoServiceServer::new(
                keel_examples::Echo,
            ))
            .quiet_trim(quiet_trim)
            .bind("127.0.0.1:0"),
    );
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{SERVER_SUBCOMMAND}: cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(
        out,
        "port {} allocator {}",
        server.local_addr().port(),
        crate::alloc::name()
    )
    .and_then(|()| out.flush())
    .is_err()
    {
        return ExitCode::FAILURE;
    }
    // Serve until the parent hangs up.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
    drop(server);
    rt.shutdown_background();
    ExitCode::SUCCESS
}

/// A candidate's server process, ended when dropped.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    allocator: String,
}

impl ServerProcess {
    fn start(c: &Candidate) -> Result<ServerProcess, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start a server: {e}"))?;
        let mut command = Command::new(exe);
        command
            .args([
                SERVER_SUBCOMMAND,
                if c.quiet_trim { "trim" } else { "no-trim" },
            ])
            .env_remove(crate::alloc::VARIABLE)
            .envs(c.env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {} server: {e}", c.name))?;
        let stdin = child.stdin.take();
        let (tx, lines): (_, Receiver<String>) = channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = ServerProcess {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            allocator: String::new(),
        };
        let line = lines
            .recv_timeout(START_WAIT)
            .map_err(|_| format!("the {} server did not start", c.name))?;
        let (port, allocator) = parse_first_line(&line)
            .ok_or_else(|| format!("the {} server said {line:?}", c.name))?;
        server.addr.set_port(port);
        server.allocator = allocator.to_string();
        Ok(server)
    }

    fn resident_bytes(&self) -> Result<u64, String> {
        let pid = self.child.id();
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .map_err(|e| format!("cannot read /proc/{pid}/statm: {e}"))?;
        Ok(statm_resident(&statm))
    }

    fn peak_resident_bytes(&self) -> Result<u64, String> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
        high_water_mark(&status).ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        crate::child::stop(&mut self.child, self.stdin.take(), "rss");
    }
}

/// `port N allocator A`.
fn parse_first_line(line: &str) -> Option<(u16, &str)> {
    let rest = line.strip_prefix("port ")?;
    let (port, allocator) = rest.split_once(" allocator ")?;
    Some((port.parse().ok()?, allocator))
}

/// The second field of a `statm` line (resident pages), in bytes.
fn statm_resident(statm: &str) -> u64 {
    statm
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// `VmHWM:  1234 kB` of `/proc/<pid>/status`, in bytes.
fn high_water_mark(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What one candidate's RSS did.
#[derive(Debug, Clone, Copy)]
struct Memory {
    start: u64,
    peak: u64,
    after: u64,
}

fn payload() -> Vec<u8> {
    EchoRequest {
        message: MESSAGE.to_string(),
    }
    .encode_to_vec()
}

/// 3,000 connections, each one call, all open at once, then all closed.
fn connection_burst(addr: SocketAddr) -> Result<(), String> {
    let payload = payload();
    let mut streams = Vec::with_capacity(BURST_CONNECTIONS);
    for i in 0..BURST_CONNECTIONS {
        let mut s = idle_socket(addr)?;
        keel_raw_call(&mut s, &payload, i as i64 + 1)?;
        streams.push(s);
    }
    drop(streams);
    Ok(())
}

/// 50,000 calls started at once over 16 connections; all must succeed.
fn call_burst(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Result<(), String> {
    rt.block_on(async {
        let mut clients = Vec::with_capacity(BURST_CALL_CONNECTIONS);
        for _ in 0..BURST_CALL_CONNECTIONS {
            let ch = keel::Channel::builder(&addr.to_string())
                .timeout(Some(BURST_TIMEOUT))
                .build()
                .map_err(|e| format!("{addr}: {e}"))?;
            clients.push(EchoServiceClient::new(&ch));
        }
        let request = EchoRequest {
            message: MESSAGE.to_string(),
        };
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..BURST_CALLS {
            let (client, request) = (clients[i % clients.len()].clone(), request.clone());
            calls.spawn(async move { client.echo(&request).await.map(drop) });
        }
        let mut failed = 0;
        while let Some(r) = calls.join_next().await {
            if !matches!(r, Ok(Ok(()))) {
                failed += 1;
            }
        }
        if failed == 0 {
            Ok(())
        } else {
            Err(format!("{failed} of {BURST_CALLS} burst calls failed"))
        }
    })
}

/// `calls` echo calls of `size` bytes, one after the other, on one
/// channel; each answer must be the whole message. Returns the time they
/// took.
fn large_calls(
    rt: &tokio::runtime::Runtime,
    client: &EchoServiceClient,
    size: usize,
    calls: usize,
) -> Result<Duration, String> {
    let request = EchoRequest {
        message: "x".repeat(size),
    };
    rt.block_on(async {
        let started = std::time::Instant::now();
        for i in 0..calls {
            let reply = client
                .echo(&request)
                .timeout(BURST_TIMEOUT)
                .await
                .map_err(|e| format!("large call {i} of {size} bytes: {e}"))?;
            if reply.message.len() != size {
                return Err(format!(
                    "large call {i}: {} bytes came back, not {size}",
                    reply.message.len()
                ));
            }
        }
        Ok(started.elapsed())
    })
}

/// A channel to `addr` for the large calls.
fn large_client(addr: SocketAddr) -> Result<EchoServiceClient, String> {
    let ch = keel::Channel::builder(&addr.to_string())
        .timeout(Some(BURST_TIMEOUT))
        .build()
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(EchoServiceClient::new(&ch))
}

/// Traced calls of the warm-up: more than rpcz's store keeps (1,024 trees).
const WARM_TRACES: i64 = 1_200;

/// The warm-up: one connection, [`WARM_TRACES`] calls each with a trace id
/// of its own, which rpcz always samples. So the store of recent traces, a
/// bounded cache the console shows, is full before the start (a burst then
/// replaces its trees one for one), as in any server that has served a
/// while.
fn warm_up(addr: SocketAddr) -> Result<(), String> {
    let payload = payload();
    let mut out = BytesMut::new();
    for id in 1..=WARM_TRACES {
        let mut header = RequestHeader::new("example.EchoService", "Echo", id);
        header.trace_id = id;
        header.span_id = id;
        encode_request(
            &mut out,
            &header,
            payload.len(),
            |dst| dst.extend_from_slice(&payload),
            &[],
        )
        .map_err(|e| format!("cannot encode a request: {e}"))?;
    }
    let mut s = idle_socket(addr)?;
    s.write_all(&out)
        .map_err(|e| format!("cannot send the warm-up: {e}"))?;
    let (mut buf, mut chunk, mut answered) = (BytesMut::new(), [0u8; 4096], 0);
    while answered < WARM_TRACES {
        match decode_frame(&mut buf, &Limits::default()) {
            Ok(Some(reply)) if reply.meta.error_code() == 0 => answered += 1,
            Ok(Some(reply)) => {
                return Err(format!(
                    "a warm-up call failed: {}",
                    reply.meta.error_code()
                ));
            }
            Ok(None) => {
                let n = std::io::Read::read(&mut s, &mut chunk)
                    .map_err(|e| format!("cannot read the warm-up's answers: {e}"))?;
                if n == 0 {
                    return Err("the server closed the warm-up connection".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => return Err(format!("a bad frame in the warm-up: {e}")),
        }
    }
    Ok(())
}

fn measure_memory(rt: &tokio::runtime::Runtime, server: &ServerProcess) -> Result<Memory, String> {
    warm_up(server.addr)?;
    std::thread::sleep(SETTLE);
    let start = server.resident_bytes()?;
    connection_burst(server.addr)?;
    call_burst(rt, server.addr)?;
    {
        let client = large_client(server.addr)?;
        large_calls(rt, &client, LARGE_MESSAGE, LARGE_CALLS)?;
        // The channel, its connection and its buffers go before the quiet.
        rt.block_on(async move { drop(client) });
    }
    std::thread::sleep(QUIET);
    let after = server.resident_bytes()?;
    Ok(Memory {
        start,
        peak: server.peak_resident_bytes()?,
        after,
    })
}

#[derive(Debug, Clone, PartialEq)]
struct Options {
    runs: args::Runs,
}

fn run(opts: &Options) -> Result<String, String> {
    let load_before = load_average();
    let rt = crate::echo::runtime("client")?;
    let mut servers = Vec::with_capacity(CANDIDATES.len());
    let mut memory = Vec::with_capacity(CANDIDATES.len());
    for c in &CANDIDATES {
        eprintln!("rss: {} ...", c.name);
        let server = ServerProcess::start(c)?;
        memory.push(measure_memory(&rt, &server)?);
        servers.push(server);
    }
    // QPS: every candidate's server is up; runs alternate between them.
    let length = Duration::from_secs_f64(opts.runs.seconds);
    let mut qps: Vec<Vec<f64>> = vec![Vec::new(); CANDIDATES.len()];
    let mut speed: Vec<Vec<f64>> = vec![Vec::new(); CANDIDATES.len()];
    let clients: Vec<Clients> = servers
        .iter()
        .map(|s| Clients::keel(&s.addr.to_string(), 1))
        .collect::<Result<_, _>>()?;
    let large: Vec<EchoServiceClient> = servers
        .iter()
        .map(|s| large_client(s.addr))
        .collect::<Result<_, _>>()?;
    for (c, l) in clients.iter().zip(&large) {
        // Warm-up: connections open, pools filled.
        c.arm(&rt, QPS_IN_FLIGHT).fire(&rt, length / 4)?;
        large_calls(&rt, l, SPEED_MESSAGE, SPEED_CALLS / 4)?;
    }
    for round in 0..opts.runs.rounds {
        for k in 0..CANDIDATES.len() {
            let i = (round + k) % CANDIDATES.len();
            eprintln!(
                "rss: QPS round {} of {}, {}",
                round + 1,
                opts.runs.rounds,
                CANDIDATES[i].name
            );
            let (hist, elapsed) = clients[i].arm(&rt, QPS_IN_FLIGHT).fire(&rt, length)?;
            qps[i].push(hist.count() as f64 / elapsed.as_secs_f64());
            let elapsed = large_calls(&rt, &large[i], SPEED_MESSAGE, SPEED_CALLS)?;
            let mib = (SPEED_MESSAGE * SPEED_CALLS) as f64 / (1024.0 * 1024.0);
            speed[i].push(mib / elapsed.as_secs_f64());
        }
    }
    rt.block_on(async move { drop(large) });
    let qps: Vec<f64> = qps.iter().map(|q| median(q).unwrap_or(0.0)).collect();
    let speed: Vec<f64> = speed.iter().map(|q| median(q).unwrap_or(0.0)).collect();
    let allocators: Vec<String> = servers.iter().map(|s| s.allocator.clone()).collect();
    drop(servers);
    Ok(report(
        opts,
        &allocators,
        &memory,
        &qps,
        &speed,
        &load_before,
    ))
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

fn report(
    opts: &Options,
    allocators: &[String],
    memory: &[Memory],
    qps: &[f64],
    speed: &[f64],
    load_before: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench rss: Keel echo server per candidate; bursts of {} connections, {} \
         concurrent calls and {LARGE_CALLS} calls of {} MiB, then {} s quiet; QPS at 1 \
         connection x {QPS_IN_FLIGHT}, median of {} runs of {} s; MiB/s: {SPEED_CALLS} echo \
         calls of {} MiB one at a time, MiB each way per second, median of {} runs\n",
        crate::echo::group_thousands(BURST_CONNECTIONS as u64),
        crate::echo::group_thousands(BURST_CALLS as u64),
        LARGE_MESSAGE >> 20,
        QUIET.as_secs(),
        opts.runs.rounds,
        opts.runs.seconds,
        SPEED_MESSAGE >> 20,
        opts.runs.rounds,
    );
    let mut t = Table::new()
        .column("candidate", Align::Left)
        .column("allocator", Align::Left)
        .column("start MiB", Align::Right)
        .column("peak MiB", Align::Right)
        .column("after MiB", Align::Right)
        .column("after-start", Align::Right)
        .column("<= 2 MB", Align::Left)
        .column_after_rule("QPS", Align::Right)
        .column("QPS / glibc", Align::Right)
        .column("1 MiB MiB/s", Align::Right)
        .column("MiB/s / glibc", Align::Right)
        .column("after-start / glibc", Align::Right);
    let base_qps = qps.first().copied().unwrap_or(0.0);
    let base_speed = speed.first().copied().unwrap_or(0.0);
    let base_kept = memory
        .first()
        .map_or(0, |m| m.after.saturating_sub(m.start));
    for (i, c) in CANDIDATES.iter().enumerate() {
        let m = memory[i];
        let kept = m.after as i64 - m.start as i64;
        t.row(vec![
            c.name.to_string(),
            allocators[i].clone(),
            mib(m.start),
            mib(m.peak),
            mib(m.after),
            format!("{:+.1} MiB", kept as f64 / (1024.0 * 1024.0)),
            if kept <= BOUND as i64 { "yes" } else { "no" }.to_string(),
            format!("{:.0}", qps[i]),
            format!("{:.2}x", qps[i] / base_qps.max(1.0)),
            format!("{:.0}", speed[i]),
            format!("{:.2}x", speed[i] / base_speed.max(1.0)),
            format!("{:.2}x", kept.max(0) as f64 / (base_kept.max(1)) as f64),
        ]);
    }
    let _ = write!(out, "{t}");
    let _ = writeln!(
        out,
        "\nload average before: {load_before}; after: {}",
        load_average()
    );
    out
}

/// `keel-bench rss`.
pub fn main(a: &args::RunArgs) -> ExitCode {
    let defaults = args::RunDefaults {
        seconds: 3.0,
        quick_seconds: 0.5,
        rounds: 3,
    };
    let opts = Options {
        runs: a.runs(defaults),
    };
    args::main("rss", &opts, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_and_high_water_mark_parse() {
        assert_eq!(
            parse_first_line("port 4000 allocator mimalloc"),
            Some((4000, "mimalloc"))
        );
        assert_eq!(parse_first_line("port x allocator glibc"), None);
        let status = "Name:\tkeel-bench\nVmPeak:\t  9000 kB\nVmHWM:\t  4321 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(high_water_mark(status), Some(4321 * 1024));
        assert_eq!(high_water_mark("Name: x\n"), None);
        assert_eq!(statm_resident("2000 845 300 1 0 600 0\n"), 845 * 4096);
        assert_eq!(statm_resident(""), 0);
    }

    #[test]
    fn candidates_differ() {
        for (i, a) in CANDIDATES.iter().enumerate() {
            for b in &CANDIDATES[i + 1..] {
                assert!(a.name != b.name && (a.quiet_trim, a.env) != (b.quiet_trim, b.env));
            }
        }
    }
}

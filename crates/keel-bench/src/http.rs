//! `keel-bench http`: what the HTTP/1.1 path costs, and what a console page
//! costs on a busy server.
//!
//! # What is measured
//!
//! - **Calls**: echo with 32 calls in flight from one Keel channel to a
//!   Keel server in a child process, over baidu_std (protobuf, one
//!   connection), gRPC (protobuf, one HTTP/2 connection) and HTTP/1.1
//!   (JSON, the proto3 mapping both ways, up to 32 keep-alive
//!   connections): QPS, latency, client allocations per call, and the
//!   ratio to baidu_std. The same generated client makes every call; only
//!   the channel's URL differs.
//! - **Pages**: the time to load `/status`, `/metrics`, `/vars`,
//!   `/connections` and `/invokers` (one keep-alive connection, the page
//!   read to its end) from an in-process server while 10,000 other
//!   connections are open to it (held by a child process) and 1,000
//!   cluster invokers exist in the process: median and p99 µs, and bytes.
//!
//! # Why it is fair
//!
//! The three protocols share the server, the client code, the message and
//! the in-flight count; the runs alternate. There is no peer to compare the
//! console with: the figure is absolute, and the issue's bar is "a few
//! milliseconds" with that many connections and invokers.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::args;
use crate::cluster::{measure, samples_table};
use crate::echo::{self, Clients, Framework, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// The internal subcommand that holds connections open for the page test.
pub const HOLD_SUBCOMMAND: &str = "hold-connections";

const DEFAULT_SECONDS: f64 = 3.0;
const QUICK_SECONDS: f64 = 0.5;
const DEFAULT_ROUNDS: usize = 3;
const IN_FLIGHT: usize = 32;
const HELD: usize = 10_000;
const QUICK_HELD: usize = 1_000;
const INVOKERS: usize = 1_000;
const PAGE_LOADS: usize = 200;
const PAGES: [&str; 5] = ["/status", "/metrics", "/vars", "/connections", "/invokers"];

/// What `keel-bench http --help` says about the subcommand.
pub const ABOUT: &str = "\
Echo with 32 calls in flight over baidu_std, gRPC and HTTP/1.1 JSON (one
Keel server in a child process, the same generated client); then console
page loads (/status, /metrics, /vars, /connections, /invokers) with 10,000
connections open and 1,000 invokers in the process.

Defaults: --seconds 3 (each call run; a full run takes ~45 s), --rounds 3
(runs per protocol, alternating); --quick: 0.5 s runs and 1,000 held
connections, a smoke run.";

const DEFAULTS: args::RunDefaults = args::RunDefaults {
    seconds: DEFAULT_SECONDS,
    quick_seconds: QUICK_SECONDS,
    rounds: DEFAULT_ROUNDS,
};

/// Entry point of `keel-bench http`.
pub fn main(a: &args::RunArgs) -> ExitCode {
    args::main("http", &a.runs(DEFAULTS), run)
}

/// `keel-bench hold-connections ADDR N`: opens `N` HTTP connections to
/// `ADDR`, makes one request on each, prints `ready`, and holds them until
/// its standard input closes.
pub fn hold_main(addr: &str, n: usize) -> ExitCode {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(addr).and_then(|mut s| {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")?;
            let mut reply = [0u8; 256];
            let _ = s.read(&mut reply)?;
            Ok(s)
        }) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                eprintln!("{HOLD_SUBCOMMAND}: connection {} failed: {e}", held.len());
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(held);
    ExitCode::SUCCESS
}

fn run(opts: &args::Runs) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    keel::rpcz::tracer().sampler().set_target(0);
    let rt = echo::runtime("client")?;
    let server = ServerProcess::start(Framework::Keel, Some(0))?;
    let addr = server.addr;
    let protocols = [
        ("baidu_std (protobuf)", addr.to_string()),
        ("gRPC (protobuf)", format!("grpc://{addr}")),
        ("HTTP/1.1 (JSON)", format!("http://{addr}")),
    ];
    let clients = rt.block_on(async {
        protocols
            .iter()
            .map(|(_, url)| Clients::keel(url, 1))
            .collect::<Result<Vec<_>, _>>()
    })?;
    eprintln!(
        "keel-bench http: echo 1x{IN_FLIGHT}, {} rounds x {} protocols x {:.1} s",
        opts.rounds,
        protocols.len(),
        opts.seconds
    );
    let runs: Vec<(&str, &Clients, usize)> = protocols
        .iter()
        .zip(&clients)
        .map(|((name, _), c)| (*name, c, IN_FLIGHT))
        .collect();
    let samples = measure(&rt, &runs, opts, ticks_per_us)?;
    drop(runs);
    rt.block_on(async move { drop(clients) });
    drop(server);

    let held = if opts.quick { QUICK_HELD } else { HELD };
    eprintln!("  console pages with {held} connections open and {INVOKERS} invokers");
    let pages = pages(held)?;
    let load_end = load_average();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench http: keel {} JSON over HTTP/1.1 vs protobuf over baidu_std and gRPC; console pages",
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
        "  echo of 16 bytes, 1 channel x {IN_FLIGHT} in flight, Keel server in a child process; medians of {} runs of {:.1} s",
        opts.rounds, opts.seconds
    );
    let names: Vec<&str> = protocols.iter().map(|(name, _)| *name).collect();
    let t = samples_table("protocol", &names, &samples, "QPS / baidu_std");
    let _ = write!(out, "{t}");
    let _ = writeln!(
        out,
        "  console page loads ({PAGE_LOADS} each, one keep-alive connection), {held} other connections open, {INVOKERS} invokers:"
    );
    let mut t = Table::new()
        .column("page", Align::Left)
        .column("p50 µs", Align::Right)
        .column("p99 µs", Align::Right)
        .column("bytes", Align::Right);
    for (page, p50, p99, bytes) in pages {
        t.row(vec![
            page.to_string(),
            format!("{p50:.0}"),
            format!("{p99:.0}"),
            echo::group_thousands(bytes as u64),
        ]);
    }
    let _ = write!(out, "{t}");
    Ok(out)
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from `reader`;
/// returns the body's length.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<usize, String> {
    let mut length = None;
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("reading a page: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("a page answered {status:?}"));
    }
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading a page: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((_, v)) = line
            .split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            length = v.trim().parse().ok();
        }
    }
    let length = length.ok_or("a page without Content-Length")?;
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading a page: {e}"))?;
    Ok(length)
}

/// Page load times on an in-process server with `held` connections from a
/// child process and [`INVOKERS`] invokers in this process.
fn pages(held: usize) -> Result<Vec<(&'static str, f64, f64, usize)>, String> {
    let rt = echo::runtime("server")?;
    let (server, channel, list) = rt.block_on(async {
        let server = keel::Server::builder()
            .add_service(keel_examples::example::EchoServiceServer::new(
                keel_examples::Echo,
            ))
            .bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind: {e}"))?;
        // Invokers for endpoints nobody serves: a channel's directory makes
        // one per endpoint whether or not it ever connects. Named by a
        // file, as a fleet of this size would be (a short URL per invoker).
        let endpoints: Vec<String> = (0..INVOKERS)
            .map(|i| format!("127.0.0.1:{}", 20_000 + i))
            .collect();
        let list =
            std::env::temp_dir().join(format!("keel-bench-http-{}.servers", std::process::id()));
        std::fs::write(&list, endpoints.join("\n"))
            .map_err(|e| format!("{}: {e}", list.display()))?;
        let channel =
            keel::Channel::new(&format!("file://{}", list.display())).map_err(|e| e.to_string());
        Ok::<_, String>((server, channel, list))
    })?;
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            let _ = std::fs::remove_file(&list);
            return Err(e);
        }
    };
    let addr: SocketAddr = server.local_addr();
    let deadline = Instant::now() + Duration::from_secs(10);
    while keel::cluster::live_invokers() < INVOKERS {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} invokers after 10 s",
                keel::cluster::live_invokers()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut holder = Command::new(exe)
        .args([HOLD_SUBCOMMAND, &addr.to_string(), &held.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the connection holder: {e}"))?;
    let mut ready = String::new();
    let stdout = holder.stdout.take().ok_or("no holder stdout")?;
    BufReader::new(stdout)
        .read_line(&mut ready)
        .map_err(|e| format!("the connection holder: {e}"))?;
    let result = (|| {
        if ready.trim() != "ready" {
            return Err("the connection holder could not open its connections".to_string());
        }
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // A browser sends a request in one segment: no Nagle wait.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut out = Vec::new();
        for page in PAGES {
            let mut times = Vec::with_capacity(PAGE_LOADS);
            let mut bytes = 0;
            let request = format!("GET {page} HTTP/1.1\r\nHost: bench\r\n\r\n");
            for _ in 0..PAGE_LOADS {
                let t = Instant::now();
                writer
                    .write_all(request.as_bytes())
                    .map_err(|e| format!("writing a request: {e}"))?;
                bytes = read_response(&mut reader)?;
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
            out.push((page, median(&times).unwrap_or(f64::NAN), p99, bytes));
        }
        Ok(out)
    })();
    drop(holder.stdin.take());
    let _ = holder.wait();
    rt.block_on(async move {
        drop(channel);
        drop(server);
    });
    let _ = std::fs::remove_file(&list);
    result
}

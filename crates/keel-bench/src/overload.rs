//! `keel-bench overload`: a server offered far more than it can do, with
//! no limit, a fixed concurrency limit and the adaptive one, side by side.
//!
//! The server runs on one worker thread and each call spins the CPU for
//! `--work-us` (default 100 µs, in two halves with a yield between, as a
//! handler waiting on I/O would): about 10,000 calls a second at most. 128
//! callers (closed loop, on a runtime of their own) offer many times that:
//! each refused call comes back at once and is sent again. Without a limit
//! every call queues behind the others and its latency is the queue's;
//! with one, the excess is refused with `ELIMIT` and what is admitted keeps
//! close to the work's own latency. For each setting: answered calls a
//! second (goodput), refusals a second, p50 and p99 latency of the answered
//! calls, and the live heap after the run against before it (the counting
//! allocator): overload must not grow memory.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel::server::AdaptiveLimit;
use keel::{Channel, Code, Context, Server, Status};
use keel_examples::example::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer,
};

use crate::table::{Align, Table};

pub const ABOUT: &str = "A server that can do ~10,000 calls/s (one thread, 100 µs of CPU \
each) offered many times that by 128 closed-loop callers: no limit vs a fixed \
max_concurrency vs the adaptive limit. Prints goodput, refusals, p50/p99 latency of \
answered calls and the live heap before and after.";

/// Flags of `keel-bench overload`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Args {
    /// Seconds per setting
    #[arg(long, default_value_t = 5.0, value_parser = crate::args::seconds)]
    seconds: f64,
    /// CPU time each call spins, in microseconds
    #[arg(long, default_value_t = 100)]
    work_us: u64,
    /// Callers (closed loop)
    #[arg(long, default_value_t = 128)]
    callers: usize,
    /// The fixed limit compared
    #[arg(long, default_value_t = 8)]
    fixed: usize,
}

/// A handler that spins the CPU.
struct Spin(Duration);

impl EchoService for Spin {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        // Half the work, a wait (as for a database), the other half: calls
        // in flight overlap and queue for the one thread, as they would
        // for a busy server's CPUs.
        for _ in 0..2 {
            let until = Instant::now() + self.0 / 2;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        }
        response.message.clone_from(&req.message);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Setting {
    None,
    Fixed(usize),
    Adaptive,
}

impl Setting {
    fn name(self) -> String {
        match self {
            Setting::None => "no limit".into(),
            Setting::Fixed(n) => format!("max_concurrency {n}"),
            Setting::Adaptive => "adaptive".into(),
        }
    }
}

struct Measured {
    goodput: f64,
    refused: f64,
    p50_us: u64,
    p99_us: u64,
    other_errors: u64,
    heap_grown: i64,
    limit_after: Option<u64>,
}

pub fn main(args: &Args) -> ExitCode {
    crate::args::main("overload", args, run)
}

fn run(args: &Args) -> Result<String, String> {
    let settings = [Setting::None, Setting::Fixed(args.fixed), Setting::Adaptive];
    // A first, unreported run fills what the process keeps once (rpcz's
    // store of recent traces, pools), so the heap columns compare settings.
    measure(
        &Args {
            seconds: 1.0,
            ..*args
        },
        Setting::None,
    )?;
    let mut results = Vec::new();
    for setting in settings {
        results.push((setting, measure(args, setting)?));
    }
    let base = results[0].1.p99_us.max(1) as f64;
    let mut table = Table::new()
        .column("setting", Align::Left)
        .column("answered/s", Align::Right)
        .column("refused/s", Align::Right)
        .column("p50 µs", Align::Right)
        .column("p99 µs", Align::Right)
        .column("p99 vs none", Align::Right)
        .column("other errors", Align::Right)
        .column("limit at end", Align::Right)
        .column("heap after-before", Align::Right);
    for (setting, m) in &results {
        table.row(vec![
            setting.name(),
            format!("{:.0}", m.goodput),
            format!("{:.0}", m.refused),
            m.p50_us.to_string(),
            m.p99_us.to_string(),
            format!("{:.3}x", m.p99_us as f64 / base),
            m.other_errors.to_string(),
            m.limit_after.map_or("-".into(), |l| l.to_string()),
            format!("{:+} B", m.heap_grown),
        ]);
    }
    Ok(format!(
        "keel-bench overload: {} callers, {} µs of CPU per call on one server thread, {} s per setting ({})\n{table}",
        args.callers,
        args.work_us,
        args.seconds,
        crate::summary::load_average()
    ))
}

fn measure(args: &Args, setting: Setting) -> Result<Measured, String> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let work = Duration::from_micros(args.work_us);
    let server = server_rt
        .block_on(async {
            let builder = Server::builder().add_service(EchoServiceServer::new(Spin(work)));
            let builder = match setting {
                Setting::None => builder,
                Setting::Fixed(n) => builder.max_concurrency(n),
                Setting::Adaptive => builder.adaptive_max_concurrency(AdaptiveLimit::default()),
            };
            builder.bind("127.0.0.1:0").await
        })
        .map_err(|e| format!("bind: {e}"))?;
    let addr = server.local_addr().to_string();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let callers = args.callers;
    let length = Duration::from_secs_f64(args.seconds);
    let heap_before = keel_alloc::live_bytes() as i64;
    let (latencies, refused, other) = client_rt.block_on(async move {
        let channel = Channel::builder(&addr)
            .max_retry(0)
            .timeout(Some(Duration::from_secs(10)))
            .build()
            .expect("a channel");
        // A warm-up: connections, pools, the adaptive limit's first windows.
        drive(&channel, callers, Duration::from_millis(500)).await;
        drive(&channel, callers, length).await
    });
    let limit_after = status_limit(&server_rt, server.local_addr());
    drop(client_rt);
    server_rt.block_on(server.shutdown(Duration::from_secs(1)));
    drop(server_rt);
    let heap_grown = keel_alloc::live_bytes() as i64 - heap_before;
    let mut latencies = latencies;
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        u64::from(latencies[i])
    };
    let secs = length.as_secs_f64();
    Ok(Measured {
        goodput: latencies.len() as f64 / secs,
        refused: refused as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        other_errors: other,
        heap_grown,
        limit_after,
    })
}

/// The server's limit as `/status` reports it.
fn status_limit(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /status?format=json HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        // The one number wanted, read without a JSON parser.
        let at = text.find("\"max_concurrency\":")? + "\"max_concurrency\":".len();
        let digits: String = text[at..]
            .chars()
            .skip_while(|c| *c == ' ')
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// Closed-loop calls from `callers` tasks for `length`: latencies (µs) of
/// the answered calls, refusals, other failures.
async fn drive(channel: &Channel, callers: usize, length: Duration) -> (Vec<u32>, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = EchoServiceClient::new(channel);
            let stop = stop.clone();
            tokio::spawn(async move {
                let request = EchoRequest {
                    message: "overload".into(),
                };
                let (mut latencies, mut refused, mut other) = (Vec::new(), 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match client.echo(&request).await {
                        Ok(_) => latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(e) if e.code() == Code::ELIMIT => {
                            refused += 1;
                            // Refused at once: yield so the loop does not
                            // starve the runtime of its other callers.
                            tokio::task::yield_now().await;
                        }
                        Err(_) => other += 1,
                    }
                }
                (latencies, refused, other)
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = (Vec::new(), 0, 0);
    for task in tasks {
        let (latencies, refused, other) = task.await.expect("a caller");
        all.0.extend(latencies);
        all.1 += refused;
        all.2 += other;
    }
    all
}

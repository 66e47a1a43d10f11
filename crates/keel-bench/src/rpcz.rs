//! `keel-bench rpcz`: what Keel's rpcz tracing costs.
//!
//! # What is measured
//!
//! 1. **Span cost**, in this thread, in one run, three peers:
//!    - **keel**: a sampled server span from a `keel::rpcz::Tracer` (sampler
//!      target 10⁹ spans/s, so every span is sampled; checked), with the
//!      peer, request and response sizes set, two annotations, then
//!      `finish(0)`: the tree goes to the tracer's bounded store, which
//!      evicts the oldest tree back to the pools. Method and trace id are
//!      part of every Keel span.
//!    - **tracing (Registry)**: `tracing::info_span!` with the same fields
//!      (method, peer, trace id, request and response sizes, status recorded
//!      before the end), entered, two `tracing::info!` events, exited and
//!      dropped, under `tracing_subscriber::registry::Registry` (span data
//!      pooled in a sharded-slab) as this thread's default subscriber.
//!      Registry alone keeps span ids, parents and metadata but **discards
//!      field values and events**: it does less than Keel.
//!    - **tracing (Registry + layer)**: the same, with a tiny [`Layer`] that
//!      stores the span's field values and each event's message in the
//!      span's extensions (a `Vec<String>` of annotations), as Keel's span
//!      does. **This is the apples-to-apples comparison.**
//!
//!    Per run: ns per span (wall time / spans) and allocations per span
//!    (`keel_alloc::thread_stats` deltas: this thread's allocations through
//!    the counting global allocator). Peers rotate their order every round;
//!    figures are medians over rounds.
//!
//! 2. **Echo QPS against the sampling rate**: Keel's echo server (the same
//!    server process `keel-bench echo` runs, told its rpcz target by a
//!    `rpcz N` line on stdin before each run) with sampling off (0), Keel's default (1,000 spans/s) and 100%
//!    (10⁹ spans/s), the same target set in this (the client) process; one
//!    connection with 128 calls in flight; the three settings alternate
//!    (rotating order) over rounds; medians; overhead = QPS lost vs off.
//!
//! # Why it is fair
//!
//! - Same fields on both sides. The `tracing` trace id is a counter (Keel
//!   draws two random ids per span), which favours `tracing`.
//! - `tracing`'s dispatchers are built once and reused across rounds, so
//!   the Registry's slab is as warm as Keel's pools; every peer is warmed
//!   up before the first round.
//! - Each QPS setting has its own server process and connection; all three
//!   exist for the whole run, and the settings alternate, so load from
//!   elsewhere spreads over all three.
//!
//! [`Layer`]: tracing_subscriber::Layer

use crate::args;
use std::fmt::{self, Write as _};
use std::hint::black_box;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use keel::rpcz::{Sampler, Store, StoreConfig, Tracer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::{LookupSpan, Registry};

use crate::echo::{self, Clients, Framework, Sample, Scenario, ServerProcess};
use crate::summary::{load_average, median};
use crate::table::{Align, Table};

/// The method every span names.
const METHOD: &str = "example.EchoService.Echo";
/// The peer every span records.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8002);
/// Request and response size every span records (the echo's 16 bytes + 2).
const SIZE: u64 = 18;

/// A sampler target that samples every span: 10⁹ spans/s, far above any
/// rate this benchmark reaches.
const SAMPLE_ALL: u64 = 1_000_000_000;

/// Spans per run and rounds of the span benchmark.
const SPANS_PER_RUN: u64 = 200_000;
const QUICK_SPANS_PER_RUN: u64 = 20_000;
const SPAN_ROUNDS: usize = 9;
const QUICK_SPAN_ROUNDS: usize = 5;

/// Seconds per QPS run, full and `--quick`, and QPS rounds.
const DEFAULT_SECONDS: f64 = 3.0;
const QUICK_SECONDS: f64 = 0.5;
const DEFAULT_ROUNDS: usize = 3;

/// The QPS scenario: one connection, 128 calls in flight.
const SCENARIO: Scenario = Scenario {
    connections: 1,
    per_connection: 128,
};

/// The three sampling settings: name and target in spans per second.
const SETTINGS: [(&str, u64); 3] = [
    ("off", 0),
    ("default", Sampler::DEFAULT_TARGET),
    ("100%", SAMPLE_ALL),
];

// Targets (printed as facts, never asserted).
/// Keel's span at most this fraction of tracing's.
const TARGET_SPAN_RATIO: f64 = 0.5;
/// Default sampling costs less than this fraction of QPS.
const TARGET_DEFAULT_OVERHEAD: f64 = 0.03;

/// What `keel-bench rpcz --help` says about the subcommand.
pub const ABOUT: &str = "\
1. Span cost: a sampled Keel rpcz span (2 annotations, finished into the
   store) against a `tracing` span with the same fields and 2 events under
   tracing-subscriber's Registry, alone and with a layer that records the
   fields and event messages. ns and allocations per span, medians.
2. Keel echo QPS (1 connection x 128 in flight) with rpcz sampling off,
   default (1,000 spans/s) and 100%, server and client alike; overhead vs off.

Defaults: --seconds 3 (each QPS run; a full run takes ~35 s), --rounds 3
(QPS runs per setting, alternating); --quick: 0.5 s QPS runs and short span
runs, a smoke run of ~6 s.";

// ---------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Options {
    runs: args::Runs,
    spans_per_run: u64,
    span_rounds: usize,
}

impl Options {
    fn from_args(a: &args::RunArgs) -> Options {
        let defaults = args::RunDefaults {
            seconds: DEFAULT_SECONDS,
            quick_seconds: QUICK_SECONDS,
            rounds: DEFAULT_ROUNDS,
        };
        let runs = a.runs(defaults);
        let (spans_per_run, span_rounds) = if runs.quick {
            (QUICK_SPANS_PER_RUN, QUICK_SPAN_ROUNDS)
        } else {
            (SPANS_PER_RUN, SPAN_ROUNDS)
        };
        Options {
            runs,
            spans_per_run,
            span_rounds,
        }
    }
}

// ---------------------------------------------------------------------------
// Part 1: span cost.
// ---------------------------------------------------------------------------

/// A tracer that samples every span, with its own store.
fn sample_all_tracer() -> Tracer {
    Tracer::new(
        Sampler::new(SAMPLE_ALL),
        Arc::new(Store::new(StoreConfig::default())),
    )
}

/// `n` Keel spans; returns how many were sampled.
fn keel_spans(tracer: &Tracer, n: u64) -> u64 {
    let mut sampled = 0;
    for _ in 0..n {
        let span = tracer.server(METHOD, None, Instant::now());
        span.set_peer(PEER);
        span.set_request_size(SIZE);
        span.set_response_size(SIZE);
        span.annotate("annotation 1");
        span.annotate("annotation 2");
        sampled += u64::from(span.is_sampled());
        span.finish(0);
    }
    sampled
}

/// `n` `tracing` spans under the current thread's default subscriber.
fn tracing_spans(n: u64) {
    for i in 0..n {
        let span = tracing::info_span!(
            "rpc",
            method = METHOD,
            peer = %PEER,
            trace_id = black_box(i),
            request_size = SIZE,
            response_size = SIZE,
            status = tracing::field::Empty,
        );
        let entered = span.enter();
        tracing::info!("annotation 1");
        tracing::info!("annotation 2");
        span.record("status", 0i64);
        drop(entered);
        drop(span);
    }
}

/// What [`RecordingLayer`] keeps in a span's extensions: its field values
/// and its events' messages, as Keel's span keeps them.
#[derive(Debug, Default)]
struct Recorded {
    trace_id: u64,
    request_size: u64,
    response_size: u64,
    status: i64,
    /// Other fields (method, peer) as `name=value` text.
    text: String,
    annotations: Vec<String>,
}

impl Visit for Recorded {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "trace_id" => self.trace_id = value,
            "request_size" => self.request_size = value,
            "response_size" => self.response_size = value,
            _ => self.record_debug(field, &value),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "status" => self.status = value,
            _ => self.record_debug(field, &value),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.text, "{}={value} ", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.text, "{}={value:?} ", field.name());
    }
}

/// An event's message.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// The smallest layer that makes a `tracing` span hold what a Keel span
/// holds: field values, and each event's message as an annotation.
struct RecordingLayer;

impl<S> Layer<S> for RecordingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut rec = Recorded::default();
        attrs.record(&mut rec);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(rec);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(rec) = span.extensions_mut().get_mut::<Recorded>()
        {
            values.record(rec);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            let mut message = Message(String::new());
            event.record(&mut message);
            if let Some(rec) = span.extensions_mut().get_mut::<Recorded>() {
                rec.annotations.push(message.0);
            }
        }
    }
}

/// The span benchmark's peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpanPeer {
    Keel,
    Registry,
    RegistryLayer,
}

impl SpanPeer {
    const ALL: [SpanPeer; 3] = [SpanPeer::Keel, SpanPeer::Registry, SpanPeer::RegistryLayer];

    fn name(self) -> &'static str {
        match self {
            SpanPeer::Keel => "keel rpcz",
            SpanPeer::Registry => "tracing: Registry",
            SpanPeer::RegistryLayer => "tracing: Registry + recording layer",
        }
    }
}

/// Everything the span peers run with, built once.
struct SpanBench {
    tracer: Tracer,
    registry: Dispatch,
    layered: Dispatch,
}

impl SpanBench {
    fn new() -> SpanBench {
        SpanBench {
            tracer: sample_all_tracer(),
            registry: Dispatch::new(Registry::default()),
            layered: Dispatch::new(Registry::default().with(RecordingLayer)),
        }
    }

    /// `n` spans of `peer`: (ns per span, allocations per span).
    fn run(&self, peer: SpanPeer, n: u64) -> Result<(f64, f64), String> {
        let allocs = keel_alloc::thread_stats().allocs;
        let t = Instant::now();
        match peer {
            SpanPeer::Keel => {
                let sampled = keel_spans(&self.tracer, n);
                if sampled != n {
                    return Err(format!("only {sampled} of {n} keel spans were sampled"));
                }
            }
            SpanPeer::Registry => tracing::dispatcher::with_default(&self.registry, || {
                tracing_spans(n);
            }),
            SpanPeer::RegistryLayer => tracing::dispatcher::with_default(&self.layered, || {
                tracing_spans(n);
            }),
        }
        let elapsed = t.elapsed();
        let allocs = keel_alloc::thread_stats().allocs - allocs;
        let n = n.max(1) as f64;
        Ok((elapsed.as_nanos() as f64 / n, allocs as f64 / n))
    }
}

/// Medians per peer: (ns per span, allocations per span), in
/// [`SpanPeer::ALL`] order.
fn span_cost(opts: &Options) -> Result<[(f64, f64); 3], String> {
    let bench = SpanBench::new();
    // Warm-up: pools, the store's ring, the slab, callsite interest.
    for peer in SpanPeer::ALL {
        bench.run(peer, opts.spans_per_run / 4 + 2 * 1024)?;
    }
    let mut samples: [Vec<(f64, f64)>; 3] = Default::default();
    for round in 0..opts.span_rounds {
        for k in 0..SpanPeer::ALL.len() {
            let i = (round + k) % SpanPeer::ALL.len();
            eprint!(
                "\r  spans round {}/{}  {:<36}",
                round + 1,
                opts.span_rounds,
                SpanPeer::ALL[i].name()
            );
            samples[i].push(bench.run(SpanPeer::ALL[i], opts.spans_per_run)?);
        }
    }
    eprintln!();
    bench.tracer.store().clear();
    Ok(samples.map(|s| {
        let ns: Vec<f64> = s.iter().map(|x| x.0).collect();
        let allocs: Vec<f64> = s.iter().map(|x| x.1).collect();
        (
            median(&ns).unwrap_or(f64::NAN),
            median(&allocs).unwrap_or(f64::NAN),
        )
    }))
}

// ---------------------------------------------------------------------------
// Part 2: echo QPS against the sampling rate.
// ---------------------------------------------------------------------------

/// Samples per setting, in [`SETTINGS`] order.
fn echo_qps(opts: &Options, ticks_per_us: f64) -> Result<[Vec<Sample>; 3], String> {
    let rt = echo::runtime("client")?;
    // One server process and one channel for every setting, the target
    // switched on both sides between runs: separate processes per setting
    // differed by more (CPU placement) than what is measured here.
    let mut server = ServerProcess::start(Framework::Keel, Some(0))?;
    let client_sampler = keel::rpcz::tracer().sampler();
    let initial_target = client_sampler.target();
    let clients = rt.block_on(Clients::connect(
        Framework::Keel,
        server.addr,
        SCENARIO.connections,
    ))?;
    clients
        .arm(&rt, SCENARIO.per_connection)
        .fire(&rt, opts.runs.warm_up())?;
    let mut samples: [Vec<Sample>; 3] = Default::default();
    let length = opts.runs.run_length();
    for round in 0..opts.runs.rounds {
        for k in 0..SETTINGS.len() {
            let i = (round + k) % SETTINGS.len();
            let (name, target) = SETTINGS[i];
            eprint!(
                "\r  echo 1x128 round {}/{}  {name:<8}",
                round + 1,
                opts.runs.rounds
            );
            client_sampler.set_target(target);
            server.set_rpcz_target(target)?;
            let sample =
                echo::run_once(&rt, &mut server, &clients, SCENARIO, length, ticks_per_us)?;
            samples[i].push(sample);
        }
    }
    eprintln!();
    client_sampler.set_target(initial_target);
    // Close the connections inside the runtime their tasks live on.
    rt.block_on(async move { drop(clients) });
    drop(server);
    Ok(samples)
}

// ---------------------------------------------------------------------------
// Entry point and report.
// ---------------------------------------------------------------------------

/// Entry point of `keel-bench rpcz`.
pub fn main(a: &args::RunArgs) -> ExitCode {
    args::main("rpcz", &Options::from_args(a), run)
}

fn run(opts: &Options) -> Result<String, String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_start = load_average();
    let started = Instant::now();
    let ticks_per_us = echo::clock_ticks_per_second() / 1e6;
    eprintln!(
        "keel-bench rpcz: span cost, {} rounds x 3 peers x {} spans",
        opts.span_rounds, opts.spans_per_run
    );
    let spans = span_cost(opts)?;
    eprintln!(
        "keel-bench rpcz: echo 1x128, {} rounds x 3 settings x {:.1} s",
        opts.runs.rounds, opts.runs.seconds
    );
    let qps = echo_qps(opts, ticks_per_us)?;
    let load_end = load_average();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-bench rpcz: keel {} rpcz vs tracing 0.1 + tracing-subscriber 0.3 Registry",
        env!("CARGO_PKG_VERSION")
    );
    crate::summary::machine_line(
        &mut out,
        cores,
        (&load_start, &load_end),
        started.elapsed().as_secs_f64(),
    );
    out.push('\n');
    out.push_str(&span_report(opts, &spans));
    out.push('\n');
    out.push_str(&qps_report(opts, &qps));
    Ok(out)
}

fn span_report(opts: &Options, spans: &[(f64, f64); 3]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "1. one span: method, peer, trace id, 2 sizes, status; 2 annotations; finish"
    );
    let _ = writeln!(
        out,
        "   medians of {} rounds x {} spans, peers rotating; one thread",
        opts.span_rounds, opts.spans_per_run
    );
    let keel_ns = spans[0].0;
    let mut t = Table::new()
        .column("peer", Align::Left)
        .column("ns/span", Align::Right)
        .column("allocs/span", Align::Right)
        .column_after_rule("peer/keel", Align::Right);
    for (peer, (ns, allocs)) in SpanPeer::ALL.iter().zip(spans) {
        t.row(vec![
            peer.name().to_string(),
            format!("{ns:.1}"),
            format!("{allocs:.2}"),
            format!("{:.2}x", ns / keel_ns),
        ]);
    }
    let _ = write!(out, "{t}");
    out.push_str(
        "   Registry alone keeps span ids and metadata but drops field values and events: it does\n   \
         less than a Keel span. Registry + recording layer stores the fields and the 2 messages\n   \
         (Vec<String>) in the span's extensions, as Keel does: that is the apples-to-apples row.\n",
    );
    let verdict = |met: bool| if met { "met    " } else { "NOT met" };
    let (layered, registry) = (spans[2].0, spans[1].0);
    let _ = writeln!(
        out,
        "   {}  keel <= {TARGET_SPAN_RATIO} x tracing (Registry + layer): {keel_ns:.1} / {layered:.1} ns = {:.2}",
        verdict(keel_ns <= TARGET_SPAN_RATIO * layered),
        keel_ns / layered
    );
    let _ = writeln!(
        out,
        "   ({}  against Registry alone: {keel_ns:.1} / {registry:.1} ns = {:.2})",
        verdict(keel_ns <= TARGET_SPAN_RATIO * registry).trim_end(),
        keel_ns / registry
    );
    out
}

fn qps_report(opts: &Options, samples: &[Vec<Sample>; 3]) -> String {
    let med = |i: usize, f: fn(&Sample) -> f64| {
        let xs: Vec<f64> = samples[i].iter().map(f).collect();
        median(&xs).unwrap_or(f64::NAN)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "2. keel echo, 1 connection x 128 in flight, rpcz target set in server and client alike"
    );
    let _ = writeln!(
        out,
        "   medians of {} rounds of {:.1} s per setting, settings rotating",
        opts.runs.rounds, opts.runs.seconds
    );
    let off = med(0, |s| s.qps);
    let mut t = Table::new()
        .column("sampling", Align::Left)
        .column("target/s", Align::Right)
        .column("QPS", Align::Right)
        .column("vs off", Align::Right)
        .column_after_rule("p50 us", Align::Right)
        .column("p99 us", Align::Right)
        .column_after_rule("server", Align::Right)
        .column("client", Align::Right)
        .column_after_rule("server", Align::Right)
        .column("client", Align::Right)
        .group(6, 7, "CPU us/call")
        .group(8, 9, "allocs/call");
    for (i, (name, target)) in SETTINGS.iter().enumerate() {
        let q = med(i, |s| s.qps);
        t.row(vec![
            name.to_string(),
            echo::group_thousands(*target),
            echo::group_thousands(q.round() as u64),
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:+.1}%", (q / off - 1.0) * 100.0)
            },
            format!("{:.0}", med(i, |s| s.p50_us)),
            format!("{:.0}", med(i, |s| s.p99_us)),
            format!("{:.1}", med(i, |s| s.server_cpu_us)),
            format!("{:.1}", med(i, |s| s.client_cpu_us)),
            format!("{:.2}", med(i, |s| s.server_allocs)),
            format!("{:.2}", med(i, |s| s.client_allocs)),
        ]);
    }
    let _ = write!(out, "{t}");
    let all: Vec<String> = SETTINGS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let qs: Vec<String> = samples[i]
                .iter()
                .map(|s| echo::group_thousands(s.qps.round() as u64))
                .collect();
            format!("{name} {}", qs.join(" / "))
        })
        .collect();
    let _ = writeln!(out, "   QPS per round: {}", all.join("; "));
    // The same overhead paired by round (each round runs all three settings
    // back to back), which a slow drift of the machine's load moves less.
    let paired: Vec<String> = (1..SETTINGS.len())
        .map(|i| {
            let ratios: Vec<f64> = samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(s, o)| s.qps / o.qps - 1.0)
                .collect();
            let m = median(&ratios).unwrap_or(f64::NAN);
            format!("{} {:+.1}%", SETTINGS[i].0, m * 100.0)
        })
        .collect();
    let _ = writeln!(
        out,
        "   median of per-round QPS vs off: {}",
        paired.join(", ")
    );
    let default = med(1, |s| s.qps);
    let overhead = 1.0 - default / off;
    let verdict = if overhead < TARGET_DEFAULT_OVERHEAD {
        "met    "
    } else {
        "NOT met"
    };
    let _ = writeln!(
        out,
        "   {verdict}  default sampling costs < {:.0}% QPS: {} vs {} off = {:.1}% overhead",
        TARGET_DEFAULT_OVERHEAD * 100.0,
        echo::group_thousands(default.round() as u64),
        echo::group_thousands(off.round() as u64),
        overhead * 100.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let parse = |s: &str| args::parse::<args::RunArgs>(s).map(|a| Options::from_args(&a));
        let full = parse("").expect("parses");
        assert_eq!(
            (full.runs.seconds, full.runs.rounds, full.spans_per_run),
            (DEFAULT_SECONDS, DEFAULT_ROUNDS, SPANS_PER_RUN)
        );
        let quick = parse("--quick --rounds 2").expect("parses");
        assert_eq!(
            (quick.runs.seconds, quick.runs.rounds, quick.spans_per_run),
            (QUICK_SECONDS, 2, QUICK_SPANS_PER_RUN)
        );
        assert!(parse("--seconds x").is_err());
        assert!(parse("--frobnicate").is_err());
    }

    #[test]
    fn every_keel_span_is_sampled_and_stored() {
        let tracer = sample_all_tracer();
        assert_eq!(keel_spans(&tracer, 100), 100);
        assert_eq!(tracer.store().len(), 100);
        tracer.store().clear();
    }

    /// The layered peer really records what Keel's span records; else the
    /// "apples-to-apples" row would not be.
    #[test]
    fn recording_layer_keeps_fields_and_annotations() {
        #[derive(Clone, Default)]
        struct Check(Arc<std::sync::Mutex<Vec<String>>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Check {
            fn on_close(&self, id: Id, ctx: Context<'_, S>) {
                let span = ctx.span(&id).expect("closing span exists");
                let ext = span.extensions();
                let rec = ext.get::<Recorded>().expect("recorded");
                let mut seen = self.0.lock().unwrap();
                seen.push(format!(
                    "{} {} {} {} {}",
                    rec.trace_id, rec.request_size, rec.response_size, rec.status, rec.text
                ));
                seen.extend(rec.annotations.iter().cloned());
            }
        }
        let check = Check::default();
        let dispatch = Dispatch::new(Registry::default().with(RecordingLayer).with(check.clone()));
        tracing::dispatcher::with_default(&dispatch, || tracing_spans(1));
        let seen = check.0.lock().unwrap();
        assert_eq!(
            *seen,
            [
                format!("0 {SIZE} {SIZE} 0 method={METHOD} peer={PEER} "),
                "annotation 1".to_string(),
                "annotation 2".to_string(),
            ]
        );
    }
}

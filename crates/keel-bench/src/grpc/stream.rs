//! The streaming runs of `keel-bench grpc`: messages per second received on
//! ONE server-streaming call.
//!
//! # What is measured
//!
//! gRPC's interop method `grpc.testing.TestService/StreamingOutputCall`:
//! the request lists N `response_parameters`, and the server answers with
//! one response per entry, each carrying a payload of `size` zero bytes.
//! Keel's server is the interop server (`keel_examples::interop`), tonic's
//! the minimal implementation in [`crate::interop`]; both run in the same
//! server processes as the unary runs. The same three pairs as there
//! (keel, tonic, keel srv), each on one connection opened and warmed up
//! before its rounds; one call per run, whose receiving loop is a task on
//! the client runtime:
//!
//! ```text
//!   client task ── StreamingOutputCallRequest (N x {size}) ──► server
//!               ◄── N x StreamingOutputCallResponse {payload: size x 0} ──
//! ```
//!
//! Per run: **messages/s** = N / time from the call until the stream's end
//! (its trailers) at the client; server and client **CPU** and
//! **allocations per message** (whole processes over the run, as in the
//! unary runs); and the server's **peak heap** during the call: the highest
//! live heap its counting allocator's peak or a 1 ms sampler in the server
//! saw (see `echo::sample_live_bytes`) minus the live heap before. That
//! peak includes the decoded request itself (N `ResponseParameters`, about
//! `N x 16 B` rounded up to a power of two), alike for both servers.
//!
//! Every client allocates each response's payload (`Vec<u8>`); prost
//! asks for a `bytes` field as a `Bytes` first and copies it into the
//! `Vec`. Keel's client copies a field of up to 1 KiB into a `Bytes` of its
//! own (an allocation, freed at once: 2 per message) where tonic's cuts it
//! out of its buffer (two atomic reference counts: 1 per message), because
//! the copy decoded faster (see `keel::codec::merge_in_place`).
//!
//! # Why it is fair
//!
//! Both servers allocate each response's payload and encode the same prost
//! messages; tonic's yields them from an iterator (no channel, no task),
//! Keel's sends them through its `ResponseSink` with HTTP/2 flow control as
//! backpressure. Keel's client is the generated `TestServiceClient` on a
//! `grpc://` channel whose deadline is raised to [`CALL_DEADLINE`] (the 1 s
//! default bounds the whole stream); tonic's is its generated client with
//! its defaults. Every client checks each payload's size. Runs alternate
//! keel, tonic, keel srv for `--rounds` rounds; figures are medians.
//!
//! # The floor
//!
//! Each round also times, on one thread, from memory and with no I/O, the
//! per-message work no framework can skip with these messages ([`floor`]):
//! the server's (building a response with its payload and encoding it,
//! prefix included) and the client's (decoding a response and checking its
//! payload). One stream is read by one task, so no client receives faster
//! than it decodes: the decoding rate over tonic's is the highest ratio
//! any client could reach on this machine, printed next to the target.
//!
//! It also times a raw loopback TCP stream of the same bytes ([`raw_stream`]):
//! the rate at which the kernel alone carries them from one thread's
//! writes to another's reads, printed over tonic's rate next to the
//! target: how much of what loopback TCP carries a target asks for, with
//! the framework's own work on the same two cores.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel_examples::grpc_testing::{
    PayloadType, ResponseParameters, StreamingOutputCallRequest, StreamingOutputCallResponse,
    TestServiceClient,
};

use super::Pair;
use crate::echo::{self, ServerProcess};
use crate::interop::TonicTestClient;
use crate::summary::median;
use crate::table::{Align, Table};

/// Keel's per-call deadline on the streaming channel (its default, 1 s,
/// bounds the whole stream).
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// A run that takes longer than this is aborted.
const CALL_BOUND: Duration = Duration::from_secs(30);
/// Warm-up call: this fraction of a run's messages.
const WARM_UP_FRACTION: usize = 10;

/// The issue's target: messages/s at least this many times tonic's.
const TARGET_RATIO: f64 = 2.0;

/// One streaming setting: a payload size and the messages of one call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Case {
    /// Payload bytes per response.
    pub(super) size: usize,
    /// Responses per call in a full run.
    messages: usize,
    /// Responses per call with `--quick`.
    quick_messages: usize,
}

impl Case {
    fn name(&self) -> String {
        if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        }
    }

    fn messages(&self, quick: bool) -> usize {
        if quick {
            self.quick_messages
        } else {
            self.messages
        }
    }

    /// The request for `n` responses of this case's size.
    fn request(&self, n: usize) -> StreamingOutputCallRequest {
        let size = i32::try_from(self.size).expect("the cases' sizes fit in an i32");
        StreamingOutputCallRequest {
            response_type: PayloadType::Compressable as i32,
            response_parameters: vec![
                ResponseParameters {
                    size,
                    ..ResponseParameters::default()
                };
                n
            ],
            ..StreamingOutputCallRequest::default()
        }
    }
}

/// 16 B as the unary runs; 1 KiB, where copying starts to count. Sized so
/// that a call lasts a few hundred milliseconds (calls of 30-100 ms spread
/// by up to 80% across rounds) and a full run's streaming part stays
/// within ~40 s on two cores; the request, 5-6 bytes per response, stays
/// under the 4 MiB message limit.
pub(super) const CASES: [Case; 2] = [
    Case {
        size: 16,
        messages: 600_000,
        quick_messages: 20_000,
    },
    Case {
        size: 1024,
        messages: 300_000,
        quick_messages: 10_000,
    },
];

/// What one streaming run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    messages_per_s: f64,
    server_cpu_ns: f64,
    client_cpu_ns: f64,
    server_allocs: f64,
    client_allocs: f64,
    /// Server heap peak minus its live heap before the call.
    server_peak_bytes: f64,
}

/// A case's samples, per pair (in [`Pair::ALL`] order), and the errors of
/// the runs (warm-up included) that failed.
pub(super) struct CaseResult {
    case: Case,
    messages: usize,
    samples: [Vec<Sample>; 3],
    failures: [Vec<String>; 3],
    /// One [`floor`] per round.
    floors: Vec<Floor>,
}

/// The per-message work of a stream's two ends alone, in messages/s on
/// one thread (see [`floor`]).
#[derive(Debug, Clone, Copy, Default)]
struct Floor {
    /// Building and encoding responses (the server's share).
    produce_per_s: f64,
    /// Decoding and checking them (the client's share).
    decode_per_s: f64,
    /// The same bytes through a raw loopback TCP stream ([`raw_stream`]).
    raw_per_s: f64,
}

/// Bytes of encoded responses kept for the decoding half of [`floor`].
const FLOOR_KEEP: usize = 4 << 20;
/// The batch the producing half encodes into before starting over, as a
/// server's send buffer.
const FLOOR_BATCH: usize = 16 * 1024;

/// Times `n` messages of `case` through the work both ends must do,
/// alike for every framework: the interop handler's response (payload
/// allocated and zeroed), encoded with its 5-byte gRPC prefix into a
/// [`FLOOR_BATCH`] buffer; then the same responses decoded from memory
/// (a [`FLOOR_KEEP`] sample, read again as often as needed) and checked
/// as the benchmark's clients check them; then [`raw_stream`] with their
/// bytes (at least `raw_min_bytes`).
fn floor(case: Case, n: usize, raw_min_bytes: usize) -> Result<Floor, String> {
    use prost::Message as _;
    let size = case.size;
    let response = || StreamingOutputCallResponse {
        payload: Some(keel_examples::grpc_testing::Payload {
            r#type: PayloadType::Compressable as i32,
            body: vec![0; size],
        }),
    };
    let encode = |buf: &mut keel::bytes::BytesMut, m: &StreamingOutputCallResponse| {
        let len = m.encoded_len();
        let prefix = u32::try_from(len).map_err(|_| "a response over 4 GiB".to_string())?;
        buf.extend_from_slice(&[0]);
        buf.extend_from_slice(&prefix.to_be_bytes());
        m.encode(buf).map_err(|e| format!("encode: {e}"))
    };
    let mut batch = keel::bytes::BytesMut::with_capacity(2 * FLOOR_BATCH);
    let started = Instant::now();
    for _ in 0..n {
        encode(&mut batch, &response())?;
        if batch.len() >= FLOOR_BATCH {
            std::hint::black_box(&batch);
            batch.clear();
        }
    }
    let produce = started.elapsed();

    let mut kept = keel::bytes::BytesMut::new();
    while kept.len() < FLOOR_KEEP.min(n.saturating_mul(size + 8)) {
        encode(&mut kept, &response())?;
    }
    let started = Instant::now();
    let mut decoded = 0;
    while decoded < n {
        let mut rest = &kept[..];
        while rest.len() > 5 && decoded < n {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let (message, next) = rest[5..].split_at(len);
            let m =
                StreamingOutputCallResponse::decode(message).map_err(|e| format!("decode: {e}"))?;
            check(&m, size, decoded)?;
            decoded += 1;
            rest = next;
        }
    }
    let decode = started.elapsed();
    let wire_bytes = PREFIX + response().encoded_len();
    let bytes = n.saturating_mul(wire_bytes).max(raw_min_bytes);
    // A socket's failure leaves this column empty, not the whole report.
    let raw_per_s = match raw_stream(bytes) {
        Ok(took) => bytes as f64 / wire_bytes as f64 / took.as_secs_f64(),
        Err(e) => {
            eprintln!("\nkeel-bench grpc: {e}");
            f64::NAN
        }
    };
    Ok(Floor {
        produce_per_s: n as f64 / produce.as_secs_f64(),
        decode_per_s: n as f64 / decode.as_secs_f64(),
        raw_per_s,
    })
}

/// gRPC's prefix before each message: a flag byte and a 4-byte length.
const PREFIX: usize = 5;
/// The raw stream carries at least this much, so that its time is not
/// its connection's setup.
const RAW_MIN_BYTES: usize = 64 << 20;
/// The raw stream's writes and reads: loopback's largest segment, so that
/// few system calls carry the bytes.
const RAW_CHUNK: usize = 64 * 1024;

/// The time a raw TCP stream on loopback takes to carry `bytes`: one
/// thread writes them in [`RAW_CHUNK`] blocking writes, another reads
/// them in reads as large, both sockets `TCP_NODELAY`; from the connection
/// until the reader sees the end. No framing, no messages, no copies but
/// the kernel's: a practical ceiling for a server and client that send
/// these bytes over TCP on this machine (larger writes could go a little
/// faster). The gRPC streams also carry an HTTP/2 frame header per 16 KiB
/// or so; the raw stream leaves it out, which errs on the fast side.
fn raw_stream(bytes: usize) -> Result<Duration, String> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("raw stream: bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("raw stream: {e}"))?;
    let started = Instant::now();
    // Both ends exist before the writer's thread does: no early return
    // leaves a thread behind.
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("raw stream: connect: {e}"))?;
    let (mut sending, _) = listener
        .accept()
        .map_err(|e| format!("raw stream: accept: {e}"))?;
    for s in [&stream, &sending] {
        s.set_nodelay(true)
            .map_err(|e| format!("raw stream: {e}"))?;
    }
    let writer = std::thread::spawn(move || -> Result<(), String> {
        let chunk = vec![0u8; RAW_CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(RAW_CHUNK);
            sending
                .write_all(&chunk[..n])
                .map_err(|e| format!("raw stream: write: {e}"))?;
            left -= n;
        }
        Ok(())
    });
    let mut chunk = vec![0u8; RAW_CHUNK];
    let mut read = 0;
    let mut failed = None;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                failed = Some(format!("raw stream: read: {e}"));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    // Closing this end ends a writer still writing (its write fails).
    drop(stream);
    writer
        .join()
        .map_err(|_| "raw stream: the writer panicked".to_string())??;
    if let Some(failed) = failed {
        return Err(failed);
    }
    if read == bytes {
        Ok(elapsed)
    } else {
        Err(format!("raw stream: read {read} of {bytes} bytes"))
    }
}

impl CaseResult {
    /// A cell's figure, or why there is none.
    fn cell(&self, p: Pair, field: fn(&Sample) -> f64, show: impl Fn(f64) -> String) -> String {
        if self.samples[p as usize].is_empty() {
            "failed".to_string()
        } else {
            show(self.median(p, field))
        }
    }

    fn median(&self, p: Pair, field: fn(&Sample) -> f64) -> f64 {
        let xs: Vec<f64> = self.samples[p as usize].iter().map(field).collect();
        median(&xs).unwrap_or(f64::NAN)
    }

    fn spread(&self, p: Pair) -> f64 {
        let xs: Vec<f64> = self.samples[p as usize]
            .iter()
            .map(|s| s.messages_per_s)
            .collect();
        crate::summary::spread(&xs)
    }

    fn ratio(&self, p: Pair) -> f64 {
        self.median(p, |s| s.messages_per_s) / self.median(Pair::Tonic, |s| s.messages_per_s)
    }

    fn floor(&self, field: fn(&Floor) -> f64) -> f64 {
        let xs: Vec<f64> = self.floors.iter().map(field).collect();
        median(&xs).unwrap_or(f64::NAN)
    }
}

/// A pair's client of `TestService`, on one connection.
#[derive(Clone)]
enum StreamClient {
    Keel(TestServiceClient),
    Tonic(TonicTestClient<tonic::transport::Channel>),
}

impl StreamClient {
    async fn connect(pair: Pair, addr: SocketAddr) -> Result<StreamClient, String> {
        match pair {
            Pair::Keel => {
                let url = format!("grpc://{addr}");
                let channel = keel::Channel::builder(&url)
                    .timeout(Some(CALL_DEADLINE))
                    .build()
                    .map_err(|e| format!("{url}: {e}"))?;
                Ok(StreamClient::Keel(TestServiceClient::new(&channel)))
            }
            Pair::Tonic | Pair::KeelServer => Ok(StreamClient::Tonic(TonicTestClient::new(
                echo::tonic_channel(addr).await?,
            ))),
        }
    }

    /// One call, ready to spawn: everything it owns is cloned here, before
    /// the counters are read. It returns the messages received and the
    /// time from the call until the end of the stream.
    fn call(
        &self,
        request: &StreamingOutputCallRequest,
        size: usize,
    ) -> impl Future<Output = Result<(usize, Duration), String>> + Send + 'static {
        let client = self.clone();
        let request = request.clone();
        async move {
            let started = Instant::now();
            let n = match client {
                StreamClient::Keel(client) => {
                    let mut stream = client
                        .streaming_output_call(&request)
                        .await
                        .map_err(|e| format!("keel: {e}"))?;
                    let mut n = 0;
                    while let Some(m) = stream
                        .message()
                        .await
                        .map_err(|e| format!("keel, after {n} messages: {e}"))?
                    {
                        check(&m, size, n)?;
                        n += 1;
                    }
                    n
                }
                StreamClient::Tonic(mut client) => {
                    // tonic takes the request by value.
                    let mut stream = client
                        .streaming_output_call(request)
                        .await
                        .map_err(|e| format!("tonic: {e}"))?
                        .into_inner();
                    let mut n = 0;
                    while let Some(m) = stream
                        .message()
                        .await
                        .map_err(|e| format!("tonic, after {n} messages: {e}"))?
                    {
                        check(&m, size, n)?;
                        n += 1;
                    }
                    n
                }
            };
            Ok((n, started.elapsed()))
        }
    }
}

/// Each response must carry `size` bytes.
fn check(m: &StreamingOutputCallResponse, size: usize, index: usize) -> Result<(), String> {
    match m.payload.as_ref().map_or(0, |p| p.body.len()) {
        n if n == size => Ok(()),
        n => Err(format!(
            "response {index} has {n} payload bytes, not {size}"
        )),
    }
}

/// Runs one call on the client runtime, bounded by [`CALL_BOUND`], and
/// checks it received `expected` messages.
fn receive(
    rt: &tokio::runtime::Runtime,
    call: impl Future<Output = Result<(usize, Duration), String>> + Send + 'static,
    expected: usize,
) -> Result<Duration, String> {
    let task = rt.spawn(call);
    let (n, elapsed) = rt.block_on(async {
        match tokio::time::timeout(CALL_BOUND, task).await {
            Ok(joined) => joined.map_err(|e| format!("the receiving task failed: {e}"))?,
            Err(_) => Err(format!("the call took longer than {CALL_BOUND:?}")),
        }
    })?;
    if n == expected {
        Ok(elapsed)
    } else {
        Err(format!("the stream ended after {n} of {expected} messages"))
    }
}

/// One run: counters before, one call, counters after.
fn run_once(
    rt: &tokio::runtime::Runtime,
    server: &mut ServerProcess,
    client: &StreamClient,
    request: &StreamingOutputCallRequest,
    case: Case,
    ticks_per_us: f64,
) -> Result<Sample, String> {
    let n = request.response_parameters.len();
    let call = client.call(request, case.size);
    let before = server.counters()?;
    server.take_peak_bytes()?;
    let server_ticks = server.cpu_ticks()?;
    let client_ticks = echo::own_cpu_ticks()?;
    let client_allocs = keel_alloc::stats().allocs;
    let elapsed = receive(rt, call, n)?;
    let client_allocs = keel_alloc::stats().allocs - client_allocs;
    let client_ticks = echo::own_cpu_ticks()? - client_ticks;
    let server_ticks = server.cpu_ticks()? - server_ticks;
    let server_allocs = server.counters()?.allocs - before.allocs;
    let peak = server.take_peak_bytes()?;
    let per = |x: f64| x / n as f64;
    Ok(Sample {
        messages_per_s: n as f64 / elapsed.as_secs_f64(),
        server_cpu_ns: per(server_ticks as f64 / ticks_per_us * 1e3),
        client_cpu_ns: per(client_ticks as f64 / ticks_per_us * 1e3),
        server_allocs: per(server_allocs as f64),
        client_allocs: per(client_allocs as f64),
        server_peak_bytes: peak.saturating_sub(before.live_bytes) as f64,
    })
}

/// Every case, every pair, `rounds` rounds. A failed call is recorded
/// with its pair and the runs go on (the next call reconnects if it must).
pub(super) fn run(
    rt: &tokio::runtime::Runtime,
    servers: &mut [ServerProcess; 2],
    rounds: usize,
    quick: bool,
    ticks_per_us: f64,
) -> Result<Vec<CaseResult>, String> {
    // The first `peak` starts each server's heap sampler thread: before
    // any run's counters.
    for server in servers.iter_mut() {
        server.take_peak_bytes()?;
    }
    let mut clients = Vec::with_capacity(Pair::ALL.len());
    for pair in Pair::ALL {
        clients.push(rt.block_on(StreamClient::connect(pair, servers[pair.server()].addr))?);
    }
    let mut results = Vec::with_capacity(CASES.len());
    for case in CASES {
        let messages = case.messages(quick);
        let request = case.request(messages);
        let warm_up = case.request((messages / WARM_UP_FRACTION).max(1));
        let mut samples: [Vec<Sample>; 3] = Default::default();
        let mut failures: [Vec<String>; 3] = Default::default();
        let mut floors = Vec::with_capacity(rounds);
        for (pair, c) in Pair::ALL.into_iter().zip(&clients) {
            let n = warm_up.response_parameters.len();
            if let Err(e) = receive(rt, c.call(&warm_up, case.size), n) {
                failures[pair as usize].push(format!("warm-up ({n} messages): {e}"));
            }
        }
        for round in 0..rounds {
            for (pair, c) in Pair::ALL.into_iter().zip(&clients) {
                eprint!(
                    "\r  stream {:<6} round {}/{}  {:<8}",
                    case.name(),
                    round + 1,
                    rounds,
                    pair.name()
                );
                let server = &mut servers[pair.server()];
                match run_once(rt, server, c, &request, case, ticks_per_us) {
                    Ok(sample) => samples[pair as usize].push(sample),
                    Err(e) => failures[pair as usize].push(format!("round {}: {e}", round + 1)),
                }
            }
            floors.push(floor(case, messages, RAW_MIN_BYTES)?);
        }
        results.push(CaseResult {
            case,
            messages,
            samples,
            failures,
            floors,
        });
    }
    // Close the connections inside the runtime their tasks live on.
    rt.block_on(async move { drop(clients) });
    Ok(results)
}

/// The streaming tables.
pub(super) fn report(out: &mut String, results: &[CaseResult], rounds: usize) {
    use Pair::{Keel, KeelServer, Tonic};
    let _ = writeln!(
        out,
        "streaming: one server-streaming call per run (grpc.testing.TestService/StreamingOutputCall),\n  \
         N responses of one payload size, counted at the client; one connection per pair;\n  \
         medians of {rounds} rounds, pairs alternating"
    );
    out.push('\n');
    let int = crate::summary::count_cell;
    let two = |x: f64| format!("{x:.2}");
    let kib = |x: f64| format!("{:.0}", x / 1024.0);
    let ratio = |x: f64| format!("{x:.2}x");

    let mut t = Table::new()
        .column("payload", Align::Left)
        .column("N", Align::Right)
        .column("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .group(2, 4, "messages/s")
        .group(5, 6, "msgs/s / tonic")
        .group(7, 9, "server CPU ns/msg")
        .group(10, 12, "client CPU ns/msg");
    for r in results {
        let m = |p, f: fn(&Sample) -> f64| r.cell(p, f, int);
        let vs_tonic = |p| {
            if r.samples[p as usize].is_empty() || r.samples[Tonic as usize].is_empty() {
                "-".to_string()
            } else {
                ratio(r.ratio(p))
            }
        };
        t.row(vec![
            r.case.name(),
            int(r.messages as f64),
            m(Keel, |s| s.messages_per_s),
            m(Tonic, |s| s.messages_per_s),
            m(KeelServer, |s| s.messages_per_s),
            vs_tonic(Keel),
            vs_tonic(KeelServer),
            m(Keel, |s| s.server_cpu_ns),
            m(Tonic, |s| s.server_cpu_ns),
            m(KeelServer, |s| s.server_cpu_ns),
            m(Keel, |s| s.client_cpu_ns),
            m(Tonic, |s| s.client_cpu_ns),
            m(KeelServer, |s| s.client_cpu_ns),
        ]);
    }
    let _ = writeln!(out, "{t}");

    let mut t = Table::new()
        .column("payload", Align::Left)
        .column("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .column_after_rule("keel", Align::Right)
        .column("tonic", Align::Right)
        .column("keel srv", Align::Right)
        .group(1, 3, "server allocs/msg")
        .group(4, 6, "client allocs/msg")
        .group(7, 9, "server heap peak KiB");
    for r in results {
        let m = |p, f: fn(&Sample) -> f64, show: &dyn Fn(f64) -> String| r.cell(p, f, show);
        t.row(vec![
            r.case.name(),
            m(Keel, |s| s.server_allocs, &two),
            m(Tonic, |s| s.server_allocs, &two),
            m(KeelServer, |s| s.server_allocs, &two),
            m(Keel, |s| s.client_allocs, &two),
            m(Tonic, |s| s.client_allocs, &two),
            m(KeelServer, |s| s.client_allocs, &two),
            m(Keel, |s| s.server_peak_bytes, &kib),
            m(Tonic, |s| s.server_peak_bytes, &kib),
            m(KeelServer, |s| s.server_peak_bytes, &kib),
        ]);
    }
    let _ = write!(out, "{t}");
    let _ = writeln!(
        out,
        "  CPU and allocations: whole processes over the call, divided by its messages; heap peak:\n  \
         server's highest live heap during the call (allocator peak, 1 ms samples) minus before, with the decoded\n  \
         request (N x {} B of ResponseParameters, capacity rounded up)",
        std::mem::size_of::<ResponseParameters>()
    );

    for r in results {
        for p in Pair::ALL {
            let failed = &r.failures[p as usize];
            if let Some(first) = failed.first() {
                let _ = writeln!(
                    out,
                    "  FAILED {} {}: {} of {} calls (warm-up included); first: {first}",
                    r.case.name(),
                    p.name(),
                    failed.len(),
                    rounds + 1
                );
            }
        }
    }

    let mut noisy = Vec::new();
    for r in results {
        for p in Pair::ALL
            .into_iter()
            .filter(|&p| r.samples[p as usize].len() > 1)
        {
            let spread = r.spread(p);
            if spread > super::NOISY_SPREAD {
                noisy.push(format!(
                    "{} {} {:.0}%",
                    r.case.name(),
                    p.name(),
                    spread * 100.0
                ));
            }
        }
    }
    crate::summary::spread_line(
        out,
        "messages/s",
        &noisy,
        results.len() * Pair::ALL.len(),
        super::NOISY_SPREAD,
    );

    out.push('\n');
    let mut t = Table::new()
        .column("payload", Align::Left)
        .column("produce msgs/s", Align::Right)
        .column("decode msgs/s", Align::Right)
        .column("decode / tonic's stream", Align::Right)
        .column("raw TCP msgs/s", Align::Right)
        .column("raw / tonic's stream", Align::Right);
    for r in results {
        let tonic = if r.samples[Tonic as usize].is_empty() {
            f64::NAN
        } else {
            r.median(Tonic, |s| s.messages_per_s)
        };
        let decode = r.floor(|f| f.decode_per_s);
        let raw = r.floor(|f| f.raw_per_s);
        t.row(vec![
            r.case.name(),
            int(r.floor(|f| f.produce_per_s)),
            int(decode),
            ratio(decode / tonic),
            int(raw),
            ratio(raw / tonic),
        ]);
    }
    let _ = writeln!(
        out,
        "floor: the per-message work alone (the handler's response built and encoded; decoded and\n  \
         checked), one thread, from memory, no I/O; medians of {rounds} rounds. One task reads a stream,\n  \
         so no client receives faster than it decodes.\n\
         raw TCP: unlike the two columns before it, I/O: the same bytes per message (prefix and response)\n  \
         through a raw loopback TCP stream, 64 KiB blocking writes and reads on two threads; a practical\n  \
         ceiling for any server and client that carry them over TCP here.\n"
    );
    let _ = write!(out, "{t}");
}

/// The streaming target's lines for the "targets" list, one per case.
pub(super) fn targets(
    out: &mut String,
    results: &[CaseResult],
    verdict: impl Fn(bool) -> &'static str,
) {
    for r in results {
        if r.samples[Pair::Keel as usize].is_empty() || r.samples[Pair::Tonic as usize].is_empty() {
            let _ = writeln!(
                out,
                "  {}  streaming {}: keel messages/s on one call >= {TARGET_RATIO}x tonic: not measured, calls failed (above)",
                verdict(false),
                r.case.name()
            );
            continue;
        }
        let k = r.median(Pair::Keel, |s| s.messages_per_s);
        let g = r.median(Pair::Tonic, |s| s.messages_per_s);
        let _ = writeln!(
            out,
            "  {}  streaming {}: keel messages/s on one call >= {TARGET_RATIO}x tonic: {} / {} = {:.2}x (keel srv under tonic's client: {:.2}x; decoding alone: {:.2}x; raw TCP: {:.2}x)",
            verdict(k / g >= TARGET_RATIO),
            r.case.name(),
            echo::group_thousands(k.round() as u64),
            echo::group_thousands(g.round() as u64),
            k / g,
            r.ratio(Pair::KeelServer),
            r.floor(|f| f.decode_per_s) / g,
            r.floor(|f| f.raw_per_s) / g,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_and_requests() {
        let request = CASES[1].request(3);
        assert_eq!(request.response_parameters.len(), 3);
        assert!(
            request
                .response_parameters
                .iter()
                .all(|p| p.size == 1024 && p.interval_us == 0)
        );
        assert_eq!(CASES[0].name(), "16 B");
        assert_eq!(CASES[1].name(), "1 KiB");
        for case in CASES {
            assert!(case.quick_messages < case.messages);
        }
        let ok = StreamingOutputCallResponse {
            payload: Some(keel_examples::grpc_testing::Payload {
                r#type: 0,
                body: vec![0; 16],
            }),
        };
        assert!(check(&ok, 16, 0).is_ok());
        assert!(check(&ok, 17, 0).is_err());
        assert!(
            check(&StreamingOutputCallResponse::default(), 16, 5)
                .unwrap_err()
                .contains("response 5")
        );
        // The floor decodes what it encoded, whatever the size.
        for case in CASES {
            let f = floor(case, 3_000, 1 << 20).expect("the floor runs");
            assert!(f.produce_per_s.is_finite() && f.produce_per_s > 0.0);
            assert!(f.decode_per_s.is_finite() && f.decode_per_s > 0.0);
            assert!(f.raw_per_s.is_finite() && f.raw_per_s > 0.0);
        }
    }
}

//! Chaos for the cluster layer (issue 18): four loopback servers restarted
//! gracefully on the same port, killed and left down a while, delayed
//! answers, deadlines from 1 ms to 1 s, callers giving up, channels
//! created and dropped, backup requests, an attempt timeout, payloads from
//! 0 to 256 KiB with attachments, gzip and snappy; every answer is checked
//! against its own request (and the server checks the compression it
//! received). Bounded (a few seconds of chaos, then 10,000 calls), with
//! fixed seeds; sized for debug builds (CI runs it there).
//!
//! Asserts: no wrong answer; no call outlives its deadline by more than a
//! generous bound; calls that failed with a retryable error while a server
//! was up (and time was left: past its deadline a call says ERPCTIMEDOUT)
//! stay under 1% of calls; once the faults stop, every server is available
//! again within 2 s (health checks alone, no calls), then the next 10,000
//! calls all succeed; and every pending table and invoker is back to zero.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keel::cluster::naming::ListNaming;
use keel::cluster::{Endpoint, InvokerState, LoadBalancer};
use keel::{Channel, Code, Compression, Context, Server, Status};
use support::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};
use tokio::time::Instant;

const SERVERS: usize = 4;
const CALLERS: u64 = 8;
const CHAOS: Duration = Duration::from_secs(5);
/// How long two servers stay down at the end of the chaos.
const FINAL_OUTAGE: Duration = Duration::from_secs(1);
const FINAL_CALLS: u64 = 10_000;
/// How long past its deadline a call may return (a loaded debug build on
/// two shared cores): a call the deadline does not stop takes far longer.
const OVERSHOOT: Duration = Duration::from_millis(500);
/// The attempt timeout of the channel that has one.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// How soon after the faults stop every server must be available again.
const RECOVERY: Duration = Duration::from_secs(2);

/// splitmix64: a fixed seed gives the same sequence of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// 1 ms to 1 s, evenly on a log scale.
    fn deadline(&mut self) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_micros((1_000.0 * 1_000f64.powf(unit)) as u64)
    }
}

/// The number a message names (`…:name=N:…`), if any.
fn field(message: &str, name: &str) -> Option<u64> {
    message
        .split(':')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// Echoes the message after the delay it names (`…:delay=N:…`, in ms), and
/// the attachment reversed; a request that did not arrive compressed as it
/// says (`…:zip=N:…`, brpc's compress type) gets a different message back,
/// which the caller counts as a wrong answer. The response is compressed
/// like the request (the server's default).
struct ChaosEcho;

impl EchoService for ChaosEcho {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        let delay = field(&req.message, "delay").unwrap_or(0);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if !ctx.attachment().is_empty() {
            let mut reversed = ctx.attachment().to_vec();
            reversed.reverse();
            ctx.set_response_attachment(reversed.into());
        }
        let zip = field(&req.message, "zip").unwrap_or(0);
        if zip != ctx.request_compression().as_i32() as u64 {
            resp.message = format!("arrived as {:?}", ctx.request_compression());
            return Ok(());
        }
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

/// One server's port, and the server on it when it is up.
struct Slot {
    addr: String,
    server: tokio::sync::Mutex<Option<Server>>,
    up: AtomicBool,
}

async fn serve(addr: &str) -> Server {
    // A port just freed may take a moment to bind again: bounded retries.
    for _ in 0..400 {
        match Server::builder()
            .add_service(EchoServiceServer::new(ChaosEcho))
            .bind(addr)
            .await
        {
            Ok(server) => return server,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    panic!("could not bind {addr} again");
}

impl Slot {
    async fn bring_up(&self) {
        let mut server = self.server.lock().await;
        if server.is_none() {
            *server = Some(serve(&self.addr).await);
            self.up.store(true, Ordering::Release);
        }
    }

    /// Takes the server down: `Some(handle)` of its graceful shutdown, or
    /// `None` when it was killed (dropped).
    async fn take_down(&self, graceful: bool) -> Option<tokio::task::JoinHandle<usize>> {
        let server = self.server.lock().await.take()?;
        self.up.store(false, Ordering::Release);
        if graceful {
            Some(tokio::spawn(server.shutdown(Duration::from_millis(300))))
        } else {
            drop(server);
            None
        }
    }
}

/// What the callers saw.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    ok: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
    other_errors: AtomicU64,
    wrong: AtomicU64,
    late: AtomicU64,
    /// Failed with a retryable error while a server was up.
    unexcused: AtomicU64,
    worst_overshoot_us: AtomicU64,
}

fn channel_name(client: &EchoServiceClient) -> &str {
    client
        .client()
        .channel()
        .cluster()
        .map_or("?", |c| c.name())
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::EFAILEDSOCKET | Code::ELOGOFF | Code::EHOSTDOWN | Code::ELIMIT | Code::EOVERCROWDED
    )
}

/// `len` letters that compress, but not to nothing: a random kilobyte
/// (runs of one letter, of random lengths) over and over.
fn filler(rng: &mut Rng, len: usize) -> String {
    let mut chunk = Vec::with_capacity(1024);
    while chunk.len() < len.min(1024) {
        let bits = rng.next();
        let run = (1 + (bits >> 8) % 8) as usize;
        chunk.extend(std::iter::repeat_n(b'a' + (bits % 26) as u8, run));
    }
    chunk.truncate(len.min(1024));
    let mut text = chunk.repeat(len.div_ceil(1024).max(1));
    text.truncate(len);
    String::from_utf8(text).expect("letters")
}

/// One checked call: `seq`-th of `caller`, with the given deadline and a
/// random delay (under chaos), size, compression and attachment, given up
/// after a random time (under chaos) for some.
#[allow(clippy::too_many_arguments)]
async fn checked_call(
    client: &EchoServiceClient,
    slots: &[Slot],
    tally: &Tally,
    caller: u64,
    seq: u64,
    rng: &mut Rng,
    deadline: Duration,
    chaos: bool,
) -> Result<(), Status> {
    // Mostly short delays; a few longer than the attempt timeout.
    let delay = match rng.below(100) {
        _ if !chaos => 0,
        0 => ATTEMPT_TIMEOUT.as_millis() as u64 + rng.below(50),
        1..=10 => 1 + rng.below(20),
        _ => 0,
    };
    let pad = match rng.below(200) {
        0 => 64 * 1024 + rng.below(192 * 1024),
        1..=4 => 16 * 1024 + rng.below(48 * 1024),
        5..=44 => rng.below(1024),
        _ => 0,
    } as usize;
    // Gzip is slow in a debug build: only on payloads up to 64 KiB.
    let compression = match rng.below(100) {
        0..=9 if pad <= 64 * 1024 => Compression::Gzip,
        10..=19 => Compression::Snappy,
        _ => Compression::None,
    };
    let message = format!(
        "caller={caller}:seq={seq}:delay={delay}:zip={}:{}",
        compression.as_i32(),
        filler(rng, pad)
    );
    let attachment: Bytes = if rng.chance(20) {
        (0..rng.below(512)).map(|i| (i * 7 + seq) as u8).collect()
    } else {
        Bytes::new()
    };
    let cancel = (chaos && rng.chance(5))
        .then(|| Duration::from_micros(rng.below(deadline.as_micros() as u64)));
    let request = EchoRequest {
        message: message.clone(),
    };
    let call = client
        .echo(&request)
        .timeout(deadline)
        .hash_key(rng.next())
        .attachment(attachment.clone())
        .compression(compression)
        .full();
    tally.calls.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let result = match cancel {
        None => call.await,
        Some(after) => match tokio::time::timeout(after, call).await {
            Ok(result) => result,
            Err(_) => {
                tally.cancelled.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        },
    };
    let took = started.elapsed();
    let over = took.saturating_sub(deadline);
    tally
        .worst_overshoot_us
        .fetch_max(over.as_micros() as u64, Ordering::Relaxed);
    if over > OVERSHOOT {
        tally.late.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(reply) => {
            let mut reversed = attachment.to_vec();
            reversed.reverse();
            if reply.message.message == message && reply.attachment == reversed {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Err(e) => {
            if e.code() == Code::ERPCTIMEDOUT {
                tally.timeouts.fetch_add(1, Ordering::Relaxed);
            } else if retryable(e.code()) && slots.iter().any(|s| s.up.load(Ordering::Acquire)) {
                tally.unexcused.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "unexcused on {} after {took:?} of {deadline:?}: {e}",
                    channel_name(client)
                );
            } else {
                tally.other_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "other error on {} after {took:?} of {deadline:?}: {e}",
                    channel_name(client)
                );
            }
            Err(e)
        }
    }
}

/// What a channel adds to failover.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    None,
    Backup,
    AttemptTimeout,
}

fn channel(name: &str, slots: &[Slot], balancer: LoadBalancer, extra: Extra) -> Channel {
    let endpoints = slots
        .iter()
        .map(|s| Endpoint::new(s.addr.clone()))
        .collect();
    let builder = Channel::builder_with_naming(name, Box::new(ListNaming::new(endpoints)))
        .load_balancer(balancer);
    let builder = match extra {
        Extra::None => builder,
        Extra::Backup => builder.backup_request(Some(Duration::from_millis(5))),
        Extra::AttemptTimeout => builder.attempt_timeout(Some(ATTEMPT_TIMEOUT)),
    };
    builder.build().expect("valid")
}

fn invokers_of(prefix: &str) -> Vec<keel::cluster::InvokerInfo> {
    keel::cluster::invokers()
        .into_iter()
        .filter(|i| i.channel.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_kills_and_short_deadlines_lose_no_call_they_could_have_made() {
    keel::rpcz::tracer().sampler().set_target(0);
    let test_started = Instant::now();
    let mut slots = Vec::new();
    for _ in 0..SERVERS {
        let server = serve("127.0.0.1:0").await;
        slots.push(Slot {
            addr: server.local_addr().to_string(),
            server: tokio::sync::Mutex::new(Some(server)),
            up: AtomicBool::new(true),
        });
    }
    let slots: Arc<[Slot]> = slots.into();
    let channels = [
        channel("chaos-rr", &slots, LoadBalancer::RoundRobin, Extra::None),
        channel(
            "chaos-la-backup",
            &slots,
            LoadBalancer::LeastActive,
            Extra::Backup,
        ),
        channel(
            "chaos-p2c",
            &slots,
            LoadBalancer::PowerOfTwoChoices,
            Extra::None,
        ),
        channel(
            "chaos-chash",
            &slots,
            LoadBalancer::ConsistentHash,
            Extra::None,
        ),
        channel(
            "chaos-wrr-attempt",
            &slots,
            LoadBalancer::WeightedRoundRobin,
            Extra::AttemptTimeout,
        ),
    ];
    let tally = Arc::new(Tally::default());
    let chaos_on = Arc::new(AtomicBool::new(true));

    // Callers: each on one of the channels; the last makes a new channel
    // every 50 calls and drops the old one.
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let slots = slots.clone();
        let tally = tally.clone();
        let chaos_on = chaos_on.clone();
        let mine = channels[caller as usize % channels.len()].clone();
        callers.push(tokio::spawn(async move {
            let mut rng = Rng(0x5eed_0000 + caller);
            let mut seq = 0;
            let mut churned = None;
            while chaos_on.load(Ordering::Acquire) {
                let channel = if caller == CALLERS - 1 {
                    if seq % 50 == 0 {
                        churned = Some(channel(
                            "chaos-churn",
                            &slots,
                            LoadBalancer::Random,
                            Extra::None,
                        ));
                    }
                    churned.clone().expect("made above")
                } else {
                    mine.clone()
                };
                let client = EchoServiceClient::new(&channel);
                let deadline = rng.deadline();
                let _ = checked_call(
                    &client, &slots, &tally, caller, seq, &mut rng, deadline, true,
                )
                .await;
                seq += 1;
            }
            seq
        }));
    }

    // The fleet's operator: restarts, kills, outages, one at a time at
    // most a few of them down, never all.
    let mut rng = Rng(0x00c4_a05e);
    let mut draining = Vec::new();
    let (mut restarts, mut kills, mut outages) = (0, 0, 0);
    let chaos_started = Instant::now();
    while chaos_started.elapsed() < CHAOS {
        let slot = &slots[rng.below(SERVERS as u64) as usize];
        let up = slots
            .iter()
            .filter(|s| s.up.load(Ordering::Acquire))
            .count();
        if !slot.up.load(Ordering::Acquire) {
            slot.bring_up().await;
        } else if up > 1 {
            match rng.below(10) {
                // A graceful restart on the same port: it drains (ELOGOFF)
                // while the new one binds.
                0..=4 => {
                    draining.extend(slot.take_down(true).await);
                    slot.bring_up().await;
                    restarts += 1;
                }
                // Killed and restarted a moment later.
                5..=7 => {
                    slot.take_down(false).await;
                    tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
                    slot.bring_up().await;
                    kills += 1;
                }
                // Killed and left down until picked again.
                _ => {
                    slot.take_down(false).await;
                    outages += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10 + rng.below(100))).await;
    }
    // Last, two servers stay down a while as the callers go on, so their
    // health checks back off (to the longest interval) before the faults
    // stop: the recovery below is measured from there.
    for slot in slots.iter() {
        let down = slots
            .iter()
            .filter(|s| !s.up.load(Ordering::Acquire))
            .count();
        if down < 2 && slot.up.load(Ordering::Acquire) {
            slot.take_down(false).await;
        }
    }
    tokio::time::sleep(FINAL_OUTAGE).await;
    chaos_on.store(false, Ordering::Release);
    let mut chaos_calls = 0;
    for caller in callers {
        chaos_calls += caller.await.expect("no caller panicked");
    }
    // The faults stop: every server up again.
    for slot in slots.iter() {
        slot.bring_up().await;
    }
    let faults_stopped = Instant::now();
    let chaos_tally = Tally {
        calls: AtomicU64::new(tally.calls.load(Ordering::Relaxed)),
        unexcused: AtomicU64::new(tally.unexcused.load(Ordering::Relaxed)),
        ..Tally::default()
    };
    // Every live server is back in every channel soon, by health checks
    // alone (no calls meanwhile): isolated servers are probed at most a
    // second apart (`health_check_interval`), and one isolated for its
    // error rate waits at most `max_isolation` (1 s) for its first probe.
    let all_available = || {
        channels.iter().all(|c| {
            c.cluster()
                .expect("cluster")
                .invokers()
                .iter()
                .all(|i| i.state == InvokerState::Available)
        })
    };
    // Bounded polling: well past the bound, then the assertion below says
    // how long it took.
    while !all_available() && faults_stopped.elapsed() < 5 * RECOVERY {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let back_after = faults_stopped.elapsed();
    let isolated_at_the_end = invokers_of("chaos-")
        .into_iter()
        .filter(|i| i.state != InvokerState::Available)
        .collect::<Vec<_>>();

    // The final 10,000 calls, with 1 s deadlines: every one succeeds.
    let finals_started = Instant::now();
    let mut finals = Vec::new();
    for caller in 0..CALLERS {
        let slots = slots.clone();
        let tally = tally.clone();
        let channel = channels[caller as usize % channels.len()].clone();
        finals.push(tokio::spawn(async move {
            let mut rng = Rng(0xf1_0000 + caller);
            let client = EchoServiceClient::new(&channel);
            for seq in 0..FINAL_CALLS / CALLERS {
                let deadline = Duration::from_secs(1);
                if let Err(e) = checked_call(
                    &client,
                    &slots,
                    &tally,
                    caller,
                    1_000_000 + seq,
                    &mut rng,
                    deadline,
                    false,
                )
                .await
                {
                    panic!("final call {seq} of caller {caller} failed: {e}");
                }
            }
        }));
    }
    for f in finals {
        f.await.expect("every final call succeeds");
    }
    let finals_took = finals_started.elapsed();

    let t = |n: &AtomicU64| n.load(Ordering::Relaxed);
    eprintln!(
        "chaos {:?}: {restarts} graceful restarts, {kills} kills, {outages} outages, \
         {chaos_calls} calls ({} unexcused); overall {} calls: {} ok, {} timed out, \
         {} cancelled, {} other errors, {} wrong, {} late (worst {} µs past the \
         deadline); every server available {back_after:?} after the faults stopped; \
         the final calls took {finals_took:?}; test took {:?}",
        CHAOS,
        t(&chaos_tally.unexcused),
        t(&tally.calls),
        t(&tally.ok),
        t(&tally.timeouts),
        t(&tally.cancelled),
        t(&tally.other_errors),
        t(&tally.wrong),
        t(&tally.late),
        t(&tally.worst_overshoot_us),
        test_started.elapsed(),
    );
    for c in &channels {
        let cluster = c.cluster().expect("cluster");
        eprintln!("{}: {:?}", cluster.name(), cluster.stats());
    }
    assert_eq!(t(&tally.wrong), 0, "wrong answers");
    assert_eq!(
        t(&tally.late),
        0,
        "calls outlived their deadline by > {OVERSHOOT:?}"
    );
    assert!(
        t(&chaos_tally.unexcused) * 100 < t(&chaos_tally.calls),
        "{} of {} calls failed with a retryable error while a server was up",
        t(&chaos_tally.unexcused),
        t(&chaos_tally.calls)
    );
    assert!(
        back_after <= RECOVERY,
        "servers still isolated {back_after:?} after the faults: {isolated_at_the_end:?}"
    );
    assert!(restarts + kills + outages >= 20, "too little chaos");

    // Nothing left behind: no pending call, no call in flight, and once
    // the channels are gone, no invoker.
    for c in &channels {
        assert_eq!(c.pending_calls(), 0, "{:?}", c.cluster().map(|c| c.name()));
        for i in c.cluster().expect("cluster").invokers() {
            assert_eq!((i.in_flight, i.pending), (0, 0), "{i:?}");
        }
    }
    drop(channels);
    support::eventually("every chaos invoker dropped", || {
        invokers_of("chaos-").is_empty()
    })
    .await;
    for handle in draining {
        handle.await.expect("no panic in a shutdown");
    }
    for slot in slots.iter() {
        if let Some(server) = slot.server.lock().await.take() {
            assert_eq!(server.stats().in_flight, 0);
            server.shutdown(Duration::from_secs(1)).await;
        }
    }
}

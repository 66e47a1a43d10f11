//! The cluster layer under rolling restarts (issue 18), one behaviour per
//! test, with servers on loopback: calls go to isolated servers that are
//! back before returning to a server they saw fail; a server isolated for
//! a broken connection is probed soon; timeouts count against a server
//! only when it had a fair chance; isolation ends soon after the faults;
//! a call past its deadline says ERPCTIMEDOUT and why; after ELOGOFF a
//! call reaches the server restarted on the same port; retries that cost
//! the servers nothing spend no retry budget. The chaos test of all of it
//! at once is `restarts_chaos.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel::cluster::{BreakerConfig, InvokerState, LoadBalancer, RetryBudget, Strategy};
use keel::{CallOptions, Channel, Code, Context, Server, Status};
use support::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer, eventually,
    request, start,
};
use tokio::time::Instant;

fn quiet() {
    keel::rpcz::tracer().sampler().set_target(0);
}

fn list(addrs: &[&str]) -> String {
    format!("list://{}", addrs.join(","))
}

/// An echo server on `addr` again (a restart on the same port). The port
/// was just freed; binding is retried a bounded number of times in case
/// the kernel has not let it go yet.
async fn rebind(addr: &str) -> Server {
    for _ in 0..200 {
        let builder =
            Server::builder().add_service(EchoServiceServer::new(support::Echo::default()));
        match builder.bind(addr).await {
            Ok(server) => return server,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    panic!("could not bind {addr} again");
}

/// Calls `client` until `cond` holds (a call at a time, any outcome, a
/// millisecond apart), bounded by 10 s: for states that calls drive, such
/// as isolations, and effects that calls wake on other tasks (health
/// checks), which a burst of instant failures could outrun.
async fn call_until(client: &EchoServiceClient, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let _ = client.echo(&request("drive")).await;
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("10 s of calls and still not {what}");
}

fn state(channel: &Channel, addr: &str) -> InvokerState {
    channel
        .cluster()
        .expect("cluster")
        .invoker(addr)
        .expect("one of the channel's servers")
        .state
}

/// Health checks a minute apart: only what the test does revives a server.
fn slow_health_checks() -> BreakerConfig {
    BreakerConfig {
        min_isolation: Duration::from_secs(60),
        max_isolation: Duration::from_secs(60),
        health_check_interval: Duration::from_secs(60),
        ..BreakerConfig::default()
    }
}

// 1. Where a call goes when the available servers are exhausted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_last_available_server_dead_calls_go_to_isolated_servers_that_are_back() {
    quiet();
    // The fleet: B and C restart (down a moment, isolated by their
    // refused connections, back at once), then A dies.
    let a = start(|b| b).await;
    let b = start(|b| b).await;
    let c = start(|b| b).await;
    let (a_addr, b_addr, c_addr) = (a.addr(), b.addr(), c.addr());
    let channel = Channel::builder(&list(&[&a_addr, &b_addr, &c_addr]))
        .breaker(slow_health_checks())
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    drop((b, c));
    call_until(&client, "B and C isolated", || {
        state(&channel, &b_addr) == InvokerState::Isolated
            && state(&channel, &c_addr) == InvokerState::Isolated
    })
    .await;
    let _b = rebind(&b_addr).await;
    let _c = rebind(&c_addr).await;
    assert_eq!(state(&channel, &b_addr), InvokerState::Isolated);
    assert_eq!(state(&channel, &c_addr), InvokerState::Isolated);
    drop(a);
    // A is the last available server, so it cannot be isolated; its
    // refused connection sends each call on to B or C at once.
    for i in 0..50 {
        let message = format!("call {i}");
        let started = Instant::now();
        let reply = client
            .echo(&request(&message))
            .await
            .unwrap_or_else(|e| panic!("call {i} failed with B and C up: {e}"));
        assert_eq!(reply.message, message);
        assert!(started.elapsed() < Duration::from_millis(900), "call {i}");
    }
    // B or C took the calls and is back in rotation (revived by the first
    // call that reached it, or by a woken health check, a minute before its
    // own), and A, no longer the last, is out.
    let back = |addr: &str| state(&channel, addr) == InvokerState::Available;
    assert!(back(&b_addr) || back(&c_addr));
    assert_eq!(state(&channel, &a_addr), InvokerState::Isolated);
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_on_the_last_available_server_wakes_the_health_checks() {
    quiet();
    let a = start(|b| b).await;
    let b = start(|b| b).await;
    let c = start(|b| b).await;
    let (a_addr, b_addr, c_addr) = (a.addr(), b.addr(), c.addr());
    // Failfast: no retry takes a call to an isolated server, so only
    // health checks can bring B and C back, and theirs are a minute away.
    let channel = Channel::builder(&list(&[&a_addr, &b_addr, &c_addr]))
        .strategy(Strategy::Failfast)
        .breaker(slow_health_checks())
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    drop((b, c));
    call_until(&client, "B and C isolated", || {
        state(&channel, &b_addr) == InvokerState::Isolated
            && state(&channel, &c_addr) == InvokerState::Isolated
    })
    .await;
    let _b = rebind(&b_addr).await;
    let _c = rebind(&c_addr).await;
    let probes_before = channel.cluster().expect("cluster").stats().probes;
    drop(a);
    let e = client
        .echo(&request("to A"))
        .await
        .expect_err("failfast: A refuses");
    assert_eq!(e.code(), Code::EFAILEDSOCKET, "{e}");
    // A's refusals wake B's and C's checks (a few calls, in case the first
    // came within the minimum gap between two probes of a server).
    call_until(&client, "B and C revived by woken health checks", || {
        state(&channel, &b_addr) == InvokerState::Available
            && state(&channel, &c_addr) == InvokerState::Available
    })
    .await;
    let stats = channel.cluster().expect("cluster").stats();
    assert!(stats.probes >= probes_before + 2, "{stats:?}");
    // A, no longer the last, is isolated at its next refusal; then B and C
    // answer everything.
    call_until(&client, "A isolated", || {
        state(&channel, &a_addr) == InvokerState::Isolated
    })
    .await;
    for _ in 0..10 {
        client.echo(&request("hi")).await.expect("B or C answers");
    }
}

#[tokio::test]
async fn a_server_isolated_for_a_broken_connection_is_probed_soon_and_less_often_while_down() {
    quiet();
    let live = start(|b| b).await;
    let gone = start(|b| b).await;
    let gone_addr = gone.addr();
    drop(gone);
    // Default first probe (min_isolation, 100 ms); a long interval shows
    // that the first probe does not wait for it.
    let channel = Channel::builder(&list(&[&live.addr(), &gone_addr]))
        .breaker(BreakerConfig {
            health_check_interval: Duration::from_secs(5),
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let client = EchoServiceClient::new(&channel);
    call_until(&client, "the gone server isolated", || {
        state(&channel, &gone_addr) == InvokerState::Isolated
    })
    .await;
    let isolated_at = Instant::now();
    eventually("a first probe", || cluster.stats().probes >= 1).await;
    let first = isolated_at.elapsed();
    assert!(
        first < Duration::from_secs(1),
        "first probe after {first:?}"
    );
    // Backing off: 100 ms, then 200 ms, then 400 ms between probes, so the
    // third comes at least 700 ms after the isolation (300 ms at a fixed
    // 100 ms).
    eventually("three probes", || cluster.stats().probes >= 3).await;
    let third = isolated_at.elapsed();
    eprintln!("probes after the isolation: first at {first:?}, third at {third:?}");
    assert!(
        third >= Duration::from_millis(600),
        "third probe after {third:?}"
    );
    // It comes back: the first probe that reaches it revives it.
    let back = rebind(&gone_addr).await;
    eventually("the server revived", || {
        state(&channel, &gone_addr) == InvokerState::Available
    })
    .await;
    assert_eq!(cluster.stats().revivals, 1);
    for _ in 0..10 {
        client.echo(&request("hi")).await.expect("call");
    }
    assert!(back.stats().calls >= 5, "the revived server takes calls");
}

// 2. Timeouts count against a server only when it had a fair chance.

#[tokio::test]
async fn timeouts_count_against_a_server_only_when_it_had_a_fair_chance() {
    quiet();
    // "gate" calls hang on `hung` (its gate never opens).
    let hung = start(|b| b).await;
    let fine = start(|b| b).await;
    fine.gate.add_permits(100_000);
    // A fair chance is 1 s here (50 ms by default): on a loaded machine a
    // 5 ms attempt may yet be dropped 50 ms after it began.
    let channel = Channel::builder(&list(&[&hung.addr(), &fine.addr()]))
        .breaker(BreakerConfig {
            fair_timeout: Duration::from_secs(1),
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let hung_invoker = || cluster.invoker(&hung.addr()).expect("invoker");
    // Callers with 5 ms deadlines: half their calls time out on `hung`,
    // far more than it takes to isolate a server by its error rate, but a
    // 5 ms deadline gave it no fair chance.
    let hasty = EchoServiceClient::new(&channel).with_options(CallOptions {
        timeout: Some(Duration::from_millis(5)),
        max_retry: Some(0),
        ..CallOptions::default()
    });
    let mut timeouts = 0;
    for _ in 0..80 {
        if let Err(e) = hasty.echo(&request("gate")).await {
            assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
            timeouts += 1;
        }
    }
    assert!(timeouts >= 40, "{timeouts} timeouts");
    let info = hung_invoker();
    assert_eq!(
        (info.errors, info.state),
        (0, InvokerState::Available),
        "{info:?}"
    );
    assert_eq!(cluster.stats().isolations, 0);
    // Callers giving up (their tasks dropped) count as nothing either.
    let single = Channel::builder(&list(&[&hung.addr()]))
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("valid");
    for _ in 0..20 {
        let channel = single.clone();
        let call = tokio::spawn(async move {
            EchoServiceClient::new(&channel)
                .echo(&request("gate"))
                .await
        });
        hung.gated.notified().await;
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
    }
    let info = single
        .cluster()
        .expect("cluster")
        .invoker(&hung.addr())
        .expect("invoker");
    assert_eq!((info.errors, info.calls), (0, 0), "{info:?}");
    assert_eq!(single.pending_calls(), 0);
    // A deadline long enough (at least `fair_timeout`, 50 ms) counts.
    let patient = EchoServiceClient::new(&single).with_options(CallOptions {
        timeout: Some(Duration::from_millis(60)),
        ..CallOptions::default()
    });
    let e = patient.echo(&request("gate")).await.expect_err("hung");
    assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
    eventually("the fair timeout counted", || {
        single
            .cluster()
            .expect("cluster")
            .invoker(&hung.addr())
            .is_some_and(|i| i.errors == 1)
    })
    .await;
    // So does an attempt's own timeout, however short.
    let attempts = Channel::builder(&list(&[&hung.addr(), &fine.addr()]))
        .attempt_timeout(Some(Duration::from_millis(5)))
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&attempts);
    for _ in 0..4 {
        client
            .echo(&request("gate"))
            .await
            .expect("failover to the fine server");
    }
    let info = attempts
        .cluster()
        .expect("cluster")
        .invoker(&hung.addr())
        .expect("invoker");
    assert!(info.errors >= 1 && info.errors == info.calls, "{info:?}");
}

/// Calls over `channel` from 8 callers at once, three in four of them
/// with deadlines of 1 µs to 1 ms, the rest with 1 s: (answered, timed
/// out).
async fn hasty_calls(channel: &Channel) -> (u32, u32) {
    let mut callers = Vec::new();
    for caller in 0..8u64 {
        let client = EchoServiceClient::new(channel);
        callers.push(tokio::spawn(async move {
            let (mut ok, mut timeouts) = (0u32, 0u32);
            for i in 0..120u64 {
                let deadline = if i % 4 == 3 {
                    Duration::from_secs(1)
                } else {
                    Duration::from_micros(1 + (caller * 31 + i * 17) % 1_000)
                };
                let message = format!("{caller}:{i}");
                match client.echo(&request(&message)).timeout(deadline).await {
                    Ok(reply) => {
                        assert_eq!(reply.message, message);
                        ok += 1;
                    }
                    Err(e) if deadline < Duration::from_secs(1) => {
                        assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
                        timeouts += 1;
                    }
                    Err(e) => panic!("a call with 1 s failed: {e}"),
                }
            }
            (ok, timeouts)
        }));
    }
    let (mut ok, mut timeouts) = (0, 0);
    for caller in callers {
        let (o, t) = caller.await.expect("no caller panicked");
        ok += o;
        timeouts += t;
    }
    (ok, timeouts)
}

/// A least-active cluster channel whose calls send a backup request at
/// the timer's next tick (tokio's timers tick every millisecond): every
/// call still unanswered then, which on a fast machine is one in a few.
fn least_active_with_backups(addrs: &[&str], breaker: BreakerConfig) -> Channel {
    Channel::builder(&list(addrs))
        .load_balancer(LoadBalancer::LeastActive)
        .backup_request(Some(Duration::from_micros(1)))
        .breaker(breaker)
        .build()
        .expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_requests_and_short_deadlines_isolate_no_healthy_server() {
    quiet();
    let servers = [
        start(|b| b).await,
        start(|b| b).await,
        start(|b| b).await,
        start(|b| b).await,
    ];
    let addrs: Vec<String> = servers.iter().map(support::Fixture::addr).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    // No faults, no delays: only the callers' deadlines (far below
    // `fair_timeout`) and the backup requests cut attempts short (the
    // losing attempt of each backup pair is dropped), and least active
    // sends the next calls to the servers those cuts left idle. A breaker
    // on a hair trigger (isolating at a 10% error rate after 8 calls)
    // shows that none of those cut attempts counts against its server.
    let hair_trigger = BreakerConfig {
        error_rate: 0.1,
        min_calls: 8,
        ..BreakerConfig::default()
    };
    let channel = least_active_with_backups(&refs, hair_trigger);
    // Rounds until deadlines have cut enough calls short (how many a round
    // cuts depends on the machine's speed), five at most.
    let (mut ok, mut timeouts) = (0, 0);
    for _ in 0..5 {
        let (o, t) = hasty_calls(&channel).await;
        ok += o;
        timeouts += t;
        if timeouts >= 20 {
            break;
        }
    }
    let cluster = channel.cluster().expect("cluster");
    let stats = cluster.stats();
    eprintln!("{ok} ok, {timeouts} timed out: {stats:?}");
    // What the test is about happened: deadlines cut calls short, and
    // backup requests were sent.
    assert!(timeouts >= 20 && ok >= 240, "{ok} ok, {timeouts} timed out");
    assert!(stats.backup_requests >= 10, "{stats:?}");
    assert_eq!(stats.isolations, 0, "{stats:?}: {:?}", cluster.invokers());
    for info in cluster.invokers() {
        assert_eq!(info.state, InvokerState::Available, "{info:?}");
    }
    assert_eq!(channel.pending_calls(), 0);

    // The same calls where every timeout counts against its server
    // (`fair_timeout` 0, as before it existed) do isolate healthy servers.
    let counting = least_active_with_backups(
        &refs,
        BreakerConfig {
            fair_timeout: Duration::ZERO,
            ..hair_trigger
        },
    );
    let (ok, timeouts) = hasty_calls(&counting).await;
    let stats = counting.cluster().expect("cluster").stats();
    eprintln!("counting every timeout: {ok} ok, {timeouts} timed out: {stats:?}");
    assert!(stats.isolations > 0, "{stats:?}");
}

// 3. Isolation ends when the faults do.

/// Echo that fails every call while its switch is on.
struct Switchable {
    failing: Arc<AtomicBool>,
}

impl EchoService for Switchable {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(Status::internal("failing on purpose"));
        }
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_faults_stop_every_live_server_is_available_again_within_two_seconds() {
    quiet();
    let failing = Arc::new(AtomicBool::new(false));
    let flaky = Server::builder()
        .add_service(EchoServiceServer::new(Switchable {
            failing: failing.clone(),
        }))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let steady = [start(|b| b).await, start(|b| b).await];
    let killed = start(|b| b).await;
    let stopped = start(|b| b).await;
    let flaky_addr = flaky.local_addr().to_string();
    let (killed_addr, stopped_addr) = (killed.addr(), stopped.addr());
    let addrs = [
        flaky_addr.clone(),
        steady[0].addr(),
        steady[1].addr(),
        killed_addr.clone(),
        stopped_addr.clone(),
    ];
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    // The default breaker: what a user gets.
    let channel = Channel::new(&list(&refs)).expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let client = EchoServiceClient::new(&channel);
    // Faults: one server killed, one shut down gracefully, both kept down
    // while their health checks back off to the longest interval...
    drop(killed);
    stopped.server.shutdown(Duration::from_secs(1)).await;
    call_until(&client, "the stopped servers isolated", || {
        state(&channel, &killed_addr) == InvokerState::Isolated
            && state(&channel, &stopped_addr) == InvokerState::Isolated
    })
    .await;
    // ... and one failing every call, isolated by its error rate again and
    // again, each time soon after its revival, so its isolations back off.
    failing.store(true, Ordering::Relaxed);
    for round in 0..6 {
        call_until(&client, "the failing server isolated", || {
            state(&channel, &flaky_addr) == InvokerState::Isolated
        })
        .await;
        if round < 5 {
            eventually("the failing server revived by its health check", || {
                state(&channel, &flaky_addr) == InvokerState::Available
            })
            .await;
        }
    }
    // The faults stop: the failing server is fixed, the others come back.
    failing.store(false, Ordering::Relaxed);
    let _killed = rebind(&killed_addr).await;
    let _stopped = rebind(&stopped_addr).await;
    let faults_stopped = Instant::now();
    let all_available = || {
        cluster
            .invokers()
            .iter()
            .all(|i| i.state == InvokerState::Available)
    };
    while !all_available() {
        assert!(
            faults_stopped.elapsed() < Duration::from_secs(10),
            "still isolated after 10 s: {:?}",
            cluster.invokers()
        );
        client.echo(&request("hi")).await.expect("healthy now");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = faults_stopped.elapsed();
    let stats = cluster.stats();
    eprintln!("every server available {took:?} after the faults stopped: {stats:?}");
    assert!(took <= Duration::from_secs(2), "took {took:?}: {stats:?}");
    assert!(stats.isolations >= 8 && stats.revivals >= 8, "{stats:?}");
}

// 4. Past the deadline, ERPCTIMEDOUT and why.

#[tokio::test]
async fn a_call_failing_at_its_deadline_reports_a_timeout_with_the_last_error() {
    quiet();
    let gone = start(|b| b).await;
    let gone_addr = gone.addr();
    drop(gone);
    // One server that refuses, retried until the deadline passes.
    let channel = Channel::builder(&gone_addr)
        .timeout(Some(Duration::from_millis(30)))
        .max_retry(1_000_000)
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    let e = client
        .echo(&request("hi"))
        .await
        .expect_err("nobody listens");
    assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
    assert!(e.message().contains("timeout=30ms"), "{e}");
    assert!(
        e.message().contains("EFAILEDSOCKET"),
        "the last attempt's error: {e}"
    );
    // Failing before the deadline, a call keeps its own error.
    let once = client.clone().with_options(CallOptions {
        max_retry: Some(0),
        ..CallOptions::default()
    });
    let e = once.echo(&request("hi")).await.expect_err("nobody listens");
    assert_eq!(e.code(), Code::EFAILEDSOCKET, "{e}");

    // A server that says it is stopping (ELOGOFF) to every call, on every
    // connection (each ELOGOFF retires the connection it came on, and the
    // next attempt connects again), until the deadline.
    let stopping = Server::builder()
        .add_service(EchoServiceServer::new(AlwaysStopping))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = stopping.local_addr().to_string();
    let channel = Channel::builder(&list(&[&addr]))
        .timeout(Some(Duration::from_millis(30)))
        .max_retry(1_000_000)
        .retry_budget(None)
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    let started = Instant::now();
    let e = client.echo(&request("hi")).await.expect_err("stopping");
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
    assert!(
        e.message().contains("ELOGOFF"),
        "the last attempt's error: {e}"
    );
    assert!(stopping.stats().accepted >= 2, "{:?}", stopping.stats());
    assert_eq!(channel.pending_calls(), 0);
}

/// Says it is stopping to every call.
struct AlwaysStopping;

impl EchoService for AlwaysStopping {
    async fn echo(
        &self,
        _ctx: &Context,
        _req: &EchoRequest,
        _resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        Err(Status::new(Code::ELOGOFF, "stopping"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_elogoff_a_call_reaches_the_server_restarted_on_the_same_port() {
    quiet();
    let support::Fixture {
        server,
        gate,
        gated,
        ..
    } = start(|b| b).await;
    let addr = server.local_addr().to_string();
    // One server, so every retry goes back to it.
    let channel = Channel::builder(&list(&[&addr])).build().expect("valid");
    let cluster = channel.cluster().expect("cluster");
    // A call in flight keeps the old server's connection open while it
    // drains, answering new calls ELOGOFF; a new server binds the port.
    let in_flight = {
        let channel = channel.clone();
        tokio::spawn(async move {
            EchoServiceClient::new(&channel)
                .echo(&request("gate"))
                .timeout(Duration::from_secs(10))
                .await
        })
    };
    gated.notified().await;
    let draining = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    let restarted = rebind(&addr).await;
    // The call's first attempt meets the draining server; the connection
    // it came on takes no more calls, and the free retry connects to the
    // restarted server.
    let client = EchoServiceClient::new(&channel);
    let reply = client
        .echo(&request("hi"))
        .await
        .expect("the restarted server answers");
    assert_eq!(reply.message, "hi");
    assert_eq!(restarted.stats().calls, 1);
    let stats = cluster.stats();
    assert_eq!((stats.retries, stats.free_retries), (1, 1), "{stats:?}");
    for _ in 0..10 {
        client
            .echo(&request("hi"))
            .await
            .expect("the restarted server answers");
    }
    assert_eq!(restarted.stats().calls, 11);
    // The old connection still carries the call in flight to its end.
    gate.add_permits(1);
    let reply = in_flight
        .await
        .expect("no panic")
        .expect("the call in flight completes");
    assert_eq!(reply.message, "gate");
    assert_eq!(draining.await.expect("no panic"), 0, "no call cut short");
    assert_eq!(channel.pending_calls(), 0);
}

// 5. Retries that cost the servers nothing spend no retry budget.

/// No budget at all: any retry that spends budget is refused. No breaker:
/// a failing server keeps being picked.
fn no_budget(addrs: &[&str]) -> Channel {
    Channel::builder(&list(addrs))
        .retry_budget(Some(RetryBudget {
            ratio: 0.0,
            reserve: 0,
        }))
        .breaker(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_failures_that_cannot_have_reached_a_handler_spend_no_budget() {
    quiet();
    let live = start(|b| b).await;
    live.gate.add_permits(100_000);

    // Refused connections.
    let gone = start(|b| b).await;
    let gone_addr = gone.addr();
    drop(gone);
    let channel = no_budget(&[&gone_addr, &live.addr()]);
    let client = EchoServiceClient::new(&channel);
    for i in 0..50 {
        let message = format!("refused {i}");
        let reply = client.echo(&request(&message)).await.expect("free retry");
        assert_eq!(reply.message, message);
    }
    let stats = channel.cluster().expect("cluster").stats();
    assert!(stats.free_retries >= 20, "{stats:?}");
    assert_eq!(stats.free_retries, stats.retries, "{stats:?}");
    assert_eq!(stats.retries_refused, 0, "{stats:?}");

    // A stopping server (ELOGOFF on its open connection).
    let stopping = start(|b| b).await;
    let channel = no_budget(&[&stopping.addr(), &live.addr()]);
    let client = EchoServiceClient::new(&channel);
    // Park a call on the stopping server, so its connection stays open
    // while it drains ("gate" on `live` is answered at once).
    let mut parked = None;
    for _ in 0..10 {
        let channel = channel.clone();
        let mut call = tokio::spawn(async move {
            EchoServiceClient::new(&channel)
                .echo(&request("gate"))
                .await
        });
        tokio::select! {
            _ = stopping.gated.notified() => {
                parked = Some(call);
                break;
            }
            done = &mut call => {
                done.expect("no panic").expect("answered by live");
            }
        }
    }
    let parked = parked.expect("round robin sends a call to the stopping server");
    let support::Fixture { server, gate, .. } = stopping;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    let once = client.clone().with_options(CallOptions {
        max_retry: Some(0),
        ..CallOptions::default()
    });
    let mut refused = false;
    for _ in 0..1_000 {
        if let Err(e) = once.echo(&request("hi")).await {
            assert_eq!(e.code(), Code::ELOGOFF, "{e}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the server never said it was stopping");
    for i in 0..50 {
        let message = format!("stopping {i}");
        let reply = client.echo(&request(&message)).await.expect("free retry");
        assert_eq!(reply.message, message);
    }
    let stats = channel.cluster().expect("cluster").stats();
    assert!(stats.free_retries >= 20, "{stats:?}");
    assert_eq!(stats.retries_refused, 0, "{stats:?}");
    gate.add_permits(1);
    parked
        .await
        .expect("no panic")
        .expect("the parked call completes");
    assert_eq!(shutdown.await.expect("no panic"), 0);

    // A connection that breaks after the request was written: the handler
    // may have run, so the retry spends budget, and there is none.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let breaking_addr = listener.local_addr().expect("addr").to_string();
    let breaker = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            // Read (part of) the request, then hang up.
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
        }
    });
    let channel = no_budget(&[&breaking_addr, &live.addr()]);
    let client = EchoServiceClient::new(&channel);
    let mut broken = 0;
    // After each broken connection the endpoint waits a moment before the
    // next (10 ms, doubling): calls meanwhile are refused before anything
    // is written, retried for free on the live server, and succeed. So
    // call until five have broken (bounded in count and time).
    let end = Instant::now() + Duration::from_secs(10);
    for _ in 0..100_000 {
        if broken >= 5 || Instant::now() >= end {
            break;
        }
        if let Err(e) = client.echo(&request("hi")).await {
            assert_eq!(e.code(), Code::EFAILEDSOCKET, "{e}");
            broken += 1;
        }
        tokio::task::yield_now().await;
    }
    let stats = channel.cluster().expect("cluster").stats();
    assert!(broken >= 5, "{broken} calls broke: {stats:?}");
    assert_eq!(stats.retries_refused, broken, "{stats:?}");
    breaker.abort();
    assert_eq!(channel.pending_calls(), 0);
}

type Sent = tokio::task::JoinHandle<(String, Result<EchoResponse, Status>)>;

/// Sends calls (`send(i)`, the `i`-th) until one waits on the server that
/// never answers (`waiting` says so) and returns it. Round robin
/// alternates first attempts between a channel's two servers: a call that
/// goes to the live one is answered, and the next one goes to the other.
async fn park(mut send: impl FnMut(u32) -> Sent, waiting: impl Fn() -> bool) -> Sent {
    for i in 0..4 {
        let mut sent = send(i);
        loop {
            tokio::select! {
                done = &mut sent => {
                    // (Messages may be megabytes: never printed.)
                    match done.expect("no panic") {
                        (message, Ok(reply)) => assert!(reply.message == message, "wrong answer"),
                        (_, Err(e)) => panic!("not answered by the live server: {e}"),
                    }
                    break;
                }
                // Bounded by the call's own timeout.
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    if waiting() {
                        return sent;
                    }
                }
            }
        }
    }
    panic!("four calls and none went to the server that does not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_queued_when_its_connection_resets_is_retried_for_free() {
    quiet();
    let live = start(|b| b).await;
    // A server that accepts one connection and never reads from it (with a
    // small receive buffer, so a large request soon fills the connection),
    // says when the first bytes arrived, then resets it when told.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let resetting_addr = listener.local_addr().expect("addr").to_string();
    let (reset, reset_now) = tokio::sync::oneshot::channel::<()>();
    let (arrived, bytes_arrived) = tokio::sync::oneshot::channel::<()>();
    let resetting = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        // Waits for the first bytes, leaving them unread (readiness alone
        // may come before any byte).
        let peeked = stream.peek(&mut [0u8; 1]).await.expect("peek");
        assert_eq!(peeked, 1, "a request arrives");
        let _ = arrived.send(());
        let _ = reset_now.await;
        stream.set_zero_linger().expect("linger");
        drop(stream); // closed with a reset, nothing read
    });
    let channel = no_budget(&[&resetting_addr, &live.addr()]);
    let cluster = channel.cluster().expect("cluster");
    let on_resetting = || {
        cluster
            .invoker(&resetting_addr)
            .expect("one of the channel's servers")
            .pending
    };
    let call = |message: String| {
        let channel = channel.clone();
        tokio::spawn(async move {
            let reply = EchoServiceClient::new(&channel)
                .echo(&request(&message))
                .timeout(Duration::from_secs(30))
                .await;
            (message, reply)
        })
    };
    // First a request far larger than the socket buffers (8 MiB), whose
    // writing begins and then blocks, then a small one queued behind it:
    // none of it is written.
    let large = park(
        |i| call(format!("large {i}:{}", "x".repeat(8 << 20))),
        || on_resetting() == 1,
    )
    .await;
    bytes_arrived
        .await
        .expect("part of the large request arrives");
    let small = park(|i| call(format!("small {i}")), || on_resetting() == 2).await;
    let before = cluster.stats();
    assert_eq!(
        (before.retries, before.retries_refused),
        (0, 0),
        "{before:?}"
    );
    reset.send(()).expect("the resetting server waits");
    resetting.await.expect("no panic");
    // The small request never left the client: its retry is free, and the
    // live server answers it, although the channel has no retry budget.
    let (message, reply) = small.await.expect("no panic");
    assert_eq!(reply.expect("retried on the live server").message, message);
    // The large one was partly written, so a handler may have run it: its
    // retry would spend budget, and there is none.
    let (_, reply) = large.await.expect("no panic");
    match reply {
        Ok(reply) => panic!(
            "no budget for its retry, yet answered ({} bytes): {:?}",
            reply.message.len(),
            cluster.stats()
        ),
        Err(e) => assert_eq!(e.code(), Code::EFAILEDSOCKET, "{e}"),
    }
    let stats = cluster.stats();
    assert_eq!(
        (stats.retries, stats.free_retries, stats.retries_refused),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(channel.pending_calls(), 0);
}

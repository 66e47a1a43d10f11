//! The cluster layer end to end, with servers on loopback: naming URLs,
//! load spread, destroy under load, backup requests, circuit breaking and
//! health checks, and the process-wide invoker registry.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel::cluster::Endpoint;
use keel::cluster::naming::ListNaming;
use keel::cluster::{BreakerConfig, InvokerState, LoadBalancer, Strategy};
use keel::{CallOptions, Channel, Code};
use support::{EchoServiceClient, eventually, request, start};

fn quiet() {
    keel::rpcz::tracer().sampler().set_target(0);
}

/// Two servers for "gate" calls: the first never answers them (its gate
/// never opens), the second always does.
async fn hung_and_fine() -> (support::Fixture, support::Fixture) {
    let hung = start(|b| b).await;
    let fine = start(|b| b).await;
    fine.gate.add_permits(10_000);
    (hung, fine)
}

fn list(addrs: &[&str]) -> String {
    format!("list://{}", addrs.join(","))
}

#[tokio::test]
async fn a_list_channel_spreads_calls_round_robin() {
    quiet();
    let servers = [start(|b| b).await, start(|b| b).await, start(|b| b).await];
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let channel = Channel::new(&list(&refs)).expect("valid list");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..300 {
        assert_eq!(
            client.echo(&request("hi")).await.expect("call").message,
            "hi"
        );
    }
    for s in &servers {
        assert_eq!(s.calls.load(Ordering::Relaxed), 100, "round robin is even");
    }
    let cluster = channel.cluster().expect("a list channel is a cluster");
    assert_eq!(cluster.endpoints().len(), 3);
    assert!(
        cluster
            .invokers()
            .iter()
            .all(|i| i.state == InvokerState::Available)
    );
    assert_eq!(cluster.stats().updates, 1);
    assert_eq!(channel.pending_calls(), 0);
    // A plain host:port stays a one-endpoint channel.
    assert!(Channel::new(&addrs[0]).expect("addr").cluster().is_none());
}

#[test]
fn bad_naming_urls_say_what_is_wrong() {
    for (url, why) in [
        ("foo://127.0.0.1:1", "scheme"),
        ("list://127.0.0.1", "host:port"),
        ("list://127.0.0.1:1 weight=x", "weight"),
        ("127.0.0.1", "host:port"),
    ] {
        let e = Channel::new(url).expect_err(url);
        assert!(e.to_string().contains(why), "{url}: {e}");
    }
}

#[tokio::test]
async fn consistent_hashing_sends_a_key_to_the_same_server_from_any_channel() {
    quiet();
    let servers = [start(|b| b).await, start(|b| b).await, start(|b| b).await];
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let forward: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    let a = Channel::builder(&list(&forward))
        .load_balancer(LoadBalancer::ConsistentHash)
        .build()
        .expect("valid");
    let b = Channel::builder(&list(&backward))
        .load_balancer(LoadBalancer::ConsistentHash)
        .build()
        .expect("valid");
    let mut spread = [0u64; 3];
    for key in 0..60u64 {
        let options = CallOptions {
            hash_key: key,
            ..CallOptions::default()
        };
        let before: Vec<u64> = servers
            .iter()
            .map(|s| s.calls.load(Ordering::Relaxed))
            .collect();
        for channel in [&a, &b, &a] {
            EchoServiceClient::new(channel)
                .with_options(options.clone())
                .echo(&request("k"))
                .await
                .expect("call");
        }
        let got: Vec<u64> = servers
            .iter()
            .zip(&before)
            .map(|(s, b)| s.calls.load(Ordering::Relaxed) - b)
            .collect();
        let hit: Vec<usize> = (0..3).filter(|&i| got[i] > 0).collect();
        assert_eq!(hit.len(), 1, "key {key} went to one server: {got:?}");
        assert_eq!(got[hit[0]], 3);
        spread[hit[0]] += 1;
    }
    assert!(
        spread.iter().all(|&n| n > 0),
        "keys spread over servers: {spread:?}"
    );
}

#[tokio::test]
async fn a_file_channel_follows_the_file() {
    quiet();
    let one = start(|b| b).await;
    let two = start(|b| b).await;
    let path = std::env::temp_dir().join(format!("keel-cluster-{}.servers", std::process::id()));
    std::fs::write(&path, format!("# servers\n{}\n", one.addr())).expect("write");
    let channel = Channel::builder(&format!("file://{}", path.display()))
        .naming_interval(Duration::from_millis(20))
        .build()
        .expect("valid file");
    let client = EchoServiceClient::new(&channel);
    client.echo(&request("a")).await.expect("call");
    assert_eq!(one.calls.load(Ordering::Relaxed), 1);
    std::fs::write(&path, format!("{}\n", two.addr())).expect("rewrite");
    let cluster = channel.cluster().expect("cluster");
    let target = Endpoint::new(two.addr());
    eventually("the new file to be read", || {
        cluster.endpoints() == [target.clone()]
    })
    .await;
    client.echo(&request("b")).await.expect("call");
    assert_eq!(two.calls.load(Ordering::Relaxed), 1);
    assert_eq!(one.calls.load(Ordering::Relaxed), 1);
    std::fs::remove_file(&path).expect("remove");
    let missing = Channel::new(&format!("file://{}", path.display())).expect_err("missing file");
    assert!(missing.to_string().contains("servers"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_removed_under_load_finish_their_calls_and_are_released() {
    quiet();
    let servers = [
        start(|b| b).await,
        start(|b| b).await,
        start(|b| b).await,
        start(|b| b).await,
    ];
    let eps: Vec<Endpoint> = servers.iter().map(|s| Endpoint::new(s.addr())).collect();
    let naming = ListNaming::new(eps[..2].to_vec());
    let updater = naming.updater();
    let channel = Channel::builder_with_naming("list://under-load", Box::new(naming))
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("valid");
    let cluster_updates = |c: &Channel| c.cluster().expect("cluster").stats().updates;
    channel
        .cluster()
        .expect("cluster")
        .wait_for_updates(1)
        .await;
    // Callers hammer the channel while the endpoint set rotates under them.
    let mut callers = Vec::new();
    for _ in 0..8 {
        let channel = channel.clone();
        callers.push(tokio::spawn(async move {
            let client = EchoServiceClient::new(&channel);
            let mut errors = Vec::new();
            for _ in 0..400 {
                if let Err(e) = client.echo(&request("x")).await {
                    errors.push(e);
                }
            }
            errors
        }));
    }
    for round in 1..=40 {
        let set: Vec<Endpoint> = (0..2).map(|k| eps[(round + k) % 4].clone()).collect();
        let n = cluster_updates(&channel);
        updater.set(set);
        channel
            .cluster()
            .expect("cluster")
            .wait_for_updates(n + 1)
            .await;
        tokio::task::yield_now().await;
    }
    for caller in callers {
        let errors = caller.await.expect("no caller panicked");
        assert!(errors.is_empty(), "failover hides removals: {errors:?}");
    }
    let cluster = channel.cluster().expect("cluster");
    assert_eq!(cluster.invokers().len(), 2);
    assert_eq!(channel.pending_calls(), 0);
    // Only the current invokers are alive, and removed ones closed their
    // connections: the servers out of the set hold none.
    // The registry is process-wide (other tests run alongside): count this
    // channel's entries.
    let mine = || {
        keel::cluster::invokers()
            .into_iter()
            .filter(|i| i.channel == "list://under-load")
            .count()
    };
    eventually("destroyed invokers to be dropped", || mine() == 2).await;
    let current: Vec<String> = cluster.endpoints().into_iter().map(|e| e.addr).collect();
    for s in &servers {
        if !current.contains(&s.addr()) {
            eventually("removed servers' connections to close", || {
                s.server.stats().connections == 0
            })
            .await;
        }
    }
    drop(channel);
    eventually("every invoker to be dropped with the channel", || {
        mine() == 0
    })
    .await;
}

#[tokio::test]
async fn a_backup_request_rescues_calls_to_a_slow_server() {
    quiet();
    let slow = start(|b| b).await;
    let fast = start(|b| b).await;
    let channel = Channel::builder(&list(&[&slow.addr(), &fast.addr()]))
        .backup_request(Some(Duration::from_millis(5)))
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    // "gate" waits on the slow server's gate, which never opens; the fast
    // server's gate is opened for every call.
    fast.gate.add_permits(1_000);
    const CALLS: u64 = 20;
    for _ in 0..CALLS {
        let reply = client
            .echo(&request("gate"))
            .await
            .expect("the backup answers");
        assert_eq!(reply.message, "gate");
    }
    let stats = channel.cluster().expect("cluster").stats();
    // Round robin sent half the calls to the slow server first; each of
    // those was answered by its backup.
    let stuck = slow.calls.load(Ordering::Relaxed);
    assert!(stuck >= CALLS / 2, "slow server got {stuck}");
    assert!(stats.backup_requests >= stuck, "{stats:?}");
    assert!(stats.backup_wins >= CALLS / 2, "{stats:?}");
    // The losers were cancelled: no pending entry is left on any invoker.
    for invoker in channel.cluster().expect("cluster").invokers() {
        assert_eq!(invoker.pending, 0, "{invoker:?}");
        assert_eq!(invoker.in_flight, 0, "{invoker:?}");
    }
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test]
async fn backup_requests_leave_round_robin_first_attempts_even() {
    quiet();
    // The slow server never answers "gate" calls, so a call is answered by
    // its backup (on the fast server) exactly when its first attempt went
    // to the slow one: the backups' wins count the first attempts there.
    // (A backup sent to the slow server, after a first attempt on the fast
    // one took over 2 ms, never wins, so it does not disturb the count.)
    let (slow, fast) = hung_and_fine().await;
    let channel = Channel::builder(&list(&[&slow.addr(), &fast.addr()]))
        .backup_request(Some(Duration::from_millis(2)))
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("valid");
    // One call at a time, as in the report: each call's picks follow the
    // previous call's (concurrent callers would interleave and blur a
    // skew). The calls are bounded: 1,000, each by the 5 s deadline.
    const CALLS: u64 = 1_000;
    let client = EchoServiceClient::new(&channel);
    for _ in 0..CALLS {
        let reply = client.echo(&request("gate")).await;
        assert_eq!(reply.expect("every call is answered").message, "gate");
    }
    let stats = channel.cluster().expect("cluster").stats();
    // No retry moved a call elsewhere, so the count is exact.
    assert_eq!(stats.retries, 0, "{stats:?}");
    let on_slow = stats.backup_wins;
    let on_fast = CALLS - on_slow;
    eprintln!("first attempts: {on_slow} on the slow server, {on_fast} on the fast one");
    // Even within 1% of the calls (a skewed sequence sends nearly all of
    // them to the slow server).
    assert!(
        on_slow.abs_diff(CALLS / 2) <= CALLS / 100,
        "first attempts: {on_slow} on the slow server, {on_fast} on the fast one: {stats:?}"
    );
    // Each call reached the fast server once: first attempt or backup.
    assert_eq!(fast.calls.load(Ordering::Relaxed), CALLS);
    assert_eq!(channel.pending_calls(), 0);
}

#[tokio::test]
async fn a_dead_server_is_isolated_and_revived_when_it_returns() {
    quiet();
    let live = start(|b| b).await;
    let dead = start(|b| b).await;
    let dead_addr = dead.addr();
    drop(dead);
    let channel = Channel::builder(&list(&[&dead_addr, &live.addr()]))
        .breaker(BreakerConfig {
            health_check_interval: Duration::from_millis(20),
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..50 {
        client
            .echo(&request("hi"))
            .await
            .expect("failover around the dead server");
    }
    let cluster = channel.cluster().expect("cluster");
    let stats = cluster.stats();
    assert_eq!(stats.isolations, 1, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");
    let state_of = |addr: &str| cluster.invoker(addr).expect("invoker").state;
    assert_eq!(state_of(&dead_addr), InvokerState::Isolated);
    assert_eq!(live.calls.load(Ordering::Relaxed), 50);
    // The server comes back on the same address: a health check revives it.
    let back = keel::Server::builder()
        .add_service(support::EchoServiceServer::new(support::Echo::default()))
        .bind(&dead_addr)
        .await
        .expect("rebind the same loopback port");
    eventually("the health check to revive the server", || {
        state_of(&dead_addr) == InvokerState::Available
    })
    .await;
    assert_eq!(cluster.stats().revivals, 1);
    for _ in 0..10 {
        client.echo(&request("hi")).await.expect("call");
    }
    assert!(
        back.stats().calls >= 5,
        "the revived server takes calls again"
    );
}

#[tokio::test]
async fn isolation_never_takes_out_every_server() {
    quiet();
    let a = start(|b| b).await;
    let b = start(|b| b).await;
    let addrs = [a.addr(), b.addr()];
    drop((a, b));
    let channel = Channel::builder(&list(&[&addrs[0], &addrs[1]]))
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..20 {
        let e = client
            .echo(&request("hi"))
            .await
            .expect_err("nobody listens");
        assert_eq!(e.code(), Code::EFAILEDSOCKET, "{e}");
    }
    let states: Vec<InvokerState> = channel
        .cluster()
        .expect("cluster")
        .invokers()
        .into_iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == InvokerState::Available)
            .count(),
        1,
        "one server stays available: {states:?}"
    );
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_isolated_by_its_error_rate() {
    quiet();
    let one = start(|b| b).await;
    let two = start(|b| b).await;
    let channel = Channel::builder(&list(&[&one.addr(), &two.addr()]))
        .strategy(Strategy::Failfast)
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let client = EchoServiceClient::new(&channel);
    // Round robin alternates, so every second call, a failing one, lands
    // on the same server: its error rate climbs, the other's stays 0.
    let mut calls = 0;
    while cluster.stats().isolations == 0 && calls < 64 {
        let msg = if calls % 2 == 0 { "hi" } else { "fail" };
        let _ = client.echo(&request(msg)).await;
        calls += 1;
    }
    let isolated: Vec<_> = cluster
        .invokers()
        .into_iter()
        .filter(|i| i.state == InvokerState::Isolated)
        .collect();
    assert_eq!(isolated.len(), 1, "{:?}", cluster.invokers());
    let failing = &isolated[0];
    assert_eq!(failing.errors, failing.calls, "only failures: {failing:?}");
    assert!(failing.calls >= 16, "not before min_calls: {failing:?}");
    // Calls now all go to the other server.
    let other = if failing.endpoint.addr == one.addr() {
        &two
    } else {
        &one
    };
    let before = other.calls.load(Ordering::Relaxed);
    for _ in 0..10 {
        client
            .echo(&request("hi"))
            .await
            .expect("the healthy server answers");
    }
    assert_eq!(other.calls.load(Ordering::Relaxed) - before, 10);
}

#[tokio::test]
async fn a_destroyed_invoker_finishes_its_call_then_closes_its_connection() {
    quiet();
    let old = start(|b| b).await;
    let new = start(|b| b).await;
    let naming = ListNaming::new(vec![Endpoint::new(old.addr())]);
    let updater = naming.updater();
    let channel = Channel::builder_with_naming("list://destroy-in-flight", Box::new(naming))
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    cluster.wait_for_updates(1).await;
    // A call waits on the old server's gate: in flight on its invoker.
    let in_flight = {
        let channel = channel.clone();
        tokio::spawn(async move {
            EchoServiceClient::new(&channel)
                .echo(&request("gate"))
                .await
        })
    };
    old.gated.notified().await;
    updater.set(vec![Endpoint::new(new.addr())]);
    cluster.wait_for_updates(2).await;
    // The old invoker is out of the channel but alive in the registry,
    // closing, with its call in flight and its connection open.
    assert_eq!(cluster.endpoints(), [Endpoint::new(new.addr())]);
    let closing: Vec<_> = keel::cluster::invokers()
        .into_iter()
        .filter(|i| i.channel == "list://destroy-in-flight" && i.endpoint.addr == old.addr())
        .collect();
    assert_eq!(closing.len(), 1);
    assert_eq!(closing[0].state, InvokerState::Closing);
    assert_eq!(closing[0].in_flight, 1);
    assert_eq!(old.server.stats().connections, 1);
    // New calls go to the new server meanwhile.
    new.gate.add_permits(1);
    EchoServiceClient::new(&channel)
        .echo(&request("gate"))
        .await
        .expect("the new server answers");
    assert_eq!(new.calls.load(Ordering::Relaxed), 1);
    // The call on the destroyed invoker completes normally...
    old.gate.add_permits(1);
    let reply = in_flight
        .await
        .expect("no panic")
        .expect("the call completes");
    assert_eq!(reply.message, "gate");
    // ...after which the invoker is gone and its connection closed.
    eventually("the destroyed invoker to be dropped", || {
        !keel::cluster::invokers()
            .iter()
            .any(|i| i.channel == "list://destroy-in-flight" && i.endpoint.addr == old.addr())
    })
    .await;
    eventually("its connection to close", || {
        old.server.stats().connections == 0
    })
    .await;
}

#[tokio::test]
async fn least_active_avoids_the_server_with_a_call_in_flight() {
    quiet();
    let a = start(|b| b).await;
    let b = start(|b| b).await;
    let channel = Channel::builder(&list(&[&a.addr(), &b.addr()]))
        .load_balancer(LoadBalancer::LeastActive)
        .timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("valid");
    // One call parks on whichever server it went to.
    let parked = {
        let channel = channel.clone();
        tokio::spawn(async move {
            EchoServiceClient::new(&channel)
                .echo(&request("gate"))
                .await
        })
    };
    let (busy, idle) = tokio::select! {
        _ = a.gated.notified() => (&a, &b),
        _ = b.gated.notified() => (&b, &a),
    };
    // Every other call goes to the idle server (round robin would send
    // half of them to the busy one).
    let client = EchoServiceClient::new(&channel);
    for _ in 0..10 {
        client.echo(&request("hi")).await.expect("call");
    }
    assert_eq!(idle.calls.load(Ordering::Relaxed), 10);
    assert_eq!(
        busy.calls.load(Ordering::Relaxed),
        1,
        "only the parked call"
    );
    busy.gate.add_permits(1);
    parked
        .await
        .expect("no panic")
        .expect("the parked call completes");
}

#[tokio::test]
async fn a_server_that_stops_answering_is_isolated_by_its_timeouts() {
    quiet();
    let (hung, fine) = hung_and_fine().await;
    let channel = Channel::builder(&list(&[&hung.addr(), &fine.addr()]))
        .timeout(Some(Duration::from_millis(60)))
        .build()
        .expect("valid");
    let cluster = channel.cluster().expect("cluster");
    let client = EchoServiceClient::new(&channel);
    let patient = client.clone().with_options(CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    });
    let mut timeouts = 0;
    let mut calls = 0;
    while cluster.stats().isolations == 0 && calls < 100 {
        if let Err(e) = client.echo(&request("gate")).await {
            assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
            timeouts += 1;
        }
        calls += 1;
    }
    let hung_invoker = cluster.invoker(&hung.addr()).expect("invoker");
    assert_eq!(
        hung_invoker.state,
        InvokerState::Isolated,
        "{hung_invoker:?}"
    );
    // Its timeouts counted against it (the fine server may have timed out
    // too on a loaded machine, so not necessarily all of them).
    assert!(
        hung_invoker.errors >= 16 && hung_invoker.errors <= timeouts,
        "{hung_invoker:?}, {timeouts} timeouts"
    );
    // From now on every call is answered.
    for _ in 0..10 {
        patient
            .echo(&request("gate"))
            .await
            .expect("the fine server answers");
    }
}

#[tokio::test]
async fn with_an_attempt_timeout_calls_fail_over_from_a_hung_server() {
    quiet();
    let (hung, fine) = hung_and_fine().await;
    let channel = Channel::builder(&list(&[&hung.addr(), &fine.addr()]))
        .attempt_timeout(Some(Duration::from_millis(30)))
        .timeout(Some(Duration::from_secs(5)))
        .breaker(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..10 {
        let reply = client
            .echo(&request("gate"))
            .await
            .expect("failover answers");
        assert_eq!(reply.message, "gate");
    }
    let cluster = channel.cluster().expect("cluster");
    // Round robin sent half the first attempts to the hung server; each
    // timed out there and was retried on the other.
    let retries = cluster.stats().retries;
    assert!(retries >= 5, "{:?}", cluster.stats());
    let hung_invoker = cluster.invoker(&hung.addr()).expect("invoker");
    assert_eq!(hung_invoker.errors, hung_invoker.calls, "{hung_invoker:?}");
    assert_eq!(hung_invoker.pending, 0, "timed-out attempts left the table");
    assert_eq!(hung_invoker.state, InvokerState::Available, "breaker off");
}

#[test]
fn a_cluster_channel_built_outside_a_runtime_starts_naming_at_its_first_call() {
    quiet();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(start(|b| b));
    // No runtime here: the naming service cannot start yet.
    let channel = Channel::new(&list(&[&server.addr()])).expect("valid");
    assert_eq!(channel.cluster().expect("cluster").stats().updates, 0);
    let reply = rt
        .block_on(EchoServiceClient::new(&channel).echo(&request("late")))
        .expect("the first call starts naming and waits for it");
    assert_eq!(reply.message, "late");
    assert_eq!(channel.cluster().expect("cluster").stats().updates, 1);
    rt.block_on(async move {
        drop(channel);
        drop(server);
    });
}

#[tokio::test]
async fn broadcast_calls_every_server_and_reports_the_first_failure() {
    quiet();
    let servers = [start(|b| b).await, start(|b| b).await, start(|b| b).await];
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let channel = Channel::builder(&list(&refs))
        .strategy(Strategy::Broadcast)
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..5 {
        assert_eq!(
            client
                .echo(&request("all"))
                .await
                .expect("all answer")
                .message,
            "all"
        );
    }
    for s in &servers {
        assert_eq!(
            s.calls.load(Ordering::Relaxed),
            5,
            "every server, every call"
        );
    }
    // A failing handler anywhere fails the broadcast, after all were called.
    let e = client
        .echo(&request("fail"))
        .await
        .expect_err("every server fails it");
    assert_eq!(e.code(), Code::new(4242), "{e}");
    for s in &servers {
        assert_eq!(s.calls.load(Ordering::Relaxed), 6);
    }
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    quiet();
    // Retries after timeouts spend the budget (the request may have run;
    // retries after refused connections are free, see restarts.rs).
    let (hung, fine) = hung_and_fine().await;
    let channel = Channel::builder(&list(&[&hung.addr(), &fine.addr()]))
        .attempt_timeout(Some(Duration::from_millis(5)))
        .timeout(Some(Duration::from_secs(5)))
        // No breaker: the hung server keeps being picked, so every second
        // call needs a retry.
        .breaker(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        })
        .retry_budget(Some(keel::cluster::RetryBudget {
            ratio: 0.1,
            reserve: 5,
        }))
        .build()
        .expect("valid");
    let client = EchoServiceClient::new(&channel);
    let mut failed = 0;
    const CALLS: u64 = 200;
    for _ in 0..CALLS {
        if let Err(e) = client.echo(&request("gate")).await {
            assert_eq!(e.code(), Code::ERPCTIMEDOUT, "{e}");
            failed += 1;
        }
    }
    let stats = channel.cluster().expect("cluster").stats();
    // Half the first attempts hit the hung server; the budget allows the
    // reserve plus 10% of the attempts (earned in batches of 8 per
    // server), not one retry per failure.
    let attempts = CALLS + stats.retries;
    assert!(stats.retries <= 5 + attempts / 10 + 2, "{stats:?}");
    assert!(stats.retries >= 5, "the reserve is used: {stats:?}");
    assert_eq!(stats.free_retries, 0, "{stats:?}");
    assert!(stats.retries_refused > 0, "{stats:?}");
    assert_eq!(
        failed, stats.retries_refused,
        "a refused retry fails its call"
    );
}

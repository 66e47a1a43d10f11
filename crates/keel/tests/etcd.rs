//! etcd naming and registration against a real etcd (Debian's
//! `etcd-server`, started by the test on free loopback ports with a
//! temporary data directory, ended by its PID even when a check fails):
//!
//! - three servers register, a channel on their `etcd://` URL spreads calls
//!   over all three, and one of them shuts down gracefully under load from
//!   16 callers: no call fails, and the channel drops it in one update;
//! - a server in a child process is killed (SIGKILL) under load: its lease
//!   expires, it leaves the set, no call fails (failover retries calls
//!   whose connection broke);
//! - etcd itself is killed and restarted under load: calls keep flowing to
//!   the last set, the registrations come back, the channel watches again;
//! - a lease revoked behind a registration's back is granted again and the
//!   key put back;
//! - bad values are skipped, the others kept; JSON values are read; an
//!   etcd endpoint that is down is passed over for the next one listed;
//! - a watch etcd cancels because its revision was compacted lists and
//!   watches again (against a stand-in etcd served by Keel itself, where
//!   the compaction can be timed).
//!
//! The scenarios run one after another on one runtime (`harness = false`):
//! they share etcd, whose startup takes a while, and counters of the
//! process. Run with a child-process argument, the binary is the killed
//! server instead.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel::etcd::api::etcdserverpb::{
    DeleteRangeRequest, KvClient, LeaseClient, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use keel::etcd::{EtcdRegistration, RegistrationState};
use keel::{Channel, Status};
use support::etcd::Etcd;
use support::{EchoServiceClient, Fixture, eventually, request, start};

/// Set in the child process: the URL to register under.
const CHILD_ENV: &str = "KEEL_ETCD_TEST_CHILD_URL";
/// Callers of the load.
const CALLERS: usize = 16;
/// Bound of every wait and of each caller's calls.
const BOUND: Duration = Duration::from_secs(15);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if let Ok(url) = std::env::var(CHILD_ENV) {
        runtime.block_on(child_server(&url));
        return;
    }
    runtime.block_on(async {
        let mut etcd = Etcd::start().await;
        let scenarios: [(&str, Scenario); 6] = [
            (
                "bad values skipped, JSON read, dead endpoints passed over",
                |e| Box::pin(bad_values_are_skipped(e)),
            ),
            ("servers register and leave gracefully", |e| {
                Box::pin(graceful_shutdown_under_load(e))
            }),
            ("a killed server's lease expires", |e| {
                Box::pin(killed_server_leaves(e))
            }),
            ("etcd restarts under load", |e| {
                Box::pin(etcd_restarts_under_load(e))
            }),
            ("a lost lease is granted again", |e| {
                Box::pin(lost_lease_is_granted_again(e))
            }),
            ("a compacted watch lists again", |_| {
                Box::pin(compacted_watch_lists_again())
            }),
        ];
        for (name, scenario) in scenarios {
            println!("etcd: {name} ...");
            let started = Instant::now();
            scenario(&mut etcd).await;
            println!("etcd: {name}: ok ({:?})", started.elapsed());
        }
    });
}

type Scenario =
    for<'a> fn(&'a mut Etcd) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

fn channel(url: &str) -> Channel {
    Channel::builder(url)
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("a valid etcd URL")
}

/// The channel's servers, by address.
fn servers(channel: &Channel) -> Vec<String> {
    let mut addrs: Vec<String> = channel
        .cluster()
        .expect("a cluster channel")
        .endpoints()
        .into_iter()
        .map(|e| e.addr)
        .collect();
    addrs.sort();
    addrs
}

fn addrs(fixtures: &[Fixture]) -> Vec<String> {
    let mut addrs: Vec<String> = fixtures.iter().map(Fixture::addr).collect();
    addrs.sort();
    addrs
}

async fn registered_server(url: &str, ttl: Duration) -> Fixture {
    let registration = EtcdRegistration::new(url, ttl).expect("a valid URL");
    start(|b| b.register(registration)).await
}

/// Calls from [`CALLERS`] tasks until stopped (or [`BOUND`] passes),
/// counting successes and keeping failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    callers: Vec<tokio::task::JoinHandle<Vec<Status>>>,
}

impl Load {
    fn start(channel: &Channel) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let callers = (0..CALLERS)
            .map(|_| {
                let client = EchoServiceClient::new(channel);
                let (stop, ok) = (stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let until = Instant::now() + BOUND * 4;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        match client.echo(&request("load")).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) => failures.push(status),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, callers }
    }

    /// Waits until `n` more calls succeeded.
    async fn calls(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        eventually("calls to go on", || {
            self.ok.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Stops the callers; their failures.
    async fn finish(self) -> Vec<Status> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for caller in self.callers {
            failures.extend(caller.await.expect("a caller"));
        }
        failures
    }
}

async fn graceful_shutdown_under_load(etcd: &mut Etcd) {
    let url = etcd.url("services/graceful");
    let mut fixtures = Vec::new();
    for _ in 0..3 {
        fixtures.push(registered_server(&url, Duration::from_secs(10)).await);
    }
    let channel = channel(&url);
    let all = addrs(&fixtures);
    eventually("the channel to see three servers", || {
        servers(&channel) == all
    })
    .await;
    // Round robin: thirty calls, ten on each.
    let client = EchoServiceClient::new(&channel);
    let before: Vec<u64> = fixtures
        .iter()
        .map(|f| f.calls.load(Ordering::Relaxed))
        .collect();
    for _ in 0..30 {
        client.echo(&request("rr")).await.expect("a call");
    }
    for (f, before) in fixtures.iter().zip(before) {
        assert_eq!(
            f.calls.load(Ordering::Relaxed) - before,
            10,
            "calls per server"
        );
    }
    let load = Load::start(&channel);
    load.calls(500).await;
    let cluster = channel.cluster().expect("a cluster channel");
    let updates = cluster.stats().updates;
    let leaving = fixtures.remove(0);
    let started = Instant::now();
    let shutdown = tokio::spawn(leaving.server.shutdown(Duration::from_secs(5)));
    let rest = addrs(&fixtures);
    eventually("the channel to drop the server", || {
        servers(&channel) == rest
    })
    .await;
    let reached = started.elapsed();
    assert_eq!(
        cluster.stats().updates,
        updates + 1,
        "the server left in one update"
    );
    assert_eq!(shutdown.await.expect("shutdown"), 0, "no connection cut");
    load.calls(500).await;
    let failures = load.finish().await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    println!(
        "etcd: a graceful deregistration reached the watching channel in {:.1} ms",
        reached.as_secs_f64() * 1e3
    );
}

/// The child process: an echo server registered under `url` with a 2 s
/// lease; prints its address, then serves until killed.
async fn child_server(url: &str) {
    let fixture = registered_server(url, Duration::from_secs(2)).await;
    println!("{}", fixture.addr());
    std::future::pending::<()>().await;
}

/// Kills the child process (SIGKILL) when dropped, if still running.
struct ChildServer(std::process::Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn killed_server_leaves(etcd: &mut Etcd) {
    use std::io::BufRead as _;
    let url = etcd.url("services/killed");
    let mut fixtures = Vec::new();
    for _ in 0..2 {
        fixtures.push(registered_server(&url, Duration::from_secs(2)).await);
    }
    let mut child = ChildServer(
        std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .env(CHILD_ENV, &url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the child server starts"),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("the child's address");
    let child_addr = line.trim().to_owned();
    let channel = channel(&url);
    let mut all = addrs(&fixtures);
    all.push(child_addr.clone());
    all.sort();
    eventually("the channel to see three servers", || {
        servers(&channel) == all
    })
    .await;
    let load = Load::start(&channel);
    load.calls(500).await;
    child.0.kill().expect("SIGKILL the child");
    child.0.wait().expect("the child ends");
    let killed = Instant::now();
    let rest = addrs(&fixtures);
    eventually("the killed server's lease to expire", || {
        servers(&channel) == rest
    })
    .await;
    println!(
        "etcd: the killed server left the set {:.1} s after SIGKILL (lease TTL 2 s)",
        killed.elapsed().as_secs_f64()
    );
    load.calls(500).await;
    let failures = load.finish().await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");
}

async fn etcd_restarts_under_load(etcd: &mut Etcd) {
    let url = etcd.url("services/restart");
    let mut fixtures = Vec::new();
    let mut registrations = Vec::new();
    for _ in 0..3 {
        let fixture = start(|b| b).await;
        let mut registration = EtcdRegistration::new(&url, Duration::from_secs(2))
            .expect("a valid URL")
            .start(fixture.server.local_addr())
            .expect("registering starts");
        registration.registered().await;
        registrations.push(registration);
        fixtures.push(fixture);
    }
    let channel = channel(&url);
    let all = addrs(&fixtures);
    eventually("the channel to see three servers", || {
        servers(&channel) == all
    })
    .await;
    let cluster = channel.cluster().expect("a cluster channel");
    let load = Load::start(&channel);
    load.calls(500).await;
    etcd.kill();
    eventually("the registrations to notice", || {
        registrations
            .iter()
            .all(|r| r.info().state == RegistrationState::Registering)
    })
    .await;
    // Calls flow on to the last set while etcd is away.
    load.calls(2_000).await;
    assert_eq!(servers(&channel), all, "the last set is kept");
    let updates = cluster.stats().updates;
    etcd.restart().await;
    for registration in &mut registrations {
        tokio::time::timeout(BOUND, registration.registered())
            .await
            .expect("registered again after etcd restarted");
    }
    // The channel lists again (the set unchanged, so not resent) and
    // watches: a new server shows up through it.
    let fourth = registered_server(&url, Duration::from_secs(2)).await;
    let mut four = all.clone();
    four.push(fourth.addr());
    four.sort();
    eventually("the channel to watch again", || servers(&channel) == four).await;
    assert!(cluster.stats().updates > updates);
    load.calls(500).await;
    let failures = load.finish().await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    let listed = KvClient::new(&etcd_channel(etcd))
        .range(&RangeRequest {
            key: b"/services/restart/".to_vec(),
            range_end: b"/services/restart0".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("a range");
    assert_eq!(listed.kvs.len(), 4, "every registration is back");
    for registration in registrations {
        assert!(registration.deregister().await, "revoked");
    }
}

fn etcd_channel(etcd: &Etcd) -> Channel {
    Channel::new(&format!("grpc://{}", etcd.endpoint())).expect("a channel to etcd")
}

async fn lost_lease_is_granted_again(etcd: &mut Etcd) {
    let url = etcd.url("services/lease");
    let fixture = start(|b| b).await;
    let mut registration = EtcdRegistration::new(&url, Duration::from_secs(3))
        .expect("a valid URL")
        .weight(7)
        .start(fixture.server.local_addr())
        .expect("registering starts");
    registration.registered().await;
    let first = registration.info();
    assert_eq!(first.grants, 1);
    assert_eq!(first.key, format!("/services/lease/{}", fixture.addr()));
    assert_eq!(first.value, format!("{} weight=7", fixture.addr()));
    let channel = channel(&url);
    eventually("the channel to see the server", || {
        servers(&channel) == [fixture.addr()]
    })
    .await;
    assert_eq!(
        channel.cluster().unwrap().endpoints()[0].weight,
        7,
        "the weight"
    );
    // The console shows the registration and the channel's invoker.
    let mut http = http1::Http1::connect(fixture.server.local_addr()).await;
    let page = http.get("/invokers?format=json").await.json();
    let listed = page["registrations"]
        .as_array()
        .expect("registrations listed")
        .iter()
        .find(|r| r["key"] == first.key.as_str())
        .expect("this registration listed");
    assert_eq!(listed["state"], "registered");
    assert_eq!(listed["lease"], format!("{:x}", first.lease));
    assert!(
        page["invokers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["channel"] == url.as_str()
                && i["endpoint"] == format!("{} weight=7", fixture.addr())),
        "the channel's invoker listed: {page}"
    );
    for name in [
        "keel_etcd_watches",
        "keel_etcd_registrations",
        "keel_etcd_naming_updates_total",
    ] {
        assert!(
            http1::var(fixture.server.local_addr(), name).await >= 1.0,
            "{name}"
        );
    }
    LeaseClient::new(&etcd_channel(etcd))
        .lease_revoke(&LeaseRevokeRequest { id: first.lease })
        .await
        .expect("revoked behind its back");
    eventually("the channel to drop the server", || {
        servers(&channel).is_empty()
    })
    .await;
    eventually("a new lease", || registration.info().grants == 2).await;
    eventually("the channel to see the server again", || {
        servers(&channel) == [fixture.addr()]
    })
    .await;
    // The watch may show the new key to the channel before the put's
    // reply reaches the registration.
    eventually("the registration to see its put answered", || {
        registration.info().state == RegistrationState::Registered
    })
    .await;
    let again = registration.info();
    assert_ne!(again.lease, first.lease);
    assert!(registration.deregister().await);
    eventually("the channel to drop it for good", || {
        servers(&channel).is_empty()
    })
    .await;
}

async fn bad_values_are_skipped(etcd: &mut Etcd) {
    let kv = KvClient::new(&etcd_channel(etcd));
    let put = |key: &str, value: &str| PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    };
    kv.put(&put("/services/values/a", "not an address"))
        .await
        .unwrap();
    kv.put(&put("/services/values/b", "127.0.0.1:1001 weight=2"))
        .await
        .unwrap();
    kv.put(&put(
        "/services/values/c",
        r#"{"addr": "127.0.0.1:1002", "weight": 3, "zone": "x"}"#,
    ))
    .await
    .unwrap();
    // Outside the prefix: `/services/values` must not match `/services/values2`.
    kv.put(&put("/services/values2/d", "127.0.0.1:1003"))
        .await
        .unwrap();
    let channel = channel(&etcd.url("services/values"));
    let weights = |channel: &Channel| -> Vec<(String, u32)> {
        channel
            .cluster()
            .unwrap()
            .endpoints()
            .into_iter()
            .map(|e| (e.addr, e.weight))
            .collect()
    };
    let cluster = channel.cluster().unwrap();
    cluster.wait_for_updates(1).await;
    assert_eq!(
        weights(&channel),
        [("127.0.0.1:1001".into(), 2), ("127.0.0.1:1002".into(), 3)]
    );
    // A good key turning bad leaves; a bad key turning good joins.
    kv.put(&put("/services/values/b", "127.0.0.1"))
        .await
        .unwrap();
    kv.put(&put("/services/values/a", "127.0.0.1:1000"))
        .await
        .unwrap();
    eventually("the set to follow", || {
        weights(&channel) == [("127.0.0.1:1000".into(), 1), ("127.0.0.1:1002".into(), 3)]
    })
    .await;
    kv.delete_range(&DeleteRangeRequest {
        key: b"/services/values".to_vec(),
        range_end: b"/services/valuet".to_vec(),
        ..DeleteRangeRequest::default()
    })
    .await
    .unwrap();
    eventually("every server to leave", || weights(&channel).is_empty()).await;
    // Endpoints listed first that are down are passed over, by channels
    // and registrations alike.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let both = format!("etcd://{dead},{}/services/values", etcd.endpoint());
    let fixture = registered_server(&both, Duration::from_secs(5)).await;
    let channel = self::channel(&both);
    eventually(
        "the channel to find the server past the dead endpoint",
        || servers(&channel) == [fixture.addr()],
    )
    .await;
    EchoServiceClient::new(&channel)
        .echo(&request("past a dead etcd"))
        .await
        .expect("a call");
    fixture.server.shutdown(Duration::from_secs(5)).await;
    eventually("the channel to drop it", || servers(&channel).is_empty()).await;
    // A bad URL is refused when the channel is built.
    let err = Channel::new("etcd://127.0.0.1:2379").expect_err("no prefix");
    assert!(err.to_string().contains("prefix"), "{err}");
}

/// A stand-in etcd: a Range answers the servers of the current
/// generation, and the first watch of each generation but the last is
/// cancelled as compacted.
mod fake {
    use std::sync::Mutex;

    use keel::etcd::api::etcdserverpb::{
        CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Kv,
        PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest,
        TxnResponse, Watch, WatchRequest, WatchResponse,
    };
    use keel::etcd::api::mvccpb::KeyValue;
    use keel::streaming::{ResponseSink, Streaming};
    use keel::{Code, Context, Status};

    /// The sets the stand-in lists, one per generation, and what it saw.
    #[derive(Default)]
    pub struct State {
        pub sets: Vec<Vec<&'static str>>,
        pub ranges: usize,
        pub watches: Vec<i64>,
    }

    pub struct Fake(pub &'static Mutex<State>);

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..ResponseHeader::default()
        })
    }

    fn unused() -> Status {
        Status::new(Code::Unimplemented, "not part of the stand-in")
    }

    impl Kv for Fake {
        async fn range(
            &self,
            _ctx: &Context,
            _request: &RangeRequest,
            response: &mut RangeResponse,
        ) -> Result<(), Status> {
            let mut state = self.0.lock().unwrap();
            let generation = state.ranges.min(state.sets.len() - 1);
            state.ranges += 1;
            response.header = header(10 * (generation as i64 + 1));
            response.kvs = state.sets[generation]
                .iter()
                .map(|addr| KeyValue {
                    key: format!("/fake/{addr}").into_bytes(),
                    value: addr.as_bytes().to_vec(),
                    ..KeyValue::default()
                })
                .collect();
            Ok(())
        }

        async fn put(
            &self,
            _: &Context,
            _: &PutRequest,
            _: &mut PutResponse,
        ) -> Result<(), Status> {
            Err(unused())
        }

        async fn delete_range(
            &self,
            _: &Context,
            _: &DeleteRangeRequest,
            _: &mut DeleteRangeResponse,
        ) -> Result<(), Status> {
            Err(unused())
        }

        async fn txn(
            &self,
            _: &Context,
            _: &TxnRequest,
            _: &mut TxnResponse,
        ) -> Result<(), Status> {
            Err(unused())
        }

        async fn compact(
            &self,
            _: &Context,
            _: &CompactionRequest,
            _: &mut CompactionResponse,
        ) -> Result<(), Status> {
            Err(unused())
        }
    }

    impl Watch for Fake {
        async fn watch(
            &self,
            _ctx: &Context,
            requests: &mut Streaming<WatchRequest>,
            responses: &mut ResponseSink<WatchResponse>,
        ) -> Result<(), Status> {
            let Some(WatchRequest {
                request_union:
                    Some(keel::etcd::api::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                        create,
                    )),
            }) = requests.message().await?
            else {
                return Err(Status::new(
                    Code::InvalidArgument,
                    "expected a create request",
                ));
            };
            let last = {
                let mut state = self.0.lock().unwrap();
                state.watches.push(create.start_revision);
                state.ranges >= state.sets.len()
            };
            responses
                .send(&WatchResponse {
                    header: header(create.start_revision - 1),
                    created: true,
                    ..WatchResponse::default()
                })
                .await?;
            if !last {
                responses
                    .send(&WatchResponse {
                        header: header(create.start_revision + 5),
                        canceled: true,
                        compact_revision: create.start_revision + 5,
                        cancel_reason: "mvcc: required revision has been compacted".into(),
                        ..WatchResponse::default()
                    })
                    .await?;
            }
            // Keep the watch open until the client goes.
            while requests.message().await?.is_some() {}
            Ok(())
        }
    }
}

async fn compacted_watch_lists_again() {
    use keel::etcd::api::etcdserverpb::{KvServer, WatchServer};
    static STATE: std::sync::Mutex<fake::State> = std::sync::Mutex::new(fake::State {
        sets: Vec::new(),
        ranges: 0,
        watches: Vec::new(),
    });
    STATE.lock().unwrap().sets = vec![
        vec!["127.0.0.1:2001"],
        vec!["127.0.0.1:2001", "127.0.0.1:2002"],
    ];
    let server = keel::Server::builder()
        .add_service(KvServer::new(fake::Fake(&STATE)))
        .add_service(WatchServer::new(fake::Fake(&STATE)))
        .bind("127.0.0.1:0")
        .await
        .expect("the stand-in binds");
    let channel = channel(&format!("etcd://{}/fake", server.local_addr()));
    eventually("the set listed after the compaction", || {
        servers(&channel) == ["127.0.0.1:2001", "127.0.0.1:2002"]
    })
    .await;
    eventually("the second watch", || {
        STATE.lock().unwrap().watches.len() == 2
    })
    .await;
    let state = STATE.lock().unwrap();
    assert_eq!(state.ranges, 2, "listed again after the compaction");
    assert_eq!(
        state.watches,
        [11, 21],
        "each watch starts after its listing"
    );
}

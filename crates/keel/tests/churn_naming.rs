//! Rule R6 (and R5) for channels on naming URLs: 500 channels on a
//! `file://` URL and 500 on `dns://localhost:PORT`, each making calls and
//! then dropped, leave nothing behind: after each channel its invokers
//! leave the registry, its naming task and connection tasks end, and
//! after all of them the live heap is back at its baseline.
//!
//! The file lists loopback servers and lives in a directory of the test's
//! own under the system's temporary directory, removed at the end. Each
//! `file://` channel also follows one change of the file (a server
//! removed), so its naming task has re-read the file before the channel
//! drops. Each round also drops a channel right after building it, so
//! that its naming task ends before or during its first look (a `dns://`
//! resolution runs on the blocking pool and finishes after the channel is
//! gone).
//!
//! Each test runs alone on a runtime of its own (`support::alone`): the
//! counting allocator sees the whole process.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::Channel;
use keel::cluster::{Endpoint, live_invokers};
use keel_alloc::CountingAlloc;
use support::{EchoServiceClient, Fixture, alone, eventually, request, start};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Channels made and dropped in the measured part of each test.
const ROUNDS: usize = 500;
/// Rounds before the baseline, so that what is built once (the runtime's
/// blocking thread, the resolver, pools) is in it.
const WARM_UP: usize = 20;
/// Live heap a test may leave behind: a constant, whatever `ROUNDS` is.
const TOLERANCE: i64 = 8 * 1024;
/// How often the naming services look again.
const NAMING_INTERVAL: Duration = Duration::from_millis(5);
/// Bounds every call and wait, so that a bug fails the test rather than
/// hanging it.
const BOUND: Duration = Duration::from_secs(5);

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        // Left over by a killed run of the same pid: start afresh.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create the test's temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `path` with a file listing `servers`, atomically (written
/// beside it, then renamed over it), as `FileNaming` asks.
fn write_servers(path: &Path, servers: &[&Fixture]) {
    let text: String = servers.iter().map(|s| format!("{}\n", s.addr())).collect();
    let next = path.with_extension("next");
    std::fs::write(&next, format!("# churn_naming\n{text}")).expect("write the server file");
    std::fs::rename(&next, path).expect("replace the server file");
}

/// A cluster channel on `url` whose naming looks again every few ms.
fn channel(url: &str) -> Channel {
    Channel::builder(url)
        .naming_interval(NAMING_INTERVAL)
        .timeout(Some(BOUND))
        .build()
        .expect("valid naming URL")
}

/// Baselines of a test: tasks and connections with no channel alive.
struct Quiet<'a> {
    servers: &'a [&'a Fixture],
    tasks: usize,
}

impl<'a> Quiet<'a> {
    fn now(servers: &'a [&'a Fixture]) -> Quiet<'a> {
        for s in servers {
            assert_eq!(s.server.stats().connections, 0);
        }
        assert_eq!(live_invokers(), 0);
        Quiet {
            servers,
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
        }
    }

    /// Waits until a dropped channel has left nothing running: no
    /// invoker, no connection, no task of its own (naming, connections).
    async fn again(&self) {
        eventually("the channel's invokers to go with it", || {
            live_invokers() == 0
        })
        .await;
        for s in self.servers {
            eventually("the channel's connections to close", || {
                s.server.stats().connections == 0
            })
            .await;
        }
        let metrics = tokio::runtime::Handle::current().metrics();
        eventually("the naming and connection tasks to end", || {
            metrics.num_alive_tasks() == self.tasks
        })
        .await;
    }
}

/// Two `file://` channels. One is dropped at once; the other, on a file
/// listing both servers, calls both, follows the file to one server,
/// calls it, and is dropped.
async fn file_round(path: &Path, servers: &[&Fixture; 2]) {
    write_servers(path, servers);
    let url = format!("file://{}", path.display());
    drop(channel(&url));
    let channel = channel(&url);
    let client = EchoServiceClient::new(&channel);
    for _ in 0..2 {
        client.echo(&request("hi")).await.expect("call");
    }
    let cluster = channel.cluster().expect("a file channel is a cluster");
    assert_eq!(cluster.invokers().len(), 2);
    write_servers(path, &servers[..1]);
    tokio::time::timeout(BOUND, cluster.wait_for_updates(2))
        .await
        .expect("the file is read again");
    assert_eq!(cluster.endpoints(), [Endpoint::new(servers[0].addr())]);
    client.echo(&request("hi")).await.expect("call");
    assert_eq!(channel.pending_calls(), 0);
}

/// Two `dns://` channels. One is dropped at once; the other resolves
/// `localhost`, calls, and is dropped.
async fn dns_round(url: &str, server: &Fixture) {
    drop(channel(url));
    let channel = channel(url);
    let client = EchoServiceClient::new(&channel);
    for _ in 0..2 {
        client.echo(&request("hi")).await.expect("call");
    }
    let cluster = channel.cluster().expect("a dns channel is a cluster");
    assert_eq!(cluster.endpoints(), [Endpoint::new(server.addr())]);
    assert_eq!(channel.pending_calls(), 0);
}

/// Runs `WARM_UP` rounds, takes the baseline, runs `ROUNDS` rounds
/// (checking after each that the channel left nothing running) and checks
/// the live heap.
async fn churn<F: Future<Output = ()>>(
    what: &str,
    quiet: &Quiet<'_>,
    mut round: impl FnMut() -> F,
) {
    for _ in 0..WARM_UP {
        round().await;
        quiet.again().await;
    }
    let before = keel_alloc::stats();
    for _ in 0..ROUNDS {
        round().await;
        quiet.again().await;
    }
    let d = before.delta(&keel_alloc::stats());
    eprintln!("{ROUNDS} {what} channels: {d:?}");
    assert!(
        d.live_bytes.abs() < TOLERANCE,
        "{ROUNDS} {what} channels moved the live heap by {} B: {d:?}",
        d.live_bytes
    );
}

#[test]
fn file_channels_leave_nothing_behind() {
    alone(async {
        keel::rpcz::tracer().sampler().set_target(0);
        let (one, two) = (start(|b| b).await, start(|b| b).await);
        let servers = [&one, &two];
        let dir = TempDir::new("churn-naming");
        let path = dir.path().join("servers");
        let quiet = Quiet::now(&servers);
        churn("file://", &quiet, || file_round(&path, &servers)).await;
    });
}

#[test]
fn dns_channels_leave_nothing_behind() {
    alone(async {
        keel::rpcz::tracer().sampler().set_target(0);
        let server = start(|b| b).await;
        let url = format!("dns://localhost:{}", server.server.local_addr().port());
        let servers = [&server];
        let quiet = Quiet::now(&servers);
        churn("dns://", &quiet, || dns_round(&url, &server)).await;
    });
}

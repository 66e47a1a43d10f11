//! Failover with a real crash: three `echo_server` processes on loopback
//! behind one list channel; one is killed (by its PID) in the middle of a
//! bounded load. With failover, no call fails (echo is idempotent), the
//! dead server is isolated, and the other two take its share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel::Channel;
use keel::cluster::InvokerState;
use keel_examples::example::{EchoRequest, EchoServiceClient};

/// A child `echo_server` on an ephemeral loopback port; killed on drop.
struct EchoProcess {
    child: Child,
    addr: String,
}

impl EchoProcess {
    fn spawn() -> EchoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo_server"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start echo_server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("echo_server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        EchoProcess { child, addr }
    }

    /// Kills this process (SIGKILL to its PID) and reaps it.
    fn kill(&mut self) {
        self.child.kill().expect("kill our own child");
        self.child.wait().expect("reap");
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const CALLERS: usize = 8;
const CALLS_EACH: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_servers_fails_no_call() {
    keel::rpcz::tracer().sampler().set_target(0);
    let mut procs: Vec<EchoProcess> = (0..3).map(|_| EchoProcess::spawn()).collect();
    let url = format!(
        "list://{}",
        procs
            .iter()
            .map(|p| p.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let channel = Channel::builder(&url)
        .timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("valid list");
    let done = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let channel = channel.clone();
        let done = done.clone();
        callers.push(tokio::spawn(async move {
            let client = EchoServiceClient::new(&channel);
            let mut failures = Vec::new();
            for i in 0..CALLS_EACH {
                let message = format!("{c}-{i}");
                match client
                    .echo(&EchoRequest {
                        message: message.clone(),
                    })
                    .await
                {
                    Ok(reply) => assert_eq!(reply.message, message),
                    Err(e) => failures.push(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    // Kill one server once the load is well under way (a third of the calls
    // done), while calls are in flight on it.
    let total = CALLERS as u64 * CALLS_EACH;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < total / 3 {
        assert!(tokio::time::Instant::now() < deadline, "load too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let victim = procs[1].addr.clone();
    procs[1].kill();
    let killed_at = done.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await.expect("no caller panicked"));
    }
    assert!(killed_at < total, "the kill happened during the load");
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let cluster = channel.cluster().expect("cluster");
    let dead = cluster.invoker(&victim).expect("the dead server's invoker");
    assert_eq!(dead.state, InvokerState::Isolated, "{dead:?}");
    assert!(cluster.stats().retries >= 1, "{:?}", cluster.stats());
    assert_eq!(channel.pending_calls(), 0);
}

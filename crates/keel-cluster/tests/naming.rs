//! Naming services end to end: sets reach the sink, changes are picked up,
//! bad URLs say why, and churn leaves nothing behind.
//!
//! Tests wait on the sink's updates (forwarded into an mpsc channel) under a
//! `timeout` that only bounds a failing test. File tests run on tokio's paused
//! clock, so a refresh interval passes as soon as the runtime is idle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_alloc::CountingAlloc;
use keel_cluster::Endpoint;
use keel_cluster::naming::{
    DnsNaming, FileNaming, ListNaming, NamingService, NamingSink, SinkTarget, from_url,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// Bounds a wait that should end at once; reached only by a failing test.
const BOUND: Duration = Duration::from_secs(10);

/// A sink that forwards every set into a channel; "gone" once the test
/// drops the receiver.
struct Forward(mpsc::UnboundedSender<Vec<Endpoint>>);

impl SinkTarget for Forward {
    fn update(&self, endpoints: Vec<Endpoint>) -> bool {
        self.0.send(endpoints).is_ok()
    }
}

fn start(
    service: Box<dyn NamingService>,
) -> (JoinHandle<()>, mpsc::UnboundedReceiver<Vec<Endpoint>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = NamingSink::new(Arc::new(Forward(tx)));
    (tokio::spawn(service.run(sink)), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Vec<Endpoint>>) -> Vec<Endpoint> {
    timeout(BOUND, rx.recv())
        .await
        .expect("no endpoint set within the bound")
        .expect("the naming service ended instead of sending a set")
}

async fn ends(task: JoinHandle<()>) {
    timeout(BOUND, task)
        .await
        .expect("the naming service did not end")
        .expect("the naming service panicked");
}

fn eps(entries: &[&str]) -> Vec<Endpoint> {
    entries
        .iter()
        .map(|e| Endpoint::parse(e).unwrap())
        .collect()
}

// ---------------------------------------------------------------- list://

#[tokio::test]
async fn list_sends_the_initial_set_sorted_without_duplicates_then_ends() {
    let naming = from_url(
        "list://127.0.0.1:8002,127.0.0.1:8001 weight=3,[::1]:8003,127.0.0.1:8002 weight=7",
        Duration::from_secs(1),
    )
    .unwrap()
    .expect("a list URL is a naming URL");
    let (task, mut rx) = start(naming);
    assert_eq!(
        next(&mut rx).await,
        eps(&["127.0.0.1:8001 weight=3", "127.0.0.1:8002", "[::1]:8003"])
    );
    // No updater exists for a URL list: nothing can change, the task ends.
    ends(task).await;
    assert_eq!(rx.recv().await, None, "exactly one set was sent");
}

#[tokio::test]
async fn list_updates_arrive_in_order_and_unchanged_sets_are_not_resent() {
    let naming = ListNaming::new(eps(&["10.0.0.1:80"]));
    let updater = naming.updater();
    let (task, mut rx) = start(Box::new(naming));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.1:80"]));

    updater.set(eps(&["10.0.0.2:80", "10.0.0.1:80"]));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.1:80", "10.0.0.2:80"]));
    updater.set(eps(&["10.0.0.2:80"]));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.2:80"]));
    updater.set(eps(&["10.0.0.3:80", "10.0.0.2:80"]));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.2:80", "10.0.0.3:80"]));

    // The same set in another order, with a duplicate: not a change.
    updater.set(eps(&["10.0.0.3:80", "10.0.0.2:80", "10.0.0.3:80"]));
    tokio::task::yield_now().await;
    // A clone updates the same list; its set is the next one delivered, so
    // the unchanged one above was skipped.
    let clone = updater.clone();
    clone.set(eps(&["10.0.0.3:80 weight=2"]));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.3:80 weight=2"]));
    // An empty set is a set too (every server removed).
    clone.set(vec![]);
    assert_eq!(next(&mut rx).await, vec![]);

    // The run ends once every updater is gone, and not before.
    drop(updater);
    clone.set(eps(&["10.0.0.4:80"]));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.4:80"]));
    assert!(!task.is_finished());
    drop(clone);
    ends(task).await;
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn list_run_ends_when_the_channel_is_gone() {
    let naming = ListNaming::new(eps(&["10.0.0.1:80"]));
    let updater = naming.updater();
    let (task, mut rx) = start(Box::new(naming));
    assert_eq!(next(&mut rx).await, eps(&["10.0.0.1:80"]));
    assert!(!updater.is_closed());
    drop(rx);
    // The next set finds the sink gone, though an updater is still alive.
    updater.set(eps(&["10.0.0.2:80"]));
    ends(task).await;
    assert!(updater.is_closed());
    updater.set(eps(&["10.0.0.3:80"])); // harmless once closed
}

#[tokio::test]
async fn list_run_ends_when_the_first_update_finds_the_channel_gone() {
    let naming = ListNaming::new(eps(&["10.0.0.1:80"]));
    let updater = naming.updater();
    let (task, rx) = start(Box::new(naming));
    drop(rx);
    ends(task).await;
    assert!(updater.is_closed());
}

/// Counts sets and keeps the last; never says the channel is gone.
#[derive(Default)]
struct Count {
    sets: AtomicU64,
    last: Mutex<Vec<Endpoint>>,
}

impl SinkTarget for Count {
    fn update(&self, endpoints: Vec<Endpoint>) -> bool {
        self.sets.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap() = endpoints;
        true
    }
}

/// Set number `i`: 1 to 4 endpoints, addresses of equal length.
fn churn_set(i: u64) -> Vec<Endpoint> {
    (0..=i % 4)
        .map(|k| Endpoint::new(format!("127.0.0.1:{}", 10_000 + (i * 7 + k) % 50_000)))
        .collect()
}

// A current-thread runtime: the run task and this test share one thread,
// so the thread's allocation counters see both.
#[tokio::test]
async fn list_takes_100_000_updates_without_growing() {
    const UPDATES: u64 = 100_000;
    assert!(keel_alloc::is_installed());
    let count = Arc::new(Count::default());
    let naming = ListNaming::new(vec![]);
    let updater = naming.updater();
    let task = tokio::spawn(Box::new(naming).run(NamingSink::new(count.clone())));

    let mut live_after_warmup = None;
    for i in 0..UPDATES {
        updater.set(churn_set(i));
        if i % 64 == 0 {
            // Let the run task catch up now and then (the watch channel
            // coalesces whatever it did not see).
            tokio::task::yield_now().await;
            // i % 64 == 0 means a one-endpoint set at both measurements.
            if i == 1_024 {
                live_after_warmup = Some(keel_alloc::thread_stats().live_bytes());
            }
        }
    }
    tokio::task::yield_now().await;
    let growth = keel_alloc::thread_stats().live_bytes() - live_after_warmup.unwrap();
    assert!(
        growth.abs() < 4096,
        "live heap moved by {growth} bytes over {UPDATES} updates"
    );

    drop(updater);
    ends(task).await;
    let sets = count.sets.load(Ordering::Relaxed);
    let mut expected = churn_set(UPDATES - 1);
    expected.sort();
    assert_eq!(
        *count.last.lock().unwrap(),
        expected,
        "the last set arrives"
    );
    // Every set differs from the one before, so each one seen was sent; the
    // task ran at every yield, so it saw many.
    assert!(
        (UPDATES / 64..=UPDATES + 1).contains(&sets),
        "{sets} sets sent"
    );
}

// ---------------------------------------------------------------- file://

/// A file under the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("keel-naming-{}-{name}", std::process::id()));
        TempFile(path)
    }

    /// Replaces the contents atomically, as the docs tell users to.
    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn url(&self) -> String {
        format!("file://{}", self.0.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("new"));
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn file_sends_the_initial_set_and_picks_up_edits() {
    let file = TempFile::new("edits");
    file.write("# servers\n127.0.0.1:8002\n\n127.0.0.1:8001 weight=2 # big one\n");
    let naming = from_url(&file.url(), SECOND).unwrap().unwrap();
    let (task, mut rx) = start(naming);
    assert_eq!(
        next(&mut rx).await,
        eps(&["127.0.0.1:8001 weight=2", "127.0.0.1:8002"])
    );

    file.write("127.0.0.1:8003\n127.0.0.1:8001 weight=2\n127.0.0.1:8002\n");
    assert_eq!(
        next(&mut rx).await,
        eps(&[
            "127.0.0.1:8001 weight=2",
            "127.0.0.1:8002",
            "127.0.0.1:8003"
        ])
    );
    file.write("127.0.0.1:8003\n");
    assert_eq!(next(&mut rx).await, eps(&["127.0.0.1:8003"]));

    // The channel goes away: the next change ends the task.
    drop(rx);
    file.write("127.0.0.1:8004\n");
    ends(task).await;
}

#[tokio::test(start_paused = true)]
async fn file_going_bad_while_running_keeps_the_last_set() {
    let file = TempFile::new("going-bad");
    file.write("127.0.0.1:8001\n127.0.0.1:8002\n");
    let (task, mut rx) = start(Box::new(FileNaming::open(file.path(), SECOND).unwrap()));
    assert_eq!(
        next(&mut rx).await,
        eps(&["127.0.0.1:8001", "127.0.0.1:8002"])
    );

    // A bad line, an empty file, no file: each is read a few times (the
    // paused clock runs the refresh interval five times per sleep).
    for bad in [
        Some("127.0.0.1:8001\nbogus\n"),
        Some("# nothing here\n"),
        None,
    ] {
        match bad {
            Some(text) => file.write(text),
            None => std::fs::remove_file(file.path()).unwrap(),
        }
        tokio::time::sleep(5 * SECOND).await;
        assert_eq!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Empty),
            "{bad:?} changed the set"
        );
    }

    // Good again: the next set is the new one, so nothing partial was
    // sent while the file was bad.
    file.write("127.0.0.1:8003\n");
    assert_eq!(next(&mut rx).await, eps(&["127.0.0.1:8003"]));
    task.abort();
}

#[test]
fn file_with_a_bad_line_fails_at_build_naming_the_line() {
    let file = TempFile::new("bad-line");
    file.write("127.0.0.1:8001\n\n# comment\n127.0.0.1\n");
    let e = from_url(&file.url(), SECOND).err().expect("a bad line");
    assert_eq!(e.url, file.url());
    assert!(e.reason.starts_with("line 4: "), "{e}");
    assert!(e.reason.contains("\"127.0.0.1\""), "{e}");
    assert!(e.reason.contains("host:port"), "{e}");
}

#[test]
fn missing_or_empty_files_fail_at_build() {
    let file = TempFile::new("missing");
    let e = from_url(&file.url(), SECOND).err().expect("a missing file");
    assert!(e.reason.contains("cannot read"), "{e}");
    assert!(e.reason.contains(&file.path().display().to_string()), "{e}");

    file.write("# no servers yet\n");
    let e = from_url(&file.url(), SECOND).err().expect("an empty file");
    assert!(e.reason.contains("no servers"), "{e}");
}

// ----------------------------------------------------------------- dns://

fn assert_loopback(set: &[Endpoint], port: u16) {
    assert!(!set.is_empty());
    for endpoint in set {
        let addr: SocketAddr = endpoint.addr.parse().expect("an ip:port");
        assert!(addr.ip().is_loopback(), "{addr} is not loopback");
        assert_eq!(addr.port(), port);
        assert_eq!(endpoint.weight, 1);
    }
}

#[tokio::test]
async fn dns_localhost_resolves_to_loopback_only() {
    let naming = from_url("dns://localhost:18321", Duration::from_millis(20))
        .unwrap()
        .unwrap();
    let (task, mut rx) = start(naming);
    let set = next(&mut rx).await;
    assert_loopback(&set, 18321);
    // Sorted, no duplicate addresses.
    let mut sorted = set.clone();
    sorted.sort();
    sorted.dedup_by(|a, b| a.addr == b.addr);
    assert_eq!(set, sorted);
    task.abort();
}

#[tokio::test]
async fn dns_literals_resolve_to_themselves() {
    for (host_port, expected) in [
        ("127.0.0.1:18322", "127.0.0.1:18322"),
        ("[::1]:18322", "[::1]:18322"),
    ] {
        let naming = DnsNaming::new(host_port, Duration::from_millis(20)).unwrap();
        let (task, mut rx) = start(Box::new(naming));
        let set = next(&mut rx).await;
        assert_loopback(&set, 18322);
        assert_eq!(set, eps(&[expected]));
        // A DNS task runs until a change finds the channel gone, or until
        // keel drops it with the channel, as here.
        task.abort();
    }
}

#[test]
fn dns_without_a_port_fails_at_build() {
    let e = from_url("dns://nohost", SECOND).err().expect("no port");
    assert!(e.reason.contains("host:port"), "{e}");
    let e = DnsNaming::new("::1:80", SECOND).expect_err("bare IPv6");
    assert!(e.reason.contains("brackets"), "{e}");
}

// ------------------------------------------------------------------ URLs

#[test]
fn bad_naming_urls_say_what_is_wrong() {
    let e = from_url("zk://h:1", SECOND).err().expect("unknown scheme");
    assert!(e.reason.contains("unknown scheme \"zk\""), "{e}");
    for scheme in ["list://", "file://", "dns://"] {
        assert!(e.reason.contains(scheme), "{e} should list {scheme}");
    }

    let e = from_url("list://", SECOND).err().expect("empty list");
    assert!(e.reason.contains("the list is empty"), "{e}");

    let e = from_url("list://127.0.0.1:1,127.0.0.1:x", SECOND)
        .err()
        .expect("bad entry");
    assert!(e.reason.starts_with("entry 2: "), "{e}");
    assert!(e.reason.contains("port"), "{e}");

    assert!(from_url("127.0.0.1:8000", SECOND).unwrap().is_none());
}

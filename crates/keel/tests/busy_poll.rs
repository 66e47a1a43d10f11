//! Busy-polling from outside (`ServerBuilder::busy_poll`,
//! `ChannelBuilder::busy_poll`): a lone caller (one call at a time, the
//! process's only Keel connection) is served through socket polling and
//! counted on `/vars`; a caller that goes away while its connection is
//! being polled is let go at once, not at the end of the window; a second
//! connection, or the option off, means no polling. The same holds for a
//! channel polling for its answers.
//!
//! The server's callers are plain blocking sockets on their own threads,
//! so the server's connection is the process's only Keel connection; a
//! polling channel calls a hand-written server (`fake_baidu`), for the
//! same reason. The windows are long (seconds) so that whether a wait was
//! a poll never depends on timing: a sequential caller's next request, or
//! an answer, always comes within one.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keel::Channel;
use support::fake_baidu;
use support::{EchoServiceClient, eventually, raw_echo, request, start};

const CALLS: i64 = 200;

/// The process's busy-polling counters on `/vars`: hits, misses,
/// microseconds.
async fn counters(addr: SocketAddr) -> [f64; 3] {
    [
        http1::var(addr, "keel_busy_poll_hits_total").await,
        http1::var(addr, "keel_busy_poll_misses_total").await,
        http1::var(addr, "keel_busy_poll_microseconds_total").await,
    ]
}

/// Between counters `before` and `after`, all but the first few of
/// [`CALLS`] `what` (requests or answers) were found by polling, and no
/// window ran out.
fn found_by_polling(before: [f64; 3], after: [f64; 3], what: &str) {
    let hits = after[0] - before[0];
    assert!(
        hits >= (CALLS - 20) as f64,
        "{hits} of {CALLS} {what} found by polling"
    );
    assert_eq!(after[1], before[1], "no window ran out");
    assert!(after[2] > before[2], "time spent polling is counted");
}

/// `calls` echo calls one at a time on a new connection, on a thread of
/// its own; the connection is returned open.
async fn lone_caller(addr: SocketAddr, calls: i64) -> TcpStream {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        for id in 1..=calls {
            raw_echo(&mut stream, id, b"0123456789abcdef");
        }
        stream
    })
    .await
    .expect("the caller's thread")
}

#[test]
fn a_lone_caller_is_served_by_polling() {
    support::alone_on(2, async {
        let fixture = start(|b| b.busy_poll(Some(Duration::from_secs(5)))).await;
        let addr = fixture.server.local_addr();
        let before = counters(addr).await;
        // The last `/vars` read's connection is closed: while it is open,
        // the connection under test is not the process's only one.
        support::connections_listed(0).await;
        let stream = lone_caller(addr, CALLS).await;
        // The first few calls establish the pattern; after that every wait for
        // the next request is a poll, and each finds it. (Reading /vars opens a
        // second connection: the open one is no longer polled from then on.)
        found_by_polling(before, counters(addr).await, "calls");
        drop(stream);
    });
}

#[test]
fn a_caller_that_leaves_while_polled_is_let_go() {
    support::alone_on(2, async {
        // A window far longer than `eventually` waits: the close must be seen
        // by the polling itself.
        let fixture = start(|b| b.busy_poll(Some(Duration::from_secs(60)))).await;
        let stream = lone_caller(fixture.server.local_addr(), 50).await;
        assert_eq!(fixture.server.stats().connections, 1);
        drop(stream);
        eventually("the server let the connection go", || {
            fixture.server.stats().connections == 0
        })
        .await;
    });
}

#[test]
fn two_connections_or_off_mean_no_polling() {
    support::alone_on(2, async {
        for (window, second) in [(Some(Duration::from_secs(5)), true), (None, false)] {
            let fixture = start(|b| b.busy_poll(window)).await;
            let addr = fixture.server.local_addr();
            // Another connection open: the lone caller's is not the only one.
            let other = second.then(|| TcpStream::connect(addr).expect("connect"));
            let before = counters(addr).await;
            let stream = lone_caller(addr, 50).await;
            assert_eq!(counters(addr).await, before, "no polling");
            drop((stream, other));
        }
    });
}

/// A hand-written server on a runtime of its own: it answers whatever the
/// test's runtime does (a polling connection holds one of that runtime's
/// workers, and the other may sleep away from the I/O driver until the
/// window ends).
struct Outside {
    server: fake_baidu::FakeServer,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Outside {
    async fn start(
        answer: impl Fn(i64, &support::EchoRequest) -> Vec<u8> + Send + Sync + 'static,
    ) -> Outside {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime
            .spawn(fake_baidu::start(answer))
            .await
            .expect("the server started");
        Outside {
            server,
            runtime: Some(runtime),
        }
    }
}

impl std::ops::Deref for Outside {
    type Target = fake_baidu::FakeServer;
    fn deref(&self) -> &fake_baidu::FakeServer {
        &self.server
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A Keel server only to read `/vars` from (its connection closes after
/// each read), its address, and a server outside Keel answering with
/// `answer`, for channels to call.
async fn calling_outside(
    answer: impl Fn(i64, &support::EchoRequest) -> Vec<u8> + Send + Sync + 'static,
) -> (support::Fixture, SocketAddr, Outside) {
    let fixture = start(|b| b.busy_poll(None)).await;
    let vars = fixture.server.local_addr();
    (fixture, vars, Outside::start(answer).await)
}

/// A channel to `addr` polling for its answers for up to `window`.
fn polling_client(addr: &str, window: Option<Duration>) -> EchoServiceClient {
    let channel = Channel::builder(addr)
        .busy_poll(window)
        .build()
        .expect("a channel");
    EchoServiceClient::new(&channel)
}

/// `calls` echo calls, one at a time.
async fn call_in_turn(client: &EchoServiceClient, calls: usize) {
    for i in 0..calls {
        let message = format!("call {i}");
        let reply = client.echo(&request(&message)).await.expect("answered");
        assert_eq!(reply.message, message);
    }
}

#[test]
fn a_lone_channel_polls_for_its_answers() {
    support::alone_on(2, async {
        let (_fixture, vars, fake) = calling_outside(fake_baidu::echo).await;
        let client = polling_client(&fake.addr, Some(Duration::from_secs(5)));
        let before = counters(vars).await;
        // The last `/vars` read's connection is closed: while it is open,
        // the connection under test is not the process's only one.
        support::connections_listed(0).await;
        call_in_turn(&client, CALLS as usize).await;
        // The first few calls establish the pattern; after that every
        // answer is found by polling.
        found_by_polling(before, counters(vars).await, "answers");
        assert_eq!(
            fake.requests.load(std::sync::atomic::Ordering::Relaxed),
            CALLS as u64
        );
    });
}

#[test]
fn a_channel_with_another_connection_or_polling_off_never_polls() {
    support::alone_on(2, async {
        let (_fixture, vars, fake) = calling_outside(fake_baidu::echo).await;
        for (window, second) in [(Some(Duration::from_secs(5)), true), (None, false)] {
            // The last round's connections are gone: this round's decide.
            support::connections_listed(0).await;
            let client = polling_client(&fake.addr, window);
            // Another channel with a connection open: the caller's is not the
            // only one.
            let other = second.then(|| polling_client(&fake.addr, None));
            if let Some(other) = &other {
                call_in_turn(other, 1).await;
            }
            let before = counters(vars).await;
            call_in_turn(&client, 50).await;
            assert_eq!(counters(vars).await, before, "no polling");
            drop((client, other));
        }
    });
}

#[test]
fn a_call_queued_while_the_channel_polls_is_sent_at_once() {
    support::alone_on(2, async {
        // The answer to `hold` waits for the next request, and goes with its
        // answer.
        let held = std::sync::Mutex::new(Vec::new());
        let (_fixture, vars, fake) = calling_outside(move |cid, req| {
            let mut held = held.lock().expect("not poisoned");
            if req.message == "hold" {
                *held = fake_baidu::echo(cid, req);
                return Vec::new();
            }
            let mut out = std::mem::take(&mut *held);
            out.extend(fake_baidu::echo(cid, req));
            out
        })
        .await;
        // No deadline: nothing but the queued call may stop the polling.
        let channel = Channel::builder(&fake.addr)
            .busy_poll(Some(Duration::from_secs(5)))
            .timeout(None)
            .build()
            .expect("a channel");
        let client = EchoServiceClient::new(&channel);
        call_in_turn(&client, 20).await;
        let before = counters(vars).await;
        // The last `/vars` read's connection is closed: while it is open,
        // the connection under test is not the process's only one.
        support::connections_listed(1).await;
        // A lone call: its connection polls for the answer, which waits for
        // the next request...
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.echo(&request("hold")).await }
        });
        eventually("the held request arrived", || {
            fake.requests.load(std::sync::atomic::Ordering::Relaxed) == 21
        })
        .await;
        // ... which is queued meanwhile: the polling stops for it, rather
        // than run out its window.
        let second = client.echo(&request("next")).await.expect("answered");
        assert_eq!(second.message, "next");
        let first = first.await.expect("the task").expect("answered");
        assert_eq!(first.message, "hold");
        let after = counters(vars).await;
        assert_eq!(after[1], before[1], "no window ran out");
        assert!(
            after[2] > before[2],
            "the held call's answer was polled for"
        );
    });
}

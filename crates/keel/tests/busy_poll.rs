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

/// Polling depends on the process's connections: one test at a time.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The process's busy-polling counters on `/vars`: hits, misses,
/// microseconds.
async fn counters(addr: SocketAddr) -> [f64; 3] {
    [
        http1::var(addr, "keel_busy_poll_hits_total").await,
        http1::var(addr, "keel_busy_poll_misses_total").await,
        http1::var(addr, "keel_busy_poll_microseconds_total").await,
    ]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_caller_is_served_by_polling() {
    let _one = one_at_a_time().await;
    let fixture = start(|b| b.busy_poll(Some(Duration::from_secs(5)))).await;
    let addr = fixture.server.local_addr();
    let before = counters(addr).await;
    let stream = lone_caller(addr, CALLS).await;
    // The first few calls establish the pattern; after that every wait for
    // the next request is a poll, and each finds it. (Reading /vars opens a
    // second connection: the open one is no longer polled from then on.)
    let after = counters(addr).await;
    let hits = after[0] - before[0];
    assert!(
        hits >= (CALLS - 20) as f64,
        "{hits} of {CALLS} calls found by polling"
    );
    assert_eq!(after[1], before[1], "no window ran out");
    assert!(after[2] > before[2], "time spent polling is counted");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_while_polled_is_let_go() {
    // A window far longer than `eventually` waits: the close must be seen
    // by the polling itself.
    let _one = one_at_a_time().await;
    let fixture = start(|b| b.busy_poll(Some(Duration::from_secs(60)))).await;
    let stream = lone_caller(fixture.server.local_addr(), 50).await;
    assert_eq!(fixture.server.stats().connections, 1);
    drop(stream);
    eventually("the server let the connection go", || {
        fixture.server.stats().connections == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_or_off_mean_no_polling() {
    let _one = one_at_a_time().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_channel_polls_for_its_answers() {
    let _one = one_at_a_time().await;
    // A Keel server only to read `/vars` (its connection closes after
    // each read); the channel calls a server outside Keel.
    let fixture = start(|b| b.busy_poll(None)).await;
    let vars = fixture.server.local_addr();
    let fake = fake_baidu::start(fake_baidu::echo).await;
    let client = polling_client(&fake.addr, Some(Duration::from_secs(5)));
    let before = counters(vars).await;
    call_in_turn(&client, CALLS as usize).await;
    let after = counters(vars).await;
    // The first few calls establish the pattern (and the connection the
    // last `/vars` read used may still be closing); after that every
    // answer is found by polling.
    let hits = after[0] - before[0];
    assert!(
        hits >= (CALLS - 20) as f64,
        "{hits} of {CALLS} answers found by polling"
    );
    assert_eq!(after[1], before[1], "no window ran out");
    assert!(after[2] > before[2], "time spent polling is counted");
    assert_eq!(
        fake.requests.load(std::sync::atomic::Ordering::Relaxed),
        CALLS as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_with_another_connection_or_polling_off_never_polls() {
    let _one = one_at_a_time().await;
    let fixture = start(|b| b.busy_poll(None)).await;
    let vars = fixture.server.local_addr();
    let fake = fake_baidu::start(fake_baidu::echo).await;
    for (window, second) in [(Some(Duration::from_secs(5)), true), (None, false)] {
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
}

//! Busy-polling from outside (`ServerBuilder::busy_poll`): a lone caller
//! (one call at a time, the process's only Keel connection) is served
//! through socket polling and counted on `/vars`; a caller that goes away
//! while its connection is being polled is let go at once, not at the end
//! of the window; a second connection, or the option off, means no polling.
//!
//! The callers are plain blocking sockets on their own threads, so the
//! server's connection is the process's only Keel connection. The windows
//! are long (seconds) so that whether a wait was a poll never depends on
//! timing: a sequential caller's next request always comes within one.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{eventually, raw_echo, start};

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

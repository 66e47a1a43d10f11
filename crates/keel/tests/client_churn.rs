//! Rule R6 for clients (the MagicOnion lesson, DESIGN.md §1.3): creating
//! clients from a channel and deriving clients with other options allocates
//! nothing and leaves nothing behind, and a channel's per-method table grows
//! with methods called, never with clients.
//!
//! Process-wide allocation counts see every thread (the test harness starting
//! other tests' threads included), so this file is its own test binary with a
//! single test running the steps in sequence.

use std::hint::black_box;
use std::time::Duration;

use keel::bytes::Bytes;
use keel::server::MethodTable;
use keel::{CallOptions, Channel, Compression, Context, Status};

#[global_allocator]
static ALLOC: keel_alloc::CountingAlloc = keel_alloc::CountingAlloc::system();

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echoes without allocating anything itself: moves the request's string
/// into the response and shares the request attachment back.
struct Echo;

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        if !ctx.attachment().is_empty() {
            ctx.set_response_attachment(ctx.attachment().clone());
        }
        response.message.clone_from(&req.message);
        Ok(())
    }
}

fn echo_channel() -> Channel {
    Channel::in_process(
        MethodTable::new()
            .with(EchoServiceServer::new(Echo))
            .expect("one service"),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

const MILLION: u64 = 1_000_000;

#[test]
fn clients_are_free_and_method_state_is_bounded() {
    assert!(keel_alloc::is_installed());
    // This test is about clients and method state; rpcz (on by default)
    // keeps sampled calls in its bounded store, which fills while the calls
    // run here. rpcz has churn tests of its own.
    keel::rpcz::tracer().sampler().set_target(0);
    a_million_clients_and_derivations_allocate_nothing();
    clients_with_a_thousand_option_sets_share_one_method_entry();
}

fn a_million_clients_and_derivations_allocate_nothing() {
    assert!(keel_alloc::is_installed());
    // Counted on this thread, where clients, the in-process server and the
    // current-thread runtime all run; the test harness's own threads (which
    // allocate now and then) do not count.
    let channel = echo_channel();
    let methods_before = channel.method_stats_len();

    let created = keel_alloc::churn_thread(1_000, MILLION, |_| {
        let client = EchoServiceClient::new(&channel);
        black_box(&client);
    });
    assert_eq!(
        created.allocs, 0,
        "EchoServiceClient::new allocated: {created:?}"
    );
    assert_eq!(created.live_bytes, 0, "{created:?}");

    // A heap-backed attachment: its first clone (in the warm-up) moves it to
    // shared storage; after that clones only bump a reference count.
    let attachment = Bytes::from(vec![7u8; 100]);
    let base = EchoServiceClient::new(&channel);
    let derived = keel_alloc::churn_thread(1_000, MILLION, |i| {
        let client = base.with_options(CallOptions {
            timeout: Some(Duration::from_millis(1 + i % 1_000)),
            attachment: attachment.clone(),
            compression: Compression::Snappy,
            log_id: i,
            hash_key: i.rotate_left(17),
            max_retry: Some(3),
            metadata: keel::Metadata::new(),
        });
        black_box(&client);
        // Derive from a derived client too: options are the only thing copied.
        let again = client.with_options(CallOptions::default());
        black_box(&again);
    });
    assert_eq!(derived.allocs, 0, "with_options allocated: {derived:?}");
    assert_eq!(derived.live_bytes, 0, "{derived:?}");

    assert_eq!(channel.method_stats_len(), methods_before);
    assert_eq!(methods_before, 0, "no call was made");
}

fn clients_with_a_thousand_option_sets_share_one_method_entry() {
    let rt = runtime();
    let channel = echo_channel();
    let base = EchoServiceClient::new(&channel);
    let request = EchoRequest {
        message: "hi".to_owned(),
    };
    for i in 0..1_000u64 {
        let client = base.with_options(CallOptions {
            timeout: Some(Duration::from_secs(1 + i)),
            log_id: i,
            hash_key: i,
            ..CallOptions::default()
        });
        let reply = rt.block_on(client.echo(&request)).expect("echoed");
        assert_eq!(reply.message, "hi");
    }
    assert_eq!(channel.method_stats_len(), 1, "one method called");
    let stats = channel.method_stats();
    assert_eq!((stats[0].calls, stats[0].errors), (1_000, 0));

    // And calls leave nothing behind either.
    let calls = keel_alloc::churn_thread(1_000, 10_000, |i| {
        let client = base.with_options(CallOptions {
            log_id: i,
            ..CallOptions::default()
        });
        rt.block_on(client.echo(&request)).expect("echoed");
    });
    assert!(calls.live_bytes <= 64, "calls leaked: {calls:?}");
    assert_eq!(channel.method_stats_len(), 1);
}

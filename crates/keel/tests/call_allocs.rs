//! Heap allocations per in-process call, counted on the calling thread: the
//! runtime is current-thread, so client, transport and handler all run here.
//! Prints a table; asserts the count does not creep up.

use std::hint::black_box;
use std::time::Duration;

use keel::bytes::Bytes;
use keel::server::MethodTable;
use keel::{CallOptions, Channel, Context, Status};

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

/// Framework: nothing. The encoded request and response are written into
/// the calling thread's reused buffers and handed over as shared views of
/// them; the call's futures live in pooled blocks. Messages (prost): the
/// response's string decoded on the client; the server's request and
/// response come from per-method pools.
const FRAMEWORK_ALLOCS: u64 = 0;
const MESSAGE_ALLOCS: u64 = 1;

#[test]
fn allocations_per_in_process_call() {
    // This test is about the allocations of the call path; rpcz (on by default) keeps recent traces
    // in a bounded store, which has churn tests of its own in keel-rpcz.
    keel::rpcz::tracer().sampler().set_target(0);
    assert!(keel_alloc::is_installed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let channel = Channel::in_process(
        MethodTable::new()
            .with(EchoServiceServer::new(Echo))
            .expect("one service"),
    );
    let plain = EchoServiceClient::new(&channel);
    let timed = plain.with_options(CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    });
    let attached = plain.with_options(CallOptions {
        attachment: Bytes::from_static(b"attachment"),
        ..CallOptions::default()
    });
    let request = EchoRequest {
        message: "hello".to_owned(),
    };

    println!("{:>22} | allocs/call | bytes/call | live delta", "options");
    for (name, client) in [
        ("none", &plain),
        ("timeout", &timed),
        ("attachment both ways", &attached),
    ] {
        let d = keel_alloc::churn_thread(1_000, 10_000, |_| {
            let reply = rt.block_on(client.echo(&request)).expect("echoed");
            black_box(reply);
        });
        println!(
            "{name:>22} | {:>11.2} | {:>10.0} | {}",
            d.allocs_per_iter(),
            d.alloc_bytes as f64 / d.iters as f64,
            d.live_bytes
        );
        assert_eq!(
            d.allocs,
            (FRAMEWORK_ALLOCS + MESSAGE_ALLOCS) * d.iters,
            "{name}: {d:?}"
        );
        assert!(d.live_bytes <= 64, "{name}: calls leaked: {d:?}");
    }
}

//! Rule R7 for in-process calls: the calling thread reuses its request and
//! response buffers, but not after a large message: a 1 MiB call leaves no
//! allocation behind on the calling thread.

use std::hint::black_box;

use keel::Channel;
use keel::server::MethodTable;
use keel::{Context, Status};

#[global_allocator]
static ALLOC: keel_alloc::CountingAlloc = keel_alloc::CountingAlloc::system();

mod example {
    keel::include_proto!("example");
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

struct Echo;

impl EchoService for Echo {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        response.message.clone_from(&req.message);
        Ok(())
    }
}

#[test]
fn a_large_in_process_call_leaves_no_buffer_behind() {
    keel::rpcz::tracer().sampler().set_target(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let channel = Channel::in_process(
        MethodTable::new()
            .with(EchoServiceServer::new(Echo))
            .expect("one service"),
    );
    let client = EchoServiceClient::new(&channel);
    let small = EchoRequest {
        message: "hello".to_owned(),
    };
    rt.block_on(client.echo(&small)).expect("warm-up");
    let before = keel_alloc::thread_stats();
    {
        let large = EchoRequest {
            message: "l".repeat(1 << 20),
        };
        let reply = rt.block_on(client.echo(&large)).expect("echoed");
        assert_eq!(reply.message.len(), 1 << 20);
    }
    // The thread's buffers carry small calls again without the large ones'
    // allocation (they were not kept).
    for _ in 0..10 {
        black_box(rt.block_on(client.echo(&small)).expect("echoed"));
    }
    let d = before.delta(&keel_alloc::thread_stats());
    println!(
        "after a 1 MiB in-process call: live heap {:+} B",
        d.live_bytes
    );
    assert!(d.live_bytes.abs() <= 1024, "{d:?}");
}

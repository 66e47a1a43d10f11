//! In-process calls are traced like network ones: the dispatch path opens
//! a server span, a child of the caller's client span in the same trace,
//! with the handler's marks, annotations and status.

mod support;

use keel::rpcz::{self, Query};
use keel::server::MethodTable;
use keel::{Channel, Code, Context, Server, Status};
use keel_rpcz::{Kind, Mark};
use support::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echoes, annotating its span; `fail` fails with 4242.
struct Annotating;

impl EchoService for Annotating {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        assert!(
            ctx.span(|span| span.context()).flatten().is_some(),
            "a sampled in-process call's handler sees its span"
        );
        ctx.annotate("handled in process");
        if req.message == "fail" {
            return Err(Status::new(Code::new(4242), "failing on purpose"));
        }
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

/// What the store kept of one span.
#[derive(Debug)]
struct Seen {
    kind: Kind,
    span_id: u64,
    parent: u64,
    method: &'static str,
    protocol: &'static str,
    status: i32,
    handler_marks: bool,
    annotations: usize,
}

/// Calls `message` through `channel` and returns every span of its trace,
/// once the client's and the server's trees are both stored.
async fn trace_of_one_call(channel: &Channel, message: &str) -> Vec<Seen> {
    let store = rpcz::tracer().store();
    let known: Vec<u64> = store
        .query(&Query::default())
        .iter()
        .map(|t| t.trace_id)
        .collect();
    let _ = EchoServiceClient::new(channel)
        .echo(&support::request(message))
        .await;
    let root = store
        .query(&Query::default())
        .into_iter()
        .find(|t| t.kind == Kind::Client && !known.contains(&t.trace_id))
        .expect("the call's client root");
    let by_trace = Query {
        trace_id: Some(root.trace_id),
        ..Query::default()
    };
    // The server's tree is stored when its span ends, which may follow the
    // answer by a moment: wait (bounded) until a server span is there.
    let spans = || {
        let mut spans = Vec::new();
        for tree in store.query(&by_trace) {
            store.with_seq(tree.seq, |view| {
                for s in view.spans() {
                    assert_eq!(s.trace_id(), root.trace_id);
                    spans.push(Seen {
                        kind: s.kind(),
                        span_id: s.span_id(),
                        parent: s.parent_span_id(),
                        method: s.method(),
                        protocol: s.protocol(),
                        status: s.status(),
                        handler_marks: s.mark(Mark::HandlerStart).is_some()
                            && s.mark(Mark::HandlerEnd).is_some(),
                        annotations: s.annotations().count(),
                    });
                }
            });
        }
        spans
    };
    support::eventually("the server span of the in-process call", || {
        spans().iter().any(|s| s.kind == Kind::Server)
    })
    .await;
    spans()
}

#[tokio::test]
async fn an_in_process_call_has_a_server_span_under_its_client_span() {
    rpcz::tracer().sampler().set_target(1_000_000_000);
    let table = MethodTable::new()
        .with(EchoServiceServer::new(Annotating))
        .expect("one service");
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Annotating))
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let channels = [
        ("Channel::in_process", Channel::in_process(table)),
        ("Server::in_process", server.in_process()),
    ];
    for (name, channel) in &channels {
        for (message, status) in [("hi", 0), ("fail", 4242)] {
            let spans = trace_of_one_call(channel, message).await;
            let client: Vec<_> = spans.iter().filter(|s| s.kind == Kind::Client).collect();
            let server: Vec<_> = spans.iter().filter(|s| s.kind == Kind::Server).collect();
            assert_eq!(client.len(), 1, "{name} {message}: {spans:?}");
            assert_eq!(server.len(), 1, "{name} {message}: {spans:?}");
            let (client, server) = (client[0], server[0]);
            assert_eq!(
                server.parent, client.span_id,
                "{name} {message}: the server span is the client span's child"
            );
            assert_eq!(server.method, "/example.EchoService/Echo", "{name}");
            assert_eq!(server.protocol, "in-process", "{name}");
            assert!(server.handler_marks, "{name} {message}: {server:?}");
            assert_eq!(server.annotations, 1, "{name}: the handler's note");
            assert_eq!(server.status, status, "{name} {message}");
            assert_eq!(client.status, status, "{name} {message}");
        }
    }
}

//! A call chain A -> B -> C across three Keel servers on loopback produces
//! one trace: every span carries the same trace id and each server span's
//! parent is the client span that called it.

mod support;

use keel::rpcz::{self, Query};
use keel::{Channel, Context, Server, Status};
use support::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};

/// Echo that first relays the request to `next`, if any.
struct Relay {
    next: Option<Channel>,
}

impl EchoService for Relay {
    async fn echo(
        &self,
        ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        // The span is reachable from the context (every call here is sampled).
        let ids = ctx.span(|span| span.context()).flatten();
        assert!(ids.is_some(), "a sampled call's handler sees its span");
        ctx.annotate("relay got the request");
        match &self.next {
            Some(next) => {
                *response = EchoServiceClient::new(next).echo(req).await?;
                Ok(())
            }
            None => {
                response.message.clone_from(&req.message);
                Ok(())
            }
        }
    }
}

async fn serve(next: Option<Channel>) -> Server {
    Server::builder()
        .add_service(EchoServiceServer::new(Relay { next }))
        .bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// Over baidu_std (ids in `RpcRequestMeta`), then over gRPC (ids in W3C
/// `traceparent`), one after the other: they share the process's store.
#[tokio::test]
async fn a_chain_of_three_servers_is_one_trace_with_parent_links() {
    chain("").await;
    chain("grpc://").await;
}

/// Calls A -> B -> C with channels to `{scheme}host:port` and checks the
/// trace, found by its root: the one client root not stored before.
async fn chain(scheme: &str) {
    // Trace every call in this test process.
    rpcz::tracer().sampler().set_target(1_000_000_000);
    let to =
        |server: &Server| Channel::new(&format!("{scheme}{}", server.local_addr())).expect("addr");
    let c = serve(None).await;
    let b = serve(Some(to(&c))).await;
    let a = serve(Some(to(&b))).await;
    let to_a = to(&a);
    let store = rpcz::tracer().store();
    let known: Vec<u64> = store
        .query(&Query::default())
        .iter()
        .map(|t| t.trace_id)
        .collect();
    let resp = EchoServiceClient::new(&to_a)
        .echo(&support::request("hop"))
        .await
        .expect("chain call");
    assert_eq!(resp.message, "hop");

    // The test's own call is a client root; its tree holds one span.
    let roots = store.query(&Query::default());
    let root = roots
        .iter()
        .find(|t| t.kind == keel_rpcz::Kind::Client && t.spans == 1 && !known.contains(&t.trace_id))
        .copied()
        .expect("the test's client root");
    // Trees finish asynchronously after the response; wait (bounded) for
    // the four trees of this trace: the client root, A, B and C.
    support::eventually("all four trees of the trace", || {
        store
            .query(&Query {
                trace_id: Some(root.trace_id),
                ..Query::default()
            })
            .len()
            == 4
    })
    .await;
    let trees = store.query(&Query {
        trace_id: Some(root.trace_id),
        ..Query::default()
    });
    // Collect (kind, span id, parent id, spans in tree) of every span.
    let mut spans = Vec::new();
    for t in &trees {
        store
            .with_seq(t.seq, |view| {
                for s in view.spans() {
                    assert_eq!(s.trace_id(), root.trace_id, "one trace id throughout");
                    assert!(
                        s.mark(keel_rpcz::Mark::Sent).is_some(),
                        "every span, server and client, records when it sent: {s:?}"
                    );
                    assert!(
                        s.peer().is_some_and(|p| p.ip().is_loopback()),
                        "client spans name the server, server spans the client: {s:?}"
                    );
                    if s.kind() == keel_rpcz::Kind::Server {
                        let (start, end, sent) = (
                            s.mark(keel_rpcz::Mark::HandlerStart),
                            s.mark(keel_rpcz::Mark::HandlerEnd),
                            s.mark(keel_rpcz::Mark::Sent),
                        );
                        assert!(start <= end && end <= sent, "marks in call order: {s:?}");
                    }
                    spans.push((
                        s.kind(),
                        s.span_id(),
                        s.parent_span_id(),
                        s.annotations().count(),
                    ));
                }
            })
            .expect("tree still stored");
    }
    use keel_rpcz::Kind::{Client, Server as Srv};
    let servers: Vec<_> = spans.iter().filter(|s| s.0 == Srv).collect();
    let clients: Vec<_> = spans.iter().filter(|s| s.0 == Client).collect();
    assert_eq!(servers.len(), 3, "{spans:?}");
    assert_eq!(
        clients.len(),
        3,
        "the test's call, A->B and B->C: {spans:?}"
    );
    // Every server span's parent is a client span of the same trace.
    for s in &servers {
        assert!(
            clients.iter().any(|c| c.1 == s.2),
            "server span {:x} has no calling client span: {spans:?}",
            s.1
        );
        assert_eq!(s.3, 1, "the relay's annotation is on its server span");
    }
    // Clients made inside handlers are children of those server spans.
    let inner: Vec<_> = clients.iter().filter(|c| c.2 != 0).collect();
    assert_eq!(inner.len(), 2, "{spans:?}");
    for c in inner {
        assert!(servers.iter().any(|s| s.1 == c.2), "{spans:?}");
    }
    let text = store.render_text(root.trace_id).expect("renders");
    assert!(text.contains("/example.EchoService/Echo"), "{text}");
}

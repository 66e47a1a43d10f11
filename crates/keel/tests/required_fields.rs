//! Proto2 `required` fields are enforced as brpc enforces them: a request
//! lacking one is answered EREQUEST ("Fail to parse request") before the
//! handler runs, a response lacking one fails the call with ERESPONSE —
//! for required fields of sub-messages too. Through the in-process channel,
//! so the same MethodTable -> Service -> dispatch path as TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use keel::bytes::{Bytes, BytesMut};
use keel::codec::{RequiredFields, encode_to_bytes};
use keel::server::{MethodTable, Service, ServiceFuture};
use keel::{Channel, Code, Context, ServiceDescriptor, Status};
use prost::Message;

mod example {
    keel::include_proto!("example");
}
mod required {
    keel::include_proto!("required");
    pub mod dep {
        keel::include_proto!("required.dep");
    }
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer};
use required::{
    Forest, ForestClient, ForestServer, Leaf, LooseLeaf, LooseTag, LooseTree, Plain, Tree,
    loose_tree,
};

#[derive(Default)]
struct Echo {
    calls: Arc<AtomicU64>,
}

impl EchoService for Echo {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, SeqCst);
        response.message.clone_from(&req.message);
        Ok(())
    }
}

fn echo_channel() -> (Channel, Arc<AtomicU64>) {
    let echo = Echo::default();
    let calls = Arc::clone(&echo.calls);
    let table = MethodTable::new()
        .with(EchoServiceServer::new(echo))
        .expect("one service");
    (Channel::in_process(table), calls)
}

#[tokio::test]
async fn empty_echo_request_is_erequest() {
    let (channel, calls) = echo_channel();
    let client = keel::Client::new(&channel);
    let err = client
        .unary_raw(&example::echo_service::ECHO, Bytes::new())
        .await
        .expect_err("the required `message` is missing");
    assert_eq!(err.code(), Code::EREQUEST);
    assert!(
        err.message().starts_with("Fail to parse request"),
        "brpc's wording: {err}"
    );
    assert_eq!(
        err.message(),
        "Fail to parse request=example.EchoRequest, request_size=0, \
         method=example.EchoService.Echo: missing required field example.EchoRequest.message"
    );
    assert_eq!(calls.load(SeqCst), 0, "the handler never ran");
}

#[tokio::test]
async fn well_formed_echo_request_succeeds() {
    let (channel, calls) = echo_channel();
    let client = EchoServiceClient::new(&channel);
    let payload = encode_to_bytes(&EchoRequest {
        message: "hi".into(),
    });
    let reply = client
        .client()
        .unary_raw(&example::echo_service::ECHO, payload.clone())
        .await
        .expect("echoed");
    assert_eq!(reply.message, payload);
    // An empty string is present too: proto2 presence, not emptiness.
    let reply = client
        .echo(&EchoRequest {
            message: String::new(),
        })
        .await
        .expect("present though empty");
    assert_eq!(reply.message, "");
    assert_eq!(calls.load(SeqCst), 2);
}

/// Answers every call with `response` as the encoded reply, whatever the
/// descriptor's types say: a server that ignores `required`.
struct Canned {
    descriptor: &'static ServiceDescriptor,
    response: &'static [u8],
}

impl Service for Canned {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.descriptor
    }

    fn call<'a>(
        &'a self,
        _method: usize,
        _ctx: &'a Context,
        _request: Bytes,
        response: &'a mut BytesMut,
    ) -> ServiceFuture<'a> {
        response.extend_from_slice(self.response);
        ServiceFuture::new(std::future::ready(Ok(())))
    }
}

fn canned(descriptor: &'static ServiceDescriptor, response: &'static [u8]) -> Channel {
    let table = MethodTable::new()
        .with(Canned {
            descriptor,
            response,
        })
        .expect("one service");
    Channel::in_process(table)
}

#[tokio::test]
async fn response_lacking_a_required_field_is_eresponse() {
    // Only an unknown field (99 = 1): `message` is missing.
    let channel = canned(&example::echo_service::SERVICE, b"\x98\x06\x01");
    let client = EchoServiceClient::new(&channel);
    let request = EchoRequest {
        message: "hi".into(),
    };
    let err = client.echo(&request).await.expect_err("missing `message`");
    assert_eq!(err.code(), Code::ERESPONSE);
    assert_eq!(
        err.message(),
        "Fail to parse response=example.EchoResponse, response_size=3, \
         method=example.EchoService.Echo: missing required field example.EchoResponse.message"
    );

    let err = client
        .client()
        .unary::<_, EchoResponse>(
            &example::echo_service::ECHO,
            &request,
            Some(EchoResponse::REQUIRED),
        )
        .full()
        .await
        .expect_err("checked with the table");
    assert_eq!(err.code(), Code::ERESPONSE);

    // The documented escape hatch: without the table nothing is checked.
    let unchecked: EchoResponse = client
        .client()
        .unary(&example::echo_service::ECHO, &request, None)
        .await
        .expect("unchecked");
    assert_eq!(unchecked.message, "");
}

#[tokio::test]
async fn nested_response_lacking_a_required_field_is_eresponse() {
    // `Pick` answers a Leaf; an empty one lacks `id`.
    let channel = canned(&required::forest::SERVICE, b"");
    let err = ForestClient::new(&channel)
        .pick(&Plain::default())
        .await
        .expect_err("missing id");
    assert_eq!(err.code(), Code::ERESPONSE);
    assert!(
        err.message()
            .ends_with("missing required field required.Leaf.id"),
        "{err}"
    );
    // `Plant` answers Plain, which needs no check: anything decodable goes.
    let tree = Tree::decode(full().encode_to_vec().as_slice()).expect("complete tree");
    let plain = ForestClient::new(&channel)
        .plant(&tree)
        .await
        .expect("nothing to check");
    assert_eq!(plain, Plain::default());
}

#[derive(Default)]
struct Grove {
    planted: Arc<AtomicU64>,
}

impl Forest for Grove {
    async fn plant(&self, _ctx: &Context, tree: &Tree, plain: &mut Plain) -> Result<(), Status> {
        self.planted.fetch_add(1, SeqCst);
        plain.text = Some(tree.name.clone());
        Ok(())
    }

    async fn pick(&self, _ctx: &Context, _request: &Plain, leaf: &mut Leaf) -> Result<(), Status> {
        leaf.id = 1;
        Ok(())
    }
}

fn forest_channel() -> (Channel, Arc<AtomicU64>) {
    let grove = Grove::default();
    let planted = Arc::clone(&grove.planted);
    let table = MethodTable::new()
        .with(ForestServer::new(grove))
        .expect("one service");
    (Channel::in_process(table), planted)
}

fn leaf(id: i32) -> LooseLeaf {
    LooseLeaf {
        id: Some(id),
        note: None,
    }
}

/// A tree with every required field, at every level, present — and an
/// unknown (to `Tree`) field 99 holding a leaf without its id.
fn full() -> LooseTree {
    LooseTree {
        name: Some("oak".into()),
        leaf: Some(leaf(1)),
        leaves: vec![leaf(2), leaf(3)],
        by_name: [("a".to_owned(), leaf(4))].into(),
        extra: Some(loose_tree::Extra { x: Some(5) }),
        child: Some(Box::new(LooseTree {
            name: Some("acorn".into()),
            ..LooseTree::default()
        })),
        tag: Some(LooseTag {
            key: Some("k".into()),
        }),
        choice: Some(loose_tree::Choice::Picked(leaf(6))),
        inner: Some(loose_tree::Inner { on: Some(true) }),
        plain: Some(Plain::default()),
        unknown_to_tree: Some(LooseLeaf::default()),
    }
}

/// Trees missing one required field each, and the field named.
fn broken_trees() -> Vec<(LooseTree, &'static str)> {
    let no_id = LooseLeaf::default;
    vec![
        (
            LooseTree {
                name: None,
                ..full()
            },
            "required.Tree.name",
        ),
        (
            LooseTree {
                leaf: Some(no_id()),
                ..full()
            },
            "required.Leaf.id",
        ),
        (
            LooseTree {
                leaves: vec![leaf(2), no_id()],
                ..full()
            },
            "required.Leaf.id",
        ),
        (
            LooseTree {
                by_name: [("a".to_owned(), no_id())].into(),
                ..full()
            },
            "required.Leaf.id",
        ),
        (
            LooseTree {
                extra: Some(loose_tree::Extra { x: None }),
                ..full()
            },
            "required.Tree.Extra.x",
        ),
        (
            LooseTree {
                child: Some(Box::default()),
                ..full()
            },
            "required.Tree.name",
        ),
        (
            LooseTree {
                child: Some(Box::new(LooseTree {
                    name: Some("acorn".into()),
                    leaves: vec![no_id()],
                    ..LooseTree::default()
                })),
                ..full()
            },
            "required.Leaf.id",
        ),
        (
            LooseTree {
                tag: Some(LooseTag { key: None }),
                ..full()
            },
            "required.dep.Tag.key",
        ),
        (
            LooseTree {
                choice: Some(loose_tree::Choice::Picked(no_id())),
                ..full()
            },
            "required.Leaf.id",
        ),
        (
            LooseTree {
                inner: Some(loose_tree::Inner { on: None }),
                ..full()
            },
            "required.Tree.Inner.on",
        ),
    ]
}

#[test]
fn generated_checks_find_nested_missing_fields() {
    assert_eq!(Tree::missing_required(&full().encode_to_vec()), None);
    for (tree, path) in broken_trees() {
        assert_eq!(
            Tree::missing_required(&tree.encode_to_vec()),
            Some(path),
            "{tree:?}"
        );
    }
    // Every type that needs a check has a table; sub-message types too.
    assert_eq!(Tree::REQUIRED.message, "required.Tree");
    assert_eq!(Leaf::REQUIRED.message, "required.Leaf");
    assert_eq!(
        required::tree::Extra::REQUIRED.message,
        "required.Tree.Extra"
    );
    assert_eq!(
        required::tree::Inner::REQUIRED.message,
        "required.Tree.Inner"
    );
    assert_eq!(required::dep::Tag::REQUIRED.message, "required.dep.Tag");
    assert_eq!(
        required::dep::Tag::missing_required(b""),
        Some("required.dep.Tag.key")
    );
}

#[tokio::test]
async fn nested_missing_fields_are_erequest_and_complete_trees_pass() {
    let (channel, planted) = forest_channel();
    let client = ForestClient::new(&channel);

    let complete = full().encode_to_vec();
    let reply = client
        .client()
        .unary_raw(&required::forest::PLANT, complete.clone().into())
        .await
        .expect("every required field present; field 99 skipped");
    assert_eq!(
        Plain::decode(reply.message).expect("plain"),
        Plain {
            text: Some("oak".into())
        }
    );
    let tree = Tree::decode(complete.as_slice()).expect("decodes");
    assert_eq!(tree.by_name["a"].id, 4);
    let reply = client.plant(&tree).await.expect("generated client");
    assert_eq!(reply.text.as_deref(), Some("oak"));
    assert_eq!(planted.load(SeqCst), 2);

    for (tree, path) in broken_trees() {
        let err = client
            .client()
            .unary_raw(&required::forest::PLANT, tree.encode_to_vec().into())
            .await
            .expect_err(path);
        assert_eq!(err.code(), Code::EREQUEST, "{path}");
        assert!(
            err.message()
                .starts_with("Fail to parse request=required.Tree"),
            "{err}"
        );
        assert!(
            err.message()
                .ends_with(&format!("missing required field {path}")),
            "{err}"
        );
    }
    assert_eq!(
        planted.load(SeqCst),
        2,
        "no broken tree reached the handler"
    );
}

#[tokio::test]
async fn truncated_and_garbage_requests_are_parse_errors() {
    let (channel, planted) = forest_channel();
    let client = keel::Client::new(&channel);
    for garbage in [
        &[0x0a, 0x05, b'a'][..],               // length past the end
        &[0xff, 0xff, 0xff],                   // a varint that never ends
        &[0x0a, 0x01, b'n', 0x0f],             // wire type 7
        &[0x0a, 0x01, b'n', 0x12, 0x02, 0x08], // sub-message cut inside
    ] {
        let err = client
            .unary_raw(&required::forest::PLANT, Bytes::copy_from_slice(garbage))
            .await
            .expect_err("not a message");
        assert_eq!(err.code(), Code::EREQUEST, "{garbage:?}");
        assert!(
            err.message()
                .starts_with("Fail to parse request=required.Tree"),
            "{err}"
        );
        assert!(err.message().contains("malformed message at byte"), "{err}");
    }

    // Every cut of a complete tree: parsed or refused, never a panic.
    let complete = full().encode_to_vec();
    for cut in 0..complete.len() {
        let result = client
            .unary_raw(
                &required::forest::PLANT,
                Bytes::copy_from_slice(&complete[..cut]),
            )
            .await;
        if let Err(err) = result {
            assert_eq!(err.code(), Code::EREQUEST, "cut at {cut}: {err}");
        }
    }
    assert!(planted.load(SeqCst) < complete.len() as u64);
}

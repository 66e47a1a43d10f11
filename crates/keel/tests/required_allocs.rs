//! The required-field check walks the encoded bytes and never allocates:
//! not when everything is present, not when a field is missing, not on
//! garbage. Its own test binary, so the counting allocator sees only it.

use std::hint::black_box;

use keel::codec::RequiredFields;
use prost::Message;

#[global_allocator]
static ALLOC: keel_alloc::CountingAlloc = keel_alloc::CountingAlloc::system();

mod example {
    keel::include_proto!("example");
}
mod required {
    keel::include_proto!("required");
    pub mod dep {
        keel::include_proto!("required.dep");
    }
}
use required::{LooseLeaf, LooseTag, LooseTree, Tree, loose_tree};

fn leaf(id: i32) -> LooseLeaf {
    LooseLeaf {
        id: Some(id),
        note: None,
    }
}

#[test]
fn the_check_allocates_nothing() {
    assert!(keel_alloc::is_installed());
    let complete = LooseTree {
        name: Some("oak".into()),
        leaf: Some(leaf(1)),
        leaves: (0..32).map(leaf).collect(),
        by_name: [("a".to_owned(), leaf(4)), ("b".to_owned(), leaf(5))].into(),
        extra: Some(loose_tree::Extra { x: Some(5) }),
        child: Some(Box::new(LooseTree {
            name: Some("acorn".into()),
            leaf: Some(leaf(7)),
            ..LooseTree::default()
        })),
        tag: Some(LooseTag {
            key: Some("k".into()),
        }),
        inner: Some(loose_tree::Inner { on: Some(true) }),
        unknown_to_tree: Some(LooseLeaf::default()),
        ..LooseTree::default()
    }
    .encode_to_vec();
    let mut missing = LooseTree::decode(complete.as_slice()).expect("decodes");
    missing.leaves.push(LooseLeaf::default());
    let missing = missing.encode_to_vec();
    let garbage = [0x0a, 0x01, b'n', 0x12, 0x02, 0x08];

    let d = keel_alloc::churn_thread(100, 100_000, |_| {
        assert_eq!(Tree::missing_required(black_box(&complete)), None);
        assert_eq!(
            Tree::missing_required(black_box(&missing)),
            Some("required.Leaf.id")
        );
        assert!(Tree::REQUIRED.check(black_box(&garbage)).is_err());
        assert_eq!(
            example::EchoRequest::missing_required(black_box(b"")),
            Some("example.EchoRequest.message")
        );
    });
    assert_eq!(d.allocs, 0, "the check allocated: {d:?}");
    assert_eq!(d.live_bytes, 0, "{d:?}");
}

//! The process-wide tracer's store takes the bounds set before its first
//! use, keeps to them, and refuses a change once in use. One test in this
//! binary: the tracer is made once per process.

mod support;

use keel::Channel;
use keel::rpcz::{Query, StoreConfig, set_store_config, tracer};
use support::{EchoServiceClient, request, start};

#[tokio::test]
async fn the_tracer_keeps_the_store_bounds_set_before_its_first_use() {
    let bounds = StoreConfig {
        max_trees: 3,
        max_bytes: 64 << 10,
        max_spans_per_tree: 4,
        max_annotation_bytes: 128,
    };
    set_store_config(bounds).expect("set before first use");
    let late = set_store_config(StoreConfig::DEFAULT).expect_err("already in use");
    assert_eq!(late.in_use, bounds);
    assert_eq!(tracer().store().config(), bounds);

    tracer().sampler().set_target(1_000_000);
    let f = start(|b| b).await;
    let channel = Channel::new(&f.addr()).expect("addr");
    let client = EchoServiceClient::new(&channel);
    for i in 0..20 {
        client
            .echo(&request(&format!("traced {i}")))
            .await
            .expect("call");
    }
    let store = tracer().store();
    let stats = store.stats();
    println!("{stats:?}");
    assert!(stats.submitted >= 20, "the calls were traced: {stats:?}");
    assert_eq!(store.len(), 3, "the store keeps max_trees trees");
    assert!(stats.evicted >= stats.submitted - 3, "{stats:?}");
    assert!(
        store.query(&Query::default()).len() <= 3,
        "queries see no more than kept"
    );
}

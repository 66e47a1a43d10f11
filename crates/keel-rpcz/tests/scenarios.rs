//! brpc's span bugs as scenarios, and the store's bounds and queries.
//!
//! Each test checks the tree that reached the store (span count, parent
//! ids) and that nothing is left behind: once the store is cleared, no span
//! and no tree is live in the pools. The tests share the process-wide pools,
//! so they run one at a time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use keel_rpcz::{
    Kind, Mark, Query, SPANS, SpanHandle, Store, StoreConfig, TREES, TraceContext, TreeView,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn store() -> Arc<Store> {
    Arc::new(Store::new(StoreConfig::default()))
}

/// Clears `store` and checks that every span and tree went back.
fn assert_nothing_left(store: &Store) {
    store.clear();
    assert_eq!(store.stats().trees, 0);
    assert_eq!(store.stats().bytes, 0);
    assert_eq!(
        SPANS.stats().live,
        0,
        "spans still live: {:?}",
        SPANS.stats()
    );
    assert_eq!(
        TREES.stats().live,
        0,
        "trees still live: {:?}",
        TREES.stats()
    );
}

/// Checks a tree: `n` spans, distinct ids, one trace, every child's parent
/// is in the tree, and `direct` children hang right under the root.
fn check_tree(t: &TreeView<'_>, n: usize, direct: usize) {
    let root = t.root();
    assert_eq!(t.len(), n);
    let ids: HashSet<u64> = t.spans().map(|s| s.span_id()).collect();
    assert_eq!(ids.len(), n, "span ids are distinct");
    for s in t.children() {
        assert_eq!(s.trace_id(), root.trace_id());
        assert!(ids.contains(&s.parent_span_id()), "parent in tree");
        assert_eq!(s.kind(), Kind::Client);
    }
    let under_root = t
        .children()
        .iter()
        .filter(|s| s.parent_span_id() == root.span_id())
        .count();
    assert_eq!(under_root, direct);
}

/// brpc #630 / #1010: a client span (an async call nobody awaited) finishes
/// after its server span. The tree must wait for it, not free it.
#[test]
fn child_finishing_after_its_server_span() {
    let _g = serial();
    let store = store();
    let server = SpanHandle::server(&store, "test.Svc.Slow", None, Instant::now());
    let trace = server.context().unwrap().trace_id;
    let child = server.child("test.Backend.Async");
    let grandchild = child.child("test.Deeper.Call");
    child.annotate("sent, not awaited");
    server.finish(0);
    assert!(store.is_empty(), "tree waits for its children");
    assert_eq!(SPANS.stats().live, 3);

    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(5));
        child.annotate("response arrived after the server replied");
        child.finish(0);
        grandchild // outlives even its parent
    });
    let grandchild = t.join().unwrap();
    assert!(store.is_empty());
    grandchild.finish(7);

    let stats = store.stats();
    assert_eq!(stats.trees, 1);
    store
        .with_tree(trace, |t| {
            check_tree(&t, 3, 1);
            let child = t
                .children()
                .iter()
                .find(|s| s.method() == "test.Backend.Async")
                .unwrap();
            assert_eq!(child.parent_span_id(), t.root().span_id());
            assert_eq!(child.annotations().count(), 2);
            let gc = t
                .children()
                .iter()
                .find(|s| s.method() == "test.Deeper.Call")
                .unwrap();
            assert_eq!(gc.parent_span_id(), child.span_id());
            assert_eq!(gc.status(), 7);
        })
        .expect("tree stored");
    let s = store.query(&Query::default());
    assert!(s[0].error, "a failed child makes the tree an error tree");
    assert_eq!(s[0].status, 0);
    assert_nothing_left(&store);
}

/// brpc #2315: many client spans finishing at the same time on two threads
/// while the server span finishes too. No child is lost, none freed twice.
#[test]
fn a_thousand_children_finishing_concurrently_on_two_threads() {
    let _g = serial();
    let store = Arc::new(Store::new(StoreConfig {
        max_spans_per_tree: 1_001,
        ..StoreConfig::default()
    }));
    for round in 0..20 {
        let server = SpanHandle::server(&store, "test.Svc.FanOut", None, Instant::now());
        let trace = server.context().unwrap().trace_id;
        let root_id = server.context().unwrap().span_id;
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..1_000 {
            let c = server.child("test.Backend.Shard");
            c.set_request_size(i);
            if i % 2 == 0 { a.push(c) } else { b.push(c) }
        }
        let go = Arc::new(Barrier::new(3));
        let spawn = |spans: Vec<SpanHandle>, go: Arc<Barrier>| {
            thread::spawn(move || {
                go.wait();
                for c in spans {
                    c.annotate("done");
                    c.finish(0);
                }
            })
        };
        let ta = spawn(a, go.clone());
        let tb = spawn(b, go.clone());
        go.wait();
        // The root finishes in the middle of its children (or before, or after).
        if round % 2 == 0 {
            server.finish(0);
        } else {
            thread::yield_now();
            server.finish(0);
        }
        ta.join().unwrap();
        tb.join().unwrap();

        store
            .with_tree(trace, |t| {
                check_tree(&t, 1_001, 1_000);
                assert_eq!(t.root().span_id(), root_id);
                let sizes: HashSet<u64> = t.children().iter().map(|s| s.request_size()).collect();
                assert_eq!(sizes.len(), 1_000, "every child arrived once");
            })
            .expect("tree stored");
    }
    assert_eq!(store.stats().trees, 20);
    assert_nothing_left(&store);
}

/// brpc #3420: a client span with no server span above it is the root of
/// its own tree (and may have children of its own).
#[test]
fn client_span_without_a_parent() {
    let _g = serial();
    let store = store();
    let client = SpanHandle::client_root(&store, "test.Backend.Get", Instant::now());
    let ctx = client.context().unwrap();
    assert_eq!(ctx.parent_span_id, 0);
    let retry = client.child("test.Backend.Get");
    retry.finish(0);
    client.finish(0);
    store
        .with_tree(ctx.trace_id, |t| {
            check_tree(&t, 2, 1);
            assert_eq!(t.root().kind(), Kind::Client);
            assert_eq!(t.root().parent_span_id(), 0);
        })
        .expect("tree stored");
    assert_nothing_left(&store);
}

/// A request that carries a trace joins it: same trace id, the caller's span
/// as parent; a fresh span id.
#[test]
fn incoming_context_is_continued() {
    let _g = serial();
    let store = store();
    let incoming = TraceContext {
        trace_id: 0xabc,
        span_id: 0xdef,
        parent_span_id: 0x123,
    };
    let server = SpanHandle::server(&store, "test.Svc.M", Some(incoming), Instant::now());
    let ctx = server.context().unwrap();
    assert_eq!(ctx.trace_id, 0xabc);
    assert_eq!(ctx.parent_span_id, 0xdef);
    assert!(ctx.span_id != 0 && ctx.span_id != 0xdef);
    let child = server.child("test.B.M").context().unwrap(); // dropped: abandoned
    assert_eq!(child.trace_id, 0xabc);
    assert_eq!(child.parent_span_id, ctx.span_id);
    drop(server); // early return: finishes itself
    store
        .with_tree(0xabc, |t| {
            check_tree(&t, 2, 1);
            assert!(t.root().abandoned());
            assert!(t.children()[0].abandoned());
        })
        .expect("tree stored");
    assert_nothing_left(&store);
}

/// Not sampled: nothing is recorded, nothing is taken from the pools.
#[test]
fn unsampled_records_nothing() {
    let _g = serial();
    let before = SPANS.stats().gets;
    let none = SpanHandle::none();
    none.annotate("x");
    none.mark(Mark::Sent);
    let child = none.child("test.B.M");
    assert!(!child.is_sampled() && child.context().is_none());
    child.finish(0);
    none.finish(0);
    assert_eq!(SPANS.stats().gets, before);
}

/// Finishes a one-span tree with a given latency, status and method.
fn tree(store: &Arc<Store>, method: &'static str, latency_us: u64, status: i32) -> u64 {
    let t0 = Instant::now();
    let s = SpanHandle::server(store, method, None, t0);
    let id = s.context().unwrap().trace_id;
    s.finish_at(status, t0 + Duration::from_micros(latency_us));
    id
}

#[test]
fn store_count_bound_evicts_oldest_first() {
    let _g = serial();
    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 3,
        max_bytes: usize::MAX,
        ..StoreConfig::default()
    }));
    let ids: Vec<u64> = (0..5).map(|i| tree(&store, "test.S.M", i, 0)).collect();
    let got: Vec<u64> = store
        .query(&Query::default())
        .iter()
        .map(|s| s.trace_id)
        .collect();
    assert_eq!(
        got,
        vec![ids[4], ids[3], ids[2]],
        "newest first, oldest gone"
    );
    let st = store.stats();
    assert_eq!((st.trees, st.submitted, st.evicted), (3, 5, 2));
    assert_eq!(SPANS.stats().live, 3, "evicted trees returned their spans");
    assert!(store.with_tree(ids[0], |_| ()).is_none());
    assert_nothing_left(&store);
}

#[test]
fn store_byte_bound_evicts_oldest_first() {
    let _g = serial();
    let probe = store();
    tree(&probe, "test.S.M", 1, 0);
    let one = probe.query(&Query::default())[0].bytes;
    probe.clear();

    let store = Arc::new(Store::new(StoreConfig {
        max_trees: 100,
        max_bytes: one * 5 / 2,
        ..StoreConfig::default()
    }));
    let ids: Vec<u64> = (0..6).map(|i| tree(&store, "test.S.M", i, 0)).collect();
    let got: Vec<u64> = store
        .query(&Query::default())
        .iter()
        .map(|s| s.trace_id)
        .collect();
    // A tree's size depends on the capacity its pooled spans kept from
    // earlier use, so how many fit varies a little; what must hold is that
    // the kept ones are the newest, newest first, within the byte budget.
    let k = got.len();
    assert!(
        (1..6).contains(&k),
        "kept {k} of 6 within ~2.5 trees' bytes"
    );
    let newest: Vec<u64> = ids[6 - k..].iter().rev().copied().collect();
    assert_eq!(got, newest, "oldest evicted first");
    assert!(store.stats().bytes <= one * 5 / 2);

    // A tree bigger than the whole budget is refused, not kept.
    let small = Arc::new(Store::new(StoreConfig {
        max_trees: 100,
        max_bytes: 64, // smaller than any tree's fixed part
        ..StoreConfig::default()
    }));
    tree(&small, "test.S.M", 1, 0);
    assert_eq!(small.stats().refused, 1);
    assert!(small.is_empty());
    assert_nothing_left(&store);
}

#[test]
fn queries_filter_and_order_newest_first() {
    let _g = serial();
    let store = store();
    let a = tree(&store, "test.S.Fast", 10, 0);
    let b = tree(&store, "test.S.Slow", 5_000, 0);
    let c = tree(&store, "test.S.Fast", 20, 2);
    let d = tree(&store, "test.S.Slow", 9_000, 3);
    let ids = |q: Query<'_>| -> Vec<u64> { store.query(&q).iter().map(|s| s.trace_id).collect() };

    assert_eq!(ids(Query::default()), vec![d, c, b, a]);
    assert_eq!(
        ids(Query {
            min_latency: Some(Duration::from_millis(1)),
            ..Query::default()
        }),
        vec![d, b]
    );
    assert_eq!(
        ids(Query {
            errors_only: true,
            ..Query::default()
        }),
        vec![d, c]
    );
    assert_eq!(
        ids(Query {
            method: Some("test.S.Fast"),
            ..Query::default()
        }),
        vec![c, a]
    );
    assert_eq!(
        ids(Query {
            trace_id: Some(b),
            ..Query::default()
        }),
        vec![b]
    );
    assert_eq!(
        ids(Query {
            limit: 2,
            ..Query::default()
        }),
        vec![d, c]
    );
    let s = store.query(&Query {
        trace_id: Some(d),
        ..Query::default()
    })[0];
    assert_eq!(
        (s.status, s.latency, s.spans),
        (3, Duration::from_millis(9), 1)
    );
    assert_nothing_left(&store);
}

/// A tree with known times renders to known text and JSON.
#[test]
fn renders_text_and_json() {
    let _g = serial();
    let store = store();
    let us = Duration::from_micros;
    let t0 = Instant::now();
    let server = SpanHandle::server(&store, "example.EchoService.Echo", None, t0);
    server.set_protocol("baidu_std");
    server.set_peer("10.0.0.1:8000".parse::<SocketAddr>().unwrap());
    server.set_request_size(12);
    server.set_response_size(34);
    server.mark_at(Mark::HandlerStart, t0 + us(100));
    server.annotate_at(t0 + us(120), "cache miss");
    let child = server.child_at("example.Backend.Get", t0 + us(150));
    child.mark_at(Mark::Sent, t0 + us(160));
    child.annotate_at(t0 + us(200), "say \"hi\"\nto \\ all");
    child.mark_at(Mark::ResponseReceived, t0 + us(450));
    server.mark_at(Mark::HandlerEnd, t0 + us(480));
    server.mark_at(Mark::Sent, t0 + us(500));
    let (s, c) = (server.context().unwrap(), child.context().unwrap());
    child.finish_at(0, t0 + us(450));
    server.finish_at(0, t0 + us(500));

    let text = store.render_text(s.trace_id).unwrap();
    let want = format!(
        "trace {t:016x}\n\
         server example.EchoService.Echo span={s:016x} parent=0000000000000000 status=0 latency=500us protocol=baidu_std peer=10.0.0.1:8000 request=12B response=34B\n\
         \x20 +0us [received]\n\
         \x20 +100us [handler_start]\n\
         \x20 +120us cache miss\n\
         \x20 +480us [handler_end]\n\
         \x20 +500us [sent]\n\
         \x20 client example.Backend.Get span={c:016x} parent={s:016x} status=0 latency=300us request=0B response=0B\n\
         \x20   +150us [start]\n\
         \x20   +160us [sent]\n\
         \x20   +200us say \"hi\"\n\
         \x20     to \\ all\n\
         \x20   +450us [response_received]\n",
        t = s.trace_id,
        s = s.span_id,
        c = c.span_id,
    );
    assert_eq!(text, want);

    let json = store.render_json(s.trace_id).unwrap();
    let want = format!(
        concat!(
            r#"{{"trace_id":"{t:016x}","dropped_spans":0,"spans":["#,
            r#"{{"span_id":"{s:016x}","parent_span_id":"0000000000000000","depth":0,"kind":"server","method":"example.EchoService.Echo","protocol":"baidu_std","peer":"10.0.0.1:8000","status":0,"request_size":12,"response_size":34,"start_us":0,"latency_us":500,"abandoned":false,"marks":{{"handler_start":100,"handler_end":480,"sent":500}},"annotations":[{{"at_us":120,"text":"cache miss"}}]}},"#,
            r#"{{"span_id":"{c:016x}","parent_span_id":"{s:016x}","depth":1,"kind":"client","method":"example.Backend.Get","protocol":"","peer":null,"status":0,"request_size":0,"response_size":0,"start_us":150,"latency_us":300,"abandoned":false,"marks":{{"sent":160,"response_received":450}},"annotations":[{{"at_us":200,"text":"say \"hi\"\nto \\ all"}}]}}"#,
            r#"]}}"#
        ),
        t = s.trace_id,
        s = s.span_id,
        c = c.span_id,
    );
    assert_eq!(json, want);
    assert_json_shape(&json);
    assert_nothing_left(&store);
}

/// A small structural check: braces and brackets balance outside strings,
/// strings close, escapes are complete.
fn assert_json_shape(json: &str) {
    let mut stack = Vec::new();
    let mut in_str = false;
    let mut chars = json.chars();
    while let Some(ch) = chars.next() {
        if in_str {
            match ch {
                '\\' => assert!(chars.next().is_some(), "dangling escape"),
                '"' => in_str = false,
                c => assert!(c as u32 >= 0x20, "raw control char in string"),
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => stack.push(ch),
            '}' => assert_eq!(stack.pop(), Some('{')),
            ']' => assert_eq!(stack.pop(), Some('[')),
            _ => {}
        }
    }
    assert!(!in_str && stack.is_empty());
}

/// A span's annotation buffer keeps its capacity when the span returns to
/// the pool: a span that once needed a big buffer lends it to the next user.
#[test]
fn annotation_capacity_survives_reuse() {
    let _g = serial();
    let store = store();
    let big = "x".repeat(1_000);
    let s = SpanHandle::server(&store, "test.S.Big", None, Instant::now());
    s.annotate(&big);
    s.finish(0);
    store.clear(); // the span goes back to this thread's cache (LIFO)
    let s = SpanHandle::server(&store, "test.S.Next", None, Instant::now());
    let trace = s.context().unwrap().trace_id;
    s.finish(0);
    store
        .with_tree(trace, |t| {
            assert_eq!(t.root().annotations().count(), 0, "reset cleared it");
            assert!(t.root().annotation_capacity() >= 1_000, "capacity kept");
        })
        .expect("tree stored");
    assert_nothing_left(&store);
}

/// A tree keeps at most `max_spans_per_tree` spans and a span at most
/// `max_annotation_bytes` of annotations; what is dropped is counted, shown
/// in the summary and in both renderings, and goes back to the pool at once.
#[test]
fn limits_count_what_they_drop_and_render_it() {
    let _g = serial();
    let store = Arc::new(Store::new(StoreConfig {
        max_spans_per_tree: 3,
        max_annotation_bytes: 40,
        ..StoreConfig::default()
    }));
    let us = Duration::from_micros;
    let t0 = Instant::now();
    let server = SpanHandle::server(&store, "test.S.Limits", None, t0);
    let trace = server.context().unwrap().trace_id;
    // 12 + 10 bytes; then 12 + 6 of 16 bytes (cut); then nothing of 4.
    server.annotate_at(t0 + us(10), "0123456789");
    server.annotate_at(t0 + us(20), "abcdefghijklmnop");
    server.annotate_at(t0 + us(30), "gone");
    for (i, status) in [0, 0, 5, 0].into_iter().enumerate() {
        let c = server.child_at("test.B.Call", t0 + us(100 * (i as u64 + 1)));
        c.set_request_size(i as u64);
        c.finish_at(status, t0 + us(100 * (i as u64 + 1) + 50));
        // The first two are kept; the others went straight back to the pool.
        let kept = (i + 1).min(2) as u64;
        assert_eq!(SPANS.stats().live, 1 + kept, "child {i}");
    }
    server.finish_at(0, t0 + us(900));

    let summary = store.query(&Query::default())[0];
    assert_eq!((summary.spans, summary.dropped_spans), (3, 2));
    assert!(
        summary.error,
        "a dropped child's failure still marks the tree"
    );
    assert!(summary.bytes <= store.config().max_tree_bytes());
    store
        .with_tree(trace, |t| {
            assert_eq!(t.len(), 3);
            assert_eq!(t.dropped_spans(), 2);
            let sizes: Vec<u64> = t.children().iter().map(|s| s.request_size()).collect();
            assert_eq!(sizes, vec![0, 1], "the first children to finish are kept");
            let root = t.root();
            let notes: Vec<&str> = root.annotations().map(|(_, n)| n).collect();
            assert_eq!(notes, vec!["0123456789", "abcdef"]);
            assert_eq!(root.annotations_dropped(), 2);
            assert_eq!(root.annotation_bytes_dropped(), 10 + 4);
            assert_eq!(root.annotations_cut_at(), Some(us(20)));
            // The buffer (fresh, or reused with what it kept) did not grow
            // for a 40-byte limit.
            assert!(root.annotation_capacity() <= keel_rpcz::ANNOTATION_BYTES_KEPT);
        })
        .expect("tree stored");

    let text = store.render_text(trace).unwrap();
    assert!(
        text.starts_with(&format!(
            "trace {trace:016x} dropped_spans=2 (the tree keeps 3 spans)\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "  +20us abcdef\n  +20us [annotations truncated: 2 cut or dropped, 14 bytes not kept]\n"
        ),
        "{text}"
    );
    let json = store.render_json(trace).unwrap();
    assert!(json.contains(r#""dropped_spans":2,"#), "{json}");
    assert!(
        json.contains(r#""annotations_truncated":{"at_us":20,"dropped":2,"bytes":14}"#),
        "{json}"
    );
    assert_json_shape(&json);
    assert_nothing_left(&store);
}

//! A proto3 package with two services, served from one method table: routing
//! by (service, method), per-method channel stats, concurrent calls.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use keel::server::MethodTable;
use keel::{Channel, Code, Context, Status};

mod greeting {
    keel::include_proto!("keel.greeter");
}
use greeting::{
    Count, Counter, CounterClient, CounterServer, Empty, Greeter, GreeterClient, GreeterServer,
    HelloReply, HelloRequest,
};

struct Polite;

impl Greeter for Polite {
    async fn say_hello(
        &self,
        _: &Context,
        req: &HelloRequest,
        response: &mut HelloReply,
    ) -> Result<(), Status> {
        if req.name.is_empty() {
            return Err(Status::bad_request("name is empty"));
        }
        response.message = format!("hello, {}", req.name);
        Ok(())
    }

    async fn say_goodbye(
        &self,
        _: &Context,
        req: &HelloRequest,
        response: &mut HelloReply,
    ) -> Result<(), Status> {
        response.message = format!("goodbye, {}", req.name);
        Ok(())
    }
}

#[derive(Default)]
struct Tally(AtomicU64);

impl Counter for Tally {
    async fn increment(&self, _: &Context, _: &Empty, count: &mut Count) -> Result<(), Status> {
        count.value = self.0.fetch_add(1, SeqCst) + 1;
        Ok(())
    }

    async fn get(&self, _: &Context, _: &Empty, count: &mut Count) -> Result<(), Status> {
        count.value = self.0.load(SeqCst);
        Ok(())
    }
}

fn channel() -> Channel {
    let mut table = MethodTable::new();
    table
        .add(GreeterServer::new(Polite))
        .expect("greeter")
        .add(CounterServer::new(Tally::default()))
        .expect("counter");
    assert_eq!(table.len(), 2);
    assert_eq!(table.method_count(), 4);
    Channel::in_process(table)
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn two_services_route_by_name() {
    let channel = channel();
    let greeter = GreeterClient::new(&channel);
    let counter = CounterClient::new(&channel);

    assert_eq!(
        greeter.say_hello(&hello("ann")).await.expect("ok").message,
        "hello, ann"
    );
    assert_eq!(
        greeter.say_goodbye(&hello("bo")).await.expect("ok").message,
        "goodbye, bo"
    );
    assert_eq!(counter.increment(&Empty {}).await.expect("ok").value, 1);
    assert_eq!(counter.increment(&Empty {}).await.expect("ok").value, 2);
    assert_eq!(counter.get(&Empty {}).await.expect("ok").value, 2);

    let err = greeter.say_hello(&hello("")).await.expect_err("empty name");
    assert_eq!(err.code(), Code::EREQUEST);
    assert_eq!(err.message(), "name is empty");
}

#[tokio::test]
async fn method_cache_has_one_entry_per_method_called() {
    let channel = channel();
    assert_eq!(channel.method_stats_len(), 0);
    let counter = CounterClient::new(&channel);
    for _ in 0..10 {
        counter.increment(&Empty {}).await.expect("ok");
    }
    assert_eq!(channel.method_stats_len(), 1);
    GreeterClient::new(&channel)
        .say_hello(&hello("x"))
        .await
        .expect("ok");
    counter.get(&Empty {}).await.expect("ok");
    assert_eq!(channel.method_stats_len(), 3);

    let stats = channel.method_stats();
    let increment = stats
        .iter()
        .find(|s| s.method.is(&greeting::counter::INCREMENT))
        .expect("increment counted");
    assert_eq!((increment.calls, increment.errors), (10, 0));
    assert!(
        stats
            .iter()
            .all(|s| !s.method.is(&greeting::greeter::SAY_GOODBYE)),
        "never called, never cached"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_calls_share_the_channel() {
    let channel = channel();
    let counter = CounterClient::new(&channel);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let counter = counter.clone();
        tasks.spawn(async move { counter.increment(&Empty {}).await });
    }
    let mut values: Vec<u64> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        values.push(joined.expect("task ran").expect("call ok").value);
    }
    values.sort_unstable();
    assert_eq!(values, (1..=64).collect::<Vec<u64>>());
    assert_eq!(counter.get(&Empty {}).await.expect("ok").value, 64);
}

#[test]
fn descriptors_are_statics_in_declaration_order() {
    let service = &greeting::counter::SERVICE;
    assert_eq!(service.name, "keel.greeter.Counter");
    let names: Vec<&str> = service.methods.iter().map(|m| m.method).collect();
    assert_eq!(names, ["Increment", "Get"]);
    assert!(service.methods[1].is(&greeting::counter::GET));
    assert_eq!(greeting::counter::GET.path, "/keel.greeter.Counter/Get");
    assert_eq!(greeting::counter::GET.index, 1);
    assert_eq!(greeting::counter::GET.request_type, "keel.greeter.Empty");
}

//! The well-known types through generated code, with keel (and prost) as
//! this crate's only protobuf dependencies: `Timestamp`, `Duration`, `Any`
//! and `Empty` (which prost maps to `()`) round-trip over TCP.

use std::sync::Mutex;

use keel::prost_types::{Any, Duration, Timestamp};
use keel::{Channel, Context, Server, Status};
use keel_examples::events::{Clock, ClockClient, ClockServer, Event};

/// Keeps the last event.
#[derive(Default)]
struct Recorder {
    last: Mutex<Event>,
}

impl Clock for Recorder {
    async fn last(
        &self,
        _ctx: &Context,
        _request: &(),
        response: &mut Event,
    ) -> Result<(), Status> {
        response.clone_from(&self.last.lock().expect("not poisoned"));
        Ok(())
    }

    async fn record(
        &self,
        _ctx: &Context,
        request: &Event,
        response: &mut Duration,
    ) -> Result<(), Status> {
        let mut last = self.last.lock().expect("not poisoned");
        let seconds = |event: &Event| event.at.map_or(0, |at| at.seconds);
        *response = Duration {
            seconds: seconds(request) - seconds(&last),
            nanos: 0,
        };
        last.clone_from(request);
        Ok(())
    }
}

#[tokio::test]
async fn well_known_types_round_trip_over_tcp() {
    let server = Server::builder()
        .add_service(ClockServer::new(Recorder::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&server.local_addr().to_string()).expect("address");
    let client = ClockClient::new(&channel);

    let empty = client.last(&()).await.expect("last before any");
    assert_eq!(empty, Event::default());

    let event = Event {
        name: "deploy".into(),
        at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        took: Some(Duration {
            seconds: 3,
            nanos: 500_000_000,
        }),
        detail: Some(Any {
            type_url: "type.googleapis.com/events.Event".into(),
            value: vec![1, 2, 3],
        }),
        history: vec![Timestamp {
            seconds: -1,
            nanos: 999_999_999,
        }],
    };
    let gap = client.record(&event).await.expect("record");
    assert_eq!(
        gap,
        Duration {
            seconds: 1_700_000_000,
            nanos: 0
        }
    );
    let last = client.last(&()).await.expect("last");
    assert_eq!(last, event);

    server.shutdown(std::time::Duration::from_secs(1)).await;
}

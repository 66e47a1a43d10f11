//! The builtin services every Keel server serves, called over gRPC (TCP,
//! loopback) with Keel's own client: health checking (`Check`, `Watch`
//! following the reporter and graceful shutdown) and server reflection
//! (v1 and v1alpha: listing services, files by symbol and by name with
//! their imports, errors for what is unknown).

use std::time::Duration;

use keel::builtin::health::v1::health_check_response::ServingStatus as Wire;
use keel::builtin::health::v1::{HealthCheckRequest, HealthClient};
use keel::builtin::reflection::v1::server_reflection_request::MessageRequest;
use keel::builtin::reflection::v1::server_reflection_response::MessageResponse;
use keel::builtin::reflection::v1::{
    ExtensionRequest, ServerReflectionClient, ServerReflectionRequest, ServerReflectionResponse,
};
use keel::builtin::reflection::v1alpha;
use keel::prost_types::FileDescriptorProto;
use keel::server::ServingStatus;
use keel::streaming::{RequestSink, Streaming};
use keel::{Channel, Code, Context, Server, Status};
use prost::Message as _;

mod example {
    keel::include_proto!("example");
}
mod required {
    keel::include_proto!("required");
    pub mod dep {
        keel::include_proto!("required.dep");
    }
}
use example::{EchoRequest, EchoResponse, EchoService, EchoServiceServer};

struct Echo;

impl EchoService for Echo {
    async fn echo(
        &self,
        _ctx: &Context,
        req: &EchoRequest,
        resp: &mut EchoResponse,
    ) -> Result<(), Status> {
        resp.message.clone_from(&req.message);
        Ok(())
    }
}

/// A service whose file imports another package's.
struct Forest;

impl required::Forest for Forest {
    async fn plant(
        &self,
        _ctx: &Context,
        _req: &required::Tree,
        _resp: &mut required::Plain,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn pick(
        &self,
        _ctx: &Context,
        _req: &required::Plain,
        _resp: &mut required::Leaf,
    ) -> Result<(), Status> {
        Ok(())
    }
}

async fn server() -> (Server, Channel) {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .add_service(required::ForestServer::new(Forest))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("a gRPC address");
    (server, channel)
}

fn check_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

/// The next status on a Watch stream, within a few seconds.
async fn next_status(
    watch: &mut Streaming<keel::builtin::health::v1::HealthCheckResponse>,
) -> Wire {
    let message = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status in time")
        .expect("the stream goes on")
        .expect("a message, not the end");
    message.status()
}

#[tokio::test]
async fn check_answers_for_the_server_its_services_and_unknown_ones() {
    let (server, channel) = server().await;
    let health = HealthClient::new(&channel);
    for service in [
        "",
        "example.EchoService",
        "required.Forest",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        let reply = health.check(&check_request(service)).await.expect("check");
        assert_eq!(reply.status(), Wire::Serving, "{service:?}");
    }
    let err = health
        .check(&check_request("example.Nope"))
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    server
        .health()
        .set("example.EchoService", ServingStatus::NotServing);
    let reply = health
        .check(&check_request("example.EchoService"))
        .await
        .expect("check");
    assert_eq!(reply.status(), Wire::NotServing);
    // A name no service has can be reported too.
    server.health().set("db", ServingStatus::Serving);
    let reply = health.check(&check_request("db")).await.expect("check");
    assert_eq!(reply.status(), Wire::Serving);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn check_answers_over_baidu_std_too() {
    let (server, _) = server().await;
    let channel = Channel::new(&server.local_addr().to_string()).expect("an address");
    let health = HealthClient::new(&channel);
    let reply = health.check(&check_request("")).await.expect("check");
    assert_eq!(reply.status(), Wire::Serving);
    let err = health
        .check(&check_request("example.Nope"))
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn watch_follows_the_reporter() {
    let (server, channel) = server().await;
    let health = HealthClient::new(&channel);

    let mut echo = health
        .watch(&check_request("example.EchoService"))
        .await
        .expect("watch");
    assert_eq!(next_status(&mut echo).await, Wire::Serving);
    server
        .health()
        .set("example.EchoService", ServingStatus::NotServing);
    assert_eq!(next_status(&mut echo).await, Wire::NotServing);
    server
        .health()
        .set("example.EchoService", ServingStatus::Serving);
    assert_eq!(next_status(&mut echo).await, Wire::Serving);

    // Unknown: said so, and the stream stays open until the status is set.
    let mut later = health.watch(&check_request("cache")).await.expect("watch");
    assert_eq!(next_status(&mut later).await, Wire::ServiceUnknown);
    server.health().set("cache", ServingStatus::Serving);
    assert_eq!(next_status(&mut later).await, Wire::Serving);
    drop((echo, later));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn watch_sees_not_serving_when_shutdown_starts_and_ends() {
    let (server, channel) = server().await;
    let health = HealthClient::new(&channel);
    let mut whole = health.watch(&check_request("")).await.expect("watch");
    let mut echo = health
        .watch(&check_request("example.EchoService"))
        .await
        .expect("watch");
    assert_eq!(next_status(&mut whole).await, Wire::Serving);
    assert_eq!(next_status(&mut echo).await, Wire::Serving);

    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    assert_eq!(next_status(&mut whole).await, Wire::NotServing);
    assert_eq!(next_status(&mut echo).await, Wire::NotServing);
    // The streams end, so they do not hold the shutdown to its deadline.
    for watch in [&mut whole, &mut echo] {
        let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the end in time");
        assert!(matches!(end, Ok(None)), "{end:?}");
    }
    let cut = tokio::time::timeout(Duration::from_secs(9), shutdown)
        .await
        .expect("shutdown before its deadline")
        .expect("shutdown task");
    assert_eq!(cut, 0, "no connection cut");
}

#[tokio::test]
async fn without_builtin_services_there_is_no_health_nor_reflection() {
    let server = Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .without_builtin_services()
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let channel = Channel::new(&format!("grpc://{}", server.local_addr())).expect("a gRPC address");
    let err = HealthClient::new(&channel)
        .check(&check_request(""))
        .await
        .expect_err("no health service");
    assert_eq!(err.code(), Code::ENOSERVICE, "{err}");
    server.shutdown(Duration::from_secs(5)).await;
}

/// One reflection stream: send a request, read its answer.
struct Reflection {
    requests: RequestSink<ServerReflectionRequest>,
    responses: Streaming<ServerReflectionResponse>,
}

impl Reflection {
    async fn open(channel: &Channel) -> Reflection {
        let (requests, responses) = ServerReflectionClient::new(channel)
            .server_reflection_info()
            .await
            .expect("open the stream");
        Reflection {
            requests,
            responses,
        }
    }

    async fn ask(&mut self, request: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: "localhost".into(),
            message_request: Some(request),
        };
        self.requests.send(&request).await.expect("send");
        let response = tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("an answer in time")
            .expect("the stream goes on")
            .expect("an answer");
        assert_eq!(response.valid_host, "localhost");
        assert_eq!(response.original_request.as_ref(), Some(&request));
        response.message_response.expect("an answer set")
    }

    async fn services(&mut self) -> Vec<String> {
        match self.ask(MessageRequest::ListServices(String::new())).await {
            MessageResponse::ListServicesResponse(list) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("not a list: {other:?}"),
        }
    }

    async fn files(&mut self, request: MessageRequest) -> Vec<FileDescriptorProto> {
        match self.ask(request).await {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|bytes| FileDescriptorProto::decode(&bytes[..]).expect("a file"))
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    async fn error(&mut self, request: MessageRequest) -> (i32, String) {
        match self.ask(request).await {
            MessageResponse::ErrorResponse(e) => (e.error_code, e.error_message),
            other => panic!("not an error: {other:?}"),
        }
    }
}

fn names(files: &[FileDescriptorProto]) -> Vec<&str> {
    files.iter().map(|f| f.name()).collect()
}

const SERVICES: [&str; 5] = [
    "example.EchoService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "required.Forest",
];

#[tokio::test]
async fn reflection_lists_services_and_describes_them() {
    let (server, channel) = server().await;
    let mut reflection = Reflection::open(&channel).await;
    assert_eq!(reflection.services().await, SERVICES);

    // A method: its file, which a reflection client decodes to find the
    // service, the method and its message types.
    let files = reflection
        .files(MessageRequest::FileContainingSymbol(
            "example.EchoService.Echo".into(),
        ))
        .await;
    assert_eq!(names(&files), ["echo.proto"]);
    let echo = &files[0];
    assert_eq!(echo.package(), "example");
    let service = &echo.service[0];
    assert_eq!(service.name(), "EchoService");
    assert_eq!(service.method[0].name(), "Echo");
    assert_eq!(service.method[0].input_type(), ".example.EchoRequest");
    let messages: Vec<&str> = echo.message_type.iter().map(|m| m.name()).collect();
    assert_eq!(messages, ["EchoRequest", "EchoResponse"]);

    // A message: the same file, sent again (the file asked for always is).
    let files = reflection
        .files(MessageRequest::FileContainingSymbol(
            "example.EchoRequest".into(),
        ))
        .await;
    assert_eq!(names(&files), ["echo.proto"]);
    assert_eq!(files[0].message_type[0].field[0].name(), "message");

    // A file importing another package's: both, then the import no more.
    let files = reflection
        .files(MessageRequest::FileContainingSymbol(
            "required.Forest".into(),
        ))
        .await;
    assert_eq!(names(&files), ["required.proto", "required_dep.proto"]);
    assert_eq!(files[1].package(), "required.dep");
    let files = reflection
        .files(MessageRequest::FileByFilename("required.proto".into()))
        .await;
    assert_eq!(names(&files), ["required.proto"]);
    let files = reflection
        .files(MessageRequest::FileContainingSymbol(
            "required.dep.Tag".into(),
        ))
        .await;
    assert_eq!(names(&files), ["required_dep.proto"]);

    // The builtin services describe themselves too.
    let files = reflection
        .files(MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health.Watch".into(),
        ))
        .await;
    assert_eq!(names(&files), ["grpc/health/v1/health.proto"]);

    // What is not known: NOT_FOUND answers, and the stream goes on.
    let (code, message) = reflection
        .error(MessageRequest::FileContainingSymbol(
            "example.NoSuchThing".into(),
        ))
        .await;
    assert_eq!(code, Code::NotFound.value());
    assert!(message.contains("example.NoSuchThing"), "{message}");
    let (code, _) = reflection
        .error(MessageRequest::FileByFilename("nope.proto".into()))
        .await;
    assert_eq!(code, Code::NotFound.value());
    let (code, _) = reflection
        .error(MessageRequest::FileContainingExtension(ExtensionRequest {
            containing_type: "example.EchoRequest".into(),
            extension_number: 100,
        }))
        .await;
    assert_eq!(code, Code::NotFound.value());
    let (code, _) = reflection
        .error(MessageRequest::AllExtensionNumbersOfType(
            "example.Nope".into(),
        ))
        .await;
    assert_eq!(code, Code::NotFound.value());
    match reflection
        .ask(MessageRequest::AllExtensionNumbersOfType(
            "example.EchoRequest".into(),
        ))
        .await
    {
        MessageResponse::AllExtensionNumbersResponse(r) => {
            assert_eq!(r.base_type_name, "example.EchoRequest");
            assert!(r.extension_number.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reflection.services().await, SERVICES);

    // Closing our side ends the stream cleanly.
    reflection.requests.close();
    let end = reflection.responses.message().await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn reflection_v1alpha_answers_the_same() {
    use v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use v1alpha::server_reflection_response::MessageResponse as AlphaResponse;

    let (server, channel) = server().await;
    let (mut requests, mut responses) = v1alpha::ServerReflectionClient::new(&channel)
        .server_reflection_info()
        .await
        .expect("open the stream");
    requests
        .send(&v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices("*".into())),
        })
        .await
        .expect("send");
    requests
        .send(&v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::FileContainingSymbol(
                "example.EchoService".into(),
            )),
        })
        .await
        .expect("send");
    requests.close();

    let list = responses.message().await.expect("stream").expect("answer");
    match list.message_response {
        Some(AlphaResponse::ListServicesResponse(list)) => {
            let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, SERVICES);
        }
        other => panic!("{other:?}"),
    }
    let files = responses.message().await.expect("stream").expect("answer");
    match files.message_response {
        Some(AlphaResponse::FileDescriptorResponse(files)) => {
            let file =
                FileDescriptorProto::decode(&files.file_descriptor_proto[0][..]).expect("a file");
            assert_eq!(file.name(), "echo.proto");
        }
        other => panic!("{other:?}"),
    }
    let end = responses.message().await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_reflection_request_asking_nothing_ends_the_stream() {
    let (server, channel) = server().await;
    let mut reflection = Reflection::open(&channel).await;
    reflection
        .requests
        .send(&ServerReflectionRequest::default())
        .await
        .expect("send");
    let end = reflection.responses.message().await;
    let err = end.expect_err("an error status");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    server.shutdown(Duration::from_secs(5)).await;
}

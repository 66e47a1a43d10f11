//! The builtin server reflection service, under `grpc.reflection.v1` and
//! `grpc.reflection.v1alpha`, answering from the `.proto` files keel-build
//! embeds in each [`ServiceDescriptor`] (`files`).
//!
//! ```text
//!   ServiceDescriptor::files (every service served)
//!        │ decoded once, on the first reflection request
//!        ▼
//!   Catalog: file name -> (bytes, imports)       ServerReflectionInfo stream:
//!            symbol    -> file name                request ──► answer ──► response
//!            (message, field, enum, value,         (one at a time, in order;
//!             service, method, extension)           files already sent on this
//!            extendee  -> number -> file            stream are not sent again)
//!            service names, sorted
//! ```
//!
//! The two packages carry the same messages with the same field numbers, so
//! one implementation serves both: the v1alpha service decodes and encodes
//! the v1 types. File responses hold the file asked for first, then its
//! imports, transitively, minus the files already sent on the stream, as
//! grpc-go does; the bytes are the embedded ones, not copies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::builtin::reflection::v1::server_reflection_request::MessageRequest;
use crate::builtin::reflection::v1::server_reflection_response::MessageResponse;
use crate::builtin::reflection::v1::{
    ErrorResponse, ExtensionNumberResponse, ExtensionRequest, FileDescriptorResponse,
    ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use crate::builtin::reflection::{v1, v1alpha};
use crate::context::Context;
use crate::method::ServiceDescriptor;
use crate::server::service::{Service, ServiceFuture, unknown_method};
use crate::status::{Code, Status};
use crate::streaming::{ResponseSink, ServerStream, Streaming};

/// What reflection knows, shared by the v1 and v1alpha services of one
/// server: the services served, and their files once decoded.
pub(crate) struct Reflection {
    services: Vec<&'static ServiceDescriptor>,
    catalog: OnceLock<Catalog>,
}

impl Reflection {
    /// Reflection over `services` (the builtin ones included).
    pub(crate) fn new(services: Vec<&'static ServiceDescriptor>) -> Arc<Reflection> {
        Arc::new(Reflection {
            services,
            catalog: OnceLock::new(),
        })
    }

    /// The reflection services to add to the server: v1, then v1alpha.
    pub(crate) fn services(self: &Arc<Self>) -> [ReflectionService; 2] {
        [
            ReflectionService {
                descriptor: &v1::server_reflection::SERVICE,
                reflection: self.clone(),
            },
            ReflectionService {
                descriptor: &v1alpha::server_reflection::SERVICE,
                reflection: self.clone(),
            },
        ]
    }

    fn catalog(&self) -> &Catalog {
        self.catalog.get_or_init(|| Catalog::new(&self.services))
    }
}

/// The descriptors of every service served, indexed.
#[derive(Debug, Default)]
struct Catalog {
    /// Full names of the services served, sorted.
    services: Vec<String>,
    files: HashMap<String, File>,
    /// Fully-qualified symbol (no leading dot) -> file name.
    symbols: HashMap<String, String>,
    /// Message types (fully qualified), which may have extensions.
    messages: HashSet<String>,
    /// Extendee -> extension number -> file name.
    extensions: HashMap<String, BTreeMap<i32, String>>,
}

#[derive(Debug)]
struct File {
    bytes: &'static [u8],
    imports: Vec<String>,
}

impl Catalog {
    fn new(services: &[&'static ServiceDescriptor]) -> Catalog {
        let mut catalog = Catalog::default();
        let mut names: Vec<String> = services.iter().map(|s| s.name.to_owned()).collect();
        names.sort();
        names.dedup();
        catalog.services = names;
        for &bytes in services.iter().flat_map(|s| s.files) {
            // keel-build wrote these bytes; one that does not decode is
            // left out rather than failing every request.
            let Ok(file) = FileDescriptorProto::decode(bytes) else {
                continue;
            };
            if catalog.files.contains_key(file.name()) {
                continue;
            }
            catalog.add_file(&file, bytes);
        }
        catalog
    }

    fn add_file(&mut self, file: &FileDescriptorProto, bytes: &'static [u8]) {
        let name = file.name().to_owned();
        let package = file.package();
        for message in &file.message_type {
            self.add_message(&name, package, message);
        }
        for e in &file.enum_type {
            self.add_enum(&name, package, e);
        }
        for extension in &file.extension {
            self.add_extension(&name, package, extension);
        }
        for service in &file.service {
            let service_name = join(package, service.name());
            for method in &service.method {
                self.symbol(&name, join(&service_name, method.name()));
            }
            self.symbol(&name, service_name);
        }
        self.files.insert(
            name,
            File {
                bytes,
                imports: file.dependency.clone(),
            },
        );
    }

    fn add_message(&mut self, file: &str, scope: &str, message: &DescriptorProto) {
        let full_name = join(scope, message.name());
        for field in &message.field {
            self.symbol(file, join(&full_name, field.name()));
        }
        for oneof in &message.oneof_decl {
            self.symbol(file, join(&full_name, oneof.name()));
        }
        for nested in &message.nested_type {
            self.add_message(file, &full_name, nested);
        }
        for e in &message.enum_type {
            self.add_enum(file, &full_name, e);
        }
        for extension in &message.extension {
            self.add_extension(file, &full_name, extension);
        }
        self.messages.insert(full_name.clone());
        self.symbol(file, full_name);
    }

    fn add_enum(&mut self, file: &str, scope: &str, e: &EnumDescriptorProto) {
        // Enum values are scoped like their enum, not inside it.
        for value in &e.value {
            self.symbol(file, join(scope, value.name()));
        }
        self.symbol(file, join(scope, e.name()));
    }

    fn add_extension(&mut self, file: &str, scope: &str, extension: &FieldDescriptorProto) {
        let extendee = extension.extendee().trim_start_matches('.').to_owned();
        self.extensions
            .entry(extendee)
            .or_default()
            .entry(extension.number())
            .or_insert_with(|| file.to_owned());
        self.symbol(file, join(scope, extension.name()));
    }

    fn symbol(&mut self, file: &str, symbol: String) {
        self.symbols
            .entry(symbol)
            .or_insert_with(|| file.to_owned());
    }

    /// The answer to one request; `sent` holds the files already sent on
    /// the stream.
    fn answer(&self, request: &MessageRequest, sent: &mut HashSet<String>) -> MessageResponse {
        match request {
            MessageRequest::FileByFilename(name) => self.file_response(name, sent),
            MessageRequest::FileContainingSymbol(symbol) => {
                let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
                match self.symbols.get(symbol) {
                    Some(file) => self.file_response(file, sent),
                    None => not_found(format!("unknown symbol {symbol:?}")),
                }
            }
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type,
                extension_number,
            }) => {
                let file = self
                    .extensions
                    .get(containing_type.trim_start_matches('.'))
                    .and_then(|numbers| numbers.get(extension_number));
                match file {
                    Some(file) => self.file_response(file, sent),
                    None => not_found(format!(
                        "no extension {extension_number} of type {containing_type:?}"
                    )),
                }
            }
            MessageRequest::AllExtensionNumbersOfType(name) => {
                let type_name = name.trim_start_matches('.');
                if !self.messages.contains(type_name) {
                    return not_found(format!("unknown message type {name:?}"));
                }
                MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: type_name.to_owned(),
                    extension_number: self
                        .extensions
                        .get(type_name)
                        .map(|numbers| numbers.keys().copied().collect())
                        .unwrap_or_default(),
                })
            }
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
        }
    }

    /// File `name` first, then its imports, transitively (breadth first),
    /// leaving out those already in `sent`.
    fn file_response(&self, name: &str, sent: &mut HashSet<String>) -> MessageResponse {
        let Some(file) = self.files.get(name) else {
            return not_found(format!("unknown file {name:?}"));
        };
        let mut out = vec![Bytes::from_static(file.bytes)];
        sent.insert(name.to_owned());
        let mut queue: Vec<&str> = file.imports.iter().map(String::as_str).collect();
        let mut next = 0;
        while let Some(&import) = queue.get(next) {
            next += 1;
            if sent.contains(import) {
                continue;
            }
            // An import no served service embeds (a hand-written service's)
            // cannot be sent; the client finds it missing.
            let Some(file) = self.files.get(import) else {
                continue;
            };
            sent.insert(import.to_owned());
            out.push(Bytes::from_static(file.bytes));
            queue.extend(file.imports.iter().map(String::as_str));
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: Code::NotFound.value(),
        error_message: message,
    })
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// `ServerReflectionInfo` under one of the two packages.
pub(crate) struct ReflectionService {
    descriptor: &'static ServiceDescriptor,
    reflection: Arc<Reflection>,
}

impl ReflectionService {
    /// Answers each request as it arrives, until the client closes its side.
    async fn serve(
        &self,
        requests: &mut Streaming<ServerReflectionRequest>,
        responses: &mut ResponseSink<ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let mut sent = HashSet::new();
        while let Some(request) = requests.message().await? {
            let Some(asked) = &request.message_request else {
                return Err(Status::invalid_argument(
                    "a reflection request must set one of message_request's fields",
                ));
            };
            let answer = self.reflection.catalog().answer(asked, &mut sent);
            let response = ServerReflectionResponse {
                valid_host: request.host.clone(),
                original_request: Some(request),
                message_response: Some(answer),
            };
            responses.send(&response).await?;
        }
        Ok(())
    }
}

impl Service for ReflectionService {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.descriptor
    }

    fn call<'a>(
        &'a self,
        method: usize,
        _ctx: &'a Context,
        _request: Bytes,
        _response: &'a mut BytesMut,
    ) -> ServiceFuture<'a> {
        unknown_method(self.descriptor, method)
    }

    fn call_stream<'a>(
        &'a self,
        method: usize,
        _ctx: &'a Context,
        stream: &'a mut ServerStream,
    ) -> ServiceFuture<'a> {
        let Some(&info) = self.descriptor.methods.get(method) else {
            return unknown_method(self.descriptor, method);
        };
        ServiceFuture::new(async move {
            let mut requests = stream.requests::<ServerReflectionRequest>(info, None);
            let mut responses = stream.responses::<ServerReflectionResponse>();
            let result = self.serve(&mut requests, &mut responses).await;
            stream.restore(requests, responses);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::health::v1 as health;

    fn catalog() -> Catalog {
        Catalog::new(&[
            &health::health::SERVICE,
            &v1::server_reflection::SERVICE,
            &v1alpha::server_reflection::SERVICE,
        ])
    }

    fn files(answer: MessageResponse) -> Vec<String> {
        match answer {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    FileDescriptorProto::decode(&bytes[..])
                        .expect("a FileDescriptorProto")
                        .name()
                        .to_owned()
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    fn error_code(answer: MessageResponse) -> i32 {
        match answer {
            MessageResponse::ErrorResponse(e) => e.error_code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn symbols_of_every_kind_find_their_file() {
        let catalog = catalog();
        let mut sent = HashSet::new();
        for symbol in [
            "grpc.health.v1.Health",
            "grpc.health.v1.Health.Watch",
            "grpc.health.v1.HealthCheckRequest",
            "grpc.health.v1.HealthCheckRequest.service",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
            "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN",
            ".grpc.health.v1.HealthCheckResponse",
        ] {
            let answer = catalog.answer(
                &MessageRequest::FileContainingSymbol(symbol.to_owned()),
                &mut sent,
            );
            assert_eq!(files(answer), ["grpc/health/v1/health.proto"], "{symbol}");
        }
        let answer = catalog.answer(
            &MessageRequest::FileContainingSymbol(
                "grpc.reflection.v1alpha.ServerReflectionRequest.list_services".to_owned(),
            ),
            &mut sent,
        );
        assert_eq!(files(answer), ["grpc/reflection/v1alpha/reflection.proto"]);
        for unknown in ["grpc.health.v1.Nope", "grpc.health", ""] {
            let answer = catalog.answer(
                &MessageRequest::FileContainingSymbol(unknown.to_owned()),
                &mut sent,
            );
            assert_eq!(error_code(answer), 5, "{unknown:?}");
        }
    }

    #[test]
    fn files_by_name_extensions_and_services() {
        let catalog = catalog();
        let mut sent = HashSet::new();
        let by_name = |name: &str, sent: &mut HashSet<String>| {
            catalog.answer(&MessageRequest::FileByFilename(name.to_owned()), sent)
        };
        assert_eq!(
            files(by_name("grpc/reflection/v1/reflection.proto", &mut sent)),
            ["grpc/reflection/v1/reflection.proto"]
        );
        assert_eq!(error_code(by_name("nope.proto", &mut sent)), 5);

        let answer = catalog.answer(
            &MessageRequest::AllExtensionNumbersOfType("grpc.health.v1.HealthCheckRequest".into()),
            &mut sent,
        );
        match answer {
            MessageResponse::AllExtensionNumbersResponse(r) => {
                assert_eq!(r.base_type_name, "grpc.health.v1.HealthCheckRequest");
                assert!(r.extension_number.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let answer = catalog.answer(
            &MessageRequest::AllExtensionNumbersOfType("grpc.health.v1.Nope".into()),
            &mut sent,
        );
        assert_eq!(error_code(answer), 5);
        let answer = catalog.answer(
            &MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "grpc.health.v1.HealthCheckRequest".into(),
                extension_number: 100,
            }),
            &mut sent,
        );
        assert_eq!(error_code(answer), 5);

        match catalog.answer(&MessageRequest::ListServices(String::new()), &mut sent) {
            MessageResponse::ListServicesResponse(list) => {
                let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(
                    names,
                    [
                        "grpc.health.v1.Health",
                        "grpc.reflection.v1.ServerReflection",
                        "grpc.reflection.v1alpha.ServerReflection",
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

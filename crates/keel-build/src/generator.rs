//! Keel service code: one `prost_build::ServiceGenerator` that writes, per
//! protobuf service, the server trait, its dispatch adapter, the client and
//! the `static` descriptors; and, per package, the proto2 required-field
//! tables (see [`crate::required`]) those call sites pass to the runtime.
//!
//! The text is emitted as plain Rust and formatted by prost-build afterwards
//! (prettyplease), so the templates below favour clarity over layout.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use prost_build::{Method, Service};
use protox::prost_reflect::prost_types::FileDescriptorProto;

use crate::files::FilePlan;
use crate::required::RequiredPlan;

/// Generates Keel server traits, clients and descriptors for protobuf
/// services; plug it into a `prost_build::Config` with
/// `config.service_generator(Box::new(ServiceGenerator::new()))` when driving
/// prost-build yourself ([`Builder`](crate::Builder) does this for you).
///
/// Streaming methods (served over gRPC) get trait methods that take typed
/// streams and sinks (`keel::streaming`), and client methods that open the
/// stream.
/// [`Builder`](crate::Builder) refuses them (and name clashes) before
/// generating, unless told to skip them with
/// [`skip_unsupported`](crate::Builder::skip_unsupported); used on its own,
/// this generator checks nothing.
///
/// Proto2 `required` fields are checked only when the generator was given
/// the descriptors with [`required_fields`](Self::required_fields)
/// ([`Builder`](crate::Builder) does this); without them every call site
/// passes `None` and required fields are not checked.
///
/// Likewise, service descriptors list their `.proto` files (for server
/// reflection) only when the generator was given them with
/// [`file_descriptors`](Self::file_descriptors); without them
/// `ServiceDescriptor::files` is empty.
#[derive(Debug, Clone)]
pub struct ServiceGenerator {
    runtime: String,
    server: bool,
    client: bool,
    required: Option<Rc<RequiredPlan>>,
    files: Option<Rc<FilePlan>>,
    /// Per package: the files its services' descriptors refer to, emitted
    /// once per package module by `finalize_package`.
    package_files: HashMap<String, BTreeSet<usize>>,
    /// Files finalized so far: prost-build calls `finalize` once per file,
    /// in the order of its requests.
    files_done: usize,
}

impl Default for ServiceGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceGenerator {
    /// A generator for servers and clients that refers to the runtime as `::keel`.
    pub fn new() -> Self {
        ServiceGenerator {
            runtime: "::keel".to_owned(),
            server: true,
            client: true,
            required: None,
            files: None,
            package_files: HashMap::new(),
            files_done: 0,
        }
    }

    /// Uses `path` (an absolute path such as `::keel` or `crate`) to refer to
    /// the Keel runtime in generated code.
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.runtime = path.into();
        self
    }

    /// Whether to generate server traits and adapters (default `true`).
    pub fn build_server(mut self, enabled: bool) -> Self {
        self.server = enabled;
        self
    }

    /// Whether to generate clients (default `true`).
    pub fn build_client(mut self, enabled: bool) -> Self {
        self.client = enabled;
        self
    }

    /// Whether server traits and adapters are generated.
    pub(crate) fn builds_server(&self) -> bool {
        self.server
    }

    /// Whether clients are generated.
    pub(crate) fn builds_client(&self) -> bool {
        self.client
    }

    /// Generates proto2 required-field checks for the messages of `files`:
    /// per package, the tables and `RequiredFields` impls of every message
    /// type that has `required` fields or holds one that does, and call
    /// sites that pass them (request checked by the server adapter, response
    /// by the client). Types that need no check get nothing, and their call
    /// sites pass `None`.
    ///
    /// `files` must be the files given to prost-build, in the same order:
    /// the tables are written from prost-build's once-per-file `finalize`
    /// hook.
    pub fn required_fields(mut self, files: &[FileDescriptorProto]) -> Self {
        self.required = Some(Rc::new(RequiredPlan::new(files)));
        self.files_done = 0;
        self
    }

    /// Embeds `files` for server reflection: each service descriptor's
    /// `files` lists the serialized `FileDescriptorProto` of the file
    /// declaring the service, then those of its imports, transitively (source
    /// info stripped). Each package module holds one byte string per file its
    /// services need, whatever the number of services.
    ///
    /// `files` must hold every import of the files given to prost-build (as
    /// protox's `include_imports` gives them).
    pub fn file_descriptors(mut self, files: &[FileDescriptorProto]) -> Self {
        self.files = Some(Rc::new(FilePlan::new(files)));
        self.package_files.clear();
        self
    }
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let files = match &self.files {
            Some(plan) => {
                let indexes = plan.service_files(&service.package, &service.proto_name);
                self.package_files
                    .entry(service.package.clone())
                    .or_default()
                    .extend(indexes.iter().copied());
                plan.files_expr(&indexes)
            }
            None => "&[]".to_owned(),
        };
        let service = ServiceModel::new(&service, &self.runtime, self.required.as_deref());
        service.write_descriptors(buf, &files);
        if self.server {
            service.write_server(buf);
        }
        if self.client {
            service.write_client(buf);
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        let index = self.files_done;
        self.files_done += 1;
        // The module (one per package) is shared by the package's files; the
        // last of them carries the tables, once `buf` holds every type
        // prost generated for the package.
        if let Some(code) = self
            .required
            .as_ref()
            .and_then(|plan| plan.package_code_after_file(index, buf, &self.runtime))
        {
            buf.push_str(&code);
        }
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if let (Some(plan), Some(indexes)) = (&self.files, self.package_files.get(package)) {
            if !indexes.is_empty() {
                buf.push_str(&plan.module_code(indexes));
            }
        }
    }
}

/// What the templates need to know about one service, names resolved.
struct ServiceModel<'a> {
    rt: &'a str,
    /// `example.EchoService`
    full_name: String,
    /// `EchoService`
    rust_name: &'a str,
    /// `echo_service`: the module holding the descriptors.
    module: String,
    comments: String,
    methods: Vec<MethodModel<'a>>,
}

struct MethodModel<'a> {
    /// `Echo`
    proto_name: &'a str,
    /// `echo` (keywords escaped by prost-build)
    rust_name: &'a str,
    /// `ECHO`: the descriptor's static in the service module.
    static_name: String,
    input: &'a str,
    output: &'a str,
    input_proto: &'a str,
    output_proto: &'a str,
    /// What the call sites pass for the request's and the response's
    /// required fields: `Some(&table)` or `None`.
    request_required: String,
    response_required: String,
    kind: &'static str,
    unary: bool,
    comments: String,
}

/// The service descriptor's static; a method whose name would collide gets
/// a `_METHOD` suffix instead.
const SERVICE_STATIC: &str = "SERVICE";

impl<'a> ServiceModel<'a> {
    fn new(service: &'a Service, rt: &'a str, required: Option<&RequiredPlan>) -> Self {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let mut comments = String::new();
        service.comments.append_with_indent(0, &mut comments);
        ServiceModel {
            rt,
            full_name,
            rust_name: &service.name,
            module: service_module(&service.proto_name),
            comments,
            methods: service
                .methods
                .iter()
                .map(|m| MethodModel::new(m, &service.package, required))
                .collect(),
        }
    }

    /// The descriptor module; `files` is the expression for the service
    /// descriptor's `files`.
    fn write_descriptors(&self, buf: &mut String, files: &str) {
        let ServiceModel {
            rt,
            full_name,
            module,
            ..
        } = self;
        let _ = writeln!(
            buf,
            "/// Descriptors of `{full_name}`: `static`s built once per process. A \
             method's identity is its address: channels key per-method state by it."
        );
        let _ = writeln!(buf, "pub mod {module} {{");
        for (index, m) in self.methods.iter().enumerate() {
            let _ = writeln!(
                buf,
                "/// `{full_name}.{proto}`.\n\
                 pub static {name}: {rt}::MethodDescriptor = {rt}::MethodDescriptor {{\n\
                 service: \"{full_name}\",\n\
                 method: \"{proto}\",\n\
                 path: \"/{full_name}/{proto}\",\n\
                 index: {index},\n\
                 request_type: \"{input}\",\n\
                 response_type: \"{output}\",\n\
                 kind: {rt}::MethodKind::{kind},\n\
                 files: {files},\n\
                 }};",
                proto = m.proto_name,
                name = m.static_name,
                input = m.input_proto,
                output = m.output_proto,
                kind = m.kind,
            );
        }
        let list: Vec<&str> = self.methods.iter().map(|m| &*m.static_name).collect();
        let _ = writeln!(
            buf,
            "/// The service `{full_name}` and its methods, in declaration order.\n\
             pub static {SERVICE_STATIC}: {rt}::ServiceDescriptor = {rt}::ServiceDescriptor {{\n\
             name: \"{full_name}\",\n\
             methods: &[{}],\n\
             files: {files},\n\
             }};\n\
             }}",
            list.iter()
                .map(|name| format!("&{name}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    fn write_server(&self, buf: &mut String) {
        let ServiceModel {
            rt,
            full_name,
            rust_name,
            module,
            comments,
            ..
        } = self;
        let server = format!("{rust_name}Server");

        // The trait users implement, with `async fn`s.
        buf.push_str(comments);
        if !comments.is_empty() {
            buf.push_str("///\n");
        }
        let _ = writeln!(
            buf,
            "/// Server side of `{full_name}`: implement it (with `async fn`s), wrap the \
             implementation in [`{server}`] and add that to a server or an in-process channel.\n\
             pub trait {rust_name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for m in &self.methods {
            buf.push_str(&m.comments);
            if !m.comments.is_empty() {
                buf.push_str("///\n");
            }
            let (input, output) = (m.input, m.output);
            let (doc, params) = match m.kind {
                "Unary" => (
                    "read `request`, fill `response` (it arrives empty). An `Err` reaches the \
                     caller with its code and text instead.\n\
                     ///\n\
                     /// Both messages come from per-method pools and keep the capacity earlier \
                     calls grew, so a handler that fills `response` in place (`clone_from`, \
                     `push_str`, `extend`) allocates nothing.",
                    format!("request: &{input}, response: &mut {output}"),
                ),
                "ServerStreaming" => (
                    "read `request`, send responses to `responses` (each `send` waits while the \
                     client's window is full). `Ok` ends the stream cleanly; an `Err` ends it \
                     with that status.",
                    format!(
                        "request: &{input}, responses: &mut {rt}::streaming::ResponseSink<{output}>"
                    ),
                ),
                "ClientStreaming" => (
                    "read the requests from `requests` until `Ok(None)`, fill `response` (it \
                     arrives empty). An `Err` reaches the caller instead.",
                    format!(
                        "requests: &mut {rt}::streaming::Streaming<{input}>, response: &mut {output}"
                    ),
                ),
                _ => (
                    "read requests from `requests` and send responses to `responses`, in any \
                     order. `Ok` ends the stream cleanly; an `Err` ends it with that status.",
                    format!(
                        "requests: &mut {rt}::streaming::Streaming<{input}>, \
                         responses: &mut {rt}::streaming::ResponseSink<{output}>"
                    ),
                ),
            };
            let _ = writeln!(
                buf,
                "/// Handles `{full_name}.{proto}`: {doc}\n\
                 fn {name}(&self, ctx: &{rt}::Context, {params}) \
                 -> impl ::core::future::Future<\
                 Output = ::core::result::Result<(), {rt}::Status>> + ::core::marker::Send;",
                proto = m.proto_name,
                name = m.rust_name,
            );
        }
        buf.push_str("}\n");

        // The adapter the server dispatches into.
        let _ = writeln!(
            buf,
            "/// Serves an implementation of [`{rust_name}`]: decodes requests, calls the handler, \
             encodes responses. Add it to a `{rt}::server::MethodTable` (or a server).\n\
             #[derive(Debug, Clone, Default)]\n\
             pub struct {server}<S> {{ inner: S }}\n\
             #[allow(dead_code)] // accessors a program may not need\n\
             impl<S> {server}<S> {{\n\
             /// Wraps the implementation `inner`.\n\
             pub const fn new(inner: S) -> Self {{ Self {{ inner }} }}\n\
             /// The wrapped implementation.\n\
             pub fn get_ref(&self) -> &S {{ &self.inner }}\n\
             /// Unwraps the implementation.\n\
             pub fn into_inner(self) -> S {{ self.inner }}\n\
             }}\n\
             impl<S: {rust_name}> {rt}::server::Service for {server}<S> {{\n\
             fn descriptor(&self) -> &'static {rt}::ServiceDescriptor {{ &{module}::{SERVICE_STATIC} }}\n\
             fn call<'a>(&'a self, method: usize, ctx: &'a {rt}::Context, \
             request: {rt}::bytes::Bytes, response: &'a mut {rt}::bytes::BytesMut) \
             -> {rt}::server::ServiceFuture<'a> {{"
        );
        if !self.methods.iter().any(|m| m.unary) {
            let _ = writeln!(
                buf,
                "let _ = (ctx, request, response);\n\
                 {rt}::server::unknown_method(&{module}::{SERVICE_STATIC}, method)\n}}"
            );
            self.write_call_stream(buf);
            buf.push_str("}\n");
            return;
        }
        buf.push_str("match method {\n");
        for (index, m) in self.methods.iter().enumerate().filter(|(_, m)| m.unary) {
            let _ = writeln!(
                buf,
                "{index} => {{\n\
                 static MESSAGES: {rt}::server::MessagePools<{input}, {output}> = \
                 {rt}::server::MessagePools::new(\"/{full_name}/{proto} requests\", \
                 \"/{full_name}/{proto} responses\");\n\
                 {rt}::server::ServiceFuture::new(async move {{\n\
                 let mut messages = MESSAGES.take(&{module}::{st}, {required}, request)?;\n\
                 let (request, reply) = messages.parts();\n\
                 self.inner.{name}(ctx, request, reply).await?;\n\
                 messages.encode_response(response);\n\
                 ::core::result::Result::Ok(())\n\
                 }})\n\
                 }}",
                st = m.static_name,
                name = m.rust_name,
                required = m.request_required,
                input = m.input,
                output = m.output,
                proto = m.proto_name,
            );
        }
        let _ = writeln!(
            buf,
            "_ => {rt}::server::unknown_method(&{module}::{SERVICE_STATIC}, method),\n}}\n}}"
        );
        self.write_call_stream(buf);
        buf.push_str("}\n");
    }

    /// The adapter's `call_stream`: typed streams for streaming handlers.
    fn write_call_stream(&self, buf: &mut String) {
        let ServiceModel { rt, module, .. } = self;
        if self.methods.iter().all(|m| m.unary) {
            return;
        }
        let _ = writeln!(
            buf,
            "fn call_stream<'a>(&'a self, method: usize, ctx: &'a {rt}::Context, \
             stream: &'a mut {rt}::streaming::ServerStream) -> {rt}::server::ServiceFuture<'a> {{\n\
             match method {{"
        );
        for (index, m) in self.methods.iter().enumerate().filter(|(_, m)| !m.unary) {
            let call = match m.kind {
                "ServerStreaming" => format!(
                    "match requests.single().await {{\n\
                     ::core::result::Result::Ok(request) => \
                     self.inner.{name}(ctx, &request, &mut responses).await,\n\
                     ::core::result::Result::Err(status) => ::core::result::Result::Err(status),\n\
                     }}",
                    name = m.rust_name
                ),
                "ClientStreaming" => format!(
                    "{{\n\
                     let mut response = <{output} as ::core::default::Default>::default();\n\
                     match self.inner.{name}(ctx, &mut requests, &mut response).await {{\n\
                     ::core::result::Result::Ok(()) => responses.send(&response).await,\n\
                     ::core::result::Result::Err(status) => ::core::result::Result::Err(status),\n\
                     }}\n\
                     }}",
                    name = m.rust_name,
                    output = m.output,
                ),
                _ => format!(
                    "self.inner.{name}(ctx, &mut requests, &mut responses).await",
                    name = m.rust_name
                ),
            };
            let _ = writeln!(
                buf,
                "{index} => {rt}::server::ServiceFuture::new(async move {{\n\
                 let mut requests = stream.requests::<{input}>(&{module}::{st}, {required});\n\
                 let mut responses = stream.responses::<{output}>();\n\
                 let result = {call};\n\
                 stream.restore(requests, responses);\n\
                 result\n\
                 }}),",
                st = m.static_name,
                input = m.input,
                output = m.output,
                required = m.request_required,
            );
        }
        let _ = writeln!(
            buf,
            "_ => {{ let _ = (ctx, stream); \
             {rt}::server::unknown_method(&{module}::{SERVICE_STATIC}, method) }}\n}}\n}}"
        );
    }

    fn write_client(&self, buf: &mut String) {
        let ServiceModel {
            rt,
            full_name,
            rust_name,
            module,
            ..
        } = self;
        let client = format!("{rust_name}Client");
        let _ = writeln!(
            buf,
            "/// Client of `{full_name}`: a channel handle plus call options, a few words. \
             [`new`]({client}::new) and [`with_options`]({client}::with_options) allocate \
             nothing; clone it freely.\n\
             #[derive(Debug, Clone)]\n\
             pub struct {client} {{ inner: {rt}::Client }}\n\
             #[allow(dead_code)] // a program rarely calls every method\n\
             impl {client} {{\n\
             /// A client calling through `channel` with default options (no heap allocation).\n\
             pub fn new(channel: &{rt}::Channel) -> Self {{ Self {{ inner: {rt}::Client::new(channel) }} }}\n\
             /// Wraps a generic client handle.\n\
             pub fn from_client(inner: {rt}::Client) -> Self {{ Self {{ inner }} }}\n\
             /// A client sharing this one's channel and descriptors, calling with \
             `options` (no heap allocation).\n\
             #[must_use]\n\
             pub fn with_options(&self, options: {rt}::CallOptions) -> Self {{ \
             Self {{ inner: self.inner.with_options(options) }} }}\n\
             /// The options every call of this client uses.\n\
             pub fn options(&self) -> &{rt}::CallOptions {{ self.inner.options() }}\n\
             /// The generic client handle, e.g. for calls that also return the \
             response attachment.\n\
             pub fn client(&self) -> &{rt}::Client {{ &self.inner }}"
        );
        for m in &self.methods {
            buf.push_str(&m.comments);
            if !m.comments.is_empty() {
                buf.push_str("///\n");
            }
            let (proto, name, input, output) = (m.proto_name, m.rust_name, m.input, m.output);
            let (st, required) = (&m.static_name, &m.response_required);
            let _ = match m.kind {
                "Unary" => writeln!(
                    buf,
                    "/// Calls `{full_name}.{proto}`: `.await` it for the response, or set per-call \
                     options first (`.timeout(..)`, `.attachment(..)`, `.metadata(..)`) and `.full()` \
                     for the response's attachment and metadata too.\n\
                     pub fn {name}<'a>(&'a self, request: &'a {input}) \
                     -> {rt}::client::UnaryCall<'a, {input}, {output}> {{\n\
                     self.inner.unary(&{module}::{st}, request, {required})\n\
                     }}",
                ),
                "ServerStreaming" => writeln!(
                    buf,
                    "/// Calls `{full_name}.{proto}` (gRPC): sends `request`, returns the stream \
                     of responses; the client's options (timeout, metadata) apply to the whole \
                     stream.\n\
                     pub async fn {name}(&self, request: &{input}) -> ::core::result::Result<\
                     {rt}::streaming::Streaming<{output}>, {rt}::Status> {{\n\
                     self.inner.server_streaming(&{module}::{st}, request, {required}).await\n\
                     }}",
                ),
                "ClientStreaming" => writeln!(
                    buf,
                    "/// Calls `{full_name}.{proto}` (gRPC): send requests on the returned call, \
                     then `finish()` it for the response.\n\
                     pub async fn {name}(&self) -> ::core::result::Result<\
                     {rt}::streaming::ClientStreamingCall<{input}, {output}>, {rt}::Status> {{\n\
                     self.inner.client_streaming(&{module}::{st}, {required}).await\n\
                     }}",
                ),
                _ => writeln!(
                    buf,
                    "/// Calls `{full_name}.{proto}` (gRPC): a sink for the requests and the \
                     stream of responses, usable from different tasks.\n\
                     pub async fn {name}(&self) -> ::core::result::Result<(\
                     {rt}::streaming::RequestSink<{input}>, \
                     {rt}::streaming::Streaming<{output}>), {rt}::Status> {{\n\
                     self.inner.bidi_streaming(&{module}::{st}, {required}).await\n\
                     }}",
                ),
            };
        }
        buf.push_str("}\n");
    }
}

impl<'a> MethodModel<'a> {
    fn new(method: &'a Method, package: &str, required: Option<&RequiredPlan>) -> Self {
        let static_name = method_static(&method.proto_name);
        let kind = match (method.client_streaming, method.server_streaming) {
            (false, false) => "Unary",
            (true, false) => "ClientStreaming",
            (false, true) => "ServerStreaming",
            (true, true) => "BidiStreaming",
        };
        let mut comments = String::new();
        method.comments.append_with_indent(0, &mut comments);
        let check = |proto_type: &str| match required {
            Some(plan) => plan.call_arg(package, proto_type),
            None => "::core::option::Option::None".to_owned(),
        };
        MethodModel {
            proto_name: &method.proto_name,
            rust_name: &method.name,
            static_name,
            input: &method.input_type,
            output: &method.output_type,
            input_proto: method.input_proto_type.trim_start_matches('.'),
            output_proto: method.output_proto_type.trim_start_matches('.'),
            request_required: check(&method.input_proto_type),
            response_required: check(&method.output_proto_type),
            kind,
            unary: kind == "Unary",
            comments,
        }
    }
}

/// The methods every generated client has besides its rpcs, with what each
/// does; an rpc may not take one of these names (see `crate::check`).
/// `clone` comes from `#[derive(Clone)]`: an rpc named so would shadow it.
pub(crate) const CLIENT_METHODS: &[(&str, &str)] = &[
    ("new", "it creates the client"),
    ("from_client", "it wraps a generic `keel::Client`"),
    (
        "with_options",
        "it derives a client with other call options",
    ),
    ("options", "it returns the call options"),
    ("client", "it returns the generic `keel::Client`"),
    ("clone", "it is `Clone::clone`, which the rpc would shadow"),
];

/// The descriptor module of service `proto_name`: `echo_service`.
pub(crate) fn service_module(proto_name: &str) -> String {
    snake_ident(proto_name)
}

/// The descriptor static of method `proto_name` in its service module:
/// `ECHO`; a method whose name would collide with the service's own static
/// gets a `_METHOD` suffix.
pub(crate) fn method_static(proto_name: &str) -> String {
    let mut name = proto_name.to_shouty_snake_case();
    if name == SERVICE_STATIC {
        name.push_str("_METHOD");
    }
    name
}

/// A snake_case Rust identifier for `name`, as prost-build makes field,
/// method and module names.
pub(crate) fn snake_ident(name: &str) -> String {
    sanitize(name.to_snake_case())
}

/// An UpperCamelCase Rust identifier for `name`, as prost-build makes type
/// (message, enum, service) names.
pub(crate) fn type_ident(name: &str) -> String {
    sanitize(name.to_upper_camel_case())
}

/// Makes a name a valid identifier, as prost-build does: keywords become
/// raw identifiers, those that cannot be raw get a `_` suffix, and a leading
/// digit a `_` prefix.
fn sanitize(name: String) -> String {
    match name.as_str() {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{name}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{name}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{name}"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_valid_identifiers() {
        assert_eq!(sanitize("echo_service".to_owned()), "echo_service");
        assert_eq!(sanitize("type".to_owned()), "r#type");
        assert_eq!(sanitize("self".to_owned()), "self_");
    }
}

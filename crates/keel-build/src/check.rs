//! What keel-build refuses to generate, checked on the descriptors before
//! any code is written, so a problem is reported at its place in the
//! `.proto` file rather than as rustc output inside generated code:
//!
//! ```text
//!   FileDescriptorSet ──► unsupported: proto2 extensions
//!                         (unless opted out with Builder::skip_unsupported)
//!                     ──► clashes, per package module:
//!                           types and modules: messages, enums, and per service
//!                             trait Foo, FooServer, FooClient, mod foo
//!                           per service: rpc method names (with the client's own
//!                             methods) and descriptor statics
//! ```
//!
//! Names are computed with the functions the generator uses (and prost's
//! rules for messages), so a name checked here is the name written there.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use protox::prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::Error;
use crate::error::locate;
use crate::generator::{CLIENT_METHODS, method_static, service_module, snake_ident, type_ident};

/// Field numbers in descriptor.proto, for source-code-info paths.
mod tag {
    pub const FILE_MESSAGE: i32 = 4;
    pub const FILE_ENUM: i32 = 5;
    pub const FILE_SERVICE: i32 = 6;
    pub const FILE_EXTENSION: i32 = 7;
    pub const MESSAGE_NESTED: i32 = 3;
    pub const MESSAGE_EXTENSION: i32 = 6;
    pub const SERVICE_METHOD: i32 = 2;
    pub const NAME: i32 = 1;
}

/// What the build generates and what it was told to leave out.
pub(crate) struct Policy<'a> {
    pub(crate) server: bool,
    pub(crate) client: bool,
    /// Full names (no leading dot) of elements to skip instead of failing.
    pub(crate) skip: &'a HashSet<String>,
    pub(crate) skip_all: bool,
}

impl Policy<'_> {
    fn skips(&self, element: &str) -> bool {
        self.skip_all || self.skip.contains(element)
    }
}

/// Checks `files` (every file prost-build will generate): the first problem
/// found, in file order, is the error.
pub(crate) fn run(
    files: &[FileDescriptorProto],
    includes: &[PathBuf],
    policy: &Policy<'_>,
) -> Result<(), Error> {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|proto| Source {
            proto,
            path: locate(proto.name(), includes),
        })
        .collect();
    for source in &sources {
        unsupported(source, policy)?;
    }
    for source in &sources {
        method_clashes(source, policy)?;
    }
    type_clashes(&sources, policy)
}

/// One file, and where its elements are.
struct Source<'a> {
    proto: &'a FileDescriptorProto,
    path: PathBuf,
}

impl Source<'_> {
    /// 1-based line and column of the element at `path` (its name, when
    /// the parser recorded one).
    fn position(&self, path: &[i32]) -> (Option<usize>, Option<usize>) {
        let Some(info) = &self.proto.source_code_info else {
            return (None, None);
        };
        let mut name = path.to_vec();
        name.push(tag::NAME);
        [&name[..], path]
            .iter()
            .find_map(|wanted| info.location.iter().find(|l| l.path == *wanted))
            .and_then(|l| Some((l.span.first()?, l.span.get(1)?)))
            .map_or((None, None), |(line, column)| {
                (
                    usize::try_from(line + 1).ok(),
                    usize::try_from(column + 1).ok(),
                )
            })
    }

    fn full_name(&self, name: &str) -> String {
        match self.proto.package() {
            "" => name.to_owned(),
            package => format!("{package}.{name}"),
        }
    }

    fn unsupported(&self, path: &[i32], element: String, message: String) -> Error {
        let (line, column) = self.position(path);
        Error::Unsupported {
            file: self.path.clone(),
            line,
            column,
            element,
            message,
        }
    }

    fn clash(&self, path: &[i32], element: String, message: String) -> Error {
        let (line, column) = self.position(path);
        Error::Clash {
            file: self.path.clone(),
            line,
            column,
            element,
            message,
        }
    }
}

/// What keel-build cannot serve yet, per method kind. When a kind lands,
/// its arm goes (and with it the need to opt out).
fn unsupported(source: &Source<'_>, policy: &Policy<'_>) -> Result<(), Error> {
    let file = source.proto;
    let scope = match file.package() {
        "" => String::new(),
        package => format!("{package}."),
    };
    extensions(
        source,
        &scope,
        &file.extension,
        &[tag::FILE_EXTENSION],
        policy,
    )?;
    for (i, message) in file.message_type.iter().enumerate() {
        message_extensions(
            source,
            &scope,
            message,
            &[tag::FILE_MESSAGE, index(i)],
            policy,
        )?;
    }
    Ok(())
}

fn message_extensions(
    source: &Source<'_>,
    scope: &str,
    message: &DescriptorProto,
    path: &[i32],
    policy: &Policy<'_>,
) -> Result<(), Error> {
    let scope = format!("{scope}{}.", message.name());
    let mut here = path.to_vec();
    here.push(tag::MESSAGE_EXTENSION);
    extensions(source, &scope, &message.extension, &here, policy)?;
    for (i, nested) in message.nested_type.iter().enumerate() {
        let mut inner = path.to_vec();
        inner.extend([tag::MESSAGE_NESTED, index(i)]);
        message_extensions(source, &scope, nested, &inner, policy)?;
    }
    Ok(())
}

/// Extensions are dropped by prost: no field, no accessor, and their bytes
/// vanish when a message is decoded and encoded again. Custom options
/// (extensions of `google.protobuf.*Options`) only annotate the `.proto`
/// and lose nothing, so they pass.
fn extensions(
    source: &Source<'_>,
    scope: &str,
    fields: &[FieldDescriptorProto],
    path: &[i32],
    policy: &Policy<'_>,
) -> Result<(), Error> {
    for (i, field) in fields.iter().enumerate() {
        let extendee = field.extendee().trim_start_matches('.');
        if extendee.starts_with("google.protobuf.") && extendee.ends_with("Options") {
            continue;
        }
        let element = format!("{scope}{}", field.name());
        if policy.skips(&element) {
            continue;
        }
        let message = format!(
            "extension `{element}` of `{extendee}` would be dropped: prost generates no code for \
             proto2 extensions, and their values are lost when a message is decoded and encoded \
             again; to build without it, call `.skip_unsupported(\"{element}\")` on the \
             keel_build::Builder in build.rs"
        );
        let mut at = path.to_vec();
        at.push(index(i));
        return Err(source.unsupported(&at, element, message));
    }
    Ok(())
}

/// Per service: two rpcs with the same Rust method or descriptor static,
/// and rpcs named like the generated client's own methods.
fn method_clashes(source: &Source<'_>, policy: &Policy<'_>) -> Result<(), Error> {
    for (s, service) in source.proto.service.iter().enumerate() {
        let service_name = source.full_name(service.name());
        let mut methods: HashMap<String, &str> = HashMap::new();
        let mut statics: HashMap<String, &str> = HashMap::new();
        for (m, method) in service.method.iter().enumerate() {
            let path = [tag::FILE_SERVICE, index(s), tag::SERVICE_METHOD, index(m)];
            let element = format!("{service_name}.{}", method.name());
            let rust = snake_ident(method.name());
            if let Some(first) = methods.insert(rust.clone(), method.name()) {
                let message = format!(
                    "rpcs `{first}` and `{}` of service `{service_name}` would both be the \
                     Rust method `{rust}`; rename one of them in the .proto",
                    method.name()
                );
                return Err(source.clash(&path, element, message));
            }
            let reserved = CLIENT_METHODS.iter().find(|(name, _)| *name == rust);
            if let (true, Some((name, what))) = (policy.client, reserved) {
                let client = format!("{}Client", type_ident(service.name()));
                let message = format!(
                    "rpc `{element}` would be the client method `{name}`, which \
                     `{client}` already has ({what}); rename the rpc in the .proto, or \
                     build without clients (`Builder::build_client(false)`) and call it \
                     through `keel::Client::unary(&{module}::{st}, ..)`",
                    module = service_module(service.name()),
                    st = method_static(method.name()),
                );
                return Err(source.clash(&path, element, message));
            }
            let st = method_static(method.name());
            if let Some(first) = statics.insert(st.clone(), method.name()) {
                let message = format!(
                    "rpcs `{first}` and `{}` of service `{service_name}` would both get the \
                     descriptor `{module}::{st}`; rename one of them in the .proto",
                    method.name(),
                    module = service_module(service.name()),
                );
                return Err(source.clash(&path, element, message));
            }
        }
    }
    Ok(())
}

/// Who holds a name in a package's Rust module.
struct Claim<'s, 'a> {
    source: &'s Source<'a>,
    path: Vec<i32>,
    /// Full protobuf name of the declaring element.
    element: String,
    /// "message `shop.Item`", "the client generated for service `shop.Inventory`".
    what: String,
    /// How to make the generated side go away, if there is a switch.
    switch: Option<&'static str>,
}

/// Messages, enums and the items generated per service share one Rust
/// module per package (types and modules share Rust's type namespace).
/// Service items are claimed first, so a clash is reported at the message
/// or enum that is named like one.
fn type_clashes(sources: &[Source<'_>], policy: &Policy<'_>) -> Result<(), Error> {
    let mut packages: HashMap<&str, HashMap<String, Claim<'_, '_>>> = HashMap::new();
    let mut claims: Vec<(String, Claim<'_, '_>)> = Vec::new();
    for source in sources {
        for (s, service) in source.proto.service.iter().enumerate() {
            let element = source.full_name(service.name());
            let path = vec![tag::FILE_SERVICE, index(s)];
            let rust = type_ident(service.name());
            let mut items = vec![(
                service_module(service.name()),
                format!("the descriptor module generated for service `{element}`"),
                None,
            )];
            if policy.server {
                let switch = Some("`Builder::build_server(false)`");
                items.push((
                    rust.clone(),
                    format!("the server trait generated for service `{element}`"),
                    switch,
                ));
                items.push((
                    format!("{rust}Server"),
                    format!("the server adapter generated for service `{element}`"),
                    switch,
                ));
            }
            if policy.client {
                items.push((
                    format!("{rust}Client"),
                    format!("the client generated for service `{element}`"),
                    Some("`Builder::build_client(false)`"),
                ));
            }
            for (name, what, switch) in items {
                let claim = Claim {
                    source,
                    path: path.clone(),
                    element: element.clone(),
                    what,
                    switch,
                };
                claims.push((name, claim));
            }
        }
    }
    for source in sources {
        for (i, message) in source.proto.message_type.iter().enumerate() {
            let element = source.full_name(message.name());
            let path = vec![tag::FILE_MESSAGE, index(i)];
            if has_module(message) {
                let claim = Claim {
                    source,
                    path: path.clone(),
                    element: element.clone(),
                    what: format!(
                        "the module prost generates for message `{element}`'s nested types"
                    ),
                    switch: None,
                };
                claims.push((snake_ident(message.name()), claim));
            }
            let claim = Claim {
                source,
                path,
                what: format!("message `{element}`"),
                element,
                switch: None,
            };
            claims.push((type_ident(message.name()), claim));
        }
        for (i, enumeration) in source.proto.enum_type.iter().enumerate() {
            let element = source.full_name(enumeration.name());
            let claim = Claim {
                source,
                path: vec![tag::FILE_ENUM, index(i)],
                what: format!("enum `{element}`"),
                element,
                switch: None,
            };
            claims.push((type_ident(enumeration.name()), claim));
        }
    }
    for (name, claim) in claims {
        let package = claim.source.proto.package();
        let module = packages.entry(package).or_default();
        if let Some(first) = module.get(&name) {
            let package = if package.is_empty() {
                "the Rust module of files without a package".to_owned()
            } else {
                format!("the Rust module of package `{package}`")
            };
            let mut message = format!(
                "{} and {} would both be `{name}` in {package}; rename one of them in the .proto",
                claim.what, first.what
            );
            if let Some(switch) = first.switch.or(claim.switch) {
                message.push_str(&format!(", or turn the generated item off with {switch}"));
            }
            return Err(claim.source.clash(&claim.path, claim.element, message));
        }
        module.insert(name, claim);
    }
    Ok(())
}

/// Whether prost generates a module for `message`: it has nested messages
/// (map entries aside), nested enums or a real (not proto3 `optional`) oneof.
fn has_module(message: &DescriptorProto) -> bool {
    !message.enum_type.is_empty()
        || message
            .nested_type
            .iter()
            .any(|nested| !nested.options.as_ref().is_some_and(|o| o.map_entry()))
        || message
            .field
            .iter()
            .any(|field| field.oneof_index.is_some() && !field.proto3_optional())
}

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("a .proto file has fewer than 2^31 elements of a kind")
}

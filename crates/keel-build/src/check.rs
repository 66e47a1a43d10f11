//! What keel-build refuses to generate, checked on the descriptors before
//! any code is written, so a problem is reported at its place in the
//! `.proto` file rather than found at run time:
//!
//! ```text
//!   FileDescriptorSet ──► unsupported: streaming rpcs, proto2 extensions
//!                         (unless opted out with Builder::skip_unsupported)
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use protox::prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
};

use crate::Error;
use crate::error::locate;

/// Field numbers in descriptor.proto, for source-code-info paths.
mod tag {
    pub const FILE_MESSAGE: i32 = 4;
    pub const FILE_SERVICE: i32 = 6;
    pub const FILE_EXTENSION: i32 = 7;
    pub const MESSAGE_NESTED: i32 = 3;
    pub const MESSAGE_EXTENSION: i32 = 6;
    pub const SERVICE_METHOD: i32 = 2;
    pub const NAME: i32 = 1;
}

/// What the build was told to leave out.
pub(crate) struct Policy<'a> {
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
    Ok(())
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
}

/// What keel-build cannot serve yet, per method kind. When a kind lands,
/// its arm goes (and with it the need to opt out).
fn unsupported_method(method: &MethodDescriptorProto) -> Option<&'static str> {
    match (method.client_streaming(), method.server_streaming()) {
        (false, false) => None,
        (true, false) => Some("client-streaming"),
        (false, true) => Some("server-streaming"),
        (true, true) => Some("bidirectional-streaming"),
    }
}

fn unsupported(source: &Source<'_>, policy: &Policy<'_>) -> Result<(), Error> {
    let file = source.proto;
    for (s, service) in file.service.iter().enumerate() {
        for (m, method) in service.method.iter().enumerate() {
            let Some(kind) = unsupported_method(method) else {
                continue;
            };
            let element = format!("{}.{}", source.full_name(service.name()), method.name());
            if policy.skips(&element) {
                continue;
            }
            let message = format!(
                "rpc `{element}` is {kind}, which Keel does not serve yet; to generate only its \
                 descriptor (no handler, no client method), call \
                 `.skip_unsupported(\"{element}\")` on the keel_build::Builder in build.rs"
            );
            let path = [tag::FILE_SERVICE, index(s), tag::SERVICE_METHOD, index(m)];
            return Err(source.unsupported(&path, element, message));
        }
    }
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

fn index(i: usize) -> i32 {
    i32::try_from(i).expect("a .proto file has fewer than 2^31 elements of a kind")
}

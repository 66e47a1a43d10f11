//! The `.proto` files themselves, embedded for server reflection: each
//! service descriptor lists the serialized `FileDescriptorProto`s of its
//! file and of every file that file imports, transitively, so a server can
//! answer grpcurl-like tools without any file on disk.
//!
//! ```text
//!   FileDescriptorSet ──► per file: name, imports, encoded bytes (source info stripped)
//!   per service:          its file, then its imports (breadth first, each once)
//!   per package module:   mod __keel_files { static ECHO_PROTO: [u8; N] = *b"..."; }
//!                         echo_service::SERVICE.files = &[&super::__keel_files::ECHO_PROTO, ..]
//! ```
//!
//! A file's bytes appear once per package module that needs them — once
//! whatever the number of services of that package — and are never referred
//! to across modules, for the same reason as the required-field tables (see
//! [`crate::required`]): no Rust path outside the package is needed. Source
//! info (comments, spans) is dropped, as `protoc-gen-go` does for the
//! descriptors it embeds: it is most of a descriptor's size and reflection
//! clients do not need it to call methods.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use protox::prost::Message as _;
use protox::prost_reflect::prost_types::FileDescriptorProto;

/// The module in each package holding the files' bytes.
pub(crate) const MODULE: &str = "__keel_files";

/// Every file of one compilation, ready to embed.
#[derive(Debug, Default)]
pub(crate) struct FilePlan {
    files: Vec<EmbeddedFile>,
    by_name: HashMap<String, usize>,
    /// `(package, service name)` to the index of the file declaring it.
    services: HashMap<(String, String), usize>,
}

#[derive(Debug)]
struct EmbeddedFile {
    name: String,
    /// The static holding the bytes, unique in the compilation.
    ident: String,
    encoded: Vec<u8>,
    /// Indexes of the files it imports (those in the set).
    imports: Vec<usize>,
}

impl FilePlan {
    /// Indexes `files`, which must hold every import of every file
    /// (protox's `include_imports`).
    pub(crate) fn new(files: &[FileDescriptorProto]) -> Self {
        let mut plan = FilePlan::default();
        let mut used = HashSet::new();
        for (index, file) in files.iter().enumerate() {
            plan.by_name.insert(file.name().to_owned(), index);
            for service in &file.service {
                plan.services.insert(
                    (file.package().to_owned(), service.name().to_owned()),
                    index,
                );
            }
            let mut ident = static_ident(file.name());
            let mut suffix = 1;
            while !used.insert(ident.clone()) {
                suffix += 1;
                ident = format!("{}_{suffix}", static_ident(file.name()));
            }
            let mut stripped = file.clone();
            stripped.source_code_info = None;
            plan.files.push(EmbeddedFile {
                name: file.name().to_owned(),
                ident,
                encoded: stripped.encode_to_vec(),
                imports: Vec::new(),
            });
        }
        for (index, file) in files.iter().enumerate() {
            let imports = file
                .dependency
                .iter()
                .filter_map(|name| plan.by_name.get(name).copied())
                .collect();
            plan.files[index].imports = imports;
        }
        plan
    }

    /// The files service `name` of `package` needs, its own first, then its
    /// imports breadth first, each once; empty for a service not in the set.
    pub(crate) fn service_files(&self, package: &str, name: &str) -> Vec<usize> {
        let Some(&own) = self.services.get(&(package.to_owned(), name.to_owned())) else {
            return Vec::new();
        };
        let mut order = vec![own];
        let mut seen: HashSet<usize> = order.iter().copied().collect();
        let mut next = 0;
        while let Some(&index) = order.get(next) {
            next += 1;
            for &import in &self.files[index].imports {
                if seen.insert(import) {
                    order.push(import);
                }
            }
        }
        order
    }

    /// The expression for a service descriptor's `files`, from its package
    /// module's child (the service's descriptor module).
    pub(crate) fn files_expr(&self, indexes: &[usize]) -> String {
        let items: Vec<String> = indexes
            .iter()
            .map(|&i| format!("&super::{MODULE}::{}", self.files[i].ident))
            .collect();
        format!("&[{}]", items.join(", "))
    }

    /// The package module's `__keel_files`: one static per file in
    /// `indexes`.
    pub(crate) fn module_code(&self, indexes: &BTreeSet<usize>) -> String {
        let mut code = format!(
            "/// The `.proto` files this package's services are declared in and \
             import, as serialized `google.protobuf.FileDescriptorProto`s \
             (without source info), for server reflection.\n\
             mod {MODULE} {{\n"
        );
        for &index in indexes {
            let file = &self.files[index];
            let _ = writeln!(
                code,
                "/// `{}`.\n\
                 pub(super) static {}: [u8; {}] = *{};",
                file.name,
                file.ident,
                file.encoded.len(),
                byte_string(&file.encoded)
            );
        }
        code.push_str("}\n");
        code
    }
}

/// `echo.proto` -> `ECHO_PROTO`, `grpc/health/v1/health.proto` ->
/// `GRPC_HEALTH_V1_HEALTH_PROTO`.
fn static_ident(file_name: &str) -> String {
    let mut ident: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if ident.starts_with(|c: char| c.is_ascii_digit()) || ident.is_empty() {
        ident.insert(0, '_');
    }
    ident
}

/// A Rust byte-string literal holding `bytes`: printable ASCII as itself,
/// the rest escaped.
fn byte_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2 + 3);
    out.push_str("b\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, package: &str, deps: &[&str], services: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.to_owned()),
            package: Some(package.to_owned()),
            dependency: deps.iter().map(|d| (*d).to_owned()).collect(),
            service: services
                .iter()
                .map(
                    |s| protox::prost_reflect::prost_types::ServiceDescriptorProto {
                        name: Some((*s).to_owned()),
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_needs_its_file_then_its_imports_once() {
        let plan = FilePlan::new(&[
            file("c.proto", "p", &[], &[]),
            file("b.proto", "p", &["c.proto"], &[]),
            file("a.proto", "p", &["b.proto", "c.proto"], &["S"]),
        ]);
        assert_eq!(plan.service_files("p", "S"), [2, 1, 0]);
        assert!(plan.service_files("p", "T").is_empty());
        assert_eq!(
            plan.files_expr(&[2, 1]),
            "&[&super::__keel_files::A_PROTO, &super::__keel_files::B_PROTO]"
        );
    }

    #[test]
    fn names_are_identifiers_and_unique() {
        let plan = FilePlan::new(&[
            file("a-b.proto", "p", &[], &[]),
            file("a_b.proto", "p", &[], &[]),
            file("9.proto", "p", &[], &[]),
        ]);
        let idents: Vec<&str> = plan.files.iter().map(|f| f.ident.as_str()).collect();
        assert_eq!(idents, ["A_B_PROTO", "A_B_PROTO_2", "_9_PROTO"]);
    }

    #[test]
    fn bytes_round_trip_through_the_literal() {
        let bytes: Vec<u8> = (0..=255).collect();
        let literal = byte_string(&bytes);
        assert!(literal.starts_with("b\"\\x00\\x01"));
        assert!(literal.contains("AB"));
        assert!(literal.contains("\\\"") && literal.contains("\\\\"));
        // Every byte is one char or one `\xNN` / `\"` / `\\` escape.
        let escaped = literal.matches("\\x").count();
        assert_eq!(escaped, 256 - 95);
    }
}

//! Proto2 `required` fields: which message types need a presence check, and
//! the code that checks them.
//!
//! prost keeps no presence for a required field (a missing `string` decodes
//! as `""`), while brpc refuses such a message. So, per protobuf package,
//! keel-build emits a table for every message type that needs a check and
//! the `keel::codec::RequiredFields` impls that point at them; the Keel
//! runtime walks the encoded bytes against the table before prost decodes.
//!
//! ```text
//!   FileDescriptorProtos ──► every message: required numbers, message-typed fields
//!                            needs(M) = M has required fields
//!                                     ∨ some field of M holds a type T with needs(T)
//!   per package:             mod __keel_required { static PKG__MSG: RequiredSchema = .. }
//!                            impl RequiredFields for Msg { const REQUIRED = &PKG__MSG; }
//! ```
//!
//! Each package's `__keel_required` module holds the tables of every type its
//! own messages and services reach, other packages' included (a few bytes
//! each). Tables are therefore never referred to across modules, so no Rust
//! path outside the package is needed, and types prost maps elsewhere
//! (`extern_path`, the well-known types) are covered too. Impls go only to
//! the types prost generated: not to map entries, nor to types it maps
//! elsewhere (`extern_path`; by default the well-known types, which
//! `prost-types` provides), whose tables serve the call sites alone.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use protox::prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
use protox::prost_reflect::prost_types::{DescriptorProto, FileDescriptorProto};

/// The module in each package holding the tables.
pub(crate) const MODULE: &str = "__keel_required";

/// What the generator knows about required fields in one compilation.
#[derive(Debug, Default)]
pub(crate) struct RequiredPlan {
    /// Every message type, by full name (no leading dot).
    messages: HashMap<String, MessageInfo>,
    /// Full names of the types that need a check.
    needs: HashSet<String>,
    /// Per package: the tables to emit, in order, with their static names.
    packages: HashMap<String, PackageTables>,
    /// The package of each file, in the order prost-build generates them.
    file_packages: Vec<String>,
}

#[derive(Debug)]
struct MessageInfo {
    package: String,
    /// Path from the package module, as prost names it: `Outer`, `outer::Inner`.
    rust_path: String,
    map_entry: bool,
    /// `(number, name)` of the required fields.
    required: Vec<(u32, String)>,
    /// Message- and group-typed fields: `(number, group, type full name)`.
    message_fields: Vec<(u32, bool, String)>,
    /// Declared directly in the package (not a map entry).
    has_rust_type: bool,
}

#[derive(Debug, Default)]
struct PackageTables {
    /// `(full name, static name)`, in emission order.
    tables: Vec<(String, String)>,
    by_name: HashMap<String, String>,
    /// Own types with a Rust struct that need a check, in declaration order.
    impls: Vec<String>,
}

impl RequiredPlan {
    /// Indexes `files` (given in the order prost-build will generate them).
    pub(crate) fn new(files: &[FileDescriptorProto]) -> Self {
        let mut plan = RequiredPlan::default();
        let mut own: HashMap<String, Vec<String>> = HashMap::new();
        for file in files {
            let package = file.package().to_owned();
            plan.file_packages.push(package.clone());
            let names = own.entry(package.clone()).or_default();
            for message in &file.message_type {
                plan.add_message(&package, &package, "", message, names);
            }
        }
        plan.compute_needs();

        // Roots per package: its own types, then its services' messages.
        let mut roots: HashMap<String, Vec<String>> = own;
        for file in files {
            let list = roots.entry(file.package().to_owned()).or_default();
            for method in file.service.iter().flat_map(|s| &s.method) {
                for ty in [method.input_type(), method.output_type()] {
                    list.push(ty.trim_start_matches('.').to_owned());
                }
            }
        }
        let mut packages: Vec<_> = roots.into_iter().collect();
        packages.sort();
        for (package, roots) in packages {
            let tables = plan.package_tables(&package, &roots);
            plan.packages.insert(package, tables);
        }
        plan
    }

    fn add_message(
        &mut self,
        package: &str,
        scope: &str,
        rust_scope: &str,
        message: &DescriptorProto,
        own: &mut Vec<String>,
    ) {
        let full_name = join(scope, message.name());
        let map_entry = message
            .options
            .as_ref()
            .is_some_and(|o| o.map_entry.unwrap_or(false));
        let rust_path = format!("{rust_scope}{}", prost_type_ident(message.name()));
        let mut info = MessageInfo {
            package: package.to_owned(),
            rust_path,
            map_entry,
            required: Vec::new(),
            message_fields: Vec::new(),
            has_rust_type: !map_entry,
        };
        for field in &message.field {
            let number = u32::try_from(field.number()).unwrap_or(0);
            if field.label() == Label::Required {
                info.required.push((number, field.name().to_owned()));
            }
            if matches!(field.r#type(), Type::Message | Type::Group) {
                info.message_fields.push((
                    number,
                    field.r#type() == Type::Group,
                    field.type_name().trim_start_matches('.').to_owned(),
                ));
            }
        }
        info.required.sort();
        info.message_fields.sort();
        own.push(full_name.clone());
        self.messages.insert(full_name.clone(), info);

        let nested_scope = format!("{rust_scope}{}::", prost_module_ident(message.name()));
        for nested in &message.nested_type {
            self.add_message(package, &full_name, &nested_scope, nested, own);
        }
    }

    /// The fixed point of "has required fields, or holds a type that needs
    /// a check" (recursive types included).
    fn compute_needs(&mut self) {
        let mut needs: HashSet<String> = self
            .messages
            .iter()
            .filter(|(_, m)| !m.required.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        loop {
            let before = needs.len();
            for (name, message) in &self.messages {
                if !needs.contains(name)
                    && message
                        .message_fields
                        .iter()
                        .any(|(_, _, ty)| needs.contains(ty))
                {
                    needs.insert(name.clone());
                }
            }
            if needs.len() == before {
                break;
            }
        }
        self.needs = needs;
    }

    /// The tables package `package` emits: the types among `roots` that need
    /// a check, and everything they reach that does.
    fn package_tables(&self, package: &str, roots: &[String]) -> PackageTables {
        let mut tables = PackageTables::default();
        let mut used = HashSet::new();
        let mut queue: Vec<&str> = roots
            .iter()
            .map(String::as_str)
            .filter(|name| self.needs.contains(*name))
            .collect();
        let mut next = 0;
        while let Some(&name) = queue.get(next) {
            next += 1;
            if tables.by_name.contains_key(name) {
                continue;
            }
            let mut ident = static_ident(name);
            let mut suffix = 1;
            while !used.insert(ident.clone()) {
                suffix += 1;
                ident = format!("{}_{suffix}", static_ident(name));
            }
            tables.by_name.insert(name.to_owned(), ident.clone());
            tables.tables.push((name.to_owned(), ident));
            let message = &self.messages[name];
            if message.package == package && message.has_rust_type {
                tables.impls.push(name.to_owned());
            }
            queue.extend(
                message
                    .message_fields
                    .iter()
                    .map(|(_, _, ty)| ty.as_str())
                    .filter(|ty| self.needs.contains(*ty)),
            );
        }
        tables
    }

    /// The code to append once prost-build generated file `index` (in
    /// request order) into `buf`: the package's tables and impls if that was
    /// the package's last file and something in it needs a check.
    pub(crate) fn package_code_after_file(
        &self,
        index: usize,
        buf: &str,
        rt: &str,
    ) -> Option<String> {
        let package = self.file_packages.get(index)?;
        let last = self.file_packages.iter().rposition(|p| p == package);
        if last != Some(index) || buf.is_empty() {
            // Not the last file, or prost generated nothing for the package
            // (all its types are extern).
            return None;
        }
        // prost skips extern types; implement the trait only for the
        // structs it wrote (`pub struct Name {`, before formatting).
        let generated = |name: &str| {
            let ident = prost_type_ident(name.rsplit('.').next().unwrap_or(name));
            buf.contains(&format!("pub struct {ident} {{"))
        };
        let code = self.package_code(package, rt, generated);
        (!code.is_empty()).then_some(code)
    }

    /// The argument a call site in `package` passes for message type
    /// `proto_type` (`.example.EchoRequest`): `Some(&table)` or `None`.
    pub(crate) fn call_arg(&self, package: &str, proto_type: &str) -> String {
        let name = proto_type.trim_start_matches('.');
        match self.packages.get(package).and_then(|t| t.by_name.get(name)) {
            Some(ident) => format!("::core::option::Option::Some(&{MODULE}::{ident})"),
            None => "::core::option::Option::None".to_owned(),
        }
    }

    /// The tables and impls of `package`; empty when nothing in it needs a
    /// check. Only types for which `generated` holds get an impl.
    fn package_code(&self, package: &str, rt: &str, generated: impl Fn(&str) -> bool) -> String {
        let mut buf = String::new();
        let Some(tables) = self.packages.get(package) else {
            return buf;
        };
        if tables.tables.is_empty() {
            return buf;
        }
        let _ = writeln!(
            buf,
            "/// Proto2 `required` fields of the messages this package uses: the tables \
             `{rt}::codec::RequiredFields` and the generated services check encoded \
             messages against before decoding.\n\
             #[allow(dead_code)]\n\
             mod {MODULE} {{"
        );
        for (name, ident) in &tables.tables {
            let message = &self.messages[name];
            let required: Vec<String> = message
                .required
                .iter()
                .map(|(number, field)| {
                    format!(
                        "{rt}::codec::RequiredField {{ number: {number}, path: \"{name}.{field}\" }}"
                    )
                })
                .collect();
            let nested: Vec<String> = message
                .message_fields
                .iter()
                .filter(|(_, _, ty)| self.needs.contains(ty))
                .map(|(number, group, ty)| {
                    format!(
                        "{rt}::codec::NestedField {{ number: {number}, group: {group}, schema: &{} }}",
                        tables.by_name[ty]
                    )
                })
                .collect();
            let _ = writeln!(
                buf,
                "/// `{name}`.\n\
                 pub static {ident}: {rt}::codec::RequiredSchema = {rt}::codec::RequiredSchema {{\n\
                 message: \"{name}\",\n\
                 required: &[{}],\n\
                 nested: &[{}],\n\
                 map_entry: {},\n\
                 }};",
                required.join(", "),
                nested.join(", "),
                message.map_entry,
            );
        }
        buf.push_str("}\n");
        for name in tables.impls.iter().filter(|name| generated(name)) {
            let _ = writeln!(
                buf,
                "impl {rt}::codec::RequiredFields for {} {{\n\
                 const REQUIRED: &'static {rt}::codec::RequiredSchema = &{MODULE}::{};\n\
                 }}",
                self.messages[name].rust_path, tables.by_name[name],
            );
        }
        buf
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// `example.Outer.Inner` -> `EXAMPLE__OUTER__INNER`.
fn static_ident(full_name: &str) -> String {
    full_name
        .split('.')
        .map(|part| part.to_shouty_snake_case())
        .collect::<Vec<_>>()
        .join("__")
}

/// The struct name prost gives message `name`.
fn prost_type_ident(name: &str) -> String {
    prost_sanitize(name.to_upper_camel_case())
}

/// The module prost puts message `name`'s nested types in.
fn prost_module_ident(name: &str) -> String {
    prost_sanitize(name.to_snake_case())
}

/// prost-build's identifier escaping (its `ident::sanitize_identifier`).
fn prost_sanitize(ident: String) -> String {
    match ident.as_str() {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{ident}"),
        _ => ident,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prost() {
        assert_eq!(static_ident("example.EchoRequest"), "EXAMPLE__ECHO_REQUEST");
        assert_eq!(static_ident("a.b.Outer.Inner"), "A__B__OUTER__INNER");
        assert_eq!(prost_type_ident("echo_request"), "EchoRequest");
        assert_eq!(prost_type_ident("Self"), "Self_");
        assert_eq!(prost_module_ident("Type"), "r#type");
        assert_eq!(prost_module_ident("OuterMsg"), "outer_msg");
    }
}

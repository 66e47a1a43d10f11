//! The pipeline: protox parses and checks the `.proto` files into a
//! `FileDescriptorSet`, prost-build turns that into messages, and
//! [`ServiceGenerator`] adds the Keel service code. No `protoc` anywhere.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use prost_build::Module;

use crate::check::{self, Policy};
use crate::error::searched;
use crate::{Error, ServiceGenerator};

/// Configures and runs code generation; [`compile_protos`](crate::compile_protos)
/// is `Builder::new().compile(..)`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), keel_build::Error> {
///     keel_build::configure()
///         .build_client(false)
///         .compile(&["proto/echo.proto"], &["proto"])
/// }
/// ```
pub struct Builder {
    out_dir: Option<PathBuf>,
    generator: ServiceGenerator,
    emit_rerun_if_changed: bool,
    /// Full names (no leading dot) of unsupported elements to skip.
    skip: HashSet<String>,
    skip_all: bool,
    prost: prost_build::Config,
}

/// One generated Rust file, returned by [`Builder::generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The file name `compile` would write: the protobuf package plus `.rs`
    /// (`example.rs`), `_.rs` for files without a package.
    pub name: String,
    /// The formatted Rust source.
    pub code: String,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("out_dir", &self.out_dir)
            .field("generator", &self.generator)
            .field("emit_rerun_if_changed", &self.emit_rerun_if_changed)
            .field("skip", &self.skip)
            .field("skip_all", &self.skip_all)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Defaults: write into `OUT_DIR`, generate servers and clients that refer
    /// to `::keel` (well-known types to `::keel::prost_types`), print
    /// `cargo:rerun-if-changed` for every file read, fail on anything
    /// unsupported.
    pub fn new() -> Self {
        Builder {
            out_dir: None,
            generator: ServiceGenerator::new(),
            emit_rerun_if_changed: true,
            skip: HashSet::new(),
            skip_all: false,
            prost: prost_build::Config::new(),
        }
        .runtime_path("::keel")
    }

    /// Writes the generated files into `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Refers to the Keel runtime as `path` (absolute, e.g. `::keel` — the
    /// default — or `crate` for code included inside keel itself).
    ///
    /// The well-known types (`google.protobuf.Timestamp`, `Duration`, `Any`,
    /// ...) are referred to as `{path}::prost_types`, the `prost-types` crate
    /// Keel re-exports, so a crate with generated code needs no dependency
    /// of its own on it. To point them elsewhere, call
    /// `prost_config(|c| { c.prost_types_path(..); })` after this.
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.prost.prost_types_path(format!("{path}::prost_types"));
        self.generator = self.generator.runtime_path(path);
        self
    }

    /// Whether to generate server traits and adapters (default `true`).
    pub fn build_server(mut self, enabled: bool) -> Self {
        self.generator = self.generator.build_server(enabled);
        self
    }

    /// Whether to generate clients (default `true`).
    pub fn build_client(mut self, enabled: bool) -> Self {
        self.generator = self.generator.build_client(enabled);
        self
    }

    /// Whether to print `cargo:rerun-if-changed=PATH` for every `.proto`
    /// file read, imports included (default `true`; turn it off outside
    /// build scripts).
    pub fn emit_rerun_if_changed(mut self, enabled: bool) -> Self {
        self.emit_rerun_if_changed = enabled;
        self
    }

    /// Generates nothing for `element` instead of failing with
    /// [`Error::Unsupported`]: a proto2 extension (`"pkg.Message.ext_name"`, or `"pkg.ext_name"`
    /// at file level; prost generates nothing for it). A leading `.` is
    /// allowed. Call it once per element; naming one that is supported, or
    /// does not exist, changes nothing.
    ///
    /// ```no_run
    /// // build.rs: `legacy_id` is a proto2 extension of shop.v1.Item
    /// fn main() -> Result<(), keel_build::Error> {
    ///     keel_build::configure()
    ///         .skip_unsupported("shop.v1.legacy_id")
    ///         .compile(&["proto/shop.proto"], &["proto"])
    /// }
    /// ```
    pub fn skip_unsupported(mut self, element: impl AsRef<str>) -> Self {
        let element = element.as_ref().trim_start_matches('.');
        self.skip.insert(element.to_owned());
        self
    }

    /// Skips every unsupported element, as
    /// [`skip_unsupported`](Self::skip_unsupported) does one (default
    /// `false`). For compiling protos you do not control.
    pub fn skip_all_unsupported(mut self, enabled: bool) -> Self {
        self.skip_all = enabled;
        self
    }

    /// Adjusts the prost-build configuration for messages (attributes,
    /// `bytes` fields, extern paths, ...). Its service generator and output
    /// directory are set by this builder and are overridden.
    pub fn prost_config(mut self, configure: impl FnOnce(&mut prost_build::Config)) -> Self {
        configure(&mut self.prost);
        self
    }

    /// Compiles `protos` (paths on disk, or names relative to `includes`)
    /// and writes one Rust file per protobuf package into the output directory.
    pub fn compile(
        mut self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match self.out_dir.take() {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::OutDirNotSet)?,
        };
        let (fds, generator) = self.prepare(protos, includes)?;
        self.prost
            .out_dir(out_dir)
            .service_generator(Box::new(generator))
            .compile_fds(fds)
            .map_err(Error::Codegen)?;
        Ok(())
    }

    /// Like [`compile`](Self::compile) but returns the files instead of
    /// writing them (for tests and tools); prints nothing.
    pub fn generate(
        mut self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<GeneratedFile>, Error> {
        self.emit_rerun_if_changed = false;
        let (fds, generator) = self.prepare(protos, includes)?;
        let requests: Vec<_> = fds
            .file
            .into_iter()
            .map(|file| (Module::from_protobuf_package_name(file.package()), file))
            .collect();
        let modules = self
            .prost
            .service_generator(Box::new(generator))
            .generate(requests)
            .map_err(Error::Codegen)?;
        let mut files: Vec<GeneratedFile> = modules
            .into_iter()
            .map(|(module, code)| GeneratedFile {
                name: module.to_file_name_or("_"),
                code,
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// What both [`compile`](Self::compile) and
    /// [`generate`](Self::generate) start from: the files parsed and
    /// checked, and the service generator primed with their descriptors
    /// (prost-build generates the files in this order, so the generator's
    /// `finalize` meets them in it too).
    fn prepare(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<
        (
            protox::prost_reflect::prost_types::FileDescriptorSet,
            ServiceGenerator,
        ),
        Error,
    > {
        let fds = self.load(protos, includes)?.file_descriptor_set();
        self.check(&fds.file, includes)?;
        let generator = self
            .generator
            .clone()
            .required_fields(&fds.file)
            .file_descriptors(&fds.file);
        Ok((fds, generator))
    }

    /// Parses and checks the files with protox; the compiler holds the
    /// resulting descriptors.
    fn load(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<protox::Compiler, Error> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        for proto in protos {
            let proto = proto.as_ref();
            // protox reports a missing file as "not in any include path",
            // which sends people looking in the wrong place.
            if !proto.exists() && !includes.iter().any(|dir| dir.join(proto).is_file()) {
                return Err(Error::Proto {
                    file: Some(proto.to_path_buf()),
                    line: None,
                    column: None,
                    message: format!(
                        "file not found (neither on disk nor under an include directory); {}",
                        searched(&includes)
                    ),
                });
            }
        }
        let protox_err = |err: protox::Error| Error::from_protox(&err, &includes);
        let mut compiler = protox::Compiler::new(&includes).map_err(protox_err)?;
        compiler
            .include_source_info(true)
            .include_imports(true)
            .open_files(protos)
            .map_err(protox_err)?;
        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        Ok(compiler)
    }

    /// Refuses what cannot be generated: unsupported elements not opted
    /// out, and names that would clash in the generated code.
    fn check(
        &self,
        files: &[protox::prost_reflect::prost_types::FileDescriptorProto],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let policy = Policy {
            server: self.generator.builds_server(),
            client: self.generator.builds_client(),
            skip: &self.skip,
            skip_all: self.skip_all,
        };
        check::run(files, &includes, &policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto")
    }

    /// A fresh directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("keel-build-{}", std::process::id()))
                .join(name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write fixture");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A builder for the fixtures.
    fn fixture_builder() -> Builder {
        Builder::new()
    }

    fn generate_one(proto: &str) -> GeneratedFile {
        let mut files = fixture_builder()
            .generate(&[proto], &[fixtures()])
            .expect("generation succeeds");
        assert_eq!(files.len(), 1, "one package, one file");
        files.remove(0)
    }

    fn assert_contains(code: &str, needles: &[&str]) {
        for needle in needles {
            assert!(code.contains(needle), "missing `{needle}` in:\n{code}");
        }
    }

    /// `code` without whitespace and trailing commas, so needles do not
    /// depend on where the formatter breaks lines.
    fn squash(code: &str) -> String {
        let joined: String = code.split_whitespace().collect();
        joined
            .replace(",)", ")")
            .replace(",]", "]")
            .replace(",}", "}")
    }

    /// Like [`assert_contains`], ignoring whitespace.
    fn assert_contains_squashed(code: &str, needles: &[&str]) {
        let squashed = squash(code);
        for needle in needles {
            assert!(
                squashed.contains(&squash(needle)),
                "missing `{needle}` in:\n{code}"
            );
        }
    }

    fn generate_all(protos: &[&str]) -> Vec<GeneratedFile> {
        fixture_builder()
            .generate(protos, &[fixtures()])
            .expect("generation succeeds")
    }

    #[test]
    fn proto2_required_fields_get_tables_impls_and_checked_call_sites() {
        let file = generate_one("echo.proto");
        let code = &file.code;
        assert_contains(
            code,
            &[
                "#[allow(dead_code)]\nmod __keel_required {",
                "    /// `example.EchoRequest`.\n    pub static EXAMPLE__ECHO_REQUEST: ::keel::codec::RequiredSchema = ::keel::codec::RequiredSchema {\n        message: \"example.EchoRequest\",\n        required: &[\n            ::keel::codec::RequiredField {\n                number: 1,\n                path: \"example.EchoRequest.message\",\n            },\n        ],\n        nested: &[],\n        map_entry: false,\n    };",
                "pub static EXAMPLE__ECHO_RESPONSE: ::keel::codec::RequiredSchema",
                "path: \"example.EchoResponse.message\"",
                "impl ::keel::codec::RequiredFields for EchoRequest {\n    const REQUIRED: &'static ::keel::codec::RequiredSchema = &__keel_required::EXAMPLE__ECHO_REQUEST;\n}",
                "impl ::keel::codec::RequiredFields for EchoResponse {",
            ],
        );
        assert_contains_squashed(
            code,
            &[
                // the server checks the request, the client the response
                "MESSAGES.take(&echo_service::ECHO, \
                 ::core::option::Option::Some(&__keel_required::EXAMPLE__ECHO_REQUEST), \
                 request)?",
                ".unary(&echo_service::ECHO, request, \
                 ::core::option::Option::Some(&__keel_required::EXAMPLE__ECHO_RESPONSE))",
            ],
        );
        assert_eq!(code.matches("mod __keel_required").count(), 1);
    }

    #[test]
    fn proto3_gets_no_required_code_and_unchecked_call_sites() {
        let file = generate_one("shop.proto");
        let code = &file.code;
        for absent in ["__keel_required", "RequiredFields", "RequiredSchema"] {
            assert!(!code.contains(absent), "`{absent}` in:\n{code}");
        }
        assert_contains_squashed(
            code,
            &[
                "MESSAGES.take(&inventory::PUT_ITEM, ::core::option::Option::None, request)?",
                "MESSAGES.take(&pricing::CLEAR, ::core::option::Option::None, request)?",
                ".unary(&inventory::GET_ITEM, request, ::core::option::Option::None)",
                ".unary(&pricing::QUOTE_ITEM, request, ::core::option::Option::None)",
            ],
        );
    }

    #[test]
    fn nested_required_fields_are_reached_through_every_kind_of_field() {
        let files = generate_all(&["required.proto"]);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["required.dep.rs", "required.rs"]);
        let (dep, code) = (&files[0].code, &files[1].code);

        // The imported package has its own table and impl.
        assert_contains(
            dep,
            &[
                "pub static REQUIRED__DEP__TAG: ::keel::codec::RequiredSchema",
                "path: \"required.dep.Tag.key\"",
                "impl ::keel::codec::RequiredFields for Tag {",
            ],
        );
        assert_eq!(dep.matches("mod __keel_required").count(), 1);

        let nested = |number: u32, group: bool, table: &str| {
            format!(
                "::keel::codec::NestedField {{ number: {number}, group: {group}, schema: &{table}, }}"
            )
        };
        let tree_nested = [
            nested(2, false, "REQUIRED__LEAF"),                // singular
            nested(3, false, "REQUIRED__LEAF"),                // repeated
            nested(4, false, "REQUIRED__TREE__BY_NAME_ENTRY"), // map value
            nested(5, true, "REQUIRED__TREE__EXTRA"),          // group
            nested(7, false, "REQUIRED__TREE"),                // recursion
            nested(8, false, "REQUIRED__DEP__TAG"),            // other package
            nested(9, false, "REQUIRED__LEAF"),                // oneof member
            nested(11, false, "REQUIRED__TREE__INNER"),        // nested type
        ]
        .join(",");
        assert_contains_squashed(
            code,
            &[
                &format!(
                    "pub static REQUIRED__TREE: ::keel::codec::RequiredSchema = ::keel::codec::RequiredSchema {{ \
                     message: \"required.Tree\", \
                     required: &[::keel::codec::RequiredField {{ number: 1, path: \"required.Tree.name\", }},], \
                     nested: &[{tree_nested},], \
                     map_entry: false, }};"
                ),
                &format!(
                    "pub static REQUIRED__TREE__BY_NAME_ENTRY: ::keel::codec::RequiredSchema = ::keel::codec::RequiredSchema {{ \
                     message: \"required.Tree.ByNameEntry\", required: &[], \
                     nested: &[{},], map_entry: true, }};",
                    nested(2, false, "REQUIRED__LEAF")
                ),
                "path: \"required.Tree.Extra.x\"",
                "path: \"required.Tree.Inner.on\"",
                // The imported type's table is repeated here: tables never
                // refer across packages.
                "pub static REQUIRED__DEP__TAG: ::keel::codec::RequiredSchema",
                // impls for the package's own types, nested ones by path
                "impl ::keel::codec::RequiredFields for Leaf {",
                "impl ::keel::codec::RequiredFields for Tree {",
                "impl ::keel::codec::RequiredFields for tree::Extra {",
                "impl ::keel::codec::RequiredFields for tree::Inner {",
                // each call site checks what needs it, and only that
                "MESSAGES.take(&forest::PLANT, \
                 ::core::option::Option::Some(&__keel_required::REQUIRED__TREE), request)?",
                "MESSAGES.take(&forest::PICK, ::core::option::Option::None, request)?",
                ".unary(&forest::PLANT, request, ::core::option::Option::None)",
                ".unary(&forest::PICK, request, \
                 ::core::option::Option::Some(&__keel_required::REQUIRED__LEAF))",
            ],
        );
        // No impl for the other package's type, the map entry, or `Plain`,
        // which needs no check; `plain`/`plains` are not in Tree's table.
        for absent in [
            "RequiredFields for Tag",
            "RequiredFields for dep::Tag",
            "ByNameEntry {",
            "PLAIN",
            "number: 12",
            "number: 13",
        ] {
            assert!(!code.contains(absent), "`{absent}` in:\n{code}");
        }
        assert_eq!(code.matches("mod __keel_required").count(), 1);
    }

    #[test]
    fn a_package_split_over_files_gets_its_tables_once() {
        let dir = Scratch::new("split");
        dir.write(
            "a.proto",
            "syntax = \"proto2\";\npackage split;\nmessage A { required int32 a = 1; }\n",
        );
        dir.write(
            "b.proto",
            "syntax = \"proto2\";\npackage split;\nimport \"a.proto\";\n\
             message B { optional A a = 1; }\nservice S { rpc Get(B) returns (A); }\n",
        );
        let files = Builder::new()
            .generate(&["b.proto"], &[&dir.0])
            .expect("generates");
        assert_eq!(files.len(), 1);
        let code = &files[0].code;
        assert_eq!(code.matches("mod __keel_required").count(), 1, "{code}");
        assert_contains(
            code,
            &[
                "impl ::keel::codec::RequiredFields for A {",
                "impl ::keel::codec::RequiredFields for B {",
            ],
        );
        assert_contains_squashed(
            code,
            &["MESSAGES.take(&s::GET, \
               ::core::option::Option::Some(&__keel_required::SPLIT__B), request)?"],
        );
    }

    #[test]
    fn extern_types_get_tables_but_no_impls() {
        let dir = Scratch::new("wkt");
        dir.write(
            "wkt.proto",
            "syntax = \"proto2\";\npackage wkt;\nimport \"google/protobuf/descriptor.proto\";\n\
             message Holder { optional google.protobuf.FileDescriptorProto file = 1; }\n\
             service S { rpc Get(Holder) returns (google.protobuf.UninterpretedOption); }\n",
        );
        // By default prost maps google.protobuf to prost-types: nothing is
        // generated for it, and no impl may name its types.
        let files = Builder::new()
            .generate(&["wkt.proto"], &[&dir.0])
            .expect("generates");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["wkt.rs"]);
        let code = &files[0].code;
        assert_contains(
            code,
            &[
                "impl ::keel::codec::RequiredFields for Holder {",
                "pub static GOOGLE__PROTOBUF__UNINTERPRETED_OPTION__NAME_PART: ::keel::codec::RequiredSchema",
                "path: \"google.protobuf.UninterpretedOption.NamePart.name_part\"",
            ],
        );
        assert_contains_squashed(
            code,
            &[".unary(&s::GET, request, ::core::option::Option::Some(\
               &__keel_required::GOOGLE__PROTOBUF__UNINTERPRETED_OPTION))"],
        );
        assert_eq!(
            code.matches("impl ::keel::codec::RequiredFields").count(),
            1
        );

        // Compiled in place, the well-known types get their impls.
        let files = Builder::new()
            .prost_config(|c| {
                c.compile_well_known_types();
            })
            .generate(&["wkt.proto"], &[&dir.0])
            .expect("generates");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["google.protobuf.rs", "wkt.rs"]);
        assert_contains(
            &files[0].code,
            &[
                "impl ::keel::codec::RequiredFields for UninterpretedOption {",
                "impl ::keel::codec::RequiredFields for uninterpreted_option::NamePart {",
                "impl ::keel::codec::RequiredFields for FileDescriptorProto {",
            ],
        );
    }

    #[test]
    fn a_generator_without_descriptors_checks_nothing() {
        let fds = protox::compile(["echo.proto"], [fixtures()]).expect("parses");
        let requests = fds
            .file
            .into_iter()
            .map(|f| (Module::from_protobuf_package_name(f.package()), f))
            .collect();
        let modules = prost_build::Config::new()
            .service_generator(Box::new(ServiceGenerator::new()))
            .generate(requests)
            .expect("generates");
        let code = modules.values().next().expect("one module");
        assert!(!code.contains("__keel_required"), "{code}");
        assert_contains_squashed(
            code,
            &["MESSAGES.take(&echo_service::ECHO, ::core::option::Option::None, request)?"],
        );
    }

    #[test]
    fn proto2_echo_generates_messages_trait_client_and_descriptors() {
        let file = generate_one("echo.proto");
        assert_eq!(file.name, "example.rs");
        assert_contains(
            &file.code,
            &[
                // prost messages, with proto2 `required` understood
                "pub struct EchoRequest",
                "#[prost(string, required, tag = \"1\")]",
                // server trait and adapter
                "pub trait EchoService: ::core::marker::Send + ::core::marker::Sync + 'static",
                "fn echo(\n        &self,\n        ctx: &::keel::Context,\n        request: &EchoRequest,\n        response: &mut EchoResponse,",
                "Output = ::core::result::Result<(), ::keel::Status>,",
                "pub struct EchoServiceServer<S>",
                "impl<S: EchoService> ::keel::server::Service for EchoServiceServer<S>",
                "static MESSAGES: ::keel::server::MessagePools<",
                // client
                "pub struct EchoServiceClient",
                "pub fn new(channel: &::keel::Channel) -> Self",
                "pub fn with_options(&self, options: ::keel::CallOptions) -> Self",
                "pub fn echo<'a>(\n        &'a self,\n        request: &'a EchoRequest,\n    ) -> ::keel::client::UnaryCall<'a, EchoRequest, EchoResponse>",
                // static descriptors
                "pub mod echo_service",
                "pub static ECHO: ::keel::MethodDescriptor",
                "service: \"example.EchoService\"",
                "method: \"Echo\"",
                "path: \"/example.EchoService/Echo\"",
                "request_type: \"example.EchoRequest\"",
                "kind: ::keel::MethodKind::Unary",
                "pub static SERVICE: ::keel::ServiceDescriptor",
                "methods: &[&ECHO]",
                "files: &[&super::__keel_files::ECHO_PROTO]",
            ],
        );
    }

    #[test]
    fn service_descriptors_embed_their_files_once_per_package() {
        use protox::prost::Message as _;
        use protox::prost_reflect::prost_types::FileDescriptorProto;

        /// The bytes of static `name` in `code`, unescaped.
        fn embedded(code: &str, name: &str) -> Vec<u8> {
            let start = code
                .find(&format!("static {name}: [u8; "))
                .unwrap_or_else(|| panic!("no static {name} in:\n{code}"));
            let literal = &code[start..];
            let literal = &literal[literal.find("*b\"").expect("a byte string") + 3..];
            let mut bytes = Vec::new();
            let mut chars = literal.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return bytes,
                    '\\' => match chars.next() {
                        Some('x') => {
                            let hex: String = chars.by_ref().take(2).collect();
                            bytes.push(u8::from_str_radix(&hex, 16).expect("hex escape"));
                        }
                        Some(other) => bytes.push(other as u8),
                        None => break,
                    },
                    c => bytes.push(c as u8),
                }
            }
            panic!("unterminated literal")
        }

        // Two services in one file: one static, referred to by both.
        let shop = generate_one("shop.proto");
        let code = &shop.code;
        assert_eq!(code.matches("mod __keel_files").count(), 1, "{code}");
        assert_eq!(code.matches("static SHOP_PROTO: [u8; ").count(), 1);
        // Both service descriptors and every method descriptor.
        let methods = code.matches("::MethodDescriptor = ").count();
        assert!(methods >= 2, "{code}");
        assert_eq!(
            code.matches("files: &[&super::__keel_files::SHOP_PROTO]")
                .count(),
            2 + methods
        );
        let file = FileDescriptorProto::decode(&embedded(code, "SHOP_PROTO")[..])
            .expect("a FileDescriptorProto");
        assert_eq!(file.name(), "shop.proto");
        assert_eq!(file.package(), "keel.shop");
        assert_eq!(file.service.len(), 2);
        assert!(file.source_code_info.is_none(), "source info is stripped");

        // A service's imports follow its file, even from another package;
        // a package without services embeds nothing.
        let files = generate_all(&["required.proto"]);
        let (dep, code) = (&files[0].code, &files[1].code);
        assert!(!dep.contains("__keel_files"), "{dep}");
        assert_contains_squashed(
            code,
            &["files: &[&super::__keel_files::REQUIRED_PROTO, \
               &super::__keel_files::REQUIRED_DEP_PROTO]"],
        );
        let imported = FileDescriptorProto::decode(&embedded(code, "REQUIRED_DEP_PROTO")[..])
            .expect("a FileDescriptorProto");
        assert_eq!(imported.package(), "required.dep");
    }

    #[test]
    fn proto3_two_services_several_methods() {
        let file = generate_one("shop.proto");
        assert_eq!(file.name, "keel.shop.rs");
        let code = &file.code;
        assert_contains(
            code,
            &[
                "pub trait Inventory:",
                "pub trait Pricing:",
                "pub struct InventoryClient",
                "pub struct PricingClient",
                "fn put_item(",
                "fn get_item(",
                "fn quote_item(",
                "fn clear(",
                // keyword-named method is escaped, its static is not
                "fn r#type(",
                "pub fn r#type<",
                "pub static TYPE: ::keel::MethodDescriptor",
                "path: \"/keel.shop.Pricing/QuoteItem\"",
                "methods: &[&PUT_ITEM, &GET_ITEM, &TYPE, &WATCH]",
                "methods: &[&QUOTE_ITEM, &CLEAR]",
                // comments from the .proto are carried over
                "/// Keeps the shelf stocked.",
                "/// Adds or replaces an item.",
                "/// An item on the shelf.",
                // proto3 `optional` is an Option
                "pub coupon: ::core::option::Option<::prost::alloc::string::String>",
                // streaming: a handler taking a sink, a client method
                // returning the stream, and the adapter's call_stream
                "kind: ::keel::MethodKind::ServerStreaming",
                "responses: &mut ::keel::streaming::ResponseSink<",
                "pub async fn watch(",
                "::keel::streaming::Streaming<",
                "fn call_stream<'a>(",
            ],
        );
    }

    #[test]
    fn options_shape_the_output() {
        let files = Builder::new()
            .runtime_path("crate")
            .build_client(false)
            .generate(&["echo.proto"], &[fixtures()])
            .expect("generates");
        let code = &files[0].code;
        assert!(code.contains("impl<S: EchoService> crate::server::Service"));
        assert!(!code.contains("EchoServiceClient"));
        assert!(!code.contains("::keel::"));

        let files = Builder::new()
            .build_server(false)
            .generate(&["echo.proto"], &[fixtures()])
            .expect("generates");
        assert!(!files[0].code.contains("pub trait EchoService"));
        assert!(files[0].code.contains("pub struct EchoServiceClient"));
    }

    #[test]
    fn well_known_types_come_through_the_runtime() {
        let dir = Scratch::new("wkt-runtime");
        dir.write(
            "clock.proto",
            "syntax = \"proto3\";\npackage clock;\n\
             import \"google/protobuf/timestamp.proto\";\n\
             import \"google/protobuf/empty.proto\";\n\
             message Tick { google.protobuf.Timestamp at = 1; }\n\
             service Clock { rpc Now(google.protobuf.Empty) returns (Tick); }\n",
        );
        let files = Builder::new()
            .generate(&["clock.proto"], &[&dir.0])
            .expect("generates");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["clock.rs"]);
        assert_contains(
            &files[0].code,
            &["pub at: ::core::option::Option<::keel::prost_types::Timestamp>"],
        );
        assert_contains_squashed(&files[0].code, &["request: &()"]);
        assert!(
            !files[0].code.contains(" ::prost_types"),
            "{}",
            files[0].code
        );

        let files = Builder::new()
            .runtime_path("crate")
            .generate(&["clock.proto"], &[&dir.0])
            .expect("generates");
        assert_contains(
            &files[0].code,
            &["pub at: ::core::option::Option<crate::prost_types::Timestamp>"],
        );
    }

    #[test]
    fn the_clash_check_knows_every_client_method() {
        let code = generate_one("echo.proto").code;
        let start = code.find("impl EchoServiceClient {").expect("client impl");
        let end = start + code[start..].find("\n}\n").expect("end of impl");
        let mut defined: Vec<&str> = code[start..end]
            .split("pub fn ")
            .skip(1)
            .filter_map(|rest| rest.split(['(', '<']).next())
            .filter(|name| *name != "echo")
            .collect();
        // `clone` comes from `#[derive(Clone)]`.
        assert_contains(
            &code,
            &["#[derive(Debug, Clone)]\npub struct EchoServiceClient"],
        );
        defined.push("clone");
        defined.sort_unstable();
        let mut listed: Vec<&str> = crate::generator::CLIENT_METHODS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        listed.sort_unstable();
        assert_eq!(defined, listed);
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let dir = Scratch::new("syntax");
        let path = dir.write(
            "broken.proto",
            "syntax = \"proto3\";\npackage bad;\n\nmessage Broken {\n  string name = 1\n  int32 id = 2;\n}\n",
        );
        let err = Builder::new()
            .generate(&[&path], &[&dir.0])
            .expect_err("missing semicolon");
        let Error::Proto {
            file, line, column, ..
        } = &err
        else {
            panic!("expected a proto error, got {err:?}");
        };
        assert_eq!(file.as_deref(), Some(path.as_path()));
        assert_eq!(*line, Some(6), "{err}");
        assert_eq!(*column, Some(3), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:6:3: ", path.display())),
            "{text}"
        );
        assert!(text.contains("expected"), "{text}");
    }

    #[test]
    fn type_error_names_file_and_line() {
        let dir = Scratch::new("types");
        let path = dir.write(
            "unknown.proto",
            "syntax = \"proto3\";\npackage bad;\n\nmessage Holder {\n  Missing thing = 1;\n}\n",
        );
        let err = Builder::new()
            .generate(&["unknown.proto"], &[&dir.0])
            .expect_err("unknown type");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:5:", path.display())),
            "{text}"
        );
        assert!(text.contains("Missing"), "{text}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Builder::new()
            .generate(&["nope/absent.proto"], &[fixtures()])
            .expect_err("no such file");
        let text = err.to_string();
        assert!(text.starts_with("nope/absent.proto: "), "{text}");
        assert!(text.contains("not found"), "{text}");
    }

    #[test]
    fn compile_writes_into_out_dir() {
        let dir = Scratch::new("out");
        fixture_builder()
            .emit_rerun_if_changed(false)
            .out_dir(&dir.0)
            .compile(&["echo.proto", "shop.proto"], &[fixtures()])
            .expect("compiles");
        let echo = std::fs::read_to_string(dir.0.join("example.rs")).expect("example.rs");
        assert!(echo.contains("pub struct EchoServiceClient"));
        assert!(echo.contains("impl ::keel::codec::RequiredFields for EchoRequest"));
        let shop = std::fs::read_to_string(dir.0.join("keel.shop.rs")).expect("keel.shop.rs");
        assert!(shop.contains("pub struct PricingClient"));
    }

    #[test]
    fn compile_without_out_dir_says_so() {
        if std::env::var_os("OUT_DIR").is_some() {
            return; // cannot test the unset case here
        }
        let err = compile_protos_quiet(&["echo.proto"]).expect_err("no OUT_DIR");
        assert!(matches!(err, Error::OutDirNotSet), "{err:?}");
        assert!(err.to_string().contains("OUT_DIR"));
    }

    fn compile_protos_quiet(protos: &[&str]) -> Result<(), Error> {
        Builder::new()
            .emit_rerun_if_changed(false)
            .compile(protos, &[fixtures()])
    }

    /// Re-runs [`child_generates_with_empty_path`] in a child process whose
    /// `PATH` is empty and whose `PROTOC` points nowhere: any attempt to run
    /// protoc would fail there.
    #[test]
    fn generation_needs_no_protoc() {
        let exe = std::env::current_exe().expect("test binary path");
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "builder::tests::child_generates_with_empty_path",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_remove("PATH")
            .env("PROTOC", "/nonexistent/protoc")
            .env("KEEL_BUILD_NO_PROTOC_CHILD", "1")
            .output()
            .expect("spawn child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    }

    /// Runs in every test run; `generation_needs_no_protoc` also re-runs it
    /// in a child process with no `PATH` and a `PROTOC` that does not exist.
    #[test]
    fn child_generates_with_empty_path() {
        if std::env::var_os("KEEL_BUILD_NO_PROTOC_CHILD").is_some() {
            assert!(std::env::var_os("PATH").is_none());
        }
        let files = fixture_builder()
            .generate(&["echo.proto", "shop.proto"], &[fixtures()])
            .expect("generates without protoc");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["example.rs", "keel.shop.rs"]);
        assert!(files[0].code.contains("pub trait EchoService"));
        assert!(files[1].code.contains("pub struct InventoryClient"));
    }
}

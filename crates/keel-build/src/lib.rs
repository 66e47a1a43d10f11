//! `.proto` files to Rust: prost messages plus Keel service code, with no
//! system `protoc`.
//!
//! ```text
//!   .proto files ──protox──► FileDescriptorSet ──prost-build──► messages
//!   (parse, resolve imports,                      │
//!    type-check; pure Rust)                       └─ ServiceGenerator ──► per service:
//!                                                      trait Foo          (server side, async fns)
//!                                                      FooServer<S>       (keel::server::Service)
//!                                                      FooClient          (keel::Client + options)
//!                                                      mod foo { static METHOD: MethodDescriptor, ... }
//!                                                   ──► per package, if it uses proto2 `required`:
//!                                                      mod __keel_required { static ..: RequiredSchema }
//!                                                      impl keel::codec::RequiredFields for Msg
//!                                                   ──► per package with services:
//!                                                      mod __keel_files { static FOO_PROTO: [u8; N] }
//!                                                      (the .proto files, for server reflection)
//!
//!   Before prost-build runs, the FileDescriptorSet is checked: unsupported
//!   elements and name clashes are errors (see "Errors, not surprises").
//! ```
//!
//! Parsing is done by [protox](https://docs.rs/protox), so builds need no
//! `protoc` binary on `PATH`; proto2 (`required`, defaults) and proto3 both
//! work.
//!
//! # What a crate with generated code depends on
//!
//! `keel` and `prost`, nothing else (plus `keel-build` under
//! `[build-dependencies]`):
//!
//! ```toml
//! [dependencies]
//! keel = "0.1"
//! prost = "0.14"
//!
//! [build-dependencies]
//! keel-build = "0.1"
//! ```
//!
//! The well-known types (`google.protobuf.Timestamp`, `Duration`, `Any`,
//! `Struct`, ...) are generated as `::keel::prost_types::..`, the
//! `prost-types` crate keel re-exports; `google.protobuf.Empty` becomes
//! `()` and the wrapper types (`StringValue`, ...) plain Rust types, as
//! prost does. See [`Builder::runtime_path`].
//!
//! # Errors, not surprises
//!
//! Before writing any code, keel-build refuses what would not compile or
//! would not work, with an [`Error`] that prints like a compiler diagnostic
//! (`path:line:column: message`, through `Display` and `Debug` alike, so
//! `fn main() -> Result<(), keel_build::Error>` reads well):
//!
//! - **Unsupported elements** ([`Error::Unsupported`]): proto2 extensions,
//!   which prost drops (custom options, extensions of
//!   `google.protobuf.*Options`, pass). Opt out per element with
//!   [`Builder::skip_unsupported`]`("pkg.Message.ext_name")` — the element
//!   then gets nothing — or for all with [`Builder::skip_all_unsupported`].
//!   Every rpc kind is generated: streaming rpcs (served over gRPC) get
//!   handlers taking `keel::streaming` types and client methods opening
//!   the stream.
//! - **Name clashes** ([`Error::Clash`]): a message or enum named like an
//!   item generated for a service in the same package (`FooClient`,
//!   `FooServer`, the trait `Foo`, the descriptor module `foo`); an rpc named
//!   like a method the client has (`new`, `from_client`, `with_options`,
//!   `options`, `client`, `clone`); two rpcs of a service with the same
//!   snake_case name or descriptor static. The message names both sides and
//!   the fix.
//! - **`.proto` errors** ([`Error::Proto`]): a missing file or import lists
//!   the include directories searched; an unknown type name suggests the
//!   nearest defined one.
//!
//! Proto2 `required` fields are enforced as brpc enforces them, although
//! prost keeps no presence for them: every message type with required
//! fields, or holding (singular, repeated, `oneof`, map value, group) a
//! sub-message type that has some, gets a `static` table, and the generated
//! server adapter and client pass the request's and the response's table to
//! the runtime, which checks the encoded bytes before prost decodes them
//! (EREQUEST / ERESPONSE when one is missing). Types that need no check —
//! all of proto3 — get no code, and their call sites pass `None`.
//!
//! Each service descriptor also carries its `.proto` file and that file's
//! imports, transitively, as serialized `FileDescriptorProto`s
//! (`ServiceDescriptor::files`), so a Keel server answers gRPC server
//! reflection (grpcurl, `keel call`) with no file on disk. A file's bytes
//! are one `static` byte string per package module that needs them, shared
//! by the package's services; source info (comments) is left out.
//!
//! The generated code follows Keel's memory rules: method and service
//! descriptors are `static`s (built once per process, identified by address),
//! `FooClient::new(&channel)` is an `Arc` clone and `with_options` moves a
//! `CallOptions` in — neither allocates.
//!
//! # Example
//!
//! In `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), keel_build::Error> {
//!     keel_build::compile_protos(&["proto/echo.proto"], &["proto"])
//! }
//! ```
//!
//! In the crate (`keel::include_proto!` includes `$OUT_DIR/example.rs`):
//!
//! ```text
//! pub mod example {
//!     keel::include_proto!("example");
//! }
//! ```
//!
//! Generating into memory, e.g. to inspect the code:
//!
//! ```
//! # fn main() -> Result<(), keel_build::Error> {
//! # let dir = std::env::temp_dir().join(format!("keel-build-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # std::fs::write(dir.join("ping.proto"), "syntax = \"proto3\"; package demo;
//! #   message Ping {} service Pinger { rpc Ping(Ping) returns (Ping); }").unwrap();
//! let files = keel_build::configure().generate(&["ping.proto"], &[&dir])?;
//! assert_eq!(files[0].name, "demo.rs");
//! assert!(files[0].code.contains("pub trait Pinger"));
//! assert!(files[0].code.contains("pub struct PingerClient"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod builder;
mod check;
mod error;
mod files;
mod generator;
mod required;
mod suggest;

use std::path::Path;

pub use builder::{Builder, GeneratedFile};
pub use error::Error;
pub use generator::ServiceGenerator;

/// Compiles `protos` (found directly or under `includes`) into Rust files in
/// `OUT_DIR`, one per protobuf package, and prints `cargo:rerun-if-changed`
/// for every file read. Call it from `build.rs`.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// A [`Builder`] with default settings, to configure before compiling.
pub fn configure() -> Builder {
    Builder::new()
}
